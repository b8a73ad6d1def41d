"""A batch for one forward pass: tokens from one or more sequences, each at its own position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Batch:
    """Token t goes into KV slot slots[t] at position positions[t]; logits come back for the
    token indices in `logits_for`, in that order.

    The first `n_decode` tokens are decode steps (one generated token of a sequence each); the
    rest are prompt tokens. The two roles take different matmul kernels, and a token always takes
    its role's kernel, so its result never depends on what else shares the batch."""

    tokens: np.ndarray        # int32 [n]
    positions: np.ndarray     # int32 [n]
    slots: np.ndarray         # int32 [n]
    logits_for: np.ndarray    # int32 [m], indices into tokens
    n_decode: int = 0

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
        if not 0 <= self.n_decode <= n:
            raise ValueError("n_decode outside the batch")

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
    def decode(cls, token: int, position: int, slot: int = 0) -> Batch:
        """One decode step of one sequence: its newest token, whose logits come back."""
        return cls(np.array([token]), np.array([position]), np.array([slot]), np.array([0]),
                   n_decode=1)

    @classmethod
    def join(cls, parts: Sequence[Batch]) -> Batch:
        """Several batches as one (continuous batching); logits rows keep the parts' order.
        Decode steps must come before any prompt tokens."""
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        n_decode = 0
        for part in parts:
            if part.n_decode and n_decode != int(offsets[parts.index(part)]):
                raise ValueError("decode steps must lead the batch")
            n_decode += part.n_decode
        return cls(np.concatenate([p.tokens for p in parts]),
                   np.concatenate([p.positions for p in parts]),
                   np.concatenate([p.slots for p in parts]),
                   np.concatenate([p.logits_for + o for p, o in zip(parts, offsets, strict=True)]),
                   n_decode=n_decode)
