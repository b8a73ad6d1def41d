"""The path every completion takes, shared by the Ollama and OpenAI routes: check the request
against the model, render the prompt, check its constraint, start the backend's stream, count
what it produced."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from quart import Response

from trio_llm.api.backend import Backend, GenerationChunk, GenerationRequest, ModelRef
from trio_llm.api.constraints import constrained
from trio_llm.api.metrics import Metrics
from trio_llm.api.schemas import ChatRequest, GenerateRequest, decode_images
from trio_llm.api.streaming import Primed, prime
from trio_llm.api.templates import as_jinja, render_chat, render_generate, uses_variable
from trio_llm.engine.logprobs import TokenLogprob
from trio_llm.errors import BadRequest, Unsupported
from trio_llm.limits import check_options


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


def check_think(ref: ModelRef, think: bool | str | None) -> None:
    if think not in (None, False):
        require(ref, "thinking", f'"{ref.name}" does not support thinking')


def _thinking_variables(think: bool | str | None) -> dict[str, Any]:
    return {} if think is None else {"enable_thinking": think is not False}


def generate_request(ref: ModelRef, req: GenerateRequest) -> GenerationRequest:
    """The backend request for /api/generate (and /v1/completions)."""
    require(ref, "completion", f'"{ref.name}" does not support generate')
    check_think(ref, req.think)
    check_images(ref, req.images)
    if req.raw:
        prompt = req.prompt
    else:
        template = as_jinja(req.template or ref.template)
        if req.suffix and not (template and uses_variable(template, "suffix")):
            raise Unsupported(f"{ref.name} does not support insert")
        messages = [] if req.context else list(ref.messages)
        prompt = render_generate(template, req.prompt, system=req.system or ref.system,
                                 suffix=req.suffix, messages=messages,
                                 bos_token=ref.bos_token, eos_token=ref.eos_token)
    return GenerationRequest(model=ref, prompt=prompt,
                             options=merged_options(ref, req.options),
                             keep_alive=req.keep_alive, context=req.context,
                             images=req.images, format=req.format, raw=req.raw, think=req.think,
                             truncate=req.truncate, shift=req.shift,
                             logprobs=req.logprobs or req.top_logprobs > 0,
                             top_logprobs=req.top_logprobs)


def chat_messages(ref: ModelRef, req: ChatRequest) -> list[dict[str, Any]]:
    """Modelfile SYSTEM (unless the client sent one) and MESSAGEs, then the client's."""
    messages = [m.for_template() for m in req.messages]
    prefix = [dict(m) for m in ref.messages]
    if ref.system and not (messages and messages[0]["role"] == "system"):
        prefix.insert(0, {"role": "system", "content": ref.system})
    return prefix + messages


def chat_request(ref: ModelRef, req: ChatRequest) -> GenerationRequest:
    """The backend request for /api/chat (and /v1/chat/completions)."""
    require(ref, "completion", f'"{ref.name}" does not support chat')
    if req.tools:
        require(ref, "tools", f"{ref.name} does not support tools")
    check_think(ref, req.think)
    render = functools.partial(render_chat, as_jinja(ref.template), bos_token=ref.bos_token,
                               eos_token=ref.eos_token, tools=list(req.tools) or None,
                               **_thinking_variables(req.think))
    messages = chat_messages(ref, req)
    images = [image for m in req.messages for image in decode_images(m.images)]
    check_images(ref, images)
    return GenerationRequest(model=ref, prompt=render(messages),
                             options=merged_options(ref, req.options),
                             keep_alive=req.keep_alive, images=images, format=req.format,
                             think=req.think, tools=list(req.tools) or None,
                             messages=messages, render=render, truncate=req.truncate,
                             shift=req.shift, logprobs=req.logprobs or req.top_logprobs > 0,
                             top_logprobs=req.top_logprobs)


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


async def start(backend: Backend, metrics: Metrics,
                request: GenerationRequest) -> Primed[GenerationChunk]:
    """Check the request's constraint, start the generation and wait for its first chunk
    (errors before it raise here)."""
    request = await constrained(request)
    return await prime(_counted(backend.generate(request), metrics, request.model.name))


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
