"""Tokenizers read from GGUF metadata: SmolLM2's byte-level BPE and a SentencePiece-style vocab."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_llm.engine import bpe
from trio_llm.engine.bpe import BYTE_ALPHABET, ByteLevelBPE
from trio_llm.engine.spm import SPACE
from trio_llm.engine.tokenizer import Tokenizer, UnsupportedTokenizer
from trio_llm.engine.vocab import TokenType

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings that exercise the pre-tokenizer: digits, contractions, whitespace runs, scripts.
TRICKY = [
    "The capital of France is",
    "Hello, world! How's it going? I'm fine; they'll see, we've won, you'd know, I'M SURE.",
    "Numbers: 1 12 123 1234 3.14159 1,000,000 -42 +7 1e10 0x1F",
    "a  1",
    "x\t\ty\n \n\n   z   ",
    "   leading and trailing   ",
    "line one\r\nline two\n\n\nthree",
    "日本語のテキストとカタカナ 你好，世界！한국어 텍스트",
    "Привет, мир! Ελληνικά العربية עברית हिन्दी ไทย",
    "e\u0301 combining, Å vs A\u030a, zero\u200bwidth, nbsp\u00a0here, ideographic\u3000space",
    "emoji 😀👍🏽🇫🇷 family 👨‍👩‍👧 ❤️",
    "def f(x):\n    return x ** 2  # comment\n\tpass",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "١٢٣ ½ Ⅻ ² ³ ₄",
    "\x00\x01\x1c\x1d\x1e\x1f\x85 controls",
    "''''  \"\"\"  ......  !!!!!!  ??????  ------",
]


@pytest.fixture(scope="module")
def smol_meta(smollm2_reader: Any) -> dict[str, Any]:
    return {k: f.contents() for k, f in smollm2_reader.fields.items()
            if k.startswith("tokenizer.")}


@pytest.fixture(scope="module")
def smol(smol_meta: dict[str, Any]) -> Tokenizer:
    return Tokenizer.from_metadata(smol_meta)


@pytest.fixture(scope="module")
def smol_representable(smol_meta: dict[str, Any]) -> set[int]:
    """The bytes whose GPT-2 symbol SmolLM2's vocabulary holds (it lacks 21 of 256)."""
    vocab = set(smol_meta["tokenizer.ggml.tokens"])
    return {b for b in range(256) if BYTE_ALPHABET[b] in vocab}


