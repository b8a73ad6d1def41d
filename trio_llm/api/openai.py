"""OpenAI-compatible routes (/v1/*), as Ollama offers them: translated to our chat, generate
and embed requests on the way in, shaped as OpenAI objects (JSON or SSE) on the way out."""

from __future__ import annotations

import base64
import json
import random
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quart import Blueprint, Response

from trio_llm.api import generation
from trio_llm.api.backend import Backend, GenerationChunk
from trio_llm.api.constraints import CONSTRAINT_OPTIONS
from trio_llm.api.errors import sse_error
from trio_llm.api.metrics import Metrics
from trio_llm.api.schemas import (
    ChatRequest,
    Fields,
    GenerateRequest,
    Message,
    ToolChoice,
    check_finite,
    l2_normalise,
    parse_options,
    parse_top_logprobs,
    read_json,
    token_logprobs,
)
from trio_llm.api.streaming import (
    SSE,
    SSE_DONE,
    Primed,
    json_response,
    sse_event,
    stream_response,
    streamed,
    vectors_response,
)
from trio_llm.errors import BadRequest

FINGERPRINT = "fp_ollama"
REASONING_EFFORT = {"none": False, "minimal": "low", "low": "low", "medium": "medium",
                    "high": "high", "max": "max", "xhigh": "max", "ultra": "max"}


# ----------------------------------------------------------------------------- requests

def sampling_options(f: Fields) -> dict[str, Any]:
    """OpenAI's sampling fields as Ollama options (temperature and top_p default to 1.0)."""
    raw: dict[str, Any] = {"temperature": f.get("temperature"), "top_p": f.get("top_p")}
    raw["temperature"] = 1.0 if raw["temperature"] is None else raw["temperature"]
    raw["top_p"] = 1.0 if raw["top_p"] is None else raw["top_p"]
    max_tokens = f.get("max_completion_tokens")
    raw["num_predict"] = max_tokens if max_tokens is not None else f.get("max_tokens")
    for name in ("seed", "frequency_penalty", "presence_penalty", "stop"):
        raw[name] = f.get(name)
    for name in CONSTRAINT_OPTIONS:  # beyond OpenAI: top-level grammar / regex fields
        raw[name] = f.get(name)
    # Ollama's options as an extension (an `options` object, or a top-level num_ctx), so that
    # OpenAI clients can set the context: they override what the OpenAI fields say.
    raw.update(f.obj("options"))
    if f.get("num_ctx") is not None:
        raw["num_ctx"] = f.get("num_ctx")
    return parse_options(raw)


def response_format(value: Any) -> str | dict[str, Any] | None:
    """`response_format` as our `format`: text -> none, json_object -> "json", json_schema ->
    its schema (any JSON object when it has none)."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            return "json"
        if not isinstance(schema, dict):
            raise BadRequest("invalid response_format: json_schema.schema must be an object")
        return schema
    raise BadRequest(f"invalid response_format type: {kind!r}; expected \"text\", "
                     "\"json_object\" or \"json_schema\"")


def _logprobs_wanted(f: Fields) -> tuple[bool, int]:
    """Chat's `logprobs` (bool) and `top_logprobs` (0..20); top_logprobs implies logprobs."""
    top = parse_top_logprobs(f.integer("top_logprobs"))
    return f.boolean("logprobs", False) or top > 0, top


def _completion_logprobs(f: Fields) -> tuple[bool, int]:
    """/v1/completions' `logprobs`: an integer, how many of the most likely tokens to list."""
    value = f.integer("logprobs")
    return value is not None, parse_top_logprobs(value)


