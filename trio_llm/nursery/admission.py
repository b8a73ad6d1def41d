"""First-come first-served admission to a runner's decode slots.

A request takes its place in line synchronously (so arrival order is kept even when trio wakes
tasks in another order) and then waits for a slot. Leaving frees the slot or the place in line,
whichever it held, so a cancelled request never keeps a slot.
"""

from __future__ import annotations

from collections import deque

import trio


class SlotPlace:
    """One request's place: first in line, then holding a slot, then gone."""

    __slots__ = ("granted", "left", "_event")

    def __init__(self) -> None:
        self.granted = False
        self.left = False
        self._event = trio.Event()

    def _grant(self) -> None:
        self.granted = True
        self._event.set()

    async def wait(self) -> None:
        """Return once this place holds a slot."""
        await self._event.wait()


class SlotQueue:
    """n slots handed out in arrival order."""

    def __init__(self, n_slots: int) -> None:
        if n_slots < 1:
            raise ValueError("a runner needs at least one slot")
        self.n_slots = n_slots
        self._free = n_slots
        self._line: deque[SlotPlace] = deque()

    @property
    def in_use(self) -> int:
        return self.n_slots - self._free

    @property
    def waiting(self) -> int:
        return len(self._line)

    @property
    def free(self) -> bool:
        """Would a place taken now hold a slot at once?"""
        return bool(self._free) and not self._line

    def take_place(self) -> SlotPlace:
        place = SlotPlace()
        if self._free and not self._line:
            self._free -= 1
            place._grant()
        else:
            self._line.append(place)
        return place

    def leave(self, place: SlotPlace) -> None:
        """Give back the slot or the place in line (idempotent)."""
        if place.left:
            return
        place.left = True
        if not place.granted:
            self._line.remove(place)
        elif self._line:
            self._line.popleft()._grant()
        else:
            self._free += 1
