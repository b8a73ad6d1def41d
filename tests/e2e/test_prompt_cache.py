"""The prompt cache with the real smollm2:135m over real HTTP.

The rule: a prompt reuses the KV of its longest common prefix with the prompts and answers
evaluated before it on the same loaded model (to the token, never its last token), so
`prompt_eval_count` is the rest and `prompt_cache_count` (`usage.prompt_tokens_details.
cached_tokens` on /v1) is that prefix. A finished answer is evaluated again as prompt rows in
the background (generated tokens' own KV has the decode kernels' bits), so a chat's next turn
evaluates only what follows the previous answer. Same greedy text as without the cache; never
another model's or num_ctx's KV.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import trio

from tests.e2e.conftest import MODEL, start
from trio_llm.config import Host
from trio_llm.nursery.engine_runner import EngineRunner
from trio_llm.server import EngineBackend

RULES = " ".join(f"Rule {i}: answer in plain words, cite rule {i} when asked, and never "
                 f"mention the number {i * 7} unless the user does." for i in range(40))
OPTIONS = {"temperature": 0, "num_predict": 12}


def chat(system: str, *turns: str) -> list[dict[str, str]]:
    """system, then alternating user / assistant contents."""
    messages = [{"role": "system", "content": system}]
    for i, content in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": content})
    return messages


async def ask(http: httpx.AsyncClient, messages: list[dict[str, str]], **options: Any
              ) -> dict[str, Any]:
    reply = await http.post("/api/chat", json={"model": MODEL, "messages": messages,
                                               "stream": False,
                                               "options": {**OPTIONS, **options}})
    assert reply.status_code == 200, reply.text
    return reply.json()


def runner(backend: EngineBackend, name: str = MODEL) -> EngineRunner:
    loaded = backend.scheduler.model(name)
    assert loaded is not None and isinstance(loaded.runner, EngineRunner)
    return loaded.runner


async def test_a_second_chat_turn_evaluates_only_what_follows_the_first_turns_prompt(
        nursery: trio.Nursery, models_dir: Any) -> None:
    cached_host, cached = await start(nursery, models_dir)
    plain_host, _ = await start(nursery, models_dir, prompt_cache=0)
    async with httpx.AsyncClient(base_url=cached_host.url, timeout=120) as http, \
            httpx.AsyncClient(base_url=plain_host.url, timeout=120) as plain:
        first = await ask(http, chat(RULES, "Which rule is about the number 14?"))
        full_first = first["prompt_eval_count"]
        assert full_first > 1000 and "prompt_cache_count" not in first
        answer = first["message"]["content"]
        second_turn = chat(RULES, "Which rule is about the number 14?", answer,
                           "And which one is about 21?")
        second = await ask(http, second_turn)
        without = await ask(plain, second_turn)
        assert "prompt_cache_count" not in without
        full_second = without["prompt_eval_count"]
        # the first prompt and every generated token (the end token too, if it stopped there)
        answered = first["eval_count"] + (first["done_reason"] == "stop")
        assert second["prompt_cache_count"] == full_first + answered
        assert second["prompt_eval_count"] == full_second - full_first - answered
        assert second["message"]["content"] == without["message"]["content"]
        assert second["eval_count"] == without["eval_count"]
        # the same turn again, over /v1: all of it is cached but the last token
        client = openai.AsyncOpenAI(base_url=f"{cached_host.url}/v1", api_key="unused")
        again = await client.chat.completions.create(
            model=MODEL, messages=second_turn, temperature=0, max_tokens=12)  # type: ignore
        assert again.usage is not None and again.usage.prompt_tokens == full_second
        assert again.usage.prompt_tokens_details is not None
        assert again.usage.prompt_tokens_details.cached_tokens == full_second - 1
        assert again.choices[0].message.content == without["message"]["content"]
        # the memory figure admission and ps use counts the cache's budget
        sizes = [(await h.get("/api/ps")).json()["models"][0]["size"] for h in (http, plain)]
        assert sizes[0] - sizes[1] == runner(cached).prompt_cache.budget > 0
        assert runner(cached).prompt_cache.nbytes <= runner(cached).prompt_cache.budget


async def test_another_num_ctx_or_another_model_never_gets_the_cached_prefix(
        nursery: trio.Nursery, models_dir: Any) -> None:
    host, backend = await start(nursery, models_dir, max_loaded_models=3)
    system = RULES[:900]
    async with httpx.AsyncClient(base_url=host.url, timeout=120) as http:
        warm = await ask(http, chat(system, "Hello"))
        hit = await ask(http, chat(system, "Good morning"))
        assert hit["prompt_cache_count"] > 0
        wider = await ask(http, chat(system, "Good morning"), num_ctx=4096)
        assert "prompt_cache_count" not in wider
        assert wider["prompt_eval_count"] == hit["prompt_eval_count"] + hit["prompt_cache_count"]
        copied = await http.post("/api/copy", json={"source": MODEL, "destination": "twin"})
        assert copied.status_code == 200
        reply = await http.post("/api/chat", json={"model": "twin", "stream": False,
                                                   "messages": chat(system, "Good morning"),
                                                   "options": OPTIONS})
        twin = reply.json()
        assert "prompt_cache_count" not in twin and twin["prompt_eval_count"] == \
            wider["prompt_eval_count"]
        assert twin["message"]["content"] == hit["message"]["content"] == \
            wider["message"]["content"]
        assert warm["prompt_eval_count"] > 200


def post(host: Host, path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


# A long prefill to cancel, ~6 s: the full tier; the engine's own cancel-mid-prefill test
# (tests/test_serving_engine.py) and the second-turn test above stay in the fast one
@pytest.mark.full
async def test_cancelling_mid_prefill_frees_the_slot_and_stores_nothing_of_that_prompt(
        nursery: trio.Nursery, models_dir: Any) -> None:
    host, backend = await start(nursery, models_dir)
    system = RULES[:900]
    async with httpx.AsyncClient(base_url=host.url, timeout=120) as http:
        await ask(http, chat(system, "Hello"))
        table, cache = runner(backend).table, runner(backend).prompt_cache
        with trio.fail_after(60):               # its answer is stored in the background
            while table.background:
                await trio.sleep(0.01)
        stored = set(cache.blocks)
        body = {"model": MODEL, "stream": True, "options": OPTIONS,
                "messages": chat(system, "Summarise this: " + RULES)}
        stream = await trio.open_tcp_stream(host.host, host.port)
        async with stream:
            await stream.send_all(post(host, "/api/chat", body))
            with trio.fail_after(60):
                while not any(s.prefilling and s.fed_prompt > s.cached and not s.background
                              for s in table.active):
                    await trio.sleep(0.01)
            [seq] = [s for s in table.active if not s.background]
            assert seq.cached > 0 and seq.fed_prompt < len(seq.prompt)   # mid-prefill
        with trio.fail_after(60):               # the client is gone: its request ends
            while backend.scheduler.busy_slots or [s for s in table.active if not s.background]:
                await trio.sleep(0.01)
        assert table.free_slots == len(table.slots)
        assert cache.pinned == 0 and set(cache.blocks) == stored
        after = await ask(http, chat(system, "Good morning"))
        assert after["prompt_cache_count"] > 0 and after["done_reason"] in ("stop", "length")


@pytest.mark.full  # two servers and long prompts: ~12 s; the other cache tests stay fast
async def test_a_small_budget_evicts_and_keeps_answering_as_without_the_cache(
        nursery: trio.Nursery, models_dir: Any) -> None:
    block = 64 * 30 * 2 * 192 * 2             # SmolLM2 f16: 64 positions x 30 layers x K, V
    host, backend = await start(nursery, models_dir, prompt_cache=4 * block)
    plain_host, _ = await start(nursery, models_dir, prompt_cache=0)
    first, other = RULES[:700], RULES[-700:]
    asked = [(first, "Hello"), (first, "Good morning"), (other, "Hello"), (first, "Hi there"),
             (other, "Good evening")]
    hits = []
    async with httpx.AsyncClient(base_url=host.url, timeout=120) as http, \
            httpx.AsyncClient(base_url=plain_host.url, timeout=120) as plain:
        for system, question in asked:
            got = await ask(http, chat(system, question))
            want = await ask(plain, chat(system, question))
            assert got["message"]["content"] == want["message"]["content"]
            assert got["prompt_eval_count"] + got.get("prompt_cache_count", 0) == \
                want["prompt_eval_count"]
            cache = runner(backend).prompt_cache
            assert 0 < cache.nbytes <= cache.budget and cache.pinned == 0
            hits.append(got.get("prompt_cache_count", 0))
    assert hits[0] == 0 and hits[1] > 0 and runner(backend).prompt_cache.evicted > 0
