"""tl_matmul against a float64 product of gguf-dequantized weights, on SIMD and scalar pools."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from tests.kernel_calls import pool_new
from trio_llm._kernels import ffi, lib

Q = GGMLQuantizationType

# tl_status codes (csrc/tl_api.h).
TL_OK, TL_ERR_TYPE, TL_ERR_SIZE, TL_ERR_ARG = 0, 1, 2, 4

# Byte offsets of the f16 scale fields (d, m / dmin) inside one block of each format.
SCALE_OFFSETS: dict[Q, tuple[int, ...]] = {
    Q.Q4_0: (0,),
    Q.Q4_1: (0, 2),
    Q.Q5_0: (0,),
    Q.Q5_1: (0, 2),
    Q.Q8_0: (0,),
    Q.Q2_K: (80, 82),
    Q.Q3_K: (108,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}
FLOAT_TYPES = [Q.F32, Q.F16, Q.BF16]
QUANT_TYPES = list(SCALE_OFFSETS)
ALL_TYPES = FLOAT_TYPES + QUANT_TYPES

# Relative error bounds against the float64 product (see the brief of tl_matmul).
TOL_FLOAT = 1e-5
TOL_INT8 = 1e-2
# SIMD and scalar paths compute the same integer sums; only float summation order differs.
TOL_SIMD_VS_SCALAR = {"float": 1e-5, "int8": 1e-4}


def make_weights(qtype: Q, n_out: int, n_in: int, rng: np.random.Generator) -> np.ndarray:
    """Random weights of qtype as raw bytes [n_out][row_bytes]: random quants, sane f16 scales."""
    if qtype == Q.F32:
        return rng.standard_normal((n_out, n_in), dtype=np.float32).view(np.uint8)
    if qtype == Q.F16:
        return rng.standard_normal((n_out, n_in)).astype(np.float16).view(np.uint8)
    if qtype == Q.BF16:
        f = rng.standard_normal((n_out, n_in), dtype=np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    block, size = GGML_QUANT_SIZES[qtype]
    nb = n_in // block
    raw = rng.integers(0, 256, size=(n_out, nb, size), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        mag = rng.uniform(1e-3, 2e-2, size=(n_out, nb))
        sign = rng.choice([-1.0, 1.0], size=(n_out, nb))
        scale = (mag * sign).astype(np.float16).view(np.uint8)
        raw[:, :, off : off + 2] = scale.reshape(n_out, nb, 2)
    return raw.reshape(n_out, nb * size)


def oracle(qtype: Q, wbytes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y64[t][o] = sum_i W[o][i] * x[t][i] in float64, W dequantized by the gguf package."""
    w = dequantize(wbytes, qtype).astype(np.float64)
    return x.astype(np.float64) @ w.T


def quantized_activations(x: np.ndarray, block: int) -> np.ndarray:
    """x as the int8 paths see it: per block, d = amax/127, q = round_half_even(x * 127/amax)."""
    xb = x.astype(np.float32).reshape(x.shape[0], -1, block)
    amax = np.abs(xb).max(axis=-1, keepdims=True)
    d = amax / np.float32(127.0)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    q = np.clip(np.rint(xb * inv), -127, 127)
    return (q.astype(np.float64) * d.astype(np.float64)).reshape(x.shape)


def matmul(pool: object, qtype: Q, wbytes: np.ndarray, n_out: int, n_in: int,
           x: np.ndarray) -> np.ndarray:
    """Run tl_matmul and return y; asserts it succeeded."""
    n_tok = x.shape[0]
    y = np.full((n_tok, n_out), np.nan, dtype=np.float32)
    status = lib.tl_matmul(pool, int(qtype), ffi.from_buffer(wbytes), n_out, n_in,
                           ffi.cast("float *", ffi.from_buffer(x)), n_tok,
                           ffi.cast("float *", ffi.from_buffer(y, require_writable=True)))
    assert status == TL_OK
    return y


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(y.astype(np.float64) - ref) / np.linalg.norm(ref))


