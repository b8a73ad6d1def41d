"""Tools, thinking and templates with the real smollm2:135m: a Qwen-2.5-style tools template
created over it, calls through /api/chat, /v1, the ollama and openai clients and LangChain's
bind_tools, a thinking template, create-time template errors, the prompt /api/show describes.

SmolLM2-135M does not decide to call tools by itself; the conversations end with an assistant
prefill that opens the call (`<tool_call>{"name": "get_weather", "arguments": {"city": "`),
and the model writes the arguments and closes the call; the API reads the call out of that.
`tool_choice: "required"` (on /v1, and as an extension on /api/chat) forces a call from a plain
question: the reply is generated under a grammar of the tools' JSON schemas.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import trio
from langchain_core.messages import AIMessage, HumanMessage
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from packaging.version import Version

from tests.e2e.conftest import MODEL, cli
from tests.prompt.corpus import QWEN25
from trio_llm.config import Host
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.server import EngineBackend

TOOL_MODEL = "smol-tools:test"
THINK_MODEL = "smol-think:test"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "The city"}}}}}]
PREFILL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
ASK = [{"role": "user", "content": "What is the weather in Paris?"},
       {"role": "assistant", "content": PREFILL}]
GREEDY = {"temperature": 0, "num_predict": 10}
# A template with a thinking section: history thinking in <think> tags, and the generation
# prompt opens one when the request thinks.
THINK_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>
{{ end }}{{ .Content }}{{ if not (and $last (eq .Role "assistant")) }}<|im_end|>
{{ end }}{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ if $.Think }}<think>{{ end }}{{ end }}{{ end }}"""
SHOTS = [{"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "thinking": "2+2=4", "content": "4"},
         {"role": "user", "content": "What is 3+3?"},
         {"role": "assistant", "thinking": "3+3=6", "content": "6"},
         {"role": "user", "content": "What is 4+4?"}]


async def create(client: httpx.AsyncClient, name: str, template: str) -> httpx.Response:
    return await client.post("/api/create", json={"model": name, "from": MODEL,
                                                  "template": template, "stream": False})


@pytest.fixture
async def models(live: tuple[Host, EngineBackend], client: httpx.AsyncClient
                 ) -> AsyncIterator[Host]:
    """The tools and the thinking model in the shared store, removed afterwards."""
    for name, template in ((TOOL_MODEL, QWEN25), (THINK_MODEL, THINK_TEMPLATE)):
        reply = await create(client, name, template)
        assert reply.status_code == 200 and reply.json()["status"] == "success"
    yield live[0]
    for name in (TOOL_MODEL, THINK_MODEL):
        await client.request("DELETE", "/api/delete", json={"model": name})


def the_call(calls: list[Any]) -> dict[str, Any]:
    (call,) = calls
    assert call["function"]["name"] == "get_weather"
    return call["function"]["arguments"]


async def test_chat_returns_the_parsed_call_streamed_and_not(models: Host,
                                                            client: httpx.AsyncClient) -> None:
    body = {"model": TOOL_MODEL, "messages": ASK, "tools": TOOLS, "options": GREEDY}
    whole = (await client.post("/api/chat", json={**body, "stream": False})).json()
    assert the_call(whole["message"]["tool_calls"]) == {"city": "Paris"}
    assert "tool_call" not in whole["message"]["content"]
    lines = [json.loads(x) for x in (await client.post("/api/chat", json=body)).text.splitlines()]
    carrying = [x for x in lines if x["message"].get("tool_calls")]
    assert len(carrying) == 1 and the_call(carrying[0]["message"]["tool_calls"]) == \
        {"city": "Paris"}
    assert "tool_call" not in "".join(x["message"]["content"] for x in lines)


async def test_v1_returns_the_call_in_openais_shape_streamed_and_not(models: Host) -> None:
    c = openai.AsyncOpenAI(base_url=f"{models.url}/v1", api_key="unused")
    args = {"model": TOOL_MODEL, "messages": ASK, "tools": TOOLS, "tool_choice": "auto",
            "temperature": 0, "max_tokens": 10}
    reply = await c.chat.completions.create(**args)
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"} and call.id
    stream = await c.chat.completions.create(**args, stream=True)
    deltas = [chunk.choices[0] async for chunk in stream if chunk.choices]
    calls = [tc for d in deltas for tc in d.delta.tool_calls or []]
    assert [json.loads(tc.function.arguments) for tc in calls] == [{"city": "Paris"}]
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[0].delta.role == "assistant" and all(d.delta.role is None for d in deltas[1:])


async def test_the_ollama_client_gets_the_call_and_an_answer_to_its_result(models: Host) -> None:
    c = ollama.AsyncClient(host=models.url)
    reply = await c.chat(model=TOOL_MODEL, messages=ASK, tools=TOOLS, options=GREEDY)
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    answer = await c.chat(model=TOOL_MODEL, tools=TOOLS, options={**GREEDY, "num_predict": 16},
                          messages=[ASK[0], {"role": "assistant", "content": "",
                                             "tool_calls": [call.model_dump()]},
                                    {"role": "tool", "tool_name": "get_weather",
                                     "content": "18 degrees and sunny"}])
    assert answer.message.content.strip() and answer.done


async def test_langchain_bind_tools_finds_the_call_over_ollama_and_openai(models: Host) -> None:
    conversation = [HumanMessage(ASK[0]["content"]), AIMessage(PREFILL)]
    over_ollama = ChatOllama(model=TOOL_MODEL, base_url=models.url, temperature=0,
                             num_predict=10).bind_tools(TOOLS)
    over_openai = ChatOpenAI(model=TOOL_MODEL, base_url=f"{models.url}/v1", api_key="unused",
                             temperature=0, max_tokens=10).bind_tools(TOOLS)
    for model in (over_ollama, over_openai):      # LangChain's async side is asyncio's: a thread
        message = await trio.to_thread.run_sync(model.invoke, conversation)
        (call,) = message.tool_calls
        assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}


