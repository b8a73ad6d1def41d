"""Ollama's /api routes against a live server: shapes of every answer, streaming and stats."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

import httpx
import numpy as np

from trio_llm.testing.fake_backend import FakeBackend

STATS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
         "eval_count", "eval_duration")


def lines(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def assert_timestamp(text: str) -> None:
    assert datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None


async def test_root_says_the_server_is_running(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert (response.status_code, response.text) == (200, "trio-llm is running")
    head = await client.head("/")
    assert head.status_code == 200 and head.content == b""


async def test_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/version")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "trio_llm_version"}
    assert body["version"] == "0.12.0"      # Ollama's numbering, for clients that check it


async def test_generate_streams_ndjson_and_ends_with_stats_and_context(
        client: httpx.AsyncClient, model: str) -> None:
    response = await client.post("/api/generate", json={
        "model": model, "prompt": "Why is the sky blue?", "options": {"temperature": 0},
        "think": False})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    chunks = lines(response)
    assert len(chunks) >= 2
    for chunk in chunks[:-1]:
        assert list(chunk) == ["model", "created_at", "response", "done"]
        assert chunk["model"] == model and chunk["done"] is False
        assert_timestamp(chunk["created_at"])
    final = chunks[-1]
    assert final["done"] is True and final["done_reason"] in ("stop", "length")
    assert all(isinstance(final[k], int) and final[k] > 0 for k in STATS)
    assert final["total_duration"] >= final["load_duration"]
    assert isinstance(final["context"], list) and final["context"]
    assert final["eval_count"] == len(chunks) - 1 or final["response"]


async def test_generate_without_stream_answers_one_object(client: httpx.AsyncClient,
                                                          model: str) -> None:
    response = await client.post("/api/generate", json={
        "model": model, "prompt": "one two three", "stream": False})
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["done"] is True and body["response"]
    assert all(k in body for k in STATS)


async def test_fake_model_echoes_the_rendered_prompt(client: httpx.AsyncClient,
                                                     fake: FakeBackend) -> None:
    body = (await client.post("/api/generate", json={
        "model": "fake", "prompt": "one two", "system": "be brief", "stream": False,
        "think": False})).json()
    assert body["response"] == "system: be brief user: one two assistant:"
    assert body["eval_count"] == 7 and body["prompt_eval_count"] == 7
    plain = (await client.post("/api/generate", json={
        "model": "plain", "prompt": "one two", "system": "S", "stream": False})).json()
    assert plain["response"] == "one two"   # no template: Ollama's {{ .Prompt }}


async def test_request_template_overrides_the_models_in_jinja_or_simple_go(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    for template in ("{{ system }} Q: {{ prompt }} A:", "{{ .System }} Q: {{ .Prompt }} A:"):
        body = (await client.post("/api/generate", json={
            "model": "fake", "prompt": "why", "system": "S", "template": template,
            "stream": False})).json()
        assert body["response"] == "S Q: why A:"


async def test_generate_num_predict_ends_with_length(client: httpx.AsyncClient,
                                                     model: str) -> None:
    body = (await client.post("/api/generate", json={
        "model": model, "prompt": "a b c d e f g h", "stream": False,
        "options": {"num_predict": 2}})).json()
    assert body["done_reason"] == "length"
    assert body["eval_count"] == 2


async def test_stop_strings_end_the_answer_before_them(client: httpx.AsyncClient,
                                                       fake: FakeBackend) -> None:
    body = (await client.post("/api/generate", json={
        "model": "fake", "prompt": "a b c d", "raw": True, "stream": False,
        "options": {"stop": ["c"]}})).json()
    assert body["response"] == "a b"
    assert body["done_reason"] == "stop"
    assert "context" not in body  # raw mode returns no context


async def test_context_from_a_reply_continues_the_conversation(client: httpx.AsyncClient,
                                                               model: str) -> None:
    first = (await client.post("/api/generate", json={
        "model": model, "prompt": "remember seven", "stream": False})).json()
    second = (await client.post("/api/generate", json={
        "model": model, "prompt": "what number?", "context": first["context"],
        "stream": False})).json()
    assert second["prompt_eval_count"] > len(first["context"])


async def test_suffix_reaches_a_fill_in_the_middle_template(client: httpx.AsyncClient,
                                                            fake: FakeBackend) -> None:
    body = (await client.post("/api/generate", json={
        "model": "fake", "prompt": "def f():", "suffix": "return x", "stream": False})).json()
    assert body["response"] == "<prefix>def f():<suffix>return x<middle>"


async def test_request_options_override_modelfile_parameters_and_pass_through(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    created = await client.post("/api/create", json={
        "model": "tuned", "from": "fake", "parameters": {"temperature": 0.2, "top_k": 5},
        "stream": False})
    assert created.json() == {"status": "success"}
    await client.post("/api/generate", json={
        "model": "tuned", "prompt": "x", "stream": False, "keep_alive": "1m",
        "format": "json", "think": False, "options": {"top_k": 7, "bogus": 1}})
    request = fake.requests[-1]
    assert dict(request.options) == {"temperature": 0.2, "top_k": 7}
    assert (request.keep_alive, request.format, request.think) == (60.0, "json", False)


async def test_empty_prompt_loads_and_keep_alive_zero_unloads(client: httpx.AsyncClient,
                                                              model: str) -> None:
    loaded = (await client.post("/api/generate", json={"model": model})).json()
    assert loaded["done"] is True and loaded["done_reason"] == "load"
    running = (await client.get("/api/ps")).json()["models"]
    assert any(m["name"].startswith(model) for m in running)
    unloaded = (await client.post("/api/generate", json={"model": model,
                                                         "keep_alive": 0})).json()
    assert unloaded["done_reason"] == "unload"
    running = (await client.get("/api/ps")).json()["models"]
    assert not any(m["name"].startswith(model) for m in running)


async def test_chat_streams_assistant_messages(client: httpx.AsyncClient, model: str) -> None:
    response = await client.post("/api/chat", json={
        "model": model, "messages": [{"role": "user", "content": "Hello there"}]})
    chunks = lines(response)
    assert response.headers["content-type"] == "application/x-ndjson"
    for chunk in chunks:
        assert chunk["message"]["role"] == "assistant"
        assert isinstance(chunk["message"]["content"], str)
    final = chunks[-1]
    assert final["done"] is True and "context" not in final
    assert all(k in final for k in STATS)


async def test_chat_without_stream_and_with_history(client: httpx.AsyncClient,
                                                    fake: FakeBackend) -> None:
    body = (await client.post("/api/chat", json={"model": "fake", "stream": False,
                                                 "think": False, "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]})).json()
    assert body["message"] == {"role": "assistant",
                               "content": "system: S user: Q1 assistant: A1 user: Q2 assistant:"}
    assert body["done_reason"] == "stop"


async def test_chat_with_empty_messages_loads_the_model(client: httpx.AsyncClient,
                                                        model: str) -> None:
    body = (await client.post("/api/chat", json={"model": model, "messages": []})).json()
    assert body["done_reason"] == "load"
    assert body["message"] == {"role": "assistant", "content": ""}


async def test_chat_passes_tools_and_returns_tool_calls(client: httpx.AsyncClient,
                                                        fake: FakeBackend) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    body = (await client.post("/api/chat", json={
        "model": "fake", "stream": False, "tools": tools,
        "messages": [{"role": "user", "content": "rain?"}]})).json()
    assert fake.requests[-1].tools == tools
    (call,) = body["message"]["tool_calls"]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call.pop("id"))
    assert [call] == [{"function": {"index": 0, "name": "weather", "arguments": {"words": 3}}}]
    assert body["message"]["content"] == "user: rain? assistant:"   # no call markup in it


async def test_thinking_is_returned_beside_the_answer(client: httpx.AsyncClient,
                                                      fake: FakeBackend) -> None:
    chat = (await client.post("/api/chat", json={
        "model": "fake", "stream": False, "think": True,
        "messages": [{"role": "user", "content": "hm"}]})).json()
    assert chat["message"]["thinking"] == "The user wants an echo."
    lines_ = lines(await client.post("/api/generate", json={
        "model": "fake", "prompt": "hm", "think": "high"}))
    assert [c["thinking"] for c in lines_ if "thinking" in c] == ["The user wants an echo."]


async def test_embed_answers_normalised_vectors(client: httpx.AsyncClient, model: str) -> None:
    body = (await client.post("/api/embed", json={"model": model,
                                                  "input": ["hello world", "bye"]})).json()
    assert list(body) == ["model", "embeddings", "total_duration", "load_duration",
                          "prompt_eval_count"]
    assert len(body["embeddings"]) == 2
    for vector in body["embeddings"]:
        assert abs(sum(x * x for x in vector) - 1.0) < 1e-6
    single = (await client.post("/api/embed", json={"model": model, "input": "hello world"}))
    assert single.json()["embeddings"] == body["embeddings"][:1]


def significant_digits(text: str) -> str:
    mantissa = re.split("[eE]", text.lstrip("-"))[0].replace(".", "")
    return mantissa.lstrip("0").rstrip("0") or "0"


async def test_embed_writes_each_value_as_go_writes_a_float32(client: httpx.AsyncClient,
                                                              model: str) -> None:
    """Ollama's vectors are []float32: each number has the shortest digits that read back as
    the same float32 (numpy's str of a float32 is that shortest form), not a float64's 17."""
    raw = (await client.post("/api/embed", json={"model": model, "input": "hello"})).text
    vector = raw[raw.index("[[") + 2: raw.index("]]")].split(",")
    assert len(vector) == 8           # the fake backend's vectors
    for text in vector:
        value = np.float32(text)
        assert significant_digits(text) == significant_digits(str(value)), text


async def test_embed_dimensions_truncate_and_renormalise(client: httpx.AsyncClient,
                                                         model: str) -> None:
    body = (await client.post("/api/embed", json={"model": model, "input": "hello",
                                                  "dimensions": 4})).json()
    (vector,) = body["embeddings"]
    assert len(vector) == 4
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-6


async def test_embed_truncate_false_refuses_long_input(client: httpx.AsyncClient,
                                                       fake: FakeBackend) -> None:
    long_input = " ".join(["w"] * 20)
    ok = await client.post("/api/embed", json={"model": "fake", "input": long_input,
                                               "options": {"num_ctx": 8}})
    assert ok.status_code == 200 and ok.json()["prompt_eval_count"] == 8
    refused = await client.post("/api/embed", json={"model": "fake", "input": long_input,
                                                    "truncate": False,
                                                    "options": {"num_ctx": 8}})
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}


async def test_legacy_embeddings_answers_one_raw_vector(client: httpx.AsyncClient,
                                                        model: str) -> None:
    body = (await client.post("/api/embeddings", json={"model": model,
                                                       "prompt": "hello"})).json()
    assert list(body) == ["embedding"] and len(body["embedding"]) > 0
    empty = (await client.post("/api/embeddings", json={"model": model, "prompt": ""})).json()
    assert empty == {"embedding": []}


async def test_tags_lists_models_newest_first(client: httpx.AsyncClient, model: str) -> None:
    models = (await client.get("/api/tags")).json()["models"]
    assert models
    for entry in models:
        assert list(entry) == ["name", "model", "modified_at", "size", "digest", "details",
                               "capabilities"]
        assert entry["name"] == entry["model"] and len(entry["digest"]) == 64
        assert_timestamp(entry["modified_at"])
    times = [m["modified_at"] for m in models]
    assert times == sorted(times, reverse=True)
    assert any(m["name"].split(":")[0] == model for m in models)


async def test_show_returns_model_details(client: httpx.AsyncClient, model: str) -> None:
    body = (await client.post("/api/show", json={"model": model})).json()
    for key in ("modelfile", "parameters", "template", "details", "model_info",
                "capabilities"):
        assert key in body
    assert "general.architecture" in body["model_info"]
    legacy = await client.post("/api/show", json={"name": model})
    assert legacy.status_code == 200


async def test_ps_lists_loaded_models(client: httpx.AsyncClient, model: str) -> None:
    await client.post("/api/generate", json={"model": model, "keep_alive": "10m"})
    (entry,) = (await client.get("/api/ps")).json()["models"]
    assert list(entry) == ["name", "model", "size", "digest", "details", "expires_at",
                           "size_vram", "context_length"]
    assert_timestamp(entry["expires_at"])


async def test_copy_then_delete(client: httpx.AsyncClient, model: str) -> None:
    copied = await client.post("/api/copy", json={"source": model, "destination": "my-copy"})
    assert (copied.status_code, copied.content) == (200, b"")
    names = [m["name"] for m in (await client.get("/api/tags")).json()["models"]]
    assert "my-copy:latest" in names
    deleted = await client.request("DELETE", "/api/delete", json={"model": "my-copy"})
    assert (deleted.status_code, deleted.content) == (200, b"")
    names = [m["name"] for m in (await client.get("/api/tags")).json()["models"]]
    assert "my-copy:latest" not in names


async def test_blob_upload_is_checked_and_then_exists(client: httpx.AsyncClient) -> None:
    data = b"GGUF" + bytes(range(256)) * 300
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await client.head(f"/api/blobs/{digest}")).status_code == 404

    async def chunks():  # streamed upload, no Content-Length
        for start in range(0, len(data), 10_000):
            yield data[start:start + 10_000]

    created = await client.post(f"/api/blobs/{digest}", content=chunks())
    assert created.status_code == 201
    assert (await client.head(f"/api/blobs/{digest}")).status_code == 200
    again = await client.post(f"/api/blobs/{digest}", content=data)
    assert again.status_code == 200


async def test_create_streams_status_until_success(client: httpx.AsyncClient,
                                                   model: str) -> None:
    response = await client.post("/api/create", json={"model": "made", "from": model,
                                                      "system": "You are terse."})
    statuses = [line["status"] for line in lines(response)]
    assert statuses[-1] == "success"
    show = (await client.post("/api/show", json={"model": "made"})).json()
    assert show["system"] == "You are terse."


async def test_pull_streams_progress(client: httpx.AsyncClient, fake: FakeBackend) -> None:
    response = await client.post("/api/pull", json={"model": "tiny"})
    events = lines(response)
    assert events[0] == {"status": "pulling manifest"}
    assert any({"digest", "total", "completed"} <= set(e) for e in events)
    assert events[-1] == {"status": "success"}
    quiet = await client.post("/api/pull", json={"model": "tiny", "stream": False})
    assert quiet.json() == {"status": "success"}


async def test_push_streams_progress(client: httpx.AsyncClient, fake: FakeBackend) -> None:
    response = await client.post("/api/push", json={"model": "fake"})
    assert [e["status"] for e in lines(response)][-1] == "success"


async def test_metrics_count_requests_and_tokens(client: httpx.AsyncClient,
                                                 model: str) -> None:
    await client.post("/api/generate", json={"model": model, "prompt": "a b c",
                                             "stream": False})
    await client.get("/api/nothing-here")
    text = (await client.get("/metrics")).text
    assert 'trio_llm_http_requests_total{method="POST",route="/api/generate",status="200"} 1' \
        in text
    assert 'route="unmatched",status="404"' in text
    assert "trio_llm_generated_tokens_total{model=" in text
    assert "trio_llm_tokens_per_second{model=" in text
    assert "trio_llm_queue_depth 0" in text
    assert "trio_llm_loaded_models 1" in text
