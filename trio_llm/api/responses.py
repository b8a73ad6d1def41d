"""/v1/responses: OpenAI's Responses API, stateless as Ollama serves it (nothing is stored, so
`previous_response_id` and `store: true` are refused naming why).

The request becomes our ChatRequest (input items as messages, instructions as the system
message, function tools, tool_choice, text.format through the structured-output constraint,
reasoning.effort as think) and takes the one generation path (api/generation.py). The answer is
a `response` object whose output items are a reasoning item, a message and function calls; a
stream sends Responses' typed events (`event:` and `data:` lines, each with its
sequence_number). Every field we accept is honoured; any other is a 400 naming it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quart import Blueprint, Response

from trio_llm.api import generation
from trio_llm.api.backend import Backend, GenerationChunk
from trio_llm.api.errors import status_and_message
from trio_llm.api.metrics import Metrics
from trio_llm.api.openai import reasoning_think
from trio_llm.api.schemas import (
    ChatRequest,
    Fields,
    Message,
    ToolChoice,
    parse_options,
    parse_top_logprobs,
    read_json,
)
from trio_llm.api.streaming import SSE, dumps, json_response, stream_response, streamed
from trio_llm.api.tokenize import check_fields
from trio_llm.errors import BadRequest

FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "text", "reasoning",
    "max_output_tokens", "temperature", "top_p", "stream", "store", "metadata",
    "parallel_tool_calls", "truncation", "previous_response_id", "top_logprobs", "include",
})
SUMMARIES = ("auto", "concise", "detailed")
LOGPROBS = "message.output_text.logprobs"   # the one `include` we can give


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# ----------------------------------------------------------------------------- requests

def _text_of(content: Any, where: str) -> tuple[str, list[str]]:
    """A message's content (a string, or input_text / output_text / input_image parts) as
    text and base64 images."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or an array of content parts")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text") or ""))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url.startswith("data:image/"):
                raise BadRequest("input_image: only base64 data URLs are supported")
            images.append(url.split(",", 1)[-1])
        else:
            raise BadRequest(f"unsupported content part type: {kind}")
    return "".join(texts), images


