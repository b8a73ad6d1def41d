"""Serving benchmark: concurrent streaming clients against a running server, over HTTP only.

    python -m trio_llm.bench serve --model smollm2:135m [--url http://127.0.0.1:11434]
        [--api openai|ollama] [--clients 4] [--tokens 128] [--rounds 3]
        [--workload plain|prefix|two-model|embed] [--second-model NAME]

Works against trio-llm and against llama-server (use `--api openai`; llama-server serves one
model and ignores the name), so both are measured by the same client code. Each client sends
one streaming greedy chat request with its own prompt; we time the first content token (TTFT)
and every later one. Reported: TTFT median and p90, per-stream decode tok/s (tokens after the
first over the time after the first) and the aggregate (all tokens over the wall time).

Workloads:
- plain: N clients at once, distinct prompts.
- prefix: a ~1,000-token system prompt; the first turn is answered, then the next turn (the
  history plus a new question) is timed: what a prompt cache saves. --think-time S waits S
  seconds before the next turn, as a person reading the answer would.
- two-model: N clients on --model alone, then on --second-model alone, then N on each at once;
  reports each model's share of its alone speed and their sum (1.0 = no loss from sharing).
- embed: 32 inputs in one /api/embed request against 32 sequential requests.
With --api ollama the final chunk's prompt_eval_duration gives TTFT minus prompt eval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field

import httpx
import trio

TOPICS = ["the history of bread", "how bridges stay up", "the life of a honeybee",
          "why the sea is salty", "the first steam engines", "how a violin makes sound",
          "the water cycle", "how maps are drawn", "the moon's phases", "volcanoes"]
SYSTEM_SENTENCE = ("You are a careful assistant for a public library. You answer questions "
                   "about books, opening hours, membership, events and local history, in plain "
                   "language, politely and briefly, and you never invent facts. ")


@dataclass
class Stream:
    """What one streaming request saw."""

    started: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    prompt_eval_s: float | None = None  # from Ollama's final chunk
    prompt_cached: int | None = None
    text: list[str] = field(default_factory=list)

    @property
    def ttft(self) -> float:
        assert self.first is not None, "the stream produced no token"
        return self.first - self.started

    @property
    def decode_rate(self) -> float:
        if self.first is None or self.last is None or self.tokens < 2:
            return 0.0
        return (self.tokens - 1) / max(self.last - self.first, 1e-9)


def chat_body(api: str, model: str, messages: list[dict], tokens: int) -> dict:
    if api == "openai":
        return {"model": model, "messages": messages, "stream": True, "temperature": 0,
                "max_tokens": tokens, "stream_options": {"include_usage": True}}
    return {"model": model, "messages": messages, "stream": True,
            "options": {"temperature": 0, "num_predict": tokens}}


async def stream_chat(client: httpx.AsyncClient, api: str, model: str, messages: list[dict],
                      tokens: int) -> Stream:
    """One streaming chat request, timing each content piece as it arrives."""
    path = "/v1/chat/completions" if api == "openai" else "/api/chat"
    seen = Stream(started=time.perf_counter())
    async with client.stream("POST", path, json=chat_body(api, model, messages, tokens)) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{path} answered {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            piece = read_piece(api, line, seen)
            if piece:
                now = time.perf_counter()
                seen.first = seen.first or now
                seen.last = now
                seen.tokens += 1
                seen.text.append(piece)
    return seen


def read_piece(api: str, line: str, seen: Stream) -> str:
    """The content text of one stream line ('' for none); final statistics go into `seen`."""
    if api == "openai":
        if not line.startswith("data: ") or line == "data: [DONE]":
            return ""
        event = json.loads(line[6:])
        details = (event.get("usage") or {}).get("prompt_tokens_details") or {}
        if "cached_tokens" in details:
            seen.prompt_cached = details["cached_tokens"]
        choices = event.get("choices") or [{}]
        return (choices[0].get("delta") or {}).get("content") or ""
    if not line.strip():
        return ""
    event = json.loads(line)
    if event.get("done"):
        seen.prompt_eval_s = event.get("prompt_eval_duration", 0) / 1e9
        if "prompt_cache_count" in event:
            seen.prompt_cached = event["prompt_cache_count"]
        return ""
    return (event.get("message") or {}).get("content") or ""


def user_prompt(i: int) -> list[dict]:
    topic = TOPICS[i % len(TOPICS)]
    return [{"role": "user", "content": f"Write a long, detailed essay about {topic}."}]


async def concurrent(client: httpx.AsyncClient, api: str, jobs: list[tuple[str, list[dict]]],
                     tokens: int) -> tuple[list[Stream], float]:
    """Run every (model, messages) job at once; the streams and the wall time."""
    results: list[Stream | None] = [None] * len(jobs)

    async def one(i: int, model: str, messages: list[dict]) -> None:
        results[i] = await stream_chat(client, api, model, messages, tokens)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, (model, messages) in enumerate(jobs):
            nursery.start_soon(one, i, model, messages)
    return [s for s in results if s is not None], time.perf_counter() - t0


def summary(label: str, streams: list[Stream], wall: float) -> float:
    """Print one line for a round; returns the aggregate tok/s."""
    ttfts = sorted(s.ttft * 1e3 for s in streams)
    p90 = ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))]
    aggregate = sum(s.tokens for s in streams) / wall
    per_stream = statistics.median(s.decode_rate for s in streams)
    line = (f"{label}: {len(streams)} streams, TTFT median {statistics.median(ttfts):.0f} ms "
            f"p90 {p90:.0f} ms, per-stream {per_stream:.1f} tok/s, aggregate {aggregate:.1f} "
            f"tok/s, {sum(s.tokens for s in streams)} tokens")
    overheads = [s.ttft - s.prompt_eval_s for s in streams if s.prompt_eval_s is not None]
    if overheads:
        line += f", TTFT minus prompt eval {statistics.median(overheads) * 1e3:.1f} ms"
    print(line, flush=True)
    return aggregate


async def plain(client: httpx.AsyncClient, args: argparse.Namespace) -> None:
    await concurrent(client, args.api, [(args.model, user_prompt(0))], 8)  # load, warm up
    for r in range(args.rounds):
        jobs = [(args.model, user_prompt(r * args.clients + i)) for i in range(args.clients)]
        streams, wall = await concurrent(client, args.api, jobs, args.tokens)
        summary(f"round {r}", streams, wall)


async def prefix(client: httpx.AsyncClient, args: argparse.Namespace) -> None:
    system = {"role": "system", "content": SYSTEM_SENTENCE * 30}   # about 1,000 tokens
    for r in range(args.rounds):
        first = [system, {"role": "user", "content": f"Round {r}: when do you open?"}]
        answer = await stream_chat(client, args.api, args.model, first, 32)
        await trio.sleep(args.think_time)      # the user reads the answer before replying
        follow = first + [{"role": "assistant", "content": "".join(answer.text)},
                          {"role": "user", "content": "And can I renew a book online?"}]
        turn = await stream_chat(client, args.api, args.model, follow, args.tokens)
        cached = "" if turn.prompt_cached is None else f", {turn.prompt_cached} cached tokens"
        extra = ("" if turn.prompt_eval_s is None
                 else f", prompt eval {turn.prompt_eval_s * 1e3:.0f} ms")
        print(f"round {r}: first turn TTFT {answer.ttft * 1e3:.0f} ms, next turn TTFT "
              f"{turn.ttft * 1e3:.0f} ms{extra}{cached}", flush=True)


async def two_model(client: httpx.AsyncClient, args: argparse.Namespace) -> None:
    if not args.second_model:
        raise SystemExit("--workload two-model needs --second-model")
    models = [args.model, args.second_model]
    for model in models:
        await concurrent(client, args.api, [(model, user_prompt(0))], 8)
    for r in range(args.rounds):
        alone = {}
        for model in models:
            jobs = [(model, user_prompt(i)) for i in range(args.clients)]
            alone[model] = summary(f"round {r} {model} alone", *await concurrent(
                client, args.api, jobs, args.tokens))
        jobs = [(m, user_prompt(i)) for m in models for i in range(args.clients)]
        streams, wall = await concurrent(client, args.api, jobs, args.tokens)
        share = 0.0
        for k, model in enumerate(models):
            mine = streams[k * args.clients:(k + 1) * args.clients]
            rate = summary(f"round {r} {model} together", mine, wall)
            share += rate / alone[model]
        print(f"round {r}: together = {share:.2f}x of one model alone", flush=True)


async def embed(client: httpx.AsyncClient, args: argparse.Namespace) -> None:
    inputs = [f"Sentence number {i} is about {TOPICS[i % len(TOPICS)]}." for i in range(32)]

    async def post(body: dict) -> None:
        r = await client.post("/api/embed", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"/api/embed answered {r.status_code}: {r.text[:300]}")

    await post({"model": args.model, "input": inputs[:2]})   # load, warm up
    for r in range(args.rounds):
        t0 = time.perf_counter()
        await post({"model": args.model, "input": inputs})
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        for text in inputs:
            await post({"model": args.model, "input": text})
        one_by_one = time.perf_counter() - t0
        print(f"round {r}: 32 inputs in one request {batched * 1e3:.0f} ms, 32 requests "
              f"{one_by_one * 1e3:.0f} ms ({batched / one_by_one:.2f}x)", flush=True)


WORKLOADS = {"plain": plain, "prefix": prefix, "two-model": two_model, "embed": embed}


async def run(args: argparse.Namespace) -> None:
    timeout = httpx.Timeout(600.0, connect=10.0)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=args.url, timeout=timeout, limits=limits) as client:
        await WORKLOADS[args.workload](client, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trio_llm.bench serve",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:11434")
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--second-model", default="")
    parser.add_argument("--api", choices=["openai", "ollama"], default="openai")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="plain")
    parser.add_argument("--think-time", type=float, default=0.0,
                        help="prefix workload: seconds between an answer and the next turn")
    trio.run(run, parser.parse_args(argv))
