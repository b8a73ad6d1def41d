"""Continuous batching plans: who feeds what each step, and what sampling does to sequences."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np
import pytest

from trio_llm.engine.slots import BACKGROUND_CHUNK, DoneReason, NoFreeSlot, Sequence, SlotTable

VOCAB = 10


class Argmax:
    """Stands in for the sampler (not under test here): picks the highest logit."""

    def sample(self, logits: np.ndarray, history: Seq[int]) -> int:
        return int(np.argmax(logits))


def logits_choosing(*tokens: int) -> np.ndarray:
    out = np.zeros((len(tokens), VOCAB), np.float32)
    out[np.arange(len(tokens)), tokens] = 1.0
    return out


def seq(prompt: list[int], **kw: object) -> Sequence:
    return Sequence(prompt, Argmax(), **kw)  # type: ignore[arg-type]


def test_prompt_is_fed_whole_then_one_token_per_step() -> None:
    table = SlotTable(n_slots=1, n_ctx=64)
    s = seq([1, 2, 3])
    table.add(s)
    plan = table.plan()
    assert plan is not None
    assert plan.batch.tokens.tolist() == [1, 2, 3]
    assert plan.batch.positions.tolist() == [0, 1, 2]
    assert plan.batch.logits_for.tolist() == [2]
    [event] = table.apply(plan, logits_choosing(7))
    assert event.token == 7 and event.done is None
    plan = table.plan()
    assert plan.batch.tokens.tolist() == [7] and plan.batch.positions.tolist() == [3]


def test_decoding_sequences_go_first_and_long_prompts_are_chunked() -> None:
    table = SlotTable(n_slots=2, n_ctx=64, max_batch=4)
    a, b = seq([1, 2]), seq([5, 5, 5, 5, 5, 5])
    table.add(a)
    table.apply(table.plan(), logits_choosing(8))   # a is now decoding
    table.add(b)
    plan = table.plan()
    assert plan.batch.tokens.tolist() == [8, 5, 5, 5]           # a's token, then 3 of b's prompt
    assert plan.batch.slots.tolist() == [0, 1, 1, 1]
    assert plan.readers == [a]                                  # b's prompt is unfinished
    table.apply(plan, logits_choosing(9))
    plan = table.plan()
    assert plan.batch.tokens.tolist() == [9, 5, 5, 5]
    assert plan.batch.positions.tolist() == [3, 3, 4, 5]
    assert plan.readers == [a, b]


def test_stop_token_and_num_predict_end_sequences() -> None:
    table = SlotTable(n_slots=2, n_ctx=64)
    stopper, counted = seq([1], stop_ids={0}), seq([1], max_tokens=2)
    table.add(stopper)
    table.add(counted)
    events = table.apply(table.plan(), logits_choosing(0, 4))
    assert [e.done for e in events] == [DoneReason.STOP, None]
    [event] = table.apply(table.plan(), logits_choosing(4))
    assert event.done == DoneReason.LENGTH
    assert table.plan() is None


def test_full_context_ends_with_length() -> None:
    table = SlotTable(n_slots=1, n_ctx=4)
    s = seq([1, 2, 3])
    table.add(s)
    table.apply(table.plan(), logits_choosing(5))
    [event] = table.apply(table.plan(), logits_choosing(5))
    assert event.done == DoneReason.LENGTH and s.position == 4


def test_slots_are_reused_after_removal() -> None:
    table = SlotTable(n_slots=1, n_ctx=16)
    first = seq([1])
    table.add(first)
    with pytest.raises(NoFreeSlot):
        table.add(seq([2]))
    table.remove(first)
    table.remove(first)
    second = seq([2])
    table.add(second)
    assert second.slot == 0 and table.free_slots == 0


def test_prompts_that_cannot_fit_are_refused() -> None:
    table = SlotTable(n_slots=1, n_ctx=4)
    with pytest.raises(ValueError):
        table.add(seq([]))
    with pytest.raises(ValueError, match="context"):
        table.add(seq([1, 2, 3, 4]))


def test_a_sequence_with_cached_tokens_starts_after_them_in_its_reserved_slot() -> None:
    table = SlotTable(n_slots=2, n_ctx=64)
    slot = table.reserve()
    s = seq([1, 2, 3, 4, 5], cached=3)
    table.add(s, slot)
    assert s.slot == slot and table.free_slots == 1 and not table.reserved
    plan = table.plan()
    assert plan is not None
    assert plan.batch.tokens.tolist() == [4, 5] and plan.batch.positions.tolist() == [3, 4]
    table.apply(plan, logits_choosing(7))
    assert s.in_cache == [1, 2, 3, 4, 5] and s.position == 5 and s.generated == [7]


def test_cached_tokens_need_a_reserved_slot_and_leave_the_last_prompt_token() -> None:
    table = SlotTable(n_slots=2, n_ctx=64)
    with pytest.raises(ValueError):
        table.add(seq([1, 2, 3], cached=2))          # no slot holds those rows
    with pytest.raises(ValueError):
        table.add(seq([1, 2, 3], cached=3), table.reserve())   # nothing left to evaluate
    taken = seq([9])
    table.add(taken)
    with pytest.raises(NoFreeSlot):
        table.add(seq([1, 2], cached=1), taken.slot)


def test_a_finished_answer_is_evaluated_again_last_and_gives_way_to_a_new_sequence() -> None:
    table = SlotTable(n_slots=1, n_ctx=64)
    done = seq([1, 2, 3], max_tokens=2)
    table.add(done)
    for chosen in (7, 8):
        plan = table.plan()
        assert plan is not None
        table.apply(plan, logits_choosing(chosen))
    assert done.done == DoneReason.LENGTH and done.generated == [7, 8]
    done.evaluate_answer()
    assert table.free_slots == 1 and table.background == [done]
    plan = table.plan()
    assert plan is not None and plan.readers == []          # prompt rows, nothing sampled
    assert plan.batch.tokens.tolist() == [7, 8] and plan.batch.positions.tolist() == [3, 4]
    assert plan.batch.n_decode == 0
    assert table.apply(plan, logits_choosing()) == []
    assert done.in_cache == [1, 2, 3, 7, 8] and not done.replay and table.plan() is None
    newer = seq([4, 5])
    table.add(newer)                                         # takes the background's slot
    assert newer.slot == done.slot and table.active == [newer] and table.background == []


def test_background_answers_wait_while_others_run_unless_a_request_waits_for_them() -> None:
    table = SlotTable(n_slots=2, n_ctx=64, max_batch=6)
    old = seq([1, 2, 3], max_tokens=2)
    table.add(old)
    for chosen in (9, 9):
        plan = table.plan()
        assert plan is not None
        table.apply(plan, logits_choosing(chosen))
    old.evaluate_answer()
    fresh = seq([5, 6, 7, 8])
    table.add(fresh)
    plan = table.plan()
    assert plan is not None and plan.batch.tokens.tolist() == [5, 6, 7, 8]
    table.apply(plan, logits_choosing(4))
    plan = table.plan()                                      # fresh decodes; old stays idle
    assert plan is not None and plan.batch.tokens.tolist() == [4]
    table.apply(plan, logits_choosing(4))
    old.urgent = True
    plan = table.plan()                                      # after every other sequence
    assert plan is not None and plan.batch.tokens.tolist() == [4, 9, 9]
    assert plan.readers == [fresh] and plan.batch.positions.tolist() == [5, 3, 4]


def test_an_answer_nobody_waits_for_is_evaluated_in_small_steps_an_arrival_can_cut_in() -> None:
    """A step cannot be interrupted: idle background work must not hold a whole batch."""
    answer_length = 2 * BACKGROUND_CHUNK + 5
    table = SlotTable(n_slots=2, n_ctx=512, max_batch=256)
    old = seq([1, 2, 3], max_tokens=answer_length)
    table.add(old)
    while old.done is None:
        plan = table.plan()
        assert plan is not None
        table.apply(plan, logits_choosing(*[9] * len(plan.readers)))
    old.evaluate_answer()
    plan = table.plan()
    assert plan is not None and len(plan.batch.tokens) == BACKGROUND_CHUNK
    table.apply(plan, logits_choosing())
    old.urgent = True                                        # a request waits for it now
    plan = table.plan()
    assert plan is not None and len(plan.batch.tokens) == answer_length - BACKGROUND_CHUNK


def test_a_step_that_decodes_takes_at_most_the_prefill_chunk_of_prompt_tokens() -> None:
    table = SlotTable(n_slots=2, n_ctx=64, max_batch=16, prefill_chunk=3)
    a, b = seq([1, 2]), seq([5] * 7)
    table.add(a)
    table.apply(table.plan(), logits_choosing(8))   # a is now decoding
    table.add(b)
    fed = []
    while b.prefilling:
        plan = table.plan()
        assert plan.batch.tokens.tolist()[0] == a.next_token and plan.readers[0] is a
        fed.append(len(plan.batch) - 1)
        table.apply(plan, logits_choosing(*[9] * len(plan.readers)))
    assert fed == [3, 3, 1]               # b's prompt in chunks, a's token in every step
    assert len(a.generated) == 4 and b.generated == [9]


def test_a_step_with_nothing_decoding_fills_the_whole_batch_with_prompt() -> None:
    table = SlotTable(n_slots=1, n_ctx=64, max_batch=16, prefill_chunk=3)
    table.add(seq([5] * 10))
    assert len(table.plan().batch) == 10


def test_waiting_prompts_are_evaluated_oldest_first_whatever_their_slots() -> None:
    table = SlotTable(n_slots=2, n_ctx=64, max_batch=4)
    gone, older = seq([1]), seq([2] * 4)
    table.add(gone)                       # slot 0
    table.add(older)                      # slot 1
    table.remove(gone)
    newer = seq([3] * 4)
    table.add(newer)                      # slot 0, ahead of `older` in slot order
    plan = table.plan()
    assert plan.batch.slots.tolist() == [1, 1, 1, 1] and plan.readers == [older]
