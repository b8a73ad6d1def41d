"""/v1/responses with the real smollm2:135m over HTTP and the real `openai` client:
responses.create for text, a function tool under tool_choice "required" and its round trip,
text.format json_schema; responses.stream's event order; the fields it refuses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.test_tools_thinking import THINK_MODEL, THINK_TEMPLATE, TOOL_MODEL, create
from tests.prompt.corpus import QWEN25
from trio_llm.config import Host
from trio_llm.server import EngineBackend

TOOLS = [{"type": "function", "name": "get_weather",
          "description": "Get the current weather in a city",
          "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                         "properties": {"city": {"type": "string", "maxLength": 20}}}}]
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                         "country": {"type": "string", "maxLength": 20}},
        "required": ["city", "country"], "additionalProperties": False}
JSON_FORMAT = {"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}}


@pytest.fixture
async def host(live: tuple[Host, EngineBackend], client: httpx.AsyncClient
               ) -> AsyncIterator[Host]:
    """The tools and thinking models over smollm2 in the shared store, removed afterwards."""
    for name, template in ((TOOL_MODEL, QWEN25), (THINK_MODEL, THINK_TEMPLATE)):
        assert (await create(client, name, template)).json()["status"] == "success"
    yield live[0]
    for name in (TOOL_MODEL, THINK_MODEL):
        await client.request("DELETE", "/api/delete", json={"model": name})


def api(host: Host) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{host.url}/v1", api_key="unused")


async def test_responses_create_answers_text_with_instructions_and_usage(host: Host) -> None:
    reply = await api(host).responses.create(
        model=MODEL, instructions="You are a helpful assistant.", input="Say hello.",
        max_output_tokens=8, temperature=0)
    assert reply.object == "response" and reply.id.startswith("resp_")
    (message,) = reply.output
    assert message.type == "message" and message.role == "assistant"
    assert reply.output_text.strip() and message.content[0].type == "output_text"
    assert 0 < reply.usage.output_tokens <= 8 and reply.usage.input_tokens > 10
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    if reply.usage.output_tokens == 8:
        assert reply.status == "incomplete"
        assert reply.incomplete_details.reason == "max_output_tokens"
    again = await api(host).responses.create(
        model=MODEL, instructions="You are a helpful assistant.", input="Say hello.",
        max_output_tokens=8, temperature=0)
    assert again.output_text == reply.output_text         # greedy: the same answer


async def test_include_logprobs_gives_each_output_tokens_logprob_and_its_rivals(
        host: Host) -> None:
    reply = await api(host).responses.create(
        model=MODEL, input="Say hello.", max_output_tokens=6, temperature=0, top_logprobs=2,
        include=["message.output_text.logprobs"])
    part = reply.output[0].content[0]
    assert len(part.logprobs) == reply.usage.output_tokens
    assert "".join(entry.token for entry in part.logprobs) == part.text
    for entry in part.logprobs:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob


async def test_a_function_tool_under_tool_choice_required_is_called_and_its_output_answered(
        host: Host) -> None:
    c = api(host)
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = await c.responses.create(model=TOOL_MODEL, input=question, tools=TOOLS,
                                     tool_choice="required", temperature=0,
                                     max_output_tokens=40)
    (call,) = reply.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id and call.id.startswith("fc_") and reply.status == "completed"
    city = json.loads(call.arguments)["city"]
    assert isinstance(city, str) and city
    named = await c.responses.create(model=TOOL_MODEL, input=question, tools=TOOLS,
                                     tool_choice={"type": "function", "name": "get_weather"},
                                     temperature=0, max_output_tokens=40)
    assert json.loads(named.output[0].arguments) == {"city": city}
    answer = await c.responses.create(
        model=TOOL_MODEL, tools=TOOLS, temperature=0, max_output_tokens=16,
        input=[*question, {"type": "function_call", "call_id": call.call_id,
                           "name": "get_weather", "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id,
                "output": "18 degrees and sunny"}])
    assert answer.output_text.strip()
    assert all(item.type == "message" for item in answer.output)


async def test_text_format_json_schema_holds_the_answer_to_the_schema(host: Host) -> None:
    reply = await api(host).responses.create(
        model=MODEL, input="Name a city and its country as JSON.", text=JSON_FORMAT,
        temperature=0, max_output_tokens=60)
    assert reply.status == "completed"
    jsonschema.validate(json.loads(reply.output_text), CITY)
    assert reply.text.format.type == "json_schema"


def event_kinds(events: list[Any]) -> list[str]:
    """The event types in order, a run of deltas written once."""
    kinds: list[str] = []
    for event in events:
        if not (kinds and kinds[-1] == event.type and event.type.endswith(".delta")):
            kinds.append(event.type)
    return kinds


async def test_responses_stream_sends_the_events_in_order_and_the_final_response(
        host: Host) -> None:
    c = api(host)
    async with c.responses.stream(model=MODEL, input="Name a city and its country as JSON.",
                                  text=JSON_FORMAT, temperature=0,
                                  max_output_tokens=60) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert event_kinds(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == text and json.loads(text)["city"]
    assert final.usage.output_tokens > 0 and final.id == events[0].response.id
    async with c.responses.stream(model=TOOL_MODEL, tools=TOOLS, tool_choice="required",
                                  input="What is the weather in Paris?", temperature=0,
                                  max_output_tokens=40) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert event_kinds(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    (call,) = final.output
    assert call.type == "function_call" and json.loads(call.arguments)["city"]


async def test_reasoning_effort_thinks_and_the_reasoning_comes_first(host: Host) -> None:
    shots = [{"role": "user", "content": "What is 2+2?"},
             {"type": "reasoning", "id": "rs_1", "summary": [],
              "content": [{"type": "reasoning_text", "text": "2+2=4"}]},
             {"role": "assistant", "content": "4"},
             {"role": "user", "content": "What is 3+3?"},
             {"type": "reasoning", "id": "rs_2", "summary": [],
              "content": [{"type": "reasoning_text", "text": "3+3=6"}]},
             {"role": "assistant", "content": "6"},
             {"role": "user", "content": "What is 4+4?"}]
    reply = await api(host).responses.create(model=THINK_MODEL, input=shots, temperature=0,
                                             max_output_tokens=12,
                                             reasoning={"effort": "high", "summary": "auto"})
    reasoning, message = reply.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "4+4=8"
    assert reasoning.summary[0].text == "4+4=8"
    assert message.type == "message" and reply.output_text == "8"
    async with api(host).responses.stream(model=THINK_MODEL, input=shots, temperature=0,
                                          max_output_tokens=12,
                                          reasoning={"effort": "high"}) as stream:
        kinds = event_kinds([event async for event in stream])
        final = await stream.get_final_response()
    assert kinds[2:5] == ["response.output_item.added", "response.reasoning_text.delta",
                          "response.reasoning_text.done"]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "4+4=8" and final.output_text == "8"


@pytest.mark.parametrize(("body", "needle"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id is not supported: this server "
                                         "keeps no responses"),
    ({"store": True}, "store is not supported"),
    ({"include": ["reasoning.encrypted_content"]}, "unsupported include: reasoning.encrypted"),
    ({"top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
    ({"background": True}, "unsupported field: background"),
    ({"tools": [{"type": "web_search"}]}, "unsupported tool type: web_search"),
    ({"reasoning": {"effort": "low", "generate_summary": "auto"}},
     "unsupported field: reasoning.generate_summary"),
])
async def test_fields_it_cannot_honour_are_a_400_naming_them(
        client: httpx.AsyncClient, body: dict[str, Any], needle: str) -> None:
    reply = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", **body})
    assert reply.status_code == 400
    assert needle in reply.json()["error"]["message"]
