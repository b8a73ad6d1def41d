"""The element-wise transformer ops (rmsnorm, rope, swiglu, geglu, add, scale) against float64.

Every op runs on a SIMD pool and on a scalar-only pool, so both twins of each kernel are checked.
The batch-invariance tests check that a token's row has the same bits whatever its offset in a
bigger batch and whatever the pool's thread count (1, 2, 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.kernel_calls import pool_new
from trio_llm._kernels import ffi, lib

TL_OK, TL_ERR_ARG = 0, 4  # tl_status codes (csrc/tl_api.h)
REL_TOL = 1e-5


def fptr(a: np.ndarray) -> Any:
    """A float * to a C-contiguous float32 array."""
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return ffi.cast("float *", ffi.from_buffer(a))


def iptr(a: np.ndarray) -> Any:
    """An int32_t * to a C-contiguous int32 array."""
    assert a.dtype == np.int32 and a.flags.c_contiguous
    return ffi.cast("int32_t *", ffi.from_buffer(a))


def new_pool(flags: int) -> Any:
    """A 2-thread pool (used at once: a worker that starts late still gets the first job)."""
    return pool_new(2, flags)


@pytest.fixture(scope="module", params=["simd", "scalar"])
def pool(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The SIMD pool (AVX2 when the CPU has it) and the scalar reference pool."""
    p = new_pool(0 if request.param == "simd" else 1)
    yield p
    lib.tl_pool_free(p)


