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
from trio_llm.gpu.memory import MemoryEstimate
from trio_llm.gpu.placement import GpuShare, Placement, place

__all__ = [
    "DeviceInventory",
    "GpuInfo",
    "GpuShare",
    "MemoryEstimate",
    "Placement",
    "SystemDevices",
    "SystemMemory",
    "devices",
    "place",
    "read_meminfo",
]