@pytest.fixture(scope="module")
def hf_oracle(smol_meta: dict[str, Any]) -> Any:
    """Hugging Face `tokenizers` set up as SmolLM2's tokenizer.json is: BPE over the GGUF's
    vocabulary and merges, Digits(individual) then ByteLevel, the control tokens as specials."""
    hf = pytest.importorskip("tokenizers")
    tokens = smol_meta["tokenizer.ggml.tokens"]
    types = smol_meta["tokenizer.ggml.token_type"]
    merges = [tuple(rule.split(" ")) for rule in smol_meta["tokenizer.ggml.merges"]]
    oracle = hf.Tokenizer(hf.models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    oracle.pre_tokenizer = hf.pre_tokenizers.Sequence(
        [
            hf.pre_tokenizers.Digits(individual_digits=True),
            hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    oracle.add_special_tokens(
        [
            hf.AddedToken(t, special=True, normalized=False)
            for t, kind in zip(tokens, types, strict=True)
            if kind == TokenType.CONTROL
        ]
    )
    return oracle


# --- SmolLM2 (byte-level BPE, pre = "smollm") ---------------------------------------------


def test_smollm2_metadata_gives_ids_flags_and_stop_tokens(smol: Tokenizer) -> None:
    assert smol.vocab_size == 49152
    assert (smol.bos_id, smol.eos_id) == (1, 2)
    assert not smol.add_bos
    assert smol.eot_ids == {0, 2}  # <|endoftext|>, <|im_end|>
    assert smol.is_control(1) and smol.is_control(2) and not smol.is_control(504)
    assert smol.token_to_id("<|im_start|>") == 1


def test_chatml_markers_encode_to_single_tokens(smol: Tokenizer) -> None:
    assert smol.encode("<|im_start|>") == [1]
    assert smol.encode("<|im_end|>") == [2]
    ids = smol.encode("<|im_start|>user\nHi there!<|im_end|>\n")
    assert ids == [1, 4093, 198, 26843, 665, 17, 2, 198]


def test_capital_of_france_encodes_to_known_ids_and_decodes_back(smol: Tokenizer) -> None:
    ids = smol.encode("The capital of France is")
    assert ids == [504, 3575, 282, 4649, 314]  # "The", " capital", " of", " France", " is"
    assert smol.decode(ids) == "The capital of France is"


def test_special_tokens_stay_text_when_parse_special_is_off(smol: Tokenizer) -> None:
    ids = smol.encode("<|im_start|>user<|im_end|>", parse_special=False)
    assert not set(ids) & {1, 2}
    assert len(ids) > 4
    assert smol.decode(ids) == "<|im_start|>user<|im_end|>"


def test_digits_are_split_one_by_one_and_spaces_never_join_them(smol: Tokenizer) -> None:
    model = smol._model
    assert isinstance(model, ByteLevelBPE)
    assert model.pre_tokenize("a  12") == ["a", "  ", "1", "2"]
    assert model.pre_tokenize("I'm 42.") == ["I", "'m", " ", "4", "2", "."]
    ids = smol.encode("year 2024")
    assert [smol.decode([i]) for i in ids] == ["year", " ", "2", "0", "2", "4"]


def test_token_bytes_join_into_utf8_across_tokens(smol: Tokenizer) -> None:
    text = "é 😀 日本"
    ids = smol.encode(text)
    pieces = [smol.token_bytes(i) for i in ids]
    assert b"".join(pieces) == text.encode()
    assert len(ids) > 3  # the emoji alone takes several byte tokens
    assert smol.token_bytes(2) == b"<|im_end|>"
    with pytest.raises(ValueError):
        smol.token_bytes(smol.vocab_size)


def test_decode_skip_special_drops_control_tokens(smol: Tokenizer) -> None:
    ids = smol.encode("<|im_start|>assistant\nOK<|im_end|>")
    assert smol.decode(ids, skip_special=True) == "assistant\nOK"


def test_bytes_missing_from_the_vocabulary_are_dropped_like_hugging_face_does(
    smol: Tokenizer, smol_representable: set[int]
) -> None:
    assert 0x04 not in smol_representable and 0xF1 not in smol_representable
    assert smol.decode(smol.encode("a\x04b")) == "ab"
    # U+40000 is F1 80 80 80: the lead byte has no symbol, its continuation bytes do.
    assert b"".join(smol.token_bytes(i) for i in smol.encode("\U00040000")) == b"\x80" * 3


@EXAMPLES
@given(text=st.text())
def test_any_text_round_trips_through_smollm2(
    smol: Tokenizer, smol_representable: set[int], text: str
) -> None:
    text = "".join(ch for ch in text if set(ch.encode()) <= smol_representable)
    assert smol.decode(smol.encode(text)) == text
    assert smol.decode(smol.encode(text, parse_special=False)) == text


def test_tricky_strings_match_hugging_face_tokenizers(smol: Tokenizer, hf_oracle: Any) -> None:
    for text in TRICKY:
        assert smol.encode(text) == hf_oracle.encode(text).ids, text


def test_random_mixed_script_strings_match_hugging_face_tokenizers(
    smol: Tokenizer, hf_oracle: Any
) -> None:
    rng = random.Random(1234)
    ranges = [(0x00, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF), (0x900, 0x97F)]
    ranges += [(0x2000, 0x206F), (0x3000, 0x30FF), (0x4E00, 0x4EFF), (0x1F300, 0x1F64F)]
    alphabet = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)]
    alphabet += list(" \n\t'0123456789") * 40
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        assert smol.encode(text) == hf_oracle.encode(text).ids, repr(text)


@EXAMPLES
@given(text=st.text(st.characters(exclude_categories=("Cs", "Cn"))))
def test_hypothesis_text_matches_hugging_face_tokenizers(
    smol: Tokenizer, hf_oracle: Any, text: str
) -> None:
    # Unassigned code points are left out: the two regex engines know different Unicode
    # versions, so a newly assigned letter may split differently.
    assert smol.encode(text) == hf_oracle.encode(text).ids


def test_a_2000_word_prompt_encodes_quickly(smol: Tokenizer) -> None:
    rng = random.Random(7)
    words = "the of and to in is was for that with as on by at from it an be this are".split()
    words += "tokenizer encode prompt model capital France Paris 2024 don't we'll".split()
    text = " ".join(rng.choice(words) for _ in range(2000)) + " ".join(
        f"w{rng.randint(0, 10**6)}" for _ in range(200)
    )
    smol.encode(text)  # the cache now holds the pieces
    best = min(_seconds(lambda: smol.encode(text)) for _ in range(3))
    assert best < 0.1


def _seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- byte-level BPE on tiny vocabularies -----------------------------------------------------


def _bpe_meta(merges: list[str], pre: str = "gpt2", extra: list[str] = ()) -> dict[str, Any]:
    tokens = list(BYTE_ALPHABET) + sorted({m.replace(" ", "") for m in merges}) + list(extra)
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [1] * (len(tokens) - len(extra)) + [3] * len(extra),
        "tokenizer.ggml.merges": merges,
    }


