"""The real Runner: a loaded engine Model serving its decode slots with continuous batching.

One step loop (`run`) plans a batch over every active sequence, runs the forward pass and the
sampling in one worker-thread hop, and hands each request its new token. Requests (`serve`) live
in their callers' tasks; leaving — finished, stopped or cancelled — frees the slot at once.
"""

from __future__ import annotations

import codecs
import math
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import trio

from trio_llm.engine.gguf_file import read_gguf
from trio_llm.engine.model import Model
from trio_llm.engine.sampler import Sampler, SamplerOptions
from trio_llm.engine.slots import DoneReason, SlotTable, StepEvent, StepPlan
from trio_llm.engine.slots import Sequence as SlotSequence
from trio_llm.gpu.memory import MemoryEstimate, estimate_from_gguf
from trio_llm.gpu.placement import Placement
from trio_llm.nursery.runner import LoadSpec

SAMPLER_FIELDS = {f.name for f in fields(SamplerOptions)}


@dataclass(frozen=True)
class GenerateJob:
    """Generate a continuation of `prompt` (already rendered; special tokens are parsed)."""

    prompt: str
    options: Mapping[str, Any] = field(default_factory=dict)
    context: Sequence[int] = ()          # tokens of an earlier exchange (/api/generate context)


@dataclass(frozen=True)
class EmbedJob:
    """Mean-pooled hidden states of each input (normalised by the API)."""

    inputs: Sequence[str]
    truncate: bool = True


@dataclass
class GenerateOutput:
    """A piece of generated text; the last one has done_reason and the statistics."""

    text: str
    done_reason: str | None = None
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0        # nanoseconds
    eval_count: int = 0
    eval_duration: int = 0
    context: list[int] | None = None


@dataclass
class EmbedOutput:
    embeddings: list[list[float]]
    prompt_eval_count: int


class ContextTooLong(ValueError):
    """An embedding input longer than the context with truncate off."""


def sampler_options(options: Mapping[str, Any]) -> SamplerOptions:
    """SamplerOptions from request options (unknown or None values keep the defaults)."""
    chosen = {k: v for k, v in options.items() if k in SAMPLER_FIELDS and v is not None}
    return SamplerOptions(**chosen)


def stop_strings(options: Mapping[str, Any]) -> list[str]:
    stop = options.get("stop") or []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


