"""/v1/messages with the real smollm2:135m over HTTP and the real `anthropic` client: a
system prompt and several turns, a tool round trip (tool_use, then tool_result) under
tool_choice any / tool, the stream's events in order, count_tokens equal to what the prompt
evaluates, a thinking budget that is held to, and errors in Anthropic's shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.test_tools_thinking import THINK_MODEL, THINK_TEMPLATE, TOOL_MODEL, create
from tests.prompt.corpus import QWEN25
from trio_llm.config import Host
from trio_llm.server import EngineBackend

TOOLS = [{"name": "get_weather", "description": "Get the current weather in a city",
          "input_schema": {"type": "object", "required": ["city"],
                           "additionalProperties": False,
                           "properties": {"city": {"type": "string", "maxLength": 20}}}}]
TURNS = [{"role": "user", "content": "My name is Ada."},
         {"role": "assistant", "content": "Nice to meet you, Ada."},
         {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]
SYSTEM = [{"type": "text", "text": "You are a helpful assistant. Answer briefly."}]
# This client no longer offers temperature as an argument; the API still takes it.
GREEDY = {"temperature": 0}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
async def host(live: tuple[Host, EngineBackend], client: httpx.AsyncClient
               ) -> AsyncIterator[Host]:
    for name, template in ((TOOL_MODEL, QWEN25), (THINK_MODEL, THINK_TEMPLATE)):
        assert (await create(client, name, template)).json()["status"] == "success"
    yield live[0]
    for name in (TOOL_MODEL, THINK_MODEL):
        await client.request("DELETE", "/api/delete", json={"model": name})


def api(host: Host) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=host.url, api_key="any-key")


async def test_messages_create_with_a_system_prompt_and_turns_and_count_tokens_agree(
        host: Host) -> None:
    c = api(host)
    body: dict[str, Any] = {"model": MODEL, "system": SYSTEM, "messages": TURNS}
    reply = await c.messages.create(**body, max_tokens=12, extra_body=GREEDY)
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    (block,) = reply.content
    assert block.type == "text" and block.text.strip()
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert 0 < reply.usage.output_tokens <= 12
    counted = await c.messages.count_tokens(**body)
    cached = reply.usage.cache_read_input_tokens or 0      # read from the prompt cache
    assert counted.input_tokens == reply.usage.input_tokens + cached > 20
    plain = await c.messages.count_tokens(model=MODEL, messages=TURNS)
    assert plain.input_tokens < counted.input_tokens          # the system prompt counts


async def test_stop_sequences_end_the_answer_and_are_named(host: Host) -> None:
    reply = await api(host).messages.create(
        model=MODEL, max_tokens=40, extra_body=GREEDY, stop_sequences=["e"],
        messages=[{"role": "user", "content": "Write a sentence about the sea."}])
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == "e"
    assert "e" not in reply.content[0].text if reply.content else True


async def test_a_tool_round_trip_with_tool_use_and_tool_result(host: Host) -> None:
    c = api(host)
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}):
        reply = await c.messages.create(model=TOOL_MODEL, max_tokens=40, extra_body=GREEDY,
                                        tools=TOOLS, tool_choice=choice, messages=QUESTION)
        assert reply.stop_reason == "tool_use"
        (use,) = [b for b in reply.content if b.type == "tool_use"]
        assert use.name == "get_weather" and use.id.startswith("toolu_")
        assert isinstance(use.input["city"], str) and use.input["city"]
    answer = await c.messages.create(
        model=TOOL_MODEL, max_tokens=16, extra_body=GREEDY, tools=TOOLS, messages=[
            *QUESTION, {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "18 degrees and sunny"}]}])
    assert answer.content[0].type == "text" and answer.content[0].text.strip()
    assert answer.stop_reason in ("end_turn", "max_tokens")


async def test_the_stream_sends_anthropics_events_in_order(host: Host) -> None:
    c = api(host)
    raw = await c.messages.create(model=MODEL, max_tokens=10, extra_body=GREEDY, messages=TURNS,
                                  stream=True)
    kinds = []
    async for event in raw:
        if not (kinds and kinds[-1] == event.type == "content_block_delta"):
            kinds.append(event.type)
        if event.type == "content_block_delta":
            assert event.delta.type == "text_delta"
        if event.type == "message_delta":
            assert event.delta.stop_reason in ("end_turn", "max_tokens")
            assert event.usage.output_tokens > 0 and event.usage.input_tokens > 0
    assert kinds == ["message_start", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]   # (pings unseen)
    async with c.messages.stream(model=TOOL_MODEL, max_tokens=40, extra_body=GREEDY, tools=TOOLS,
                                 tool_choice={"type": "any"}, messages=QUESTION) as stream:
        events = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "input_json" in events and final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input["city"]


SHOTS = [{"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "content": [{"type": "thinking", "thinking": "2+2=4",
                                            "signature": ""}, {"type": "text", "text": "4"}]},
         {"role": "user", "content": "What is 3+3?"},
         {"role": "assistant", "content": [{"type": "thinking", "thinking": "3+3=6",
                                            "signature": ""}, {"type": "text", "text": "6"}]},
         {"role": "user", "content": "What is 4+4?"}]


async def test_thinking_is_held_to_its_budget_and_the_model_still_answers(host: Host) -> None:
    c = api(host)
    free = await c.messages.create(model=THINK_MODEL, max_tokens=40, extra_body=GREEDY,
                                   messages=SHOTS, thinking={"type": "enabled",
                                                             "budget_tokens": 30})
    thought, said = free.content
    assert (thought.type, thought.thinking, said.type, said.text) == \
        ("thinking", "4+4=8", "text", "8")
    held = await c.messages.create(model=THINK_MODEL, max_tokens=40, extra_body=GREEDY,
                                   messages=SHOTS, thinking={"type": "enabled",
                                                             "budget_tokens": 2})
    thought, said = held.content
    assert thought.type == "thinking" and "4+4=8".startswith(thought.thinking)
    assert len(thought.thinking) < len("4+4=8")
    assert said.type == "text" and said.text.strip()
    async with c.messages.stream(model=THINK_MODEL, max_tokens=40, extra_body=GREEDY,
                                 messages=SHOTS,
                                 thinking={"type": "enabled", "budget_tokens": 2}) as stream:
        deltas = [event.delta.type async for event in stream
                  if event.type == "content_block_delta"]
        streamed = await stream.get_final_message()
    assert deltas[0] == "thinking_delta" and deltas[-1] == "text_delta"
    assert [b.model_dump() for b in streamed.content] == [b.model_dump() for b in held.content]


async def test_errors_come_in_anthropics_shape(host: Host, client: httpx.AsyncClient) -> None:
    missing = await client.post("/v1/messages", json={"model": MODEL, "messages": TURNS})
    assert missing.status_code == 400
    assert missing.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Field required"}}
    with pytest.raises(anthropic.NotFoundError) as caught:
        await api(host).messages.create(model="nope:1b", max_tokens=4, messages=TURNS)
    assert caught.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        await api(host).messages.create(model=MODEL, max_tokens=4, messages=TURNS,
                                        extra_body={"container": "x"})
    assert bad.value.body["error"]["message"] == "unsupported field: container"
    after = await api(host).messages.create(model=MODEL, max_tokens=2, messages=TURNS)
    assert after.content
