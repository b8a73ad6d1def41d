"""How much memory a loaded network holds: one owner for the facts, read before and after loading.

`plan_memory` counts what the runtime allocates, by the same rules and the same functions:
- the GGUF file, mapped whole (the weights are never copied);
- the repacked decode copy of every matrix `weights.decode_matrices` names, each
  `tl_repack_bytes` long (what `Weight.repacked` allocates);
- the KV cache, per cache type and sliding window (`kv_cache_bytes`, what `KVCache` allocates),
  for the type `cache_type_for` grants;
- the prompt cache's budget (`trio_llm.engine.prefix_cache`): earlier prompts' KV kept for
  reuse, counted whole since it fills up as requests come (none for an encoder);
- the scratch buffers of the Shape at the batch `runtime_batch` cuts, the logits of one step
  and the kernels' pool scratch (its largest use, the activations of a matmul).
`Network` allocates by its plan and keeps it; the scheduler's estimate (admission, LRU eviction,
placement) and `/api/ps` read the plan of the same file before it is loaded
(`trio_llm.engine.model.plan_model`), so the figure a model is admitted by is the figure ps
shows and the one the engine holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trio_llm.arch.weights import Weight, decode_matrices
from trio_llm.engine import kernels
from trio_llm.engine.kv_cache import cache_type_for, kv_cache_bytes
from trio_llm.formats.gguf_file import GGUFFile
from trio_llm.gpu.memory import MemoryEstimate

if TYPE_CHECKING:
    from trio_llm.arch.runtime import Shape

FLOAT = 4
# The kernels' pool scratch per activation element of the widest matmul input: the ~15-bit
# prompt activations are two int8 blocks of 32 with their scales (2 x 40 bytes per 32).
POOL_BYTES_PER_ACTIVATION = 2.5


# An encoder's KV cache is scratch for one forward pass, and /api/embed runs a request's inputs
# together, each in its own slot: an encoder gets up to ENCODER_SLOTS slots, as many as fit in
# ENCODER_KV_BYTES (never fewer than it was asked for).
ENCODER_SLOTS = 32
ENCODER_KV_BYTES = 256 * 1024 * 1024


def kv_slots(shape: Shape, n_ctx: int, n_slots: int) -> int:
    """The KV slots a network of this shape holds: `n_slots`, or more for an encoder (batched
    embeddings; it never decodes, so the extra slots serve no generation)."""
    if shape.causal:
        return n_slots
    per_slot = sum(2 * 2 * layout.kv_dim * n_ctx for layout in shape.kv_layers)  # f16 K and V
    fitting = ENCODER_KV_BYTES // max(per_slot, 1)
    return max(n_slots, min(ENCODER_SLOTS, fitting))


def runtime_batch(shape: Shape, n_ctx: int, max_batch: int) -> int:
    """The most tokens one chunk of a forward pass holds: max_batch, or the whole context for an
    encoder (a sequence's tokens must all be in one chunk to see each other)."""
    return max(max_batch, n_ctx) if not shape.causal else max_batch


def keeps_decode_copies(shape: Shape) -> bool:
    """Whether a network repacks its matrices for decode at load: only causal ones decode one
    token at a time; an encoder runs every row as a prompt row, so a copy would be dead weight."""
    return shape.causal


def repack_bytes(w: Weight) -> int:
    """Bytes of w's repacked decode copy (0: its format has no repacked layout)."""
    return kernels.repack_bytes(w.kind, w.n_out, w.n_in)


def _is_block(w: Weight) -> bool:
    return w.name.startswith("blk.")


@dataclass(frozen=True)
class MemoryPlan:
    """A network's memory in bytes, by what holds it."""

    kv_type: str            # the cache type in force
    kv_note: str            # why that is not the requested type ("" when it is)
    n_layer: int
    mapped_blocks: int      # the file's blk.* tensors (mapped)
    mapped_other: int       # the rest of the mapped file: other tensors, header, metadata
    packed_blocks: int      # repacked decode copies of blk.* matrices
    packed_other: int       # ... of the others (the output head)
    kv: int                 # the KV cache, every layer and slot
    buffers: int            # the runtime's scratch activations, token arrays and logits
    pool: int               # the kernels' pool scratch
    prompt_cache: int = 0   # the budget of earlier prompts' KV blocks kept for reuse

    @property
    def weights(self) -> int:
        return self.mapped_blocks + self.mapped_other + self.packed_blocks + self.packed_other

    @property
    def packed(self) -> int:
        return self.packed_blocks + self.packed_other

    @property
    def scratch(self) -> int:
        return self.buffers + self.pool

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.scratch + self.prompt_cache

    def estimate(self, cpu_only: bool) -> MemoryEstimate:
        """The same bytes in the pieces placement deals out (its total is this plan's total):
        n_layer blocks of weights and KV cache, the other weights, and the scratch. cpu_only:
        the engine runs this model on the CPU, so placement must not put it on a GPU."""
        n = max(1, self.n_layer)
        block_weights = self.mapped_blocks + self.packed_blocks
        layer_weights, layer_kv = block_weights // n, self.kv // n
        return MemoryEstimate(
            n_layer=n, layer_weights=layer_weights, layer_kv=layer_kv,
            other_weights=self.weights - n * layer_weights,
            compute=self.scratch + self.prompt_cache + self.kv - n * layer_kv,
            cpu_only=cpu_only)


def plan_memory(shape: Shape, weights: Any, gguf: GGUFFile, n_ctx: int, n_slots: int,
                max_batch: int, kv_type: str, prompt_cache: int = 0) -> MemoryPlan:
    """The plan of a network of this Shape and these weights (the architecture's weights
    dataclass of views into the mmap, before repacking), loaded from `gguf`; prompt_cache is
    the requested budget in bytes (an encoder, whose cache lives for one call, keeps none)."""
    kv_in_force, note = cache_type_for(shape.kv_layers, kv_type, shape.causal)
    n_slots = kv_slots(shape, n_ctx, n_slots)
    batch = runtime_batch(shape, n_ctx, max_batch)
    file_bytes = len(gguf.data)
    block_tensor_bytes = sum(t.nbytes for name, t in gguf.tensors.items()
                             if name.startswith("blk."))
    packed_blocks = packed_other = 0
    for w in decode_matrices(weights) if keeps_decode_copies(shape) else ():
        if _is_block(w):
            packed_blocks += repack_bytes(w)
        else:
            packed_other += repack_bytes(w)
    widest = max(shape.buffers.values(), default=0)
    buffers = FLOAT * batch * (sum(shape.buffers.values()) + 4)   # + tokens, positions, slots...
    buffers += 2 * FLOAT * n_slots * shape.vocab_size             # one step's logits, twice
    return MemoryPlan(
        kv_type=kv_in_force, kv_note=note, n_layer=shape.n_layer,
        mapped_blocks=block_tensor_bytes, mapped_other=file_bytes - block_tensor_bytes,
        packed_blocks=packed_blocks, packed_other=packed_other,
        kv=kv_cache_bytes(shape.kv_layers, n_slots, n_ctx, batch, kv_in_force),
        buffers=buffers, pool=int(POOL_BYTES_PER_ACTIVATION * batch * widest),
        prompt_cache=max(0, prompt_cache) if shape.causal else 0)
