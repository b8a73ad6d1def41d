"""The real Runner: a loaded engine Model serving its decode slots with continuous batching.

One step loop (`run`) plans a batch over every active sequence, runs the forward pass and the
sampling in one worker-thread hop in its turn on the server's compute executor (shared with
every other loaded model, trio_llm.nursery.compute), and hands each request its new token.
Requests (`serve`) live in their callers' tasks; leaving — finished, stopped or cancelled —
frees the slot at once.
A request's prompt starts from the longest prefix the prompt cache holds (copied into its slot),
and once evaluated its prompt's KV goes into that cache for the requests after it. A finished
answer is evaluated again as prompt rows in its slot, in the background (any request needing the
slot takes it), and stored too: a chat's next turn then evaluates only what follows the answer.
"""

from __future__ import annotations

import codecs
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import trio

from trio_llm.engine.constraint import Constraint, LazyGrammarVocabulary, MaskPrefetch
from trio_llm.engine.context import Fit, common_prefix, fit_messages, fit_prompt
from trio_llm.engine.logprobs import TokenLogprob, describe
from trio_llm.engine.model import ON_GPU, Model, plan_model
from trio_llm.engine.prefix_cache import (
    BlockSpec,
    PrefixCache,
    PrefixMatch,
    Rows,
    read_blocks,
    ring_rows_held,
    windows_of,
    write_prefix,
)
from trio_llm.engine.sampler import Sampler, SamplerOptions
from trio_llm.engine.slots import BACKGROUND_DELAY, DoneReason, SlotTable, StepEvent, StepPlan
from trio_llm.engine.slots import Sequence as SlotSequence
from trio_llm.errors import TrioLLMError
from trio_llm.gpu.memory import MemoryEstimate
from trio_llm.gpu.placement import Placement
from trio_llm.limits import check_job
from trio_llm.nursery.compute import Compute, open_compute
from trio_llm.nursery.errors import RunnerStopped, StepFailed, raise_failure
from trio_llm.nursery.runner import LoadSpec
from trio_llm.options import default

SAMPLER_FIELDS = {f.name for f in fields(SamplerOptions)}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateJob:
    """Generate a continuation of `prompt` (already rendered; special tokens are parsed).

    A chat also gives its messages and the callable that renders a list of them (tools and
    template included), so that a prompt too long for the context can lose whole older
    messages (truncate); shift: at the end of the context, shift it (True) or stop."""

    prompt: str
    options: Mapping[str, Any] = field(default_factory=dict)
    context: Sequence[int] = ()          # tokens of an earlier exchange (/api/generate context)
    messages: Sequence[Mapping[str, Any]] = ()
    render: Callable[[Sequence[Mapping[str, Any]]], str] | None = None
    truncate: bool = True
    shift: bool = True
    constraint: Constraint | None = None  # every output token keeps this grammar satisfiable
    top_logprobs: int | None = None      # None: no logprobs; N: each token's and the top N


@dataclass(frozen=True)
class EmbedJob:
    """Pooled hidden states of each input, as the model pools (normalised by the API)."""

    inputs: Sequence[str]
    truncate: bool = True


@dataclass
class GenerateOutput:
    """A piece of generated text; the last one has done_reason and the statistics."""

    text: str
    done_reason: str | None = None
    prompt_eval_count: int = 0           # prompt tokens evaluated (Ollama's meaning)
    prompt_cache_count: int = 0          # prompt tokens whose KV came from the prompt cache
    prompt_eval_duration: int = 0        # nanoseconds
    eval_count: int = 0
    eval_duration: int = 0
    context: list[int] | None = None
    truncated_messages: int = 0          # older messages dropped to fit (on every output)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # this piece's tokens
    stop_sequence: str = ""              # last output: the stop string that ended it, if any


@dataclass
class EmbedOutput:
    embeddings: list[np.ndarray]      # float32, one per input
    prompt_eval_count: int
    truncated: list[int] = field(default_factory=list)   # indices of the inputs that were cut


