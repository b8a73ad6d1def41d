"""Reading a streamed reply: thinking apart from the answer, tool calls out of the text."""

from __future__ import annotations

from typing import Any

import pytest

from tests.prompt import corpus
from trio_llm.prompt import OutputParser, ToolTags, load
from trio_llm.prompt.thinking import ThinkingParser
from trio_llm.prompt.tools import ToolCallParser, call_schema

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def run(parser: OutputParser, chunks: list[str]) -> tuple[list[str], list[str], list[Any]]:
    """Feed chunk by chunk; what came out of each (text, thinking, calls) and the flush."""
    texts, thoughts, calls = [], [], []
    for chunk in [*chunks, None]:
        piece = parser.feed(chunk) if chunk is not None else parser.flush()
        texts.append(piece.text)
        thoughts.append(piece.thinking)
        calls.extend(piece.tool_calls)
    return texts, thoughts, calls


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_thinking_and_answer_are_split_however_the_text_arrives(size: int) -> None:
    parser = OutputParser(ThinkingParser("<think>", "</think>"), None)
    texts, thoughts, _ = run(parser, pieces("\n<think>\nLet me see.</think>\n\nIt is 4.", size))
    assert "".join(thoughts) == "Let me see." and "".join(texts) == "It is 4."
    assert not any("<" in t for t in texts + thoughts)     # no tag reaches the client


def test_a_reply_without_the_opening_tag_is_all_answer() -> None:
    parser = OutputParser(ThinkingParser("<think>", "</think>"), None)
    texts, thoughts, _ = run(parser, ["<thi", "s is not> thinking"])
    assert "".join(texts) == "<this is not> thinking" and not "".join(thoughts)


def test_a_prompt_that_ends_with_the_opening_tag_starts_in_thinking() -> None:
    parser = OutputParser(ThinkingParser("<think>", "</think>", prompt="...assistant\n<think>\n"),
                          None)
    texts, thoughts, _ = run(parser, ["Hmm.", "</think>", "Yes."])
    assert (thoughts[0], "".join(texts)) == ("Hmm.", "Yes.")


def test_unfinished_thinking_is_thinking_at_the_end() -> None:
    parser = OutputParser(ThinkingParser("<think>", "</think>"), None)
    assert run(parser, ["<think>still going</thi"])[1][-1] == "</thi"


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_a_qwen_call_becomes_a_call_and_its_markup_leaves_the_content(size: int) -> None:
    parser = OutputParser(None, ToolCallParser(load(corpus.QWEN25).tool_tags, TOOLS))
    reply = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
             "\n</tool_call>")
    texts, _, calls = run(parser, pieces(reply, size))
    assert "".join(texts) == "Let me check.\n"
    (call,) = calls
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert call["id"].startswith("call_") and len(call["id"]) == 13


def test_the_call_is_handed_out_in_the_chunk_that_completes_it() -> None:
    parser = ToolCallParser(ToolTags(("<tool_call>",), "</tool_call>"), TOOLS)
    outs = [parser.feed(x) for x in ['<tool_call>{"name": "get_weather", "argu',
                                     'ments": {"city": "X"}}', "</tool_call>"]]
    assert [len(calls) for _, calls in outs] == [0, 1, 0]
    assert all(text == "" for text, _ in outs)


@pytest.mark.parametrize(("name", "reply", "city"), [
    ("MISTRAL_V03", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Rome"}}]',
     "Rome"),
    ("LLAMA32", '{"name": "get_weather", "parameters": {"city": "Oslo"}}', "Oslo"),
    ("PHI4_MINI", '<|tool_call|>[{"name":"get_weather","arguments":{"city":"Lima"}}]'
                  "<|/tool_call|>", "Lima"),
    ("COMMAND_R", 'Action: ```json\n[\n  {"tool_name": "get_weather", "parameters": '
                  '{"city": "Kyiv"}}\n]```', "Kyiv"),
])
def test_each_templates_call_markup_is_understood(name: str, reply: str, city: str) -> None:
    parser = OutputParser(None, ToolCallParser(load(getattr(corpus, name)).tool_tags, TOOLS))
    texts, _, calls = run(parser, pieces(reply, 5))
    assert [c["function"]["arguments"] for c in calls] == [{"city": city}]
    assert "".join(texts) == ""


def test_arguments_as_a_json_string_and_several_calls_get_increasing_indexes() -> None:
    parser = ToolCallParser(ToolTags(("<tool_call>",), "</tool_call>"), TOOLS)
    text, calls = parser.feed(
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"A\\"}"}</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "B"}}</tool_call> Done.')
    assert [c["function"]["index"] for c in calls] == [0, 1]
    assert [c["function"]["arguments"]["city"] for c in calls] == ["A", "B"]
    assert text + parser.flush() == "Done."


def test_markup_that_is_not_a_call_of_an_offered_tool_stays_text() -> None:
    for reply in ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
                  "<tool_call>not json</tool_call>", '<tool_call>{"name": "get_weather"'):
        parser = ToolCallParser(ToolTags(("<tool_call>",), "</tool_call>"), TOOLS)
        text, calls = parser.feed(reply)
        assert calls == [] and text + parser.flush() == reply


def test_bare_json_counts_only_as_the_whole_reply() -> None:
    parser = ToolCallParser(ToolTags(()), TOOLS)
    reply = 'Use {"name": "get_weather", "arguments": {}} maybe'
    text, calls = parser.feed(reply)
    assert calls == [] and text + parser.flush() == reply


def test_a_prompt_that_ends_inside_a_call_is_continued_by_the_reply() -> None:
    prompt = '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
    parser = ToolCallParser(load(corpus.QWEN25).tool_tags, TOOLS, prompt=prompt)
    outs = [parser.feed(x) for x in ["Par", 'is"}}\n</tool_call>', "\n\nIt is sunny."]]
    assert [c["function"]["arguments"] for _, calls in outs for c in calls] == [{"city": "Paris"}]
    assert "".join(text for text, _ in outs) == "It is sunny."


def test_the_schema_of_required_calls_names_each_tool_and_its_parameters() -> None:
    schema = call_schema(TOOLS)
    assert schema == {"type": "object", "required": ["name", "arguments"], "properties": {
        "name": {"const": "get_weather"}, "arguments": TOOLS[0]["function"]["parameters"]}}
    two = TOOLS + [{"type": "function", "function": {"name": "now"}}]
    assert [c["properties"]["name"]["const"] for c in call_schema(two)["anyOf"]] == \
        ["get_weather", "now"]
    assert call_schema(two, "now")["properties"]["arguments"] == {"type": "object"}