def test_bpe_merges_follow_rank_order_not_length() -> None:
    tok_bc_first = Tokenizer.from_metadata(_bpe_meta(["b c", "a b"]))
    tok_ab_first = Tokenizer.from_metadata(_bpe_meta(["a b", "b c"]))
    as_text = [tok_bc_first._model.token_bytes(i) for i in tok_bc_first.encode("abc")]
    assert as_text == [b"a", b"bc"]
    as_text = [tok_ab_first._model.token_bytes(i) for i in tok_ab_first.encode("abc")]
    assert as_text == [b"ab", b"c"]


def test_bpe_never_builds_a_control_token_from_merges() -> None:
    meta = _bpe_meta(["< x", "<x >"], extra=["<x>"])
    meta["tokenizer.ggml.tokens"] = [t for t in meta["tokenizer.ggml.tokens"] if t != "<x>"]
    meta["tokenizer.ggml.tokens"] += ["<x>"]
    meta["tokenizer.ggml.token_type"] = [1] * (len(meta["tokenizer.ggml.tokens"]) - 1) + [3]
    tok = Tokenizer.from_metadata(meta)
    control = tok.vocab_size - 1
    assert tok.encode("<x>") == [control]
    plain = tok.encode("<x>", parse_special=False)
    assert control not in plain and tok.decode(plain) == "<x>"


def test_long_pieces_merge_as_short_ones_do() -> None:
    tok = Tokenizer.from_metadata(_bpe_meta(["a a", "aa aa", "aaaa a"]))
    # Leftmost first: a a a a a a a a a -> aa aa aa aa a -> aaaa aaaa a -> aaaa aaaaa.
    assert [len(tok.token_bytes(i)) for i in tok.encode("a" * 9)] == [4, 5]
    long_run = [len(tok.token_bytes(i)) for i in tok.encode("a" * 1001)]  # merged by a heap
    assert long_run == [4] * 249 + [5]


def test_heap_and_scan_merges_agree_on_the_real_merge_table(smol: Tokenizer) -> None:
    model = smol._model
    assert isinstance(model, ByteLevelBPE)
    rng = random.Random(5)
    words = "international ization tokenization hello world the capital 日本語 😀 ünïcödé".split()
    for _ in range(200):
        text = "".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
        symbols = list(text.encode().decode("latin-1").translate(bpe._LATIN1_TO_ALPHABET))
        by_scan = bpe._merge_by_scan(list(symbols), model._ranks)
        assert bpe._merge_by_heap(list(symbols), model._ranks) == by_scan