def _arguments(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if isinstance(text, str) and text.strip() else {}
    except json.JSONDecodeError:
        raise BadRequest("function_call.arguments is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("function_call.arguments must be a JSON object")
    return value


def input_messages(raw: Any) -> list[Message]:
    """`input` (a string, or message / function_call / function_call_output / reasoning
    items) as chat messages; a reasoning item is the thinking of the assistant turn after it."""
    if isinstance(raw, str):
        return [Message(role="user", content=raw)]
    if not isinstance(raw, list):
        raise BadRequest("input must be a string or an array of input items")
    messages: list[Message] = []
    names: dict[str, str] = {}
    thinking = ""
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadRequest(f"input[{index}] must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"input[{index}].role must be user, assistant, system or "
                                 "developer")
            text, images = _text_of(item.get("content"), f"input[{index}]")
            messages.append(Message(role="system" if role == "developer" else role,
                                    content=text, images=tuple(images),
                                    thinking=thinking if role == "assistant" else ""))
            thinking = "" if role == "assistant" else thinking
        elif kind == "function_call":
            call_id, name = str(item.get("call_id") or ""), str(item.get("name") or "")
            names[call_id] = name
            call = {"id": call_id, "function": {"name": name,
                                                "arguments": _arguments(item.get("arguments"))}}
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":   # the same turn goes on
                messages[-1] = Message(role="assistant", content=last.content,
                                       thinking=last.thinking or thinking,
                                       tool_calls=(*last.tool_calls, call))
            else:
                messages.append(Message(role="assistant", thinking=thinking, tool_calls=(call,)))
            thinking = ""
        elif kind == "function_call_output":
            call_id = str(item.get("call_id") or "")
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, "output")[0]
            messages.append(Message(role="tool", content=text, tool_name=names.get(call_id, ""),
                                    tool_call_id=call_id))
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []   # summary: a fallback
            thinking = "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))
        else:
            raise BadRequest(f"unsupported input item type: {kind}")
    return messages


def chat_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """Responses' flat function tools as chat tools ({type, function: {...}})."""
    out = []
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise BadRequest(f"unsupported tool type: {kind} (only function tools)")
        out.append({"type": "function", "function": {
            "name": tool.get("name", ""), "description": tool.get("description") or "",
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}})
    return out


def tool_choice(value: Any) -> ToolChoice:
    if isinstance(value, dict) and value.get("type") == "function":
        return ToolChoice.parse({"type": "function", "function": {"name": value.get("name")}})
    if value is None or value in ("auto", "none", "required"):
        return ToolChoice.parse(value)
    raise BadRequest('invalid tool_choice: must be "none", "auto", "required" or '
                     '{"type": "function", "name": ...}')


def text_format(text: Mapping[str, Any]) -> str | dict[str, Any] | None:
    unknown = sorted(set(text) - {"format"})
    if unknown:
        raise BadRequest(f"unsupported field: text.{unknown[0]}")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("text.format.schema must be a JSON schema object")
        return schema
    raise BadRequest(f"invalid text.format type: {kind!r}")


@dataclass
class Spec:
    """What the request asked for, echoed in the response object."""

    body: dict[str, Any]
    chat: ChatRequest
    summary: str | None = None
    parallel: bool = True
    echo: dict[str, Any] = field(default_factory=dict)


def parse(body: Any) -> Spec:
    f = Fields(body, "ResponsesRequest")
    check_fields(f.body, FIELDS)
    if f.get("previous_response_id") is not None:
        raise BadRequest("previous_response_id is not supported: this server keeps no "
                         "responses (stateless); send the whole conversation in input")
    if f.get("store"):
        raise BadRequest("store is not supported: this server keeps no responses (stateless)")
    include = f.strings("include")
    unknown = sorted(set(include) - {LOGPROBS})
    if unknown:
        raise BadRequest(f"unsupported include: {unknown[0]} (only {LOGPROBS})")
    model = f.string("model")
    if not model:
        raise BadRequest("model is required")
    messages = input_messages(f.get("input"))
    instructions = f.string("instructions")
    if instructions:
        messages.insert(0, Message(role="system", content=instructions))
    if not messages:
        raise BadRequest("input is required")
    reasoning = f.obj("reasoning")
    unknown = sorted(set(reasoning) - {"effort", "summary"})
    if unknown:
        raise BadRequest(f"unsupported field: reasoning.{unknown[0]}")
    summary = reasoning.get("summary")
    if summary is not None and summary not in SUMMARIES:
        raise BadRequest(f"invalid reasoning.summary: must be one of {', '.join(SUMMARIES)}")
    truncation = f.string("truncation") or "disabled"
    if truncation not in ("auto", "disabled"):
        raise BadRequest('invalid truncation: must be "auto" or "disabled"')
    top_logprobs = parse_top_logprobs(f.integer("top_logprobs"))
    temperature, top_p = f.number("temperature"), f.number("top_p")
    temperature = 1.0 if temperature is None else temperature     # OpenAI's defaults, as
    top_p = 1.0 if top_p is None else top_p                         # /v1/chat/completions
    options = parse_options({"temperature": temperature, "top_p": top_p,
                             "num_predict": f.integer("max_output_tokens")})
    chat = ChatRequest(model=model, messages=tuple(messages),
                       tools=tuple(chat_tools(f.array("tools", "[]Tool"))),
                       format=text_format(f.obj("text")), options=options,
                       stream=f.boolean("stream", False), think=reasoning_think(f),
                       truncate=truncation == "auto", tool_choice=tool_choice(
                           f.get("tool_choice")),
                       logprobs=top_logprobs > 0 or LOGPROBS in include,
                       top_logprobs=top_logprobs)
    echo = {"instructions": instructions or None,
            "max_output_tokens": f.integer("max_output_tokens"),
            "metadata": f.obj("metadata"), "reasoning": {"effort": reasoning.get("effort"),
                                                         "summary": summary},
            "temperature": temperature,
            "text": {"format": f.obj("text").get("format") or {"type": "text"}},
            "tool_choice": f.get("tool_choice") or "auto", "tools": f.array("tools", "[]Tool"),
            "top_p": top_p,
            "truncation": truncation, "top_logprobs": top_logprobs}
    return Spec(body=f.body, chat=chat, summary=summary,
                parallel=f.boolean("parallel_tool_calls", True), echo=echo)


# ----------------------------------------------------------------------------- responses

def usage(chunk: GenerationChunk) -> dict[str, Any]:
    """input_tokens is the whole prompt, of which cached_tokens came from the prompt cache."""
    prompt = chunk.prompt_eval_count + chunk.prompt_cache_count
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": chunk.prompt_cache_count},
            "output_tokens": chunk.eval_count, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + chunk.eval_count}


def _logprobs(chunk: GenerationChunk) -> list[dict[str, Any]]:
    return [{"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes),
             "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)}
                              for t in e.top]} for e in chunk.logprobs]


