"""The scheduler: one trio nursery owns every loaded model; requests queue, attach, and leave.

    async with open_scheduler(factory, devices, resolver, settings) as scheduler:
        async with scheduler.acquire("smollm2:135m", options, keep_alive) as lease:
            async with contextlib.aclosing(lease.serve(request)) as chunks:
                async for chunk in chunks: ...

Admission: OLLAMA_MAX_QUEUE bounds every request that waits, whether for a slot of a loaded
model or for a load; one more is QueueFull, the 503, at once. A request for a model that is
loaded with the same load options, and has nobody for that model waiting ahead of it, attaches
at once (and waits in that model's slot line). Anything else goes into a bounded memory
channel; `send_nowait` failing is QueueFull too. One loop takes queued
requests one at a time, in arrival order, and does what the head request needs: reload a model
whose load options differ (after its in-flight requests finish), unload the least recently used
idle model while the limit (OLLAMA_MAX_LOADED_MODELS) or memory is short, or wait until one goes
idle (a serving model is never evicted), then load. Inside a model, requests take decode slots
first come, first served.

Each loaded model lives in a task of the scheduler nursery: it loads the runner, runs the
runner's step loop, waits in its keep_alive cancel scope and unloads when that fires. Leaving the
`async with` cancels the nursery, which unloads every model.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import trio

from trio_llm.config import parse_duration
from trio_llm.gpu.devices import DeviceInventory, GpuInfo
from trio_llm.gpu.memory import MemoryEstimate
from trio_llm.gpu.placement import Placement, place
from trio_llm.nursery.admission import SlotPlace, SlotQueue
from trio_llm.nursery.errors import LoadTimeout, ModelTooLarge, QueueFull, SchedulerClosed
from trio_llm.nursery.keep_alive import KeepAlive
from trio_llm.nursery.ps import ModelStatus, wall_time
from trio_llm.nursery.runner import (
    LoadSpec,
    ModelResolver,
    ResolvedModel,
    Runner,
    RunnerFactory,
)
from trio_llm.nursery.settings import SchedulerSettings
from trio_llm.options import default

log = logging.getLogger(__name__)


class LoadedModel:
    """One model in memory: its runner, slots, keep_alive timer and in-flight count."""

    def __init__(self, spec: LoadSpec, placement: Placement, keep_alive: float) -> None:
        self.spec = spec
        self.placement = placement
        self.keep_alive = KeepAlive(keep_alive)
        self.state = "loading"  # then "ready", then "unloading"
        self.runner: Runner | None = None
        self.slots = SlotQueue(spec.n_slots)
        self.in_flight = 0
        self.expiring = False
        self.expiring_since = math.inf
        self.last_used = trio.current_time()
        self.closed = trio.Event()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def accepting(self) -> bool:
        """May a new request attach? Not while loading, unloading or asked to leave."""
        return self.state == "ready" and not self.expiring and not self.keep_alive.expired

    @property
    def leaving(self) -> bool:
        return self.expiring or self.keep_alive.expired or self.state == "unloading"

    def expire(self) -> None:
        """Unload as soon as no request is in flight (now if idle); no new request attaches."""
        self.expiring = True
        self.expiring_since = min(self.expiring_since, trio.current_time())
        if self.in_flight == 0:
            self.keep_alive.expire()


@dataclass
class Lease:
    """A request's hold on a loaded model and one of its decode slots, for the `async with`."""

    model: LoadedModel
    load_duration: float

    @property
    def runner(self) -> Runner:
        assert self.model.runner is not None
        return self.model.runner

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def context_length(self) -> int:
        return self.model.spec.num_ctx

    def serve(self, request: Any) -> AsyncIterator[Any]:
        """The runner's chunks for this request (close it: contextlib.aclosing)."""
        return self.runner.serve(request)


class _Ticket:
    """A queued request, as the scheduling loop sees it."""

    def __init__(self, spec: LoadSpec, keep_alive: float | None,
                 pending: Counter[str]) -> None:
        self.spec = spec
        self.keep_alive = keep_alive
        self.done = trio.Event()
        self.model: LoadedModel | None = None
        self.place: SlotPlace | None = None
        self.error: BaseException | None = None
        self.abandoned = False
        self._pending = pending
        self._queued = True
        pending[spec.name] += 1

    def leave_queue(self) -> None:
        if self._queued:
            self._queued = False
            self._pending[self.spec.name] -= 1
            if not self._pending[self.spec.name]:
                del self._pending[self.spec.name]

    def fail(self, error: BaseException) -> None:
        self.leave_queue()
        self.error = error
        self.done.set()


