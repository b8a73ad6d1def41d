"""Tool calls, thinking and the OpenAI translation through the HTTP API, over the fake model
(which writes its thinking in <think> tags and its calls in <tool_call> tags, as text: the API
reads them out)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.api.test_openai_routes import events
from trio_llm.testing.fake_backend import THINKING, FakeBackend

TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
ASK = [{"role": "user", "content": "rain?"}]


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


async def test_a_streamed_chat_sends_the_call_in_the_chunk_that_completes_it(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    chunks = lines(await client.post("/api/chat", json={
        "model": "fake", "tools": TOOLS, "think": False, "messages": ASK}))
    with_calls = [c for c in chunks if c["message"].get("tool_calls")]
    assert len(with_calls) == 1 and not with_calls[0]["done"]
    (call,) = with_calls[0]["message"]["tool_calls"]
    assert call["function"] == {"index": 0, "name": "weather", "arguments": {"words": 3}}
    content = "".join(c["message"]["content"] for c in chunks)
    assert content == "user: rain? assistant:" and "tool_call" not in content
    assert chunks[-1]["done"] and chunks[-1]["done_reason"] == "stop"


async def test_thinking_is_split_from_the_answer_streamed_and_not(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    whole = (await client.post("/api/chat", json={
        "model": "fake", "stream": False, "messages": ASK})).json()   # on by default
    assert whole["message"]["thinking"] == THINKING
    assert whole["message"]["content"] == "user: rain? assistant:"
    chunks = lines(await client.post("/api/generate", json={
        "model": "fake", "prompt": "rain?", "think": "high"}))
    assert "".join(c.get("thinking", "") for c in chunks) == THINKING
    assert "<think>" not in "".join(c["response"] for c in chunks)
    assert fake.requests[-1].think == "high"


async def test_think_false_is_accepted_by_any_model_true_only_by_thinking_ones(
        client: httpx.AsyncClient) -> None:
    plain = await client.post("/api/chat", json={
        "model": "plain", "think": False, "stream": False, "messages": ASK})
    assert plain.status_code == 200 and "thinking" not in plain.json()["message"]
    refused = await client.post("/api/chat", json={"model": "plain", "think": True,
                                                   "messages": ASK})
    assert refused.status_code == 400
    assert refused.json() == {"error": '"plain:latest" does not support thinking'}


async def test_tags_and_show_list_capabilities(client: httpx.AsyncClient) -> None:
    tags = {m["name"]: m["capabilities"] for m in (await client.get("/api/tags")).json()["models"]}
    assert "tools" in tags["fake:latest"] and tags["plain:latest"] == ["completion"]
    show = (await client.post("/api/show", json={"model": "fake"})).json()
    assert "thinking" in show["capabilities"]


async def test_version_is_ollamas_numbering_with_ours_beside_it(client: httpx.AsyncClient) -> None:
    from packaging.version import Version

    body = (await client.get("/api/version")).json()
    assert Version(body["version"]) >= Version("0.6.4")     # what version-gating clients ask
    assert body["trio_llm_version"]


# ----------------------------------------------------------------------------- /v1

async def test_tool_choice_none_offers_no_tools(client: httpx.AsyncClient,
                                                fake: FakeBackend) -> None:
    body = (await client.post("/v1/chat/completions", json={
        "model": "fake", "tools": TOOLS, "tool_choice": "none", "messages": ASK})).json()
    assert fake.requests[-1].tools is None
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in body["choices"][0]["message"]


async def test_tool_choice_auto_lets_the_model_call(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/chat/completions", json={
        "model": "fake", "tools": TOOLS, "tool_choice": "auto", "messages": ASK})).json()
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == \
        {"words": 3}


@pytest.mark.parametrize(("choice", "error"), [
    ({"type": "function", "function": {"name": "nope"}},
     'tool_choice names "nope", which is not one of the tools'),
    ("sometimes", 'invalid tool_choice: must be "none", "auto", "required" or '
                  '{"type": "function", "function": {"name": ...}}'),
])
async def test_a_tool_choice_that_names_no_tool_or_is_malformed_is_refused(
        client: httpx.AsyncClient, fake: FakeBackend, choice: Any, error: str) -> None:
    before = len(fake.requests)
    for stream in (False, True):
        reply = await client.post("/v1/chat/completions", json={
            "model": "fake", "tools": TOOLS, "tool_choice": choice, "stream": stream,
            "messages": ASK})
        assert reply.status_code == 400
        assert reply.json()["error"]["message"] == error
    assert len(fake.requests) == before      # nothing was generated


@pytest.mark.parametrize(("effort", "think"), [("high", "high"), ("none", False),
                                               ("minimal", "low")])
async def test_reasoning_effort_sets_thinking(client: httpx.AsyncClient, fake: FakeBackend,
                                              effort: str, think: Any) -> None:
    body = (await client.post("/v1/chat/completions", json={
        "model": "fake", "reasoning_effort": effort, "messages": ASK})).json()
    assert fake.requests[-1].think == think
    assert ("reasoning" in body["choices"][0]["message"]) is (think is not False)


@pytest.mark.parametrize("effort", ["extreme", 3])
async def test_an_invalid_reasoning_effort_is_a_400(client: httpx.AsyncClient,
                                                    effort: Any) -> None:
    reply = await client.post("/v1/chat/completions", json={
        "model": "fake", "reasoning_effort": effort, "messages": ASK})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("invalid reasoning_effort")


async def test_the_role_is_named_only_in_the_first_stream_delta(client: httpx.AsyncClient,
                                                                model: str) -> None:
    chunks = [json.loads(d) for d in events(await client.post("/v1/chat/completions", json={
        "model": model, "stream": True, "messages": [{"role": "user", "content": "a b c"}]}))[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert all("role" not in d for d in deltas[1:]) and len(deltas) > 2


async def test_content_parts_become_messages_joined_by_the_template(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    await client.post("/v1/chat/completions", json={"model": "fake", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "first part"},
                                     {"type": "text", "text": "second part"}]}]})
    assert "user: first part\n\nsecond part\n" in fake.requests[-1].prompt


async def test_tool_results_keep_their_call_id_and_are_named_after_the_call(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    template = "{{ range .Messages }}{{ .Role }}|{{ .ToolName }}|{{ .ToolCallID }};{{ end }}"
    await client.post("/api/create", json={"model": "ids", "from": "fake",
                                           "template": template})
    await client.post("/v1/chat/completions", json={"model": "ids", "messages": [
        {"role": "user", "content": "rain?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "wet"}]})
    assert fake.requests[-1].prompt == "user||;assistant||;tool|weather|call_1;"


async def test_a_required_call_is_generated_under_the_calls_schema(
        client: httpx.AsyncClient, fake: FakeBackend) -> None:
    """tool_choice "required": the request goes down constrained to the JSON schema of the
    allowed calls (the constrained decoder then lets only a valid call through)."""
    from trio_llm.engine.constraint import Constraint

    reply = await client.post("/v1/chat/completions", json={
        "model": "fake", "tools": TOOLS, "tool_choice": "required", "messages": ASK})
    assert reply.status_code == 200
    expected = Constraint.json_schema({
        "type": "object", "required": ["name", "arguments"],
        "properties": {"name": {"const": "weather"},
                       "arguments": TOOLS[0]["function"]["parameters"]}})
    got = fake.requests[-1].constraint
    assert got is not None and got.kind == expected.kind
    assert json.loads(got.grammar) == json.loads(expected.grammar)
    both = await client.post("/v1/chat/completions", json={
        "model": "fake", "tools": TOOLS, "tool_choice": "required", "messages": ASK,
        "response_format": {"type": "json_object"}})
    assert both.status_code == 400 and "cannot be combined" in both.json()["error"]["message"]
