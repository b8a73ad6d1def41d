"""Byte-level BPE (GPT-2 family, GGUF `tokenizer.ggml.model == "gpt2"`).

Text is cut into pre-token pieces by the model's pre-tokenizer regexes, each piece's UTF-8
bytes are spelled with GPT-2's byte-to-unicode alphabet, and adjacent symbols are merged by the
rank of their merge rule (earlier in `tokenizer.ggml.merges` = merged first), as the Hugging Face
`tokenizers` BPE model does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from itertools import compress

import regex

from trio_llm.engine.vocab import TokenType, merge_pairs

log = logging.getLogger(__name__)

# The GPT-2 regex as Hugging Face's ByteLevel pre-tokenizer applies it. `\s` is spelled as the
# Unicode White_Space property, which is what that tokenizer's regex engine (Oniguruma) matches.
_WS = r"\p{White_Space}"
_NWS = r"\P{White_Space}"
GPT2_SPLIT = (
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}+| ?\p{{N}}+| ?[^{_WS}\p{{L}}\p{{N}}]+"
    rf"|{_WS}+(?!{_NWS})|{_WS}+"
)
# Llama 3 (tiktoken cl100k shape): numbers in groups of up to three digits.
LLAMA3_SPLIT = (
    rf"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{{1,3}}"
    rf"| ?[^{_WS}\p{{L}}\p{{N}}]+[\r\n]*|{_WS}*[\r\n]+|{_WS}+(?!{_NWS})|{_WS}+"
)
# Qwen 2: as Llama 3 but every digit on its own.
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
# Hugging Face's Digits(individual_digits=True) pre-tokenizer: each numeric character alone.
DIGIT_SPLIT = r"\p{N}"

# `tokenizer.ggml.pre` -> the regexes applied in turn; each keeps both matches and the text
# between them as pieces (the "Isolated" split behaviour). SmolLM's tokenizer.json chains
# Digits(individual_digits=True) before ByteLevel(use_regex=True), i.e. the GPT-2 regex.
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "default": (GPT2_SPLIT,),
    "gpt2": (GPT2_SPLIT,),
    "smollm": (DIGIT_SPLIT, GPT2_SPLIT),
    "llama3": (LLAMA3_SPLIT,),
    "llama-bpe": (LLAMA3_SPLIT,),
    "qwen2": (QWEN2_SPLIT,),
}

_CACHE_SIZE = 1 << 16
_CACHE_MAX_PIECE = 256  # longer pieces (long whitespace runs, unsplit scripts) are not cached
_HEAP_ABOVE = 256  # pieces with more symbols than this merge through a heap, O(n log n)
_NO_RANK = 1 << 62


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other
    bytes for the code points from U+0100 upwards, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    alphabet = [""] * 256
    for b in printable:
        alphabet[b] = chr(b)
    extra = 0
    for b in range(256):
        if not alphabet[b]:
            alphabet[b] = chr(256 + extra)
            extra += 1
    return alphabet


BYTE_ALPHABET = byte_alphabet()
_UNICODE_TO_BYTE = {ch: b for b, ch in enumerate(BYTE_ALPHABET)}
# str.translate table from a Latin-1 decoding of raw bytes to the byte alphabet.
_LATIN1_TO_ALPHABET = {b: ch for b, ch in enumerate(BYTE_ALPHABET)}


class ByteLevelBPE:
    """Encodes plain text (no special tokens) to ids; knows each token's bytes."""

    def __init__(
        self,
        tokens: Sequence[str],
        token_types: Sequence[int],
        merges: Sequence[str],
        pre: str = "default",
    ) -> None:
        if pre not in PRE_TOKENIZERS:
            log.warning("unknown tokenizer.ggml.pre %r: splitting text as GPT-2 does", pre)
        self.pre = pre
        self._splits = [regex.compile(p) for p in PRE_TOKENIZERS.get(pre, (GPT2_SPLIT,))]
        # Only normal tokens can come out of merges: a merge that happened to spell a control
        # token's text must not produce that token.
        numbered = zip(tokens, range(len(tokens)), strict=True)
        self._ids = dict(compress(numbered, map(int(TokenType.NORMAL).__eq__, token_types)))
        # A merge rule "a b" is looked up by that very string. Rules whose result is not a
        # normal token are left out, so merges can never spell a control token.
        ids = self._ids
        self._ranks = {
            rule: rank for rank, rule in enumerate(merges) if rule.replace(" ", "", 1) in ids
        }
        self._tokens = tokens
        self._types = token_types
        self._bytes: list[bytes | None] = [None] * len(tokens)
        self._encode_piece_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._encode_piece)

    def encode(self, text: str) -> list[int]:
        """Token ids for `text`, which must not contain special tokens to be parsed."""
        ids: list[int] = []
        cached = self._encode_piece_cached
        for piece in self.pre_tokenize(text):
            ids.extend(
                cached(piece) if len(piece) <= _CACHE_MAX_PIECE else self._encode_piece(piece)
            )
        return ids

    def pre_tokenize(self, text: str) -> list[str]:
        """Cut `text` into the pieces that BPE merges within."""
        pieces = [text] if text else []
        for pattern in self._splits:
            pieces = [part for piece in pieces for part in _split_isolated(pattern, piece)]
        return pieces

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token `token_id` stands for."""
        data = self._bytes[token_id]
        if data is None:
            text = self._tokens[token_id]
            if self._types[token_id] in (TokenType.NORMAL, TokenType.UNKNOWN):
                data = b"".join(
                    bytes((_UNICODE_TO_BYTE[ch],)) if ch in _UNICODE_TO_BYTE else ch.encode()
                    for ch in text
                )
            else:  # control and user-defined tokens hold their literal text
                data = text.encode()
            self._bytes[token_id] = data
        return data

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        spelled = piece.encode("utf-8", "surrogatepass").decode("latin-1")
        # A byte whose symbol is missing from the vocabulary is dropped, as Hugging Face's BPE
        # does when the model has no unknown token (SmolLM2 lacks 21 of the 256 symbols).
        ids = self._ids
        symbols = [ch for ch in spelled.translate(_LATIN1_TO_ALPHABET) if ch in ids]
        if len(symbols) > 1:
            merge = _merge_by_heap if len(symbols) > _HEAP_ABOVE else _merge_by_scan
            symbols = merge(symbols, self._ranks)
        return tuple(ids[s] for s in symbols)


def _split_isolated(pattern: regex.Pattern[str], text: str) -> list[str]:
    """Split `text` into the matches of `pattern` and the stretches between them."""
    pieces = pattern.findall(text)
    if sum(map(len, pieces)) == len(text):
        return pieces
    pieces = []
    pos = 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start > pos:
            pieces.append(text[pos:start])
        pieces.append(text[start:end])
        pos = end
    if pos < len(text):
        pieces.append(text[pos:])
    return pieces


def _merge_by_scan(symbols: list[str], ranks: dict[str, int]) -> list[str]:
    """Merge the best-ranked (then leftmost) pair until none is left; keeps one rank per pair
    and lets the C builtins min() and index() find the best, quickest for short pieces."""
    pair_ranks = [
        ranks.get(a + " " + b, _NO_RANK) for a, b in zip(symbols, symbols[1:], strict=False)
    ]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_RANK:
            break
        i = pair_ranks.index(best)
        merged = symbols[i] + symbols[i + 1]
        symbols[i : i + 2] = (merged,)
        del pair_ranks[i]
        if i < len(pair_ranks):
            pair_ranks[i] = ranks.get(merged + " " + symbols[i + 1], _NO_RANK)
        if i > 0:
            pair_ranks[i - 1] = ranks.get(symbols[i - 1] + " " + merged, _NO_RANK)
    return symbols


def _merge_by_heap(symbols: list[str], ranks: dict[str, int]) -> list[str]:
    """The same merges through a priority queue of (rank, position): for long pieces."""
    return merge_pairs(symbols, lambda left, right: ranks.get(left + " " + right))