class ContextTooLong(ValueError):
    """An embedding input longer than the context with truncate off."""


OPEN_ENDED_CONTEXTS = 10  # num_predict -1 generates at most this many contexts' worth (Ollama)


class ConstraintFailed(TrioLLMError):
    """The grammar matcher gave up mid-generation (an internal limit): the output so far is
    not trusted to complete, so the request ends in an error rather than a broken object."""


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
        self.matched = ""                    # the stop string that ended the text, if one did

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string was hit)."""
        if not self.stops:               # the usual case, once per token: nothing to hold
            return text, False
        self.pending += text
        hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if hits:
            at, self.matched = min(hits)
            out, self.pending = self.pending[:at], ""
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
    """A Model plus the slot table and the step loop that drives it; its forward passes run
    in its turns on `compute` (which lent the model its backend)."""

    def __init__(self, model: Model, spec: LoadSpec, compute: Compute) -> None:
        self.model = model
        self.spec = spec
        self.compute = compute
        # an encoder's table has more slots than requests (spec.n_slots): batched embeddings
        self.table = SlotTable(model.net.n_slots, model.net.n_ctx, model.net.max_batch,
                               spec.prefill_chunk)
        self._embedding = trio.Lock()    # one embedding request at a time takes the slots
        self._inboxes: dict[int, trio.MemorySendChannel[StepEvent | TrioLLMError]] = {}
        self._grammars = LazyGrammarVocabulary(model.tokenizer)
        self._masks = MaskPrefetch()
        self._work = trio.Event()
        self._changed = trio.Event()     # set after every step and table change (waiters recheck)
        net = model.net
        identity = repr((str(spec.model.path), spec.model.digest, net.n_ctx,
                         net.memory.kv_type, net.shape.kv_layers))
        self.prompt_cache = PrefixCache(identity, net.memory.prompt_cache,
                                        windows_of(net.cache))

    @property
    def n_slots(self) -> int:
        return self.spec.n_slots

    @property
    def memory(self) -> int:
        """The network's memory plan: what it was admitted by and what ps shows."""
        return self.model.net.memory.total

    async def run(self) -> None:
        """Plan, forward + sample in a worker thread, deliver tokens; until cancelled.
        Background work (answers evaluated for the prompt cache) waits until the whole
        executor has been quiet BACKGROUND_DELAY: an idle model's background steps would
        otherwise take turns from another model's streams."""
        while True:
            plan = self.table.plan()
            quiet = BACKGROUND_DELAY - (trio.current_time() - self.compute.foreground_at)
            if plan is None or (plan.idle_work and quiet > 0):
                with trio.move_on_after(quiet if plan is not None else math.inf):
                    await self._work.wait()
                self._work = trio.Event()
                continue
            events = await self._step_or_fail(plan)
            for event in events:
                inbox = self._inboxes.get(id(event.sequence))
                if inbox is not None:
                    inbox.send_nowait(event)
            for seq in self.table.background:
                if not seq.replay:       # its answer is prompt rows now: store it, free the slot
                    await self._publish(seq, seq.in_cache)
                    self.table.remove(seq)
            self._table_changed()

    def _table_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _step_or_fail(self, plan: StepPlan) -> list[StepEvent]:
        """One step in a worker thread. If it raises, every request of the step gets the
        error (its slot freed) and the loop goes on serving the others: nobody waits on."""
        try:
            return await self.compute.run(self, self._step, plan, background=plan.idle_work)
        except Exception as exc:
            self._fail(list(dict.fromkeys(seq for seq, _ in plan.fed)), StepFailed.of(exc))
            return []

    def _fail(self, sequences: Sequence[SlotSequence], error: TrioLLMError) -> None:
        """Hand `error` to each sequence's request and take it out of the table."""
        for seq in sequences:
            self.table.remove(seq)
            inbox = self._inboxes.pop(id(seq), None)
            if inbox is not None:
                inbox.send_nowait(error)

    def _step(self, plan: StepPlan) -> list[StepEvent]:
        return self.table.apply(plan, self._masks.forward(plan, self.model.net.forward))

    def serve(self, request: GenerateJob | EmbedJob) -> AsyncIterator[Any]:
        if isinstance(request, EmbedJob):
            return self._embed(request)
        return self._generate(request)

    async def _embed(self, job: EmbedJob) -> AsyncIterator[EmbedOutput]:
        token_lists, cut = await trio.to_thread.run_sync(self._embed_tokens, job)
        vectors: list[np.ndarray] = []
        for group in self._groups(token_lists):
            async with self._embedding:   # slots taken under the lock: none is another's
                slots = [self.table.reserve() for _ in group[: self._embed_slots()]]
                self._table_changed()     # a slot may have been a background answer's
                try:
                    vectors += await self.compute.run(self, self._pooled, group, slots)
                finally:
                    for slot in slots:
                        self.table.release(slot)
        yield EmbedOutput(vectors, sum(len(t) for t in token_lists), cut)

    def _embed_tokens(self, job: EmbedJob) -> tuple[list[list[int]], list[int]]:
        """Each input's tokens, cut to the context when truncate allows (blocking: a worker
        thread runs it), and the indices of the inputs that were cut."""
        n_ctx, tokenizer = self.model.net.n_ctx, self.model.tokenizer
        token_lists: list[list[int]] = []
        cut: list[int] = []
        for index, text in enumerate(job.inputs):
            ids = tokenizer.encode(text) or [tokenizer.bos_id or 0]
            if len(ids) > n_ctx:
                if not job.truncate:
                    raise ContextTooLong(f"input {index} is {len(ids)} tokens, but the context "
                                         f"is {n_ctx} tokens")
                log.info("embedding input %d of %d tokens cut to the context of %d", index,
                         len(ids), n_ctx)
                # a closing EOS ([SEP] of a BERT) stays: the text is cut, not the sequence
                ids = ids[: n_ctx - 1] + ids[-1:] if tokenizer.add_eos else ids[:n_ctx]
                cut.append(index)
            token_lists.append(ids)
        return token_lists, cut

    def _embed_slots(self) -> int:
        """Slots one embedding forward may use: every free one of an encoder (it never
        decodes), one of a decoder (its others belong to generations that may start now)."""
        return max(1, self.table.free_slots) if not self.model.net.shape.causal else 1

    def _groups(self, token_lists: list[list[int]]) -> list[list[list[int]]]:
        """The inputs in runs of one forward each: at most as many as there are KV slots and
        max_batch tokens (a longer input runs alone, chunked as a decoder's prompt is)."""
        net = self.model.net
        limit = net.n_slots if not net.shape.causal else 1
        groups: list[list[list[int]]] = []
        tokens = 0
        for ids in token_lists:
            if not groups or len(groups[-1]) >= limit or tokens + len(ids) > net.max_batch:
                groups.append([])
                tokens = 0
            groups[-1].append(ids)
            tokens += len(ids)
        return groups

    def _pooled(self, group: list[list[int]], slots: list[int]) -> list[np.ndarray]:
        """Pooled vectors of a group: together when each has a slot, else one at a time."""
        net = self.model.net
        pool = net.shape.pooling.pool
        if len(slots) >= len(group) and sum(map(len, group)) <= net.max_batch:
            return [pool(states) for states in net.hidden_states_of(group, slots)]
        return [pool(net.hidden_states(ids, slots[0])) for ids in group]

    def _fit(self, job: GenerateJob, num_predict: int) -> Fit:
        """The prompt's tokens, older messages dropped if it does not fit (PromptTooLong when
        it cannot); blocking (rendering, tokenizing), so it runs in a worker thread."""
        tokenizer, n_ctx = self.model.tokenizer, self.model.net.n_ctx
        if job.messages and job.render is not None:
            fit = fit_messages(job.messages, job.render, tokenizer.encode, n_ctx, num_predict,
                               job.truncate)
        else:
            # an empty prompt after a context continues it: no BOS/EOS of its own
            prompt = tokenizer.encode(job.prompt) if job.prompt or not job.context else []
            fit = fit_prompt(job.context, prompt, n_ctx, num_predict, job.truncate)
        if fit.dropped:
            log.info("%s: a prompt of %d tokens does not fit num_ctx %d: dropped the %d oldest "
                     "messages, %d tokens left", self.spec.name, fit.original, n_ctx,
                     fit.dropped, len(fit.tokens))
        return fit

    async def _start(self, seq: SlotSequence, found: PrefixMatch) -> None:
        """Put the sequence in the table, its slot first given the matched prefix's KV."""
        if not found.tokens:
            self.table.add(seq)
            self._table_changed()
            return
        slot = self.table.reserve()
        self._table_changed()
        try:   # while no step runs: the slot may be a background answer's, in a step now
            await self._exclusive(write_prefix, self.model.net.cache, slot, found)
            seq.cached = found.tokens
            self.table.add(seq, slot)
        finally:
            self.table.release(slot)     # a no-op once the sequence holds it

    def _take_answer_slot(self, seq: SlotSequence) -> int | None:
        """Start `seq` in the slot of a finished answer whose prompt rows there begin its prompt
        (a chat's next turn, sent at once) when that is more than the prompt cache holds: the
        rest of the answer and the new turn are then evaluated in one step, with no wait for
        the answer's background evaluation and no copies. Returns how many of the answer's own
        tokens that step evaluates again (None: not taken). Those are counted as cached, as in
        the background path: the model wrote them, and Ollama's runner keeps their KV (we
        evaluate them again only so that their rows have prompt rows' bits). Not with ring
        layers, whose rows the answer's own decode may have overwritten."""
        if not self.prompt_cache.enabled or any(windows_of(self.model.net.cache)):
            return None
        last = len(seq.prompt) - 1               # one prompt token is always evaluated
        best, best_n = None, 0
        for bg in self.table.background:
            n = min(common_prefix(bg.in_cache, seq.prompt), last)
            if n > best_n:
                best, best_n = bg, n
        if best is None or best_n < self.prompt_cache.min_reuse:
            return None
        found = self.prompt_cache.match(seq.prompt)
        self.prompt_cache.release(found)
        if found.tokens > best_n:
            return None
        written = min(common_prefix(best.prompt + best.generated, seq.prompt), last)
        seq.cached = best_n
        self.table.add(seq, best.slot)    # the answer leaves the table; its rows stay
        self._table_changed()
        return max(0, written - best_n)

    async def _await_answers(self, prompt: list[int]) -> None:
        """Wait while an earlier answer this prompt continues is being evaluated for the cache
        (at most that answer's tokens, which this prompt would evaluate anyway)."""
        def continued() -> bool:
            found = False
            for bg in self.table.background:
                n = len(bg.prompt)
                if (bg.generated and len(prompt) > n + 1 and prompt[n] == bg.generated[0]
                        and prompt[:n] == bg.prompt):
                    bg.urgent = found = True     # evaluated even while others decode
            return found

        while continued():
            self._work.set()
            await self._changed.wait()

    def _answer_to_cache(self, seq: SlotSequence) -> bool:
        """Whether the finished sequence's answer is worth evaluating again for the cache."""
        return (self.prompt_cache.enabled and seq.done is not None and not seq.shifts
                and seq.failure is None
                and bool(seq.generated) and seq.fed_prompt == len(seq.prompt)
                and len(seq.prompt) + len(seq.generated) <= self.table.n_ctx
                and 0 <= seq.slot < len(self.table.slots) and self.table.slots[seq.slot] is seq)

    async def _publish(self, seq: SlotSequence, tokens: list[int]) -> None:
        """Store the KV of `tokens`, the first of the sequence's slot, all evaluated as prompt
        rows, in the prompt cache: the blocks it does not hold yet (or holds without ring rows
        the slot still has)."""
        cache, kv = self.prompt_cache, self.model.net.cache
        if not cache.enabled:
            return
        specs = cache.chain(tokens)
        held = [ring_rows_held(kv, seq.position, spec.start) for spec in specs]
        todo = [spec for spec, want in zip(specs, cache.wanted(specs, held), strict=True)
                if want]
        rows = await self._exclusive(self._copy_out, seq, len(tokens), todo,
                                     background=seq.background) if todo else []
        if rows is not None:
            copied = dict(zip((spec.key for spec in todo), rows, strict=True))
            cache.insert(specs, [copied.get(spec.key) for spec in specs])

    async def _exclusive(self, work: Callable[..., Any], *args: Any,
                         background: bool = False) -> Any:
        """work(*args) in this model's turn on the compute executor: no forward pass runs
        (`background`: for an answer nobody waits for, Compute.run)."""
        return await self.compute.run(self, work, *args, background=background)

    def _copy_out(self, seq: SlotSequence, n: int, specs: Sequence[BlockSpec]
                  ) -> list[Rows] | None:
        """The blocks' rows from the sequence's slot, or None unless its first n positions are
        there as prompt rows (it may have left, or a context shift re-evaluated it); on the
        compute thread in this model's turn, so no step runs (a ring's rows move with each)."""
        rows_of_prompts = (not seq.replay and len(seq.in_cache) >= n) if seq.background \
            else seq.fed_prompt >= n
        if seq.shifts or not rows_of_prompts or not (
                0 <= seq.slot < len(self.table.slots) and self.table.slots[seq.slot] is seq):
            return None
        return read_blocks(self.model.net.cache, seq.slot, seq.position, specs)

    async def _generate(self, job: GenerateJob) -> AsyncIterator[GenerateOutput]:
        start = time.perf_counter_ns()
        tokenizer, n_ctx = self.model.tokenizer, self.model.net.n_ctx
        options = check_job(job.options, job.context, tokenizer.vocab_size)
        raw_predict = options.get("num_predict")
        num_predict = -1 if raw_predict is None else int(raw_predict)
        fit = await trio.to_thread.run_sync(self._fit, job, num_predict)
        prompt = fit.tokens or [tokenizer.bos_id or 0]
        dropped = fit.dropped
        keep = max(int(options.get("num_keep") or default("num_keep")), fit.keep)
        seq = SlotSequence(prompt, Sampler(sampler_options(options), tokenizer.vocab_size),
                           max_tokens=num_predict if num_predict >= 0
                           else OPEN_ENDED_CONTEXTS * n_ctx,
                           stop_ids=tokenizer.eot_ids, shift=job.shift, keep=keep,
                           top_logprobs=job.top_logprobs)
        if job.constraint is not None:  # an unusable grammar fails here, before any token
            seq.grammar = await trio.to_thread.run_sync(self._grammars.start, job.constraint)
        send, receive = trio.open_memory_channel[StepEvent | TrioLLMError](math.inf)
        stops = StopMatcher(stop_strings(options))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        first_token_at, count = 0, 0
        logprobs: list[TokenLogprob] = []              # of the tokens not yet handed out
        reason: str | None = DoneReason.LENGTH.value if num_predict == 0 else None
        found = PrefixMatch()
        publish = False          # the prompt is evaluated: store its KV after handing out a token
        answer_rows: int | None = None     # an answer's tokens evaluated again in its slot
        try:
            if reason is None:
                answer_rows = self._take_answer_slot(seq)
                if answer_rows is None:
                    await self._await_answers(prompt)
                    found = self.prompt_cache.match(prompt)
                    await self._start(seq, found)
                    self.prompt_cache.release(found)
                self._inboxes[id(seq)] = send
                self._work.set()
            while reason is None:
                if publish:
                    publish = False
                    await self._publish(seq, prompt)
                event = raise_failure(await receive.receive())
                publish = count == 0
                token = event.token
                if seq.failure is not None:
                    raise ConstraintFailed(f"constrained decoding failed: {seq.failure}")
                count += 1
                first_token_at = first_token_at or time.perf_counter_ns()
                if seq.done == DoneReason.STOP and token in tokenizer.eot_ids:
                    count -= 1                         # the end token is not part of the answer
                    text = ""
                else:   # never final: a reply cut inside a character ends before it
                    text = decoder.decode(tokenizer.token_bytes(token))
                    if event.logprobs is not None:
                        logprobs.append(describe(event.logprobs, tokenizer.token_bytes))
                reason = seq.done.value if seq.done is not None else None
                piece, hit = stops.feed(text)
                if hit:
                    reason = DoneReason.STOP.value
                if piece:
                    yield GenerateOutput(piece, truncated_messages=dropped, logprobs=logprobs)
                    logprobs = []
            if publish:          # the first token ended it: the slot still holds the prompt
                await self._publish(seq, prompt)
            if self._answer_to_cache(seq):
                seq.evaluate_answer()       # the step loop takes it from here
        finally:
            self.prompt_cache.release(found)
            self._inboxes.pop(id(seq), None)
            if not seq.background:
                self.table.remove(seq)
            self._work.set()
        end = time.perf_counter_ns()
        first = first_token_at or end
        yield GenerateOutput(
            stops.flush() if reason != DoneReason.STOP.value else "", done_reason=reason,
            prompt_eval_count=len(prompt) - seq.cached - (answer_rows or 0),
            prompt_cache_count=seq.cached + (answer_rows or 0),
            prompt_eval_duration=first - start, eval_count=count,
            eval_duration=end - first, context=prompt + seq.generated,
            truncated_messages=dropped, logprobs=logprobs, stop_sequence=stops.matched)

    async def aclose(self) -> None:
        self._fail(self.table.active, RunnerStopped())   # should the step loop have died

        self.prompt_cache.clear()

        def close() -> None:
            self._masks.close()
            self.model.close()

        await trio.to_thread.run_sync(close)


