"""WordPiece over a GGUF BERT vocabulary (`tokenizer.ggml.model == "bert"`).

BERT's tokenizer, from its definition: clean the text (drop NUL, U+FFFD and control
characters; every whitespace character becomes a space), put spaces around CJK ideographs,
decompose (NFD) and drop combining marks, lowercase; split into words at whitespace and around
every punctuation character; then each word becomes the longest vocabulary piece that starts
it, then the longest continuation piece after that, and so on; a word that cannot be covered
(or is over 100 characters) is one unknown token. A GGUF spells the vocabulary the way
llama.cpp's converter writes it: a piece that starts a word has a "▁" (U+2581) in front, a
continuation piece is bare (no "##"), control tokens ([CLS], [SEP]) are unchanged.

GGUF has no key for BERT's `do_lower_case`; like llama.cpp, this always lowercases, which is
what the uncased BERTs (the sentence-embedding ones among them) were trained with.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from itertools import compress

from trio_llm.engine.vocab import TokenType

WORD_START = "\u2581"
MAX_WORD_CHARS = 100
_CACHE_SIZE = 1 << 16

# CJK ideograph blocks, each ideograph its own word (BERT's _is_chinese_char, with the ranges
# of Hugging Face's tokenizers, which most BERT embedding models were trained with).
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK)


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    """Control, format and private-use characters (BERT drops them)."""
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co")


def _is_punctuation(ch: str) -> bool:
    """ASCII non-alphanumerics count as punctuation (BERT splits "$" and "^" off too)."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """BERT's normalizer: clean, CJK spacing, strip accents, lowercase."""
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    decomposed = unicodedata.normalize("NFD", "".join(out))
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower()


def pre_tokenize(text: str) -> list[str]:
    """Words of normalized text: split at whitespace, every punctuation character alone."""
    words: list[str] = []
    for chunk in text.split():
        start = 0
        for i, ch in enumerate(chunk):
            if _is_punctuation(ch):
                if i > start:
                    words.append(chunk[start:i])
                words.append(ch)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


class WordPiece:
    """Encodes plain text (no special tokens) to ids; knows each token's bytes."""

    def __init__(self, tokens: Sequence[str], token_types: Sequence[int],
                 unknown_id: int | None) -> None:
        self._tokens = tokens
        self._unknown_id = unknown_id
        # Control and unused entries are never pieces of a word; they are reached whole.
        looked_up = {int(TokenType.NORMAL), int(TokenType.USER_DEFINED)}
        numbered = zip(tokens, range(len(tokens)), strict=True)
        self._ids = dict(reversed(list(compress(numbered, (t in looked_up
                                                           for t in token_types)))))
        self._longest = max((len(t) for t in self._ids), default=0)
        self._encode_word = functools.lru_cache(maxsize=_CACHE_SIZE)(self._word)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in pre_tokenize(normalize(text)):
            ids.extend(self._encode_word(word))
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """A word-start piece stands for a space and the piece; a continuation for itself."""
        return self._tokens[token_id].replace(WORD_START, " ").encode()

    def _word(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first pieces of one word, or the unknown token."""
        unknown = () if self._unknown_id is None else (self._unknown_id,)
        if len(word) > MAX_WORD_CHARS:
            return unknown
        ids: list[int] = []
        start, ids_of = 0, self._ids
        while start < len(word):
            prefix = WORD_START if start == 0 else ""
            if word[start] == WORD_START and start:
                return unknown     # "##▁x" and "▁x" are one spelling: no such continuation
            end = min(len(word), start + self._longest)
            while end > start:
                found = ids_of.get(prefix + word[start:end])
                if found is not None:
                    break
                end -= 1
            else:
                return unknown
            ids.append(found)
            start = end
        return tuple(ids)
