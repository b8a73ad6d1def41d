"""What memory the machine has: NVIDIA GPUs through NVML, system RAM through /proc/meminfo.

No GPU is a normal answer, not an error: without the NVIDIA driver `pynvml.nvmlInit()` fails
within a millisecond and `devices()` returns an empty list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the scheduler sees it: identity and memory in bytes."""

    index: int
    id: str
    name: str
    total: int
    free: int
    library: str = "cuda"


@dataclass(frozen=True)
class SystemMemory:
    """System RAM in bytes: MemTotal and MemAvailable."""

    total: int
    available: int


class DeviceInventory(Protocol):
    """The scheduler's view of the hardware; tests pass a fake (trio_llm.testing.fakes)."""

    def gpus(self) -> Sequence[GpuInfo]:
        """Every usable GPU with its current free memory."""
        ...

    def system_memory(self) -> SystemMemory:
        """Current total and available system memory."""
        ...


def _visible(filter_text: str | None, index: int, uuid: str) -> bool:
    """CUDA_VISIBLE_DEVICES semantics: unset means all; otherwise indices or UUID prefixes."""
    if filter_text is None:
        return True
    for item in (part.strip() for part in filter_text.split(",")):
        if item.isdigit() and int(item) == index:
            return True
        if item and not item.lstrip("-").isdigit() and uuid.startswith(item):
            return True
    return False


def devices(environ: Mapping[str, str] | None = None) -> list[GpuInfo]:
    """The NVIDIA GPUs visible to this process (honouring CUDA_VISIBLE_DEVICES), or [] if none."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("no NVIDIA GPU: %s", exc)
        return []
    env = os.environ if environ is None else environ
    found: list[GpuInfo] = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            if not _visible(env.get("CUDA_VISIBLE_DEVICES"), index, uuid):
                continue
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            found.append(GpuInfo(index=index, id=uuid, name=_text(pynvml.nvmlDeviceGetName(handle)),
                                 total=int(memory.total), free=int(memory.free)))
    except pynvml.NVMLError as exc:
        log.warning("NVML query failed, treating the machine as GPU-less: %s", exc)
        return []
    finally:
        pynvml.nvmlShutdown()
    return found


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_meminfo(path: str | os.PathLike[str] = "/proc/meminfo") -> SystemMemory:
    """MemTotal and MemAvailable in bytes (the file gives kB)."""
    fields: dict[str, int] = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    total = fields.get("MemTotal", 0)
    return SystemMemory(total=total, available=fields.get("MemAvailable", fields.get("MemFree", 0)))


class SystemDevices:
    """The real inventory: NVML for GPUs (looked up once), /proc/meminfo for RAM."""

    def __init__(self, meminfo: str | os.PathLike[str] = "/proc/meminfo") -> None:
        self._meminfo = meminfo
        self._has_gpus: bool | None = None

    def gpus(self) -> list[GpuInfo]:
        if self._has_gpus is False:
            return []
        found = devices()
        self._has_gpus = bool(found)
        return found

    def system_memory(self) -> SystemMemory:
        return read_meminfo(self._meminfo)
