"""The operations a forward pass is made of, on one compute backend: today the CPU's C kernels.

Architectures never call `tl_*` themselves: the shared runtime (`trio_llm.arch.runtime`) calls
an `Ops` object, so a second backend (a CUDA build of the same operations) can sit beside
`CpuOps` without touching any architecture. Every call checks its kernel's status on its own
and raises KernelError naming the operation; nothing is OR'ed together and checked later.
Buffers and pointers are made once per model: a cffi pointer costs more than many kernel calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from trio_llm._kernels import ffi, lib
from trio_llm.engine.kernels import KernelStatus, Pool, ptr
from trio_llm.engine.kernels import check as _checked
from trio_llm.engine.program import Program

NULL = ffi.NULL
__all__ = ["NULL", "Buffer", "CpuOps", "KVLayer", "KernelStatus", "MatmulPath", "Ops", "Recorder"]


class MatmulPath(IntEnum):
    """tl_matmul_path's kernels (csrc/tl_api.h); PRECISE is a flag on ROW_DOTS and TILED."""

    ROW_DOTS = lib.TL_PATH_ROW_DOTS
    TILED = lib.TL_PATH_TILED
    PACKED = lib.TL_PATH_PACKED
    PRECISE_ROW_DOTS = lib.TL_PATH_ROW_DOTS | lib.TL_PATH_PRECISE
    PRECISE_TILED = lib.TL_PATH_TILED | lib.TL_PATH_PRECISE


@dataclass(frozen=True)
class Buffer:
    """Scratch activations, [rows][width] float32, with a pointer to row 0 made once."""

    array: np.ndarray
    ptr: Any
    width: int

    def row(self, i: int) -> Any:
        """A pointer to row i."""
        return self.ptr + i * self.width


@dataclass(frozen=True)
class KVLayer:
    """One layer's KV cache: keys and values, [n_slots][n_cache][kv_dim] of `kind` each.

    window > 0: the layer attends to the last `window` positions only and may keep fewer rows
    than the context (a ring, position p in row p mod n_cache)."""

    kind: int
    keys: Any
    values: Any
    n_cache: int
    kv_dim: int
    window: int


class Ops(Protocol):
    """The kernel operations of a forward pass. Pointers are the backend's own (host pointers
    for the CPU); rows are tokens; widths are floats per token."""

    def buffer(self, rows: int, width: int) -> Buffer: ...
    def embed(self, table: Any, ids: Any, n: int, out: Any) -> None: ...
    def rmsnorm(self, x: Any, w: Any, y: Any, rows: int, width: int, eps: float) -> None: ...
    def layernorm(self, x: Any, w: Any, b: Any, y: Any, rows: int, width: int,
                  eps: float) -> None: ...
    def matmul(self, w: Any, x: Any, n: int, y: Any, path: MatmulPath) -> None: ...
    def rope(self, x: Any, n: int, heads: int, head_dim: int, n_rot: int, pos: Any,
             base: float, freq_scale: float, neox: bool, factors: Any,
             attn_factor: float) -> None: ...
    def kv_store(self, layer: KVLayer, k: Any, v: Any, n: int, slots: Any, pos: Any) -> None: ...
    def attention(self, layer: KVLayer, q: Any, n: int, slots: Any, pos: Any, n_head: int,
                  n_kv_head: int, head_dim: int, scale: float, out: Any) -> None: ...
    def swiglu(self, gate: Any, up: Any, out: Any, n: int) -> None: ...
    def geglu(self, gate: Any, up: Any, out: Any, n: int) -> None: ...
    def gelu(self, x: Any, out: Any, n: int) -> None: ...
    def add(self, y: Any, x: Any, n: int) -> None: ...
    def add_rows(self, y: Any, b: Any, rows: int, width: int) -> None: ...
    def scale(self, y: Any, s: float, n: int) -> None: ...
    def softcap(self, y: Any, cap: float, n: int) -> None: ...
    def close(self) -> None: ...
    # A backend that can record a step's calls for replay also has recorder() -> Ops (the
    # CPU's does: CpuOps.recorder); the network replays decode steps where it is there.


def open_ops(n_threads: int = 0, scalar: bool = False) -> CpuOps:
    """A compute backend with its own threads (n_threads <= 0: one per physical core): the
    CPU's kernels today, and the one place a GPU backend will be chosen. Whoever opens it
    closes it; models may share one as long as their calls never overlap (its scratch memory
    is valid only until the next call)."""
    return CpuOps(Pool(n_threads, scalar=scalar))


