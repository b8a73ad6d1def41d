"""A model's memory need, in the pieces placement moves between devices.

The figures come from the engine's own plan (`trio_llm.arch.memory`): the bytes it allocates
by, so the scheduler admits, evicts and reports by what a model really holds. This module only
says how those bytes split: `n_layer` repeating blocks (weights plus that block's KV cache) and
the rest of the weights (embeddings, output head, final norm), which is offloaded last.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryEstimate:
    """A model's memory need in bytes, in the pieces placement works with.

    cpu_only: the engine that will run the model computes on the CPU only, so no piece of it may
    be reported on (or counted against) a GPU, whatever GPUs the machine has."""

    n_layer: int
    layer_weights: int
    layer_kv: int
    other_weights: int
    compute: int = 0
    cpu_only: bool = False

    @property
    def layer(self) -> int:
        """One repeating block on a device: its weights and its KV cache."""
        return self.layer_weights + self.layer_kv

    @property
    def weights(self) -> int:
        return self.n_layer * self.layer_weights + self.other_weights

    @property
    def kv(self) -> int:
        return self.n_layer * self.layer_kv

    @property
    def total(self) -> int:
        """Everything on one device: weights, KV cache and one compute buffer."""
        return self.weights + self.kv + self.compute

    @classmethod
    def flat(cls, total: int, n_layer: int = 9) -> MemoryEstimate:
        """`total` bytes in n_layer + 1 equal pieces, no compute buffer (tests, rough guesses)."""
        piece = total // (n_layer + 1)
        return cls(n_layer=n_layer, layer_weights=piece, layer_kv=0,
                   other_weights=total - n_layer * piece)
