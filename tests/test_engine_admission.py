"""The scheduler admits, evicts and reports real engine models by one figure: the network's plan.

Two names for the real SmolLM2 file, a memory budget that fits one of them with its repacked
decode copies but not two (the old estimate from the file alone would have let both in), the
real EngineFactory and runners on the real clock.
"""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from trio_llm.engine.model import plan_model
from trio_llm.nursery import ModelTooLarge, SchedulerSettings, open_scheduler
from trio_llm.nursery.engine_runner import EngineFactory, GenerateJob
from trio_llm.nursery.runner import ResolvedModel
from trio_llm.nursery.scheduler import Scheduler
from trio_llm.testing.fakes import GB, FakeDevices

CTX = 512


class SameFile:
    """Every name resolves to the same GGUF file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def resolve(self, name: str) -> ResolvedModel:
        await trio.lowlevel.checkpoint()
        return ResolvedModel(name=name, path=self.path, digest=f"{abs(hash(name)):064x}"[:64])


async def generate(sched: Scheduler, name: str) -> str:
    async with sched.acquire(name) as lease:
        job = GenerateJob("The capital of France is", {"temperature": 0, "num_predict": 3})
        async with aclosing(lease.serve(job)) as outputs:
            return "".join([out.text async for out in outputs])


def settings() -> SchedulerSettings:
    return SchedulerSettings(context_length=CTX, keep_alive=300.0, kv_cache_type="f16",
                             prompt_cache=64 << 20)


@pytest.fixture(scope="module")
def plan_total(smollm2_path: Path) -> int:
    """The model's plan, the prompt cache's budget included."""
    plan = plan_model(smollm2_path, CTX, 1, 512, "f16", settings().prompt_cache)
    assert plan.prompt_cache == settings().prompt_cache
    return plan.total


async def test_a_budget_for_one_model_with_its_copies_evicts_the_first_for_the_second(
        smollm2_path: Path, plan_total: int) -> None:
    file_only = smollm2_path.stat().st_size + plan_total // 10
    budget = plan_total * 3 // 2
    assert 2 * file_only < budget  # what the file-size estimate would have admitted twice
    devices = FakeDevices.with_gpus(80 * GB, ram=budget)  # a GPU the CPU engine must not claim
    with trio.fail_after(300):
        async with open_scheduler(EngineFactory(), devices, SameFile(smollm2_path),
                                  settings()) as sched:
            assert (await generate(sched, "a")).strip()
            (entry,) = sched.ps()
            assert entry.size == plan_total and entry.size_vram == 0
            runner = sched.model("a").runner  # type: ignore[union-attr]
            assert runner is not None and runner.memory == plan_total
            assert (await generate(sched, "b")).strip()
            assert sched.loaded() == ["b"]  # a went to make room, by the same figure
            (entry,) = sched.ps()
            assert entry.name == "b" and entry.size == plan_total and entry.size_vram == 0


async def test_a_budget_below_one_model_with_its_copies_is_refused(
        smollm2_path: Path, plan_total: int) -> None:
    devices = FakeDevices(total=plan_total - 1, available=plan_total - 1)
    with trio.fail_after(120):
        async with open_scheduler(EngineFactory(), devices, SameFile(smollm2_path),
                                  settings()) as sched:
            with pytest.raises(ModelTooLarge):
                await generate(sched, "a")
            assert sched.loaded() == []