class StopMatcher:
    """Holds back text that might start a stop string; reports the text before a full match."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string was hit)."""
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class EngineRunner:
    """A Model plus the slot table and the step loop that drives it."""

    def __init__(self, model: Model, spec: LoadSpec) -> None:
        self.model = model
        self.spec = spec
        self.table = SlotTable(spec.n_slots, model.net.n_ctx, model.net.max_batch)
        self._inboxes: dict[int, trio.MemorySendChannel[int]] = {}
        self._work = trio.Event()
        self._engine = trio.Lock()       # one forward pass at a time (step loop or embeddings)

    @property
    def n_slots(self) -> int:
        return self.spec.n_slots

    @property
    def memory(self) -> int:
        return self.model.weight_bytes + self.model.net.packed_bytes + self.model.net.kv_bytes

    async def run(self) -> None:
        """Plan, forward + sample in a worker thread, deliver tokens; until cancelled."""
        while True:
            plan = self.table.plan()
            if plan is None:
                await self._work.wait()
                self._work = trio.Event()
                continue
            async with self._engine:
                events = await trio.to_thread.run_sync(self._step, plan)
            for event in events:
                inbox = self._inboxes.get(id(event.sequence))
                if inbox is not None:
                    inbox.send_nowait(event.token)

    def _step(self, plan: StepPlan) -> list[StepEvent]:
        return self.table.apply(plan, self.model.net.forward(plan.batch))

    def serve(self, request: GenerateJob | EmbedJob) -> AsyncIterator[Any]:
        if isinstance(request, EmbedJob):
            return self._embed(request)
        return self._generate(request)

    async def _embed(self, job: EmbedJob) -> AsyncIterator[EmbedOutput]:
        n_ctx, tokenizer = self.model.net.n_ctx, self.model.tokenizer
        token_lists = []
        for text in job.inputs:
            ids = tokenizer.encode(text) or [tokenizer.bos_id or 0]
            if len(ids) > n_ctx:
                if not job.truncate:
                    raise ContextTooLong("input length exceeds maximum context length")
                ids = ids[:n_ctx]
            token_lists.append(ids)
        slot = self.table.reserve()
        try:
            async with self._engine:
                vectors = await trio.to_thread.run_sync(self._pooled, token_lists, slot)
        finally:
            self.table.release(slot)
        yield EmbedOutput(vectors, sum(len(t) for t in token_lists))

    def _pooled(self, token_lists: list[list[int]], slot: int) -> list[list[float]]:
        return [self.model.net.hidden_states(ids, slot).mean(axis=0, dtype=np.float64).tolist()
                for ids in token_lists]

    async def _generate(self, job: GenerateJob) -> AsyncIterator[GenerateOutput]:
        start = time.perf_counter_ns()
        tokenizer, n_ctx = self.model.tokenizer, self.model.net.n_ctx
        prompt = list(job.context) + tokenizer.encode(job.prompt)
        if len(prompt) >= n_ctx:                      # keep the most recent part, as Ollama does
            prompt = prompt[len(prompt) - (n_ctx - 1):]
        if not prompt:
            prompt = [tokenizer.bos_id or 0]
        options = job.options
        raw_predict = options.get("num_predict")
        num_predict = -1 if raw_predict is None else int(raw_predict)
        seq = SlotSequence(prompt, Sampler(sampler_options(options), tokenizer.vocab_size),
                           max_tokens=num_predict if num_predict >= 0 else -1,
                           stop_ids=tokenizer.eot_ids)
        send, receive = trio.open_memory_channel[int](math.inf)
        stops = StopMatcher(stop_strings(options))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        first_token_at, count = 0, 0
        reason: str | None = DoneReason.LENGTH.value if num_predict == 0 else None
        try:
            if reason is None:
                self.table.add(seq)
                self._inboxes[id(seq)] = send
                self._work.set()
            while reason is None:
                token = await receive.receive()
                count += 1
                first_token_at = first_token_at or time.perf_counter_ns()
                if seq.done == DoneReason.STOP and token in tokenizer.eot_ids:
                    count -= 1                         # the end token is not part of the answer
                    text = ""
                else:   # never final: a reply cut inside a character ends before it
                    text = decoder.decode(tokenizer.token_bytes(token))
                reason = seq.done.value if seq.done is not None else None
                piece, hit = stops.feed(text)
                if hit:
                    reason = DoneReason.STOP.value
                if piece:
                    yield GenerateOutput(piece)
        finally:
            self._inboxes.pop(id(seq), None)
            self.table.remove(seq)
            self._work.set()
        end = time.perf_counter_ns()
        first = first_token_at or end
        yield GenerateOutput(
            stops.flush() if reason != DoneReason.STOP.value else "", done_reason=reason,
            prompt_eval_count=len(prompt), prompt_eval_duration=first - start, eval_count=count,
            eval_duration=end - first, context=prompt + seq.generated)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.model.close)


class EngineFactory:
    """Estimates and loads GGUF models for the scheduler."""

    async def estimate(self, spec: LoadSpec) -> MemoryEstimate:
        def estimate() -> MemoryEstimate:
            gguf = read_gguf(spec.model.path)
            try:
                sizes = {name: t.nbytes for name, t in gguf.tensors.items()}
                return estimate_from_gguf(gguf.metadata, sizes, os.path.getsize(spec.model.path),
                                          spec.num_ctx, spec.n_slots, spec.kv_cache_type,
                                          spec.num_batch)
            finally:
                gguf.close()

        return await trio.to_thread.run_sync(estimate)

    async def load(self, spec: LoadSpec, placement: Placement) -> EngineRunner:
        def load() -> Model:
            return Model.load(spec.model.path, n_ctx=spec.num_ctx, n_slots=spec.n_slots,
                              n_threads=spec.num_thread, max_batch=spec.num_batch)

        return EngineRunner(await trio.to_thread.run_sync(load), spec)