def _content_parts(content: Any) -> list[tuple[str, list[str]]]:
    """An OpenAI message's content as (text, images) pieces: a string is one piece; an array
    of parts gives one piece per part, as Ollama turns each part into its own message (the
    prompt layer then joins consecutive messages of a role with a blank line)."""
    if content is None or isinstance(content, str):
        return [(content or "", [])]
    if not isinstance(content, list):
        raise BadRequest("invalid message content type")
    pieces: list[tuple[str, list[str]]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            pieces.append((str(part.get("text") or ""), []))
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url.startswith("data:image/"):
                raise BadRequest("image URLs are not currently supported, please use base64 "
                                 "encoded data instead")
            pieces.append(("", [url.split(",", 1)[-1]]))
        else:
            raise BadRequest(f"invalid message part type: {kind}")
    return pieces or [("", [])]


def _tool_calls(calls: Any) -> tuple[dict[str, Any], ...]:
    out = []
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise BadRequest("invalid tool call")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                raise BadRequest("invalid tool call arguments") from None
        out.append({"id": call.get("id", ""),
                    "function": {"index": index, "name": function.get("name", ""),
                                 "arguments": arguments}})
    return tuple(out)


def _messages(raw_messages: list[Any]) -> list[Message]:
    """OpenAI messages as ours. A tool result keeps its `tool_call_id` and is named after the
    call it answers (or its `name`)."""
    messages: list[Message] = []
    called: dict[str, str] = {}
    for raw in raw_messages:
        m = Fields(raw, "ChatCompletionRequest.messages")
        role = m.string("role").lower()
        calls = _tool_calls(m.get("tool_calls"))
        called.update({c["id"]: c["function"]["name"] for c in calls if c["id"]})
        call_id = m.string("tool_call_id")
        pieces = _content_parts(m.get("content"))
        for i, (text, images) in enumerate(pieces):
            last = i == len(pieces) - 1
            messages.append(Message(
                role=role, content=text, images=tuple(images),
                thinking=(m.string("reasoning") or m.string("reasoning_content")) if last
                else "", tool_calls=calls if last else (),
                tool_name=m.string("name") or called.get(call_id, ""), tool_call_id=call_id))
    return messages


def reasoning_think(f: Fields) -> bool | str | None:
    effort = f.get("reasoning_effort")
    if effort is None:
        effort = f.obj("reasoning").get("effort")
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in REASONING_EFFORT:
        shown = f'"{effort}"' if isinstance(effort, str) else json.dumps(effort)
        allowed = ", ".join(json.dumps(k) for k in REASONING_EFFORT)
        raise BadRequest(f"invalid reasoning_effort: {shown} (must be one of {allowed})")
    return REASONING_EFFORT[effort]


def chat_from_openai(body: Any) -> tuple[ChatRequest, bool]:
    """Our ChatRequest for a /v1/chat/completions body, and whether usage is wanted."""
    f = Fields(body, "ChatCompletionRequest")
    messages = _messages(f.array("messages", "[]openai.Message"))
    if not messages:
        raise BadRequest("[] is too short - 'messages'")
    logprobs, top_logprobs = _logprobs_wanted(f)
    request = ChatRequest(model=f.string("model"), messages=tuple(messages),
                          tools=tuple(f.array("tools", "[]openai.Tool")),
                          format=response_format(f.get("response_format")),
                          options=sampling_options(f), stream=f.boolean("stream", False),
                          think=reasoning_think(f),
                          tool_choice=ToolChoice.parse(f.get("tool_choice")),
                          logprobs=logprobs, top_logprobs=top_logprobs)
    return request, bool(f.obj("stream_options").get("include_usage"))


def completion_from_openai(body: Any) -> tuple[GenerateRequest, bool]:
    f = Fields(body, "CompletionRequest")
    prompt = f.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadRequest("invalid prompt: only a single string is supported")
    logprobs, top_logprobs = _completion_logprobs(f)
    request = GenerateRequest(model=f.string("model"), prompt=prompt or "",
                              suffix=f.string("suffix"), options=sampling_options(f),
                              format=response_format(f.get("response_format")),
                              stream=f.boolean("stream", False), logprobs=logprobs,
                              top_logprobs=top_logprobs)
    return request, bool(f.obj("stream_options").get("include_usage"))


# ----------------------------------------------------------------------------- responses

def finish_reason(chunk: GenerationChunk, called_tools: bool = False) -> str:
    if called_tools:
        return "tool_calls"
    return "length" if chunk.done_reason == "length" else "stop"


def openai_tool_calls(calls: Sequence[Mapping[str, Any]], first_index: int = 0
                      ) -> list[dict[str, Any]]:
    """Ollama-shaped tool calls as OpenAI's: arguments become a JSON string."""
    out = []
    for offset, call in enumerate(calls):
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        out.append({"id": call.get("id") or f"call_{random.getrandbits(40):010x}",
                    "index": first_index + offset, "type": "function",
                    "function": {"name": function.get("name", ""),
                                 "arguments": arguments if isinstance(arguments, str)
                                 else json.dumps(arguments, ensure_ascii=False)}})
    return out


def assistant_message(chunk: GenerationChunk, calls: list[dict[str, Any]], role: bool = True
                      ) -> dict[str, Any]:
    """The answer as OpenAI's message (or a stream delta, which names the role only in the
    first chunk)."""
    message: dict[str, Any] = {"role": "assistant"} if role else {}
    message["content"] = chunk.text
    if chunk.thinking:
        message["reasoning"] = chunk.thinking
    if calls:
        message["tool_calls"] = calls
    return message


def chat_logprobs(chunk: GenerationChunk, wanted: bool) -> dict[str, Any] | None:
    """A chat choice's `logprobs`: {content: [{token, logprob, bytes, top_logprobs}]}."""
    return {"content": token_logprobs(chunk.logprobs, always_top=True)} if wanted else None


class CompletionLogprobs:
    """/v1/completions' `logprobs` objects (tokens, token_logprobs, top_logprobs,
    text_offset), the offsets counted across the chunks of one answer."""

    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted
        self.offset = 0

    def of(self, chunk: GenerationChunk) -> dict[str, Any] | None:
        if not self.wanted:
            return None
        offsets = []
        for entry in chunk.logprobs:
            offsets.append(self.offset)
            self.offset += len(entry.token)
        return {"tokens": [e.token for e in chunk.logprobs],
                "token_logprobs": [e.logprob for e in chunk.logprobs],
                "top_logprobs": [{t.token: t.logprob for t in e.top} for e in chunk.logprobs],
                "text_offset": offsets}


def usage(chunk: GenerationChunk) -> dict[str, Any]:
    """OpenAI's usage: prompt_tokens counts the whole prompt, of which cached_tokens came from
    the prompt cache (OpenAI's meaning; Ollama's prompt_eval_count is the evaluated rest)."""
    prompt = chunk.prompt_eval_count + chunk.prompt_cache_count
    return {"prompt_tokens": prompt, "completion_tokens": chunk.eval_count,
            "total_tokens": prompt + chunk.eval_count,
            "prompt_tokens_details": {"cached_tokens": chunk.prompt_cache_count}}


def owned_by(name: str) -> str:
    parts = name.split(":", 1)[0].split("/")
    return parts[-2] if len(parts) >= 2 else "library"


class Completion:
    """One answer's identity (id, created, model): the same on every chunk of a stream."""

    def __init__(self, prefix: str, model: str) -> None:
        self.id = f"{prefix}-{random.randrange(999)}"
        self.created = int(time.time())
        self.model = model

    def envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT, "choices": choices}


