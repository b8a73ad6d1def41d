"""Read a GGUF file's header (metadata and tensor table) over an mmap, without copying weights.

The `gguf` package's GGUFReader is the reference reader but takes seconds to open a large
vocabulary; this reader parses the same bytes with `struct`. The file is hostile until proven
otherwise: every count, length, offset, dimension and byte size is checked with exact (Python
integer) arithmetic against the bytes the file really has before anything points into it, so
no field can wrap a product to zero or make the parser loop longer than the file allows.
Metadata arrays (vocabularies, merges, scores) stay in the mmap as `GGUFArray`s, expanded only
when a caller asks, so opening a file creates no Python object per token.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from trio_llm.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 20
MAX_DIMS = 4
MAX_KEY = (1 << 16) - 1      # the GGUF specification's limit for keys (and tensor names here)
MAX_STRING = 1 << 24         # no value, token or template is anywhere near 16 MiB
MAX_COUNT = 1 << 28          # items of one array
MAX_KEYS = 1 << 16           # metadata pairs (real models have ~50)
MAX_TENSORS = 1 << 16        # tensors (the largest real models have a few thousand)
MAX_NESTING = 4              # arrays of arrays of ...
INT64_MAX = (1 << 63) - 1    # ggml counts elements and bytes in int64

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
_NUMPY_DTYPES: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<u1", GGUFValueType.INT8: "<i1", GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2", GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4", GGUFValueType.BOOL: "<u1", GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8", GGUFValueType.FLOAT64: "<f8",
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MIN_ITEM_BYTES = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}
_MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8     # name length, n_dims, one dim, type, offset


class GGUFError(ModelFileError, ValueError):
    """The file is not a GGUF file we can read: truncated, corrupt or of an unknown version
    (a 400 naming the problem: the client sent the file)."""


def _min_item_bytes(kind: GGUFValueType) -> int:
    return _MIN_ITEM_BYTES.get(kind) or struct.calcsize(_SCALAR_FORMATS[kind])


class GGUFArray(Sequence[Any]):
    """A metadata array that stays in the mmap: `len()`, indexing and iteration work like a
    list's, and items are read (strings decoded) only when asked for.

    `tolist()` expands it all; `numpy()` copies a numeric array out. Nothing is held that
    would keep the mmap from closing; after `GGUFFile.close()` reading an item raises
    ValueError. Comparing with a list (or another GGUFArray) compares the items.
    """

    __slots__ = ("_buf", "item_type", "_start", "_count", "_end", "_offsets")

    def __init__(self, buf: mmap.mmap, item_type: GGUFValueType, start: int, count: int,
                 end: int) -> None:
        self._buf = buf
        self.item_type = item_type
        self._start = start          # first byte of the first item
        self._count = count
        self._end = end              # one past the last item's last byte
        self._offsets: np.ndarray | None = None   # item starts, for variable-size items

    @property
    def nbytes(self) -> int:
        """Bytes the items take in the file."""
        return self._end - self._start

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"GGUFArray({self.item_type.name}, {self._count} items)"

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        i = int(index)
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("GGUF array index out of range")
        kind = self.item_type
        if kind in _SCALAR_FORMATS:
            fmt = _SCALAR_FORMATS[kind]
            return struct.unpack_from(fmt, self._buf, self._start + i * struct.calcsize(fmt))[0]
        return _read_value(self._buf, kind, int(self._item_offsets()[i]))[0]

    def __iter__(self) -> Iterator[Any]:
        if self.item_type in _NUMPY_DTYPES:
            yield from self.tolist()
            return
        pos = self._start
        for _ in range(self._count):
            value, pos = _read_value(self._buf, self.item_type, pos)
            yield value

    def tolist(self) -> list[Any]:
        """Every item as a Python value (numbers, bools, strings, nested lists)."""
        kind = self.item_type
        if kind in _NUMPY_DTYPES:
            items = np.frombuffer(self._buf, np.dtype(_NUMPY_DTYPES[kind]), self._count,
                                  self._start).tolist()
            return [bool(v) for v in items] if kind == GGUFValueType.BOOL else items
        return [v.tolist() if isinstance(v, GGUFArray) else v for v in self]

    def numpy(self) -> np.ndarray:
        """A numeric array's items as a numpy array (a copy: the mmap may close later)."""
        if self.item_type not in _NUMPY_DTYPES:
            raise TypeError(f"a GGUF array of {self.item_type.name} is not numeric")
        return np.frombuffer(self._buf, np.dtype(_NUMPY_DTYPES[self.item_type]), self._count,
                             self._start).copy()

    def _item_offsets(self) -> np.ndarray:
        """Where each variable-size item starts (built once, on the first random access)."""
        if self._offsets is None:
            starts = array("q")
            pos = self._start
            for _ in range(self._count):
                starts.append(pos)
                pos = _skip_value(self._buf, self.item_type, pos, len(self._buf), 0)
            self._offsets = np.frombuffer(starts, dtype=np.int64)
        return self._offsets

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GGUFArray):
            return self.item_type == other.item_type and self.tolist() == other.tolist()
        if isinstance(other, list | tuple):
            return len(other) == self._count and self.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _read_value(buf: mmap.mmap, kind: GGUFValueType, pos: int,
                end: int | None = None) -> tuple[Any, int]:
    """One already-validated value at `pos` and the position after it (arrays stay lazy;
    `end`, when known, spares walking an array again to find where it stops)."""
    if kind == GGUFValueType.STRING:
        (n,) = _U64.unpack_from(buf, pos)
        return buf[pos + 8: pos + 8 + n].decode("utf-8", errors="replace"), pos + 8 + n
    if kind == GGUFValueType.ARRAY:
        raw_item, = _U32.unpack_from(buf, pos)
        (n,) = _U64.unpack_from(buf, pos + 4)
        item_type = GGUFValueType(raw_item)
        if end is None:
            end = _skip_value(buf, kind, pos, len(buf), 0)
        return GGUFArray(buf, item_type, pos + 12, n, end), end
    fmt = _SCALAR_FORMATS[kind]
    return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)


