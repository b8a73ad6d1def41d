"""Prompt GFLOP/s of float weights (F32/F16/BF16) on all-MiniLM-L6-v2's shapes: the AVX2 kernel
(a TL_POOL_NO_VNNI pool) against the AVX-512 one (a pool with AVX-512), call by call.

    python tools/bench_float_matmul.py [--type F16] [--threads 2] [--runs 9]

Both pools run TL_PATH_TILED on the same weights and tokens, alternating; each figure is the
median over the runs of 2 * n_out * n_in * n_tok / wall time, and the last column says whether
the two pools' results have the same bits (they must)."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from trio_llm._kernels import ffi, lib

TILED = 2  # TL_PATH_TILED
TYPES = {"F32": lib.TL_F32, "F16": lib.TL_F16, "BF16": lib.TL_BF16}
# (n_out, n_in): MiniLM's ffn_up, ffn_down and attention matrices; 32 inputs of 12 tokens, one.
SHAPES = [(1536, 384), (384, 1536), (384, 384)]
TOKENS = [384, 12]


def weights(kind: str, n_out: int, n_in: int, rng: np.random.Generator) -> np.ndarray:
    f = rng.standard_normal((n_out, n_in), dtype=np.float32)
    if kind == "F32":
        return f.view(np.uint8)
    if kind == "F16":
        return f.astype(np.float16).view(np.uint8)
    return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)


def new_pool(threads: int, flags: int) -> object:
    out = ffi.new("tl_pool **")
    assert lib.tl_pool_new(threads, flags, out) == lib.TL_OK
    return out[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--type", choices=list(TYPES), default="F16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    pools = {"avx2": new_pool(args.threads, lib.TL_POOL_NO_VNNI),
             "avx512": new_pool(args.threads, 0)}
    try:
        if not lib.tl_pool_features(pools["avx512"]) & lib.TL_CPU_AVX512VNNI:
            print("this CPU (or OS) has no AVX-512: nothing to compare")
            return
        rng = np.random.default_rng(0)
        head = f"{args.type}, {args.threads} threads, GFLOP/s"
        print(f"{head:<35}{'avx2':>8}{'avx512':>8}{'ratio':>7}  same bits")
        for n_out, n_in in SHAPES:
            for n_tok in TOKENS:
                w = weights(args.type, n_out, n_in, rng)
                x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
                ys = {k: np.zeros((n_tok, n_out), np.float32) for k in pools}
                wp, xp = ffi.from_buffer(w), ffi.cast("float *", ffi.from_buffer(x))
                yps = {k: ffi.cast("float *", ffi.from_buffer(y, require_writable=True))
                       for k, y in ys.items()}
                flop = 2 * n_out * n_in * n_tok
                calls = max(1, int(2e8 / flop))  # about 1-2 ms per timed run
                times: dict[str, list[float]] = {k: [] for k in pools}
                for run in range(args.runs + 1):  # the first run warms up
                    for k, pool in pools.items():
                        t0 = time.perf_counter()
                        for _ in range(calls):
                            assert lib.tl_matmul_path(pool, TYPES[args.type], wp, n_out, n_in,
                                                      xp, n_tok, yps[k], TILED) == lib.TL_OK
                        if run:
                            times[k].append((time.perf_counter() - t0) / calls)
                g = {k: flop / statistics.median(v) / 1e9 for k, v in times.items()}
                same = bool((ys["avx2"].view(np.uint32) == ys["avx512"].view(np.uint32)).all())
                label = f"{n_out}x{n_in}, {n_tok} tokens"
                print(f"{label:<35}{g['avx2']:8.1f}{g['avx512']:8.1f}"
                      f"{g['avx512'] / g['avx2']:7.2f}  {same}")
    finally:
        for p in pools.values():
            lib.tl_pool_free(p)


if __name__ == "__main__":
    main()
