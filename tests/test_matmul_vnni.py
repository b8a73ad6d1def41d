"""The AVX-512 VNNI prompt kernels give the AVX2 kernels' results bit for bit.

Both compute the same exact integer sums per block and the same float steps in the same order
(csrc/ggml/gemm_vnni.c, gemm_k_vnni.c), so the two pools must agree to the last bit for every
format, shape, token count, thread count and with or without TL_PATH_PRECISE. Float weights
(F32, F16, BF16) take an AVX-512 FMA kernel on the same pools (gemm_float_avx512.c) whose
512-bit accumulators are two of the AVX2 kernel's 8-lane ones side by side: the same bits too.
The AVX2 path is itself checked against float64 and the scalar kernels in test_matmul.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

from tests.kernel_calls import pool_new
from tests.test_matmul import (
    FLOAT_TYPES,
    QUANT_TYPES,
    SCALE_OFFSETS,
    TOL_FLOAT,
    make_weights,
    matmul_path,
    n_in_for,
    oracle,
    rel_err,
)
from trio_llm._kernels import lib

Q = GGMLQuantizationType
TILED = 2  # TL_PATH_TILED: the prompt kernels (AUTO takes them for more than a few tokens)
HAS_VNNI = bool(lib.tl_cpu_features() & lib.TL_CPU_AVX512VNNI)
needs_vnni = pytest.mark.skipif(not HAS_VNNI, reason="this CPU (or OS) has no AVX-512 VNNI")


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[tuple[str, int], object]]:
    """(kernels, threads) -> pool: "vnni" where the CPU has it, "avx2" with VNNI switched off."""
    made = {(name, n): pool_new(n, flags)
            for name, flags in (("vnni", 0), ("avx2", lib.TL_POOL_NO_VNNI)) for n in (1, 2)}
    yield made
    for p in made.values():
        lib.tl_pool_free(p)


def assert_same_bits(a: np.ndarray, b: np.ndarray, what: str = "") -> None:
    assert a.shape == b.shape
    diff = a.view(np.uint32) != b.view(np.uint32)
    assert not diff.any(), f"{what}: {int(diff.sum())} of {diff.size} results differ"


def test_pool_features_report_vnni_and_the_switches_clear_it(
    pools: dict[tuple[str, int], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = lib.tl_cpu_features()
    assert lib.tl_pool_features(pools[("vnni", 2)]) == cpu
    assert lib.tl_pool_features(pools[("avx2", 2)]) == cpu & ~lib.TL_CPU_AVX512VNNI
    monkeypatch.setenv("TRIO_LLM_NO_VNNI", "1")
    off = pool_new(1, 0)
    monkeypatch.setenv("TRIO_LLM_NO_VNNI", "0")
    on = pool_new(1, 0)
    try:
        assert lib.tl_pool_features(off) == cpu & ~lib.TL_CPU_AVX512VNNI
        assert lib.tl_pool_features(on) == cpu
    finally:
        lib.tl_pool_free(off)
        lib.tl_pool_free(on)
    scalar = pool_new(1, 1)
    try:
        assert lib.tl_pool_features(scalar) == 0  # TL_POOL_SCALAR: no SIMD at all
    finally:
        lib.tl_pool_free(scalar)


@needs_vnni
@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("precise", [False, True], ids=["int8", "precise"])
@pytest.mark.parametrize("threads", [1, 2])
def test_vnni_kernels_equal_avx2_bit_for_bit(
    pools: dict[tuple[str, int], object], qtype: Q, precise: bool, threads: int
) -> None:
    """Partial 16-row tiles (1, 7, 45 and 133 rows), several tile groups (450 rows), odd token
    counts, more tokens than a register tile or a precise round (70), split by rows and by
    tokens (16 rows over 2 threads)."""
    rng = np.random.default_rng(100 * int(qtype) + 10 * threads + precise)
    n_in = n_in_for(qtype)
    path = TILED | (lib.TL_PATH_PRECISE if precise else 0)
    for n_out, n_tok in ((1, 7), (7, 3), (16, 9), (45, 17), (133, 70), (450, 5), (24, 1)):
        w = make_weights(qtype, n_out, n_in, rng)
        x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
        x[:, ::29] *= 30.0  # outliers: uneven block scales
        y_avx2 = matmul_path(pools[("avx2", threads)], qtype, w, n_out, n_in, x, path)
        y_vnni = matmul_path(pools[("vnni", threads)], qtype, w, n_out, n_in, x, path)
        assert np.isfinite(y_avx2).all()
        assert_same_bits(y_vnni, y_avx2)


@needs_vnni
@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
def test_extreme_quants_and_activations_stay_exact(
    pools: dict[tuple[str, int], object], qtype: Q
) -> None:
    """Every quant byte at its largest (or, for Q8_0, -128) against activations at +-127 in
    every position: the largest integer sums the kernels meet (int16 group sums for Q2_K..Q4_K,
    the +128 offset of Q8_0's activations) still give the AVX2 bits."""
    rng = np.random.default_rng(7 + int(qtype))
    n_in, n_out = n_in_for(qtype), 40
    w = make_weights(qtype, n_out, n_in, rng)
    size = GGML_QUANT_SIZES[qtype][1]
    blocks = w.reshape(n_out, -1, size)
    keep = blocks.copy()
    blocks[:20] = 0xFF if qtype != Q.Q8_0 else 0x80  # Q8_0: -128
    if qtype == Q.Q8_0:
        blocks[20:30] = 0x7F
    for off in SCALE_OFFSETS[qtype]:  # finite f16 factors
        blocks[:, :, off : off + 2] = keep[:, :, off : off + 2]
    w = blocks.reshape(n_out, -1)
    x = np.ones((6, n_in), dtype=np.float32)
    x[1] = -1.0
    x[2, ::2] = -1.0
    x[3:] = rng.standard_normal((3, n_in), dtype=np.float32)
    for path in (TILED, TILED | lib.TL_PATH_PRECISE):
        y_avx2 = matmul_path(pools[("avx2", 2)], qtype, w, n_out, n_in, x, path)
        y_vnni = matmul_path(pools[("vnni", 2)], qtype, w, n_out, n_in, x, path)
        assert np.isfinite(y_avx2).all()
        assert_same_bits(y_vnni, y_avx2)


@needs_vnni
@pytest.mark.parametrize("qtype", FLOAT_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("threads", [1, 2])
def test_float_avx512_kernel_equals_avx2_bit_for_bit(
    pools: dict[tuple[str, int], object], qtype: Q, threads: int
) -> None:
    """Rows of whole 8-element steps (384, 1536: MiniLM's) and with a scalar tail (100, 37);
    row counts below a 6-row tile, odd ones (the last row goes to the AVX2 kernel) and several
    row units; token counts that fill 8-token tiles or leave a few, more than a 32-token block
    (70), cut by rows and by tokens (24 rows over 2 threads). Both within float tolerance of
    the float64 product."""
    rng = np.random.default_rng(200 * int(qtype) + threads)
    for n_in in (384, 1536, 100, 37):
        for n_out, n_tok in ((1, 7), (5, 9), (7, 5), (45, 17), (133, 70), (384, 12), (24, 33)):
            w = make_weights(qtype, n_out, n_in, rng)
            x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
            y_avx2 = matmul_path(pools[("avx2", threads)], qtype, w, n_out, n_in, x, TILED)
            y_vnni = matmul_path(pools[("vnni", threads)], qtype, w, n_out, n_in, x, TILED)
            what = f"{n_out}x{n_in}, {n_tok} tokens"
            assert_same_bits(y_vnni, y_avx2, what)
            assert rel_err(y_vnni, oracle(qtype, w, x)) < TOL_FLOAT, what


def special_float_weights(qtype: Q, n_out: int, n_in: int,
                          rng: np.random.Generator) -> np.ndarray:
    """Random weights of qtype with infinities, the largest finite values, subnormals and
    signed zeros spread over them (no NaN: the only NaNs are the ones inf - inf makes)."""
    dtype = {Q.F32: np.float32, Q.F16: np.float16, Q.BF16: np.float32}[qtype]
    f = rng.standard_normal((n_out, n_in)).astype(dtype)
    info = np.finfo(dtype)
    sub = info.smallest_subnormal if qtype != Q.BF16 else np.float32(2.0**-130)
    specials = np.array([np.inf, -np.inf, info.max, -info.max, sub, -sub, 0.0, -0.0], dtype=dtype)
    where = rng.random((n_out, n_in)) < 0.02
    f[where] = rng.choice(specials, size=int(where.sum()))
    if qtype == Q.BF16:
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    return f.view(np.uint8)


@needs_vnni
@pytest.mark.parametrize("qtype", FLOAT_TYPES, ids=lambda q: q.name)
def test_float_kernels_agree_on_infinities_overflow_and_subnormals(
    pools: dict[tuple[str, int], object], qtype: Q
) -> None:
    rng = np.random.default_rng(300 + int(qtype))
    for n_in, n_tok in ((384, 19), (45, 8)):
        n_out = 31
        w = special_float_weights(qtype, n_out, n_in, rng)
        x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
        x[0] *= np.float32(1e34)  # overflows to infinity against the large weights
        x[1, ::3] = np.float32(1e-30)  # products below the float range
        x[2, ::5] = -0.0
        y_avx2 = matmul_path(pools[("avx2", 2)], qtype, w, n_out, n_in, x, TILED)
        y_vnni = matmul_path(pools[("vnni", 2)], qtype, w, n_out, n_in, x, TILED)
        assert np.isinf(y_avx2).any() and np.isnan(y_avx2).any()  # the cases happened
        assert_same_bits(y_vnni, y_avx2, f"n_in {n_in}")


@needs_vnni
@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.F16], ids=lambda q: q.name)
def test_a_token_has_the_same_bits_alone_or_in_a_vnni_batch(
    pools: dict[tuple[str, int], object], qtype: Q
) -> None:
    rng = np.random.default_rng(9 + int(qtype))
    n_in, n_out = n_in_for(qtype), 77
    w = make_weights(qtype, n_out, n_in, rng)
    x = rng.standard_normal((19, n_in), dtype=np.float32)
    path = TILED | lib.TL_PATH_PRECISE
    batch = matmul_path(pools[("vnni", 2)], qtype, w, n_out, n_in, x, path)
    for t in (0, 8, 18):
        alone = matmul_path(pools[("vnni", 2)], qtype, w, n_out, n_in, x[t : t + 1].copy(), path)
        assert_same_bits(alone[0], batch[t])