def _value_type(raw: int) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise GGUFError(f"unknown GGUF value type {raw}") from None


def _need(pos: int, n: int, size: int) -> int:
    """`pos + n`, if the file has that many bytes (exact integers: nothing wraps)."""
    if n < 0 or n > size - pos:
        raise GGUFError(f"truncated GGUF file: needs {pos + n} bytes, has {size}")
    return pos + n


def _array_header(buf: mmap.mmap, pos: int, size: int) -> tuple[GGUFValueType, int, int]:
    """(item type, count, first item's position) of the array at `pos`, with the count
    checked against the bytes left: each item takes at least its minimum size."""
    _need(pos, 12, size)
    item_type = _value_type(_U32.unpack_from(buf, pos)[0])
    (n,) = _U64.unpack_from(buf, pos + 4)
    start = pos + 12
    if n > MAX_COUNT or n * _min_item_bytes(item_type) > size - start:
        raise GGUFError(f"implausible array count {n}")
    return item_type, n, start


def _skip_value(buf: mmap.mmap, kind: GGUFValueType, pos: int, size: int, depth: int) -> int:
    """The position after the value at `pos`, every length checked (nothing is decoded)."""
    if kind == GGUFValueType.STRING:
        _need(pos, 8, size)
        (n,) = _U64.unpack_from(buf, pos)
        if n > MAX_STRING:
            raise GGUFError(f"implausible string length {n}")
        return _need(pos + 8, n, size)
    if kind != GGUFValueType.ARRAY:
        return _need(pos, struct.calcsize(_SCALAR_FORMATS[kind]), size)
    if depth >= MAX_NESTING:
        raise GGUFError("GGUF arrays nested too deeply")
    item_type, n, pos = _array_header(buf, pos, size)
    if item_type in _SCALAR_FORMATS:
        return _need(pos, n * struct.calcsize(_SCALAR_FORMATS[item_type]), size)
    if item_type == GGUFValueType.STRING:
        unpack = _U64.unpack_from
        for _ in range(n):            # the one per-item loop at open: lengths only, no objects
            if pos + 8 > size:
                raise GGUFError(f"truncated GGUF file: needs {pos + 8} bytes, has {size}")
            (length,) = unpack(buf, pos)
            if length > MAX_STRING:
                raise GGUFError(f"implausible string length {length}")
            pos += 8 + length
            if pos > size:
                raise GGUFError(f"truncated GGUF file: needs {pos} bytes, has {size}")
        return pos
    for _ in range(n):
        pos = _skip_value(buf, item_type, pos, size, depth + 1)
    return pos


class _Cursor:
    """Sequential little-endian reads over the mmap, each bounds-checked."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def take(self, n: int) -> int:
        start = self.pos
        self.pos = _need(start, n, self.size)
        return start

    def scalar(self, fmt: str) -> Any:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt)))[0]

    def count(self, what: str, limit: int, min_bytes: int) -> int:
        """A count field, refused when it exceeds `limit` or the entries it announces could
        not fit in the rest of the file (each takes at least `min_bytes`)."""
        n = self.scalar("<Q")
        if n > limit or n * min_bytes > self.size - self.pos:
            raise GGUFError(f"implausible {what} count {n}")
        return n

    def string(self, limit: int = MAX_STRING) -> str:
        n = self.scalar("<Q")
        if n > limit:
            raise GGUFError(f"implausible string length {n}")
        start = self.take(n)
        return self.buf[start: start + n].decode("utf-8", errors="replace")

    def value_type(self) -> GGUFValueType:
        return _value_type(self.scalar("<I"))

    def value(self, kind: GGUFValueType) -> Any:
        start = self.pos
        self.pos = _skip_value(self.buf, kind, start, self.size, 0)
        return _read_value(self.buf, kind, start, self.pos)[0]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: shape in GGML order (row length first), type, where its bytes are."""

    name: str
    shape: tuple[int, ...]
    type: GGMLQuantizationType
    offset: int      # absolute offset of the first byte in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def row_length(self) -> int:
        return self.shape[0]

    @property
    def n_rows(self) -> int:
        return self.n_elements // self.shape[0]


