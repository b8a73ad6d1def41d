"""Context policy: which messages a too-long prompt loses, what a 400 says, how a full context
shifts in the slot table (pure rules, checked against a brute-force statement of them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trio_llm.engine.context import (
    PromptTooLong,
    answer_room,
    fit_messages,
    fit_prompt,
    shifted,
)
from trio_llm.engine.model import Model
from trio_llm.engine.sampler import Sampler
from trio_llm.engine.slots import DoneReason, SlotTable
from trio_llm.engine.slots import Sequence as SlotSequence
from trio_llm.nursery.engine_runner import sampler_options


def render(messages: Sequence[Mapping[str, Any]]) -> str:
    """A chat 'template': one line per message, then the assistant's turn."""
    return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"


def encode(text: str) -> list[int]:
    """One token per character: lengths are easy to reason about."""
    return [ord(c) for c in text]


def chat(*sizes: int, system: str = "be brief") -> list[dict[str, str]]:
    turns = [{"role": "system", "content": system}] if system else []
    for i, n in enumerate(sizes):
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": str(i) * n})
    return turns


def brute_force(messages: list[dict[str, str]], n_ctx: int, room: int) -> tuple[int, int]:
    """(messages dropped, tokens left) by the rule itself: drop the oldest message that is
    neither a system message nor the last, one at a time, until the prompt leaves room."""
    kept = list(messages)
    dropped = 0
    while len(encode(render(kept))) > n_ctx - room:
        candidates = [m for m in kept[:-1] if m["role"] != "system"]
        if not candidates:
            break
        kept.remove(candidates[0])
        dropped += 1
    return dropped, len(encode(render(kept)))


def test_a_prompt_that_fits_is_left_whole() -> None:
    messages = chat(10, 10, 10)
    fit = fit_messages(messages, render, encode, n_ctx=4096)
    assert fit.dropped == 0 and fit.tokens == encode(render(messages))


@pytest.mark.parametrize("sizes", [(300, 300, 300, 300, 50), (1000, 10, 10, 10, 10, 10, 10, 20),
                                   (200,) * 11, (5, 900)])
def test_whole_older_messages_are_dropped_oldest_first_as_the_rule_says(sizes: tuple[int, ...]
                                                                      ) -> None:
    messages = chat(*sizes)
    n_ctx = 1024
    fit = fit_messages(messages, render, encode, n_ctx, num_predict=100)
    assert (fit.dropped, len(fit.tokens)) == brute_force(messages, n_ctx, 100)
    text = "".join(chr(t) for t in fit.tokens)
    assert text.startswith("<system>be brief\n")            # the system prompt survives
    assert text.endswith(f"{messages[-1]['content']}\n<assistant>")  # so does the last message
    assert fit.original == len(encode(render(messages)))


def test_system_messages_anywhere_are_never_dropped() -> None:
    messages = chat(400, 400, system="")
    messages.insert(1, {"role": "system", "content": "keep me"})
    messages.append({"role": "user", "content": "last"})
    fit = fit_messages(messages, render, encode, n_ctx=600)
    text = "".join(chr(t) for t in fit.tokens)
    assert "keep me" in text and text.endswith("<user>last\n<assistant>")
    assert (fit.dropped, len(fit.tokens)) == brute_force(messages, 600, answer_room(600, -1))
    assert fit.dropped == 1


def test_a_last_message_that_alone_does_not_fit_is_refused_not_cut() -> None:
    with pytest.raises(PromptTooLong, match=r"^prompt is 2\d\d\d tokens, but the context is "
                                            r"1024 tokens$"):
        fit_messages(chat(10, 2000), render, encode, n_ctx=1024)


def test_without_truncation_a_prompt_that_does_not_fit_is_refused_with_both_counts() -> None:
    messages = chat(600, 600)
    n = len(encode(render(messages)))
    with pytest.raises(PromptTooLong) as caught:
        fit_messages(messages, render, encode, n_ctx=1024, truncate=False)
    assert (caught.value.n_tokens, caught.value.n_ctx) == (n, 1024)
    assert str(caught.value) == f"prompt is {n} tokens, but the context is 1024 tokens"
    # truncate off never drops, even when the prompt fits but leaves little room
    assert fit_messages(chat(500, 400), render, encode, 1024, truncate=False).dropped == 0


def test_the_system_prompt_is_what_a_shift_keeps() -> None:
    messages = chat(50, 50)
    fit = fit_messages(messages, render, encode, n_ctx=4096)
    system = len("<system>be brief\n")  # (plus any characters both renderings share next)
    assert system <= fit.keep < system + len("<user>")
    assert fit_messages(chat(50, system=""), render, encode, 4096).keep == 0


