"""A batch for one forward pass: tokens from one or more sequences, each at its own position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Batch:
    """Token t goes into KV slot slots[t] at position positions[t]; logits come back for the
    token indices in `logits_for`, in that order."""

    tokens: np.ndarray        # int32 [n]
    positions: np.ndarray     # int32 [n]
    slots: np.ndarray         # int32 [n]
    logits_for: np.ndarray    # int32 [m], indices into tokens

    def __post_init__(self) -> None:
        self.tokens = np.ascontiguousarray(self.tokens, dtype=np.int32)
        self.positions = np.ascontiguousarray(self.positions, dtype=np.int32)
        self.slots = np.ascontiguousarray(self.slots, dtype=np.int32)
        self.logits_for = np.ascontiguousarray(self.logits_for, dtype=np.int32)
        n = self.tokens.shape[0]
        if self.positions.shape != (n,) or self.slots.shape != (n,):
            raise ValueError("tokens, positions and slots must have the same length")
        if self.logits_for.size and (self.logits_for.min() < 0 or self.logits_for.max() >= n):
            raise ValueError("logits_for indexes a token outside the batch")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @classmethod
    def sequence(cls, tokens: Sequence[int], start: int = 0, slot: int = 0,
                 all_logits: bool = False) -> Batch:
        """A run of one sequence's tokens from position `start`; logits of the last (or all)."""
        n = len(tokens)
        wanted = np.arange(n) if all_logits else np.array([n - 1] if n else [], dtype=np.int32)
        return cls(np.asarray(tokens), np.arange(start, start + n), np.full(n, slot), wanted)

    @classmethod
    def join(cls, parts: Sequence[Batch]) -> Batch:
        """Several batches as one (continuous batching); logits rows keep the parts' order."""
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        return cls(np.concatenate([p.tokens for p in parts]),
                   np.concatenate([p.positions for p in parts]),
                   np.concatenate([p.slots for p in parts]),
                   np.concatenate([p.logits_for + o for p, o in zip(parts, offsets, strict=True)]))