def n_in_for(qtype: Q) -> int:
    """A row length that is a whole number of blocks and not a power of two where possible."""
    return 512 if GGML_QUANT_SIZES[qtype][0] == 256 else 416


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[str, object]]:
    made = {
        "simd2": pool_new(2, 0),
        "scalar2": pool_new(2, 1),
        "simd1": pool_new(1, 0),
        "simd3": pool_new(3, 0),
        "scalar3": pool_new(3, 1),
    }
    yield made
    for p in made.values():
        lib.tl_pool_free(p)


def test_scalar_pool_reports_no_simd(pools: dict[str, object]) -> None:
    assert lib.tl_pool_features(pools["scalar2"]) == 0


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("n_tok", [1, 3, 17, 64])
def test_matmul_matches_float64_product_of_dequantized_weights(
    pools: dict[str, object], qtype: Q, n_tok: int
) -> None:
    """Within 1e-5 (float weights) or 1e-2 (int8 activations) of the exact product; the int8
    paths' own noise floor with Gaussian x is about 0.5% (32-blocks) to 0.7% (256-blocks)."""
    rng = np.random.default_rng(1000 * int(qtype) + n_tok)
    n_in = n_in_for(qtype)
    tol = TOL_FLOAT if qtype in FLOAT_TYPES else TOL_INT8
    kind = "float" if qtype in FLOAT_TYPES else "int8"
    got: dict[str, list[np.ndarray]] = {"simd2": [], "scalar2": []}
    refs = []
    for n_out in (37, 133):  # neither a multiple of 8 nor of 4
        w = make_weights(qtype, n_out, n_in, rng)
        x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
        refs.append(oracle(qtype, w, x).ravel())
        for name, ys in got.items():
            ys.append(matmul(pools[name], qtype, w, n_out, n_in, x).ravel())
    ref = np.concatenate(refs)
    y_simd, y_scalar = np.concatenate(got["simd2"]), np.concatenate(got["scalar2"])
    assert rel_err(y_simd, ref) < tol
    assert rel_err(y_scalar, ref) < tol
    assert rel_err(y_simd, y_scalar.astype(np.float64)) < TOL_SIMD_VS_SCALAR[kind]


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("n_tok", [1, 3, 17, 64])
def test_int8_paths_equal_the_product_with_quantized_activations(
    pools: dict[str, object], qtype: Q, n_tok: int
) -> None:
    """With x replaced by its int8 quantization, the product is exact up to float rounding."""
    rng = np.random.default_rng(2000 * int(qtype) + n_tok)
    n_in = n_in_for(qtype)
    n_out = 45
    w = make_weights(qtype, n_out, n_in, rng)
    x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
    x[:, ::37] *= 40.0  # outliers, as in real residual streams
    xq = quantized_activations(x, 256 if GGML_QUANT_SIZES[qtype][0] == 256 else 32)
    ref = xq @ dequantize(w, qtype).astype(np.float64).T
    for name in ("simd2", "scalar2"):
        assert rel_err(matmul(pools[name], qtype, w, n_out, n_in, x), ref) < 1e-5


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0, Q.Q5_0, Q.Q4_K, Q.F16], ids=lambda q: q.name)
@pytest.mark.parametrize("pool_name", ["simd1", "simd3", "scalar3"])
def test_odd_thread_counts_give_the_same_result(
    pools: dict[str, object], qtype: Q, pool_name: str
) -> None:
    rng = np.random.default_rng(7)
    n_in = n_in_for(qtype)
    for n_out, n_tok in ((45, 1), (45, 2), (45, 4), (13, 33), (101, 20)):
        w = make_weights(qtype, n_out, n_in, rng)
        x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
        y = matmul(pools[pool_name], qtype, w, n_out, n_in, x)
        y2 = matmul(pools["simd2" if "simd" in pool_name else "scalar2"], qtype, w, n_out, n_in, x)
        np.testing.assert_allclose(y, y2, rtol=1e-5, atol=1e-5 * float(np.abs(y2).max()))


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q4_K, Q.F16], ids=lambda q: q.name)
def test_threads_that_come_late_or_never_change_no_bit(qtype: Q) -> None:
    """Eight threads on this machine's few cores: in most runs some workers are not scheduled
    in time and the others take their parts. Every product still has one thread's bits."""
    rng = np.random.default_rng(11)
    n_in = n_in_for(qtype)
    crowded, alone = pool_new(8, 0), pool_new(1, 0)
    try:
        for n_out, n_tok in ((576, 1), (1536, 1), (576, 3), (200, 40), (40, 64)):
            w = make_weights(qtype, n_out, n_in, rng)
            x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
            want = matmul(alone, qtype, w, n_out, n_in, x)
            for _ in range(20):
                np.testing.assert_array_equal(matmul(crowded, qtype, w, n_out, n_in, x), want)
    finally:
        lib.tl_pool_free(crowded)
        lib.tl_pool_free(alone)


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16], ids=lambda q: q.name)
def test_float_weights_take_any_row_length(pools: dict[str, object], qtype: Q) -> None:
    rng = np.random.default_rng(3)
    for n_in, n_tok in ((1, 5), (13, 1), (45, 9)):
        w = make_weights(qtype, 11, n_in, rng)
        x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
        ref = oracle(qtype, w, x)
        for name in ("simd2", "scalar2"):
            assert rel_err(matmul(pools[name], qtype, w, 11, n_in, x), ref) < TOL_FLOAT


