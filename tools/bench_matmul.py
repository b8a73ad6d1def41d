"""Micro-benchmark of tl_matmul on SmolLM2-135M's shapes: decode GB/s and prompt GFLOP/s.

Decode (one token) is bound by memory bandwidth, so its weights rotate through enough copies to
exceed the L3 cache, as a real decode step does (98 MB of weights per token); "hot" repeats one
matrix (cache-resident: per-call cost). Prompt (512 tokens) is bound by arithmetic and reports
2 * n_out * n_in * n_tok / time. Every figure is the best of several runs (the machine is shared).

    python tools/bench_matmul.py [--threads 2] [--quick] [--no-scalar] [--extra] [--vnni off]
    python tools/bench_matmul.py --packed [--format Q6_K] [--threads 2] [--quick]
    python tools/bench_matmul.py --vnni compare [--threads 1] [--tokens 512] [--quick]

--packed compares, on Gemma 3 270M's shapes, decode against the weights repacked at load
(TL_PATH_PACKED) with the row dots (TL_PATH_ROW_DOTS), cold, for 1 and 4 tokens a call; GB/s
counts the GGML bytes of the matrix once per call (the work of one decode step).

--vnni off runs the SIMD pool with AVX2 kernels where the CPU has AVX-512 VNNI; --vnni compare
runs only the prompt products of the real models' matrices (SmolLM2 and Gemma 3 270M) on the
engine's prompt path (TL_PATH_TILED | TL_PATH_PRECISE), alternating an AVX2 and a VNNI pool
call by call, and prints GMAC/s (n_out * n_in * n_tok per second) of each and their ratio. With
--threads 1 the pool runs on the calling thread and the times are that thread's CPU time, which
other processes on a shared machine do not inflate (wall time otherwise).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from trio_llm._kernels import ffi, lib


def new_pool(n_threads: int, flags: int) -> object:
    """A raw tl_pool handle (tl_pool_new's out-parameter form); free it with tl_pool_free."""
    out = ffi.new("tl_pool **")
    if lib.tl_pool_new(n_threads, flags, out) != lib.TL_OK:
        raise MemoryError("tl_pool_new failed")
    return out[0]


Q = GGMLQuantizationType
COLD_BYTES = 96 << 20  # weights touched per timing pass in "cold" decode runs (> L3)

# (type, n_out, n_in, what): one layer of SmolLM2-135M plus its output matrix.
DECODE_SHAPES = [
    (Q.Q4_1, 576, 576, "attn_q / attn_output"),
    (Q.Q4_1, 192, 576, "attn_k / attn_v"),
    (Q.Q4_1, 1536, 576, "ffn_gate / ffn_up"),
    (Q.Q4_1, 576, 1536, "ffn_down"),
    (Q.Q8_0, 49152, 576, "output (tied token_embd)"),
]
PROMPT_SHAPES = [
    (Q.Q4_1, 576, 576, "attn_q / attn_output"),
    (Q.Q4_1, 192, 576, "attn_k / attn_v"),
    (Q.Q4_1, 1536, 576, "ffn_gate / ffn_up"),
    (Q.Q4_1, 576, 1536, "ffn_down"),
    (Q.Q8_0, 576, 576, "Q8_0 square"),
    (Q.Q8_0, 1536, 576, "Q8_0 wide"),
]
# Gemma 3 270M's formats (--extra).
EXTRA_SHAPES = [
    (Q.Q4_K, 640, 2048, "Q4_K ffn_down"),
    (Q.Q6_K, 640, 2048, "Q6_K ffn_down"),
    (Q.Q5_0, 2048, 640, "Q5_0 ffn_gate / up"),
    (Q.Q4_0, 1536, 576, "Q4_0"),
    (Q.F16, 576, 576, "F16"),
    (Q.F32, 576, 576, "F32"),
]
# Gemma 3 270M Q4_K_M's decode matrices, one of each format (--packed), plus Q5_1 and Q5_K at
# the same shapes (other Q4_K_M / Q5_K_M files) and SmolLM2's Q4_1 for reference.
PACKED_SHAPES = [
    (Q.Q4_1, 1536, 576, "SmolLM2 ffn_gate / up"),
    (Q.Q5_0, 2048, 640, "ffn_gate / ffn_up"),
    (Q.Q5_0, 1024, 640, "attn_q"),
    (Q.Q5_1, 2048, 640, "as ffn_gate / ffn_up"),
    (Q.Q4_K, 640, 1024, "attn_output"),
    (Q.Q4_K, 640, 2048, "ffn_down"),
    (Q.Q5_K, 640, 2048, "as ffn_down"),
    (Q.Q6_K, 640, 2048, "ffn_down"),
    (Q.Q8_0, 16384, 640, "output (a slice)"),
]
# Every distinct prompt product of the real models: (type, n_out, n_in, what).
MODEL_SHAPES = [
    (Q.Q4_1, 576, 576, "smollm2 attn_q / attn_output"),
    (Q.Q4_1, 192, 576, "smollm2 attn_k / attn_v"),
    (Q.Q4_1, 1536, 576, "smollm2 ffn_gate / ffn_up"),
    (Q.Q4_1, 576, 1536, "smollm2 ffn_down"),
    (Q.Q5_0, 1024, 640, "gemma3 attn_q"),
    (Q.Q5_0, 256, 640, "gemma3 attn_k / attn_v"),
    (Q.Q8_0, 256, 640, "gemma3 attn_v"),
    (Q.Q4_K, 640, 1024, "gemma3 attn_output"),
    (Q.Q5_0, 2048, 640, "gemma3 ffn_gate / ffn_up"),
    (Q.Q4_K, 640, 2048, "gemma3 ffn_down"),
    (Q.Q6_K, 640, 2048, "gemma3 ffn_down"),
]
PROMPT_PATH = 2 | 16  # TL_PATH_TILED | TL_PATH_PRECISE, as trio_llm.arch.runtime.PROMPT_PATH
# Per decode token: 30 layers x (q, k, v, o, gate, up, down) + the output matrix.
LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


def row_bytes(qtype: Q, n_in: int) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return n_in // block * size


def random_weights(qtype: Q, n_out: int, n_in: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes with finite f16 scales where the format has them (values do not matter)."""
    raw = rng.integers(0, 256, size=(n_out, row_bytes(qtype, n_in)), dtype=np.uint8)
    if qtype in (Q.F16, Q.BF16):
        return rng.standard_normal((n_out, n_in)).astype(np.float16).view(np.uint8)
    if qtype == Q.F32:
        return rng.standard_normal((n_out, n_in), dtype=np.float32).view(np.uint8)
    block, size = GGML_QUANT_SIZES[qtype]
    blocks = raw.reshape(n_out, -1, size)
    offsets = {Q.Q6_K: (208,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2)}.get(qtype, (0, 2))
    for off in offsets:
        blocks[:, :, off : off + 2] = np.array([0.01], dtype=np.float16).view(np.uint8)
    return raw


class Matmul:
    """Pre-built cffi pointers for repeated tl_matmul calls (no per-call conversions)."""

    def __init__(self, pool: object, qtype: Q, weights: list[object], n_out: int, n_in: int,
                 n_tok: int, rng: np.random.Generator, path: int = 0) -> None:
        """weights: numpy arrays of GGML rows, or (path TL_PATH_PACKED) tl_repack_new copies."""
        self.pool, self.qtype, self.path = pool, int(qtype), path
        self.n_out, self.n_in, self.n_tok = n_out, n_in, n_tok
        self.weights = weights
        self.w = [ffi.from_buffer(w) if isinstance(w, np.ndarray) else w for w in weights]
        self.xa = rng.standard_normal((max(n_tok, 1), n_in), dtype=np.float32)
        self.ya = np.zeros((max(n_tok, 1), n_out), dtype=np.float32)
        self.x = ffi.cast("float *", ffi.from_buffer(self.xa))
        self.y = ffi.cast("float *", ffi.from_buffer(self.ya, require_writable=True))

    def run_all(self) -> None:
        self.run_range(0, len(self.w))

    def run_range(self, start: int, stop: int) -> None:
        f, p, t, o, i, x, n, y, path = (lib.tl_matmul_path, self.pool, self.qtype, self.n_out,
                                        self.n_in, self.x, self.n_tok, self.y, self.path)
        for w in self.w[start:stop]:
            assert f(p, t, w, o, i, x, n, y, path) == 0

    def best_per_call(self, passes: int, chunk: int = 8) -> float:
        """Best seconds per call over chunks of `chunk` consecutive calls (each on the next
        weight copy), over `passes` passes through all copies: short timed sections dodge the
        preemptions of a shared machine."""
        self.run_all()
        best = float("inf")
        for _ in range(passes):
            for start in range(0, len(self.w) - chunk + 1, chunk):
                t0 = time.perf_counter()
                self.run_range(start, start + chunk)
                best = min(best, (time.perf_counter() - t0) / chunk)
        return best


def best_time(fn: Callable[[], None], repeats: int, min_time: float = 0.05) -> float:
    """Best wall time of fn over `repeats` runs (after one warm-up)."""
    fn()
    best = float("inf")
    deadline = time.perf_counter() + min_time
    for k in range(10_000):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if k + 1 >= repeats and time.perf_counter() > deadline:
            break
    return best


def bench_decode(pool: object, shapes: list[tuple[Q, int, int, str]], repeats: int,
                 rng: np.random.Generator) -> None:
    print(f"{'decode (1 token)':<34}{'MB':>7}{'cold us':>10}{'cold GB/s':>11}{'hot us':>9}"
          f"{'hot GB/s':>10}")
    for qtype, n_out, n_in, what in shapes:
        nbytes = n_out * row_bytes(qtype, n_in)
        copies = max(2, -(-COLD_BYTES // nbytes))
        weights = [random_weights(qtype, n_out, n_in, rng) for _ in range(copies)]
        cold = Matmul(pool, qtype, weights, n_out, n_in, 1, rng)
        t_cold = cold.best_per_call(max(2, repeats // 2), chunk=min(8, copies))
        hot = Matmul(pool, qtype, weights[:1] * 64, n_out, n_in, 1, rng)
        t_hot = hot.best_per_call(repeats)
        label = f"{qtype.name} {n_out}x{n_in} {what}"
        print(f"{label:<34}{nbytes / 1e6:7.2f}{t_cold * 1e6:10.1f}{nbytes / t_cold / 1e9:11.1f}"
              f"{t_hot * 1e6:9.1f}{nbytes / t_hot / 1e9:10.1f}")


def repacked(qtype: Q, w: np.ndarray, n_out: int, n_in: int) -> object:
    """The TL_PATH_PACKED copy of w (freed with the returned pointer)."""
    raw = lib.tl_repack_new(int(qtype), ffi.from_buffer(w), n_out, n_in)
    assert raw != ffi.NULL, f"{qtype.name} has no repacked layout"
    return ffi.gc(raw, lib.tl_repack_free)


def bench_packed(pool: object, shapes: list[tuple[Q, int, int, str]], repeats: int,
                 rng: np.random.Generator) -> None:
    """Cold decode GB/s (GGML bytes per call / time) of the row dots and the repacked path."""
    print(f"{'decode, cold GB/s of weights':<34}{'MB':>7}{'dots 1':>9}{'packed 1':>10}"
          f"{'dots 4':>9}{'packed 4':>10}")
    for qtype, n_out, n_in, what in shapes:
        nbytes = n_out * row_bytes(qtype, n_in)
        copies = max(2, -(-COLD_BYTES // nbytes))
        weights = [random_weights(qtype, n_out, n_in, rng) for _ in range(copies)]
        packed = [repacked(qtype, w, n_out, n_in) for w in weights]
        figures = []
        for n_tok in (1, 4):
            for path, ws in ((lib.TL_PATH_ROW_DOTS, weights), (lib.TL_PATH_PACKED, packed)):
                mm = Matmul(pool, qtype, ws, n_out, n_in, n_tok, rng, path)
                figures.append(nbytes / mm.best_per_call(max(2, repeats // 2), min(8, copies)))
        label = f"{qtype.name} {n_out}x{n_in} {what}"
        print(f"{label:<34}{nbytes / 1e6:7.2f}" + "".join(
            f"{g / 1e9:{9 if k % 2 == 0 else 10}.1f}" for k, g in enumerate(figures)))


def bench_decode_token(pool: object, repeats: int, rng: np.random.Generator) -> None:
    """The 211 matmuls of one SmolLM2 decode step, each on its own weights (98 MB in all)."""
    calls: list[Matmul] = []
    for _ in range(30):
        for n_out, n_in in LAYER:
            calls.append(Matmul(pool, Q.Q4_1, [random_weights(Q.Q4_1, n_out, n_in, rng)],
                                n_out, n_in, 1, rng))
    output = random_weights(Q.Q8_0, 49152, 576, rng)
    calls.append(Matmul(pool, Q.Q8_0, [output], 49152, 576, 1, rng))
    nbytes = sum(c.weights[0].nbytes for c in calls)

    def step() -> None:
        for c in calls:
            c.run_all()

    t = best_time(step, repeats)
    print(f"decode step, {len(calls)} matmuls, {nbytes / 1e6:.1f} MB: {t * 1e3:.2f} ms "
          f"= {nbytes / t / 1e9:.1f} GB/s, {1 / t:.0f} tok/s (matmuls only)")


def bench_prompt(pool: object, shapes: list[tuple[Q, int, int, str]], n_tok: int, repeats: int,
                 rng: np.random.Generator) -> None:
    print(f"{f'prompt ({n_tok} tokens)':<34}{'ms':>10}{'GFLOP/s':>10}")
    for qtype, n_out, n_in, what in shapes:
        mm = Matmul(pool, qtype, [random_weights(qtype, n_out, n_in, rng)], n_out, n_in, n_tok, rng)
        t = best_time(mm.run_all, repeats)
        label = f"{qtype.name} {n_out}x{n_in} {what}"
        print(f"{label:<34}{t * 1e3:10.2f}{2 * n_out * n_in * n_tok / t / 1e9:10.1f}")


def bench_vnni(threads: int, shapes: list[tuple[Q, int, int, str]], n_tok: int, repeats: int,
               rng: np.random.Generator) -> None:
    """Prompt GMAC/s of AVX2 and VNNI pools on the same weights, alternating call by call."""
    pools = {"avx2": new_pool(threads, lib.TL_POOL_NO_VNNI),
             "vnni": new_pool(threads, 0)}
    try:
        if not lib.tl_pool_features(pools["vnni"]) & lib.TL_CPU_AVX512VNNI:
            print("this CPU (or OS) has no AVX-512 VNNI: nothing to compare")
            return
        # one thread: the work runs on this thread, so its CPU time excludes preemption
        clock = time.thread_time if threads == 1 else time.perf_counter
        print(f"== prompt ({n_tok} tokens, tiled + precise), {threads} threads: GMAC/s "
              f"({'CPU' if threads == 1 else 'wall'} time) ==")
        print(f"{'':<44}{'avx2':>8}{'vnni':>8}{'ratio':>8}")
        for qtype, n_out, n_in, what in shapes:
            w = [random_weights(qtype, n_out, n_in, rng)]
            mms = {k: Matmul(p, qtype, w, n_out, n_in, n_tok, rng) for k, p in pools.items()}
            calls = {k: functools.partial(lib.tl_matmul_path, m.pool, m.qtype, m.w[0], n_out, n_in,
                                          m.x, n_tok, m.y, PROMPT_PATH)
                     for k, m in mms.items()}
            best = dict.fromkeys(calls, float("inf"))
            for _ in range(repeats + 1):  # the first round warms up (scratch, caches)
                for k, call in calls.items():
                    t0 = clock()
                    assert call() == 0
                    best[k] = min(best[k], clock() - t0)
            gmac = {k: n_out * n_in * n_tok / t / 1e9 for k, t in best.items()}
            label = f"{qtype.name} {n_out}x{n_in} {what}"
            print(f"{label:<44}{gmac['avx2']:8.1f}{gmac['vnni']:8.1f}"
                  f"{gmac['vnni'] / gmac['avx2']:8.2f}")
    finally:
        for p in pools.values():
            lib.tl_pool_free(p)


def call_overhead(pool: object) -> float:
    """Seconds of Python + cffi per tl_matmul call (n_tok = 0 returns at once)."""
    rng = np.random.default_rng(0)
    mm = Matmul(pool, Q.Q4_1, [random_weights(Q.Q4_1, 8, 32, rng)] * 1000, 8, 32, 0, rng)
    return best_time(mm.run_all, 20) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--no-scalar", action="store_true", help="skip the scalar pool")
    ap.add_argument("--extra", action="store_true", help="also Gemma 3's formats and floats")
    ap.add_argument("--tokens", type=int, default=512, help="prompt length")
    ap.add_argument("--packed", action="store_true",
                    help="only the repacked decode path against the row dots (SIMD pool)")
    ap.add_argument("--format", help="with --packed: only this format (e.g. Q6_K)")
    ap.add_argument("--vnni", choices=["on", "off", "compare"], default="on",
                    help="AVX-512 VNNI kernels where the CPU has them (on), AVX2 only (off), or "
                         "the real models' prompt products with both (compare)")
    args = ap.parse_args()
    repeats = 3 if args.quick else 10
    rng = np.random.default_rng(0)
    simd_flags = lib.TL_POOL_NO_VNNI if args.vnni == "off" else 0
    if args.packed:
        shapes = [s for s in PACKED_SHAPES if args.format in (None, s[0].name)]
        pool = new_pool(args.threads, simd_flags)
        try:
            print(f"== SIMD pool, {lib.tl_pool_threads(pool)} threads ==")
            bench_packed(pool, shapes, repeats, rng)
        finally:
            lib.tl_pool_free(pool)
        return
    if args.vnni == "compare":
        bench_vnni(args.threads, MODEL_SHAPES, args.tokens, repeats, rng)
        return
    modes = [("SIMD", simd_flags)] + ([] if args.no_scalar else [("scalar", 1)])
    for name, flags in modes:
        pool = new_pool(args.threads, flags)
        try:
            print(f"== {name} pool, {lib.tl_pool_threads(pool)} threads "
                  f"(features {lib.tl_pool_features(pool)}), "
                  f"python+cffi per call {call_overhead(pool) * 1e6:.2f} us ==")
            shapes = PROMPT_SHAPES + (EXTRA_SHAPES if args.extra else [])
            bench_decode(pool, DECODE_SHAPES + (EXTRA_SHAPES if args.extra else []), repeats, rng)
            if name == "SIMD":
                bench_decode_token(pool, repeats, rng)
            bench_prompt(pool, shapes if name == "SIMD" else shapes[:3:2], args.tokens,
                         repeats if name == "SIMD" else 1, rng)
        finally:
            lib.tl_pool_free(pool)


if __name__ == "__main__":
    main()
