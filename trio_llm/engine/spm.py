"""SentencePiece-style BPE over a scored vocabulary (GGUF `tokenizer.ggml.model == "llama"`).

Spaces become "▁" (U+2581), optionally with one "▁" in front of the text. Starting from single
characters, the adjacent pair whose concatenation is the highest-scoring vocabulary piece is
merged (leftmost on ties) until no pair forms a piece, the way SentencePiece encodes with its BPE
models. A character that is not a piece falls back to its UTF-8 bytes as <0xNN> tokens.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from itertools import compress

from trio_llm.engine.vocab import TokenType, merge_pairs

SPACE = "\u2581"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# Where a word starts: a "▁" right after something else. Pieces almost never reach across such
# a point, which lets each word be merged (and cached) on its own; see _words.
_WORD_START = re.compile(f"(?<=[^{SPACE}]){SPACE}")
_WORD_START_OR_SEPARATOR = re.compile(f"(?<=[^{SPACE}\\0]){SPACE}")
_CACHE_SIZE = 1 << 16
_CACHE_MAX_WORD = 256
_MAX_CROSSING_PIECES = 256


class SentencePieceBPE:
    """Encodes plain text (no special tokens) to ids; knows each token's bytes."""

    def __init__(
        self,
        tokens: Sequence[str],
        token_types: Sequence[int],
        scores: Sequence[float],
        unknown_id: int | None,
        add_space_prefix: bool,
    ) -> None:
        self.add_space_prefix = add_space_prefix
        self._tokens = tokens
        self._types = token_types
        self._unknown_id = unknown_id
        normal, byte = int(TokenType.NORMAL), int(TokenType.BYTE)
        self._scores = scores
        # Only normal pieces are formed by merges or looked up by text; control, user-defined,
        # byte and unused pieces are reached by other routes (or never).
        numbered = zip(tokens, range(len(tokens)), strict=True)
        self._ids = dict(compress(numbered, map(normal.__eq__, token_types)))
        self._byte_ids: list[int | None] = [None] * 256
        for i in compress(range(len(tokens)), map(byte.__eq__, token_types)):
            if match := _BYTE_PIECE.fullmatch(tokens[i]):
                self._byte_ids[int(match.group(1), 16)] = i
        # Pieces with a word start inside them (Gemma 3 has one: ">▁</") block cutting there.
        inside = _pieces_with_word_start(list(self._ids))
        self._crossing = inside if len(inside) <= _MAX_CROSSING_PIECES else None
        self._bytes: list[bytes | None] = [None] * len(tokens)
        self._encode_word_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._encode_word)

    def encode(self, text: str, at_start: bool = True) -> list[int]:
        """Token ids for `text` (no special tokens in it); `at_start` says it begins the input,
        where the "▁" prefix goes when the model asks for one."""
        normalized = text.replace(" ", SPACE)
        if at_start and self.add_space_prefix and normalized:
            normalized = SPACE + normalized
        ids: list[int] = []
        for word in self._words(normalized):
            if len(word) <= _CACHE_MAX_WORD:
                ids.extend(self._encode_word_cached(word))
            else:
                ids.extend(self._encode_word(word))
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token `token_id` stands for ("▁" read as a space)."""
        data = self._bytes[token_id]
        if data is None:
            text = self._tokens[token_id]
            match = _BYTE_PIECE.fullmatch(text)
            if self._types[token_id] == TokenType.BYTE and match:
                data = bytes((int(match.group(1), 16),))
            else:
                data = text.replace(SPACE, " ").encode()
            self._bytes[token_id] = data
        return data

    def _words(self, text: str) -> list[str]:
        """Cut normalized text where no vocabulary piece can reach across."""
        if self._crossing is None:
            return [text] if text else []
        starts = [m.start() for m in _WORD_START.finditer(text)]
        if starts and self._crossing:
            blocked: set[int] = set()
            for piece in self._crossing:
                inner = [m.start() for m in _WORD_START.finditer(piece)]
                at = text.find(piece)
                while at >= 0:
                    blocked.update(at + k for k in inner)
                    at = text.find(piece, at + 1)
            starts = [s for s in starts if s not in blocked]
        bounds = [0, *starts, len(text)]
        return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]

    def _encode_word(self, word: str) -> tuple[int, ...]:
        ids: list[int] = []
        for symbol in self._merge(list(word)):
            found = self._ids.get(symbol)
            if found is not None:
                ids.append(found)
                continue
            for b in symbol.encode("utf-8", "surrogatepass"):
                byte_id = self._byte_ids[b]
                if byte_id is not None:
                    ids.append(byte_id)
                elif self._unknown_id is not None:
                    ids.append(self._unknown_id)
        return tuple(ids)

    def _merge(self, symbols: list[str]) -> list[str]:
        """Merge adjacent symbols into the best-scoring pieces, highest score first."""
        ids, scores = self._ids, self._scores

        def minus_score(left: str, right: str) -> float | None:
            found = ids.get(left + right)
            return None if found is None else -scores[found]

        return merge_pairs(symbols, minus_score)


def _pieces_with_word_start(pieces: list[str]) -> list[str]:
    """The pieces that hold a word start ("▁" after another character) inside them."""
    joined = "\0".join(pieces)
    if joined.count("\0") != len(pieces) - 1:  # a piece holds the separator: go one by one
        return [p for p in pieces if _WORD_START.search(p)]
    found = []
    at = -1
    for match in _WORD_START_OR_SEPARATOR.finditer(joined):
        start = joined.rfind("\0", 0, match.start()) + 1
        if start > at:
            end = joined.find("\0", start)
            found.append(joined[start : end if end >= 0 else len(joined)])
            at = start
    return found