def test_matmul_of_zero_tokens_writes_nothing(pools: dict[str, object]) -> None:
    y = np.full(4, 7.0, dtype=np.float32)
    w = make_weights(Q.Q4_1, 4, 64, np.random.default_rng(0))
    status = lib.tl_matmul(pools["simd2"], int(Q.Q4_1), ffi.from_buffer(w), 4, 64, ffi.NULL, 0,
                           ffi.cast("float *", ffi.from_buffer(y, require_writable=True)))
    assert status == TL_OK
    assert (y == 7.0).all()


def test_unknown_weight_type_is_a_type_error(pools: dict[str, object]) -> None:
    x = np.zeros((1, 32), dtype=np.float32)
    y = np.zeros((1, 1), dtype=np.float32)
    for bad in (int(Q.Q8_1), int(Q.Q8_K), 99, -1):
        status = lib.tl_matmul(pools["simd2"], bad, ffi.from_buffer(np.zeros(64, np.uint8)), 1, 32,
                               ffi.cast("float *", ffi.from_buffer(x)), 1,
                               ffi.cast("float *", ffi.from_buffer(y, require_writable=True)))
        assert status == TL_ERR_TYPE


@pytest.mark.parametrize("qtype,n_in", [(Q.Q4_1, 48), (Q.Q8_0, 31), (Q.Q4_K, 288), (Q.Q6_K, 32)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_row_length_not_whole_blocks_is_a_size_error(
    pools: dict[str, object], qtype: Q, n_in: int
) -> None:
    x = np.zeros((1, n_in), dtype=np.float32)
    y = np.zeros((1, 1), dtype=np.float32)
    status = lib.tl_matmul(pools["simd2"], int(qtype), ffi.from_buffer(np.zeros(4096, np.uint8)),
                           1, n_in, ffi.cast("float *", ffi.from_buffer(x)), 1,
                           ffi.cast("float *", ffi.from_buffer(y, require_writable=True)))
    assert status == TL_ERR_SIZE


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0, Q.Q6_K, Q.Q4_K, Q.F32], ids=lambda q: q.name)
def test_many_rows_span_several_packed_tile_groups(pools: dict[str, object], qtype: Q) -> None:
    rng = np.random.default_rng(5)
    n_in, n_out = n_in_for(qtype), 450
    w = make_weights(qtype, n_out, n_in, rng)
    x = rng.standard_normal((5, n_in), dtype=np.float32)
    y_simd = matmul(pools["simd2"], qtype, w, n_out, n_in, x)
    y_scalar = matmul(pools["scalar2"], qtype, w, n_out, n_in, x)
    assert rel_err(y_simd, y_scalar.astype(np.float64)) < 1e-5


@pytest.fixture(scope="module")
def smollm2(smollm2_reader: GGUFReader) -> dict[str, tuple[Q, np.ndarray]]:
    """A few real tensors of SmolLM2-135M as (type, raw bytes [n_out][row_bytes])."""
    wanted = {"blk.0.ffn_down.weight", "blk.0.attn_k.weight", "token_embd.weight"}
    reader = smollm2_reader
    return {t.name: (Q(t.tensor_type), np.ascontiguousarray(t.data[:4096]))
            for t in reader.tensors if t.name in wanted}


