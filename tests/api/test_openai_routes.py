"""OpenAI-compatible /v1 routes: JSON and SSE shapes, usage, errors in OpenAI's shape."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest

from trio_llm.testing.fake_backend import FakeBackend


def events(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks)
    return [b[len("data: "):] for b in blocks]


async def test_chat_completion(client: httpx.AsyncClient, model: str) -> None:
    body = (await client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "Say hi"}]})).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == model and body["system_fingerprint"] == "fp_ollama"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_chat_completion_maps_sampling_fields_to_options(client: httpx.AsyncClient,
                                                               fake: FakeBackend) -> None:
    await client.post("/v1/chat/completions", json={
        "model": "fake", "max_tokens": 3, "seed": 7, "stop": "x", "presence_penalty": 0.5,
        "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    request = fake.requests[-1]
    assert dict(request.options) == {"temperature": 1.0, "top_p": 1.0, "num_predict": 3,
                                     "seed": 7, "presence_penalty": 0.5, "stop": ["x"]}
    assert request.format == "json"


async def test_chat_completion_length_finish(client: httpx.AsyncClient, model: str) -> None:
    body = (await client.post("/v1/chat/completions", json={
        "model": model, "max_tokens": 1,
        "messages": [{"role": "user", "content": "count to ten please"}]})).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 1


async def test_chat_completion_stream_with_usage(client: httpx.AsyncClient, model: str) -> None:
    response = await client.post("/v1/chat/completions", json={
        "model": model, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Say hi"}]})
    data = events(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-2])
    assert text


async def test_chat_completion_stream_without_usage(client: httpx.AsyncClient,
                                                    model: str) -> None:
    response = await client.post("/v1/chat/completions", json={
        "model": model, "stream": True, "messages": [{"role": "user", "content": "x y"}]})
    chunks = [json.loads(d) for d in events(response)[:-1]]
    assert all(c["choices"] for c in chunks) and "usage" not in chunks[-1]


async def test_chat_completion_tool_calls_in_openais_shape(client: httpx.AsyncClient,
                                                           fake: FakeBackend) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    request = {"model": "fake", "tools": tools, "reasoning_effort": "low",
               "messages": [{"role": "user", "content": "rain?"}]}
    body = (await client.post("/v1/chat/completions", json=request)).json()
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["index"] == 0 and call["id"].startswith("call_")
    assert call["function"] == {"name": "weather", "arguments": '{"words": 3}'}
    assert choice["message"]["reasoning"] == "The user wants an echo."
    assert fake.requests[-1].think == "low"
    chunks = [json.loads(d) for d in events(await client.post(
        "/v1/chat/completions", json={**request, "stream": True}))[:-1]]
    calls = [c for ch in chunks for c in ch["choices"][0]["delta"].get("tool_calls", [])]
    assert [c["function"]["name"] for c in calls] == ["weather"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_completion(client: httpx.AsyncClient, model: str) -> None:
    body = (await client.post("/v1/completions", json={"model": model,
                                                       "prompt": "Once upon"})).json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert choice["text"] and choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] > 0


async def test_completion_stream(client: httpx.AsyncClient, model: str) -> None:
    response = await client.post("/v1/completions", json={
        "model": model, "prompt": "Once upon", "stream": True,
        "stream_options": {"include_usage": True}})
    data = events(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])


async def test_embeddings(client: httpx.AsyncClient, model: str) -> None:
    body = (await client.post("/v1/embeddings", json={"model": model,
                                                      "input": ["a b", "c"]})).json()
    assert body["object"] == "list" and body["model"] == model
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    vector = body["data"][0]["embedding"]
    encoded = (await client.post("/v1/embeddings", json={
        "model": model, "input": "a b", "encoding_format": "base64"})).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(vector, rel=1e-6)


async def test_models_list_and_one_model(client: httpx.AsyncClient, model: str) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list" and body["data"]
    for entry in body["data"]:
        assert list(entry) == ["id", "object", "created", "owned_by"]
        assert entry["object"] == "model" and entry["owned_by"] == "library"
    one = (await client.get(f"/v1/models/{model}")).json()
    assert one["id"] == model and one["object"] == "model"


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), [
    ("POST", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user",
                                                                      "content": "x"}]},
     404, "model 'nope' not found"),
    ("POST", "/v1/chat/completions", {"model": "fake", "messages": []}, 400,
     "[] is too short - 'messages'"),
    ("POST", "/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}, 400,
     "image URLs are not currently supported, please use base64 encoded data instead"),
    ("POST", "/v1/completions", {"model": "fake", "prompt": ["a", "b"]}, 400, None),
    ("POST", "/v1/embeddings", {"model": "fake", "input": [[1, 2]]}, 400, "invalid input"),
    ("POST", "/v1/embeddings", {"model": "fake", "input": "x", "encoding_format": "hex"}, 400,
     None),
    ("GET", "/v1/models/nope", None, 404, "model 'nope' not found"),
])
async def test_errors_use_openais_shape(client: httpx.AsyncClient, fake: FakeBackend,
                                        method: str, path: str, body: dict | None, status: int,
                                        message: str | None) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == {400: "invalid_request_error", 404: "not_found_error"}[status]
    if message is not None:
        assert error["message"] == message


async def test_failure_mid_sse_stream_sends_an_error_event(client: httpx.AsyncClient,
                                                           fake: FakeBackend) -> None:
    fake.fail_after = 1
    response = await client.post("/v1/chat/completions", json={
        "model": "fake", "stream": True, "messages": [{"role": "user", "content": "a b"}]})
    data = events(response)
    last = json.loads(data[-1])
    assert last["error"]["message"] == "the fake model failed mid-stream"
    assert last["error"]["type"] == "api_error"
