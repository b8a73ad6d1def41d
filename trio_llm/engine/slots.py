"""Continuous batching as a pure step: plan which tokens each sequence feeds, then apply logits.

`SlotTable.plan()` packs one batch from every active sequence — the next token of those that
are decoding, and chunks of the prompts of newly admitted ones, oldest first — so a single
forward pass serves them all. While anything decodes, a step takes at most `prefill_chunk`
prompt tokens: a new request's prompt starts at the next step, and the running streams keep
getting a token per step while it is evaluated, a chunk at a time. `SlotTable.apply()` samples
each sequence's next token from its logits row and reports what happened. No event loop and no
model here: the runner calls forward() between the two. A sequence with a grammar samples only
what its grammar allows and ends when the grammar is complete; one without pays nothing for the
others' grammars. A background sequence (a finished answer evaluated again as prompt rows, for
the prompt cache) samples nothing, runs only in steps nothing else needs (unless a request waits
for it: `urgent`, then after every other prompt), and gives up its slot to whoever needs one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from trio_llm.engine.batch import Batch
from trio_llm.engine.context import shifted
from trio_llm.engine.logprobs import StepLogprobs, step_logprobs

if TYPE_CHECKING:
    from trio_llm.engine.constraint import GrammarState
    from trio_llm.engine.sampler import Sampler

# Answer tokens re-evaluated per step when no request waits for them: a step cannot be
# interrupted, so a request that arrives meanwhile waits for at most this many prompt rows
# (~0.1 s here) before its own prompt starts.
BACKGROUND_CHUNK = 32
# ... and the first of those steps waits until the table has been idle this long: requests
# come in bursts (a client's next one right after its last answer), and a prompt step costs
# its weight packing whatever its rows, so a background step started at once would make the
# burst's prompts wait a whole step (~70 ms here). An answer someone continues is urgent and
# never waits.
BACKGROUND_DELAY = 0.15   # seconds


class DoneReason(StrEnum):
    """Why a sequence stopped, with Ollama's `done_reason` spelling."""

    STOP = "stop"        # an end-of-generation token, or the grammar is complete
    LENGTH = "length"    # num_predict reached, or the context is full


class NoFreeSlot(RuntimeError):
    """Every KV slot is taken; the caller must wait for one."""


@dataclass
class Sequence:
    """One request's generation: its slot, what it still has to feed, what it produced."""

    prompt: list[int]
    sampler: Sampler
    max_tokens: int = -1                 # num_predict; negative: until stop or context end
    stop_ids: Collection[int] = ()
    slot: int = -1
    position: int = 0                    # tokens already in the KV cache
    fed_prompt: int = 0                  # prompt tokens already evaluated
    cached: int = 0                      # leading prompt tokens whose KV was copied in (reused)
    background: bool = False             # re-evaluating its answer as prompt rows; preemptible
    urgent: bool = False                 # ... and a request waits for it to finish
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None        # sampled, not yet fed
    done: DoneReason | None = None
    shift: bool = False                  # at the end of the context: shift (True) or stop
    keep: int = 0                        # leading tokens a shift keeps (num_keep, the system)
    in_cache: list[int] = field(default_factory=list)  # the tokens the KV cache holds, in order
    replay: list[int] = field(default_factory=list)    # after a shift: tokens to re-evaluate
    shifts: int = 0
    grammar: GrammarState | None = None  # the constraint's matcher, when there is one
    top_logprobs: int | None = None      # report log-probabilities (with this many top tokens)
    failure: str | None = None           # the grammar broke down: the sequence ends in error
    admitted: int = -1                   # arrival order in the table (prompts go oldest first)

    @property
    def history(self) -> list[int]:
        return self.prompt + self.generated

    @property
    def prefilling(self) -> bool:
        return bool(self.replay) or self.fed_prompt < len(self.prompt)

    @property
    def pending(self) -> list[int]:
        """Tokens to evaluate before the next sample: the prompt's rest, or a shift's replay."""
        return self.replay if self.replay else self.prompt[self.fed_prompt:]

    def evaluate_answer(self) -> None:
        """Finished: evaluate what it generated again, as prompt rows after the prompt (their
        bits then match evaluating them as a later prompt's prefix), in the background."""
        self.background, self.done, self.next_token = True, None, None
        self.position, self.in_cache = len(self.prompt), list(self.prompt)
        self.replay = list(self.generated)

    def shift_context(self, token: int) -> bool:
        """The cache is full and `token` was just sampled: keep the first `keep` tokens and the
        newer half of the rest, to be re-evaluated from position 0 with `token` after them
        (positions stay consistent). False when nothing can go."""
        kept = shifted(self.in_cache, self.keep)
        if kept is None:
            return False
        self.replay, self.in_cache, self.position = kept + [token], [], 0
        self.shifts += 1
        return True


