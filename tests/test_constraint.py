"""Constraints on SmolLM2's real vocabulary: what is refused up front, what the masks allow,
and that sampling, slot steps and logprobs keep to them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_llm.engine.batch import Batch
from trio_llm.engine.constraint import (
    Constraint,
    GrammarVocabulary,
    InvalidConstraint,
    MaskPrefetch,
)
from trio_llm.engine.logprobs import step_logprobs
from trio_llm.engine.sampler import Sampler, SamplerOptions
from trio_llm.engine.slots import DoneReason, Sequence, SlotTable
from trio_llm.engine.tokenizer import Tokenizer
from trio_llm.formats.gguf_file import read_gguf


@pytest.fixture(scope="module")
def tokenizer(smollm2_path: Path) -> Tokenizer:
    gguf = read_gguf(smollm2_path)
    try:
        return Tokenizer.from_metadata(gguf.metadata)
    finally:
        gguf.close()


@pytest.fixture(scope="module")
def vocabulary(tokenizer: Tokenizer) -> GrammarVocabulary:
    return GrammarVocabulary(tokenizer)


@pytest.mark.parametrize(("build", "named"), [
    (lambda: Constraint.json_schema({"type": "array", "uniqueItems": True}), "uniqueItems"),
    (lambda: Constraint.json_schema({"not": {"type": "string"}}), "not"),
    (lambda: Constraint.json_schema({"oneOf": [{"type": "integer"}, {"type": "number"}]}),
     "oneOf"),
    (lambda: Constraint.json_schema({"$ref": "https://example.com/s.json"}),
     "https://example.com/s.json"),
    (lambda: Constraint.json_schema({"properties": {"a": {"$ref": "#/$defs/b"}}}),
     "/$defs/b"),
    (lambda: Constraint.json_schema({"type": "string", "pattern": "(a"}), "unclosed group"),
    (lambda: Constraint.json_schema({"type": "strnig"}), "strnig"),
    (lambda: Constraint.json_schema({"required": 5}), "required"),
    (lambda: Constraint.json_schema({"type": "string", "format": "colour"}), "colour"),
    # a schema cannot switch the compiler to lenient and have a keyword silently ignored
    (lambda: Constraint.json_schema({"type": "array", "contains": {"type": "integer"},
                                     "x-guidance": {"lenient": True}}), "contains"),
    (lambda: Constraint.json_schema([1, 2]), "expected a JSON object"),  # type: ignore[arg-type]
    (lambda: Constraint.regex("(?=a)b"), "look-around"),
    (lambda: Constraint.regex(""), "empty"),
    (lambda: Constraint.lark("start: missing"), "missing"),
    (lambda: Constraint.lark("root ::= ("), "GBNF"),
    (lambda: Constraint.lark("  "), "empty"),
])
def test_what_cannot_be_enforced_is_refused_naming_the_problem(build, named: str) -> None:
    with pytest.raises(InvalidConstraint, match=re.escape(named)) as raised:
        build()
    assert "\n" not in str(raised.value)


def walk(state, tokenizer: Tokenizer, text: str) -> None:
    for token in tokenizer.encode(text, add_special=False):
        assert state.allowed()[token], (text, tokenizer.token_bytes(token))
        state.consume(token)


def test_a_json_schema_allows_exactly_its_documents(vocabulary: GrammarVocabulary,
                                                    tokenizer: Tokenizer) -> None:
    schema = {"type": "object", "$defs": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
              "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 99},
                             "zip": {"$ref": "#/$defs/zip"}},
              "required": ["age", "zip"], "additionalProperties": False}
    state = vocabulary.start(Constraint.json_schema(schema))
    walk(state, tokenizer, '{\n  "age": 42,\n  "zip": "1234')
    allowed = state.allowed()
    assert allowed[tokenizer.encode("5", add_special=False)[0]]
    assert not allowed[tokenizer.encode('"', add_special=False)[0]]   # four digits are too few
    assert not any(allowed[i] for i in tokenizer.eot_ids)
    walk(state, tokenizer, '5"}')
    assert state.finished and state.error is None


def test_a_digits_regex_allows_digit_tokens_and_then_the_end(vocabulary: GrammarVocabulary,
                                                             tokenizer: Tokenizer) -> None:
    state = vocabulary.start(Constraint.regex("[0-9]+"))
    digit_tokens = {i for i in range(tokenizer.vocab_size)
                    if re.fullmatch(rb"[0-9]+", tokenizer.token_bytes(i))}
    assert set(np.flatnonzero(state.allowed()).tolist()) == digit_tokens
    state.consume(tokenizer.encode("7", add_special=False)[0])
    assert set(np.flatnonzero(state.allowed()).tolist()) == digit_tokens | tokenizer.eot_ids
    assert not state.finished                      # more digits may still follow


def test_any_json_is_an_object_with_bounded_numbers(vocabulary: GrammarVocabulary,
                                                    tokenizer: Tokenizer) -> None:
    state = vocabulary.start(Constraint.any_json())
    assert not state.allowed()[tokenizer.encode("[", add_special=False)[0]]
    walk(state, tokenizer, '{"a": [1, 2.5, true, null, {"b": "x"}], "n": 1234567890123456')
    assert not state.allowed()[tokenizer.encode("7", add_special=False)[0]]


def test_lark_and_gbnf_grammars_constrain_alike(vocabulary: GrammarVocabulary,
                                                tokenizer: Tokenizer) -> None:
    for grammar in ('start: "yes" | "no"', 'root ::= "yes" | "no"'):
        state = vocabulary.start(Constraint.lark(grammar))
        allowed = state.allowed()
        assert allowed[tokenizer.encode("yes", add_special=False)[0]]
        assert not allowed[tokenizer.encode("maybe", add_special=False)[0]]
        walk(state, tokenizer, "no")
        assert state.finished


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), temperature=st.sampled_from([0.0, 0.3, 0.9, 1.5]),
       top_k=st.sampled_from([0, 1, 5, 40]), top_p=st.sampled_from([1.0, 0.9, 0.2]),
       min_p=st.sampled_from([0.0, 0.1]), typical_p=st.sampled_from([1.0, 0.5]),
       repeat_penalty=st.sampled_from([1.0, 1.3, -2.0]),
       presence_penalty=st.sampled_from([0.0, -5.0, 5.0]), n_allowed=st.integers(1, 30))
def test_sampling_keeps_to_the_allowed_tokens_whatever_the_settings(
        seed: int, temperature: float, top_k: int, top_p: float, min_p: float,
        typical_p: float, repeat_penalty: float, presence_penalty: float,
        n_allowed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = 500
    logits = (rng.standard_normal(vocab) * 4).astype(np.float32)
    allowed = np.zeros(vocab, dtype=bool)
    allowed[rng.choice(vocab, n_allowed, replace=False)] = True
    options = SamplerOptions(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                             typical_p=typical_p, repeat_penalty=repeat_penalty,
                             presence_penalty=presence_penalty, seed=seed)
    history = rng.integers(0, vocab, 50).tolist()
    sampler = Sampler(options, vocab)
    token = sampler.sample(logits, history, allowed)
    assert allowed[token]
    if temperature == 0.0:
        scores = sampler.apply_penalties(logits, history)
        best = max(np.flatnonzero(allowed), key=lambda i: (scores[i], -i))
        assert token == best                      # greedy: the argmax of the allowed ones


class Rows:
    """A stand-in forward pass: a fixed random logits row per call, one per reader."""

    def __init__(self, vocab: int) -> None:
        self.rng = np.random.default_rng(5)
        self.vocab = vocab
        self.calls = 0

    def __call__(self, batch: Batch) -> np.ndarray:
        self.calls += 1
        return (self.rng.standard_normal((len(batch.logits_for), self.vocab)) * 3
                ).astype(np.float32)


def test_constrained_and_free_sequences_share_steps_each_with_its_own_state(
        vocabulary: GrammarVocabulary, tokenizer: Tokenizer) -> None:
    vocab = tokenizer.vocab_size
    greedy = SamplerOptions(temperature=0.0)
    table = SlotTable(n_slots=3, n_ctx=256)
    json_seq = Sequence([1, 2, 3], Sampler(SamplerOptions(seed=1), vocab),
                        stop_ids=tokenizer.eot_ids)
    json_seq.grammar = vocabulary.start(Constraint.json_schema(
        {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
         "additionalProperties": False}))
    cut = Sequence([4, 5], Sampler(greedy, vocab), max_tokens=3, stop_ids=tokenizer.eot_ids)
    cut.grammar = vocabulary.start(Constraint.regex("[a-z]{50}"))
    free = Sequence([6], Sampler(greedy, vocab), max_tokens=12, stop_ids=tokenizer.eot_ids)
    for seq in (json_seq, cut, free):
        table.add(seq)
    forward, masks, free_rows = Rows(vocab), MaskPrefetch(), []
    try:
        while (plan := table.plan()) is not None and any(s.done is None for s in table.active):
            logits = masks.forward(plan, forward)
            free_rows += [row for s, row in zip(plan.readers, logits, strict=True) if s is free]
            for event in table.apply(plan, logits):
                if event.done is not None:
                    table.remove(event.sequence)
    finally:
        masks.close()
    assert json_seq.done == DoneReason.STOP and json_seq.failure is None
    assert json.loads(tokenizer.decode(json_seq.generated))["ok"] in (True, False)
    assert cut.done == DoneReason.LENGTH and len(cut.generated) == 3
    assert re.fullmatch(r"[a-z]+", tokenizer.decode(cut.generated))
    assert free.generated == [int(np.argmax(row)) for row in free_rows]   # untouched


def test_a_plan_without_grammars_starts_no_mask_thread() -> None:
    table = SlotTable(n_slots=1, n_ctx=16)
    table.add(Sequence([1], Sampler(SamplerOptions(), 8)))
    masks = MaskPrefetch()
    masks.forward(table.plan(), Rows(8))
    assert masks._pool is None


def test_logprobs_are_sorted_sum_to_one_and_start_with_the_greedy_token() -> None:
    rng = np.random.default_rng(2)
    scores = (rng.standard_normal(1000) * 3).astype(np.float32)
    scores[[10, 20]] = scores.max() + 1.0                  # a tie for the top: lowest id first
    greedy = Sampler(SamplerOptions(temperature=0.0), 1000).sample(scores, [])
    step = step_logprobs(scores, greedy, 20)
    values = [lp for _, lp in step.top]
    assert step.top[0] == (greedy, step.logprob) and greedy == 10 and step.top[1][0] == 20
    assert values == sorted(values, reverse=True) and len(values) == 20
    assert np.exp(values).sum() <= 1.0
    assert np.isclose(sum(np.exp(lp) for _, lp in step_logprobs(scores, 0, 1000).top), 1.0)
    allowed = np.zeros(1000, dtype=bool)
    allowed[[3, 7, 500]] = True
    masked = step_logprobs(scores, 7, 20, allowed)
    assert {t for t, _ in masked.top} == {3, 7, 500}      # forbidden tokens are never listed
    assert np.isclose(sum(np.exp(lp) for _, lp in masked.top), 1.0)
