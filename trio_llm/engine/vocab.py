"""Vocabulary facts shared by the tokenizers: GGUF token types and whole-string token matching."""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum


class TokenType(IntEnum):
    """The values of GGUF `tokenizer.ggml.token_type`."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class WholeTokenMatcher:
    """Finds whole-string tokens (control, user-defined) in text, longest match first.

    A character class of the tokens' first characters finds candidate positions; at each, the
    lengths of the tokens starting with that character are tried longest first. Building it is a
    few dictionary inserts, even for Gemma 3's 6,400 such tokens.
    """

    def __init__(self, strings: Iterable[tuple[str, int]]) -> None:
        self._ids: dict[str, int] = {}
        lengths: dict[str, set[int]] = {}
        for text, token_id in strings:
            if text and text not in self._ids:
                self._ids[text] = token_id
                lengths.setdefault(text[0], set()).add(len(text))
        self._lengths = {ch: sorted(ls, reverse=True) for ch, ls in lengths.items()}
        first = "".join(re.escape(ch) for ch in sorted(lengths))
        self._first = re.compile(f"[{first}]") if first else None

    def __bool__(self) -> bool:
        return self._first is not None

    def split(self, text: str) -> Iterator[tuple[str, int | None]]:
        """Yield (fragment, id) pairs in order: id is the token's id, or None for plain text."""
        pos = 0
        if self._first is not None:
            ids = self._ids
            at = 0
            while (found := self._first.search(text, at)) is not None:
                at = found.start()
                for length in self._lengths[text[at]]:
                    candidate = text[at : at + length]
                    token_id = ids.get(candidate)
                    if token_id is not None:
                        break
                else:
                    at += 1
                    continue
                if at > pos:
                    yield text[pos:at], None
                yield candidate, token_id
                at = pos = at + len(candidate)
        if pos < len(text):
            yield text[pos:], None


def merge_pairs(symbols: list[str], priority: Callable[[str, str], float | None]) -> list[str]:
    """Merge adjacent symbols, always the pair with the lowest `priority` first (ties: leftmost);
    pairs whose priority is None never merge. A priority queue of (priority, position), so long
    inputs stay O(n log n). Both BPE (merge rank) and SentencePiece (minus score) use it."""
    n = len(symbols)
    if n < 2:
        return symbols
    syms: list[str | None] = list(symbols)
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap: list[tuple[float, int, str, str]] = []

    def offer(i: int, left: str, right: str) -> None:
        rank = priority(left, right)
        if rank is not None:
            heapq.heappush(heap, (rank, i, left, right))

    for i in range(n - 1):
        offer(i, symbols[i], symbols[i + 1])
    while heap:
        _, i, left, right = heapq.heappop(heap)
        j = nxt[i]
        # Symbols only grow, so an entry is current exactly when both sides are unchanged.
        if j < 0 or syms[i] != left or syms[j] != right:
            continue
        merged = left + right
        syms[i] = merged
        syms[j] = None
        k = nxt[j]
        nxt[i] = k
        if k >= 0:
            prv[k] = i
            offer(i, merged, syms[k])  # type: ignore[arg-type]
        p = prv[i]
        if p >= 0:
            offer(p, syms[p], merged)  # type: ignore[arg-type]
    return [s for s in syms if s is not None]
