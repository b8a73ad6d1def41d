"""The scheduler's error types: the shared ones of trio_llm.errors plus its own few.

The HTTP layer maps every one of them to a status code in one place (api/errors.py)."""

from __future__ import annotations

from trio_llm.errors import ModelNotFound, QueueFull, ServiceUnavailable, TrioLLMError

SchedulerError = TrioLLMError

__all__ = ["LoadTimeout", "ModelNotFound", "ModelTooLarge", "QueueFull", "SchedulerClosed",
           "SchedulerError"]


class ModelTooLarge(TrioLLMError):
    """Nothing else is loaded and the model still does not fit in system memory (500)."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"model requires more system memory ({_gib(needed)}) than is available "
                         f"({_gib(available)})")
        self.needed = needed
        self.available = available


class LoadTimeout(TrioLLMError):
    """Loading took longer than OLLAMA_LOAD_TIMEOUT (500)."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"timed out waiting for {name} to load after {seconds:g}s")


class SchedulerClosed(ServiceUnavailable):
    """The server is shutting down; no new request is accepted (503)."""

    def __init__(self) -> None:
        super().__init__("server is shutting down")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
