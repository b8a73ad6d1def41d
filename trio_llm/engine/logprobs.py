"""Log-probabilities of sampled tokens, for requests that ask for `logprobs` / `top_logprobs`.

The values are the log-softmax of the logits the sampler saw, after a constraint's mask (a
token the grammar forbids has probability 0 and is never listed), before penalties and
temperature, as Ollama documents them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trio_llm.engine.sampler import _best, allowed_token_ids

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class StepLogprobs:
    """The sampled token's log-probability and the most likely tokens of that step (ids)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class TokenLogprob:
    """A token as a client sees it: its text, its bytes, its log-probability."""

    token: str
    logprob: float
    bytes: bytes
    top: tuple[TokenLogprob, ...] = ()


def step_logprobs(scores: np.ndarray, token: int, top_n: int,
                  allowed: np.ndarray | None = None) -> StepLogprobs:
    """log-softmax of `scores` at `token`, and the `top_n` most likely tokens, most likely
    first (lowest id first on ties, as greedy sampling picks). With a constraint's mask
    `allowed`, the softmax runs over the allowed tokens only and only they are listed."""
    ids = np.arange(scores.shape[0]) if allowed is None else allowed_token_ids(
        allowed, scores.shape[0])
    values = scores[ids].astype(np.float64)
    values -= values.max()
    values -= np.log(np.exp(values).sum())
    at = int(np.searchsorted(ids, token))
    logprob = float(values[at]) if at < ids.shape[0] and ids[at] == token else -math.inf
    top: tuple[tuple[int, float], ...] = ()
    n = min(top_n, ids.shape[0])
    if n > 0:
        best = _best(values, n) if n < ids.shape[0] else np.arange(ids.shape[0])
        best = best[np.lexsort((best, -values[best]))]
        top = tuple((int(ids[i]), float(values[i])) for i in best if np.isfinite(values[i]))
    return StepLogprobs(token, logprob, top)


def describe(step: StepLogprobs, token_bytes: Callable[[int], bytes]) -> TokenLogprob:
    """The step's tokens with their text (invalid UTF-8, as in a token that holds part of a
    character, becomes U+FFFD) and raw bytes."""

    def one(token: int, logprob: float) -> TokenLogprob:
        data = token_bytes(token)
        return TokenLogprob(data.decode("utf-8", "replace"), logprob, data)

    head = one(step.token, step.logprob)
    return TokenLogprob(head.token, head.logprob, head.bytes,
                        tuple(one(t, lp) for t, lp in step.top))