def max_rel(out: np.ndarray, ref: np.ndarray) -> float:
    """Largest error relative to the largest reference magnitude."""
    return float(np.max(np.abs(out.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def elem_rel(out: np.ndarray, ref: np.ndarray) -> float:
    """Largest element-wise relative error over the non-zero reference values."""
    nz = ref != 0
    return float(np.max(np.abs(out[nz].astype(np.float64) - ref[nz]) / np.abs(ref[nz])))


def test_gelu_avx512_has_the_avx2_twins_bits() -> None:
    """Where the pool has AVX-512, tl_gelu runs 16 lanes with the AVX2 twin's operations: the
    same bits for every value (the AVX2 pool is made with TL_POOL_NO_VNNI)."""
    if not lib.tl_cpu_features() & lib.TL_CPU_AVX512VNNI:
        pytest.skip("this CPU (or OS) has no AVX-512")
    wide, narrow = new_pool(0), new_pool(lib.TL_POOL_NO_VNNI)
    try:
        rng = np.random.default_rng(17)
        x = np.concatenate([rng.standard_normal(40000) * 4, rng.uniform(-30, 30, 9000),
                            [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-38, -1e-38, 88.0, -88.0,
                             3.4e38, -3.4e38]]).astype(np.float32)
        for n in (x.size, 37, 16, 15):
            out = []
            for pool in (wide, narrow):
                y = np.empty(n, np.float32)
                assert lib.tl_gelu(pool, fptr(x[:n].copy()), fptr(y), n) == TL_OK
                out.append(y)
            assert np.array_equal(out[0].view(np.uint32), out[1].view(np.uint32))
    finally:
        lib.tl_pool_free(wide)
        lib.tl_pool_free(narrow)


# ---------------------------------------------------------------- layernorm


def layernorm_ref(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None,
                  eps: float) -> np.ndarray:
    xd = x.astype(np.float64)
    mean = xd.mean(axis=-1, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (xd - mean) / np.sqrt(var + np.float64(np.float32(eps)))
    if w is not None:
        y = y * w.astype(np.float64)
    return y if b is None else y + b.astype(np.float64)


@pytest.mark.parametrize("n_rows, n", [(1, 384), (3, 37), (64, 384), (40, 1024)])
def test_layernorm_matches_float64_with_weight_and_bias(pool: Any, n_rows: int, n: int) -> None:
    rng = np.random.default_rng(n_rows * 1000 + n)
    x = (rng.standard_normal((n_rows, n)) * 3 + 1.5).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, n).astype(np.float32)
    y = np.empty_like(x)
    assert lib.tl_layernorm(pool, fptr(x), fptr(w), fptr(b), fptr(y), n_rows, n, 1e-12) == TL_OK
    assert max_rel(y, layernorm_ref(x, w, b, 1e-12)) < REL_TOL


def test_layernorm_simd_twin_agrees_with_the_scalar_reference() -> None:
    """The AVX2 twin sums in another order (in double): the same floats but for the rare row
    whose mean or scale rounds differently, then by an ulp."""
    simd, scalar = new_pool(0), new_pool(1)
    try:
        rng = np.random.default_rng(7)
        for n in (384, 37, 8, 1536):
            x = (rng.standard_normal((50, n)) * 4 - 2).astype(np.float32)
            w = rng.uniform(0.5, 1.5, n).astype(np.float32)
            out = []
            for pool in (simd, scalar):
                y = np.empty_like(x)
                assert lib.tl_layernorm(pool, fptr(x), fptr(w), ffi.NULL, fptr(y), 50, n,
                                        1e-5) == TL_OK
                out.append(y)
            assert elem_rel(out[0], out[1].astype(np.float64)) < 1e-6
    finally:
        lib.tl_pool_free(simd)
        lib.tl_pool_free(scalar)


# ---------------------------------------------------------------- rmsnorm


def rmsnorm_ref(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    xd = x.astype(np.float64)
    y = xd / np.sqrt(np.mean(xd * xd, axis=-1, keepdims=True) + np.float64(np.float32(eps)))
    return y if w is None else y * w.astype(np.float64)


@pytest.mark.parametrize("n_rows, n", [(1, 576), (3, 37), (64, 576), (40, 2048)])
def test_rmsnorm_matches_float64_with_weight(pool: Any, n_rows: int, n: int) -> None:
    rng = np.random.default_rng(n_rows * 1000 + n)
    x = (rng.standard_normal((n_rows, n)) * 3).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n).astype(np.float32)
    y = np.empty_like(x)
    assert lib.tl_rmsnorm(pool, fptr(x), fptr(w), fptr(y), n_rows, n, 1e-5) == TL_OK
    assert elem_rel(y, rmsnorm_ref(x, w, 1e-5)) < REL_TOL


def test_rmsnorm_without_weight_in_place(pool: Any) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 640)).astype(np.float32)
    ref = rmsnorm_ref(x, None, 1e-6)
    assert lib.tl_rmsnorm(pool, fptr(x), ffi.NULL, fptr(x), 50, 640, 1e-6) == TL_OK
    assert elem_rel(x, ref) < REL_TOL


def test_rmsnorm_eps_dominates_a_zero_row(pool: Any) -> None:
    x = np.zeros((1, 16), np.float32)
    y = np.full_like(x, np.nan)
    assert lib.tl_rmsnorm(pool, fptr(x), ffi.NULL, fptr(y), 1, 16, 1e-5) == TL_OK
    assert np.all(y == 0)


def test_rmsnorm_rejects_bad_arguments(pool: Any) -> None:
    x = np.ones(8, np.float32)
    assert lib.tl_rmsnorm(pool, fptr(x), ffi.NULL, fptr(x), 1, 0, 1e-5) == TL_ERR_ARG
    assert lib.tl_rmsnorm(pool, fptr(x), ffi.NULL, fptr(x), -1, 8, 1e-5) == TL_ERR_ARG
    assert lib.tl_rmsnorm(pool, fptr(x), ffi.NULL, fptr(x), 1, 8, -1.0) == TL_ERR_ARG
    assert lib.tl_rmsnorm(ffi.NULL, fptr(x), ffi.NULL, fptr(x), 1, 8, 1e-5) == TL_ERR_ARG


# ---------------------------------------------------------------- rope


def rope_ref(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float, freq_scale: float,
             neox: bool, factors: np.ndarray | None = None, mscale: float = 1.0) -> np.ndarray:
    """Rotary embedding in float64 on [n_tok][n_heads][head_dim] (base and scale as float32);
    LongRoPE divides each frequency by its factor and scales cos and sin by mscale."""
    y = x.astype(np.float64)
    half = n_rot // 2
    i = np.arange(half, dtype=np.float64)
    inv_freq = np.float64(np.float32(base)) ** (-2.0 * i / n_rot)
    if factors is not None:
        inv_freq = inv_freq / factors.astype(np.float64)
    theta = pos.astype(np.float64)[:, None] * np.float64(np.float32(freq_scale)) * inv_freq
    m = np.float64(np.float32(mscale))
    c, s = m * np.cos(theta)[:, None, :], m * np.sin(theta)[:, None, :]
    if neox:
        a, b = y[..., :half].copy(), y[..., half:n_rot].copy()
        y[..., :half] = a * c - b * s
        y[..., half:n_rot] = a * s + b * c
    else:
        a, b = y[..., 0:n_rot:2].copy(), y[..., 1:n_rot:2].copy()
        y[..., 0:n_rot:2] = a * c - b * s
        y[..., 1:n_rot:2] = a * s + b * c
    return y


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize(
    "n_tok, n_heads, head_dim, n_rot, base",
    [(1, 9, 64, 64, 100000.0), (70, 3, 64, 64, 100000.0), (5, 4, 256, 256, 1e6),
     (40, 2, 96, 60, 10000.0), (3, 2, 20, 12, 10000.0)],
)
def test_rope_matches_float64_at_positions_up_to_32k(
    pool: Any, neox: bool, n_tok: int, n_heads: int, head_dim: int, n_rot: int, base: float
) -> None:
    rng = np.random.default_rng(n_tok * 7 + head_dim)
    x = rng.standard_normal((n_tok, n_heads, head_dim)).astype(np.float32)
    pos = rng.integers(0, 32768, n_tok).astype(np.int32)
    pos[0] = 32767
    ref = rope_ref(x, pos, n_rot, base, 1.0, neox)
    assert lib.tl_rope(pool, fptr(x), n_tok, n_heads, head_dim, n_rot, iptr(pos), base, 1.0,
                       int(neox), ffi.NULL, 1.0) == TL_OK
    for t in range(n_tok):
        assert max_rel(x[t], ref[t]) < REL_TOL
    assert np.array_equal(x[..., n_rot:], ref[..., n_rot:].astype(np.float32))


def test_rope_applies_freq_scale_and_leaves_position_zero_unchanged(pool: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 64)).astype(np.float32)
    pos = np.array([0, 5000], np.int32)
    ref = rope_ref(x, pos, 64, 10000.0, 0.25, False)
    before = x.copy()
    assert lib.tl_rope(pool, fptr(x), 2, 2, 64, 64, iptr(pos), 10000.0, 0.25, 0,
                       ffi.NULL, 1.0) == TL_OK
    assert np.array_equal(x[0], before[0])
    assert max_rel(x[1], ref[1]) < REL_TOL


