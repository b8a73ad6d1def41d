"""Checked reading of an architecture's hyper-parameters from a GGUF's `<arch>.*` keys.

A model file is attacker-controlled: every count must be a positive integer, every epsilon and
rope base a finite positive float, and every size the runtime will allocate or index with must
agree with the tensors' own shapes. A file that breaks any of these is a ModelFileError (a 400
naming the key) at create time and again at load, never a crash or a kernel's refusal later.
"""

from __future__ import annotations

import math
from typing import Any

from trio_llm.errors import ModelFileError
from trio_llm.formats.gguf_file import GGUFFile
from trio_llm.options import MAX_CONTEXT

MAX_DIM = 1 << 20        # no hidden size, head count or layer count comes near this


class Metadata:
    """The `<arch>.*` keys of one file, read with checks."""

    def __init__(self, gguf: GGUFFile, arch: str) -> None:
        self.gguf, self.arch = gguf, arch

    def _raw(self, key: str, default: Any) -> Any:
        value = self.gguf.metadata.get(f"{self.arch}.{key}", default)
        if value is None:
            raise ModelFileError(f"model metadata lacks {self.arch}.{key}")
        return value

    def has(self, key: str) -> bool:
        return f"{self.arch}.{key}" in self.gguf.metadata

    def count(self, key: str, default: int | None = None, *, low: int = 1,
              high: int = MAX_DIM) -> int:
        """An integer in [low, high]."""
        value = self._raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelFileError(f"{self.arch}.{key} = {value!r} is not an integer in "
                                 f"[{low}, {high}]")
        return value

    def positive(self, key: str, default: float | None = None, *, zero: bool = False) -> float:
        """A finite float > 0 (>= 0 with zero=True)."""
        value = self._raw(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value) and (value >= 0 if zero else value > 0)
        if not ok:
            raise ModelFileError(f"{self.arch}.{key} = {value!r} is not a finite "
                                 f"{'non-negative' if zero else 'positive'} number")
        return float(value)

    def context_length(self, default: int = 2048) -> int:
        return self.count("context_length", default, high=MAX_CONTEXT)

    def linear_rope_scale(self) -> float:
        """The factor positions are multiplied by for RoPE: 1/rope.scaling.factor for linear
        scaling (the default type when only the factor is given), 1.0 for none. Any other
        type (yarn, longrope...) would need its own formula, so it is refused, never run as
        if it were linear."""
        kind = self.gguf.metadata.get(f"{self.arch}.rope.scaling.type", "linear")
        if kind == "none":
            return 1.0
        if kind != "linear":
            raise ModelFileError(f"{self.arch}.rope.scaling.type = {kind!r} is not supported "
                                 "(only none and linear)")
        return 1.0 / self.positive("rope.scaling.factor", 1.0)


def tensor_shape(gguf: GGUFFile, name: str) -> tuple[int, ...]:
    """A tensor's GGML-order shape (row length first); ModelFileError if the file lacks it."""
    info = gguf.tensors.get(name)
    if info is None:
        raise ModelFileError(f"model file lacks tensor {name!r}")
    return tuple(info.shape)


def vocab_size(gguf: GGUFFile, dim: int) -> int:
    """The vocabulary size from the embedding table's shape (never from a key that could
    disagree with it), checked against the tokenizer's vocabulary."""
    shape = tensor_shape(gguf, "token_embd.weight")
    if len(shape) != 2 or shape[0] != dim:
        raise ModelFileError(f"tensor 'token_embd.weight' has shape {shape}, expected "
                             f"({dim}, vocabulary)")
    tokens = gguf.metadata.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens) > shape[1]:
        raise ModelFileError(f"the tokenizer has {len(tokens)} tokens but the embedding table "
                             f"only {shape[1]} rows")
    return shape[1]


def heads(n_head: int, n_kv_head: int, what: str) -> None:
    """Grouped-query attention needs the KV heads to divide the query heads."""
    if n_head % n_kv_head:
        raise ModelFileError(f"{what}: {n_kv_head} KV heads do not divide {n_head} heads")


def rope_dims(n_rot: int, head_dim: int, what: str) -> None:
    if n_rot % 2 or not 0 < n_rot <= head_dim:
        raise ModelFileError(f"{what}: rope dimension {n_rot} must be even and within the head "
                             f"size {head_dim}")
