"""The official `ollama` and `openai` Python clients against a live server.

The clients are synchronous here and run in worker threads, so the server keeps serving on
the trio loop meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import ollama
import openai
import pytest
import trio

from trio_llm.config import Host

T = TypeVar("T")


async def in_thread(call: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(call)


@pytest.fixture
def ollama_client(server: Host) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server.url, verify=False)
    yield client
    client.close()


@pytest.fixture
def openai_client(server: Host) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


async def test_ollama_client_generate_and_chat(ollama_client: ollama.Client,
                                               model: str) -> None:
    reply = await in_thread(lambda: ollama_client.generate(model=model, prompt="Hello there",
                                                           options={"temperature": 0}))
    assert reply.done and reply.response and reply.eval_count and reply.context
    chat = await in_thread(lambda: ollama_client.chat(
        model=model, messages=[{"role": "user", "content": "Hi"}]))
    assert chat.message.role == "assistant" and chat.message.content
    assert chat.done_reason in ("stop", "length")


async def test_ollama_client_streaming_chat(ollama_client: ollama.Client, model: str) -> None:
    def run() -> list[Any]:
        return list(ollama_client.chat(model=model, stream=True,
                                       messages=[{"role": "user", "content": "one two"}]))

    parts = await in_thread(run)
    assert len(parts) >= 2 and parts[-1].done and not parts[0].done
    assert "".join(p.message.content for p in parts)


async def test_ollama_client_list_show_ps_embed(ollama_client: ollama.Client,
                                                model: str) -> None:
    listed = await in_thread(ollama_client.list)
    assert any(m.model.split(":")[0] == model for m in listed.models)
    shown = await in_thread(lambda: ollama_client.show(model))
    assert shown.details is not None and shown.modelinfo
    await in_thread(lambda: ollama_client.generate(model=model, prompt=""))
    running = await in_thread(ollama_client.ps)
    assert running.models and running.models[0].expires_at is not None
    embedded = await in_thread(lambda: ollama_client.embed(model=model, input=["a", "b c"]))
    assert len(embedded.embeddings) == 2


async def test_ollama_client_copy_and_delete(ollama_client: ollama.Client, model: str) -> None:
    assert (await in_thread(lambda: ollama_client.copy(model, "copied"))).status == "success"
    assert (await in_thread(lambda: ollama_client.delete("copied"))).status == "success"
    with pytest.raises(ollama.ResponseError) as missing:
        await in_thread(lambda: ollama_client.delete("copied"))
    assert missing.value.status_code == 404
    assert missing.value.error == "model 'copied' not found"


async def test_openai_client_chat_and_streaming(openai_client: openai.OpenAI,
                                                model: str) -> None:
    reply = await in_thread(lambda: openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}]))
    assert reply.choices[0].message.content and reply.usage.total_tokens > 0

    def stream() -> list[Any]:
        return list(openai_client.chat.completions.create(
            model=model, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Hello"}]))

    chunks = await in_thread(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_openai_client_completions_models_embeddings(openai_client: openai.OpenAI,
                                                           model: str) -> None:
    completion = await in_thread(lambda: openai_client.completions.create(
        model=model, prompt="Once upon a time"))
    assert completion.choices[0].text
    models = await in_thread(openai_client.models.list)
    assert any(m.id.split(":")[0] == model for m in models.data)
    one = await in_thread(lambda: openai_client.models.retrieve(model))
    assert one.id == model
    embedded = await in_thread(lambda: openai_client.embeddings.create(
        model=model, input=["hello", "world"]))
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) > 0


async def test_openai_client_sees_not_found(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: openai_client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]))
