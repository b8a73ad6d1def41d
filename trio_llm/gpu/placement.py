"""Where a model's pieces go: one GPU, spread over all GPUs, or split between GPUs and the CPU.

Rules, in order: `num_gpu` 0, no GPU, or an engine that runs the model on the CPU only
(`MemoryEstimate.cpu_only`) means CPU only. A model that fits on one GPU goes on the
GPU with the most free memory, unless spreading is forced (OLLAMA_SCHED_SPREAD). Otherwise its
blocks are dealt round-robin over the GPUs, from the last block backwards and the non-repeating
weights last; whatever does not fit runs on the CPU (partial offload). Every GPU in use holds a
compute buffer, and so does the CPU when it runs any piece. OLLAMA_GPU_OVERHEAD is held back on
every GPU. The result is what `ps` reports (size, size_vram), whatever the engine really does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trio_llm.gpu.devices import GpuInfo
from trio_llm.gpu.memory import MemoryEstimate


@dataclass(frozen=True)
class GpuShare:
    """The part of a model one GPU holds: how many pieces and how many bytes."""

    gpu_id: str
    layers: int
    bytes: int


@dataclass(frozen=True)
class Placement:
    """A model's size in all and its share on each GPU (none: CPU only)."""

    size: int
    n_pieces: int
    gpus: tuple[GpuShare, ...] = ()

    @property
    def size_vram(self) -> int:
        return sum(share.bytes for share in self.gpus)

    @property
    def cpu_bytes(self) -> int:
        return self.size - self.size_vram

    @property
    def gpu_layers(self) -> int:
        """Pieces on GPUs: the n_layer blocks plus one for the output weights."""
        return sum(share.layers for share in self.gpus)

    @property
    def full_offload(self) -> bool:
        return bool(self.gpus) and self.gpu_layers == self.n_pieces

    def on_gpu(self, gpu_id: str) -> int:
        """Bytes this model holds on the given GPU."""
        return sum(share.bytes for share in self.gpus if share.gpu_id == gpu_id)


def place(estimate: MemoryEstimate, gpus: Sequence[GpuInfo], *, spread: bool = False,
          overhead: int = 0, num_gpu: int = -1, main_gpu: int | None = None) -> Placement:
    """Decide a placement from the estimate and each GPU's free memory.

    num_gpu < 0 means as many pieces as fit; num_gpu > 0 caps the pieces on GPUs. main_gpu
    restricts the choice to that GPU index (ignored when no such GPU exists)."""
    n_pieces = estimate.n_layer + 1
    cpu_only = Placement(size=estimate.total, n_pieces=n_pieces)
    candidates = [g for g in gpus if g.index == main_gpu] if main_gpu is not None else []
    candidates = candidates or list(gpus)
    if not candidates or num_gpu == 0 or estimate.cpu_only:
        return cpu_only
    limit = n_pieces if num_gpu < 0 else min(num_gpu, n_pieces)
    usable = {g.id: max(0, g.free - overhead) for g in candidates}
    by_room = sorted(candidates, key=lambda g: (-usable[g.id], g.index))
    if not spread and limit == n_pieces and usable[by_room[0].id] >= estimate.total:
        share = GpuShare(by_room[0].id, n_pieces, estimate.total)
        return Placement(size=estimate.total, n_pieces=n_pieces, gpus=(share,))
    return _deal(estimate, by_room, usable, limit) or cpu_only


def _deal(estimate: MemoryEstimate, order: list[GpuInfo], usable: dict[str, int],
          limit: int) -> Placement | None:
    """Deal pieces round-robin over the GPUs in `order`; None when no piece fits anywhere."""
    pieces = [estimate.layer] * estimate.n_layer + [estimate.other_weights]
    room = {g.id: usable[g.id] - estimate.compute for g in order}
    layers = dict.fromkeys(room, 0)
    held = dict.fromkeys(room, 0)
    turn = placed = 0
    for size in pieces[:limit]:
        for step in range(len(order)):
            gpu_id = order[(turn + step) % len(order)].id
            if room[gpu_id] >= size:
                room[gpu_id] -= size
                layers[gpu_id] += 1
                held[gpu_id] += size
                turn = (turn + step + 1) % len(order)
                break
        else:
            break
        placed += 1
    if placed == 0:
        return None
    shares = tuple(GpuShare(g.id, layers[g.id], held[g.id] + estimate.compute)
                   for g in sorted(order, key=lambda g: g.index) if layers[g.id])
    on_cpu = sum(pieces[placed:])
    cpu = on_cpu + estimate.compute if placed < len(pieces) else 0
    return Placement(size=sum(s.bytes for s in shares) + cpu, n_pieces=len(pieces), gpus=shares)