# One tensor of each format the real models hold: SmolLM2 (Q4_1, Q8_0 embeddings) and Gemma 3
# 270M Q4_K_M (Q5_0, Q8_0, Q4_K, Q6_K).
REAL_TENSORS = {
    "smollm2": ["blk.0.ffn_up.weight", "token_embd.weight"],
    "gemma3": ["blk.0.ffn_gate.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight",
               "blk.0.ffn_down.weight"],
}


def real_tensors(path: Path, names: list[str], rows: int) -> list[tuple[str, Q, np.ndarray]]:
    reader = GGUFReader(path)
    return [(t.name, Q(t.tensor_type), np.ascontiguousarray(t.data[:rows]))
            for t in reader.tensors if t.name in names]


@needs_vnni
@pytest.mark.parametrize("model", ["smollm2",  # Gemma 3's 600-row matrices: 15 s, full tier
                                   pytest.param("gemma3", marks=pytest.mark.full)])
def test_real_model_weights_give_the_same_bits(
    pools: dict[tuple[str, int], object], model: str, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(f"{model}_path")
    tensors = real_tensors(path, REAL_TENSORS[model], rows=600)
    assert len(tensors) == len(REAL_TENSORS[model])
    rng = np.random.default_rng(11)
    for name, qtype, w in tensors:
        n_out = w.shape[0]
        n_in = w.shape[1] // GGML_QUANT_SIZES[qtype][1] * GGML_QUANT_SIZES[qtype][0]
        x = rng.standard_normal((37, n_in), dtype=np.float32)
        for p in (TILED, TILED | lib.TL_PATH_PRECISE):
            y_avx2 = matmul_path(pools[("avx2", 2)], qtype, w, n_out, n_in, x, p)
            y_vnni = matmul_path(pools[("vnni", 2)], qtype, w, n_out, n_in, x, p)
            assert_same_bits(y_vnni, y_avx2, name)
