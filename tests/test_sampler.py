"""The sampler: greedy, penalties, top-k / top-p / min-p filtering, seeded draws."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trio_llm.engine.sampler import Sampler, SamplerOptions

NO_FILTERS = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}


def _probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    e = np.exp((logits - logits.max()) / temperature)
    return e / e.sum()


def _draws(sampler: Sampler, logits: np.ndarray, n: int, history: list[int] = ()) -> np.ndarray:
    return np.array([sampler.sample(logits, history) for _ in range(n)])


@settings(max_examples=100, deadline=None)
@given(logits=arrays(np.float32, st.integers(1, 300), elements=st.floats(-50, 50, width=32)))
def test_temperature_zero_is_argmax_with_ties_to_the_lowest_id(logits: np.ndarray) -> None:
    sampler = Sampler(SamplerOptions(temperature=0.0), logits.shape[0])
    assert sampler.sample(logits, []) == int(np.flatnonzero(logits == logits.max())[0])


def test_greedy_ties_pick_the_lowest_id() -> None:
    logits = np.array([0.0, 3.0, 1.0, 3.0], dtype=np.float32)
    assert Sampler(SamplerOptions(temperature=0.0), 4).sample(logits, []) == 1


def test_top_k_one_is_argmax_whatever_the_temperature() -> None:
    rng = np.random.default_rng(3)
    for seed in range(20):
        logits = rng.standard_normal(49152).astype(np.float32)
        sampler = Sampler(SamplerOptions(top_k=1, temperature=1.5, seed=seed), 49152)
        assert sampler.sample(logits, []) == int(np.argmax(logits))


def test_same_seed_same_tokens_and_no_seed_differs() -> None:
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    opts = SamplerOptions(temperature=1.0, **NO_FILTERS, seed=42)
    first = _draws(Sampler(opts, 1000), logits, 50)
    again = _draws(Sampler(opts, 1000), logits, 50)
    other = _draws(
        Sampler(SamplerOptions(temperature=1.0, **NO_FILTERS, seed=43), 1000), logits, 50
    )
    unseeded = SamplerOptions(temperature=1.0, **NO_FILTERS)
    assert (first == again).all()
    assert (first != other).any()
    assert (
        _draws(Sampler(unseeded, 1000), logits, 50) != _draws(Sampler(unseeded, 1000), logits, 50)
    ).any()


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = np.array([2.0, -1.0, 4.0, 1.0, -3.0], dtype=np.float32)
    sampler = Sampler(SamplerOptions(repeat_penalty=2.0, repeat_last_n=64), 5)
    out = sampler.apply_penalties(logits, [0, 1, 0, 4])
    np.testing.assert_allclose(out, [1.0, -2.0, 4.0, 1.0, -6.0])
    np.testing.assert_array_equal(logits, [2.0, -1.0, 4.0, 1.0, -3.0])  # caller's array kept


def test_presence_subtracts_once_and_frequency_per_occurrence() -> None:
    logits = np.zeros(4, dtype=np.float32)
    opts = SamplerOptions(presence_penalty=0.5, frequency_penalty=0.25, repeat_last_n=-1)
    out = Sampler(opts, 4).apply_penalties(logits, [1, 1, 1, 2])
    np.testing.assert_allclose(out, [0.0, -0.5 - 0.75, -0.5 - 0.25, 0.0])


def test_penalties_read_only_the_last_n_tokens() -> None:
    logits = np.ones(6, dtype=np.float32)
    history = [0, 1, 2, 3, 4]
    window = Sampler(SamplerOptions(repeat_penalty=2.0, repeat_last_n=2), 6)
    np.testing.assert_allclose(window.apply_penalties(logits, history), [1, 1, 1, 0.5, 0.5, 1])
    whole = Sampler(SamplerOptions(repeat_penalty=2.0, repeat_last_n=-1), 6)
    np.testing.assert_allclose(whole.apply_penalties(logits, history), [0.5] * 5 + [1])
    off = Sampler(SamplerOptions(repeat_penalty=2.0, repeat_last_n=0), 6)
    np.testing.assert_array_equal(off.apply_penalties(logits, history), logits)
    ignored = Sampler(SamplerOptions(repeat_penalty=2.0), 6)
    np.testing.assert_array_equal(ignored.apply_penalties(logits, [-1, 6, 99]), logits)


def test_repeat_penalty_steers_greedy_away_from_a_repeated_token() -> None:
    logits = np.array([1.0, 5.0, 4.0], dtype=np.float32)
    assert Sampler(SamplerOptions(temperature=0), 3).sample(logits, [1]) == 1
    penalized = Sampler(SamplerOptions(temperature=0, repeat_penalty=1.5), 3)
    assert penalized.sample(logits, [1]) == 2


def test_top_k_draws_only_from_the_k_best() -> None:
    logits = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    allowed = set(np.argsort(-logits)[:5].tolist())
    sampler = Sampler(SamplerOptions(temperature=2.0, top_k=5, top_p=1.0, seed=0), 5000)
    drawn = set(_draws(sampler, logits, 2000).tolist())
    assert drawn == allowed


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = np.log(np.array([0.05, 0.4, 0.1, 0.3, 0.15], dtype=np.float32))
    # Sorted: 0.4 (1), 0.3 (3), 0.15 (4), 0.1 (2) ... cumulative 0.4, 0.7, 0.85, 0.95.
    for top_p, allowed in [(0.5, {1, 3}), (0.65, {1, 3}), (0.8, {1, 3, 4}), (0.3, {1})]:
        opts = SamplerOptions(temperature=1.0, top_k=0, top_p=top_p, seed=11)
        assert set(_draws(Sampler(opts, 5), logits, 1500).tolist()) == allowed, top_p


def test_top_p_over_a_large_vocabulary_never_leaves_the_nucleus() -> None:
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal(49152) * 2).astype(np.float32)
    logits[rng.integers(0, 49152, 30)] += 9.0
    probs = _probs(logits.astype(np.float64))
    order = np.argsort(-probs)
    count = int(np.searchsorted(np.cumsum(probs[order]), 0.9)) + 1
    nucleus = set(order[:count].tolist())
    sampler = Sampler(SamplerOptions(temperature=1.0, top_k=0, top_p=0.9, seed=5), 49152)
    assert set(_draws(sampler, logits, 3000).tolist()) <= nucleus


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    logits = np.log(np.array([0.5, 0.2, 0.04, 0.26], dtype=np.float32))
    opts = SamplerOptions(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1, seed=9)
    assert set(_draws(Sampler(opts, 4), logits, 2000).tolist()) == {0, 1, 3}  # 0.04 < 0.05


def test_at_least_one_token_survives_every_filter() -> None:
    logits = np.array([0.0, 0.0, 0.0], dtype=np.float32)
    opts = SamplerOptions(temperature=1.0, top_k=0, top_p=0.0, min_p=1.0, typical_p=0.0, seed=1)
    assert Sampler(opts, 3).sample(logits, []) in {0, 1, 2}


def test_plain_sampling_follows_the_softmax_distribution() -> None:
    logits = np.array([1.0, 2.0, 0.5, -1.0, 1.5], dtype=np.float32)
    n = 20000
    for temperature in (1.0, 0.5, 2.0):
        opts = SamplerOptions(temperature=temperature, **NO_FILTERS, seed=1234)
        counts = np.bincount(_draws(Sampler(opts, 5), logits, n), minlength=5)
        expected = n * _probs(logits.astype(np.float64), temperature)
        chi_square = float(np.sum((counts - expected) ** 2 / expected))
        assert chi_square < 18.47, (temperature, counts, expected)  # df 4, p = 0.001


def test_typical_p_is_accepted_and_keeps_draws_within_the_vocabulary() -> None:
    logits = np.random.default_rng(4).standard_normal(100).astype(np.float32)
    sampler = Sampler(SamplerOptions(typical_p=0.5, top_k=0, top_p=1.0, seed=3), 100)
    draws = _draws(sampler, logits, 500)
    assert draws.min() >= 0 and draws.max() < 100


def test_masked_logits_are_never_drawn() -> None:
    logits = np.full(10, -np.inf, dtype=np.float32)
    logits[[3, 7]] = 0.0
    sampler = Sampler(SamplerOptions(temperature=1.0, **NO_FILTERS, seed=0), 10)
    assert set(_draws(sampler, logits, 300).tolist()) == {3, 7}


def test_extra_logits_past_the_vocabulary_are_ignored_and_too_few_refused() -> None:
    logits = np.array([0.0, 1.0, 9.0], dtype=np.float32)
    assert Sampler(SamplerOptions(temperature=0), 2).sample(logits, []) == 1
    with pytest.raises(ValueError):
        Sampler(SamplerOptions(), 4).sample(logits, [])


def test_a_draw_from_a_49k_vocabulary_costs_well_under_a_millisecond() -> None:
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal(49152) * 2).astype(np.float32)
    history = rng.integers(0, 49152, 200).tolist()
    sampler = Sampler(SamplerOptions(repeat_penalty=1.1, seed=0), 49152)
    timings = []
    for _ in range(50):
        start = time.perf_counter()
        sampler.sample(logits, history)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.5e-3
