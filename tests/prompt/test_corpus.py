"""Real-world templates rendered for one conversation (system, user, an assistant tool call, its
result, user) to the exact prompt Go's text/template semantics give; the expected strings are
worked out by hand from the templates, not produced by the interpreter."""

from __future__ import annotations

import pytest

from tests.prompt import corpus
from trio_llm.prompt import chat, load

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "The city"}}}}}]
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "thinking": "Paris needs a lookup.",
     "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "18C, sunny", "tool_name": "get_weather"},
    {"role": "user", "content": "And tomorrow?"},
]

# How Go marshals the tool (struct fields in order, omitempty) and the call's arguments.
FUNCTION = ('{"name":"get_weather","description":"Get the weather in a city","parameters":'
            '{"type":"object","required":["city"],"properties":{"city":{"type":"string",'
            '"description":"The city"}}}}')
TOOL = '{"type":"function","function":' + FUNCTION + "}"
ARGS = '{"city":"Paris"}'

CHATML = ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWeather in Paris?"
          "<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n<|im_start|>tool\n18C, sunny<|im_end|>\n"
          "<|im_start|>user\nAnd tomorrow?<|im_end|>\n<|im_start|>assistant\n")

LLAMA_ASK = ("Given the following functions, please respond with a JSON for a function call with "
             "its proper arguments that best answers the given prompt.\n\nRespond in the format "
             '{"name": function name, "parameters": dictionary of argument name and its value}. '
             "Do not use variables.\n\n")
