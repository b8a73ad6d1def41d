"""A thinking budget, enforced: the reply may think for at most N tokens (Anthropic's
`thinking.budget_tokens`). The generation runs for N tokens; if it is still thinking then, the
closing tag of its thinking is written for it and the generation goes on from there (the
prompt and every token so far as its context) with what is left of max_tokens, so the model
answers after a thinking of at most N tokens. A reply that closed its thinking in time simply
goes on. The client sees one stream; the final chunk counts the prompt once and every token
written, the closing tag's included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from trio_llm.api import generation
from trio_llm.api.backend import Backend, GenerationChunk, GenerationRequest
from trio_llm.api.constraints import constrained
from trio_llm.api.metrics import Metrics
from trio_llm.api.streaming import Primed, prime
from trio_llm.errors import BadRequest


async def start(backend: Backend, metrics: Metrics, prepared: generation.Prepared,
                budget: int) -> Primed[GenerationChunk]:
    """generation.start, with the thinking held to `budget` tokens."""
    request = await constrained(prepared.request)
    if request.constraint is not None:
        raise BadRequest("thinking cannot be combined with a forced tool call or format: "
                         "the constrained answer leaves no room to think")
    return await prime(_budgeted(backend, metrics, prepared, request, budget))


async def _budgeted(backend: Backend, metrics: Metrics, prepared: generation.Prepared,
                    request: GenerationRequest, budget: int
                    ) -> AsyncIterator[GenerationChunk]:
    output = prepared.output
    limit = int(request.options.get("num_predict", -1))
    first_limit = budget if limit < 0 else min(budget, limit)
    first = replace(request, options={**request.options, "num_predict": first_limit})
    last = GenerationChunk(done=True, done_reason="stop")
    async with aclosing(generation.parsed(backend, metrics, first, output, flush=False)
                        ) as chunks:
        async for chunk in chunks:
            if chunk.done:
                last = chunk
            else:
                yield chunk
    more = -1 if limit < 0 else limit - last.eval_count
    if output is None or last.done_reason != "length" or more == 0 or last.context is None:
        rest = output.flush() if output is not None else None
        if rest is not None:
            last = replace(last, text=last.text + rest.text, thinking=last.thinking +
                           rest.thinking, tool_calls=[*last.tool_calls, *rest.tool_calls])
        yield last
        return
    closing = output.closing_thinking
    tokenizer = await backend.tokenizer(request.model)
    written = tokenizer.encode(closing + "\n", add_special=False) if closing else []
    piece = output.feed(closing + "\n" if closing else "")
    held = replace(last, done=False, done_reason=None, text=last.text + piece.text,
                   thinking=last.thinking + piece.thinking, context=None,
                   tool_calls=[*last.tool_calls, *piece.tool_calls])
    if held.text or held.thinking or held.tool_calls:
        yield held
    more = -1 if more < 0 else max(1, more - len(written))
    second = replace(request, prompt="", context=[*last.context, *written], messages=(),
                     render=None, images=(), options={**request.options, "num_predict": more})
    async with aclosing(generation.parsed(backend, metrics, second, output)) as chunks:
        async for chunk in chunks:
            if chunk.done:
                chunk = replace(
                    chunk, prompt_eval_count=last.prompt_eval_count,
                    prompt_cache_count=last.prompt_cache_count,
                    prompt_eval_duration=last.prompt_eval_duration,
                    eval_count=last.eval_count + len(written) + chunk.eval_count,
                    eval_duration=last.eval_duration + chunk.eval_duration,
                    load_duration=last.load_duration)
            yield chunk