class CpuOps:
    """Ops on the CPU: the cffi kernels over host memory, on one persistent thread pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._handle = pool.handle

    def buffer(self, rows: int, width: int) -> Buffer:
        array = np.zeros((rows, width), np.float32)
        return Buffer(array, ptr(array, "float *"), width)

    def _call(self, kernel: str, what: str, *args: Any) -> None:
        """lib.<kernel>(*args), its status checked (the void kernels return None)."""
        status = getattr(lib, kernel)(*args)
        if status:
            _checked(status, what)

    def recorder(self) -> Recorder:
        """Ops with this backend's pool that record their calls into a Program instead of
        making them (engine/program.py): a decode step replayed in one C call."""
        return Recorder(self.pool)

    def embed(self, table: Any, ids: Any, n: int, out: Any) -> None:
        self._call("tl_get_rows", "embedding lookup", table.kind, table.data, table.n_in,
                   table.n_out, ids, n, out)

    def rmsnorm(self, x: Any, w: Any, y: Any, rows: int, width: int, eps: float) -> None:
        self._call("tl_rmsnorm", "rmsnorm", self._handle, x, w, y, rows, width, eps)

    def layernorm(self, x: Any, w: Any, b: Any, y: Any, rows: int, width: int,
                  eps: float) -> None:
        self._call("tl_layernorm", "layernorm", self._handle, x, w, b, y, rows, width, eps)

    def matmul(self, w: Any, x: Any, n: int, y: Any, path: MatmulPath) -> None:
        data = w.packed if path == MatmulPath.PACKED else w.data
        self._call("tl_matmul_path", f"matmul {w.name}", self._handle, w.kind, data, w.n_out,
                   w.n_in, x, n, y, path)

    def rope(self, x: Any, n: int, heads: int, head_dim: int, n_rot: int, pos: Any,
             base: float, freq_scale: float, neox: bool, factors: Any,
             attn_factor: float) -> None:
        self._call("tl_rope", "rope", self._handle, x, n, heads, head_dim, n_rot, pos, base,
                   freq_scale, neox, factors, attn_factor)

    def kv_store(self, layer: KVLayer, k: Any, v: Any, n: int, slots: Any, pos: Any) -> None:
        self._call("tl_kv_store", "KV store", self._handle, layer.kind, layer.keys, layer.values,
                   layer.n_cache, layer.kv_dim, k, v, n, slots, pos, layer.window)

    def attention(self, layer: KVLayer, q: Any, n: int, slots: Any, pos: Any, n_head: int,
                  n_kv_head: int, head_dim: int, scale: float, out: Any) -> None:
        self._call("tl_attention", "attention", self._handle, layer.kind, layer.keys,
                   layer.values, layer.n_cache, q, n, slots, pos, n_head, n_kv_head, head_dim,
                   scale, layer.window, out)

    def swiglu(self, gate: Any, up: Any, out: Any, n: int) -> None:
        self._call("tl_swiglu", "swiglu", self._handle, gate, up, out, n)

    def geglu(self, gate: Any, up: Any, out: Any, n: int) -> None:
        self._call("tl_geglu", "geglu", self._handle, gate, up, out, n)

    def gelu(self, x: Any, out: Any, n: int) -> None:
        self._call("tl_gelu", "gelu", self._handle, x, out, n)

    def add(self, y: Any, x: Any, n: int) -> None:
        self._call("tl_add", "add", y, x, n)

    def add_rows(self, y: Any, b: Any, rows: int, width: int) -> None:
        self._call("tl_add_rows", "bias", y, b, rows, width)

    def scale(self, y: Any, s: float, n: int) -> None:
        self._call("tl_scale", "scale", y, s, n)

    def softcap(self, y: Any, cap: float, n: int) -> None:
        self._call("tl_softcap", "soft-capping", y, cap, n)

    def close(self) -> None:
        self.pool.close()


class Recorder(CpuOps):
    """CpuOps that append each call to `program` (tl_prog_<kernel> takes tl_<kernel>'s
    arguments) instead of making it; nothing runs until program.run()."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.program = Program()

    def _call(self, kernel: str, what: str, *args: Any) -> None:
        self.program.append(getattr(lib, "tl_prog_" + kernel[3:]), what, args)

    def recorder(self) -> Recorder:
        raise TypeError("a recorder does not record recorders")

    def close(self) -> None:
        """The pool belongs to the backend this recorder was made from."""
