"""The scheduler's error types; the HTTP layer maps each to a status code in one place."""

from __future__ import annotations


class SchedulerError(Exception):
    """Base of every error the scheduler raises on purpose; `str()` is the client's message."""

    status = 500


class ModelNotFound(SchedulerError):
    """The resolver knows no model of that name (404)."""

    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


class QueueFull(SchedulerError):
    """OLLAMA_MAX_QUEUE requests are already waiting (503, answered at once)."""

    status = 503

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class ModelTooLarge(SchedulerError):
    """Nothing else is loaded and the model still does not fit in system memory."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"model requires more system memory ({_gib(needed)}) than is available "
                         f"({_gib(available)})")
        self.needed = needed
        self.available = available


class LoadTimeout(SchedulerError):
    """Loading took longer than OLLAMA_LOAD_TIMEOUT."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"timed out waiting for {name} to load after {seconds:g}s")


class SchedulerClosed(SchedulerError):
    """The server is shutting down; no new request is accepted."""

    status = 503

    def __init__(self) -> None:
        super().__init__("server is shutting down")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
