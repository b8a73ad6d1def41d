"""The scheduler: loaded models, their keep_alive timers, the request queue and placement."""

from __future__ import annotations

from trio_llm.nursery.errors import (
    LoadTimeout,
    ModelNotFound,
    ModelTooLarge,
    QueueFull,
    SchedulerClosed,
    SchedulerError,
)
from trio_llm.nursery.ps import ModelStatus, rfc3339
from trio_llm.nursery.runner import (
    LOAD_OPTIONS,
    LoadSpec,
    ModelResolver,
    ResolvedModel,
    Runner,
    RunnerFactory,
)
from trio_llm.nursery.scheduler import Lease, LoadedModel, Scheduler, open_scheduler
from trio_llm.nursery.settings import SchedulerSettings

__all__ = [
    "LOAD_OPTIONS",
    "Lease",
    "LoadSpec",
    "LoadTimeout",
    "LoadedModel",
    "ModelNotFound",
    "ModelResolver",
    "ModelTooLarge",
    "QueueFull",
    "ResolvedModel",
    "Runner",
    "RunnerFactory",
    "ModelStatus",
    "Scheduler",
    "SchedulerClosed",
    "SchedulerError",
    "SchedulerSettings",
    "open_scheduler",
    "rfc3339",
]
