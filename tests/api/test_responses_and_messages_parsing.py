"""How the Responses and Anthropic Messages bodies become our chat messages: the turns, tool
calls and results, thinking, and the 400s for what cannot be honoured."""

from __future__ import annotations

import pytest

from trio_llm.api import anthropic, responses
from trio_llm.errors import BadRequest


def test_a_responses_message_then_its_function_calls_are_one_assistant_turn() -> None:
    messages = responses.input_messages([
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "two calls"}],
         "summary": [{"type": "summary_text", "text": "two calls"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather",
         "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "c2", "output": "sunny"},
    ])
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    turn = messages[1]
    assert turn.content == "Checking." and turn.thinking == "two calls"
    assert [c["function"]["arguments"] for c in turn.tool_calls] == [{"city": "Paris"},
                                                                     {"city": "Rome"}]
    assert messages[2].tool_name == "get_weather" and messages[2].tool_call_id == "c2"


@pytest.mark.parametrize(("items", "needle"), [
    ([{"type": "web_search_call"}], "unsupported input item type: web_search_call"),
    ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
     "unsupported content part type: input_file"),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}],
     "function_call.arguments is not valid JSON"),
])
def test_responses_input_it_cannot_honour_is_refused_naming_it(items: list, needle: str
                                                               ) -> None:
    with pytest.raises(BadRequest, match=needle):
        responses.input_messages(items)


def test_anthropic_tool_results_come_before_the_user_text_and_name_their_tool() -> None:
    messages = anthropic.messages_of([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "call it", "signature": ""},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "sunny"}]},
            {"type": "text", "text": "And tomorrow?"}]},
    ])
    assert [m.role for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[1].thinking == "call it"
    assert messages[1].tool_calls[0]["function"] == {"name": "get_weather",
                                                     "arguments": {"city": "Paris"}}
    assert (messages[2].content, messages[2].tool_name) == ("sunny", "get_weather")
    assert messages[3].content == "And tomorrow?"


@pytest.mark.parametrize(("body", "needle"), [
    ({"max_tokens": 8}, "model: Field required"),
    ({"model": "m"}, "max_tokens: Field required"),
    ({"model": "m", "max_tokens": 8, "thinking": {"type": "enabled", "budget_tokens": 8}},
     "must be less than max_tokens"),
    ({"model": "m", "max_tokens": 8, "tools": [{"type": "web_search_20250305",
                                                "name": "web_search"}]},
     "unsupported tool type: web_search_20250305"),
    ({"model": "m", "max_tokens": 8, "tool_choice": {"type": "auto", "x": 1}},
     "unsupported field: tool_choice.x"),
    ({"model": "m", "max_tokens": 8, "service_tier": "auto"}, "unsupported field: service_tier"),
])
def test_anthropic_bodies_it_cannot_honour_are_refused_naming_why(body: dict, needle: str
                                                                  ) -> None:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    with pytest.raises(BadRequest, match=needle):
        anthropic.parse(body)


def test_count_tokens_takes_a_create_body_without_max_tokens() -> None:
    spec = anthropic.parse({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                            "system": "be brief"}, counting=True)
    assert [m.role for m in spec.chat.messages] == ["system", "user"]
