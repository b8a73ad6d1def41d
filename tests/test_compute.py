"""The compute executor: turns go round the models that have work, one call at a time, on
one shared backend per thread count."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from trio_llm.engine.kernels import physical_cores
from trio_llm.nursery.compute import FairTurns, open_compute


async def test_two_busy_clients_take_alternate_turns(autojump_clock: trio.abc.Clock) -> None:
    turns, order = FairTurns(), []

    async def step_loop(client: str) -> None:
        for _ in range(3):
            async with turns.turn(client):
                order.append(client)
                await trio.sleep(1)      # the step; asking again at once goes behind the other

    async with trio.open_nursery() as nursery:
        nursery.start_soon(step_loop, "a")
        nursery.start_soon(step_loop, "b")
    first, second = order[0], order[1]      # whichever trio started first
    assert {first, second} == {"a", "b"} and order == [first, second] * 3
    assert trio.current_time() == 6 and not turns.busy


async def test_a_client_with_many_waiters_does_not_crowd_out_another(
        autojump_clock: trio.abc.Clock) -> None:
    turns, order = FairTurns(), []

    async def call(client: str, name: str) -> None:
        async with turns.turn(client):
            order.append(name)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for name in ("a1", "a2", "a3"):  # three embeddings of model a, queued first
            nursery.start_soon(call, "a", name)
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "b", "b1")
    assert order == ["a1", "a2", "b1", "a3"]


async def test_a_cancelled_waiter_leaves_the_line_and_the_turn_goes_on(
        autojump_clock: trio.abc.Clock) -> None:
    turns, order = FairTurns(), []

    async def call(client: str, scope: trio.CancelScope | None = None) -> None:
        with scope or trio.CancelScope():
            async with turns.turn(client):
                order.append(client)
                await trio.sleep(1)

    gone = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "holder")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "gone", gone)
        nursery.start_soon(call, "next")
        await trio.testing.wait_all_tasks_blocked()
        assert turns.waiting("gone") == 1
        gone.cancel()
    assert order == ["holder", "next"] and not turns.busy and turns.waiting("gone") == 0


async def test_models_share_one_backend_of_the_physical_cores_and_calls_never_overlap() -> None:
    running, overlaps = [0], []
    lock = threading.Lock()

    def step(i: int) -> int:
        with lock:
            running[0] += 1
            overlaps.append(running[0])
        threading.Event().wait(0.002)
        with lock:
            running[0] -= 1
        return i

    async with open_compute() as compute:
        shared = compute.ops()
        assert compute.ops(0) is shared and compute.ops(physical_cores() + 8) is shared
        assert shared.pool.n_threads == physical_cores()
        results: dict[str, list[int]] = {"a": [], "b": []}

        async def loop(client: str) -> None:
            for i in range(5):
                results[client].append(await compute.run(client, step, i))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(loop, "a")
            nursery.start_soon(loop, "b")
    assert results == {"a": list(range(5)), "b": list(range(5))}
    assert max(overlaps) == 1 and compute.steps == 10
    assert shared.pool.handle is None   # closed with the executor


async def test_a_failing_call_raises_in_its_caller_and_the_next_call_runs() -> None:
    def fail() -> None:
        raise ValueError("step failed")

    async with open_compute() as compute:
        with pytest.raises(ValueError, match="step failed"):
            await compute.run("a", fail)
        assert await compute.run("a", lambda: 42) == 42
        assert not compute.turns.busy


async def test_a_caller_cancelled_mid_call_leaves_only_once_the_call_has_returned() -> None:
    started, finished = threading.Event(), threading.Event()

    def step() -> None:
        started.set()
        threading.Event().wait(0.05)
        finished.set()

    async with open_compute() as compute:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(compute.run, "a", step)
                await trio.to_thread.run_sync(started.wait)
                scope.cancel()
        assert finished.is_set() and not compute.turns.busy   # the model's memory was in use
