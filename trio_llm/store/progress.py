"""Progress reports for long store operations, as the dicts Ollama streams as NDJSON lines.

Long operations (pull, create) are generators that yield these dicts and return their result;
the HTTP layer sends each one as a line, the CLI draws a bar from `total`/`completed`. A caller
that only wants the result runs `drain(gen)`, optionally with a callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

Progress = dict[str, Any]
T = TypeVar("T")
ProgressStream = Generator[Progress, None, T]

INTERVAL_S = 0.06   # Ollama reports transfer progress about every 60 ms


def status(text: str) -> Progress:
    """A bare step: `{"status": "writing manifest"}`."""
    return {"status": text}


def transfer(verb: str, digest: str, total: int, completed: int) -> Progress:
    """Bytes moved for one blob: `{"status": "pulling 1a2b3c4d5e6f", "digest", "total",
    "completed"}`."""
    short = digest.split(":", 1)[-1][:12]
    return {"status": f"{verb} {short}", "digest": digest, "total": total, "completed": completed}


class Throttle:
    """Says when enough time has passed to send another progress line."""

    def __init__(self, interval: float = INTERVAL_S) -> None:
        self.interval = interval
        self.last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


def drain(stream: ProgressStream[T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Run a progress generator to the end, passing each report to `on_progress`; return its
    result."""
    while True:
        try:
            report = next(stream)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(report)