class Answer:
    """One response being built: its output items in order (reasoning, message, function
    calls) and, for a stream, the events that build them, numbered."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.id = new_id("resp")
        self.created = int(time.time())
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None     # the item deltas go to now
        self.sequence = 0
        self.calls = 0

    # -- the response object ----------------------------------------------------------------
    def response(self, status: str, chunk: GenerationChunk | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "response", "created_at": self.created,
                               "status": status, "error": None, "incomplete_details": None,
                               "model": self.spec.chat.model,
                               "output": self.items if status != "in_progress" else [],
                               "parallel_tool_calls": self.spec.parallel,
                               "previous_response_id": None, "store": False}
        out.update(self.spec.echo)
        if status == "incomplete":
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        if chunk is not None:
            out["usage"] = usage(chunk)
            out["completed_at"] = int(time.time())
        return out

    @staticmethod
    def status(chunk: GenerationChunk) -> str:
        return "incomplete" if chunk.done_reason == "length" else "completed"

    # -- events ------------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {dumps(data)}\n\n".encode()

    def start(self) -> bytes:
        return (self.event("response.created", response=self.response("in_progress"))
                + self.event("response.in_progress", response=self.response("in_progress")))

    def _add(self, item: dict[str, Any]) -> bytes:
        self.items.append(item)
        self.open = item
        return self.event("response.output_item.added", output_index=len(self.items) - 1,
                          item={**item, "status": "in_progress"} if item["type"] != "message"
                          else {**item, "content": [], "status": "in_progress"})

    def _close(self) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        index = self.items.index(item)
        out = b""
        if item["type"] == "reasoning":
            text = item["content"][0]["text"]
            out += self.event("response.reasoning_text.done", item_id=item["id"],
                              output_index=index, content_index=0, text=text)
        elif item["type"] == "message":
            part = item["content"][0]
            out += self.event("response.output_text.done", item_id=item["id"],
                              output_index=index, content_index=0, text=part["text"],
                              logprobs=part.get("logprobs", []))
            out += self.event("response.content_part.done", item_id=item["id"],
                              output_index=index, content_index=0, part=part)
        item["status"] = "completed"
        return out + self.event("response.output_item.done", output_index=index, item=item)

    def feed(self, chunk: GenerationChunk, streaming: bool) -> bytes:
        """Take a chunk's thinking, text and calls into the items; their events."""
        out = b""
        if chunk.thinking:
            if self.open is None or self.open["type"] != "reasoning":
                out += self._close()
                item = {"id": new_id("rs"), "type": "reasoning", "summary": [],
                        "content": [{"type": "reasoning_text", "text": ""}]}
                out += self._add(item)
            self.open["content"][0]["text"] += chunk.thinking
            if self.spec.summary:
                self.open["summary"] = [{"type": "summary_text",
                                         "text": self.open["content"][0]["text"]}]
            out += self.event("response.reasoning_text.delta", item_id=self.open["id"],
                              output_index=len(self.items) - 1, content_index=0,
                              delta=chunk.thinking)
        if chunk.text:
            if self.open is None or self.open["type"] != "message":
                out += self._close()
                part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
                if self.spec.chat.logprobs:
                    part["logprobs"] = []
                item = {"id": new_id("msg"), "type": "message", "role": "assistant",
                        "content": [part]}
                out += self._add(item)
                out += self.event("response.content_part.added", item_id=item["id"],
                                  output_index=len(self.items) - 1, content_index=0,
                                  part={**part, "text": ""})
            part = self.open["content"][0]
            part["text"] += chunk.text
            logprobs = _logprobs(chunk) if self.spec.chat.logprobs else []
            if "logprobs" in part:
                part["logprobs"] += logprobs
            out += self.event("response.output_text.delta", item_id=self.open["id"],
                              output_index=len(self.items) - 1, content_index=0,
                              delta=chunk.text, logprobs=logprobs)
        for call in chunk.tool_calls:
            if self.calls and not self.spec.parallel:
                continue                      # parallel_tool_calls false: the first call only
            self.calls += 1
            out += self._close()
            function = call.get("function") or {}
            arguments = function.get("arguments", {})
            text = arguments if isinstance(arguments, str) else json.dumps(arguments,
                                                                          ensure_ascii=False)
            item = {"id": new_id("fc"), "type": "function_call",
                    "call_id": call.get("id") or new_id("call"),
                    "name": function.get("name", ""), "arguments": text}
            out += self._add({**item, "arguments": ""})
            self.items[-1] = self.open = item
            index = len(self.items) - 1
            out += self.event("response.function_call_arguments.delta", item_id=item["id"],
                              output_index=index, delta=text)
            out += self.event("response.function_call_arguments.done", item_id=item["id"],
                              output_index=index, name=item["name"], arguments=text)
            out += self._close()
        if chunk.done:
            out += self._close()
            status = self.status(chunk)
            kind = "response.completed" if status == "completed" else "response.incomplete"
            out += self.event(kind, response=self.response(status, chunk))
        return out if streaming else b""


def stream_error(answer: Answer, exc: BaseException) -> bytes:
    """The `error` event of a stream that failed after it started."""
    status, message = status_and_message(exc)
    return answer.event("error", code=str(status), message=message, param=None)


def blueprint(backend: Backend, metrics: Metrics) -> Blueprint:
    """POST /v1/responses, bound to one backend."""
    bp = Blueprint("responses", __name__)

    @bp.post("/v1/responses")
    async def responses() -> Response:
        spec = parse(await read_json())
        ref = await backend.resolve(spec.chat.model)
        prepared = await generation.chat_request(ref, spec.chat)
        chunks = await generation.start(backend, metrics, prepared)
        answer = Answer(spec)
        if not spec.chat.stream:
            final = await generation.collect(chunks)
            answer.feed(final, streaming=False)
            return generation.report_truncation(
                json_response(answer.response(answer.status(final), final)), chunks)
        started = False

        def encode(chunk: GenerationChunk) -> bytes:
            nonlocal started
            head = b"" if started else answer.start()
            started = True
            return head + answer.feed(chunk, streaming=True)

        body = streamed(chunks, encode, lambda exc: stream_error(answer, exc))
        return generation.report_truncation(stream_response(body, SSE), chunks)

    return bp
