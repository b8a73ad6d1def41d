"""GPU inventory (NVML), memory estimates and placement rules; pure decisions, no engine imports."""

from __future__ import annotations

from trio_llm.gpu.devices import (
    DeviceInventory,
    GpuInfo,
    SystemDevices,
    SystemMemory,
    devices,
    read_meminfo,
)
from trio_llm.gpu.memory import (
    KV_BYTES_PER_ELEMENT,
    MemoryEstimate,
    estimate_from_gguf,
    estimate_memory,
)
from trio_llm.gpu.placement import GpuShare, Placement, place

__all__ = [
    "KV_BYTES_PER_ELEMENT",
    "DeviceInventory",
    "GpuInfo",
    "GpuShare",
    "MemoryEstimate",
    "Placement",
    "SystemDevices",
    "SystemMemory",
    "devices",
    "estimate_from_gguf",
    "estimate_memory",
    "place",
    "read_meminfo",
]
