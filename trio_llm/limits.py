"""The ranges every generation option must fall in (trio_llm.options is the table), checked at
the API edge and again by the runner before a request's first step, so a value the sampler or
the kernels cannot take is a 400 naming it, never a failed step.

`check_options` also normalises what clients legitimately send: a negative `seed` is Ollama
clients' way of asking for a random one, so it is dropped (None means a fresh stream).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from trio_llm.errors import BadRequest
from trio_llm.options import OPTIONS

MAX_STOPS = 64               # stop strings per request
MAX_STOP_CHARS = 1024        # characters per stop string (they are matched on every token)


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options, normalised; BadRequest naming the first one out of range."""
    out = dict(options)
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f'option "{key}" must be a finite number')
        option = OPTIONS.get(key)
        low, high = (option.low, option.high) if option else (None, None)
        if isinstance(value, int | float) and not isinstance(value, bool) and (
                (low is not None and value < low) or (high is not None and value > high)):
            if high is None:
                raise BadRequest(f'option "{key}" must be at least {_bound(low)}, got {value}')
            raise BadRequest(f'option "{key}" must be between {_bound(low)} and {_bound(high)}, '
                             f"got {value}")
    seed = out.get("seed")
    if isinstance(seed, int) and seed < 0:
        del out["seed"]                       # -1: "random", as Ollama clients send it
    stops = out.get("stop")
    if isinstance(stops, list):
        if len(stops) > MAX_STOPS:
            raise BadRequest(f'option "stop" takes at most {MAX_STOPS} strings')
        if any(isinstance(s, str) and len(s) > MAX_STOP_CHARS for s in stops):
            raise BadRequest(f'option "stop": each string may have at most {MAX_STOP_CHARS} '
                             "characters")
    return out


def check_context(context: Sequence[int], vocab_size: int) -> None:
    """BadRequest unless every `context` token id is one of the model's vocabulary."""
    if not context:
        return
    low, high = min(context), max(context)
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise BadRequest(f"context holds token id {bad}, outside the model's vocabulary "
                         f"(0 to {vocab_size - 1})")


def check_job(options: Mapping[str, Any], context: Sequence[int],
              vocab_size: int) -> dict[str, Any]:
    """What the runner checks before a generation takes a slot: its options and context."""
    check_context(context, vocab_size)
    return check_options(options)