@pytest.mark.parametrize("name", ["blk.0.ffn_down.weight", "blk.0.attn_k.weight",
                                  "token_embd.weight"])
@pytest.mark.parametrize("n_tok", [1, 7])
def test_real_smollm2_weights_match_float64_product(
    pools: dict[str, object], smollm2: dict[str, tuple[Q, np.ndarray]], name: str, n_tok: int
) -> None:
    qtype, w = smollm2[name]
    n_out = w.shape[0]
    n_in = w.shape[1] // GGML_QUANT_SIZES[qtype][1] * GGML_QUANT_SIZES[qtype][0]
    x = np.random.default_rng(n_tok).standard_normal((n_tok, n_in), dtype=np.float32)
    ref = oracle(qtype, w, x)
    y_simd = matmul(pools["simd2"], qtype, w, n_out, n_in, x)
    y_scalar = matmul(pools["scalar2"], qtype, w, n_out, n_in, x)
    assert rel_err(y_simd, ref) < TOL_INT8
    assert rel_err(y_scalar, ref) < TOL_INT8
    assert rel_err(y_simd, y_scalar.astype(np.float64)) < TOL_SIMD_VS_SCALAR["int8"]


# TL_PATH_PRECISE: activations as hi + lo, two int8 encodings (lo: the residual x - hi).
PATHS = {"auto": 0, "row_dots": 1, "tiled": 2}
TOL_PRECISE = 2e-4  # ~15-bit activations: about 1/250 of the int8 paths' error


def matmul_path(pool: object, qtype: Q, wbytes: np.ndarray, n_out: int, n_in: int,
                x: np.ndarray, path: int) -> np.ndarray:
    """Run tl_matmul_path and return y; asserts it succeeded."""
    n_tok = x.shape[0]
    y = np.full((n_tok, n_out), np.nan, dtype=np.float32)
    status = lib.tl_matmul_path(pool, int(qtype), ffi.from_buffer(wbytes), n_out, n_in,
                                ffi.cast("float *", ffi.from_buffer(x)), n_tok,
                                ffi.cast("float *", ffi.from_buffer(y, require_writable=True)),
                                path)
    assert status == TL_OK
    return y


