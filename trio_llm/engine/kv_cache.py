"""The KV cache: per layer, keys and values for n_slots sequences, in the layout the kernels read.

A layer attends either to every earlier position (its cache holds the whole context) or to a
sliding window of the last `window` positions; such a layer keeps only the window plus one
call's tokens, as a ring (position p in row p mod n_cache), so a long context costs the local
layers of gemma3 or mistral nothing more. `kv_cache_bytes` is the one function that says how
much memory that is: the allocation below and the scheduler's estimate both read it.

The cache type (OLLAMA_KV_CACHE_TYPE) is f16, q8_0 or q4_0: rows of GGML blocks, quantized as
each token is stored and read as blocks by the attention kernel. `cache_type_for` says which
type a network really gets; a quantized type it cannot take falls back to f16 with the reason,
which the engine logs (never silently).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trio_llm._kernels import lib
from trio_llm.config import KV_CACHE_TYPES
from trio_llm.engine.kernels import kv_bytes, ptr, type_info
from trio_llm.engine.ops import KVLayer

KV_TYPES = dict(zip(KV_CACHE_TYPES, (lib.TL_F16, lib.TL_Q8_0, lib.TL_Q4_0), strict=True))


@dataclass(frozen=True)
class KVLayout:
    """What one layer caches per position: kv_dim = KV heads x head size for K (and for V), the
    sliding window it attends to (0: every earlier position) and the head size (0: not given;
    a quantized cache then cannot be used, since a head must be whole 32-element blocks)."""

    kv_dim: int
    window: int = 0
    head_dim: int = 0


def cache_type_for(layouts: Sequence[KVLayout], requested: str,
                   causal: bool = True) -> tuple[str, str]:
    """(cache type in force, why it is not the requested one or ""). Like Ollama, an embedding
    model (bidirectional, its cache lives for one call) keeps f16; a quantized cache also needs
    every head to be whole blocks."""
    block = type_info(_kind(requested)).block_elems  # a head must be whole blocks
    if requested == "f16":
        return requested, ""
    if not causal:
        return "f16", "embedding models keep an f16 cache"
    for lay in layouts:
        if lay.head_dim <= 0 or lay.head_dim % block or lay.kv_dim % lay.head_dim:
            size = f"head size {lay.head_dim}" if lay.head_dim > 0 else "an unknown head size"
            return "f16", f"{requested} needs heads of whole {block}-element blocks ({size})"
    return requested, ""


def cache_rows(layout: KVLayout, n_ctx: int, max_batch: int) -> tuple[int, int]:
    """(rows per slot, effective window) of a layer. A window layer keeps window + max_batch - 1
    rows: the rows a call's tokens may still attend to after that call has stored its own."""
    window = layout.window if 0 < layout.window < n_ctx else 0
    if window and window + max_batch - 1 < n_ctx:
        return window + max_batch - 1, window
    return n_ctx, window


def _row_bytes(kind: int, n_slots: int, rows: int, kv_dim: int) -> int:
    return kv_bytes(kind, n_slots, rows, kv_dim)


def kv_cache_bytes(layouts: Sequence[KVLayout], n_slots: int, n_ctx: int, max_batch: int,
                   kv_type: str = "f16") -> int:
    """Bytes of the whole cache (keys and values of every layer)."""
    kind = _kind(kv_type)
    return sum(2 * _row_bytes(kind, n_slots, cache_rows(lay, n_ctx, max_batch)[0], lay.kv_dim)
               for lay in layouts)


def _kind(kv_type: str) -> int:
    if kv_type not in KV_TYPES:
        raise ValueError(f"unsupported KV cache type {kv_type!r}")
    return int(KV_TYPES[kv_type])


class KVCache:
    """Owns the cache memory; hands out one KVLayer (pointers made once) per layer."""

    def __init__(self, layouts: Sequence[KVLayout], n_slots: int, n_ctx: int, max_batch: int,
                 kv_type: str = "f16") -> None:
        self.n_slots, self.n_ctx = n_slots, n_ctx
        self.kind = _kind(kv_type)
        self._arrays: list[np.ndarray] = []
        self.layers: list[KVLayer] = []
        for layout in layouts:
            rows, window = cache_rows(layout, n_ctx, max_batch)
            nbytes = _row_bytes(self.kind, n_slots, rows, layout.kv_dim)
            keys, values = np.zeros(nbytes, np.uint8), np.zeros(nbytes, np.uint8)
            self._arrays += [keys, values]
            self.layers.append(KVLayer(self.kind, ptr(keys), ptr(values), rows, layout.kv_dim,
                                       window))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)

    def is_ring(self, layer: int) -> bool:
        """Whether the layer keeps fewer rows than the context (old positions get overwritten)."""
        return self.layers[layer].n_cache < self.n_ctx

    def slot_rows(self, layer: int, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Views [n_cache][row bytes] of one slot's keys and values in `layer`: the bytes as the
        cache type stores them, so copying rows moves a position's KV exactly."""
        lay = self.layers[layer]
        keys, values = self._arrays[2 * layer], self._arrays[2 * layer + 1]
        shape = (self.n_slots, lay.n_cache, keys.nbytes // (self.n_slots * lay.n_cache))
        return keys.reshape(shape)[slot], values.reshape(shape)[slot]