def test_generate_drops_the_earlier_exchange_whole_never_the_prompt() -> None:
    context, prompt = list(range(900)), list(range(200))
    fit = fit_prompt(context, prompt, n_ctx=1024, num_predict=100)
    assert fit.tokens == prompt and fit.dropped == 1
    assert fit_prompt(context[:100], prompt, 1024).tokens == context[:100] + prompt
    with pytest.raises(PromptTooLong, match="prompt is 1100 tokens, but the context is 1024"):
        fit_prompt(context, prompt, n_ctx=1024, truncate=False)
    with pytest.raises(PromptTooLong, match="prompt is 2000 tokens"):
        fit_prompt([], list(range(2000)), n_ctx=1024)


def test_room_to_answer() -> None:
    assert answer_room(4096, -1) == 256 and answer_room(4096, 100) == 100
    assert answer_room(512, 1000) == 128


def test_a_shift_keeps_the_first_tokens_and_the_newer_half_of_the_rest() -> None:
    assert shifted(list(range(10)), 2) == [0, 1, 6, 7, 8, 9]
    assert shifted([1, 2, 3], 3) is None


# ---------------------------------------------------------------- the slot table at the edge

class Argmax:
    def sample(self, logits: np.ndarray, history: Sequence[int]) -> int:
        return int(np.argmax(logits))


def run(table: SlotTable, seq: SlotSequence, steps: int) -> list[tuple[list[int], list[int]]]:
    """Drive plan/apply, choosing token 100 + step each time; the batches' (tokens, positions)."""
    batches = []
    for step in range(steps):
        plan = table.plan()
        if plan is None:
            break
        batches.append((plan.batch.tokens.tolist(), plan.batch.positions.tolist()))
        logits = np.zeros((len(plan.readers), 200), np.float32)
        logits[:, 100 + step] = 1.0
        table.apply(plan, logits)
    return batches


def test_without_shift_generation_stops_with_length_at_the_context_end() -> None:
    table = SlotTable(1, n_ctx=8)
    seq = SlotSequence([1, 2, 3, 4, 5], Argmax(), shift=False)  # type: ignore[arg-type]
    table.add(seq)
    run(table, seq, 20)
    assert seq.done == DoneReason.LENGTH and seq.position == 8 and len(seq.generated) == 4


def test_a_shift_re_evaluates_the_kept_tokens_from_position_zero() -> None:
    table = SlotTable(1, n_ctx=8)
    seq = SlotSequence([1, 2, 3, 4, 5], Argmax(), shift=True, keep=2,  # type: ignore[arg-type]
                       max_tokens=10)
    table.add(seq)
    batches = run(table, seq, 30)
    # prompt, 3 decode steps fill the 8 positions (the 4th sampled token has no room)
    assert batches[0] == ([1, 2, 3, 4, 5], [0, 1, 2, 3, 4])
    assert [b[1] for b in batches[1:4]] == [[5], [6], [7]]
    # the cache held [1 2 3 4 5 100 101 102]; keep 2, drop half of the other 6, replay with 103
    assert batches[4] == ([1, 2, 100, 101, 102, 103], [0, 1, 2, 3, 4, 5])
    assert batches[5] == ([104], [6])
    # a second shift at the next edge keeps [1 2] and the newer half again
    assert batches[7] == ([1, 2, 103, 104, 105, 106], [0, 1, 2, 3, 4, 5])
    assert seq.shifts == 2 and seq.done == DoneReason.LENGTH
    assert seq.generated == list(range(100, 110))  # every sampled token is in the answer
    for tokens, positions in batches:  # positions always run on from the cached ones
        assert positions == list(range(positions[0], positions[0] + len(tokens)))


# ---------------------------------------------------------------- a real model at the edge

def test_after_a_shift_the_model_continues_as_from_a_fresh_prompt(smollm2_path: Path) -> None:
    """Greedy SmolLM2 in a 64-token context: what it generates after the shift equals what it
    generates from the kept tokens as a new prompt, so the re-evaluated positions are right."""
    model = Model.load(smollm2_path, n_ctx=64, max_batch=32)
    try:
        greedy = sampler_options({"temperature": 0})
        prompt = model.tokenizer.encode("Once upon a time, in a small village by the sea, "
                                        "there lived an old fisherman who")
        table = SlotTable(1, 64, 32)
        seq = SlotSequence(prompt, Sampler(greedy, model.net.vocab_size), max_tokens=70,
                           shift=True, keep=4)
        table.add(seq)
        replay: list[int] = []
        after: list[int] = []
        while seq.done is None:
            plan = table.plan()
            assert plan is not None
            table.apply(plan, model.net.forward(plan.batch))
            if seq.shifts == 1 and not replay:
                replay = list(seq.replay)
                start = len(seq.generated)
            elif seq.shifts == 1:
                after = seq.generated[start:]
        assert replay[:4] == prompt[:4] and len(after) >= 8
        table.remove(seq)
        fresh = SlotSequence(replay, Sampler(greedy, model.net.vocab_size),
                             max_tokens=len(after))
        table.add(fresh)
        while fresh.done is None:
            plan = table.plan()
            assert plan is not None
            table.apply(plan, model.net.forward(plan.batch))
        assert fresh.generated == after
    finally:
        model.close()
