"""Time tl_attention for one layer: decode (1 token) at several depths and a causal prefill.

Decode is reported as time per layer call and as GB/s of K/V bytes read; the model budget is a
few ms per token for 30 layers, so depth 512 should stay well under 30 us per layer.
Run from the repository root: python tools/bench_attention.py [--threads 2] [--scalar]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio_llm._kernels import ffi, lib  # noqa: E402

TL_F16 = 1


def ptr(kind: str, a: np.ndarray) -> Any:
    return ffi.cast(kind, ffi.from_buffer(a))


class Layer:
    """One layer's f16 cache of one slot, filled with random keys and values."""

    def __init__(self, n_ctx: int, n_head: int, n_kv_head: int, head_dim: int) -> None:
        self.n_ctx, self.n_head, self.n_kv_head, self.head_dim = n_ctx, n_head, n_kv_head, head_dim
        kv_dim = n_kv_head * head_dim
        rng = np.random.default_rng(0)
        self.k = np.zeros((n_ctx, kv_dim), np.float16)
        self.v = np.zeros((n_ctx, kv_dim), np.float16)
        kk = rng.standard_normal((n_ctx, kv_dim)).astype(np.float32)
        vv = rng.standard_normal((n_ctx, kv_dim)).astype(np.float32)
        slot = np.zeros(n_ctx, np.int32)
        pos = np.arange(n_ctx, dtype=np.int32)
        rc = lib.tl_kv_store(TL_F16, ptr("void *", self.k), ptr("void *", self.v), n_ctx, kv_dim,
                             ptr("float *", kk), ptr("float *", vv), n_ctx, ptr("int32_t *", slot),
                             ptr("int32_t *", pos), 0)
        assert rc == 0

    def timer(self, pool: Any, pos: np.ndarray, seconds: float = 0.3) -> tuple[float, float]:
        """Best and median seconds of single calls, timed one by one for about `seconds`.

        On a machine shared with other work a 2-thread call sometimes waits milliseconds for a
        descheduled worker; the best call shows the kernel, the median what that noise costs.
        """
        n_tok = len(pos)
        q = np.random.default_rng(1).standard_normal((n_tok, self.n_head * self.head_dim))
        q = q.astype(np.float32)
        out = np.empty_like(q)
        slot = np.zeros(n_tok, np.int32)
        args = (pool, TL_F16, ptr("void *", self.k), ptr("void *", self.v), self.n_ctx,
                ptr("float *", q), n_tok, ptr("int32_t *", slot), ptr("int32_t *", pos),
                self.n_head, self.n_kv_head, self.head_dim, 1.0 / np.sqrt(self.head_dim), 0,
                ptr("float *", out))
        fn = lib.tl_attention
        clock = time.perf_counter
        assert fn(*args) == 0
        times: list[float] = []
        deadline = clock() + seconds
        while clock() < deadline or len(times) < 5:
            start = clock()
            fn(*args)
            times.append(clock() - start)
        return min(times), float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scalar", action="store_true", help="scalar reference kernels only")
    args = ap.parse_args()
    pool = lib.tl_pool_new(args.threads, 1 if args.scalar else 0)
    path = "scalar" if args.scalar else ("avx2" if lib.tl_pool_features(pool) else "scalar")
    print(f"tl_attention, {args.threads} threads, {path} kernels, f16 KV cache")

    shapes = [("SmolLM2", 9, 3, 64), ("Gemma3", 4, 1, 256)]
    for name, n_head, n_kv_head, head_dim in shapes:
        layer = Layer(4096, n_head, n_kv_head, head_dim)
        row_bytes = n_kv_head * head_dim * 2
        print(f"\n{name}: {n_head} heads, {n_kv_head} kv heads, head_dim {head_dim}")
        for depth in (512, 2048, 4096):
            best, median = layer.timer(pool, np.array([depth - 1], np.int32))
            gbs = 2 * depth * row_bytes / best / 1e9
            print(f"  decode depth {depth:5d}: {best * 1e6:8.1f} us/layer best "
                  f"(median {median * 1e6:8.1f}), {gbs:5.1f} GB/s of K/V, "
                  f"x30 layers = {best * 30e3:.2f} ms")
        n = 512
        best, median = layer.timer(pool, np.arange(n, dtype=np.int32), seconds=1.0)
        print(f"  prefill {n} tokens causal: {best * 1e3:8.2f} ms/layer best "
              f"(median {median * 1e3:.2f}), {best / n * 1e6:.1f} us/token")
    lib.tl_pool_free(pool)


if __name__ == "__main__":
    main()