@dataclass
class GGUFFile:
    """An open GGUF file: metadata, tensor table, and the read-only mmap the tensors live in.

    `metadata` maps each key to a str, int, float, bool or GGUFArray, in file order."""

    path: str
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    data: mmap.mmap = field(repr=False)

    def tensor_bytes(self, name: str) -> memoryview:
        """The raw bytes of a tensor, as a view into the mmap (no copy)."""
        info = self.tensors[name]
        return memoryview(self.data)[info.offset: info.offset + info.nbytes]

    def close(self) -> None:
        """Unmap the file. While views into it are still alive (weights a failed load had
        started to wrap), the mapping is left for them to release when they go, rather than
        raising over whatever error the caller is handling."""
        try:
            self.data.close()
        except BufferError:
            pass

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tensor_nbytes(name: str, kind: GGMLQuantizationType, shape: Sequence[int]) -> int:
    """Bytes of a tensor of `shape` and `kind`, in exact integers; GGUFError for a shape that
    is empty, has a zero or negative dimension, splits a block, or counts past int64."""
    if kind not in GGML_QUANT_SIZES:
        raise GGUFError(f"tensor {name!r}: unsupported type {kind.name}")
    block_elems, block_bytes = GGML_QUANT_SIZES[kind]
    if not shape or any(d <= 0 for d in shape):
        raise GGUFError(f"tensor {name!r}: invalid shape {tuple(shape)}")
    if shape[0] % block_elems:
        raise GGUFError(f"tensor {name!r}: row of {shape[0]} is not whole {kind.name} blocks")
    n = math.prod(shape)
    if n > INT64_MAX:
        raise GGUFError(f"tensor {name!r}: shape {tuple(shape)} has too many elements")
    return n // block_elems * block_bytes


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Open and validate a GGUF file. Raises GGUFError for anything malformed or truncated."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise GGUFError("not a GGUF file: it is empty") from None
    try:
        return _parse(path, data)
    except GGUFError:
        data.close()
        raise
    except (struct.error, UnicodeDecodeError, OverflowError, KeyError) as exc:
        data.close()
        raise GGUFError(f"corrupt GGUF header: {exc}") from None


def _parse(path: str, data: mmap.mmap) -> GGUFFile:
    cur = _Cursor(data)
    if len(data) < 4 or data[:4] != GGUF_MAGIC:
        raise GGUFError("not a GGUF file: bad magic")
    cur.take(4)
    version = cur.scalar("<I")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors = cur.count("tensor", MAX_TENSORS, _MIN_TENSOR_INFO)
    n_kv = cur.count("metadata", MAX_KEYS, 8 + 4)
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string(MAX_KEY)
        if key in metadata:
            raise GGUFError(f"duplicate metadata key {key!r}")
        metadata[key] = cur.value(cur.value_type())
    if n_tensors * _MIN_TENSOR_INFO > cur.size - cur.pos:
        raise GGUFError(f"implausible tensor count {n_tensors}")

    infos: list[tuple[str, tuple[int, ...], GGMLQuantizationType, int]] = []
    for _ in range(n_tensors):
        name = cur.string(MAX_KEY)
        n_dims = cur.scalar("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"tensor {name!r}: {n_dims} dimensions")
        shape = tuple(cur.scalar("<Q") for _ in range(n_dims))
        raw_type = cur.scalar("<I")
        try:
            kind = GGMLQuantizationType(raw_type)
        except ValueError:
            raise GGUFError(f"tensor {name!r}: unknown type {raw_type}") from None
        infos.append((name, shape, kind, cur.scalar("<Q")))

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0
            or alignment > MAX_ALIGNMENT or alignment & (alignment - 1)):
        raise GGUFError(f"invalid general.alignment {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment

    tensors: dict[str, TensorInfo] = {}
    for name, shape, kind, rel_offset in infos:
        if name in tensors:
            raise GGUFError(f"duplicate tensor {name!r}")
        nbytes = tensor_nbytes(name, kind, shape)
        offset = data_start + rel_offset
        if rel_offset % alignment or nbytes > len(data) - offset:
            raise GGUFError(f"tensor {name!r} lies outside the file (truncated?)")
        tensors[name] = TensorInfo(name, shape, kind, offset, nbytes)
    return GGUFFile(path, version, metadata, tensors, data)