def test_rope_rejects_odd_or_oversized_n_rot_and_bad_scales(pool: Any) -> None:
    x = np.zeros((1, 1, 64), np.float32)
    pos = np.zeros(1, np.int32)

    def rope(n_rot: int, base: float, mscale: float) -> int:
        return lib.tl_rope(pool, fptr(x), 1, 1, 64, n_rot, iptr(pos), base, 1.0, 0, ffi.NULL,
                           mscale)

    assert rope(63, 1e4, 1.0) == TL_ERR_ARG
    assert rope(66, 1e4, 1.0) == TL_ERR_ARG
    assert rope(64, 0.0, 1.0) == TL_ERR_ARG
    assert rope(64, 1e4, 0.0) == TL_ERR_ARG


@pytest.mark.parametrize("neox", [False, True])
def test_rope_with_longrope_factors_and_attention_factor_matches_float64(
        pool: Any, neox: bool) -> None:
    """Partial rotary (24 of 32 dims) with per-frequency factors and an attention factor: the
    rotated dims match float64, the others pass through untouched."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((30, 3, 32)).astype(np.float32)
    pos = rng.integers(0, 32768, 30).astype(np.int32)
    factors = rng.uniform(1.0, 60.0, 12).astype(np.float32)
    ref = rope_ref(x, pos, 24, 10000.0, 1.0, neox, factors, 1.19)
    assert lib.tl_rope(pool, fptr(x), 30, 3, 32, 24, iptr(pos), 10000.0, 1.0, int(neox),
                       fptr(factors), 1.19) == TL_OK
    for t in range(30):
        assert max_rel(x[t], ref[t]) < REL_TOL
    assert np.array_equal(x[..., 24:], ref[..., 24:].astype(np.float32))


# ---------------------------------------------------------------- gated activations


def silu_ref(g: np.ndarray) -> np.ndarray:
    gd = g.astype(np.float64)
    return gd / (1.0 + np.exp(-gd))


def gelu_tanh_ref(g: np.ndarray) -> np.ndarray:
    """0.5 g (1 + tanh(u)) written as g sigmoid(2u): equal, but float64 1 + tanh(u) itself
    cancels to 0 for g below about -6, where the sigmoid form keeps every digit."""
    gd = g.astype(np.float64)
    u = np.sqrt(2.0 / np.pi) * (gd + 0.044715 * gd**3)
    return gd / (1.0 + np.exp(-2.0 * u))


def test_gelu_reference_equals_the_tanh_form() -> None:
    g = np.linspace(-4, 9, 10001)
    tanh_form = 0.5 * g * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (g + 0.044715 * g**3)))
    assert np.allclose(gelu_tanh_ref(g), tanh_form, rtol=1e-9, atol=0)


def gate_values(n: int, seed: int) -> np.ndarray:
    """Gates over the range activations see (|g| <= 9), including exact zeros."""
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.linspace(-9, 9, n // 2), rng.standard_normal(n - n // 2) * 3])
    g[::97] = 0.0
    return np.clip(g, -9, 9).astype(np.float32)


@pytest.mark.parametrize("n", [7, 1536, 100003])
def test_swiglu_matches_float64(pool: Any, n: int) -> None:
    g = gate_values(n, n)
    u = np.random.default_rng(n + 1).standard_normal(n).astype(np.float32)
    out = np.empty_like(g)
    assert lib.tl_swiglu(pool, fptr(g), fptr(u), fptr(out), n) == TL_OK
    assert elem_rel(out, silu_ref(g) * u) < REL_TOL


@pytest.mark.parametrize("n", [7, 2048, 100003])
def test_geglu_matches_float64_tanh_gelu(pool: Any, n: int) -> None:
    g = gate_values(n, n)
    u = np.random.default_rng(n + 1).standard_normal(n).astype(np.float32)
    out = np.empty_like(g)
    assert lib.tl_geglu(pool, fptr(g), fptr(u), fptr(out), n) == TL_OK
    assert elem_rel(out, gelu_tanh_ref(g) * u) < REL_TOL


def gelu_exact_ref(g: np.ndarray) -> np.ndarray:
    """x Phi(x) in float64, Phi from math.erfc (BERT's exact "gelu")."""
    gd = g.astype(np.float64)
    return 0.5 * gd * np.array([math.erfc(-v / math.sqrt(2.0)) for v in gd])


@pytest.mark.parametrize("n", [7, 1536, 20003])
def test_gelu_matches_float64_exact_gelu(pool: Any, n: int) -> None:
    g = gate_values(n, n)
    out = np.empty_like(g)
    assert lib.tl_gelu(pool, fptr(g), fptr(out), n) == TL_OK
    ref = gelu_exact_ref(g)
    big = np.abs(ref) > 1e-30          # far in the negative tail only the magnitude matters
    assert elem_rel(out[big], ref[big]) < REL_TOL
    assert not (~big).any() or np.max(np.abs(out[~big])) < 1e-29


def test_gelu_simd_twin_matches_the_reference_and_ignores_position() -> None:
    """The AVX2 twin is within 1e-6 of libm's erfc form where |x| < 4 (1e-5 in the negative
    tail, where both lose digits to the rounding of x / sqrt 2), and an element's bits do not
    depend on where it sits (a tail through the padded copy, any thread split)."""
    g = gate_values(4099, 3)
    simd, scalar = new_pool(0), new_pool(1)
    try:
        a, b = np.empty_like(g), np.empty_like(g)
        assert lib.tl_gelu(simd, fptr(g), fptr(a), g.size) == TL_OK
        assert lib.tl_gelu(scalar, fptr(g), fptr(b), g.size) == TL_OK
        near, tail = np.abs(g) < 4, (np.abs(g) >= 4) & (np.abs(b) > 1e-30)
        assert elem_rel(a[near], b[near].astype(np.float64)) < 1e-6
        assert elem_rel(a[tail], b[tail].astype(np.float64)) < REL_TOL
        for start, stop in ((1, 12), (5, 4099), (1000, 1003)):
            part = np.ascontiguousarray(g[start:stop])
            out = np.empty_like(part)
            assert lib.tl_gelu(simd, fptr(part), fptr(out), part.size) == TL_OK
            np.testing.assert_array_equal(out, a[start:stop])
    finally:
        lib.tl_pool_free(simd)
        lib.tl_pool_free(scalar)


def test_activations_write_in_place_over_the_gate(pool: Any) -> None:
    g = gate_values(40000, 5)
    u = np.random.default_rng(6).standard_normal(40000).astype(np.float32)
    ref_s, ref_g = silu_ref(g) * u, gelu_tanh_ref(g) * u
    g1, g2 = g.copy(), g.copy()
    assert lib.tl_swiglu(pool, fptr(g1), fptr(u), fptr(g1), g.size) == TL_OK
    assert lib.tl_geglu(pool, fptr(g2), fptr(u), fptr(g2), g.size) == TL_OK
    assert elem_rel(g1, ref_s) < REL_TOL
    assert elem_rel(g2, ref_g) < REL_TOL


def test_activations_saturate_cleanly_at_extreme_gates(pool: Any) -> None:
    g = np.array([-1e30, -200.0, -90.0, 90.0, 200.0, 1e30, 0.0, -0.0], np.float32)
    u = np.ones_like(g)
    out = np.empty_like(g)
    assert lib.tl_swiglu(pool, fptr(g), fptr(u), fptr(out), g.size) == TL_OK
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out[:3]) < 1e-30)
    assert np.array_equal(out[3:6], g[3:6])
    assert lib.tl_geglu(pool, fptr(g), fptr(u), fptr(out), g.size) == TL_OK
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out[:3]) < 1e-30)
    assert np.array_equal(out[3:6], g[3:6])


