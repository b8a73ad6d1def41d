"""The scheduler's error types: the shared ones of trio_llm.errors plus its own few.

The HTTP layer maps every one of them to a status code in one place (api/errors.py)."""

from __future__ import annotations

import logging
from typing import TypeVar

from trio_llm.errors import ModelNotFound, QueueFull, ServiceUnavailable, TrioLLMError

log = logging.getLogger(__name__)
T = TypeVar("T")


__all__ = ["LoadTimeout", "ModelNotFound", "ModelTooLarge", "QueueFull", "RunnerStopped",
           "SchedulerClosed", "SchedulerError", "StepFailed"]


class SchedulerError(TrioLLMError):
    """Base of the errors only the scheduler raises (a model too large, a load past its
    deadline, a failed step); QueueFull is the shared ServiceUnavailable of trio_llm.errors."""


class ModelTooLarge(SchedulerError):
    """Nothing else is loaded and the model still does not fit in system memory (500)."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"model requires more system memory ({_gib(needed)}) than is available "
                         f"({_gib(available)})")
        self.needed = needed
        self.available = available


class LoadTimeout(SchedulerError):
    """Loading took longer than OLLAMA_LOAD_TIMEOUT (500)."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"timed out waiting for {name} to load after {seconds:g}s")


class StepFailed(SchedulerError):
    """A batched step of the model raised: every request of that step gets this (500)."""

    @classmethod
    def of(cls, exc: BaseException) -> StepFailed:
        log.error("a model step failed; failing the requests of that step", exc_info=exc)
        return cls(f"the model failed while generating: {type(exc).__name__}")


class RunnerStopped(SchedulerError):
    """The model's step loop ended (unloaded or failed) while the request waited (500)."""

    def __init__(self) -> None:
        super().__init__("the model stopped while generating")


def raise_failure(item: T | TrioLLMError) -> T:
    """A runner's inbox item: a token as it is, or the error the runner sent instead."""
    if isinstance(item, TrioLLMError):
        raise item
    return item


class SchedulerClosed(SchedulerError, ServiceUnavailable):
    """The server is shutting down; no new request is accepted (503)."""

    def __init__(self) -> None:
        super().__init__("server is shutting down")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
