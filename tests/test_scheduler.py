"""The scheduler with fake runners on trio's virtual clock: keep_alive, queueing, order, reloads."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_llm.cli.format import processor_text, until_text
from trio_llm.nursery import (
    LoadTimeout,
    ModelNotFound,
    ModelTooLarge,
    QueueFull,
    Scheduler,
    SchedulerSettings,
    open_scheduler,
)
from trio_llm.testing.fakes import GB, FakeDevices, FakeRequest, FakeResolver, FakeRunnerFactory

NAMES = ("a", "b", "c", "d")


@asynccontextmanager
async def scheduler(factory: FakeRunnerFactory | None = None,
                    devices: FakeDevices | None = None,
                    resolver: FakeResolver | None = None,
                    **settings: Any) -> AsyncIterator[Scheduler]:
    """A scheduler over fakes; a deadlock fails (virtual) 30 years later instead of hanging."""
    with trio.fail_after(10**9):
        async with open_scheduler(factory or FakeRunnerFactory(), devices or FakeDevices(),
                                  resolver or FakeResolver(*NAMES),
                                  SchedulerSettings(**settings)) as sched:
            yield sched


async def use(sched: Scheduler, name: str, request: FakeRequest | None = None,
              options: dict[str, Any] | None = None, keep_alive: Any = None,
              out: list[str] | None = None) -> None:
    """One whole request: acquire, stream every chunk, release."""
    async with sched.acquire(name, options, keep_alive) as lease:
        async with aclosing(lease.serve(request or FakeRequest(name))) as chunks:
            async for chunk in chunks:
                if out is not None:
                    out.append(chunk)


def unload_times(factory: FakeRunnerFactory, name: str) -> list[float]:
    return [at for subject, at in factory.events("unload") if subject == name]


def done_time(factory: FakeRunnerFactory, request_id: Any) -> float:
    return next(at for subject, at in factory.events("done") if subject == request_id)


# ---------------------------------------------------------------- keep_alive

async def test_default_keep_alive_unloads_five_minutes_after_the_response(autojump_clock):
    factory = FakeRunnerFactory(load_time=1.0)
    async with scheduler(factory) as sched:
        await use(sched, "a", FakeRequest("r", chunks=3))
        done = trio.current_time()
        assert done == pytest.approx(4.0)
        await trio.sleep(299.5)
        assert sched.loaded() == ["a"]
        await trio.sleep(1.0)
        assert sched.loaded() == []
    assert unload_times(factory, "a") == [pytest.approx(done + 300)]


@pytest.mark.parametrize(("keep_alive", "seconds"),
                         [("10m", 600), ("1h30m", 5400), (30, 30), ("45", 45), (2.5, 2.5)])
async def test_request_keep_alive_overrides_the_default(autojump_clock, keep_alive, seconds):
    factory = FakeRunnerFactory()
    async with scheduler(factory) as sched:
        await use(sched, "a", keep_alive=keep_alive)
        done = trio.current_time()
        await trio.sleep(seconds + 1000)
    assert unload_times(factory, "a") == [pytest.approx(done + seconds)]


async def test_negative_keep_alive_keeps_the_model_forever(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory) as sched:
        await use(sched, "a", keep_alive=-1)
        await trio.sleep(10**7)
        assert sched.loaded() == ["a"]
        (entry,) = sched.ps()
        assert until_text(entry.expires_at) == "Forever"
        assert entry.expires_at.year > 2200
    assert factory.runners[0].closed  # leaving the scheduler unloads everything


async def test_keep_alive_zero_unloads_right_after_the_response(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory) as sched:
        await use(sched, "a", FakeRequest("r"), keep_alive=0)
        done = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        assert sched.loaded() == []
    assert unload_times(factory, "a") == [done]


async def test_environment_keep_alive_sets_the_default(autojump_clock):
    settings = SchedulerSettings.from_env({"OLLAMA_KEEP_ALIVE": "1h30m"})
    assert settings.keep_alive == 5400
    factory = FakeRunnerFactory()
    async with scheduler(factory, keep_alive=settings.keep_alive) as sched:
        await use(sched, "a")
        done = trio.current_time()
        await trio.sleep(6000)
    assert unload_times(factory, "a") == [pytest.approx(done + 5400)]


async def test_a_new_request_restarts_the_timer_and_keeps_the_models_keep_alive(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory) as sched:
        await use(sched, "a", keep_alive="1m")
        await trio.sleep(50)  # 10 s before expiry
        await use(sched, "a")  # no keep_alive: the model keeps its 1m
        done = trio.current_time()
        await trio.sleep(59)
        assert sched.loaded() == ["a"]
        await trio.sleep(2)
        assert sched.loaded() == []
    assert unload_times(factory, "a") == [pytest.approx(done + 60)]
    assert len(factory.events("load")) == 1


async def test_the_timer_does_not_run_while_a_request_is_in_flight(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory, keep_alive=5.0) as sched:
        await use(sched, "a", FakeRequest("long", chunks=100, interval=1.0))
        assert factory.events("done") == [("long", pytest.approx(101.0))]
        assert sched.loaded() == ["a"]


async def test_unload_waits_for_in_flight_requests(autojump_clock):
    factory = FakeRunnerFactory()
    out: list[str] = []
    async with scheduler(factory) as sched, trio.open_nursery() as nursery:
        nursery.start_soon(use, sched, "a", FakeRequest("r", chunks=10), None, None, out)
        await trio.sleep(3)
        nursery.start_soon(sched.unload, "a")
        await trio.sleep(1)
        assert [until_text(m.expires_at) for m in sched.ps()] == ["Stopping..."]
        assert await sched.unload("a") is True
        assert trio.current_time() == pytest.approx(done_time(factory, "r"))
        assert len(out) == 10
        assert sched.loaded() == []
        assert await sched.unload("a") is False


# ---------------------------------------------------------------- eviction and limits

async def test_least_recently_used_idle_model_is_evicted_first(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory, max_loaded_models=2) as sched:
        await use(sched, "a")
        await use(sched, "b")
        await use(sched, "a")  # b is now the least recently used
        await use(sched, "c")
        assert sorted(sched.loaded()) == ["a", "c"]
        await use(sched, "d")  # a was used before c
        assert sorted(sched.loaded()) == ["c", "d"]
    order = [name for name, _ in factory.events("unload")]
    assert order[:2] == ["b", "a"]


async def test_max_loaded_models_is_never_exceeded(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory, max_loaded_models=1) as sched, trio.open_nursery() as nursery:
        nursery.start_soon(use, sched, "a", FakeRequest("ra", chunks=20))
        await trio.sleep(2)
        nursery.start_soon(use, sched, "b", FakeRequest("rb"))
        await trio.sleep(5)
        assert sched.loaded() == ["a"]  # b waits: a is serving and may not be evicted
    live = 0
    for event in factory.log:
        live += {"load": 1, "unload": -1}.get(event.what, 0)
        assert live <= 1
    (b_load,) = [at for name, at in factory.events("load") if name == "b"]
    assert b_load >= done_time(factory, "ra")


async def test_default_model_limit_is_three_per_gpu_and_three_on_cpu():
    settings = SchedulerSettings()
    assert settings.max_loaded(0) == 3
    assert settings.max_loaded(2) == 6
    assert SchedulerSettings(max_loaded_models=5).max_loaded(2) == 5


async def test_a_model_that_does_not_fit_waits_for_an_idle_one_and_never_evicts_a_busy_one(
        autojump_clock):
    factory = FakeRunnerFactory(sizes={"a": 4 * GB, "b": 4 * GB, "c": 4 * GB})
    devices = FakeDevices(total=10 * GB, available=10 * GB)
    out: list[str] = []
    async with scheduler(factory, devices) as sched, trio.open_nursery() as nursery:
        nursery.start_soon(use, sched, "a", FakeRequest("ra", chunks=30), None, None, out)
        await trio.sleep(5)
        await use(sched, "c")  # c is idle now, a (used longer ago) is still serving
        await use(sched, "b")  # 2 GB free: one must go, and it is c, not the busy a
        assert sorted(sched.loaded()) == ["a", "b"]
    assert [name for name, _ in factory.events("unload")][0] == "c"
    assert len(out) == 30


async def test_a_model_too_big_for_free_memory_waits_until_the_busy_one_finishes(autojump_clock):
    factory = FakeRunnerFactory(sizes={"a": 6 * GB, "b": 6 * GB})
    devices = FakeDevices(total=10 * GB, available=10 * GB)
    out: list[str] = []
    async with scheduler(factory, devices) as sched, trio.open_nursery() as nursery:
        nursery.start_soon(use, sched, "a", FakeRequest("ra", chunks=20), None, None, out)
        await trio.sleep(2)
        await use(sched, "b", FakeRequest("rb"))
    a_done = done_time(factory, "ra")
    (b_load,) = [at for name, at in factory.events("load") if name == "b"]
    assert unload_times(factory, "a")[0] >= a_done
    assert b_load >= a_done
    assert len(out) == 20


async def test_a_model_bigger_than_available_memory_fails_when_alone(autojump_clock):
    factory = FakeRunnerFactory(sizes={"a": 3 * GB, "b": 5 * GB})
    devices = FakeDevices(total=64 * GB, available=4 * GB)  # other programs use the rest
    async with scheduler(factory, devices) as sched:
        await use(sched, "a")
        with pytest.raises(ModelTooLarge, match=r"more system memory \(4.7 GiB\)"):
            async with sched.acquire("b"):  # evicts a, then still does not fit
                pass
        assert sched.loaded() == []


async def test_a_second_model_must_fit_entirely_on_the_gpu(autojump_clock):
    factory = FakeRunnerFactory(sizes={"a": 5 * GB, "b": 5 * GB})
    devices = FakeDevices.with_gpus(8 * GB)
    async with scheduler(factory, devices) as sched:
        await use(sched, "a")
        assert [processor_text(m.size, m.size_vram) for m in sched.ps()] == ["100% GPU"]
        await use(sched, "b")  # would only fit partly beside a: a goes
        assert sched.loaded() == ["b"]
        assert [processor_text(m.size, m.size_vram) for m in sched.ps()] == ["100% GPU"]


async def test_ps_reports_partial_offload_of_a_model_alone(autojump_clock):
    factory = FakeRunnerFactory(sizes={"big": 10 * GB})
    devices = FakeDevices.with_gpus(4 * GB)
    async with scheduler(factory, devices, resolver=FakeResolver("big")) as sched:
        await use(sched, "big")
        (entry,) = sched.ps()
        assert entry.size == 10 * GB and entry.size_vram == 4 * GB
        assert processor_text(entry.size, entry.size_vram) == "60%/40% CPU/GPU"


async def test_ps_lists_name_digest_context_and_expiry(autojump_clock):
    resolver = FakeResolver("a")
    async with scheduler(resolver=resolver) as sched:
        await use(sched, "a", options={"num_ctx": 2048})
        (entry,) = sched.ps()
        body = entry.as_json()
        assert list(body) == ["name", "model", "size", "digest", "details", "expires_at",
                              "size_vram", "context_length"]
        assert body["name"] == body["model"] == "a"
        assert body["digest"] == resolver.models["a"].digest
        assert body["context_length"] == 2048
        assert body["size_vram"] == 0 and processor_text(entry.size, entry.size_vram) == "100% CPU"
        assert body["details"]["format"] == "gguf"
        assert until_text(entry.expires_at) == "4 minutes from now"


# ---------------------------------------------------------------- admission and order

async def test_a_full_queue_answers_at_once_and_accepted_requests_are_all_served(autojump_clock):
    factory = FakeRunnerFactory()
    served: list[str] = []
    accepted = 0

    async def one(name: str, request_id: str) -> None:
        out: list[str] = []
        await use(sched, name, FakeRequest(request_id, chunks=1), out=out)
        served.extend(out)

    async with scheduler(factory, max_loaded_models=1, max_queue=2) as sched:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(use, sched, "a", FakeRequest("busy", chunks=50))
            await trio.sleep(2)
            for i in range(2):  # MAX_QUEUE counts the head being scheduled too
                nursery.start_soon(one, "b", f"b{i}")
                await trio.sleep(0.01)
                accepted += 1
            assert sched.pending == 2 and sched.waiting == 2
            before = trio.current_time()
            with pytest.raises(QueueFull) as caught:
                async with sched.acquire("c"):
                    pass
            assert trio.current_time() == before
            assert str(caught.value) == ("server busy, please try again.  "
                                         "maximum pending requests exceeded")
    assert sorted(served) == ["b0:0", "b1:0"]
    assert accepted == 2


async def test_max_queue_counts_requests_waiting_for_a_slot_of_a_loaded_model(autojump_clock):
    factory = FakeRunnerFactory()
    refused = 0
    async with scheduler(factory, num_parallel=2, max_queue=4) as sched:
        await use(sched, "a", FakeRequest("warm", chunks=1))       # loaded, idle
        async with trio.open_nursery() as nursery:
            for i in range(6):                                      # 2 serve, 4 wait
                nursery.start_soon(use, sched, "a", FakeRequest(f"r{i}", chunks=40))
                await trio.sleep(0.001)
            for _ in range(3):
                with pytest.raises(QueueFull):
                    async with sched.acquire("a"):
                        pass
                refused += 1
            assert (sched.busy_slots, sched.waiting, sched.pending) == (2, 4, 0)
        assert (sched.busy_slots, sched.waiting) == (0, 0)
    assert refused == 3
    assert sorted(i for i, _ in factory.events("done")) == ["r0", "r1", "r2", "r3", "r4", "r5",
                                                           "warm"]


async def test_requests_for_one_model_are_served_in_arrival_order(autojump_clock):
    factory = FakeRunnerFactory(load_time=5.0)
    async with scheduler(factory) as sched, trio.open_nursery() as nursery:
        for i in range(12):  # the first six arrive while the model loads
            nursery.start_soon(use, sched, "a", FakeRequest(i, chunks=2))
            await trio.sleep(1.0)
    assert [i for i, _ in factory.events("start")] == list(range(12))
    assert factory.runners[0].max_active == 1


async def test_parallel_slots_serve_requests_together(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory, num_parallel=3) as sched, trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(use, sched, "a", FakeRequest(i, chunks=4))
            await trio.sleep(0.01)
    runner = factory.runners[0]
    assert runner.n_slots == 3 and runner.max_active == 3
    starts = [at for _, at in factory.events("start")]
    assert starts[3] >= starts[0] + 4  # the fourth waited for a free slot


async def test_a_cancelled_request_frees_its_slot(autojump_clock):
    factory = FakeRunnerFactory()
    cancelled = trio.CancelScope()

    async def doomed() -> None:
        with cancelled:
            await use(sched, "a", FakeRequest("first", chunks=1000))

    async with scheduler(factory) as sched, trio.open_nursery() as nursery:
        nursery.start_soon(doomed)
        await trio.sleep(2)
        nursery.start_soon(use, sched, "a", FakeRequest("second", chunks=1))
        await trio.sleep(3)
        assert "second" not in dict(factory.events("start"))  # one slot, and it is taken
        cancelled.cancel()
        cancel_time = trio.current_time()
        await trio.sleep(0.5)
        runner = factory.runners[0]
        assert len(runner.active) == 1  # the second took the freed slot
        model = sched.model("a")
        assert model is not None and model.in_flight == 1
    assert dict(factory.events("start"))["second"] == pytest.approx(cancel_time)
    assert "first" not in dict(factory.events("done"))
    assert runner.active == set()


async def test_a_request_cancelled_while_queued_is_dropped(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory, max_loaded_models=1) as sched, trio.open_nursery() as nursery:
        nursery.start_soon(use, sched, "a", FakeRequest("busy", chunks=10))
        await trio.sleep(2)
        with trio.move_on_after(3):
            await use(sched, "b")
        assert sched.pending == 0
        await use(sched, "c")
    assert "b" not in [name for name, _ in factory.events("load")]


async def test_an_unknown_model_raises_model_not_found(autojump_clock):
    async with scheduler() as sched:
        with pytest.raises(ModelNotFound, match="model 'nope' not found"):
            async with sched.acquire("nope"):
                pass
        with pytest.raises(ModelNotFound):
            await sched.unload("nope")


async def test_a_bad_keep_alive_is_a_value_error(autojump_clock):
    async with scheduler() as sched:
        with pytest.raises(ValueError):
            async with sched.acquire("a", keep_alive="soon"):
                pass
        assert sched.loaded() == []


# ---------------------------------------------------------------- loading and reloading

async def test_a_different_num_ctx_reloads_after_in_flight_requests(autojump_clock):
    factory = FakeRunnerFactory()
    out: list[str] = []
    async with scheduler(factory) as sched, trio.open_nursery() as nursery:
        nursery.start_soon(use, sched, "a", FakeRequest("old", chunks=5),
                           {"num_ctx": 2048}, None, out)
        await trio.sleep(2)
        await use(sched, "a", FakeRequest("new"), {"num_ctx": 8192})
        (entry,) = sched.ps()
        assert entry.context_length == 8192
        assert [r.spec.num_ctx for r in factory.runners] == [2048, 8192]
    old_done = done_time(factory, "old")
    loads = [at for _, at in factory.events("load")]
    assert len(out) == 5
    assert unload_times(factory, "a")[0] == pytest.approx(old_done)
    assert loads[1] >= old_done


async def test_sampling_options_do_not_reload(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory) as sched:
        await use(sched, "a", options={"temperature": 0.1})
        await use(sched, "a", options={"temperature": 0.9, "top_k": 3, "num_predict": 5})
    assert len(factory.events("load")) == 1


async def test_num_ctx_comes_from_request_modelfile_or_settings_and_is_clamped(autojump_clock):
    resolver = FakeResolver("a", "m", context_length=8192, options={"m": {"num_ctx": 1024}})
    async with scheduler(resolver=resolver, context_length=2048) as sched:
        a, m = resolver.models["a"], resolver.models["m"]
        assert sched.load_spec(a).num_ctx == 2048
        assert sched.load_spec(m).num_ctx == 1024
        assert sched.load_spec(m, {"num_ctx": 3000}).num_ctx == 3000
        assert sched.load_spec(a, {"num_ctx": 100_000}).num_ctx == 8192
        assert sched.load_spec(a, {"num_ctx": 1}).num_ctx == 4
    assert SchedulerSettings().default_context == 4096


async def test_a_failed_load_fails_only_its_request(autojump_clock):
    factory = FakeRunnerFactory()
    factory.fail_next = RuntimeError("bad file")
    async with scheduler(factory) as sched:
        with pytest.raises(RuntimeError, match="bad file"):
            async with sched.acquire("a"):
                pass
        assert sched.loaded() == []
        await use(sched, "a")
        assert sched.loaded() == ["a"]


async def test_a_stalled_load_times_out(autojump_clock):
    factory = FakeRunnerFactory(load_time=1000)
    async with scheduler(factory, load_timeout=300.0) as sched:
        with pytest.raises(LoadTimeout):
            async with sched.acquire("a"):
                pass
        assert trio.current_time() == pytest.approx(300.0)
        assert sched.loaded() == []


async def test_a_crashed_runner_is_unloaded_and_the_scheduler_keeps_going(autojump_clock):
    factory = FakeRunnerFactory()
    factory.crash_after = 10.0
    async with scheduler(factory) as sched:
        await use(sched, "a")
        await trio.sleep(20)
        assert sched.loaded() == [] and factory.runners[0].closed
        factory.crash_after = None
        await use(sched, "a")
        assert sched.loaded() == ["a"]


async def test_leaving_the_scheduler_unloads_every_model(autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory, keep_alive=math.inf) as sched:
        for name in ("a", "b", "c"):
            await use(sched, name)
        assert len(factory.live()) == 3
    assert factory.live() == []


def test_the_scheduler_does_not_import_the_engine():
    code = ("import sys, trio_llm.nursery, trio_llm.testing.fakes; "
            "sys.exit(any(m.startswith('trio_llm.engine') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


async def test_the_shared_compute_opens_before_the_first_load_and_closes_after_the_last_unload(
        autojump_clock):
    factory = FakeRunnerFactory()
    async with scheduler(factory) as sched:
        await use(sched, "a")
        await use(sched, "b")
    whats = [e.what for e in factory.log if e.what in ("compute open", "compute closed",
                                                       "load", "unload")]
    assert whats[0] == "compute open" and whats[-1] == "compute closed"
    assert whats.count("load") == 2 and whats.count("unload") == 2