@pytest.mark.parametrize(
    ("pre", "pieces"),
    [
        ("gpt2", ["I", "'m", " 12345", " apples", "  ", " ok"]),
        ("smollm", ["I", "'m", " ", "1", "2", "3", "4", "5", " apples", "  ", " ok"]),
        ("llama3", ["I", "'m", " ", "123", "45", " apples", "  ", " ok"]),
        ("qwen2", ["I", "'m", " ", "1", "2", "3", "4", "5", " apples", "  ", " ok"]),
    ],
)
def test_pre_tokenizers_split_as_their_models_do(pre: str, pieces: list[str]) -> None:
    model = ByteLevelBPE(["a"], [1], [], pre)
    assert model.pre_tokenize("I'm 12345 apples   ok") == pieces


def test_llama3_contractions_ignore_case_and_newlines_stay_with_punctuation() -> None:
    model = ByteLevelBPE(["a"], [1], [], "llama3")
    assert model.pre_tokenize("WE'LL go!\n\nnext") == ["WE", "'LL", " go", "!\n\n", "next"]


def test_unknown_pre_tokenizer_falls_back_to_gpt2_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        model = ByteLevelBPE(["a"], [1], [], "brand-new")
    assert "brand-new" in caplog.text
    assert model.pre_tokenize("I'm 12") == ["I", "'m", " 12"]


def test_unsupported_tokenizer_models_are_refused() -> None:
    with pytest.raises(UnsupportedTokenizer):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(UnsupportedTokenizer):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2"})


# --- SentencePiece-style scored BPE on a hand-built vocabulary ----------------------------

# id 0 <unk>, 1..4 control, 5..260 the byte tokens, then the pieces below.
SPM_CONTROL = ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
SPM_PIECES: list[tuple[str, float]] = [
    *[(ch, -100.0) for ch in f"{SPACE}helowrd"],
    ("el", -1.0),
    ("lo", -1.5),
    ("ll", -2.0),
    ("he", -2.5),
    (f"{SPACE}h", -3.0),
    (f"{SPACE}w", -3.0),
    ("or", -4.0),
    (f"{SPACE}wor", -4.5),
    (f"{SPACE}world", -5.0),
    ("ld", -6.0),
    ("hello", -0.1),  # unreachable: no merge path spells it
    (f"{SPACE}{SPACE}", -0.5),
]


def _spm_meta(add_space_prefix: bool = True) -> dict[str, Any]:
    tokens = ["<unk>", *SPM_CONTROL, *[f"<0x{b:02X}>" for b in range(256)]]
    types = [2, 3, 3, 3, 3, *[6] * 256]
    scores = [0.0] * len(tokens)
    for piece, score in SPM_PIECES:
        tokens.append(piece)
        types.append(1)
        scores.append(score)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_space_prefix": add_space_prefix,
    }


@pytest.fixture(scope="module")
def spm() -> Tokenizer:
    return Tokenizer.from_metadata(_spm_meta())


def _spm_ids(*pieces: str) -> list[int]:
    tokens = _spm_meta()["tokenizer.ggml.tokens"]
    return [tokens.index(p) for p in pieces]


def _byte(b: int) -> int:
    return 5 + b


def test_spm_merges_the_highest_scoring_pair_first(spm: Tokenizer) -> None:
    # "▁hello": el (-1.0) first, then lo (-1.5), then ▁h (-3.0); "hello" is never reached.
    assert spm.encode("hello") == [1, *_spm_ids(f"{SPACE}h", "el", "lo")]
    # "▁world": ▁w, or, ▁wor, ld, then ▁world.
    assert spm.encode("world", add_special=False) == _spm_ids(f"{SPACE}world")
    assert spm.encode("hello world", add_special=False) == _spm_ids(
        f"{SPACE}h", "el", "lo", f"{SPACE}world"
    )


