"""The KV cache: per layer, keys and values for n_slots sequences of up to n_ctx positions."""

from __future__ import annotations

from typing import Any

import numpy as np

from trio_llm._kernels import lib
from trio_llm.engine.kernels import KernelError, ptr

KV_TYPES = {"f16": 1}  # GGML type ids; q8_0 and q4_0 arrive with flash-attention work


class KVCache:
    """Owns the cache memory; hands out per-layer C pointers made once at construction."""

    def __init__(self, n_layer: int, n_slots: int, n_ctx: int, kv_dim: int,
                 kv_type: str = "f16") -> None:
        if kv_type not in KV_TYPES:
            raise ValueError(f"unsupported KV cache type {kv_type!r}")
        self.n_layer, self.n_slots, self.n_ctx, self.kv_dim = n_layer, n_slots, n_ctx, kv_dim
        self.kind = KV_TYPES[kv_type]
        nbytes = lib.tl_kv_bytes(self.kind, n_slots, n_ctx, kv_dim)
        if nbytes < 0:
            raise KernelError("KV cache: invalid size")
        self.keys = [np.zeros(nbytes, dtype=np.uint8) for _ in range(n_layer)]
        self.values = [np.zeros(nbytes, dtype=np.uint8) for _ in range(n_layer)]
        self.key_ptrs: list[Any] = [ptr(a) for a in self.keys]
        self.value_ptrs: list[Any] = [ptr(a) for a in self.values]

    @property
    def nbytes(self) -> int:
        return 2 * self.n_layer * self.keys[0].nbytes
