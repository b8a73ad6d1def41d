"""One compute executor for the whole server: every loaded model's forward passes, one at a time.

Two models each driving their own kernel thread pool on the same cores spin against each other
(together they got about a third of what one model gets alone). So the server has one backend
(`trio_llm.engine.ops.open_ops`: one kernel thread pool, a thread per physical core) that every
model computes on, and one line of turns in front of it: a model's step (or an embedding) runs
only in its turn, in a worker thread, and the turns go round the models that have work, one
step each. Serialising the calls is also what keeps the pool's scratch memory (valid until the
next call) safe to share.

    async with open_compute() as compute:           # the scheduler holds it around its nursery
        ops = compute.ops()                         # lent to Model.load(..., ops=ops)
        logits = await compute.run(runner, step, plan)

The calls run on one long-lived compute thread (which is also thread 0 of the kernel pool):
handing a step to a thread that waits for it costs less than a trio.to_thread hop per step,
and nothing else ever queues there.

The executor only lends: each model is still loaded, run and unloaded by its own task in the
scheduler's nursery; the backends close when the executor does, after the last model.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import outcome
import trio

from trio_llm.engine.kernels import physical_cores
from trio_llm.engine.ops import CpuOps, open_ops

T = TypeVar("T")


class FairTurns:
    """A lock handed round-robin between clients: each client's waiters queue in arrival
    order, and a released turn goes to the next client in the ring that has a waiter, so a
    client that asks again at once goes behind every other client already waiting.

    Cancelling a waiter takes it out of line; a turn granted to a waiter that was cancelled at
    the same moment is passed on, never lost."""

    def __init__(self) -> None:
        self._busy = False
        self._ring: deque[Hashable] = deque()              # clients with a waiter, in turn order
        self._lines: dict[Hashable, deque[trio.Event]] = {}

    @property
    def busy(self) -> bool:
        return self._busy

    def waiting(self, client: Hashable) -> int:
        """How many of `client`'s calls wait for a turn now."""
        return len(self._lines.get(client, ()))

    @asynccontextmanager
    async def turn(self, client: Hashable) -> AsyncIterator[None]:
        """Hold the turn for the body of the `async with` (the body must checkpoint: taking a
        free turn does not)."""
        await self._acquire(client)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, client: Hashable) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._busy and not self._ring:
            # A free turn is taken without yielding: a step loop hands its next step to the
            # compute thread before the requests its last step woke run (their work then
            # overlaps the step instead of delaying it). The call in the turn checkpoints.
            self._busy = True
            return
        granted = trio.Event()
        line = self._lines.get(client)
        if line is None:
            line = self._lines[client] = deque()
            self._ring.append(client)
        line.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self._release()
            else:
                line.remove(granted)
                if not line:
                    del self._lines[client]
                    self._ring.remove(client)
            raise

    def _release(self) -> None:
        """Hand the turn to the next client in the ring (it stays busy), or free it."""
        if not self._ring:
            self._busy = False
            return
        client = self._ring.popleft()
        line = self._lines[client]
        granted = line.popleft()
        if line:
            self._ring.append(client)
        else:
            del self._lines[client]
        granted.set()


class ComputeThread:
    """One worker thread that runs calls handed to it, one at a time, and wakes the caller's
    trio task with the result. A call is never abandoned: a caller cancelled meanwhile gets
    the cancellation at its next checkpoint, after the call has returned."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="trio-llm-compute",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, task, token = job
            result = outcome.capture(fn, *args)
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) on the thread; its return value, or its exception raised here."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._jobs.put((fn, args, trio.lowlevel.current_task(),
                        trio.lowlevel.current_trio_token()))
        result: T = await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def stop(self) -> None:
        """Let the thread finish its queue and end; blocks until it has."""
        self._jobs.put(None)
        self._thread.join()


class Compute:
    """The shared backends and the line of turns in front of them (make it with open_compute).

    `ops(n)` lends the backend of n threads (0: the physical cores, the one every model shares
    unless a request's num_thread asks for fewer); all of them share the one line of turns, so
    no two pools ever run at once."""

    def __init__(self, open_backend: Callable[[int], CpuOps] = open_ops) -> None:
        self._open_backend = open_backend
        self._backends: dict[int, CpuOps] = {}
        self.turns = FairTurns()
        self.thread = ComputeThread()
        self.steps = 0          # calls run, for tests and logs
        self.foreground_at = -math.inf  # trio time the last call someone waits for ended

    def ops(self, n_threads: int = 0) -> CpuOps:
        """The backend with n_threads threads (capped at the physical cores), opened once."""
        cores = physical_cores()
        n = cores if n_threads <= 0 else min(n_threads, cores)
        backend = self._backends.get(n)
        if backend is None:
            backend = self._backends[n] = self._open_backend(n)
        return backend

    async def run(self, client: Hashable, fn: Callable[..., T], *args: object,
                  background: bool = False) -> T:
        """fn(*args) on the compute thread, in `client`'s turn. Not abandoned on cancel: a
        caller cancelled mid-call waits for the call to finish (the model's memory is in use).
        A call nobody waits for is `background`; the end of any other sets foreground_at,
        which background work waits to be BACKGROUND_DELAY old (EngineRunner.run)."""
        async with self.turns.turn(client):
            self.steps += 1
            try:
                return await self.thread.call(fn, *args)
            finally:
                if not background:
                    self.foreground_at = trio.current_time()

    def close(self) -> None:
        """Stop the compute thread and every backend's threads (blocking: joins them)."""
        self.thread.stop()
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            backend.close()


@asynccontextmanager
async def open_compute(open_backend: Callable[[int], CpuOps] = open_ops
                       ) -> AsyncIterator[Compute]:
    """A compute executor for the body of the `async with`; its backends close on exit, when
    no model may use them any more."""
    compute = Compute(open_backend)
    try:
        yield compute
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(compute.close)
