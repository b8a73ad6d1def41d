"""/v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, so the `anthropic`
client (and agents built on it) can use a local model.

The request becomes our ChatRequest (system, text / image / tool_use / tool_result / thinking
blocks as messages, tools with input_schema, tool_choice auto / any / tool / none,
stop_sequences, temperature, top_p, top_k, max_tokens) and takes the one generation path;
`thinking: {"type": "enabled", "budget_tokens": N}` thinks for at most N tokens
(api/thinking_budget.py). The answer is a `message` with text, thinking and tool_use blocks,
or Anthropic's SSE events. Errors on these routes are in Anthropic's shape (api/errors.py).
Every field we accept is honoured; any other is a 400 naming it. (`metadata` is accepted: its
`user_id` identifies the caller to Anthropic and has nothing to act on here; `cache_control` on
a block is a caching hint.)
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio
from quart import Blueprint, Response

from trio_llm.api import generation, thinking_budget
from trio_llm.api.backend import Backend, GenerationChunk
from trio_llm.api.errors import anthropic_stream_error
from trio_llm.api.metrics import Metrics
from trio_llm.api.schemas import ChatRequest, Fields, Message, ToolChoice, parse_options, read_json
from trio_llm.api.streaming import SSE, dumps, json_response, stream_response, streamed
from trio_llm.api.tokenize import check_fields
from trio_llm.errors import BadRequest

FIELDS = frozenset({"model", "messages", "max_tokens", "system", "stop_sequences", "temperature",
                    "top_p", "top_k", "stream", "tools", "tool_choice", "thinking", "metadata"})
COUNT_FIELDS = FIELDS - {"max_tokens", "stream", "stop_sequences", "temperature", "top_p",
                         "top_k", "metadata"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# ----------------------------------------------------------------------------- requests

def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise BadRequest(f"{where}.content: must be a string or an array of content blocks")
    return content


def _result_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(str(b.get("text") or "") for b in _blocks(content, "tool_result")
                   if b.get("type") == "text")


def _image(block: Mapping[str, Any]) -> str:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        raise BadRequest("image: only base64 sources are supported")
    return str(source.get("data") or "")


def system_text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    blocks = _blocks(value, "system")
    for block in blocks:
        if block.get("type") != "text":
            raise BadRequest(f"system: unsupported block type: {block.get('type')}")
    return "\n\n".join(str(b.get("text") or "") for b in blocks)


def messages_of(raw: list[Any]) -> list[Message]:
    """Anthropic's turns as our messages: a user turn's tool_result blocks become tool
    messages (named after the tool_use they answer) before its text; an assistant turn
    carries its text, thinking and tool_use blocks as content, thinking and tool calls."""
    out: list[Message] = []
    names: dict[str, str] = {}
    for index, turn in enumerate(raw):
        f = Fields(turn, "Message")
        role = f.string("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"messages.{index}.role: must be \"user\" or \"assistant\"")
        texts: list[str] = []
        images: list[str] = []
        thinking: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in _blocks(f.get("content"), f"messages.{index}"):
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text") or ""))
            elif kind == "image" and role == "user":
                images.append(_image(block))
            elif kind == "tool_use" and role == "assistant":
                call_id, name = str(block.get("id") or ""), str(block.get("name") or "")
                names[call_id] = name
                arguments = block.get("input") or {}
                if not isinstance(arguments, dict):
                    raise BadRequest(f"messages.{index}: tool_use.input must be an object")
                calls.append({"id": call_id, "function": {"name": name,
                                                          "arguments": arguments}})
            elif kind == "tool_result" and role == "user":
                call_id = str(block.get("tool_use_id") or "")
                text = _result_text(block.get("content"))
                if block.get("is_error"):
                    text = f"Error: {text}"
                out.append(Message(role="tool", content=text, tool_name=names.get(call_id, ""),
                                   tool_call_id=call_id))
            elif kind == "thinking" and role == "assistant":
                thinking.append(str(block.get("thinking") or ""))
            else:
                raise BadRequest(f"messages.{index}: unsupported content block type for the "
                                 f"{role} role: {kind}")
        if texts or images or calls or thinking or role == "assistant":
            out.append(Message(role=role, content="\n\n".join(texts), images=tuple(images),
                               thinking="".join(thinking), tool_calls=tuple(calls)))
    return out


def chat_tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise BadRequest("tools: each tool must be an object")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise BadRequest(f"tools: unsupported tool type: {kind} (only custom tools with an "
                             "input_schema)")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise BadRequest(f"tools: {tool.get('name')}: input_schema is required")
        out.append({"type": "function", "function": {
            "name": tool.get("name", ""), "description": tool.get("description") or "",
            "parameters": schema}})
    return out


def tool_choice(value: Any) -> tuple[ToolChoice, bool]:
    """Our ToolChoice and whether only one call may be made (disable_parallel_tool_use)."""
    if value is None:
        return ToolChoice(), False
    kind = value.get("type") if isinstance(value, dict) else None
    unknown = sorted(set(value) - {"type", "name", "disable_parallel_tool_use"}) \
        if isinstance(value, dict) else []
    if unknown:
        raise BadRequest(f"unsupported field: tool_choice.{unknown[0]}")
    single = bool(value.get("disable_parallel_tool_use")) if isinstance(value, dict) else False
    if kind == "auto":
        return ToolChoice(), single
    if kind == "any":
        return ToolChoice("required"), single
    if kind == "none":
        return ToolChoice("none"), single
    if kind == "tool" and isinstance(value.get("name"), str) and value["name"]:
        return ToolChoice("function", value["name"]), single
    raise BadRequest('tool_choice: must be {"type": "auto"}, {"type": "any"}, {"type": "none"} '
                     'or {"type": "tool", "name": ...}')


def thinking_of(value: Any) -> tuple[bool | None, int]:
    """(think, budget in tokens; 0: none)."""
    if value is None:
        return None, 0
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "disabled":
        return False, 0
    unknown = sorted(set(value) - {"type", "budget_tokens", "display"})
    if unknown:
        raise BadRequest(f"unsupported field: thinking.{unknown[0]}")
    if value.get("display") not in (None, "summarized", "omitted"):
        raise BadRequest('thinking.display: must be "summarized" or "omitted"')
    if kind == "enabled":
        budget = value.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise BadRequest("thinking.budget_tokens: must be a positive integer")
        return True, budget
    raise BadRequest('thinking: must be {"type": "enabled", "budget_tokens": N} or '
                     '{"type": "disabled"}')


@dataclass(frozen=True)
class Spec:
    chat: ChatRequest
    budget: int = 0              # thinking tokens allowed (0: no budget)
    single_call: bool = False
    hide_thinking: bool = False  # thinking.display "omitted": the blocks come back empty


def parse(body: Any, counting: bool = False) -> Spec:
    f = Fields(body, "MessagesRequest")
    check_fields(f.body, COUNT_FIELDS if counting else FIELDS)
    model = f.string("model")
    if not model:
        raise BadRequest("model: Field required")
    max_tokens = f.integer("max_tokens")
    if not counting and max_tokens is None:
        raise BadRequest("max_tokens: Field required")
    if max_tokens is not None and max_tokens < 1:
        raise BadRequest("max_tokens: must be at least 1")
    raw = f.array("messages", "[]Message")
    if not raw:
        raise BadRequest("messages: at least one message is required")
    messages = messages_of(raw)
    system = system_text(f.get("system"))
    if system:
        messages.insert(0, Message(role="system", content=system))
    think, budget = thinking_of(f.get("thinking"))
    if budget and max_tokens is not None and budget >= max_tokens:
        raise BadRequest("thinking.budget_tokens: must be less than max_tokens")
    choice, single = tool_choice(f.get("tool_choice"))
    options = parse_options({"num_predict": max_tokens, "stop": f.strings("stop_sequences"),
                             "temperature": f.number("temperature"), "top_p": f.number("top_p"),
                             "top_k": f.integer("top_k")})
    options.setdefault("temperature", 1.0)     # Anthropic's default
    chat = ChatRequest(model=model, messages=tuple(messages),
                       tools=tuple(chat_tools(f.array("tools", "[]Tool"))), options=options,
                       stream=f.boolean("stream", False), think=think, tool_choice=choice)
    hide = f.obj("thinking").get("display") == "omitted"
    return Spec(chat, budget, single, hide)


# ----------------------------------------------------------------------------- responses

def stop_reason(chunk: GenerationChunk, called: bool) -> str:
    if called:
        return "tool_use"
    if chunk.done_reason == "length":
        return "max_tokens"
    return "stop_sequence" if chunk.stop_sequence else "end_turn"


class Answer:
    """One message being built: its content blocks and, for a stream, the events."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.id = new_id("msg")
        self.blocks: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None
        self.calls = 0

    def message(self, chunk: GenerationChunk | None) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant",
                "model": self.spec.chat.model, "content": self.blocks if chunk else [],
                "stop_reason": stop_reason(chunk, self.calls > 0) if chunk else None,
                "stop_sequence": (chunk.stop_sequence or None) if chunk else None,
                # Anthropic's meaning: input_tokens were evaluated, the rest read from cache
                "usage": {"input_tokens": chunk.prompt_eval_count if chunk else 0,
                          "cache_read_input_tokens": chunk.prompt_cache_count if chunk else 0,
                          "output_tokens": chunk.eval_count if chunk else 0}}

    @staticmethod
    def event(kind: str, **fields: Any) -> bytes:
        return f"event: {kind}\ndata: {dumps({'type': kind, **fields})}\n\n".encode()

    def start(self) -> bytes:
        return self.event("message_start", message=self.message(None)) + self.event("ping")

    def _open(self, block: dict[str, Any], shown: dict[str, Any]) -> bytes:
        out = self._close()
        self.blocks.append(block)
        self.open = block
        return out + self.event("content_block_start", index=len(self.blocks) - 1,
                                content_block=shown)

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return self.event("content_block_stop", index=len(self.blocks) - 1)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self.event("content_block_delta", index=len(self.blocks) - 1, delta=delta)

    def feed(self, chunk: GenerationChunk) -> bytes:
        out = b""
        if chunk.thinking:
            if self.open is None or self.open["type"] != "thinking":
                out += self._open({"type": "thinking", "thinking": "", "signature": ""},
                                  {"type": "thinking", "thinking": "", "signature": ""})
            if not self.spec.hide_thinking:
                self.open["thinking"] += chunk.thinking
                out += self._delta({"type": "thinking_delta", "thinking": chunk.thinking})
        if chunk.text:
            if self.open is None or self.open["type"] != "text":
                out += self._open({"type": "text", "text": ""}, {"type": "text", "text": ""})
            self.open["text"] += chunk.text
            out += self._delta({"type": "text_delta", "text": chunk.text})
        for call in chunk.tool_calls:
            if self.calls and self.spec.single_call:
                continue
            self.calls += 1
            function = call.get("function") or {}
            arguments = function.get("arguments") or {}
            if isinstance(arguments, str):
                arguments = json.loads(arguments or "{}")
            block = {"type": "tool_use", "id": new_id("toolu"), "name": function.get("name", ""),
                     "input": arguments}
            out += self._open(block, {**block, "input": {}})
            out += self._delta({"type": "input_json_delta",
                                "partial_json": json.dumps(arguments, ensure_ascii=False)})
            out += self._close()
        if chunk.done:
            out += self._close()
            message = self.message(chunk)
            out += self.event("message_delta", delta={"stop_reason": message["stop_reason"],
                                                      "stop_sequence": message["stop_sequence"]},
                              usage=message["usage"])
            out += self.event("message_stop")
        return out


