"""The path every completion takes, shared by the Ollama and OpenAI routes: check the request
against the model, render the prompt (trio_llm.prompt, in a worker thread), check its
constraint, start the backend's stream, read thinking and tool calls out of the reply, count
what it produced."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from quart import Response

from trio_llm import prompt
from trio_llm.api.backend import Backend, GenerationChunk, GenerationRequest, ModelRef
from trio_llm.api.constraints import constrained, json_schema_constraint
from trio_llm.api.metrics import Metrics
from trio_llm.api.schemas import ChatRequest, GenerateRequest, ToolChoice, decode_images
from trio_llm.api.streaming import Primed, prime
from trio_llm.engine.logprobs import TokenLogprob
from trio_llm.errors import BadRequest, Unsupported
from trio_llm.limits import check_options


@dataclass(frozen=True)
class Prepared:
    """A backend request and how to read its reply (None: all of it is the answer)."""

    request: GenerationRequest
    output: prompt.OutputParser | None = None


def merged_options(ref: ModelRef, options: Mapping[str, Any]) -> dict[str, Any]:
    """Request options over the Modelfile's PARAMETERs (defaults are the scheduler's),
    checked against their ranges before anything is loaded."""
    return check_options({**ref.parameters, **options})


def require(ref: ModelRef, capability: str, message: str) -> None:
    if capability not in ref.capabilities:
        raise Unsupported(message)


def check_images(ref: ModelRef, images: Sequence[bytes]) -> None:
    if images:
        require(ref, "vision", f"{ref.name} does not support vision")


def effective_think(ref: ModelRef, think: bool | str | None) -> bool | str | None:
    """`think` checked against the model; a thinking model thinks unless told not to."""
    if think not in (None, False):
        require(ref, "thinking", f'"{ref.name}" does not support thinking')
    if think is None and "thinking" in ref.capabilities:
        return True
    return think


async def generate_request(ref: ModelRef, req: GenerateRequest) -> Prepared:
    """The backend request for /api/generate (and /v1/completions)."""
    require(ref, "completion", f'"{ref.name}" does not support generate')
    think = effective_think(ref, req.think)
    check_images(ref, req.images)
    if req.raw:     # no template renders; the model's still says how it writes its thinking
        template = await _template_or_none(ref.template)
        text = req.prompt
    else:
        template = await prompt.load_in_worker(req.template or ref.template)
        if req.suffix and "insert" not in template.capabilities:
            raise Unsupported(f"{ref.name} does not support insert")
        messages = [] if req.context else list(ref.messages)
        text = await prompt.in_worker(
            prompt.generate, template, req.prompt, system=req.system or ref.system,
            suffix=req.suffix, messages=messages, think=think, bos_token=ref.bos_token,
            eos_token=ref.eos_token)
    output = None if template is None else prompt.OutputParser.for_request(
        template, text, think=_thinks(think), tools=None)
    request = GenerationRequest(model=ref, prompt=text, options=merged_options(ref, req.options),
                                keep_alive=req.keep_alive, context=req.context,
                                images=req.images, format=req.format, raw=req.raw, think=think,
                                truncate=req.truncate, shift=req.shift,
                                logprobs=req.logprobs or req.top_logprobs > 0,
                                top_logprobs=req.top_logprobs)
    return Prepared(request, output)


async def _template_or_none(source: str) -> prompt.PromptTemplate | None:
    try:
        return await prompt.load_in_worker(source)
    except prompt.TemplateFailed:
        return None


def chat_messages(ref: ModelRef, req: ChatRequest) -> list[dict[str, Any]]:
    """Modelfile SYSTEM (unless the client sent one) and MESSAGEs, then the client's."""
    messages = [m.for_template() for m in req.messages]
    prefix = [dict(m) for m in ref.messages]
    if ref.system and not (messages and messages[0]["role"] == "system"):
        prefix.insert(0, {"role": "system", "content": ref.system})
    return prefix + messages


async def chat_request(ref: ModelRef, req: ChatRequest) -> Prepared:
    """The backend request for /api/chat (and /v1/chat/completions)."""
    require(ref, "completion", f'"{ref.name}" does not support chat')
    tools = list(req.tools) if req.tools and req.tool_choice.kind != "none" else None
    if tools:
        require(ref, "tools", f"{ref.name} does not support tools")
    constraint = tool_call_constraint(req.tool_choice, tools)
    think = effective_think(ref, req.think)
    template = await prompt.load_in_worker(ref.template)
    # The renderer of any list of this conversation's messages: the prompt, and again with
    # older messages dropped when it does not fit num_ctx (the runner's context policy).
    render = functools.partial(prompt.chat, template, tools=tools, think=think,
                               bos_token=ref.bos_token, eos_token=ref.eos_token)
    messages = chat_messages(ref, req)
    text = await prompt.in_worker(render, messages)
    images = [image for m in req.messages for image in decode_images(m.images)]
    check_images(ref, images)
    request = GenerationRequest(model=ref, prompt=text, options=merged_options(ref, req.options),
                                keep_alive=req.keep_alive, images=images,
                                format=req.format, think=think, tools=tools,
                                constraint=await json_schema_constraint(constraint.schema)
                                if constraint else None, messages=messages, render=render,
                                truncate=req.truncate, shift=req.shift,
                                logprobs=req.logprobs or req.top_logprobs > 0,
                                top_logprobs=req.top_logprobs)
    output = prompt.OutputParser.for_request(template, text, think=_thinks(think), tools=tools,
                                             tool_tags=constraint.tags if constraint else None)
    return Prepared(request, output)