async def test_tool_choice_required_makes_even_a_small_model_call_from_a_plain_question(
        models: Host, client: httpx.AsyncClient) -> None:
    """No prefill: the question alone, and tool_choice "required" generates the call under the
    JSON schema of the tools, through /api/chat (an extension field there) and /v1, streamed
    and not, with the openai client and LangChain's bind_tools; the result fed back is
    answered."""
    question = ASK[:1]
    body = {"model": TOOL_MODEL, "messages": question, "tools": TOOLS, "options": GREEDY,
            "tool_choice": "required"}
    body["options"] = {**GREEDY, "num_predict": 40}
    whole = (await client.post("/api/chat", json={**body, "stream": False})).json()
    city = the_call(whole["message"]["tool_calls"])["city"]
    assert isinstance(city, str) and city and whole["done_reason"] == "stop"
    lines = [json.loads(x) for x in (await client.post("/api/chat", json=body)).text.splitlines()]
    carrying = [x for x in lines if x["message"].get("tool_calls")]
    assert len(carrying) == 1 and the_call(carrying[0]["message"]["tool_calls"])["city"] == city
    c = openai.AsyncOpenAI(base_url=f"{models.url}/v1", api_key="unused")
    args = {"model": TOOL_MODEL, "messages": question, "tools": TOOLS,
            "tool_choice": "required", "temperature": 0, "max_tokens": 40}
    reply = await c.chat.completions.create(**args)
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": city}
    stream = await c.chat.completions.create(**args, stream=True)
    calls = [tc async for chunk in stream if chunk.choices
             for tc in chunk.choices[0].delta.tool_calls or []]
    assert [json.loads(tc.function.arguments) for tc in calls] == [{"city": city}]
    named = await c.chat.completions.create(**{**args, "tool_choice": {
        "type": "function", "function": {"name": "get_weather"}}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_weather"
    over_openai = ChatOpenAI(model=TOOL_MODEL, base_url=f"{models.url}/v1", api_key="unused",
                             temperature=0, max_tokens=40).bind_tools(TOOLS,
                                                                      tool_choice="required")
    message = await trio.to_thread.run_sync(over_openai.invoke, [HumanMessage(ASK[0]["content"])])
    (lc_call,) = message.tool_calls
    assert lc_call["name"] == "get_weather" and lc_call["args"] == {"city": city}
    answer = await c.chat.completions.create(
        model=TOOL_MODEL, tools=TOOLS, temperature=0, max_tokens=16, messages=[
            *question, {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function", "function": {
                    "name": "get_weather", "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}])
    assert answer.choices[0].message.content.strip()


async def test_thinking_and_answer_come_apart_streamed_and_not(models: Host,
                                                              client: httpx.AsyncClient) -> None:
    body = {"model": THINK_MODEL, "messages": SHOTS, "think": True,
            "options": {"temperature": 0, "num_predict": 12}}
    whole = (await client.post("/api/chat", json={**body, "stream": False})).json()
    assert whole["message"]["thinking"] == "4+4=8" and whole["message"]["content"] == "8"
    lines = [json.loads(x) for x in (await client.post("/api/chat", json=body)).text.splitlines()]
    assert "".join(x["message"].get("thinking", "") for x in lines) == "4+4=8"
    assert "".join(x["message"]["content"] for x in lines) == "8"
    c = openai.AsyncOpenAI(base_url=f"{models.url}/v1", api_key="unused")
    v1_shots = [{"role": m["role"], "content": m["content"], "reasoning": m.get("thinking")}
                for m in SHOTS]                    # /v1 names a turn's thinking `reasoning`
    reply = await c.chat.completions.create(model=THINK_MODEL, messages=v1_shots, temperature=0,
                                            max_tokens=12, reasoning_effort="high")
    assert reply.choices[0].message.content == "8"
    assert reply.choices[0].message.model_extra["reasoning"] == "4+4=8"


async def test_capabilities_follow_the_template(models: Host, client: httpx.AsyncClient) -> None:
    async def show(name: str) -> list[str]:
        return (await client.post("/api/show", json={"model": name})).json()["capabilities"]

    assert await show(TOOL_MODEL) == ["completion", "tools"]
    assert await show(THINK_MODEL) == ["completion", "thinking"]
    assert await show(MODEL) == ["completion"]
    tags = {m["name"]: m["capabilities"] for m in (await client.get("/api/tags")).json()["models"]}
    assert tags[TOOL_MODEL] == ["completion", "tools"] and tags[MODEL] == ["completion"]
    template = (await client.post("/api/show", json={"model": TOOL_MODEL})).json()["template"]
    assert template == QWEN25                      # reported as stored


async def test_think_is_checked_against_the_model(client: httpx.AsyncClient) -> None:
    ask = {"model": MODEL, "stream": False, "options": {"num_predict": 2},
           "messages": [{"role": "user", "content": "Hi"}]}
    assert (await client.post("/api/chat", json={**ask, "think": False})).status_code == 200
    refused = await client.post("/api/chat", json={**ask, "think": True})
    assert refused.status_code == 400
    assert refused.json() == {"error": f'"{MODEL}" does not support thinking'}


async def test_the_prompt_is_the_template_layers_with_no_injected_system_prompt(
        client: httpx.AsyncClient, smollm2_path: Path) -> None:
    """smollm2's template layer renders (not the GGUF's Jinja, which adds 'You are a helpful
    AI assistant named SmolLM...' when there is no system message)."""
    with read_gguf(smollm2_path) as gguf:
        tokenizer = Tokenizer.from_metadata(gguf.metadata)
    reply = (await client.post("/api/chat", json={
        "model": MODEL, "stream": False, "options": {"num_predict": 1},
        "messages": [{"role": "user", "content": "Hi"}]})).json()
    expected = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert reply["prompt_eval_count"] == len(tokenizer.encode(expected))


async def test_a_reply_cut_inside_a_character_ends_on_the_last_whole_one(
        client: httpx.AsyncClient) -> None:
    """Greedy, the model's second token here is the first half of 位's UTF-8 bytes."""
    reply = (await client.post("/api/generate", json={
        "model": MODEL, "prompt": "你好，世界！我是", "raw": True, "stream": False,
        "options": {"temperature": 0, "num_predict": 2}})).json()
    assert reply["done_reason"] == "length"
    assert reply["response"] == "一"


async def test_malformed_templates_are_refused_at_create_naming_line_and_column(
        live: tuple[Host, EngineBackend], client: httpx.AsyncClient, tmp_path: Path) -> None:
    reply = await create(client, "broken:tmpl", "{{ if .System }}\n{{ .System }")
    assert reply.status_code == 400
    assert reply.json()["error"] == ("template error: line 2, column 12: unrecognized character "
                                     "in action: '}'")
    (tmp_path / "Modelfile").write_text(
        f'FROM {MODEL}\nTEMPLATE """{{{{ range .Messages }}}}\n  {{{{ .Content | 3 }}}}"""\n')
    code, out = await cli(live[0], "create", "broken:tmpl", cwd=tmp_path)
    assert code == 1
    assert "line 2, column 17: non executable command in pipeline stage 2" in out
    tags = [m["name"] for m in (await client.get("/api/tags")).json()["models"]]
    assert "broken:tmpl" not in tags


async def test_version_satisfies_clients_that_require_ollama_0_6_4(
        client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/version")).json()
    assert Version(body["version"]) >= Version("0.6.4")
    assert "trio_llm_version" in body
