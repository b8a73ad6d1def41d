"""Over-long prompts with the real smollm2:135m over real HTTP: never a silent cut.

truncate:false answers 400 with both counts; by default whole older messages go (the system
prompt and the last message stay) and the response, a header and the log say so; shift on and
off at the context edge; /v1 sets num_ctx; /api/embed reports what it cut or refuses.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import openai
import pytest
import trio

from tests.e2e.conftest import MODEL, start
from trio_llm import prompt
from trio_llm.config import Host
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.server import EngineBackend

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"  # greedy SmolLM2 keeps counting: no early end


def long_chat(n_older: int = 8, words: int = 60) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a terse assistant."}]
    for i in range(n_older):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"Note {i}: " + "lorem ipsum " * words})
    messages.append({"role": "user", "content": "What is the capital of France?"})
    return messages


async def oracle(backend: EngineBackend, messages: list[dict[str, str]], n_ctx: int,
                 room: int) -> tuple[int, int]:
    """(messages dropped, prompt tokens) by the rule, brute force: with the model's own
    template and tokenizer, drop the oldest message that is not a system message nor the last,
    one at a time, until the prompt leaves `room` tokens free."""
    ref = await backend.resolve(MODEL)
    assert not ref.system and not ref.messages
    render = functools.partial(prompt.chat, prompt.load(ref.template), bos_token=ref.bos_token,
                               eos_token=ref.eos_token)
    with read_gguf(ref.gguf_path) as gguf:
        tokenizer = Tokenizer.from_metadata(gguf.metadata)

    def count(kept: Sequence[Mapping[str, Any]]) -> int:
        return len(tokenizer.encode(render(kept)))

    kept, dropped = list(messages), 0
    while count(kept) > n_ctx - room:
        older = [m for m in kept[:-1] if m["role"] != "system"]
        if not older:
            break
        kept.remove(older[0])
        dropped += 1
    return dropped, count(kept)


async def test_truncate_false_answers_400_with_both_counts(
        client: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "messages": long_chat(), "stream": False, "truncate": False,
            "options": {"num_ctx": 512, "num_predict": 4}}
    reply = await client.post("/api/chat", json=body)
    assert reply.status_code == 400
    match = re.fullmatch(r"prompt is (\d+) tokens, but the context is 512 tokens",
                         reply.json()["error"])
    assert match and int(match.group(1)) > 512
    raw = {"model": MODEL, "prompt": "lorem ipsum " * 400, "raw": True, "stream": False,
           "truncate": False, "options": {"num_ctx": 512}}
    reply = await client.post("/api/generate", json=raw)
    assert reply.status_code == 400 and "but the context is 512 tokens" in reply.json()["error"]
    ok = await client.post("/api/chat", json={**body, "messages": long_chat(1, 10)})
    assert ok.status_code == 200 and "truncated" not in ok.json()


async def test_by_default_older_messages_go_and_the_response_says_how_many(
        live: tuple[Host, EngineBackend], client: httpx.AsyncClient,
        caplog: pytest.LogCaptureFixture) -> None:
    messages = long_chat()
    dropped, tokens = await oracle(live[1], messages, 512, 8)
    assert 0 < dropped < 8
    body = {"model": MODEL, "messages": messages, "stream": False,
            "options": {"num_ctx": 512, "num_predict": 8, "temperature": 0}}
    with caplog.at_level(logging.INFO, logger="trio_llm.nursery.engine_runner"):
        reply = await client.post("/api/chat", json=body)
    assert reply.status_code == 200
    out = reply.json()
    assert out["truncated"] is True and out["truncated_messages"] == dropped
    assert reply.headers["X-Truncated-Messages"] == str(dropped)
    assert out["prompt_eval_count"] == tokens  # what was evaluated: system + newer + last
    assert f"dropped the {dropped} oldest messages" in caplog.text
    async with client.stream("POST", "/api/chat", json={**body, "stream": True}) as streamed:
        assert streamed.headers["X-Truncated-Messages"] == str(dropped)
        lines = [line async for line in streamed.aiter_lines() if line.strip()]
    assert f'"truncated_messages":{dropped}' in lines[-1]


async def test_a_last_message_that_alone_does_not_fit_is_refused(
        client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "lorem ipsum " * 400}]
    reply = await client.post("/api/chat", json={"model": MODEL, "messages": messages,
                                                 "stream": False,
                                                 "options": {"num_ctx": 256}})
    assert reply.status_code == 400
    assert re.fullmatch(r"prompt is \d+ tokens, but the context is 256 tokens",
                        reply.json()["error"])


@pytest.mark.parametrize("shift", [False, True])
async def test_shift_on_and_off_at_the_context_edge(client: httpx.AsyncClient,
                                                    shift: bool) -> None:
    body = {"model": MODEL, "prompt": COUNTING, "raw": True, "stream": False, "shift": shift,
            "options": {"num_ctx": 64, "num_predict": 100, "temperature": 0}}
    reply = await client.post("/api/generate", json=body)
    assert reply.status_code == 200
    out = reply.json()
    assert out["done_reason"] == "length"
    numbers = [int(n) for n in re.findall(r"\d+", out["response"])]
    if shift:  # generation went on past the edge, and the count is still counting
        assert out["eval_count"] == 100
        assert len(numbers) > 20 and numbers == list(range(9, 9 + len(numbers)))
    else:      # it stopped where the context ends
        assert out["prompt_eval_count"] + out["eval_count"] == 64 + 1
        assert len(numbers) < 20


async def test_v1_requests_set_num_ctx(live: tuple[Host, EngineBackend],
                                       client: httpx.AsyncClient) -> None:
    c = openai.AsyncOpenAI(base_url=f"{live[0].url}/v1", api_key="unused")
    for extra, n_ctx in (({"options": {"num_ctx": 1024}}, 1024), ({"num_ctx": 3072}, 3072)):
        await c.chat.completions.create(model=MODEL, max_tokens=2, extra_body=extra,
                                        messages=[{"role": "user", "content": "Hi"}])
        [running] = (await client.get("/api/ps")).json()["models"]
        assert running["context_length"] == n_ctx


async def test_embed_refuses_or_reports_an_input_longer_than_the_context(
        client: httpx.AsyncClient) -> None:
    inputs = ["short", "lorem ipsum " * 400, "also short"]
    body = {"model": MODEL, "input": inputs, "options": {"num_ctx": 256}}
    refused = await client.post("/api/embed", json={**body, "truncate": False})
    assert refused.status_code == 400
    assert re.search(r"input 1 is \d+ tokens, but the context is 256 tokens",
                     refused.json()["error"])
    cut = await client.post("/api/embed", json=body)
    assert cut.status_code == 200
    assert cut.json()["truncated_inputs"] == [1] and len(cut.json()["embeddings"]) == 3


async def test_ollama_truncate_0_makes_refusal_the_default(
        nursery: trio.Nursery, models_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_TRUNCATE", "0")
    host, _ = await start(nursery, models_dir)
    async with httpx.AsyncClient(base_url=host.url, timeout=60) as http:
        reply = await http.post("/api/chat", json={
            "model": MODEL, "messages": long_chat(), "stream": False,
            "options": {"num_ctx": 512, "num_predict": 4}})
        assert reply.status_code == 400 and "but the context is 512 tokens" in reply.text
        reply = await http.post("/api/chat", json={
            "model": MODEL, "messages": long_chat(), "stream": False, "truncate": True,
            "options": {"num_ctx": 512, "num_predict": 4}})
        assert reply.status_code == 200 and reply.json()["truncated"] is True
