"""A float64 numpy Gemma 3 forward pass from dequantized weights: the oracle for gemma3.

Written from the architecture's definition (Gemma 3's text decoder), independent of the
engine's code: embeddings times sqrt(dim); per block RMSNorm, q/k/v, per-head RMSNorm of q and
k, NeoX rope (base 10000 on local layers, the file's base on every 6th, global, layer),
attention over the whole past (global) or the last `window` positions (local), RMSNorm of the
attention output, residual; RMSNorm, GELU-tanh(gate) * up, down, RMSNorm, residual; final
RMSNorm, logits against the tied embedding. The GGUF's norm weights already hold Gemma's +1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


class ReferenceGemma3:
    def __init__(self, path: Path) -> None:
        reader = GGUFReader(path)

        def field(name: str) -> float:
            return reader.fields[f"gemma3.{name}"].contents()

        self.n_layer = int(field("block_count"))
        self.dim = int(field("embedding_length"))
        self.n_head = int(field("attention.head_count"))
        self.n_kv_head = int(field("attention.head_count_kv"))
        self.head_dim = int(field("attention.key_length"))
        self.window = int(field("attention.sliding_window"))
        self.global_base = float(field("rope.freq_base"))
        self.eps = float(field("attention.layer_norm_rms_epsilon"))
        self.w: dict[str, np.ndarray] = {}
        for t in reader.tensors:
            shape = [int(d) for d in reversed(t.shape)]
            values = dequantize(t.data, t.tensor_type).reshape(shape)
            # the 262k x 640 table stays float32 (0.7 GB); rows become float64 when used
            self.w[t.name] = values if t.name == "token_embd.weight" else values.astype(np.float64)

    def rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    @staticmethod
    def rope(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
        """NeoX order: dims i and i + head_dim/2 of each head rotate together."""
        n, heads, hd = x.shape
        half = hd // 2
        freqs = base ** (-np.arange(half) * 2.0 / hd)
        ang = positions[:, None] * freqs[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    @staticmethod
    def gelu_tanh(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))

    def is_global(self, layer: int) -> bool:
        return (layer + 1) % 6 == 0

    def forward(self, tokens: list[int], last_only: bool = True) -> np.ndarray:
        """Logits [n][vocab] (or of the last position only) of one sequence from position 0."""
        n, hd = len(tokens), self.head_dim
        pos = np.arange(n, dtype=np.float64)
        table = self.w["token_embd.weight"]
        x = table[tokens].astype(np.float64) * np.sqrt(self.dim)
        group = self.n_head // self.n_kv_head
        causal = np.triu(np.full((n, n), -np.inf), 1)
        distance = pos[:, None] - pos[None, :]
        local = np.where(distance >= self.window, -np.inf, causal)
        for i in range(self.n_layer):
            w = {k.split(".", 2)[2].removesuffix(".weight"): v for k, v in self.w.items()
                 if k.startswith(f"blk.{i}.")}
            base, mask = (self.global_base, causal) if self.is_global(i) else (10000.0, local)
            h = self.rmsnorm(x, w["attn_norm"])
            q = (h @ w["attn_q"].T).reshape(n, self.n_head, hd)
            k = (h @ w["attn_k"].T).reshape(n, self.n_kv_head, hd)
            v = (h @ w["attn_v"].T).reshape(n, self.n_kv_head, hd)
            q = self.rope(self.rmsnorm(q, w["attn_q_norm"]), pos, base)
            k = self.rope(self.rmsnorm(k, w["attn_k_norm"]), pos, base)
            att = np.empty((n, self.n_head, hd))
            for head in range(self.n_head):
                kv = head // group
                scores = q[:, head] @ k[:, kv].T / np.sqrt(hd) + mask
                p = np.exp(scores - scores.max(axis=1, keepdims=True))
                att[:, head] = (p / p.sum(axis=1, keepdims=True)) @ v[:, kv]
            x = x + self.rmsnorm(att.reshape(n, -1) @ w["attn_output"].T,
                                 w["post_attention_norm"])
            h = self.rmsnorm(x, w["ffn_norm"])
            ffn = (self.gelu_tanh(h @ w["ffn_gate"].T) * (h @ w["ffn_up"].T)) @ w["ffn_down"].T
            x = x + self.rmsnorm(ffn, w["post_ffw_norm"])
        x = self.rmsnorm(x, self.w["output_norm.weight"])
        if last_only:
            x = x[-1:]
        return np.stack([table.astype(np.float64, copy=False) @ row for row in x])