@dataclass(frozen=True)
class StepPlan:
    """One batch, and for each logits row the sequence it belongs to."""

    batch: Batch
    readers: list[Sequence]
    fed: list[tuple[Sequence, int]]      # (sequence, how many tokens it feeds this step)

    @property
    def idle_work(self) -> bool:
        """Only answers nobody waits for: work that can wait for a quiet moment."""
        return all(seq.background and not seq.urgent for seq, _ in self.fed)


@dataclass(frozen=True)
class StepEvent:
    """A sequence sampled `token`; `done` is set when that ends the sequence."""

    sequence: Sequence
    token: int
    done: DoneReason | None
    logprobs: StepLogprobs | None = None


class SlotTable:
    """Assigns KV slots to sequences and plans batched steps over them."""

    def __init__(self, n_slots: int, n_ctx: int, max_batch: int = 512,
                 prefill_chunk: int = 0) -> None:
        self.n_ctx, self.max_batch = n_ctx, max_batch
        # prompt tokens in a step that also decodes (0 or more than a batch: the whole batch)
        self.prefill_chunk = min(prefill_chunk, max_batch) if prefill_chunk > 0 else max_batch
        self.slots: list[Sequence | None] = [None] * n_slots
        self.reserved: set[int] = set()    # slots lent out for other work (embeddings)
        self._admitted = 0

    @property
    def free_slots(self) -> int:
        """Slots a request may take now (a background sequence's included)."""
        return sum(s is None or s.background for s in self.slots) - len(self.reserved)

    @property
    def background(self) -> list[Sequence]:
        return [s for s in self.slots if s is not None and s.background]

    def _free_slot(self) -> int:
        """A free slot, else the slot of a background sequence (which leaves the table)."""
        for i, s in enumerate(self.slots):
            if s is None and i not in self.reserved:
                return i
        for i, s in enumerate(self.slots):
            if s is not None and s.background:
                self.slots[i] = None
                return i
        raise NoFreeSlot("no free KV slot")

    def reserve(self) -> int:
        """Take a free slot for work outside the plan (its KV rows are the caller's)."""
        slot = self._free_slot()
        self.reserved.add(slot)
        return slot

    def release(self, slot: int) -> None:
        self.reserved.discard(slot)

    @property
    def active(self) -> list[Sequence]:
        return [s for s in self.slots if s is not None]

    def add(self, seq: Sequence, slot: int | None = None) -> None:
        """Give the sequence a free slot (its KV rows are simply overwritten from position 0),
        or the slot the caller reserved for it, whose rows already hold the KV of the first
        `seq.cached` prompt tokens (the prompt cache's): evaluation starts after them."""
        if not seq.prompt:
            raise ValueError("a sequence needs at least one prompt token")
        if len(seq.prompt) >= self.n_ctx:
            raise ValueError(f"prompt of {len(seq.prompt)} tokens does not fit the context "
                             f"of {self.n_ctx}")
        if not 0 <= seq.cached < len(seq.prompt) or (seq.cached and slot is None):
            raise ValueError("cached tokens need a reserved slot and one prompt token left")
        if slot is None:
            slot = self._free_slot()
        elif (held := self.slots[slot]) is not None and not held.background:
            raise NoFreeSlot(f"KV slot {slot} is taken")
        self.reserved.discard(slot)
        seq.slot = slot
        if seq.cached:
            seq.position = seq.fed_prompt = seq.cached
            seq.in_cache = list(seq.prompt[: seq.cached])
        seq.admitted, self._admitted = self._admitted, self._admitted + 1
        self.slots[slot] = seq

    def remove(self, seq: Sequence) -> None:
        """Free the sequence's slot (finished or cancelled); safe to call twice."""
        if 0 <= seq.slot < len(self.slots) and self.slots[seq.slot] is seq:
            self.slots[seq.slot] = None

    def plan(self) -> StepPlan | None:
        """The next batch: every decoding sequence's token first, then prompt chunks of the
        oldest waiting prompts (at most prefill_chunk tokens of them if anything decodes).
        Built as flat lists and turned into arrays once: it runs between every two steps."""
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        wanted: list[int] = []              # rows whose logits come back
        readers: list[Sequence] = []
        fed: list[tuple[Sequence, int]] = []
        waiting: list[Sequence] = []
        for seq in self.active:
            if seq.done is not None:
                continue
            if seq.prefilling:
                waiting.append(seq)
            elif seq.next_token is not None and len(tokens) < self.max_batch:
                wanted.append(len(tokens))
                tokens.append(seq.next_token)
                positions.append(seq.position)
                slots.append(seq.slot)
                readers.append(seq)
                fed.append((seq, 1))
        n_decode = len(tokens)
        budget = self.max_batch - n_decode
        if n_decode:
            budget = min(budget, self.prefill_chunk)
        idle = all(s.background for s in self.active)
        waiting = [s for s in waiting if not s.background or idle or s.urgent]
        spare = BACKGROUND_CHUNK      # rows of answers nobody waits for, this step
        for seq in sorted(waiting, key=lambda s: (s.background, s.admitted)):   # answers last
            if not budget:
                break
            pending = seq.pending
            if seq.background and not seq.urgent:
                if not spare:
                    continue
                chunk = pending[:min(budget, spare)]
                spare -= len(chunk)
            else:
                chunk = pending[:budget]
            tokens += chunk
            positions += range(seq.position, seq.position + len(chunk))
            slots += [seq.slot] * len(chunk)
            if len(chunk) == len(pending) and not seq.background:
                wanted.append(len(tokens) - 1)
                readers.append(seq)
            fed.append((seq, len(chunk)))
            budget -= len(chunk)
        if not tokens:
            return None
        batch = Batch(np.array(tokens, np.int32), np.array(positions, np.int32),
                      np.array(slots, np.int32), np.array(wanted, np.int32), n_decode=n_decode)
        return StepPlan(batch, readers, fed)

    def apply(self, plan: StepPlan, logits: np.ndarray) -> list[StepEvent]:
        """Advance every sequence past what it fed; sample a token for each logits row."""
        for seq, n in plan.fed:
            if seq.replay:
                seq.in_cache += seq.replay[:n]
                del seq.replay[:n]
            elif seq.prefilling:
                seq.in_cache += seq.prompt[seq.fed_prompt: seq.fed_prompt + n]
                seq.fed_prompt += n
            elif seq.next_token is not None:
                seq.in_cache.append(seq.next_token)
            seq.position += n
            seq.next_token = None
        events = []
        for seq, row in zip(plan.readers, logits, strict=True):
            grammar = seq.grammar
            if grammar is None:
                allowed = None
                token = seq.sampler.sample(row, seq.history)
            else:
                allowed = grammar.allowed()
                token = seq.sampler.sample(row, seq.history, allowed)
            logprobs = None
            if seq.top_logprobs is not None:
                logprobs = step_logprobs(row[: seq.sampler.vocab_size], token,
                                         seq.top_logprobs, allowed)
            seq.generated.append(token)
            if token in seq.stop_ids:
                seq.done = DoneReason.STOP
            elif grammar is not None and self._grammar_ends(seq, grammar, token):
                seq.done = DoneReason.STOP
            elif len(seq.generated) == seq.max_tokens:
                seq.done = DoneReason.LENGTH
            elif seq.position >= self.n_ctx:
                if not (seq.shift and seq.shift_context(token)):
                    seq.done = DoneReason.LENGTH
            else:
                seq.next_token = token
            events.append(StepEvent(seq, token, seq.done, logprobs))
        return events

    @staticmethod
    def _grammar_ends(seq: Sequence, grammar: GrammarState, token: int) -> bool:
        """Feed the grammar its token: whether that completes it (or breaks it: `failure`)."""
        grammar.consume(token)
        seq.failure = grammar.error
        return seq.failure is not None or grammar.finished
