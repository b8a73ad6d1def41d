"""GPU placement from fake inventories, memory estimates, and the real (GPU-less) inventory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trio_llm.cli.format import processor_text
from trio_llm.gpu import (
    GpuInfo,
    MemoryEstimate,
    SystemDevices,
    devices,
    place,
    read_meminfo,
)
from trio_llm.gpu.devices import _visible

MB = 10**6
GB = 10**9


def gpus(*free: int) -> list[GpuInfo]:
    return [GpuInfo(index=i, id=f"GPU-{i}", name="test", total=f, free=f)
            for i, f in enumerate(free)]


# 10 blocks of 500 MB (400 weights + 100 KV), 500 MB of other weights, 200 MB compute: 5.7 GB.
MODEL = MemoryEstimate(n_layer=10, layer_weights=400 * MB, layer_kv=100 * MB,
                       other_weights=500 * MB, compute=200 * MB)


def test_estimate_total_is_weights_plus_kv_plus_compute():
    assert MODEL.weights == 4500 * MB
    assert MODEL.kv == 1000 * MB
    assert MODEL.total == 5700 * MB


def test_no_gpu_means_cpu_only():
    placement = place(MODEL, [])
    assert placement.size == MODEL.total and placement.size_vram == 0
    assert processor_text(placement.size, placement.size_vram) == "100% CPU"


def test_a_model_that_fits_on_one_gpu_goes_on_the_one_with_most_free_memory():
    placement = place(MODEL, gpus(6 * GB, 8 * GB, 7 * GB))
    assert [(s.gpu_id, s.layers) for s in placement.gpus] == [("GPU-1", 11)]
    assert placement.size == placement.size_vram == MODEL.total
    assert placement.full_offload
    assert processor_text(placement.size, placement.size_vram) == "100% GPU"


def test_a_model_that_fits_only_across_gpus_is_spread_over_them():
    placement = place(MODEL, gpus(3500 * MB, 3500 * MB))
    assert placement.full_offload
    assert [s.gpu_id for s in placement.gpus] == ["GPU-0", "GPU-1"]
    assert sorted(s.layers for s in placement.gpus) == [5, 6]
    assert placement.size == MODEL.total + MODEL.compute  # each GPU holds a compute buffer
    assert processor_text(placement.size, placement.size_vram) == "100% GPU"
    assert all(s.bytes <= 3500 * MB for s in placement.gpus)


def test_a_model_too_big_for_the_gpus_is_split_with_the_cpu():
    placement = place(MODEL, gpus(3300 * MB))
    # 3100 MB after the compute buffer holds 6 blocks; 4 blocks and the rest stay on the CPU.
    assert placement.gpu_layers == 6 and not placement.full_offload
    assert placement.size_vram == 6 * 500 * MB + 200 * MB
    assert placement.cpu_bytes == 4 * 500 * MB + 500 * MB + 200 * MB
    assert processor_text(placement.size, placement.size_vram) == "46%/54% CPU/GPU"


def test_sched_spread_spreads_even_a_model_that_fits_on_one_gpu():
    small = MemoryEstimate.flat(1 * GB, n_layer=9)
    assert len(place(small, gpus(8 * GB, 8 * GB)).gpus) == 1
    spread = place(small, gpus(8 * GB, 8 * GB), spread=True)
    assert [s.layers for s in spread.gpus] == [5, 5]
    assert spread.full_offload


def test_gpu_overhead_is_reserved_on_every_gpu():
    assert place(MODEL, gpus(6 * GB)).full_offload
    placement = place(MODEL, gpus(6 * GB), overhead=1 * GB)
    # 5 GB usable, 4.8 GB after compute: 9 blocks fit, the 10th and the rest do not.
    assert placement.gpu_layers == 9
    assert placement.size_vram == 9 * 500 * MB + 200 * MB
    assert processor_text(placement.size, placement.size_vram) == "20%/80% CPU/GPU"


def test_num_gpu_zero_is_cpu_only_and_positive_num_gpu_caps_the_layers():
    assert place(MODEL, gpus(80 * GB), num_gpu=0).size_vram == 0
    capped = place(MODEL, gpus(80 * GB), num_gpu=3)
    assert capped.gpu_layers == 3
    assert capped.size_vram == 3 * 500 * MB + 200 * MB


def test_main_gpu_pins_the_model_to_that_gpu():
    placement = place(MODEL, gpus(8 * GB, 9 * GB), main_gpu=0)
    assert [s.gpu_id for s in placement.gpus] == ["GPU-0"]


def test_a_gpu_too_small_for_any_layer_leaves_the_model_on_the_cpu():
    assert place(MODEL, gpus(300 * MB)).gpus == ()


def test_a_cpu_only_model_is_placed_on_the_cpu_whatever_gpus_there_are():
    cpu = MemoryEstimate(n_layer=10, layer_weights=400 * MB, layer_kv=100 * MB,
                         other_weights=500 * MB, compute=200 * MB, cpu_only=True)
    placement = place(cpu, gpus(80 * GB, 80 * GB))
    assert placement.gpus == () and placement.size_vram == 0
    assert placement.size == cpu.total and placement.cpu_bytes == cpu.total


def test_real_devices_is_an_empty_list_without_a_gpu_and_answers_fast():
    start = time.perf_counter()
    found = devices()
    elapsed = time.perf_counter() - start
    assert isinstance(found, list)
    if not Path("/dev/nvidiactl").exists():
        assert found == []
        assert elapsed < 0.5
        assert SystemDevices().gpus() == []


def test_cuda_visible_devices_selects_by_index_or_uuid():
    assert _visible(None, 3, "GPU-abc")
    assert _visible("0,3", 3, "GPU-abc")
    assert not _visible("0,1", 3, "GPU-abc")
    assert _visible("GPU-ab", 3, "GPU-abc")
    assert not _visible("-1", 0, "GPU-abc")
    assert not _visible("", 0, "GPU-abc")


def test_meminfo_is_read_in_bytes(tmp_path: Path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:  1000 kB\n"
                       "MemAvailable:   20000000 kB\nHugePages_Total:       0\n")
    memory = read_meminfo(meminfo)
    assert memory.total == 24000000 * 1024
    assert memory.available == 20000000 * 1024
    real = read_meminfo()
    assert 0 < real.available <= real.total


@pytest.mark.parametrize(("size", "vram", "text"), [
    (100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 52, "48%/52% CPU/GPU"),
    (100, 101, "Unknown"), (0, 5, "Unknown"), (1000, 995, "1%/99% CPU/GPU"),
    (1000, 5, "100%/0% CPU/GPU"),
])
def test_processor_column(size: int, vram: int, text: str):
    assert processor_text(size, vram) == text
