"""Thin typed access to the C kernels (trio_llm._kernels): status checks, pointers, the pool.

Pointers are made once (per model or per buffer) with `ptr()` and reused for every call:
building a cffi pointer costs more than many kernel calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any

import numpy as np

from trio_llm._kernels import ffi, lib

STATUS_MESSAGES = {
    lib.TL_ERR_TYPE: "unsupported tensor type",
    lib.TL_ERR_SIZE: "length is not a whole number of blocks, or out of range",
    lib.TL_ERR_MEMORY: "out of memory",
    lib.TL_ERR_ARG: "invalid argument",
}


class KernelError(RuntimeError):
    """A C kernel refused its arguments (it never aborts the process)."""


def check(status: int, what: str) -> None:
    """Raise KernelError unless a tl_ call returned TL_OK."""
    if status != lib.TL_OK:
        raise KernelError(f"{what}: {STATUS_MESSAGES.get(status, f'status {status}')}")


class PackKind(IntEnum):
    """tl_pack_kind (csrc/tl_api.h): which tiled prompt kernels a weight type takes."""

    NONE = lib.TL_PACK_NONE
    Q4 = lib.TL_PACK_Q4
    Q5 = lib.TL_PACK_Q5
    Q8 = lib.TL_PACK_Q8
    K = lib.TL_PACK_K


@dataclass(frozen=True)
class TypeInfo:
    """The C type table's facts about one GGML type (tl_type_info): the one owner of them."""

    kind: int
    block_elems: int    # elements per block (1 for F32, F16, BF16)
    block_bytes: int    # bytes per block
    quantize: bool      # tl_quantize encodes it
    matmul: bool        # tl_matmul takes it as weights
    pack: PackKind      # its tiled prompt kernels
    repack: bool        # it has a repacked decode layout (TL_PATH_PACKED)
    kv_cache: bool      # it can be the KV cache's type


@cache
def type_info(kind: int) -> TypeInfo:
    """The facts of GGML type `kind`; KernelError for a type the kernels do not know."""
    desc = ffi.new("tl_type_desc *")
    check(lib.tl_type_info(int(kind), desc), f"type {int(kind)}")
    return TypeInfo(desc.type, desc.block_elems, desc.block_bytes, bool(desc.quantize),
                    bool(desc.matmul), PackKind(desc.pack), bool(desc.repack),
                    bool(desc.kv_cache))


def ptr(array: np.ndarray | memoryview | bytes, ctype: str = "void *") -> Any:
    """A C pointer to a contiguous buffer (the buffer must outlive the pointer's use)."""
    if isinstance(array, np.ndarray) and not array.flags.c_contiguous:
        raise ValueError("kernel buffers must be C-contiguous")
    return ffi.cast(ctype, ffi.from_buffer(array))


class Pool:
    """The persistent C thread pool: created once per model, freed with close()."""

    def __init__(self, n_threads: int = 0, scalar: bool = False) -> None:
        handle = lib.tl_pool_new(n_threads, 1 if scalar else 0)
        if handle == ffi.NULL:
            raise KernelError("could not create the thread pool")
        self.handle = ffi.gc(handle, lib.tl_pool_free)

    @property
    def n_threads(self) -> int:
        return lib.tl_pool_threads(self.handle)

    @property
    def simd(self) -> bool:
        return lib.tl_pool_features(self.handle) != 0

    def close(self) -> None:
        """Stop the threads now rather than at garbage collection."""
        if self.handle is not None:
            handle, self.handle = self.handle, None
            ffi.release(handle)  # runs tl_pool_free now, once


def physical_cores() -> int:
    return lib.tl_physical_cores()


def dequantize(kind: int, raw: np.ndarray | memoryview | bytes, n: int) -> np.ndarray:
    """Decode n elements of GGML type `kind` into a new float32 array."""
    out = np.empty(n, dtype=np.float32)
    check(lib.tl_dequantize(int(kind), ptr(raw), ptr(out, "float *"), n), "dequantize")
    return out


def quantize(kind: int, values: np.ndarray) -> np.ndarray:
    """Encode float32 values as GGML type `kind`; returns the raw bytes as uint8."""
    values = np.ascontiguousarray(values, dtype=np.float32).ravel()
    nbytes = lib.tl_row_bytes(int(kind), values.size)
    if nbytes < 0:
        raise KernelError(f"quantize: {values.size} values are not whole blocks of type {kind}")
    out = np.empty(nbytes, dtype=np.uint8)
    check(lib.tl_quantize(int(kind), ptr(values, "float *"), ptr(out), values.size), "quantize")
    return out


def matmul(pool: Pool, kind: int, weights: Any, n_out: int, n_in: int, x: np.ndarray) -> np.ndarray:
    """y = x @ W.T for raw GGML weights [n_out][n_in] and float32 x [n_tok][n_in] (convenience)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n_tok = x.shape[0]
    y = np.empty((n_tok, n_out), dtype=np.float32)
    w = weights if isinstance(weights, ffi.CData) else ptr(weights)
    check(lib.tl_matmul(pool.handle, int(kind), w, n_out, n_in, ptr(x, "float *"), n_tok,
                        ptr(y, "float *")), "matmul")
    return y
