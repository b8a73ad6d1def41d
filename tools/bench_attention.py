"""Time tl_attention for one layer: decode (1 token) at several depths and a causal prefill,
for each KV cache type (f16, q8_0, q4_0).

Decode is reported as time per layer call and as GB/s of K/V bytes read; the model budget is a
few ms per token for 30 layers, so depth 512 should stay well under 30 us per layer. One layer's
cache fits in L3; `--layers 30` cycles through 30 layers' caches as a real decode step does, so
the cache is read from memory (what the depth-4096 benchmark of a model measures).
Run from the repository root:
    python tools/bench_attention.py [--threads 2] [--scalar] [--types f16,q8_0] [--layers 30]
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
from trio_llm.engine.kv_cache import KV_TYPES  # noqa: E402


def new_pool(n_threads: int, flags: int) -> object:
    """A raw tl_pool handle (tl_pool_new's out-parameter form); free it with tl_pool_free."""
    out = ffi.new("tl_pool **")
    if lib.tl_pool_new(n_threads, flags, out) != lib.TL_OK:
        raise MemoryError("tl_pool_new failed")
    return out[0]



def ptr(kind: str, a: np.ndarray) -> Any:
    return ffi.cast(kind, ffi.from_buffer(a))


class Layers:
    """n_layers caches of one slot each, of one type, filled with random keys and values."""

    def __init__(self, pool: object, kind: int, n_layers: int, n_ctx: int, n_head: int,
                 n_kv_head: int, head_dim: int) -> None:
        self.pool, self.kind, self.n_ctx = pool, kind, n_ctx
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        kv_dim = n_kv_head * head_dim
        row_bytes = ffi.new("int64_t *")
        assert lib.tl_kv_bytes(kind, 1, 1, kv_dim, row_bytes) == lib.TL_OK
        self.row_bytes = row_bytes[0]
        rng = np.random.default_rng(0)
        kk = rng.standard_normal((n_ctx, kv_dim)).astype(np.float32)
        vv = rng.standard_normal((n_ctx, kv_dim)).astype(np.float32)
        slot = np.zeros(n_ctx, np.int32)
        pos = np.arange(n_ctx, dtype=np.int32)
        self.k, self.v = [], []
        for _ in range(n_layers):
            k = np.zeros(n_ctx * self.row_bytes, np.uint8)
            v = np.zeros(n_ctx * self.row_bytes, np.uint8)
            rc = lib.tl_kv_store(self.pool, kind, ptr("void *", k), ptr("void *", v), n_ctx, kv_dim,
                                 ptr("float *", kk), ptr("float *", vv), n_ctx,
                                 ptr("int32_t *", slot), ptr("int32_t *", pos), 0)
            assert rc == 0
            self.k.append(k)
            self.v.append(v)

    def timer(self, pool: Any, pos: np.ndarray, seconds: float = 0.3,
              clock: Any = time.perf_counter) -> tuple[float, float]:
        """Best and median seconds per layer call, the layers called in turn for `seconds`.

        On a machine shared with other work a 2-thread call sometimes waits milliseconds for a
        descheduled worker; the best call shows the kernel, the median what that noise costs.
        """
        n_tok = len(pos)
        q = np.random.default_rng(1).standard_normal((n_tok, self.n_head * self.head_dim))
        q = q.astype(np.float32)
        out = np.empty_like(q)
        slot = np.zeros(n_tok, np.int32)
        calls = [(pool, self.kind, ptr("void *", k), ptr("void *", v), self.n_ctx,
                  ptr("float *", q), n_tok, ptr("int32_t *", slot), ptr("int32_t *", pos),
                  self.n_head, self.n_kv_head, self.head_dim, 1.0 / np.sqrt(self.head_dim), 0,
                  ptr("float *", out)) for k, v in zip(self.k, self.v, strict=True)]
        fn = lib.tl_attention
        for args in calls:
            assert fn(*args) == 0
        times: list[float] = []
        deadline = clock() + seconds
        while clock() < deadline or len(times) < 5:
            start = clock()
            for args in calls:
                fn(*args)
            times.append((clock() - start) / len(calls))
        return min(times), float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scalar", action="store_true", help="scalar reference kernels only")
    ap.add_argument("--types", default="f16,q8_0,q4_0", help="cache types, comma-separated")
    ap.add_argument("--layers", type=int, default=1, help="layers' caches cycled per step")
    ap.add_argument("--depths", default="512,2048,4096")
    ap.add_argument("--no-prefill", action="store_true")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time by the process's CPU time (on a busy machine, with --threads 1)")
    args = ap.parse_args()
    pool = new_pool(args.threads, 1 if args.scalar else 0)
    path = "scalar" if args.scalar else ("avx2" if lib.tl_pool_features(pool) else "scalar")
    depths = [int(d) for d in args.depths.split(",")]
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"tl_attention, {args.threads} threads, {path} kernels, {args.layers} layer(s) cycled")

    shapes = [("SmolLM2", 9, 3, 64), ("Gemma3", 4, 1, 256)]
    for name, n_head, n_kv_head, head_dim in shapes:
        print(f"\n{name}: {n_head} heads, {n_kv_head} kv heads, head_dim {head_dim}")
        for type_name in args.types.split(","):
            layers = Layers(pool, int(KV_TYPES[type_name]), args.layers, max(depths), n_head,
                            n_kv_head, head_dim)
            for depth in depths:
                best, median = layers.timer(pool, np.array([depth - 1], np.int32),
                                            clock=clock)
                gbs = 2 * depth * layers.row_bytes / best / 1e9
                print(f"  {type_name:5s} decode depth {depth:5d}: {best * 1e6:8.1f} us/layer best "
                      f"(median {median * 1e6:8.1f}), {gbs:5.1f} GB/s of K/V, "
                      f"x30 layers = {best * 30e3:.2f} ms")
            if not args.no_prefill:
                n = 512
                best, median = layers.timer(pool, np.arange(n, dtype=np.int32), seconds=1.0,
                                            clock=clock)
                print(f"  {type_name:5s} prefill {n} tokens causal: {best * 1e3:8.2f} ms/layer "
                      f"best (median {median * 1e3:.2f}), {best / n * 1e6:.1f} us/token")
    lib.tl_pool_free(pool)


if __name__ == "__main__":
    main()
