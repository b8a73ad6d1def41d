"""Weight tensors as C pointers into the mmapped GGUF file, plus, for the decode path, a copy
repacked once at load time into the layout of TL_PATH_PACKED (where the format has one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from trio_llm._kernels import ffi, lib
from trio_llm.engine import kernels
from trio_llm.errors import ModelFileError
from trio_llm.formats.gguf_file import GGUFFile


class MissingTensor(ModelFileError):
    """The file lacks a tensor its architecture needs, or has it with the wrong shape or type."""


@dataclass(frozen=True)
class Weight:
    """A GGML tensor viewed as n_out rows of n_in elements (GGML order: n_in = ne0)."""

    name: str
    kind: int
    n_out: int
    n_in: int
    data: Any  # cffi pointer into the mmap
    packed: Any = None  # the matrix repacked for TL_PATH_PACKED (freed with it), or None
    packed_bytes: int = 0

    def repacked(self) -> Weight:
        """This weight with a repacked copy for decode, or itself if its format has none."""
        size = kernels.repack_bytes(self.kind, self.n_out, self.n_in)
        if size == 0:
            return self
        try:
            packed = kernels.repack(self.kind, self.data, self.n_out, self.n_in)
        except kernels.KernelError as e:
            if e.status == kernels.KernelStatus.MEMORY:
                raise MemoryError(f"cannot repack tensor {self.name!r} ({size} bytes)") from e
            raise
        return replace(self, packed=packed, packed_bytes=size)


EMBEDDING_FIELD = "token_embd"  # the weights field that is only looked up, never multiplied


def _weights_in(weights: Any, skip: str) -> Iterator[Weight]:
    for f in dataclasses.fields(weights):
        if f.name == skip:
            continue
        value = getattr(weights, f.name)
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, Weight):
                yield item
            elif dataclasses.is_dataclass(item):
                yield from _weights_in(item, skip)


def matrices(weights: Any) -> Iterator[Weight]:
    """Every Weight in a weights dataclass, its layers' included (for repacking and memory)."""
    return _weights_in(weights, "")


def decode_matrices(weights: Any) -> Iterator[Weight]:
    """The Weights that get a repacked decode copy at load: all but the embedding table's field
    (a tied output head is its own field, so it has its copy)."""
    return _weights_in(weights, EMBEDDING_FIELD)


class WeightLoader:
    """Makes Weight handles for one open GGUF file; keeps the mmap's buffer alive."""

    def __init__(self, gguf: GGUFFile) -> None:
        self.gguf = gguf
        self._buffer = ffi.from_buffer(gguf.data)
        self._base = ffi.cast("char *", self._buffer)

    def has(self, name: str) -> bool:
        return name in self.gguf.tensors

    def get(self, name: str, *shape: int) -> Weight:
        """The tensor `name`, checked against the expected GGML-order shape and for a type the
        kernels can multiply."""
        info = self.gguf.tensors.get(name)
        if info is None:
            raise MissingTensor(f"model file lacks tensor {name!r}")
        if shape and tuple(info.shape) != shape:
            raise MissingTensor(f"tensor {name!r} has shape {tuple(info.shape)}, expected {shape}")
        try:
            kernels.row_bytes(int(info.type), info.row_length)
        except kernels.KernelError as e:
            raise MissingTensor(f"tensor {name!r} has type {info.type.name}, which trio-llm "
                                "cannot compute with") from e
        return Weight(name, int(info.type), info.n_rows, info.row_length, self._base + info.offset)

    def floats(self, name: str, n: int) -> Any:
        """An F32 vector (norm weights, biases) as a float pointer."""
        w = self.get(name, n)
        if w.kind != lib.TL_F32:
            raise MissingTensor(f"tensor {name!r} must be F32")
        return ffi.cast("float *", w.data)

    def row_floats(self, name: str, row: int, n: int) -> Any:
        """Row `row` of a table of n-element rows, in any type the kernels read, as F32 floats
        of its own (a per-model constant: BERT's embedding of token type 0)."""
        w = self.get(name)
        if w.n_in != n or not 0 <= row < w.n_out:
            raise MissingTensor(f"tensor {name!r} has no row {row} of {n} elements")
        out = ffi.new("float[]", n)
        if lib.tl_get_rows(w.kind, w.data, w.n_in, w.n_out, ffi.new("int32_t[1]", [row]), 1,
                           out) != lib.TL_OK:
            raise MissingTensor(f"tensor {name!r}: cannot read row {row}")
        return out

    def optional_floats(self, name: str, n: int) -> Any:
        """floats(name, n), or NULL when the file has no such tensor."""
        return self.floats(name, n) if self.has(name) else ffi.NULL