def test_simd_and_scalar_activations_agree() -> None:
    simd, scalar = new_pool(0), new_pool(1)
    try:
        g = gate_values(5000, 9)
        u = np.random.default_rng(10).standard_normal(5000).astype(np.float32)
        for fn in (lib.tl_swiglu, lib.tl_geglu):
            a, b = np.empty_like(g), np.empty_like(g)
            assert fn(simd, fptr(g), fptr(u), fptr(a), g.size) == TL_OK
            assert fn(scalar, fptr(g), fptr(u), fptr(b), g.size) == TL_OK
            assert elem_rel(a, b.astype(np.float64)) < 2e-6
    finally:
        lib.tl_pool_free(simd)
        lib.tl_pool_free(scalar)


# ---------------------------------------------------------------- add, scale


def test_add_and_scale_are_exact_float_ops() -> None:
    rng = np.random.default_rng(11)
    y = rng.standard_normal(1001).astype(np.float32)
    x = rng.standard_normal(1001).astype(np.float32)
    expect = (y + x) * np.float32(0.37)
    lib.tl_add(fptr(y), fptr(x), y.size)
    lib.tl_scale(fptr(y), 0.37, y.size)
    assert np.array_equal(y, expect)


# ---------------------------------------------------------------- batch invariance


@pytest.fixture(scope="module", params=["simd", "scalar"])
def pools_1_2_3(request: pytest.FixtureRequest) -> Iterator[list[Any]]:
    """Pools of 1, 2 and 3 threads of one kind (SIMD or scalar)."""
    flags = 0 if request.param == "simd" else 1
    pools = [pool_new(n, flags) for n in (1, 2, 3)]
    yield pools
    for p in pools:
        lib.tl_pool_free(p)


