"""Thin typed access to the C kernels (trio_llm._kernels): status checks, pointers, the pool,
the type table and the size queries.

Every tl_ function that can fail returns a tl_status (csrc/tl_api.h); `check` turns anything
but TL_OK into a KernelError naming the call and the reason. Sizes and handles come back
through out-parameters, read here by the helpers below.

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


class KernelStatus(IntEnum):
    """tl_status (csrc/tl_api.h): what every kernel that can fail returns."""

    OK = lib.TL_OK
    TYPE = lib.TL_ERR_TYPE
    SIZE = lib.TL_ERR_SIZE
    MEMORY = lib.TL_ERR_MEMORY
    ARG = lib.TL_ERR_ARG


STATUS_MESSAGES = {
    KernelStatus.TYPE: "unsupported tensor type",
    KernelStatus.SIZE: "length is not a whole number of blocks, or out of range",
    KernelStatus.MEMORY: "out of memory",
    KernelStatus.ARG: "invalid argument",
}


class KernelError(RuntimeError):
    """A C kernel refused its arguments (it never aborts the process); status says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def check(status: int, what: str) -> None:
    """Raise KernelError unless a tl_ call returned TL_OK."""
    if status != KernelStatus.OK:
        reason = STATUS_MESSAGES.get(status, f"status {status}")  # type: ignore[call-overload]
        raise KernelError(f"{what}: {reason}", status)


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


def new_pool(n_threads: int = 0, flags: int = 0) -> Any:
    """A tl_pool handle (TL_POOL_* flags), freed by the garbage collector or ffi.release."""
    out = ffi.new("tl_pool **")
    check(lib.tl_pool_new(n_threads, flags, out), "thread pool")
    return ffi.gc(out[0], lib.tl_pool_free)


class Pool:
    """The persistent C thread pool: created once per model, freed with close()."""

    def __init__(self, n_threads: int = 0, scalar: bool = False) -> None:
        self.handle = new_pool(n_threads, lib.TL_POOL_SCALAR if scalar else 0)

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


def _int64(call: Any, what: str, *args: Any) -> int:
    """The int64 a sized tl_ call writes to its last (out) parameter, checked."""
    out = ffi.new("int64_t *")
    check(call(*args, out), what)
    return int(out[0])


def row_bytes(kind: int, n: int) -> int:
    """Bytes of a row of n elements of GGML type `kind` (KernelError: unknown type, or n is not
    whole blocks)."""
    return _int64(lib.tl_row_bytes, f"row of {n} elements of type {int(kind)}", int(kind), n)


def repack_bytes(kind: int, n_out: int, n_in: int) -> int:
    """Bytes of the repacked decode copy of an [n_out][n_in] matrix; 0 when the type has no
    repacked layout (type_info(kind).repack is False)."""
    if not type_info(kind).repack:
        return 0
    return _int64(lib.tl_repack_bytes, f"repack of {n_out} x {n_in}", int(kind), n_out, n_in)


def repack(kind: int, w: Any, n_out: int, n_in: int) -> Any:
    """A repacked decode copy of the matrix at w (freed with the returned pointer's
    collection); KernelError when the type has none or memory runs out."""
    size = repack_bytes(kind, n_out, n_in)
    out = ffi.new("void **")
    check(lib.tl_repack_new(int(kind), w, n_out, n_in, out), f"repack of {n_out} x {n_in}")
    return ffi.gc(out[0], lib.tl_repack_free, size=size)


def kv_bytes(kind: int, n_slots: int, n_cache: int, kv_dim: int) -> int:
    """Bytes of one layer's keys (or values) of a KV cache of GGML type `kind`."""
    return _int64(lib.tl_kv_bytes, f"KV cache of {n_slots} x {n_cache} x {kv_dim}", int(kind),
                  n_slots, n_cache, kv_dim)


def dequantize(kind: int, raw: np.ndarray | memoryview | bytes, n: int) -> np.ndarray:
    """Decode n elements of GGML type `kind` into a new float32 array."""
    out = np.empty(n, dtype=np.float32)
    check(lib.tl_dequantize(int(kind), ptr(raw), ptr(out, "float *"), n), "dequantize")
    return out


def quantize(kind: int, values: np.ndarray) -> np.ndarray:
    """Encode float32 values as GGML type `kind`; returns the raw bytes as uint8."""
    values = np.ascontiguousarray(values, dtype=np.float32).ravel()
    out = np.empty(row_bytes(kind, values.size), dtype=np.uint8)
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
