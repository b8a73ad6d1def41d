"""Block sizes and type ids of the C kernels agree with the gguf package; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from tests.kernel_calls import size_of, sized
from trio_llm._kernels import ffi, lib
from trio_llm.engine.kernels import KernelError, PackKind, type_info

QT = GGMLQuantizationType
# Q8_1 is left out of the gguf comparison: gguf 0.19's table still gives it the old 40-byte
# layout (f32 d and s); GGML's block is two f16 and 32 int8 (36 bytes), and no GGUF file stores it.
BLOCK_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
               "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]
FLOAT_TYPES = ["F32", "F16", "BF16"]
UNKNOWN_TYPES = [-1, 4, 5, 16, 29, 31, 99]

TL_OK, TL_ERR_TYPE, TL_ERR_SIZE, TL_ERR_ARG = (lib.TL_OK, lib.TL_ERR_TYPE, lib.TL_ERR_SIZE,
                                               lib.TL_ERR_ARG)


def f32_ptr(a: np.ndarray) -> object:
    """A float * over a writable float32 array."""
    return ffi.from_buffer("float[]", a, require_writable=True)


@pytest.mark.parametrize("name", BLOCK_TYPES)
def test_block_struct_size_matches_gguf(name: str) -> None:
    _, type_size = GGML_QUANT_SIZES[QT[name]]
    assert ffi.sizeof(f"tl_block_{name.lower()[:-1]}{name[-1]}") == type_size


def test_q8_1_block_is_two_halves_and_32_quants() -> None:
    assert ffi.sizeof("tl_block_q8_1") == 36
    assert type_info(lib.TL_Q8_1).block_bytes == 36
    assert type_info(lib.TL_Q8_1).block_elems == 32
    assert lib.TL_Q8_1 == QT.Q8_1.value


@pytest.mark.parametrize("name", BLOCK_TYPES + FLOAT_TYPES)
def test_type_id_and_block_geometry_match_gguf(name: str) -> None:
    block_elems, type_size = GGML_QUANT_SIZES[QT[name]]
    type_id = getattr(lib, f"TL_{name}")
    assert type_id == QT[name].value
    assert type_info(type_id).block_elems == block_elems
    assert type_info(type_id).block_bytes == type_size
    assert size_of(lib.tl_row_bytes, type_id, 3 * 256) == 3 * 256 // block_elems * type_size


@pytest.mark.parametrize("type_id", UNKNOWN_TYPES)
def test_unknown_type_has_no_geometry(type_id: int) -> None:
    assert lib.tl_type_info(type_id, ffi.new("tl_type_desc *")) == TL_ERR_TYPE
    with pytest.raises(KernelError, match="unsupported tensor type"):
        type_info(type_id)
    assert sized(lib.tl_row_bytes, type_id, 256) == (TL_ERR_TYPE, -1)


def test_type_table_says_which_kernels_each_type_has() -> None:
    """The facts Python reads from the C table: codecs, matmul, packing kind, repack, KV."""
    q4_0, q6_k, q8_k, f16 = (type_info(t) for t in (lib.TL_Q4_0, lib.TL_Q6_K, lib.TL_Q8_K,
                                                   lib.TL_F16))
    assert (q4_0.quantize, q4_0.matmul, q4_0.pack, q4_0.repack, q4_0.kv_cache) == \
        (True, True, PackKind.Q4, True, True)
    assert (q6_k.quantize, q6_k.matmul, q6_k.pack, q6_k.repack, q6_k.kv_cache) == \
        (False, True, PackKind.K, True, False)
    assert (q8_k.matmul, q8_k.pack, q8_k.repack) == (False, PackKind.NONE, False)
    assert (f16.matmul, f16.pack, f16.repack, f16.kv_cache) == (True, PackKind.NONE, False, True)
    assert [t for t in range(64) if lib.tl_type_info(t, ffi.NULL) != TL_ERR_TYPE] == sorted(
        getattr(lib, f"TL_{n}") for n in BLOCK_TYPES + FLOAT_TYPES + ["Q8_1"])


def test_row_bytes_refuses_partial_blocks_and_negative_lengths() -> None:
    rb = lib.tl_row_bytes
    assert sized(rb, lib.TL_Q4_K, 512) == (TL_OK, 288)
    assert sized(rb, lib.TL_Q4_K, 0) == (TL_OK, 0)
    assert sized(rb, lib.TL_Q4_K, 100) == (TL_ERR_SIZE, -1)
    assert sized(rb, lib.TL_Q8_0, 48) == (TL_ERR_SIZE, -1)
    assert sized(rb, lib.TL_F16, 7) == (TL_OK, 14)
    assert sized(rb, lib.TL_F32, -4) == (TL_ERR_SIZE, -1)
    assert sized(rb, lib.TL_F32, 2**62) == (TL_ERR_SIZE, -1)  # 2^64 bytes: refused, not wrapped
    assert rb(lib.TL_F32, 4, ffi.NULL) == TL_ERR_ARG


@pytest.mark.parametrize("type_id", UNKNOWN_TYPES)
def test_dequantize_unknown_type_is_a_type_error(type_id: int) -> None:
    src = np.zeros(1024, np.uint8)
    out = np.full(256, 7.0, np.float32)
    assert lib.tl_dequantize(type_id, ffi.from_buffer(src), f32_ptr(out), 256) == TL_ERR_TYPE
    assert (out == 7.0).all()


@pytest.mark.parametrize("name,n", [("Q4_0", 48), ("Q8_0", 31), ("Q4_K", 128), ("Q6_K", 300),
                                    ("F32", -1), ("Q4_0", -32)])
def test_dequantize_partial_block_is_a_size_error(name: str, n: int) -> None:
    src = np.zeros(4096, np.uint8)
    out = np.full(512, 7.0, np.float32)
    status = lib.tl_dequantize(getattr(lib, f"TL_{name}"), ffi.from_buffer(src), f32_ptr(out), n)
    assert status == TL_ERR_SIZE
    assert (out == 7.0).all()


@pytest.mark.parametrize("name", ["Q4_1", "Q5_0", "Q5_1", "Q8_1", "Q2_K", "Q3_K", "Q5_K",
                                  "Q6_K", "Q8_K"])
def test_quantize_to_decode_only_format_is_a_type_error(name: str) -> None:
    src = np.ones(256, np.float32)
    dst = np.zeros(1024, np.uint8)
    status = lib.tl_quantize(getattr(lib, f"TL_{name}"), ffi.from_buffer("float[]", src),
                             ffi.from_buffer(dst, require_writable=True), 256)
    assert status == TL_ERR_TYPE
    assert (dst == 0).all()


@pytest.mark.parametrize("type_id", UNKNOWN_TYPES)
def test_quantize_unknown_type_is_a_type_error(type_id: int) -> None:
    src = np.ones(256, np.float32)
    dst = np.zeros(1024, np.uint8)
    status = lib.tl_quantize(type_id, ffi.from_buffer("float[]", src),
                             ffi.from_buffer(dst, require_writable=True), 256)
    assert status == TL_ERR_TYPE


@pytest.mark.parametrize("name,n", [("Q4_0", 40), ("Q8_0", 1), ("Q4_K", 32), ("F16", -2)])
def test_quantize_partial_block_is_a_size_error(name: str, n: int) -> None:
    src = np.ones(512, np.float32)
    dst = np.zeros(1024, np.uint8)
    status = lib.tl_quantize(getattr(lib, f"TL_{name}"), ffi.from_buffer("float[]", src),
                             ffi.from_buffer(dst, require_writable=True), n)
    assert status == TL_ERR_SIZE
    assert (dst == 0).all()


def test_zero_elements_is_a_no_op_success() -> None:
    assert lib.tl_dequantize(lib.TL_Q4_K, ffi.NULL, ffi.NULL, 0) == TL_OK
    assert lib.tl_quantize(lib.TL_Q8_0, ffi.NULL, ffi.NULL, 0) == TL_OK


def test_null_buffers_are_an_argument_error() -> None:
    out = np.zeros(32, np.float32)
    assert lib.tl_dequantize(lib.TL_Q8_0, ffi.NULL, f32_ptr(out), 32) == TL_ERR_ARG
    assert lib.tl_quantize(lib.TL_Q8_0, f32_ptr(out), ffi.NULL, 32) == TL_ERR_ARG