def two_part_activations(x: np.ndarray, block: int) -> np.ndarray:
    """x as the precise paths see it: hi = the int8 encoding, plus lo = that of x - hi, where
    x - hi is computed in float32 with the product d * q rounded first (as the C code does)."""
    xb = x.astype(np.float32).reshape(x.shape[0], -1, block)

    def encode(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amax = np.abs(v).max(axis=-1, keepdims=True)
        d = (amax / np.float32(127.0)).astype(np.float32)
        with np.errstate(divide="ignore"):
            inv = np.where(amax > 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
        return d, np.clip(np.rint(v * inv), -127, 127).astype(np.float32)

    d1, q1 = encode(xb)
    d2, q2 = encode((xb - d1 * q1).astype(np.float32))
    both = d1.astype(np.float64) * q1 + d2.astype(np.float64) * q2
    return both.reshape(x.shape)


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("path", ["row_dots", "tiled"])
def test_precise_path_is_far_closer_to_float64_than_int8(
    pools: dict[str, object], qtype: Q, path: str
) -> None:
    """Outliers included (as in real residual streams); SIMD and scalar pools alike."""
    rng = np.random.default_rng(3000 + int(qtype))
    n_in, n_out = n_in_for(qtype), 133
    w = make_weights(qtype, n_out, n_in, rng)
    x = rng.standard_normal((17, n_in), dtype=np.float32)
    x[:, ::37] *= 40.0
    ref = oracle(qtype, w, x)
    plain = rel_err(matmul_path(pools["simd2"], qtype, w, n_out, n_in, x, PATHS[path]), ref)
    for name in ("simd2", "scalar2"):
        y = matmul_path(pools[name], qtype, w, n_out, n_in, x, PATHS[path] | lib.TL_PATH_PRECISE)
        err = rel_err(y, ref)
        assert err < TOL_PRECISE
        assert err < plain / 50


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("n_tok", [1, 3, 17])
def test_precise_paths_equal_the_product_with_two_part_activations(
    pools: dict[str, object], qtype: Q, n_tok: int
) -> None:
    """Exact up to float rounding: the lo part's scales and block sums are right too."""
    rng = np.random.default_rng(4000 * int(qtype) + n_tok)
    n_in, n_out = n_in_for(qtype), 45
    w = make_weights(qtype, n_out, n_in, rng)
    x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
    x[:, ::29] *= 30.0
    xq = two_part_activations(x, 256 if GGML_QUANT_SIZES[qtype][0] == 256 else 32)
    ref = xq @ dequantize(w, qtype).astype(np.float64).T
    for name in ("simd2", "scalar2", "simd3", "scalar3"):
        for path in PATHS.values():
            y = matmul_path(pools[name], qtype, w, n_out, n_in, x, path | lib.TL_PATH_PRECISE)
            assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
def test_precise_simd_paths_match_their_scalar_twins(pools: dict[str, object], qtype: Q) -> None:
    rng = np.random.default_rng(5000 + int(qtype))
    n_in = n_in_for(qtype)
    for n_out, n_tok in ((37, 1), (450, 5), (133, 40)):
        w = make_weights(qtype, n_out, n_in, rng)
        x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
        for path in PATHS.values():
            p = path | lib.TL_PATH_PRECISE
            y_simd = matmul_path(pools["simd2"], qtype, w, n_out, n_in, x, p)
            y_scalar = matmul_path(pools["scalar2"], qtype, w, n_out, n_in, x, p)
            assert rel_err(y_simd, y_scalar.astype(np.float64)) < 1e-5


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0, Q.Q5_1, Q.Q4_K, Q.Q6_K], ids=lambda q: q.name)
@pytest.mark.parametrize("path", ["row_dots", "tiled"])
@pytest.mark.parametrize("pool_name", ["simd2", "scalar2", "simd3"])
def test_a_precise_token_has_the_same_bits_alone_or_in_a_batch(
    pools: dict[str, object], qtype: Q, path: str, pool_name: str
) -> None:
    rng = np.random.default_rng(6000 + int(qtype))
    n_in, n_out = n_in_for(qtype), 96
    w = make_weights(qtype, n_out, n_in, rng)
    x = rng.standard_normal((13, n_in), dtype=np.float32)
    p = PATHS[path] | lib.TL_PATH_PRECISE
    batch = matmul_path(pools[pool_name], qtype, w, n_out, n_in, x, p)
    for t in (0, 6, 12):
        alone = matmul_path(pools[pool_name], qtype, w, n_out, n_in, x[t : t + 1].copy(), p)
        assert np.array_equal(alone[0], batch[t])


@pytest.mark.parametrize("qtype", FLOAT_TYPES, ids=lambda q: q.name)
def test_precise_flag_leaves_float_weights_unchanged(pools: dict[str, object], qtype: Q) -> None:
    rng = np.random.default_rng(8)
    w = make_weights(qtype, 21, 64, rng)
    x = rng.standard_normal((9, 64), dtype=np.float32)
    for path in PATHS.values():
        plain = matmul_path(pools["simd2"], qtype, w, 21, 64, x, path)
        precise = matmul_path(pools["simd2"], qtype, w, 21, 64, x, path | lib.TL_PATH_PRECISE)
        assert np.array_equal(plain, precise)


def test_unknown_path_with_the_precise_flag_is_an_argument_error(
    pools: dict[str, object]
) -> None:
    x = np.zeros((1, 32), dtype=np.float32)
    y = np.zeros((1, 1), dtype=np.float32)
    w = make_weights(Q.Q4_1, 1, 32, np.random.default_rng(0))
    for bad in (3 | lib.TL_PATH_PRECISE, -1, 8):
        status = lib.tl_matmul_path(pools["simd2"], int(Q.Q4_1), ffi.from_buffer(w), 1, 32,
                                    ffi.cast("float *", ffi.from_buffer(x)), 1,
                                    ffi.cast("float *", ffi.from_buffer(y, require_writable=True)),
                                    bad)
        assert status == TL_ERR_ARG
