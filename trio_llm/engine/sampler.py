"""Choosing the next token from logits: penalties, a constraint's allowed tokens, top-k,
temperature, top-p, min-p, a draw.

The steps run in that order over numpy arrays, touching the whole vocabulary only where a step
needs it (penalties on the recent tokens, a partial sort for top-k), so a draw from a 49k
vocabulary costs a few tens of microseconds. A seeded generator makes runs repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trio_llm.options import default

# How many of the most likely tokens top-p looks at first when top-k left the whole vocabulary;
# it widens the window (x8 each time) only while those tokens hold less than top_p of the mass.
_TOP_P_WINDOW = 128


@dataclass(frozen=True)
class SamplerOptions:
    """Sampling settings with Ollama's meanings; the defaults are trio_llm.options' table."""

    temperature: float = default("temperature")  # <= 0: greedy (argmax, lowest id on ties)
    top_k: int = default("top_k")  # 0: off
    top_p: float = default("top_p")  # 1.0: off
    min_p: float = default("min_p")  # 0.0: off
    typical_p: float = default("typical_p")  # 1.0: off (locally typical sampling)
    repeat_penalty: float = default("repeat_penalty")  # 1.0: off
    repeat_last_n: int = default("repeat_last_n")  # 0: no penalties, -1: the whole history
    presence_penalty: float = default("presence_penalty")
    frequency_penalty: float = default("frequency_penalty")
    seed: int | None = default("seed")  # None: a fresh random stream


class Sampler:
    """Draws token ids for one sequence; holds its random stream."""

    def __init__(self, options: SamplerOptions, vocab_size: int) -> None:
        self.options = options
        self.vocab_size = vocab_size
        self._rng = np.random.default_rng(options.seed)

    def sample(self, logits: np.ndarray, history: Sequence[int],
               allowed: np.ndarray | None = None) -> int:
        """The next token id given `logits` (float32, one per vocabulary entry) and the tokens
        of the sequence so far (prompt and generated), which the penalties read. With
        `allowed` (a constraint's mask) only allowed tokens can be drawn, whatever the
        settings: greedy is the argmax of the allowed ones."""
        opts = self.options
        if logits.shape[0] < self.vocab_size:
            raise ValueError(f"{logits.shape[0]} logits for a vocabulary of {self.vocab_size}")
        scores = self.apply_penalties(logits[: self.vocab_size], history)
        allowed_ids = None
        if allowed is not None:  # from here on only the allowed tokens are candidates
            allowed_ids = allowed_token_ids(allowed, self.vocab_size)
            scores = scores[allowed_ids]
        if opts.temperature <= 0:
            best = int(np.argmax(scores))
            return best if allowed_ids is None else int(allowed_ids[best])
        ids, scores = _top_k(scores, opts.top_k)
        if allowed_ids is not None:
            ids = allowed_ids[ids]
        top = scores.max()
        if not np.isfinite(top):
            return int(ids[np.argmax(scores)])
        probs = np.exp((scores - top) * np.float32(1.0 / opts.temperature))
        probs /= float(probs.sum(dtype=np.float64))
        if opts.typical_p < 1.0:
            ids, probs = _typical(ids, probs, opts.typical_p)
        if opts.top_p < 1.0:
            ids, probs = _top_p(ids, probs, opts.top_p)
        if opts.min_p > 0.0:
            keep = probs >= opts.min_p * probs.max()
            ids, probs = ids[keep], probs[keep]
        cumulative = np.cumsum(probs, dtype=np.float64)
        pick = np.searchsorted(cumulative, self._rng.random() * cumulative[-1], side="right")
        return int(ids[min(int(pick), len(ids) - 1)])

    def apply_penalties(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Logits with the repeat, presence and frequency penalties of the recent tokens applied
        (a copy when any applies; the caller's array is never written)."""
        opts = self.options
        last_n = opts.repeat_last_n
        active = (
            opts.repeat_penalty not in (0.0, 1.0)
            or opts.presence_penalty != 0.0
            or opts.frequency_penalty != 0.0
        )
        if not active or last_n == 0 or not history:
            return logits
        window = np.asarray(history[-last_n:] if last_n > 0 else history, dtype=np.int64)
        window = window[(window >= 0) & (window < self.vocab_size)]
        if window.size == 0:
            return logits
        ids, counts = np.unique(window, return_counts=True)
        values = logits[ids].astype(np.float32)
        if opts.repeat_penalty not in (0.0, 1.0):
            values = np.where(
                values > 0, values / opts.repeat_penalty, values * opts.repeat_penalty
            )
        values -= counts * np.float32(opts.frequency_penalty) + np.float32(opts.presence_penalty)
        penalized = np.array(logits, dtype=np.float32)
        penalized[ids] = values
        return penalized


def allowed_token_ids(allowed: np.ndarray, vocab_size: int) -> np.ndarray:
    """The ids a constraint's mask (bool, one per token) allows, ascending. Sampling among
    these alone keeps forbidden tokens out of reach of every setting, and costs less than
    masking the whole vocabulary. An empty mask only comes from a matcher that has failed,
    which the caller sees when the token is fed back; every id is returned then."""
    ids = np.flatnonzero(allowed[:vocab_size])
    return ids if ids.size else np.arange(vocab_size)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ids and scores of the k best tokens (all of them when k is 0 or too large)."""
    if 0 < k < scores.shape[0]:
        ids = _best(scores, k)
        return ids, scores[ids]
    return np.arange(scores.shape[0]), scores


def _best(values: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k largest values, in no particular order (0 < k < len(values)).

    The maxima of 4k blocks are k distinct values, so the k-th largest of them bounds the
    k-th largest overall from below: one comparison over the array keeps a few hundred
    candidates, and only those are partitioned, about 4x quicker than partitioning it all.
    """
    n = values.shape[0]
    blocks = 4 * k
    if n < 8 * blocks:
        return np.argpartition(values, n - k)[n - k :]
    maxima = np.maximum.reduceat(values, np.arange(0, n, n // blocks))
    bound = np.partition(maxima, maxima.shape[0] - k)[maxima.shape[0] - k]
    candidates = np.flatnonzero(values >= bound)
    m = candidates.shape[0]
    return candidates[np.argpartition(values[candidates], m - k)[m - k :]]


def _top_p(ids: np.ndarray, probs: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The smallest most-likely set whose probability reaches top_p (at least one token)."""
    n = probs.shape[0]
    window = min(n, _TOP_P_WINDOW)
    while True:
        best = _best(probs, window) if window < n else np.arange(n)
        if window == n or probs[best].sum(dtype=np.float64) >= top_p:
            break
        window = min(n, window * 8)
    best = best[np.argsort(-probs[best], kind="stable")]
    cumulative = np.cumsum(probs[best], dtype=np.float64)
    count = int(np.searchsorted(cumulative, top_p, side="left")) + 1
    best = best[: min(count, best.shape[0])]
    return ids[best], probs[best]


def _typical(ids: np.ndarray, probs: np.ndarray, mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy,
    until they hold `mass` of the probability (at least one token)."""
    with np.errstate(divide="ignore"):
        surprise = -np.log(probs)
    entropy = float(np.sum(np.where(probs > 0, probs * surprise, 0.0), dtype=np.float64))
    order = np.argsort(np.abs(surprise - entropy), kind="stable")
    cumulative = np.cumsum(probs[order], dtype=np.float64)
    count = int(np.searchsorted(cumulative, mass, side="left")) + 1
    order = order[: min(count, order.shape[0])]
    return ids[order], probs[order]
