"""Benchmark: prompt-eval and decode speed of a GGUF model on our kernels.

    python -m trio_llm.bench MODEL.gguf [--threads 2] [--prompt 512] [--gen 128] [--reps 3]
                                        [--kv-type f16|q8_0|q4_0]
    python -m trio_llm.bench MODEL.gguf --json-schema SCHEMA.json [--parallel 4]

Measures the same work as shared/bench/llamacpp_bench.py so the two can be compared side by
side: prompt eval of a 512-token batch, 128 single-token decode steps from an empty context and
128 right after the prompt (`--prompt 4096 --kv-type q8_0` is llamacpp_bench.py's
`MODEL 2 4096 128 3 q8_0`). Decode GB/s is the bytes read per token times tokens/s: the
weights, plus the KV cache up to the depth for the decode after the prompt.
With --json-schema it measures whole decode steps (forward, sampling, and the grammar's masks)
with output constrained to the schema against the same steps unconstrained, for 1 sequence and
for --parallel N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from trio_llm.config import KV_CACHE_TYPES
from trio_llm.engine.batch import Batch
from trio_llm.engine.constraint import Constraint, GrammarVocabulary, MaskPrefetch
from trio_llm.engine.kv_cache import kv_cache_bytes
from trio_llm.engine.model import Model
from trio_llm.engine.sampler import Sampler, SamplerOptions
from trio_llm.engine.slots import Sequence, SlotTable

CONSTRAINED_PROMPT = "Describe one example as a JSON object:\n"
# Tokens after which a sampled sequence is replaced, constrained or not, so both runs decode
# over contexts of about the same lengths (a schema's object is usually done sooner).
SEQUENCE_TOKENS = 64


def decode_speed(model: Model, n: int, start: int) -> float:
    forward = model.net.forward
    t0 = time.perf_counter()
    for i in range(n):
        forward(Batch.decode(1500 + i, start + i))
    return n / (time.perf_counter() - t0)


def parallel_speed(model: Model, n_seq: int, steps: int) -> float:
    """Aggregate decode tok/s of n_seq sequences batched into one forward per step (after a
    32-token prompt each), the work of shared/bench/llamacpp_parallel.py."""
    prompt = list(range(1000, 1032))
    for seq in range(n_seq):
        model.net.forward(Batch.sequence(prompt, 0, seq))
    forward = model.net.forward
    t0 = time.perf_counter()
    for k in range(steps):
        forward(Batch.join([Batch.decode(1500 + k, len(prompt) + k, seq)
                            for seq in range(n_seq)]))
    return n_seq * steps / (time.perf_counter() - t0)


def sampled_speed(model: Model, n_seq: int, steps: int, constraint: Constraint | None,
                  vocabulary: GrammarVocabulary) -> float:
    """Aggregate tok/s of n_seq sequences sampled (default settings, seeded) through the slot
    table, each with `constraint` when given; a sequence that ends (its grammar complete, an
    end token, SEQUENCE_TOKENS) is replaced by a fresh one. Only steps that decode every
    sequence count (prompt steps are left out)."""
    table = SlotTable(n_seq, model.net.n_ctx, model.net.max_batch)
    prompt = model.tokenizer.encode(CONSTRAINED_PROMPT)
    masks = MaskPrefetch()
    started = 0

    def admit() -> None:
        nonlocal started
        seq = Sequence(prompt, Sampler(SamplerOptions(seed=started), model.tokenizer.vocab_size),
                       max_tokens=SEQUENCE_TOKENS, stop_ids=model.tokenizer.eot_ids)
        if constraint is not None:
            seq.grammar = vocabulary.start(constraint)
        table.add(seq)
        started += 1

    for _ in range(n_seq):
        admit()
    tokens, seconds = 0, 0.0
    try:
        while tokens < steps * n_seq:
            plan = table.plan()
            assert plan is not None
            decoding = all(n == 1 for _, n in plan.fed)
            t0 = time.perf_counter()
            events = table.apply(plan, masks.forward(plan, model.net.forward))
            if decoding:
                seconds += time.perf_counter() - t0
                tokens += len(events)
            for event in events:
                if event.done is not None:
                    table.remove(event.sequence)
                    admit()
    finally:
        masks.close()
    return tokens / seconds


def constrained_report(model: Model, schema_path: str, steps: int, parallel: int,
                       reps: int) -> None:
    with open(schema_path, encoding="utf-8") as f:
        constraint = Constraint.json_schema(json.load(f))
    vocabulary = GrammarVocabulary(model.tokenizer)
    sampled_speed(model, max(parallel, 1), 4, constraint, vocabulary)   # warm up
    for n_seq in sorted({1, max(parallel, 1)}):
        free = statistics.median(sampled_speed(model, n_seq, steps, None, vocabulary)
                                 for _ in range(reps))
        held = statistics.median(sampled_speed(model, n_seq, steps, constraint, vocabulary)
                                 for _ in range(reps))
        print(f"sampled decode, {n_seq} sequence(s): unconstrained {free:.1f} tok/s, "
              f"JSON schema {held:.1f} tok/s ({held / free:.2f}x)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trio_llm.bench", description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=0,
                        help="also measure N sequences decoded in one batch against 1")
    parser.add_argument("--bandwidth", type=float, default=0.0,
                        help="machine read bandwidth in GB/s, to print the fraction of it")
    parser.add_argument("--kv-type", choices=KV_CACHE_TYPES, default="f16",
                        help="KV cache type (OLLAMA_KV_CACHE_TYPE)")
    parser.add_argument("--json-schema", metavar="FILE",
                        help="only measure sampled decoding constrained to this JSON schema "
                             "against unconstrained (1 and --parallel sequences)")
    args = parser.parse_args(argv)
    if args.json_schema:
        model = Model.load(args.model, n_ctx=4 * SEQUENCE_TOKENS, n_threads=args.threads,
                           n_slots=max(args.parallel, 1))
        try:
            constrained_report(model, args.json_schema, args.gen, args.parallel, args.reps)
        finally:
            model.close()
        return

    model = Model.load(args.model, n_ctx=args.prompt + args.gen + 16, n_threads=args.threads,
                       max_batch=max(args.prompt, 1), n_slots=max(args.parallel, 1),
                       kv_type=args.kv_type)
    gigabytes = model.weight_bytes / 1e9
    plan = model.net.memory
    # K and V of every layer up to the depth, read once by a decode step after the prompt.
    cache_gb = kv_cache_bytes(model.net.shape.kv_layers, 1, args.prompt, model.net.max_batch,
                              plan.kv_type) / 1e9
    prompt = [1] + list(range(1000, 1000 + args.prompt - 1))
    print(f"model {args.model}: {gigabytes * 1e3:.1f} MB of weights read per token, "
          f"{model.pool.n_threads} threads, SIMD {'on' if model.pool.simd else 'off'}, "
          f"KV cache {plan.kv_type} ({cache_gb * 1e3:.1f} MB read at depth {args.prompt})"
          + (f" [{plan.kv_note}]" if plan.kv_note else ""))
    pp_runs, tg_runs, tgd_runs = [], [], []
    for rep in range(args.reps):
        model.net.forward(Batch.decode(1, 0))
        tg = decode_speed(model, args.gen, 1)
        t0 = time.perf_counter()
        model.net.forward(Batch.sequence(prompt))
        pp = args.prompt / (time.perf_counter() - t0)
        tgd = decode_speed(model, args.gen, args.prompt)
        pp_runs.append(pp)
        tg_runs.append(tg)
        tgd_runs.append(tgd)
        print(f"rep {rep}: pp{args.prompt} {pp:.1f} tok/s  tg{args.gen} {tg:.1f} tok/s "
              f"({tg * gigabytes:.1f} GB/s)  tg{args.gen}@d{args.prompt} {tgd:.1f} tok/s "
              f"({tgd * (gigabytes + cache_gb):.1f} GB/s)")
    tg, tgd = statistics.median(tg_runs), statistics.median(tgd_runs)
    line = (f"median: pp{args.prompt} {statistics.median(pp_runs):.1f} tok/s  "
            f"tg{args.gen} {tg:.1f} tok/s = {tg * gigabytes:.1f} GB/s  "
            f"tg{args.gen}@d{args.prompt} {tgd:.1f} tok/s = "
            f"{tgd * (gigabytes + cache_gb):.1f} GB/s "
            f"({tgd * (gigabytes + cache_gb) / (tg * gigabytes):.0%} of depth 0's per byte)")
    if args.bandwidth > 0:
        line += f"  ({tg * gigabytes / args.bandwidth:.0%} of {args.bandwidth:g} GB/s)"
    print(line)
    if args.parallel > 1:
        one = statistics.median(parallel_speed(model, 1, 96) for _ in range(args.reps))
        many = statistics.median(parallel_speed(model, args.parallel, 96)
                                 for _ in range(args.reps))
        print(f"batched decode: 1 sequence {one:.1f} tok/s, {args.parallel} sequences "
              f"{many:.1f} tok/s aggregate ({many / one:.2f}x)")


if __name__ == "__main__":
    main()