def blueprint(backend: Backend, metrics: Metrics) -> Blueprint:
    """The Anthropic routes, bound to one backend."""
    bp = Blueprint("anthropic", __name__)

    async def prepare(spec: Spec) -> generation.Prepared:
        ref = await backend.resolve(spec.chat.model)
        return await generation.chat_request(ref, spec.chat)

    @bp.post("/v1/messages")
    async def messages() -> Response:
        spec = parse(await read_json())
        prepared = await prepare(spec)
        if spec.budget:
            chunks = await thinking_budget.start(backend, metrics, prepared, spec.budget)
        else:
            chunks = await generation.start(backend, metrics, prepared)
        answer = Answer(spec)
        if not spec.chat.stream:
            final = await generation.collect(chunks)
            answer.feed(final)
            return generation.report_truncation(json_response(answer.message(final)), chunks)
        started = False

        def encode(chunk: GenerationChunk) -> bytes:
            nonlocal started
            head = b"" if started else answer.start()
            started = True
            return head + answer.feed(chunk)

        body = streamed(chunks, encode, anthropic_stream_error)
        return generation.report_truncation(stream_response(body, SSE), chunks)

    @bp.post("/v1/messages/count_tokens")
    async def count_tokens() -> Response:
        """The tokens the prompt of a messages.create with this body evaluates: the same
        rendering, the same tokenizer."""
        spec = parse(await read_json(), counting=True)
        prepared = await prepare(spec)
        tokenizer = await backend.tokenizer(prepared.request.model)
        ids = await trio.to_thread.run_sync(tokenizer.encode, prepared.request.prompt)
        return json_response({"input_tokens": len(ids)})

    return bp
