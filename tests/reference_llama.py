"""A float64 numpy llama forward pass from dequantized weights: the oracle for our kernels.

Written straight from the architecture's definition, independent of the engine's code paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


class ReferenceLlama:
    """All weights dequantized to float64 once; forward() recomputes a whole sequence."""

    def __init__(self, path: Path) -> None:
        reader = GGUFReader(path)

        def field(name: str) -> float:
            return reader.fields[name].contents()

        self.n_layer = int(field("llama.block_count"))
        self.dim = int(field("llama.embedding_length"))
        self.n_head = int(field("llama.attention.head_count"))
        self.n_kv_head = int(field("llama.attention.head_count_kv"))
        self.head_dim = self.dim // self.n_head
        self.rope_base = float(field("llama.rope.freq_base"))
        self.eps = float(field("llama.attention.layer_norm_rms_epsilon"))
        self.w = {
            t.name: dequantize(t.data, t.tensor_type).astype(np.float64).reshape(
                [int(d) for d in reversed(t.shape)])
            for t in reader.tensors
        }

    def rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Normal (interleaved) order: pairs (2i, 2i+1) of each head."""
        n, heads, hd = x.shape
        freqs = self.rope_base ** (-np.arange(0, hd, 2) / hd)
        ang = positions[:, None] * freqs[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def forward(self, tokens: list[int]) -> np.ndarray:
        """Logits [n_tokens][vocab] of one sequence starting at position 0."""
        n, hd = len(tokens), self.head_dim
        pos = np.arange(n, dtype=np.float64)
        x = self.w["token_embd.weight"][tokens]
        group = self.n_head // self.n_kv_head
        mask = np.triu(np.full((n, n), -np.inf), 1)
        for i in range(self.n_layer):
            w = {k.split(".")[2]: v for k, v in self.w.items() if k.startswith(f"blk.{i}.")}
            h = self.rmsnorm(x, w["attn_norm"])
            q = self.rope((h @ w["attn_q"].T).reshape(n, self.n_head, hd), pos)
            k = self.rope((h @ w["attn_k"].T).reshape(n, self.n_kv_head, hd), pos)
            v = (h @ w["attn_v"].T).reshape(n, self.n_kv_head, hd)
            att = np.empty((n, self.n_head, hd))
            for head in range(self.n_head):
                kv = head // group
                scores = q[:, head] @ k[:, kv].T / np.sqrt(hd) + mask
                p = np.exp(scores - scores.max(axis=1, keepdims=True))
                att[:, head] = (p / p.sum(axis=1, keepdims=True)) @ v[:, kv]
            x = x + att.reshape(n, -1) @ w["attn_output"].T
            h = self.rmsnorm(x, w["ffn_norm"])
            gate, up = h @ w["ffn_gate"].T, h @ w["ffn_up"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w["ffn_down"].T
        out = self.w.get("output.weight", self.w["token_embd.weight"])
        return self.rmsnorm(x, self.w["output_norm.weight"]) @ out.T