def sse(chunks: Primed[GenerationChunk], encode: Callable[[GenerationChunk], bytes]) -> Response:
    return stream_response(streamed(chunks, encode, sse_error, tail=lambda: SSE_DONE), SSE)


def blueprint(backend: Backend, metrics: Metrics) -> Blueprint:
    """The /v1 routes, bound to one backend."""
    bp = Blueprint("openai", __name__)

    @bp.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        req, include_usage = chat_from_openai(await read_json())
        if not req.model:
            raise BadRequest("model is required")
        ref = await backend.resolve(req.model)
        prepared = await generation.chat_request(ref, req)
        chunks = await generation.start(backend, metrics, prepared)
        answer = Completion("chatcmpl", req.model)
        if not req.stream:
            final = await generation.collect(chunks)
            calls = openai_tool_calls(final.tool_calls)
            out = answer.envelope("chat.completion", [
                {"index": 0, "message": assistant_message(final, calls),
                 "finish_reason": finish_reason(final, bool(calls)),
                 "logprobs": chat_logprobs(final, req.logprobs)}])
            out["usage"] = usage(final)
            return generation.report_truncation(json_response(out), chunks)
        calls_sent = 0
        deltas_sent = 0

        def encode(chunk: GenerationChunk) -> bytes:
            nonlocal calls_sent, deltas_sent
            events = b""
            if chunk.text or chunk.thinking or chunk.tool_calls or chunk.logprobs \
                    or not chunk.done:
                calls = openai_tool_calls(chunk.tool_calls, calls_sent)
                calls_sent += len(calls)
                delta = assistant_message(chunk, calls, role=deltas_sent == 0)
                deltas_sent += 1
                events += sse_event(answer.envelope("chat.completion.chunk", [
                    {"index": 0, "delta": delta, "finish_reason": None,
                     "logprobs": chat_logprobs(chunk, req.logprobs)}]))
            if chunk.done:
                events += sse_event(answer.envelope("chat.completion.chunk", [
                    {"index": 0, "delta": {},
                     "finish_reason": finish_reason(chunk, calls_sent > 0)}]))
                if include_usage:
                    last = answer.envelope("chat.completion.chunk", [])
                    last["usage"] = usage(chunk)
                    events += sse_event(last)
            return events

        return generation.report_truncation(sse(chunks, encode), chunks)

    @bp.post("/v1/completions")
    async def completions() -> Response:
        req, include_usage = completion_from_openai(await read_json())
        if not req.model:
            raise BadRequest("model is required")
        ref = await backend.resolve(req.model)
        prepared = await generation.generate_request(ref, req)
        chunks = await generation.start(backend, metrics, prepared)
        answer = Completion("cmpl", req.model)
        logprobs = CompletionLogprobs(req.logprobs)
        if not req.stream:
            final = await generation.collect(chunks)
            out = answer.envelope("text_completion", [
                {"text": final.text, "index": 0, "logprobs": logprobs.of(final),
                 "finish_reason": finish_reason(final)}])
            out["usage"] = usage(final)
            return json_response(out)

        def encode(chunk: GenerationChunk) -> bytes:
            events = sse_event(answer.envelope("text_completion", [
                {"text": chunk.text, "index": 0, "logprobs": logprobs.of(chunk),
                 "finish_reason": finish_reason(chunk) if chunk.done else None}]))
            if chunk.done and include_usage:
                last = answer.envelope("text_completion", [])
                last["usage"] = usage(chunk)
                events += sse_event(last)
            return events

        return sse(chunks, encode)

    @bp.post("/v1/embeddings")
    async def embeddings() -> Response:
        f = Fields(await read_json(), "EmbedRequest")
        raw = f.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs or \
                not all(isinstance(item, str) for item in inputs):
            raise BadRequest("invalid input")
        encoding = f.string("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise BadRequest(f"invalid encoding format: {encoding}")
        dimensions = f.integer("dimensions", 0) or 0
        model = f.string("model")
        if not model:
            raise BadRequest("model is required")
        ref = await backend.resolve(model)
        result = await backend.embed(ref, inputs, truncate=True,
                                     options=dict(ref.parameters), keep_alive=None)
        check_finite(result.embeddings)
        data = []
        for index, vector in enumerate(result.embeddings):
            values = l2_normalise(vector)
            if 0 < dimensions < len(values):
                values = l2_normalise(values[:dimensions])
            embedding: Any = values
            if encoding == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "embedding": embedding, "index": index})
        return vectors_response({"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": result.prompt_eval_count,
                                        "total_tokens": result.prompt_eval_count}})

    @bp.get("/v1/models")
    async def models() -> Response:
        entries = sorted(await backend.list_models(), key=lambda m: m.modified_at, reverse=True)
        return json_response({"object": "list", "data": [
            {"id": m.name, "object": "model", "created": int(m.modified_at.timestamp()),
             "owned_by": owned_by(m.name)} for m in entries]})

    @bp.get("/v1/models/<path:model>")
    async def model(model: str) -> Response:
        ref = await backend.resolve(model)
        created = int(ref.modified_at.timestamp()) if ref.modified_at else 0
        return json_response({"id": model, "object": "model", "created": created,
                              "owned_by": owned_by(ref.name)})

    return bp