class EngineFactory:
    """Estimates and loads GGUF models for the scheduler, onto one compute executor."""

    def __init__(self) -> None:
        self._compute: Compute | None = None

    @asynccontextmanager
    async def open_compute(self) -> AsyncIterator[None]:
        """The executor every model loaded from here computes on, until the body ends."""
        if self._compute is not None:
            raise RuntimeError("this factory's compute executor is already open")
        async with open_compute() as compute:
            self._compute = compute
            try:
                yield
            finally:
                self._compute = None

    async def estimate(self, spec: LoadSpec) -> MemoryEstimate:
        """The loaded network's own memory plan, read from the file's header (nothing loaded)."""
        def estimate() -> MemoryEstimate:
            plan = plan_model(spec.model.path, spec.num_ctx, spec.n_slots, spec.num_batch,
                              spec.kv_cache_type, spec.prompt_cache)
            return plan.estimate(cpu_only=not ON_GPU)

        return await trio.to_thread.run_sync(estimate)

    async def load(self, spec: LoadSpec, placement: Placement) -> EngineRunner:
        compute = self._compute
        if compute is None:
            raise RuntimeError("load() outside open_compute()")
        # num_thread (0: every physical core) picks the shared backend of that many threads
        ops = compute.ops(spec.num_thread)

        def load() -> Model:
            return Model.load(spec.model.path, n_ctx=spec.num_ctx, n_slots=spec.n_slots,
                              max_batch=spec.num_batch, kv_type=spec.kv_cache_type, ops=ops,
                              prompt_cache=spec.prompt_cache)

        model = await trio.to_thread.run_sync(load)
        plan = model.net.memory
        if plan.kv_note:
            log.warning("%s: KV cache %s, not %s: %s", spec.name, plan.kv_type,
                        spec.kv_cache_type, plan.kv_note)
        log.info("%s: %d bytes (weights %d mapped + %d repacked, KV cache %s %d, scratch %d, "
                 "prompt cache %d)", spec.name, plan.total, plan.mapped_blocks + plan.mapped_other,
                 plan.packed, plan.kv_type, plan.kv, plan.scratch, plan.prompt_cache)
        return EngineRunner(model, spec, compute)