N_ROWS = 96  # rows in a batch: enough for the ops to spread over the threads
ALONE = [0, 1, 2, 3, 4, 5, 6, 7, 50, 94, 95]  # rows also computed alone: every offset mod 8


def assert_rows_match_alone(batch_out: list[np.ndarray], alone_out: list[np.ndarray]) -> None:
    """Every pool's batch result equals the first one, and each row computed alone equals its
    row in the batch, bit for bit."""
    for b in batch_out[1:]:
        assert np.array_equal(b, batch_out[0])
    for a in alone_out:
        assert np.array_equal(a, batch_out[0][ALONE])


@pytest.mark.parametrize("n", [384, 37, 2051])
def test_layernorm_row_is_bit_identical_alone_in_a_batch_and_on_any_thread_count(
    pools_1_2_3: list[Any], n: int
) -> None:
    rng = np.random.default_rng(n + 1)
    x = (rng.standard_normal((N_ROWS, n)) * 3).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n).astype(np.float32)
    b = rng.uniform(-1, 1, n).astype(np.float32)
    batch_out, alone_out = [], []
    for pool in pools_1_2_3:
        y = np.empty_like(x)
        assert lib.tl_layernorm(pool, fptr(x), fptr(w), fptr(b), fptr(y), N_ROWS, n,
                                1e-12) == TL_OK
        batch_out.append(y)
        alone = np.empty((len(ALONE), n), np.float32)
        for k, r in enumerate(ALONE):
            xr, yr = x[r].copy(), np.empty(n, np.float32)
            assert lib.tl_layernorm(pool, fptr(xr), fptr(w), fptr(b), fptr(yr), 1, n,
                                    1e-12) == TL_OK
            alone[k] = yr
        alone_out.append(alone)
    assert_rows_match_alone(batch_out, alone_out)


