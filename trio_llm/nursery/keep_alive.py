"""keep_alive as a trio CancelScope whose deadline moves: inf while busy, now + duration once idle.

A loaded model's task waits inside the scope; when the deadline passes (or `expire()` moves it to
the past) the wait ends and the model unloads. Once fired it stays fired (`expired`), so a
request can check synchronously whether it may still attach.
"""

from __future__ import annotations

import math

import trio


class KeepAlive:
    """The idle timer of one loaded model. `duration` in seconds; inf = forever, 0 = at once."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._scope = trio.CancelScope()
        self._expired_at: float | None = None

    @property
    def expired(self) -> bool:
        """True once the deadline has passed; the model is then on its way out."""
        return self._scope.cancel_called

    @property
    def deadline(self) -> float:
        return self._scope.deadline

    def hold(self) -> None:
        """Stop the timer: a request is in flight."""
        self._scope.deadline = math.inf

    def release(self) -> None:
        """Start the timer: the model just became idle."""
        self._scope.deadline = trio.current_time() + self.duration

    def expire(self) -> None:
        """Fire now (evict, stop, keep_alive 0)."""
        if self._expired_at is None:
            self._expired_at = trio.current_time()
        self._scope.deadline = -math.inf

    def expires_at(self) -> float:
        """When the model leaves on trio's clock: the deadline if the timer runs, the moment of
        expiry if it fired, now + duration while busy (at the earliest), inf for forever."""
        now = trio.current_time()
        if self._expired_at is not None:
            return self._expired_at
        if self.expired:
            return min(self._scope.deadline, now)
        if self._scope.deadline != math.inf:
            return self._scope.deadline
        return now + self.duration

    async def wait(self) -> None:
        """Return when the timer fires. Call once, from the model's task."""
        with self._scope:
            await trio.sleep_forever()
