"""Context policy: what of a prompt fits num_ctx, and what a full context keeps when it shifts.

Never silent. With truncation on (Ollama's `truncate`, default true), a chat whose rendered
prompt does not leave room to answer loses whole older messages, oldest first, but never a
system message and never the last message (the tools are part of every rendering, so they stay
too); the caller reports how many went. A prompt that still does not fit, or any prompt that
does not fit with truncation off, is `PromptTooLong`: nothing is cut inside a message.
For /api/generate the earlier exchange (`context` tokens) is the one older "message" that can go.

A context shift (Ollama's `shift`, when generation reaches the end of the context) keeps the
first `keep` tokens, the system prompt at least (`Fit.keep`), drops half of the rest and
re-evaluates what remains from position 0, so every cached position is consistent again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Message = Mapping[str, Any]
Render = Callable[[Sequence[Message]], str]
Encode = Callable[[str], list[int]]

ANSWER_ROOM = 256   # tokens of room truncation leaves to answer when num_predict is open-ended


class PromptTooLong(ValueError):
    """A prompt that does not fit the context (with truncation off, or made of messages that
    may not be dropped)."""

    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        super().__init__(f"prompt is {n_tokens} tokens, but the context is {n_ctx} tokens")
        self.n_tokens, self.n_ctx = n_tokens, n_ctx


@dataclass(frozen=True)
class Fit:
    """The prompt to evaluate, how many messages were dropped for it, and how many leading
    tokens (the system prompt) a context shift must keep."""

    tokens: list[int]
    dropped: int = 0
    keep: int = 0
    original: int = 0    # tokens of the whole prompt before anything was dropped


def answer_room(n_ctx: int, num_predict: int) -> int:
    """Tokens a truncated prompt leaves free: num_predict when set, else ANSWER_ROOM, and never
    more than a quarter of the context."""
    wanted = num_predict if num_predict > 0 else ANSWER_ROOM
    return min(wanted, n_ctx // 4)


def _fits(n: int, n_ctx: int) -> bool:
    """A prompt fits when at least one token can follow it."""
    return n < n_ctx


def fit_messages(messages: Sequence[Message], render: Render, encode: Encode, n_ctx: int,
                 num_predict: int = -1, truncate: bool = True) -> Fit:
    """The messages' prompt as tokens, dropping whole older messages if it does not leave
    answer_room(n_ctx, num_predict) tokens free (truncate) or raising PromptTooLong when it does
    not fit at all (not truncate, or nothing left to drop)."""
    tokens = encode(render(messages))
    original = len(tokens)
    limit = n_ctx - answer_room(n_ctx, num_predict)
    droppable = [i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"]
    dropped = 0
    if not truncate or len(tokens) <= limit or not droppable:
        if not _fits(len(tokens), n_ctx):
            raise PromptTooLong(len(tokens), n_ctx)
        return Fit(tokens, 0, _system_prefix(messages, render, encode, tokens), original)

    def without(d: int) -> list[Message]:
        gone = set(droppable[:d])
        return [m for i, m in enumerate(messages) if i not in gone]

    # The fewest oldest messages to drop: fewer dropped never makes the prompt shorter.
    lo, hi = 1, len(droppable)
    best = encode(render(without(hi)))
    if len(best) <= limit:
        while lo < hi:
            mid = (lo + hi) // 2
            candidate = encode(render(without(mid)))
            if len(candidate) <= limit:
                hi, best = mid, candidate
            else:
                lo = mid + 1
        dropped = hi
    else:
        dropped = len(droppable)
    if not _fits(len(best), n_ctx):
        raise PromptTooLong(len(best), n_ctx)
    kept = without(dropped)
    return Fit(best, dropped, _system_prefix(kept, render, encode, best), original)


def fit_prompt(context: Sequence[int], prompt: list[int], n_ctx: int, num_predict: int = -1,
               truncate: bool = True) -> Fit:
    """/api/generate: an earlier exchange's tokens, then the prompt's. The earlier exchange is
    dropped whole when both do not leave room to answer (truncate); the prompt itself never
    is cut."""
    tokens = list(context) + prompt
    limit = n_ctx - answer_room(n_ctx, num_predict)
    if truncate and context and len(tokens) > limit:
        if not _fits(len(prompt), n_ctx):
            raise PromptTooLong(len(prompt), n_ctx)
        return Fit(prompt, 1, 0, len(tokens))
    if not _fits(len(tokens), n_ctx):
        raise PromptTooLong(len(tokens), n_ctx)
    return Fit(tokens, 0, 0, len(tokens))


def _system_prefix(messages: Sequence[Message], render: Render, encode: Encode,
                   tokens: list[int]) -> int:
    """Leading tokens of `tokens` that render the system messages: what a shift keeps."""
    system = [m for m in messages if m.get("role") == "system"]
    if not system:
        return 0
    try:
        alone = encode(render(system))
    except Exception:  # a template may refuse a conversation of system messages only
        return 0
    return common_prefix(alone, tokens)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two token lists share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def shifted(cached: Sequence[int], keep: int) -> list[int] | None:
    """What a full cache keeps when it shifts: its first `keep` tokens and the newer half of the
    rest (None: nothing could go, the context is all kept tokens)."""
    keep = min(max(keep, 0), len(cached))
    discard = (len(cached) - keep) // 2
    if discard <= 0:
        return None
    return list(cached[:keep]) + list(cached[keep + discard:])