@pytest.mark.parametrize("n", [576, 37, 2051])
def test_rmsnorm_row_is_bit_identical_alone_in_a_batch_and_on_any_thread_count(
    pools_1_2_3: list[Any], n: int
) -> None:
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((N_ROWS, n)) * 3).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n).astype(np.float32)
    batch_out, alone_out = [], []
    for pool in pools_1_2_3:
        y = np.empty_like(x)
        assert lib.tl_rmsnorm(pool, fptr(x), fptr(w), fptr(y), N_ROWS, n, 1e-5) == TL_OK
        batch_out.append(y)
        alone = np.empty((len(ALONE), n), np.float32)
        for k, r in enumerate(ALONE):
            xr, yr = x[r].copy(), np.empty(n, np.float32)
            assert lib.tl_rmsnorm(pool, fptr(xr), fptr(w), fptr(yr), 1, n, 1e-5) == TL_OK
            alone[k] = yr
        alone_out.append(alone)
    assert_rows_match_alone(batch_out, alone_out)


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("n_heads, head_dim, n_rot", [(9, 64, 64), (4, 256, 256), (2, 96, 60),
                                                      (3, 20, 12)])
def test_rope_row_is_bit_identical_alone_in_a_batch_and_on_any_thread_count(
    pools_1_2_3: list[Any], neox: bool, n_heads: int, head_dim: int, n_rot: int
) -> None:
    rng = np.random.default_rng(head_dim)
    x0 = rng.standard_normal((N_ROWS, n_heads, head_dim)).astype(np.float32)
    pos = rng.integers(0, 32768, N_ROWS).astype(np.int32)
    batch_out, alone_out = [], []
    for pool in pools_1_2_3:
        x = x0.copy()
        assert lib.tl_rope(pool, fptr(x), N_ROWS, n_heads, head_dim, n_rot, iptr(pos), 1e4, 1.0,
                           int(neox), ffi.NULL, 1.0) == TL_OK
        batch_out.append(x)
        alone = x0[ALONE].copy()
        for k, r in enumerate(ALONE):
            xr, pr = alone[k].copy(), pos[r:r + 1].copy()
            assert lib.tl_rope(pool, fptr(xr), 1, n_heads, head_dim, n_rot, iptr(pr), 1e4, 1.0,
                               int(neox), ffi.NULL, 1.0) == TL_OK
            alone[k] = xr
        alone_out.append(alone)
    assert_rows_match_alone(batch_out, alone_out)


@pytest.mark.parametrize("fn_name", ["tl_swiglu", "tl_geglu"])
@pytest.mark.parametrize("n_ff", [1536, 1003, 7])
def test_activation_row_is_bit_identical_alone_at_any_offset_and_on_any_thread_count(
    pools_1_2_3: list[Any], fn_name: str, n_ff: int
) -> None:
    # With n_ff = 1003 or 7 the rows start at every offset modulo 8, and a row computed alone
    # ends in a tail of fewer than 8 floats that in the batch sits in the middle.
    fn = getattr(lib, fn_name)
    g = gate_values(N_ROWS * n_ff, n_ff).reshape(N_ROWS, n_ff)
    u = np.random.default_rng(n_ff).standard_normal((N_ROWS, n_ff)).astype(np.float32)
    batch_out, alone_out = [], []
    for pool in pools_1_2_3:
        out = np.empty_like(g)
        assert fn(pool, fptr(g), fptr(u), fptr(out), g.size) == TL_OK
        batch_out.append(out)
        alone = np.empty((len(ALONE), n_ff), np.float32)
        for k, r in enumerate(ALONE):
            gr, ur, outr = g[r].copy(), u[r].copy(), np.empty(n_ff, np.float32)
            assert fn(pool, fptr(gr), fptr(ur), fptr(outr), n_ff) == TL_OK
            alone[k] = outr
        alone_out.append(alone)
    assert_rows_match_alone(batch_out, alone_out)


def test_add_and_scale_rows_are_bit_identical_alone_and_in_a_batch() -> None:
    rng = np.random.default_rng(12)
    y0, x = rng.standard_normal((2, N_ROWS, 1003)).astype(np.float32)
    y = y0.copy()
    lib.tl_add(fptr(y), fptr(x), y.size)
    lib.tl_scale(fptr(y), 0.37, y.size)
    for r in ALONE:
        yr, xr = y0[r].copy(), x[r].copy()
        lib.tl_add(fptr(yr), fptr(xr), yr.size)
        lib.tl_scale(fptr(yr), 0.37, yr.size)
        assert np.array_equal(yr, y[r])
