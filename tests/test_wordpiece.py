"""The WordPiece tokenizer of a GGUF BERT against the model's own tokenizer.json (the Hugging
Face `tokenizers` package): all-MiniLM-L6-v2's vocabulary, converted the way llama.cpp spells
it in a GGUF."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer

from trio_llm.engine.tokenizer import Tokenizer, UnsupportedTokenizer
from trio_llm.engine.wordpiece import normalize, pre_tokenize
from trio_llm.testing.minilm import fetch_minilm, vocabulary

# Blocks whose characters' Unicode properties are the same in Python's tables and in the Rust
# crate `tokenizers` uses (characters added or re-categorised since Unicode 10 differ between
# the two, and neither is the one truth there).
AGREED = [(0x20, 0x5FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x2E42),
          (0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
          (0xE000, 0xF8FF), (0xFF00, 0xFFEF), (0x1F300, 0x1F64F), (0x20000, 0x2A6DF)]


@pytest.fixture(scope="module")
def folder() -> Path:
    return fetch_minilm()


@pytest.fixture(scope="module")
def ours(folder: Path) -> Tokenizer:
    return Tokenizer.from_metadata(vocabulary(folder))


@pytest.fixture(scope="module")
def theirs(folder: Path) -> HFTokenizer:
    tokenizer = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@pytest.mark.parametrize("text", [
    "", "   ", "hello", "Hello, WORLD!!", "The quick brown fox jumps over the lazy dog.",
    "unaffable", "naïve café Über façade", "東京は日本の首都です", "x" * 100, "x" * 101,
    "[CLS] a [SEP] b [MASK]", "x[UNK]y", "tab\tnew\nline\r\x0bend", "zero\u200bwidth\u00adsoft",
    "emoji 😀👍 and $^`~ signs", "private \ue000 use", "nul \x00 and \ufffd", "don't stop-gap 3.14",
    "한국어 텍스트", "Ελληνικά και русский", "a\u2581b \u2581lead", "MiXeD CaSe ÀÉÎÕÜ",
])
def test_encodes_like_the_models_own_tokenizer(ours: Tokenizer, theirs: HFTokenizer,
                                               text: str) -> None:
    assert ours.encode(text) == theirs.encode(text).ids


def test_every_character_of_the_agreed_blocks_splits_like_the_models_own_tokenizer(
        ours: Tokenizer, theirs: HFTokenizer) -> None:
    chars = [chr(cp) for lo, hi in AGREED for cp in range(lo, hi + 1)]
    texts = [f"a{ch}b {ch}" for ch in chars]
    expected = [e.ids for e in theirs.encode_batch(texts)]
    wrong = [(t, got, want) for t, got, want in zip(texts, map(ours.encode, texts), expected,
                                                   strict=True) if got != want]
    assert not wrong, wrong[:5]


def test_random_text_of_the_agreed_blocks_encodes_like_the_models_own_tokenizer(
        ours: Tokenizer, theirs: HFTokenizer) -> None:
    rng = random.Random(15)
    common = [chr(c) for c in range(0x20, 0x7F)] * 30 + list(" \t\n") * 40
    rare = [chr(cp) for lo, hi in AGREED for cp in range(lo, hi + 1, 7)]
    texts = ["".join(rng.choice(common if rng.random() < 0.8 else rare)
                     for _ in range(rng.randint(0, 60))) for _ in range(1500)]
    expected = [e.ids for e in theirs.encode_batch(texts)]
    wrong = [(t, got, want) for t, got, want in zip(texts, map(ours.encode, texts), expected,
                                                   strict=True) if got != want]
    assert not wrong, wrong[:5]


def test_bert_normalizes_and_splits_as_its_definition_says() -> None:
    assert normalize("Ünïcödé\tTAB\x00") == "unicode tab"
    assert normalize("中文") == " 中  文 "
    assert pre_tokenize("hello, world!! a-b") == ["hello", ",", "world", "!", "!", "a", "-", "b"]


def test_a_sequence_is_cls_text_sep_and_decodes_back(ours: Tokenizer) -> None:
    ids = ours.encode("Unaffable, isn't it?")
    assert ids[0] == ours.bos_id == 101 and ids[-1] == ours.eos_id == 102
    assert ours.encode("hi", add_special=False) == [7632]
    assert ours.decode(ids, skip_special=True) == "unaffable , isn ' t it ?"


def test_a_bert_vocabulary_without_the_unknown_token_drops_uncoverable_words(
        folder: Path) -> None:
    meta = {k: v for k, v in vocabulary(folder).items() if k != "tokenizer.ggml.unknown_token_id"}
    tokenizer = Tokenizer.from_metadata(meta)
    assert tokenizer.encode("hello 😀", add_special=False) == [7592]


def test_an_unknown_tokenizer_model_is_refused(folder: Path) -> None:
    meta = {**vocabulary(folder), "tokenizer.ggml.model": "wpm-nope"}
    with pytest.raises(UnsupportedTokenizer, match="wpm-nope"):
        Tokenizer.from_metadata(meta)