def test_spm_prefix_goes_only_at_the_start_of_the_text(spm: Tokenizer) -> None:
    ids = spm.encode("<start_of_turn>hello<end_of_turn>")
    assert ids == [1, 3, *_spm_ids("h", "el", "lo"), 4]
    no_prefix = Tokenizer.from_metadata(_spm_meta(add_space_prefix=False))
    assert no_prefix.encode("hello", add_special=False) == _spm_ids("h", "el", "lo")


def test_spm_ties_go_to_the_leftmost_pair(spm: Tokenizer) -> None:
    # "  " -> "▁▁▁" (prefix + two spaces): ▁▁ at 0 and at 1 score the same.
    assert spm.encode("  ", add_special=False) == _spm_ids(f"{SPACE}{SPACE}", SPACE)


def test_spm_falls_back_to_byte_tokens(spm: Tokenizer) -> None:
    assert spm.encode("hé", add_special=False) == [*_spm_ids(f"{SPACE}h"), _byte(0xC3), _byte(0xA9)]
    assert spm.decode(spm.encode("hé", add_special=False)) == "hé"


def test_spm_control_tokens_are_text_when_parse_special_is_off(spm: Tokenizer) -> None:
    ids = spm.encode("<eos>", add_special=False, parse_special=False)
    assert ids == [*_spm_ids(SPACE), _byte(0x3C), *_spm_ids("e", "o"), _byte(0x73), _byte(0x3E)]
    assert spm.decode(ids) == "<eos>"
    assert spm.encode("<eos>", add_special=False) == [2]


def test_spm_decode_turns_pieces_back_into_text(spm: Tokenizer) -> None:
    assert spm.decode(spm.encode("hello world", add_special=False)) == "hello world"
    assert spm.decode(spm.encode(" hello", add_special=False)) == " hello"
    assert spm.decode(spm.encode("hello world")) == "<bos>hello world"  # control tokens show
    assert spm.decode(_spm_ids(f"{SPACE}world")) == "world"  # the prefix space goes
    assert spm.decode([1, *_spm_ids(f"{SPACE}h", "el", "lo")], skip_special=True) == "hello"
    assert spm.token_bytes(_spm_ids(f"{SPACE}world")[0]) == b" world"
    assert spm.token_bytes(_byte(0xFF)) == b"\xff"


def test_spm_stop_ids_hold_eos_and_end_of_turn(spm: Tokenizer) -> None:
    assert spm.eot_ids == {2, 4}
    assert (spm.bos_id, spm.eos_id, spm.add_bos) == (1, 2, True)


@EXAMPLES
@given(text=st.text(st.characters(exclude_characters=SPACE, exclude_categories=("Cs",))))
def test_spm_round_trips_any_text(spm: Tokenizer, text: str) -> None:
    assert spm.decode(spm.encode(text, add_special=False)) == text
    assert spm.decode(spm.encode(text, parse_special=False), skip_special=True) == text


@pytest.fixture(scope="module")
def sentencepiece_oracle() -> Any:
    """The sentencepiece library running the same vocabulary as a BPE model with byte
    fallback, no dummy prefix handling of its own beyond ours, whitespace escaped to ▁."""
    spm_lib = pytest.importorskip("sentencepiece")
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    meta = _spm_meta()
    proto = model_pb2.ModelProto()
    for piece, kind, score in zip(
        meta["tokenizer.ggml.tokens"],
        meta["tokenizer.ggml.token_type"],
        meta["tokenizer.ggml.scores"],
        strict=True,
    ):
        entry = proto.pieces.add()
        entry.piece, entry.type, entry.score = piece, kind, score
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 0, 1, 2
    proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    return spm_lib.SentencePieceProcessor(model_proto=proto.SerializeToString())


@EXAMPLES
@given(text=st.text(st.sampled_from(list(" helowrdxé日😀\n")), max_size=30))
def test_spm_matches_the_sentencepiece_library(
    spm: Tokenizer, sentencepiece_oracle: Any, text: str
) -> None:
    assert spm.encode(text, add_special=False) == sentencepiece_oracle.encode(text)