QWEN_TOOLS = ("\n\n# Tools\n\nYou may call one or more functions to assist with the user query."
              "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
              "<tools>\n"
              '{"type": "function", "function": ' + FUNCTION + "}\n</tools>\n\nFor each function "
              "call, return a json object with function name and arguments within "
              "<tool_call></tool_call> XML tags:\n<tool_call>\n"
              '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
QWEN_TURNS = ("<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
              '<tool_call>\n{"name": "get_weather", "arguments": ' + ARGS + "}\n</tool_call>"
              "<|im_end|>\n<|im_start|>user\n<tool_response>\n18C, sunny\n</tool_response>"
              "<|im_end|>\n<|im_start|>user\nAnd tomorrow?<|im_end|>\n<|im_start|>assistant\n")
COHERE_ASK = (
    "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Write 'Action:' followed by a json-formatted list of "
    "actions that you want to perform in order to produce a good response to the user's last "
    "input. You can use any of the supplied tools any number of times, but you should aim to "
    "execute the minimum number of necessary actions for the input. You should use the "
    "`directly-answer` tool if calling the other tools is unnecessary. The list of actions you "
    "want to call should be formatted as a list of json objects, for example:\n```json\n[\n"
    "    {\n        \"tool_name\": title of the tool in the specification,\n        "
    "\"parameters\": a dict of parameters to input into the tool as they are defined in the "
    "specs, or {} if it takes no parameters\n    }\n]```")

EXPECTED = {
    "CHATML": CHATML,
    "SMOLLM2": CHATML,      # the catalog's template: the same turns, from another shape
    "LLAMA31": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.\n\nYou are a helpful "
        "assistant with tool calling capabilities. When you receive a tool call response, use "
        "the output to format an answer to the original use question.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>"
        '<|start_header_id|>assistant<|end_header_id|>{"name": "get_weather", "parameters": '
        + ARGS + "}<|start_header_id|>ipython<|end_header_id|>\n\n18C, sunny<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n" + LLAMA_ASK + "[" + TOOL + "]"
        "\n\nAnd tomorrow?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
    "LLAMA32": (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n"
        "You are terse.When you receive a tool call response, use the output to format an answer"
        " to the orginal user question.\n\nYou are a helpful assistant with tool calling "
        "capabilities.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        '{"name": "get_weather", "parameters": ' + ARGS + "}<|eot_id|>"
        "<|start_header_id|>ipython<|end_header_id|>\n\n18C, sunny<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n" + LLAMA_ASK + TOOL + "\n\nAnd tomorrow?"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
    "LLAMA2": ("[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nWeather in Paris? [/INST] </s><s>"
               "[INST] <<SYS>><</SYS>>\n\nAnd tomorrow? [/INST]"),
    "MISTRAL_V03": (
        '[INST] Weather in Paris?[/INST][TOOL_CALLS] [{"name": "get_weather", "arguments": '
        + ARGS + '}]</s>[TOOL_RESULTS] {"content": 18C, sunny} [/TOOL_RESULTS]'
        "[AVAILABLE_TOOLS] [" + TOOL + "][/AVAILABLE_TOOLS][INST] You are terse.\n\n"
        "And tomorrow?[/INST]"),
    # A legacy template (no .Messages): one execution per turn; the tool call and its result
    # are not turns, so the first question is replaced, as Ollama's rules have it.
    "GEMMA2": ("<start_of_turn>user\nYou are terse. And tomorrow?<end_of_turn>\n"
               "<start_of_turn>model\n"),
    "GEMMA3": ("<start_of_turn>user\nYou are terse.<end_of_turn>\n<start_of_turn>user\n"
               "Weather in Paris?<end_of_turn>\n<start_of_turn>model\n<end_of_turn>\n"
               "<start_of_turn>user\nAnd tomorrow?<end_of_turn>\n<start_of_turn>model\n"),
    "PHI3": ("<|system|>\nYou are terse.<|end|>\n<|user|>\nWeather in Paris?<|end|>\n"
             "<|assistant|>\n<|end|>\n<|tool|>\n18C, sunny<|end|>\n<|user|>\nAnd tomorrow?"
             "<|end|>\n<|assistant|>\n"),
    "PHI4_MINI": (   # the library template misses the call's closing brace; so does the prompt
        "<|system|>You are terse.<|tool|>[" + TOOL + "]<|/tool|><|end|><|user|>Weather in Paris?"
        '<|end|><|assistant|><|tool_call|>[{"name":"get_weather","arguments":' + ARGS +
        "]<|/tool_call|><|end|><|tool|>18C, sunny<|end|><|user|>And tomorrow?<|end|>"
        "<|assistant|>"),
    "QWEN25": "<|im_start|>system\nYou are terse." + QWEN_TOOLS + QWEN_TURNS,
    "QWEN3": "<|im_start|>system\n\nYou are terse." + QWEN_TOOLS + QWEN_TURNS,
    "DEEPSEEK_R1": ("You are terse.<｜User｜>Weather in Paris?<｜Assistant｜><｜end▁of▁sentence｜>"
                    "<｜User｜>And tomorrow?<｜Assistant｜>"),
    "COMMAND_R": (
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|># Safety Preamble\nThe instructions in this "
        "section override those in the task description and style guide sections. Don't answer "
        "questions that are harmful or immoral.\n\n# System Preamble\n## Basic Rules\nYou are a "
        "powerful conversational AI trained by Cohere to help people. You are augmented by a "
        "number of tools, and your job is to use and consume the output of these tools to best "
        "help the user. You will see a conversation history between yourself and a user, ending "
        "with an utterance from the user. You will then see a specific instruction instructing "
        "you what kind of response to generate. When you answer the user's requests, you cite "
        "your sources in your answers, according to those instructions.\n\n# User Preamble\n"
        "You are terse.\n\n## Available Tools\nHere is a list of tools that you have available "
        "to you:\n\n```python\ndef get_weather(city: string, ) -> List[Dict]:\n    '''Get the "
        "weather in a city\n\n    Args:\n        city (string): The city\n    '''\n    pass\n```"
        "<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Weather in Paris?" + COHERE_ASK +
        "<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>\nAction: ```json\n[\n    {\n        "
        '"tool_name": "get_weather",\n        "parameters": ' + ARGS + "\n    }\n]```"
        "<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>\nconsole_output: 18C, sunny\n"
        "</results><|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>And tomorrow?" + COHERE_ASK +
        "<|END_OF_TURN_TOKEN|>"
        "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"),
    "GRANITE": ("System:\nYou are terse.\n\nQuestion:\nWeather in Paris?\n\nAnswer:\n\n\n\n"
                "18C, sunny\n\nQuestion:\nAnd tomorrow?\n\nAnswer:"),
    "GRANITE32": (
        "<|start_of_role|>system<|end_of_role|>You are terse.<|end_of_text|>\n"
        "<|start_of_role|>tools<|end_of_role|>[\n" + TOOL + "\n]\n"
        "<|start_of_role|>user<|end_of_role|>Weather in Paris?<|end_of_text|>\n"
        '<|start_of_role|>assistant<|end_of_role|><|tool_call|>{"name": "get_weather", '
        '"arguments": ' + ARGS + "}<|end_of_text|>\n"
        "<|start_of_role|>tool_response<|end_of_role|>18C, sunny<|end_of_text|>\n"
        "<|start_of_role|>user<|end_of_role|>And tomorrow?<|end_of_text|>\n"
        "<|start_of_role|>assistant<|end_of_role|>"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_library_template_renders_the_conversation_exactly(name: str) -> None:
    template = load(getattr(corpus, name))
    assert chat(template, CONVERSATION, tools=TOOLS, think=True) == EXPECTED[name]


def test_the_corpus_covers_at_least_fifteen_shapes() -> None:
    assert len(EXPECTED) >= 15


@pytest.mark.parametrize(("name", "capabilities"), [
    ("QWEN25", {"tools"}), ("QWEN3", {"tools", "thinking"}), ("LLAMA31", {"tools"}),
    ("MISTRAL_V03", {"tools"}), ("COMMAND_R", {"tools"}), ("GEMMA3", set()), ("SMOLLM2", set()),
])
def test_capabilities_follow_from_the_template(name: str, capabilities: set[str]) -> None:
    assert load(getattr(corpus, name)).capabilities == capabilities


@pytest.mark.parametrize(("name", "opening", "closing"), [
    ("QWEN25", ("<tool_call>",), "</tool_call>"), ("MISTRAL_V03", ("[TOOL_CALLS]",), ""),
    ("PHI4_MINI", ("<|tool_call|>",), "<|/tool_call|>"), ("LLAMA31", (), ""),
    ("LLAMA32", (), ""), ("COMMAND_R", ("Action: ```json",), "```"),
    ("GRANITE32", ("<|tool_call|>",), ""),
])
def test_tool_call_markers_are_read_from_the_template(name: str, opening: tuple[str, ...],
                                                      closing: str) -> None:
    tags = load(getattr(corpus, name)).tool_tags
    assert (tags.opening, tags.closing) == (opening, closing)


def test_qwen3_writes_the_thinking_of_an_assistant_turn_after_the_last_question() -> None:
    conversation = [{"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello.", "thinking": "Greet back."}]
    template = load(corpus.QWEN3)
    assert template.thinking_tags == ("<think>", "</think>")
    assert chat(template, conversation, think=True) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>Greet back.</think>\n"
        "Hello.")
    assert chat(template, conversation) == (   # think not set: the thinking is left out
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.")


def test_a_legacy_template_renders_each_turn_and_stops_at_the_last_response() -> None:
    conversation = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    assert chat(load(corpus.GEMMA2), conversation) == (
        "<start_of_turn>user\nS Q1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
        "<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\n")
