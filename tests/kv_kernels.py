"""Shared by the KV cache tests: the cache types' ids, status codes, and pointers for cffi."""

from __future__ import annotations

from typing import Any

import numpy as np
from gguf import GGMLQuantizationType

from tests.kernel_calls import pool_new
from trio_llm._kernels import ffi, lib

TL_OK, TL_ERR_TYPE, TL_ERR_SIZE, TL_ERR_ARG = 0, 1, 2, 4  # tl_status (csrc/tl_api.h)
TYPES = {"f16": lib.TL_F16, "q8_0": lib.TL_Q8_0, "q4_0": lib.TL_Q4_0}
GGUF_TYPE = {"f16": GGMLQuantizationType.F16, "q8_0": GGMLQuantizationType.Q8_0,
             "q4_0": GGMLQuantizationType.Q4_0}


# A pool for tl_kv_store (its features pick the F16C path; it never runs tasks on it), made once
# for the test session.
POOL = pool_new(1)


def fptr(a: np.ndarray) -> Any:
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return ffi.cast("float *", ffi.from_buffer(a))


def iptr(a: np.ndarray) -> Any:
    assert a.dtype == np.int32 and a.flags.c_contiguous
    return ffi.cast("int32_t *", ffi.from_buffer(a))


def vptr(a: np.ndarray) -> Any:
    assert a.flags.c_contiguous
    return ffi.cast("void *", ffi.from_buffer(a))