@dataclass(frozen=True)
class ToolCallConstraint:
    """A reply that must be a call: generated under `schema`, read as bare JSON (`tags`)."""

    schema: dict[str, Any]
    tags: prompt.ToolTags = prompt.ToolTags(())


def tool_call_constraint(choice: ToolChoice, tools: Sequence[Mapping[str, Any]] | None
                         ) -> ToolCallConstraint | None:
    """`tool_choice` "required" or a named function: the JSON schema of the allowed calls,
    under which the reply is generated (api/constraints.json_schema_constraint), so even a
    small model emits a valid call; with a format of its own the request is a 400 there
    (None: the model decides)."""
    if not tools or choice.kind not in ("required", "function"):
        return None
    schema = prompt.call_schema(tools, choice.name or None)
    if not schema.get("anyOf", [schema]):
        raise BadRequest(f'tool_choice names "{choice.name}", which is not one of the tools')
    return ToolCallConstraint(schema)


def _thinks(think: bool | str | None) -> bool:
    return think not in (None, False)


async def preload(backend: Backend, ref: ModelRef, options: Mapping[str, Any],
                  keep_alive: float | None) -> str:
    """An empty prompt: load the model (done_reason "load"), or unload it with keep_alive 0."""
    if keep_alive == 0:
        await backend.unload(ref)
        return "unload"
    await backend.load(ref, merged_options(ref, options), keep_alive)
    return "load"


async def _counted(chunks: AsyncIterator[GenerationChunk], metrics: Metrics,
                   model: str) -> AsyncIterator[GenerationChunk]:
    """The backend's chunks, counted in the metrics, always ending with one done chunk."""
    finished = False
    async with aclosing(chunks):
        async for chunk in chunks:
            if finished:
                continue  # nothing may follow the final chunk; let the source end normally
            if chunk.done:
                metrics.observe_generation(model, chunk.done_reason or "stop",
                                           chunk.prompt_eval_count, chunk.eval_count,
                                           chunk.eval_duration)
            finished = chunk.done
            yield chunk
    if not finished:
        yield GenerationChunk(done=True, done_reason="stop")


async def _parsed(chunks: AsyncIterator[GenerationChunk], output: prompt.OutputParser,
                  flush: bool = True) -> AsyncIterator[GenerationChunk]:
    """The chunks with thinking and tool calls read out of their text; a chunk whose text is
    all held back (a tag or a call being written) is not sent on its own. flush=False leaves
    what is held back in the parser at the end (the reply goes on in another generation)."""
    async with aclosing(chunks):
        async for chunk in chunks:
            piece = output.feed(chunk.text)
            if chunk.done and flush:
                rest = output.flush()
                piece.text += rest.text
                piece.thinking += rest.thinking
                piece.tool_calls.extend(rest.tool_calls)
            if not (piece or chunk.done or chunk.thinking or chunk.tool_calls):
                continue
            yield replace(chunk, text=piece.text, thinking=chunk.thinking + piece.thinking,
                          tool_calls=[*chunk.tool_calls, *piece.tool_calls])


def parsed(backend: Backend, metrics: Metrics, request: GenerationRequest,
           output: prompt.OutputParser | None, flush: bool = True
           ) -> AsyncIterator[GenerationChunk]:
    """One generation's chunks, counted, read by `output` (the request already constrained)."""
    chunks = _counted(backend.generate(request), metrics, request.model.name)
    return chunks if output is None else _parsed(chunks, output, flush)


async def start(backend: Backend, metrics: Metrics, prepared: Prepared
                ) -> Primed[GenerationChunk]:
    """Check the request's constraint, start the generation and wait for its first chunk
    (errors before it raise here)."""
    request = await constrained(prepared.request)
    return await prime(parsed(backend, metrics, request, prepared.output))


async def collect(chunks: Primed[GenerationChunk]) -> GenerationChunk:
    """A whole generation as one final chunk: all text, thinking and tool calls joined, with
    the final chunk's statistics (for stream:false answers)."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Mapping[str, Any]] = []
    logprobs: list[TokenLogprob] = []
    final = GenerationChunk(done=True, done_reason="stop")
    async with aclosing(chunks):
        async for chunk in chunks:
            texts.append(chunk.text)
            thoughts.append(chunk.thinking)
            calls.extend(chunk.tool_calls)
            logprobs.extend(chunk.logprobs)
            if chunk.done:
                final = chunk
    return replace(final, text="".join(texts), thinking="".join(thoughts), tool_calls=calls,
                   logprobs=logprobs)


def done_reason(chunk: GenerationChunk) -> str:
    return chunk.done_reason or "stop"


def truncation_fields(chunk: GenerationChunk) -> dict[str, Any]:
    """What a final response says when older messages were dropped to fit num_ctx."""
    if not chunk.truncated_messages:
        return {}
    return {"truncated": True, "truncated_messages": chunk.truncated_messages}


def report_truncation(response: Response, chunks: Primed[GenerationChunk]) -> Response:
    """The X-Truncated-Messages header, known from the first chunk (before any is sent)."""
    first = chunks.first
    if first is not None and first.truncated_messages:
        response.headers["X-Truncated-Messages"] = str(first.truncated_messages)
    return response


def check_raw(req: GenerateRequest) -> None:
    if req.raw and (req.template or req.system or req.context):
        raise BadRequest("raw mode does not support template, system, or context")
