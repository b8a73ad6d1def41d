"""The llama forward pass on the real SmolLM2 model, against a float64 numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.reference_llama import ReferenceLlama
from trio_llm.engine.batch import Batch
from trio_llm.engine.generate import generate_text
from trio_llm.engine.model import Model
from trio_llm.engine.sampler import Sampler, SamplerOptions

PROMPT_20 = [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 6171, 314, 8158, 30, 378,
             3575, 282, 7044, 314, 260]


@pytest.fixture(scope="module")
def model(smollm2_path: Path) -> Model:
    return Model.load(smollm2_path, n_ctx=512, n_slots=2, n_threads=2)


@pytest.fixture(scope="module")
def reference(smollm2_path: Path) -> ReferenceLlama:
    return ReferenceLlama(smollm2_path)


@pytest.fixture(scope="module")
def reference_last_20(reference: ReferenceLlama) -> np.ndarray:
    """The float64 reference's last logits of PROMPT_20, once for the SIMD and scalar runs."""
    return reference.forward(PROMPT_20)[-1]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("scalar", [False, True], ids=["simd", "scalar"])
def test_last_logits_of_20_tokens_match_float64_reference(
        smollm2_path: Path, reference_last_20: np.ndarray, scalar: bool) -> None:
    model = Model.load(smollm2_path, n_ctx=64, n_threads=2, scalar=scalar)
    want = reference_last_20
    got = model.net.forward(Batch.sequence(PROMPT_20))[0]
    # Issue 2: within 1e-2. Plain int8 activations land at ~5% on this model; prompt rows and
    # their logits take TL_PATH_PRECISE (~15-bit activations), which lands near 0.1%.
    assert relative_error(got, want) < 1e-2
    assert int(np.argmax(got)) == int(np.argmax(want))


def test_decoding_token_by_token_matches_one_batch(model: Model) -> None:
    whole = model.net.forward(Batch.sequence(PROMPT_20, slot=1, all_logits=True))
    for pos, token in enumerate(PROMPT_20):
        step = model.net.forward(Batch.sequence([token], start=pos, slot=0))[0]
        assert relative_error(step, whole[pos]) < 1e-3


def test_greedy_continues_the_capital_of_france_with_paris(model: Model) -> None:
    text = generate_text(model, "The capital of France is", Sampler(SamplerOptions(temperature=0),
                         model.net.vocab_size), max_tokens=4)
    assert text.startswith(" Paris")


def test_the_same_seed_gives_the_same_text(model: Model) -> None:
    def sample(seed: int) -> str:
        options = SamplerOptions(temperature=1.0, top_k=0, top_p=1.0, seed=seed)
        return generate_text(model, "Once upon a time", Sampler(options,
                             model.net.vocab_size), max_tokens=24)

    first, second, other = sample(1234), sample(1234), sample(99)
    assert first == second
    assert first != other


def test_a_batch_of_two_prompts_equals_each_alone(model: Model) -> None:
    tok = model.tokenizer
    a = tok.encode("The capital of France is")
    b = tok.encode("def fibonacci(n):\n    return")
    alone_a = model.net.forward(Batch.sequence(a, slot=0, all_logits=True))
    alone_b = model.net.forward(Batch.sequence(b, slot=1, all_logits=True))
    both = model.net.forward(Batch.join([Batch.sequence(a, slot=0, all_logits=True),
                                         Batch.sequence(b, slot=1, all_logits=True)]))
    np.testing.assert_allclose(both[: len(a)], alone_a, rtol=0, atol=1e-3)
    np.testing.assert_allclose(both[len(a):], alone_b, rtol=0, atol=1e-3)


def test_a_decode_step_batched_with_a_prompt_keeps_both_results_bit_for_bit(
        model: Model) -> None:
    """Decode rows (int8) and prompt rows (precise) take their own paths, logits included."""
    tok = model.tokenizer
    a, b = tok.encode("The capital of France is"), tok.encode("def fibonacci(n):")
    model.net.forward(Batch.sequence(a, slot=0))
    step_alone = model.net.forward(Batch.decode(a[-1], len(a), slot=0))
    prompt_alone = model.net.forward(Batch.sequence(b, slot=1, all_logits=True))
    both = model.net.forward(Batch.join([Batch.decode(a[-1], len(a), slot=0),
                                         Batch.sequence(b, slot=1, all_logits=True)]))
    assert np.array_equal(both[:1], step_alone)
    assert np.array_equal(both[1:], prompt_alone)


def test_batches_larger_than_max_batch_are_split(smollm2_path: Path) -> None:
    small = Model.load(smollm2_path, n_ctx=64, n_threads=2, max_batch=7)
    big = Model.load(smollm2_path, n_ctx=64, n_threads=2)
    got = small.net.forward(Batch.sequence(PROMPT_20, all_logits=True))
    want = big.net.forward(Batch.sequence(PROMPT_20, all_logits=True))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def test_out_of_range_batches_are_refused(model: Model) -> None:
    with pytest.raises(ValueError, match="context"):
        model.net.forward(Batch.sequence([1], start=512))
    with pytest.raises(ValueError, match="slot"):
        model.net.forward(Batch.sequence([1], slot=2))
    with pytest.raises(ValueError, match="vocabulary"):
        model.net.forward(Batch.sequence([49152]))
