"""The KV cache's storage: row sizes per type, f16 rounding and GGML blocks bit for bit, tokens
placed at their slot and position (a ring's at position mod rows), bad input refused whole."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.quants import quantize

from tests.kernel_calls import size_of, sized
from tests.kv_kernels import (
    GGUF_TYPE,
    POOL,
    TL_ERR_ARG,
    TL_ERR_SIZE,
    TL_ERR_TYPE,
    TL_OK,
    TYPES,
    fptr,
    iptr,
    vptr,
)
from trio_llm._kernels import ffi, lib


@pytest.fixture(scope="module", params=list(TYPES))
def kv_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_kv_bytes_counts_rows_of_each_type_and_rejects_others() -> None:
    kv = lib.tl_kv_bytes
    assert sized(kv, lib.TL_F16, 4, 2048, 192) == (TL_OK, 4 * 2048 * 192 * 2)
    assert sized(kv, lib.TL_Q8_0, 4, 2048, 192) == (TL_OK, 4 * 2048 * 6 * 34)
    assert sized(kv, lib.TL_Q4_0, 4, 2048, 192) == (TL_OK, 4 * 2048 * 6 * 18)
    assert sized(kv, lib.TL_F16, 0, 2048, 192) == (TL_OK, 0)
    # a refused call leaves the out-parameter unwritten (-1 here)
    assert sized(kv, lib.TL_Q4_1, 1, 16, 64) == (TL_ERR_TYPE, -1)
    assert sized(kv, lib.TL_Q8_0, 1, 16, 48) == (TL_ERR_SIZE, -1)  # not whole blocks
    assert sized(kv, lib.TL_F16, 1, 16, 0) == (TL_ERR_ARG, -1)
    assert sized(kv, lib.TL_F16, -1, 16, 64) == (TL_ERR_ARG, -1)
    assert sized(kv, lib.TL_Q8_0, 1 << 40, 1 << 40, 64) == (TL_ERR_SIZE, -1)  # overflow
    assert kv(lib.TL_F16, 1, 16, 64, ffi.NULL) == TL_ERR_ARG


def test_kv_store_rounds_to_nearest_even_f16_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    kv_dim = 64
    vals = np.concatenate([
        rng.standard_normal(40) * 100,
        [0.0, -0.0, 65504.0, 65520.0, 1e6, -1e6, np.inf, -np.inf, 6e-8, 3e-8, 2.98e-8, 1e-5,
         -6.1e-5, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 2049.0, 2051.0, 1e-10, -1e-30, 0.1, 1 / 3,
         np.pi, -np.e, 1024.5],
    ]).astype(np.float32)
    assert vals.size == kv_dim
    k = np.zeros((1, 4, kv_dim), np.float16)
    v = np.zeros((1, 4, kv_dim), np.float16)
    slot, pos = np.zeros(1, np.int32), np.array([2], np.int32)
    kk, vv = vals.reshape(1, -1).copy(), (-vals).reshape(1, -1).copy()
    with np.errstate(over="ignore"):
        k16, v16 = vals.astype(np.float16), (-vals).astype(np.float16)
    assert lib.tl_kv_store(POOL, lib.TL_F16, vptr(k), vptr(v), 4, kv_dim, fptr(kk), fptr(vv), 1,
                           iptr(slot), iptr(pos), 0) == TL_OK
    assert np.array_equal(k[0, 2].view(np.uint16), k16.view(np.uint16))
    assert np.array_equal(v[0, 2].view(np.uint16), v16.view(np.uint16))
    assert not k[0, [0, 1, 3]].any() and not v[0, [0, 1, 3]].any()
    nan = np.full((1, kv_dim), np.nan, np.float32)
    assert lib.tl_kv_store(POOL, lib.TL_F16, vptr(k), vptr(v), 4, kv_dim, fptr(nan), fptr(nan), 1,
                           iptr(slot), iptr(pos), 0) == TL_OK
    assert np.isnan(k[0, 2]).all() and np.isnan(v[0, 2]).all()


def test_kv_store_f16_rows_have_the_scalar_encoders_bits_for_any_float() -> None:
    """Where the CPU has F16C the store converts with it; its bits must be those of the scalar
    encoder (tl_quantize's F16): random bit patterns (NaNs with payloads, subnormals, huge
    values) and the rounding edges around each half-precision step."""
    rng = np.random.default_rng(11)
    bits = np.concatenate([rng.integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32),
                           (np.arange(1 << 15, dtype=np.uint32) << 13) + 0x0FFF,
                           (np.arange(1 << 15, dtype=np.uint32) << 13) + 0x1000,
                           (np.arange(1 << 15, dtype=np.uint32) << 13) + 0x1001])
    vals = bits.view(np.float32)
    kv_dim = 64
    rows = vals.reshape(-1, kv_dim)
    n = rows.shape[0]
    k = np.zeros((1, n, kv_dim), np.uint16)
    v = np.zeros((1, n, kv_dim), np.uint16)
    slot, pos = np.zeros(n, np.int32), np.arange(n, dtype=np.int32)
    assert lib.tl_kv_store(POOL, lib.TL_F16, vptr(k), vptr(v), n, kv_dim, fptr(rows), fptr(rows), n,
                           iptr(slot), iptr(pos), 0) == TL_OK
    scalar = np.zeros(vals.size, np.uint16)
    assert lib.tl_quantize(lib.TL_F16, fptr(vals), vptr(scalar), vals.size) == TL_OK
    assert np.array_equal(k.reshape(-1), scalar) and np.array_equal(v.reshape(-1), scalar)


@pytest.mark.parametrize("kv_type", ["q8_0", "q4_0"])
def test_kv_store_quantizes_rows_as_ggml_blocks_bit_for_bit(kv_type: str) -> None:
    # The stored row is exactly what the gguf package's reference encoder makes of it.
    rng = np.random.default_rng(4)
    kv_dim, n = 192, 40
    x = (rng.standard_normal((n, kv_dim)) * rng.uniform(0.01, 100, (n, 1))).astype(np.float32)
    x[3] = 0.0
    x[4, :32] = 7.0
    row = size_of(lib.tl_kv_bytes, TYPES[kv_type], 1, 1, kv_dim)
    k = np.zeros((1, n, row), np.uint8)
    v = np.zeros((1, n, row), np.uint8)
    slot, pos = np.zeros(n, np.int32), np.arange(n, dtype=np.int32)
    neg = -x + np.float32(0.0)  # no -0.0: the two encoders differ on the sign of a zero scale
    assert lib.tl_kv_store(POOL, TYPES[kv_type], vptr(k), vptr(v), n, kv_dim, fptr(x), fptr(neg), n,
                           iptr(slot), iptr(pos), 0) == TL_OK
    assert np.array_equal(k[0], quantize(x, GGUF_TYPE[kv_type]))
    assert np.array_equal(v[0], quantize(neg, GGUF_TYPE[kv_type]))


def test_kv_store_places_each_token_at_its_slot_and_position(kv_type: str) -> None:
    kv_dim, n_ctx = 32, 8
    row = size_of(lib.tl_kv_bytes, TYPES[kv_type], 1, 1, kv_dim)
    k = np.zeros((3, n_ctx, row), np.uint8)
    v = np.zeros((3, n_ctx, row), np.uint8)
    slot = np.array([2, 0, 1, 2], np.int32)
    pos = np.array([7, 0, 3, 4], np.int32)
    kk = (np.arange(4 * kv_dim, dtype=np.float32).reshape(4, kv_dim) + 1)
    vv = -kk
    assert lib.tl_kv_store(POOL, TYPES[kv_type], vptr(k), vptr(v), n_ctx, kv_dim, fptr(kk),
                           fptr(vv), 4, iptr(slot), iptr(pos), 0) == TL_OK
    one = np.zeros((1, 1, row), np.uint8)
    for t in range(4):
        assert lib.tl_kv_store(POOL, TYPES[kv_type], vptr(one), vptr(one), 1, kv_dim,
                               fptr(kk[t:t + 1].copy()), fptr(kk[t:t + 1].copy()), 1,
                               iptr(np.zeros(1, np.int32)), iptr(np.zeros(1, np.int32)),
                               0) == TL_OK
        assert np.array_equal(k[slot[t], pos[t]], one[0, 0])
    written = np.zeros((3, n_ctx), bool)
    written[slot, pos] = True
    assert not k[~written].any() and not v[~written].any()


def test_kv_store_writes_a_ring_row_at_position_mod_rows(kv_type: str) -> None:
    kv_dim, n_cache = 32, 5
    row = size_of(lib.tl_kv_bytes, TYPES[kv_type], 1, 1, kv_dim)
    k = np.zeros((1, n_cache, row), np.uint8)
    x = np.full((1, kv_dim), 3.0, np.float32)
    assert lib.tl_kv_store(POOL, TYPES[kv_type], vptr(k), vptr(k), n_cache, kv_dim, fptr(x),
                           fptr(x), 1, iptr(np.zeros(1, np.int32)),
                           iptr(np.array([12], np.int32)), 4) == TL_OK
    assert k[0, 12 % n_cache].any() and not np.delete(k[0], 12 % n_cache, axis=0).any()


@pytest.mark.parametrize("bad_slot, bad_pos", [(0, 8), (0, -1), (-1, 0), (1, 1 << 30)])
def test_kv_store_rejects_out_of_range_tokens_and_writes_nothing(bad_slot: int, bad_pos: int,
                                                                 kv_type: str) -> None:
    kv_dim, n_ctx = 32, 8
    row = size_of(lib.tl_kv_bytes, TYPES[kv_type], 1, 1, kv_dim)
    k = np.zeros((2, n_ctx, row), np.uint8)
    v = np.zeros((2, n_ctx, row), np.uint8)
    slot = np.array([0, bad_slot], np.int32)
    pos = np.array([1, bad_pos], np.int32)
    ones = np.ones((2, kv_dim), np.float32)
    assert lib.tl_kv_store(POOL, TYPES[kv_type], vptr(k), vptr(v), n_ctx, kv_dim, fptr(ones),
                           fptr(ones), 2, iptr(slot), iptr(pos), 0) == TL_ERR_ARG
    assert not k.any() and not v.any()


def test_kv_store_rejects_other_types_and_partial_blocks() -> None:
    k = np.zeros((1, 4, 128), np.uint8)
    x = np.ones((1, 48), np.float32)
    z = np.zeros(1, np.int32)
    assert lib.tl_kv_store(POOL, lib.TL_Q4_1, vptr(k), vptr(k), 4, 32, fptr(x), fptr(x), 1, iptr(z),
                           iptr(z), 0) == TL_ERR_TYPE
    assert lib.tl_kv_store(POOL, lib.TL_Q8_0, vptr(k), vptr(k), 4, 48, fptr(x), fptr(x), 1, iptr(z),
                           iptr(z), 0) == TL_ERR_SIZE
    assert not k.any()


def test_kv_store_needs_a_pool() -> None:
    """The pool's features pick the F16 encoder (F16C or scalar): no pool, no store."""
    k = np.zeros((1, 4, 64), np.float16)
    x = np.ones((1, 64), np.float32)
    slot, pos = np.zeros(1, np.int32), np.zeros(1, np.int32)
    assert lib.tl_kv_store(ffi.NULL, lib.TL_F16, vptr(k), vptr(k), 4, 64, fptr(x), fptr(x), 1,
                           iptr(slot), iptr(pos), 0) == TL_ERR_ARG
    assert not k.any()
