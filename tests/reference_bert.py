"""Float64 numpy forward passes of BERT and nomic-bert: the oracles for the engine's encoders.

Written from the architectures' definitions, independent of the engine's code: BERT on the
original Hugging Face weights (safetensors names, not the GGUF's), nomic-bert on a GGUF's
tensors dequantized by the `gguf` package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

_erf = np.vectorize(math.erf)


def layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the exact normal CDF (BERT's hidden_act "gelu")."""
    return x * 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def bidirectional_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q k^T / sqrt(d)) v per head, every position seeing every other; [n][heads][d]."""
    n, _, d = q.shape
    scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v).reshape(n, -1)


def pool(states: np.ndarray, pooling: str) -> np.ndarray:
    return {"mean": states.mean(axis=0), "cls": states[0], "last": states[-1]}[pooling]


class ReferenceBert:
    """BertModel from its Hugging Face config and weights (float64), token type 0."""

    def __init__(self, config: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        self.config = config
        self.w = {k: np.asarray(v, np.float64) for k, v in weights.items()}

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return layernorm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"],
                         self.config["layer_norm_eps"])

    def hidden_states(self, tokens: list[int]) -> list[np.ndarray]:
        """The embeddings' output, then each layer's, [n][dim] each."""
        n, heads = len(tokens), self.config["num_attention_heads"]
        e = "embeddings."
        x = (self.w[e + "word_embeddings.weight"][tokens]
             + self.w[e + "position_embeddings.weight"][:n]
             + self.w[e + "token_type_embeddings.weight"][0])
        states = [self._norm(x, e + "LayerNorm")]
        for i in range(self.config["num_hidden_layers"]):
            p, x = f"encoder.layer.{i}.", states[-1]
            q, k, v = (self._linear(x, p + f"attention.self.{m}").reshape(n, heads, -1)
                       for m in ("query", "key", "value"))
            att = bidirectional_attention(q, k, v)
            x = self._norm(x + self._linear(att, p + "attention.output.dense"),
                           p + "attention.output.LayerNorm")
            ffn = self._linear(gelu(self._linear(x, p + "intermediate.dense")),
                               p + "output.dense")
            states.append(self._norm(x + ffn, p + "output.LayerNorm"))
        return states

    def embedding(self, tokens: list[int], pooling: str = "mean") -> np.ndarray:
        return pool(self.hidden_states(tokens)[-1], pooling)


def gguf_tensors(path: Path) -> tuple[GGUFReader, dict[str, np.ndarray]]:
    """A GGUF's reader and its tensors dequantized to float64 (numpy order)."""
    reader = GGUFReader(path)
    tensors = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64).reshape(
        [int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    return reader, tensors


class ReferenceNomicBert:
    """nomic-bert from a GGUF: fused QKV, rotary positions (NeoX halves), SwiGLU, post-norms."""

    def __init__(self, path: Path) -> None:
        reader, self.w = gguf_tensors(path)

        def field(name: str) -> Any:
            return reader.fields[f"nomic-bert.{name}"].contents()

        self.n_layer = int(field("block_count"))
        self.n_head = int(field("attention.head_count"))
        self.eps = float(field("attention.layer_norm_epsilon"))
        self.rope_base = float(field("rope.freq_base"))

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return layernorm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def rope(self, x: np.ndarray) -> np.ndarray:
        """Rotate dims (i, i + d/2) of each head by position * base^(-2i/d)."""
        n, _, d = x.shape
        angles = np.arange(n)[:, None] * self.rope_base ** (-np.arange(0, d, 2) / d)[None, :]
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        a, b = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    def hidden_states(self, tokens: list[int]) -> np.ndarray:
        n, w = len(tokens), self.w
        x = self._norm(w["token_embd.weight"][tokens] + w["token_types.weight"][0],
                       "token_embd_norm")
        for i in range(self.n_layer):
            p = f"blk.{i}."
            q, k, v = np.split(x @ w[p + "attn_qkv.weight"].T, 3, axis=-1)
            q, k, v = (t.reshape(n, self.n_head, -1) for t in (q, k, v))
            att = bidirectional_attention(self.rope(q), self.rope(k), v)
            x = self._norm(x + att @ w[p + "attn_output.weight"].T, p + "attn_output_norm")
            gate, up = x @ w[p + "ffn_gate.weight"].T, x @ w[p + "ffn_up.weight"].T
            ffn = (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
            x = self._norm(x + ffn, p + "layer_output_norm")
        return x
