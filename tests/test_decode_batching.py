"""Batch invariance of decoding on the real SmolLM2 model: a sequence's decode logits have the
same bits whatever other sequences share its step, and wherever it sits in the batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trio_llm.engine.batch import Batch
from trio_llm.engine.model import Model

PROMPTS = [[504, 3575, 282, 4649, 314], [378, 3575, 282, 6171, 314, 8158, 30],
           [1, 2, 3], [7042, 30, 378, 3575, 282, 7044, 314, 260]]
NEXT = [260, 4649, 30, 504]  # the token each sequence decodes next


@pytest.fixture(scope="module", params=[False, True], ids=["simd", "scalar"])
def model(smollm2_path: Path, request: pytest.FixtureRequest) -> Model:
    m = Model.load(smollm2_path, n_ctx=64, n_slots=4, n_threads=2, scalar=request.param)
    for slot, prompt in enumerate(PROMPTS):
        m.net.forward(Batch.sequence(prompt, slot=slot))
    return m


def step(model: Model, seqs: list[int], prompt: list[int] | None = None) -> np.ndarray:
    """One decode step of the sequences `seqs` (in that order), optionally with a prompt chunk
    of a fresh sequence in slot 3 after them; the decode rows' logits. Re-running a step writes
    the same cache entries again, so every call sees the same history."""
    parts = [Batch.decode(NEXT[s], len(PROMPTS[s]), s) for s in seqs]
    if prompt is not None:
        parts.append(Batch.sequence(prompt, slot=3))
    return model.net.forward(Batch.join(parts))[: len(seqs)]


def test_decode_logits_have_the_same_bits_in_batches_of_1_to_4_in_any_position(
        model: Model) -> None:
    alone = {s: step(model, [s])[0] for s in range(4)}
    for seqs in ([0, 1], [1, 0], [2, 0, 1], [0, 2, 1], [3, 2, 1, 0], [1, 3, 0, 2], [0, 1, 2, 3]):
        got = step(model, seqs)
        for row, s in enumerate(seqs):
            np.testing.assert_array_equal(got[row], alone[s], err_msg=f"sequence {s} in {seqs}")


def test_decode_logits_do_not_change_when_a_prompt_shares_the_step(model: Model) -> None:
    alone = {s: step(model, [s])[0] for s in range(3)}
    got = step(model, [2, 0, 1], prompt=PROMPTS[3])
    for row, s in enumerate([2, 0, 1]):
        np.testing.assert_array_equal(got[row], alone[s])


def test_repacked_copies_take_the_bytes_of_the_matrices_they_copy(model: Model) -> None:
    """SmolLM2's matrices have whole tiles of 8 rows: the decode copy is exactly the GGML size
    (everything but the norm vectors; the tied embedding counts once, as the output)."""
    tensors = model.gguf.tensors.values()
    matrices = sum(t.nbytes for t in tensors if len(t.shape) == 2)
    assert model.net.packed_bytes == matrices
