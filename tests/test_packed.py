"""TL_PATH_PACKED: decode rows against weights repacked at load time (csrc/ggml/packed.c)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from tests.kernel_calls import pool_new, size_of, sized
from tests.test_matmul import make_weights, oracle, quantized_activations, rel_err
from trio_llm._kernels import ffi, lib

Q = GGMLQuantizationType
PACKABLE = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]
# Bytes a row per block beyond GGML's: Q4_K and Q5_K keep their six-bit scales unpacked to bytes.
EXTRA_BYTES = {Q.Q4_K: 4, Q.Q5_K: 4}
TL_OK, TL_ERR_TYPE, TL_ERR_SIZE = 0, 1, 2


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[str, Any]]:
    made = {"simd2": pool_new(2, 0), "simd3": pool_new(3, 0),
            "simd1": pool_new(1, 0), "scalar2": pool_new(2, 1)}
    yield made
    for p in made.values():
        lib.tl_pool_free(p)


def repack(qtype: Q, w: np.ndarray, n_out: int, n_in: int) -> Any:
    out = ffi.new("void **")
    assert lib.tl_repack_new(int(qtype), ffi.from_buffer(w), n_out, n_in, out) == TL_OK
    return ffi.gc(out[0], lib.tl_repack_free)


def packed_matmul(pool: Any, qtype: Q, packed: Any, n_out: int, n_in: int,
                  x: np.ndarray) -> np.ndarray:
    y = np.full((x.shape[0], n_out), np.nan, dtype=np.float32)
    status = lib.tl_matmul_path(pool, int(qtype), packed, n_out, n_in,
                                ffi.cast("float *", ffi.from_buffer(x)), x.shape[0],
                                ffi.cast("float *", ffi.from_buffer(y, require_writable=True)),
                                lib.TL_PATH_PACKED)
    assert status == TL_OK
    return y


def block_of(qtype: Q) -> int:
    return GGML_QUANT_SIZES[qtype][0]


def row_length(qtype: Q, n_32_blocks: int) -> int:
    """About n_32_blocks * 32 elements, whole blocks of the type."""
    return max(1, n_32_blocks * 32 // block_of(qtype)) * block_of(qtype)


@pytest.mark.parametrize("qtype", PACKABLE, ids=lambda q: q.name)
def test_repacked_matrix_is_the_ggml_size_rounded_up_to_8_rows(qtype: Q) -> None:
    """Q4_K and Q5_K keep their scales unpacked to bytes: 4 bytes a row more per super-block."""
    block, size = GGML_QUANT_SIZES[qtype]
    size += EXTRA_BYTES.get(qtype, 0)
    assert size_of(lib.tl_repack_bytes, int(qtype), 37, 4 * block) == 40 * 4 * size
    assert size_of(lib.tl_repack_bytes, int(qtype), 48, 2 * block) == 48 * 2 * size


@pytest.mark.parametrize("qtype", [Q.Q2_K, Q.Q3_K, Q.F16, Q.F32], ids=lambda q: q.name)
def test_formats_without_a_repacked_layout_are_refused(
        pools: dict[str, Any], qtype: Q) -> None:
    n_in = 256
    w = make_weights(qtype, 8, n_in, np.random.default_rng(0))
    assert sized(lib.tl_repack_bytes, int(qtype), 8, n_in) == (TL_ERR_TYPE, -1)
    out = ffi.new("void **", ffi.cast("void *", 1))
    assert lib.tl_repack_new(int(qtype), ffi.from_buffer(w), 8, n_in, out) == TL_ERR_TYPE
    assert out[0] == ffi.NULL
    x = np.zeros((1, n_in), np.float32)
    y = np.zeros((1, 8), np.float32)
    status = lib.tl_matmul_path(pools["simd2"], int(qtype), ffi.from_buffer(w), 8, n_in,
                                ffi.cast("float *", ffi.from_buffer(x)), 1,
                                ffi.cast("float *", ffi.from_buffer(y, require_writable=True)),
                                lib.TL_PATH_PACKED)
    assert status == TL_ERR_TYPE


def test_row_length_not_whole_blocks_is_a_size_error(pools: dict[str, Any]) -> None:
    assert sized(lib.tl_repack_bytes, int(Q.Q4_1), 8, 48) == (TL_ERR_SIZE, -1)
    x = np.zeros((1, 48), np.float32)
    y = np.zeros((1, 8), np.float32)
    w = np.zeros(512, np.uint8)
    status = lib.tl_matmul_path(pools["simd2"], int(Q.Q4_1), ffi.from_buffer(w), 8, 48,
                                ffi.cast("float *", ffi.from_buffer(x)), 1,
                                ffi.cast("float *", ffi.from_buffer(y, require_writable=True)),
                                lib.TL_PATH_PACKED)
    assert status == TL_ERR_SIZE


@pytest.mark.parametrize("qtype", PACKABLE, ids=lambda q: q.name)
@pytest.mark.parametrize("n_tok", [1, 2, 3, 4, 5, 9])
def test_packed_path_equals_the_product_with_quantized_activations(
        pools: dict[str, Any], qtype: Q, n_tok: int) -> None:
    """Exact integer sums: with x replaced by its int8 quantization, float rounding only; and
    within the int8 noise of the float64 product of the true x."""
    rng = np.random.default_rng(100 * int(qtype) + n_tok)
    n_in, n_out = row_length(qtype, 13), 37  # a partial last tile of 5 rows
    w = make_weights(qtype, n_out, n_in, rng)
    x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
    spiky = x.copy()
    spiky[:, ::37] *= 40.0  # outliers, as in real residual streams
    w64 = dequantize(w, qtype).astype(np.float64)
    ref_q = quantized_activations(spiky, block_of(qtype)) @ w64.T
    packed = repack(qtype, w, n_out, n_in)
    for name in ("simd2", "scalar2"):
        assert rel_err(packed_matmul(pools[name], qtype, packed, n_out, n_in, spiky), ref_q) < 1e-5
        assert rel_err(packed_matmul(pools[name], qtype, packed, n_out, n_in, x),
                       oracle(qtype, w, x)) < 1e-2


@pytest.mark.parametrize("qtype", PACKABLE, ids=lambda q: q.name)
def test_simd_and_scalar_twins_give_identical_bits(pools: dict[str, Any], qtype: Q) -> None:
    rng = np.random.default_rng(int(qtype))
    for n_out, n_blocks, n_tok in ((37, 13, 1), (64, 2, 4), (133, 18, 6), (3, 1, 2)):
        n_in = row_length(qtype, n_blocks)
        w = make_weights(qtype, n_out, n_in, rng)
        x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
        packed = repack(qtype, w, n_out, n_in)
        want = packed_matmul(pools["scalar2"], qtype, packed, n_out, n_in, x)
        for name in ("simd1", "simd2", "simd3"):
            np.testing.assert_array_equal(packed_matmul(pools[name], qtype, packed, n_out, n_in,
                                                        x), want)


@pytest.mark.parametrize("qtype", PACKABLE, ids=lambda q: q.name)
@pytest.mark.parametrize("pool_name", ["simd2", "scalar2"])
def test_a_token_gets_the_same_bits_in_any_batch_and_position(
        pools: dict[str, Any], qtype: Q, pool_name: str) -> None:
    """Continuous batching: a decode row's result must not depend on its neighbours."""
    rng = np.random.default_rng(11)
    n_out, n_in = 75, 256
    w = make_weights(qtype, n_out, n_in, rng)
    packed = repack(qtype, w, n_out, n_in)
    others = rng.standard_normal((8, n_in), dtype=np.float32)
    mine = rng.standard_normal((1, n_in), dtype=np.float32)
    pool = pools[pool_name]
    alone = packed_matmul(pool, qtype, packed, n_out, n_in, mine)[0]
    for size in range(2, 10):
        for at in {0, size // 2, size - 1}:
            x = np.insert(others[: size - 1], at, mine[0], axis=0)
            y = packed_matmul(pool, qtype, packed, n_out, n_in, x)
            np.testing.assert_array_equal(y[at], alone)


def test_sizes_that_overflow_are_refused_not_wrapped(pools: dict[str, Any]) -> None:
    """Neither the size query nor the product wraps: huge shapes are a size error, and the
    product returns before touching the (dummy, one-element) buffers."""
    assert sized(lib.tl_repack_bytes, int(Q.Q4_0), 2**62, 2**40 * 32) == (TL_ERR_SIZE, -1)
    assert sized(lib.tl_repack_bytes, int(Q.Q6_K), 2**63 - 1, 256) == (TL_ERR_SIZE, -1)
    assert sized(lib.tl_repack_bytes, int(Q.Q5_0), 0, 32) == (TL_ERR_SIZE, -1)
    one = np.zeros(1, np.float32)
    status = lib.tl_matmul_path(pools["simd2"], int(Q.Q6_K), ffi.from_buffer(one), 2**61, 256,
                                ffi.cast("float *", ffi.from_buffer(one)), 1,
                                ffi.cast("float *", ffi.from_buffer(one, require_writable=True)),
                                lib.TL_PATH_PACKED)
    assert status == TL_ERR_SIZE


# A matrix of each format in Gemma 3 270M Q4_K_M (its first layer that has it), and at most
# GEMMA_ROWS of its rows: the output matrix's first 128 tiles and a partial one.
GEMMA_MATRICES = {Q.Q5_0: "attn_q.weight", Q.Q4_K: "attn_output.weight",
                  Q.Q6_K: "ffn_down.weight", Q.Q8_0: "token_embd.weight"}
GEMMA_ROWS = 1027


@pytest.fixture(scope="module")
def gemma_tensors(gemma3_path: Path) -> dict[Q, tuple[str, np.ndarray]]:
    """GEMMA_MATRICES' tensors as raw row bytes, by format."""
    found: dict[Q, tuple[str, np.ndarray]] = {}
    for t in GGUFReader(gemma3_path).tensors:
        qtype = Q(t.tensor_type)
        if qtype not in found and t.name.endswith(GEMMA_MATRICES.get(qtype, "-")):
            found[qtype] = (t.name, np.ascontiguousarray(t.data[:GEMMA_ROWS]))
    assert set(found) == set(GEMMA_MATRICES)
    return found


# Reading Gemma 3's matrices and their float64 products, ~20 s: the full tier; the synthetic
# matrices above keep the packed path in the fast one
@pytest.mark.full
@pytest.mark.parametrize("qtype", list(GEMMA_MATRICES), ids=lambda q: q.name)
def test_real_gemma_weights_match_the_float64_product_in_any_batch(
        pools: dict[str, Any], gemma_tensors: dict[Q, tuple[str, np.ndarray]], qtype: Q) -> None:
    """Gemma 3 270M's own matrices: within the int8 noise of the float64 product, SIMD and
    scalar alike, and each token's bits the same for 1..5 tokens a call and 1 or 2 threads."""
    name, w = gemma_tensors[qtype]
    n_out, n_in = w.shape[0], w.shape[1] // GGML_QUANT_SIZES[qtype][1] * block_of(qtype)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, n_in), dtype=np.float32)
    packed = repack(qtype, w, n_out, n_in)
    ref = oracle(qtype, w, x)
    ref_q = quantized_activations(x, block_of(qtype)) @ dequantize(w, qtype).astype(np.float64).T
    full = {p: packed_matmul(pools[p], qtype, packed, n_out, n_in, x) for p in ("simd2", "scalar2")}
    np.testing.assert_array_equal(full["simd2"], full["scalar2"], err_msg=name)
    assert rel_err(full["simd2"], ref_q) < 1e-5, name
    assert rel_err(full["simd2"], ref) < 1e-2, name
    for n_tok in range(1, 5):
        for p in ("simd1", "simd2"):
            got = packed_matmul(pools[p], qtype, packed, n_out, n_in, x[:n_tok])
            np.testing.assert_array_equal(got, full["simd2"][:n_tok], err_msg=f"{name} {p}")
