"""Fakes for the scheduler's collaborators: runners that sleep instead of computing, a settable
GPU and RAM inventory, and a dictionary of models. They record what happened for assertions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from trio_llm.gpu.devices import GpuInfo, SystemMemory
from trio_llm.gpu.memory import MemoryEstimate
from trio_llm.gpu.placement import Placement
from trio_llm.nursery.errors import ModelNotFound
from trio_llm.nursery.runner import LoadSpec, ResolvedModel

GB = 10**9


@dataclass(frozen=True)
class FakeRequest:
    """A request for FakeRunner.serve: `chunks` outputs, `interval` virtual seconds apart."""

    id: Any = None
    chunks: int = 3
    interval: float = 1.0


@dataclass
class Event:
    """One thing a fake saw: what, for which model or request, and when (trio clock)."""

    what: str
    subject: Any
    at: float


class FakeRunner:
    """A loaded model that answers each request with a few chunks, sleeping in between."""

    def __init__(self, spec: LoadSpec, placement: Placement, log: list[Event]) -> None:
        self.spec = spec
        self.placement = placement
        self.n_slots = spec.n_slots
        self.memory = placement.size
        self.active: set[Any] = set()
        self.max_active = 0
        self.closed = False
        self.crash_after: float | None = None
        self._log = log

    async def run(self) -> None:
        if self.crash_after is None:
            await trio.sleep_forever()
        await trio.sleep(self.crash_after)
        raise RuntimeError("runner died")

    async def serve(self, request: Any) -> AsyncIterator[str]:
        req = request if isinstance(request, FakeRequest) else FakeRequest(request)
        if len(self.active) >= self.n_slots:
            raise RuntimeError("more requests than slots")
        token = object()
        self.active.add(token)
        self.max_active = max(self.max_active, len(self.active))
        self._log.append(Event("start", req.id, trio.current_time()))
        try:
            for i in range(req.chunks):
                await trio.sleep(req.interval)
                yield f"{req.id}:{i}"
            self._log.append(Event("done", req.id, trio.current_time()))
        finally:
            self.active.discard(token)  # a cancelled request frees its slot here

    async def aclose(self) -> None:
        self.closed = True
        self._log.append(Event("unload", self.spec.name, trio.current_time()))


class FakeRunnerFactory:
    """Loads FakeRunners after `load_time` virtual seconds; sizes come from `sizes`.

    sizes: model name -> total bytes (split into equal pieces) or a function of the LoadSpec
    returning a MemoryEstimate. `log` records load / start / done / unload events."""

    def __init__(self, sizes: Mapping[str, int | Callable[[LoadSpec], MemoryEstimate]]
                 | None = None, load_time: float = 1.0, default_size: int = GB) -> None:
        self.sizes = dict(sizes or {})
        self.load_time = load_time
        self.default_size = default_size
        self.log: list[Event] = []
        self.runners: list[FakeRunner] = []
        self.fail_next: BaseException | None = None
        self.crash_after: float | None = None  # runners' step loops fail this long after load

    @asynccontextmanager
    async def open_compute(self) -> AsyncIterator[None]:
        """Nothing is shared by fake runners; the log shows when the scheduler held it."""
        self.log.append(Event("compute open", None, trio.current_time()))
        try:
            yield
        finally:
            self.log.append(Event("compute closed", None, trio.current_time()))

    async def estimate(self, spec: LoadSpec) -> MemoryEstimate:
        size = self.sizes.get(spec.name, self.default_size)
        return size(spec) if callable(size) else MemoryEstimate.flat(size)

    async def load(self, spec: LoadSpec, placement: Placement) -> FakeRunner:
        if not self.events("compute open") or self.events("compute closed"):
            raise RuntimeError("load outside open_compute()")
        self.log.append(Event("load", spec.name, trio.current_time()))
        await trio.sleep(self.load_time)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        runner = FakeRunner(spec, placement, self.log)
        runner.crash_after = self.crash_after
        self.runners.append(runner)
        return runner

    def events(self, what: str) -> list[tuple[Any, float]]:
        return [(e.subject, e.at) for e in self.log if e.what == what]

    def live(self) -> list[FakeRunner]:
        return [r for r in self.runners if not r.closed]


@dataclass
class FakeDevices:
    """A settable inventory: GPUs and system memory as the tests want them."""

    gpu_list: list[GpuInfo] = field(default_factory=list)
    total: int = 64 * GB
    available: int = 64 * GB

    @classmethod
    def with_gpus(cls, *free: int, ram: int = 64 * GB) -> FakeDevices:
        """GPUs with the given free bytes (total = free), and `ram` of system memory."""
        gpus = [GpuInfo(index=i, id=f"GPU-{i}", name="Fake GPU", total=f, free=f)
                for i, f in enumerate(free)]
        return cls(gpu_list=gpus, total=ram, available=ram)

    def gpus(self) -> Sequence[GpuInfo]:
        return list(self.gpu_list)

    def system_memory(self) -> SystemMemory:
        return SystemMemory(total=self.total, available=self.available)


class FakeResolver:
    """Names to ResolvedModels; any name in `names` resolves to /models/<name>.gguf."""

    def __init__(self, *names: str, context_length: int = 0,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.models = {n: ResolvedModel(name=n, path=Path(f"/models/{n}.gguf"),
                                        digest=f"{abs(hash(n)):064x}"[:64],
                                        options=dict((options or {}).get(n, {})),
                                        context_length=context_length)
                       for n in names}

    async def resolve(self, name: str) -> ResolvedModel:
        await trio.lowlevel.checkpoint()
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(name) from None