class Scheduler:
    """Owns loaded models; create it with open_scheduler()."""

    def __init__(self, factory: RunnerFactory, devices: DeviceInventory,
                 resolver: ModelResolver, settings: SchedulerSettings,
                 nursery: trio.Nursery) -> None:
        self.settings = settings
        self._factory = factory
        self._devices = devices
        self._resolver = resolver
        self._nursery = nursery
        self._models: dict[str, LoadedModel] = {}
        self._pending: Counter[str] = Counter()
        self._send, self._receive = trio.open_memory_channel[_Ticket](settings.max_queue)
        self._changed = trio.Event()

    # ------------------------------------------------------------------ the API
    def load_spec(self, model: ResolvedModel, options: Mapping[str, Any] | None = None) -> LoadSpec:
        """The load-time options of a request: request options over Modelfile defaults over
        the settings; num_ctx at least 4 and at most the model's training context."""
        merged = {**model.options, **{k: v for k, v in (options or {}).items() if v is not None}}
        num_ctx = max(4, int(merged.get("num_ctx") or self.settings.default_context))
        if model.context_length:
            num_ctx = min(num_ctx, model.context_length)
        main_gpu = merged.get("main_gpu")
        use_mmap = merged.get("use_mmap")
        return LoadSpec(model=model, num_ctx=num_ctx, n_slots=self.settings.slots,
                        num_batch=int(merged.get("num_batch") or default("num_batch")),
                        num_gpu=int(merged.get("num_gpu", default("num_gpu"))),
                        main_gpu=None if main_gpu is None else int(main_gpu),
                        num_thread=int(merged.get("num_thread") or default("num_thread")),
                        use_mmap=None if use_mmap is None else bool(use_mmap),
                        kv_cache_type=self.settings.kv_cache_type,
                        flash_attention=self.settings.flash_attention,
                        prefill_chunk=self.settings.prefill_chunk,
                        prompt_cache=self.settings.prompt_cache)

    @asynccontextmanager
    async def acquire(self, name: str | ResolvedModel, options: Mapping[str, Any] | None = None,
                      keep_alive: str | float | None = None) -> AsyncIterator[Lease]:
        """Hold a decode slot of `name`, loaded with `options`, for the body of the `async with`.
        `name` may be the model already resolved (the API looked it up for this request).

        keep_alive (None: keep the model's current value) is a duration string or seconds;
        negative = forever, 0 = unload once idle. Raises ModelNotFound, ValueError (bad
        keep_alive), QueueFull at once when the queue is full, or the load's error. Cancelling
        the caller while it waits or is served frees its place and its slot."""
        requested = trio.current_time()
        duration = None if keep_alive is None else parse_duration(keep_alive)
        resolved = name if isinstance(name, ResolvedModel) else await self._resolver.resolve(name)
        spec = self.load_spec(resolved, options)
        model = self._models.get(spec.name)
        if (model is not None and model.accepting and not self._pending[spec.name]
                and model.spec.load_key == spec.load_key):
            if not model.slots.free:
                self._admit()
            place = self._attach(model, duration)
        else:
            self._admit()
            model, place = await self._enqueue(spec, duration)
        try:
            await place.wait()
            yield Lease(model, load_duration=trio.current_time() - requested)
        finally:
            self._detach(model, place)

    async def unload(self, name: str, wait: bool = True) -> bool:
        """Unload `name` now, or once its in-flight requests finish (`stop`, keep_alive 0).

        Returns False if it was not loaded; raises ModelNotFound for an unknown name."""
        resolved = await self._resolver.resolve(name)
        model = self._models.get(resolved.name)
        if model is None:
            return False
        model.expire()
        self._kick()
        if wait:
            await model.closed.wait()
        return True

    def ps(self) -> list[ModelStatus]:
        """Every loaded (or loading) model, the one expiring last first. A model asked to
        leave while serving shows the moment it was asked (ps prints `Stopping...`)."""
        now, wall = trio.current_time(), time.time()
        running = []
        for model in self._models.values():
            expires = min(model.keep_alive.expires_at(), model.expiring_since)
            running.append(ModelStatus(
                name=model.name, model=model.name, digest=model.spec.model.digest,
                size=model.placement.size, size_vram=model.placement.size_vram,
                details=model.spec.model.details,
                expires_at=wall_time(wall + (expires - now) if math.isfinite(expires) else expires),
                context_length=model.spec.num_ctx))
        return sorted(running, key=lambda r: r.expires_at, reverse=True)

    def loaded(self) -> list[str]:
        """Names of the models in memory (loading ones included)."""
        return list(self._models)

    def model(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    @property
    def pending(self) -> int:
        """Requests waiting in the queue, the one being scheduled included."""
        return sum(self._pending.values())

    @property
    def waiting(self) -> int:
        """Every request waiting now: in the queue for a load, or in a model's slot line."""
        return self.pending + sum(m.slots.waiting for m in self._models.values())

    @property
    def busy_slots(self) -> int:
        """Decode slots held by a request now, over every loaded model."""
        return sum(m.slots.in_use for m in self._models.values())

    def _admit(self) -> None:
        """QueueFull unless one more request may wait (OLLAMA_MAX_QUEUE)."""
        if self.waiting >= self.settings.max_queue:
            raise QueueFull()

    # ------------------------------------------------------------------ requests
    def _attach(self, model: LoadedModel, keep_alive: float | None) -> SlotPlace:
        """Count a request in and take its place in the model's slot line (synchronous)."""
        model.in_flight += 1
        if keep_alive is not None:
            model.keep_alive.duration = keep_alive
        model.keep_alive.hold()
        model.last_used = trio.current_time()
        return model.slots.take_place()

    def _detach(self, model: LoadedModel, place: SlotPlace) -> None:
        model.slots.leave(place)
        model.in_flight -= 1
        model.last_used = trio.current_time()
        if model.in_flight == 0:
            if model.expiring:
                model.keep_alive.expire()
            else:
                model.keep_alive.release()
        self._kick()

    async def _enqueue(self, spec: LoadSpec,
                       keep_alive: float | None) -> tuple[LoadedModel, SlotPlace]:
        ticket = _Ticket(spec, keep_alive, self._pending)
        try:
            self._send.send_nowait(ticket)
        except trio.WouldBlock:
            ticket.leave_queue()
            raise QueueFull() from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            ticket.leave_queue()
            raise SchedulerClosed() from None
        try:
            await ticket.done.wait()
        except BaseException:
            ticket.abandoned = True
            ticket.leave_queue()
            if ticket.model is not None and ticket.place is not None:
                self._detach(ticket.model, ticket.place)
            self._kick()
            raise
        if ticket.error is not None:
            raise ticket.error
        assert ticket.model is not None and ticket.place is not None
        return ticket.model, ticket.place

    def _grant(self, ticket: _Ticket, model: LoadedModel) -> None:
        ticket.leave_queue()
        ticket.place = self._attach(model, ticket.keep_alive)
        ticket.model = model
        ticket.done.set()

    # ------------------------------------------------------------------ the loop
    def _kick(self) -> None:
        """Wake the scheduling loop: something was freed, went idle or gave up."""
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_for_change(self) -> None:
        await self._changed.wait()

    async def _schedule_loop(self) -> None:
        async for ticket in self._receive:
            if ticket.abandoned:
                continue
            try:
                await self._schedule(ticket)
            except Exception as exc:  # the head request's failure is its own, not the loop's
                log.info("request for %s failed: %s", ticket.spec.name, exc)
                ticket.fail(exc)
            except BaseException:  # shutdown: the head request must not wait forever
                ticket.fail(SchedulerClosed())
                raise

    async def _schedule(self, ticket: _Ticket) -> None:
        """Get the head request a model: reuse, reload, evict and wait as needed."""
        spec = ticket.spec
        estimate: MemoryEstimate | None = None
        while not ticket.abandoned:
            current = self._models.get(spec.name)
            if current is not None:
                if current.accepting and current.spec.load_key == spec.load_key:
                    self._grant(ticket, current)
                    return
                current.expire()  # different load options: reload after in-flight requests
                await self._wait_for_change()
                continue
            if estimate is None:
                estimate = await self._factory.estimate(spec)
                continue
            gpus = list(self._devices.gpus())
            placement = place(estimate, self._free_gpus(gpus), spread=self.settings.sched_spread,
                              overhead=self.settings.gpu_overhead, num_gpu=spec.num_gpu,
                              main_gpu=spec.main_gpu)
            free_ram = self._free_ram()
            fits = placement.cpu_bytes <= free_ram and _gpu_wish_met(spec, placement, gpus)
            under_limit = len(self._models) < self.settings.max_loaded(len(gpus))
            if not self._models and placement.cpu_bytes > free_ram:
                raise ModelTooLarge(placement.cpu_bytes, free_ram)
            if under_limit and (fits or not self._models):
                await self._load(ticket, spec, placement)
                continue  # the next round grants it (or finds it already gone)
            self._make_room()
            await self._wait_for_change()

    def _make_room(self) -> None:
        """Start unloading the least recently used idle model, unless one is already leaving;
        models that are serving are never chosen."""
        if any(m.leaving and m.in_flight == 0 for m in self._models.values()):
            return  # one is about to go; see what that frees first
        idle = [m for m in self._models.values() if m.state == "ready" and m.in_flight == 0]
        if idle:
            victim = min(idle, key=lambda m: (m.last_used, m.name))
            log.info("unloading %s to make room", victim.name)
            victim.expire()

    def _free_gpus(self, gpus: Sequence[GpuInfo]) -> list[GpuInfo]:
        """Each GPU's free memory: the smaller of what it reports and its total less what the
        loaded models' placements hold there."""
        return [replace(g, free=max(0, min(g.free, g.total - sum(
            m.placement.on_gpu(g.id) for m in self._models.values())))) for g in gpus]

    def _free_ram(self) -> int:
        memory = self._devices.system_memory()
        held = sum(m.placement.cpu_bytes for m in self._models.values())
        return max(0, min(memory.available, memory.total - held))

    async def _load(self, ticket: _Ticket, spec: LoadSpec, placement: Placement) -> None:
        keep_alive = self.settings.keep_alive if ticket.keep_alive is None else ticket.keep_alive
        model = LoadedModel(spec, placement, keep_alive)
        self._models[spec.name] = model
        log.info("loading %s (num_ctx %d, %d slots, %d bytes, %d on GPU)", spec.name,
                 spec.num_ctx, spec.n_slots, placement.size, placement.size_vram)
        await self._nursery.start(self._model_task, model)
        if ticket.abandoned and model.in_flight == 0:
            model.keep_alive.release()  # nobody came for it: the idle timer starts now

    async def _model_task(self, model: LoadedModel,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A loaded model's whole life: load, run, wait for keep_alive, unload."""
        runner: Runner | None = None
        try:
            deadline = self.settings.load_deadline
            try:
                with trio.fail_after(deadline):
                    runner = await self._factory.load(model.spec, model.placement)
            except trio.TooSlowError:
                raise LoadTimeout(model.name, deadline) from None
            model.runner = runner
            if runner.n_slots != model.slots.n_slots:
                model.slots = SlotQueue(runner.n_slots)
            model.state = "ready"
            try:
                async with trio.open_nursery() as inner:
                    inner.start_soon(runner.run)
                    task_status.started()
                    await model.keep_alive.wait()
                    inner.cancel_scope.cancel()
            except Exception:
                log.exception("runner for %s failed; unloading it", model.name)
        finally:
            model.state = "unloading"
            if runner is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await runner.aclose()
                    except Exception:
                        log.exception("closing %s failed", model.name)
            if self._models.get(model.name) is model:
                del self._models[model.name]
            log.info("unloaded %s", model.name)
            model.closed.set()
            self._kick()

    def _close(self) -> None:
        """Refuse new requests and fail the queued ones (shutdown)."""
        self._send.close()
        while True:
            try:
                ticket = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            ticket.fail(SchedulerClosed())


def _gpu_wish_met(spec: LoadSpec, placement: Placement, gpus: Sequence[GpuInfo]) -> bool:
    """Did the GPUs get every piece the spec asked for? (A model loaded next to others must
    fit entirely; only a model alone may be split with the CPU.)"""
    if not gpus or spec.num_gpu == 0:
        return True
    wanted = placement.n_pieces if spec.num_gpu < 0 else min(spec.num_gpu, placement.n_pieces)
    return placement.gpu_layers >= wanted


@asynccontextmanager
async def open_scheduler(factory: RunnerFactory, devices: DeviceInventory,
                         resolver: ModelResolver,
                         settings: SchedulerSettings | None = None) -> AsyncIterator[Scheduler]:
    """Run a scheduler for the body of the `async with`; on exit every model is unloaded,
    and then what the factory's runners share (the compute executor) is closed."""
    async with factory.open_compute(), trio.open_nursery() as nursery:
        scheduler = Scheduler(factory, devices, resolver,
                              settings or SchedulerSettings.from_env(), nursery)
        nursery.start_soon(scheduler._schedule_loop)
        try:
            yield scheduler
        finally:
            scheduler._close()
            nursery.cancel_scope.cancel()
