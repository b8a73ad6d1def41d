"""Read a GGUF file's header (metadata and tensor table) over an mmap, without copying weights.

The `gguf` package's GGUFReader is the reference reader but takes seconds to open a large
vocabulary; this reader parses the same bytes with `struct`, checks every size and offset
against the file before anything points into it, and leaves tensor data in the mmap.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_STRING = 1 << 24         # no key, token or template is anywhere near 16 MiB
MAX_COUNT = 1 << 28          # tensors, keys or array items

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


class GGUFError(ValueError):
    """The file is not a GGUF file we can read: truncated, corrupt or of an unknown version."""


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
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def row_length(self) -> int:
        return self.shape[0]

    @property
    def n_rows(self) -> int:
        return self.n_elements // self.shape[0]


@dataclass
class GGUFFile:
    """An open GGUF file: metadata, tensor table, and the read-only mmap the tensors live in."""

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
        self.data.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cursor:
    """Sequential little-endian reads over the mmap, each bounds-checked."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > self.size:
            raise GGUFError(f"truncated GGUF file: needs {start + n} bytes, has {self.size}")
        self.pos = start + n
        return start

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.buf, self.take(size))[0]

    def count(self, what: str) -> int:
        n = self.scalar("<Q")
        if n > MAX_COUNT:
            raise GGUFError(f"implausible {what} count {n}")
        return n

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > MAX_STRING:
            raise GGUFError(f"implausible string length {n}")
        start = self.take(n)
        return self.buf[start: start + n].decode("utf-8", errors="replace")

    def value_type(self) -> GGUFValueType:
        raw = self.scalar("<I")
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise GGUFError(f"unknown GGUF value type {raw}") from None

    def value(self, kind: GGUFValueType) -> Any:
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            item_kind = self.value_type()
            n = self.count("array")
            if item_kind in _NUMPY_DTYPES:
                dtype = np.dtype(_NUMPY_DTYPES[item_kind])
                start = self.take(n * dtype.itemsize)
                items = np.frombuffer(self.buf, dtype, n, start)
                if item_kind == GGUFValueType.BOOL:
                    return [bool(v) for v in items]
                return items.tolist()
            return [self.value(item_kind) for _ in range(n)]
        return self.scalar(_SCALAR_FORMATS[kind])


def _tensor_nbytes(name: str, kind: GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    if kind not in GGML_QUANT_SIZES:
        raise GGUFError(f"tensor {name!r}: unsupported type {kind.name}")
    block_elems, block_bytes = GGML_QUANT_SIZES[kind]
    if not shape or any(d <= 0 for d in shape):
        raise GGUFError(f"tensor {name!r}: invalid shape {shape}")
    if shape[0] % block_elems:
        raise GGUFError(f"tensor {name!r}: row of {shape[0]} is not whole {kind.name} blocks")
    n = int(np.prod(shape, dtype=np.int64))
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
    n_tensors = cur.count("tensor")
    n_kv = cur.count("metadata")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.value_type())

    infos: list[tuple[str, tuple[int, ...], GGMLQuantizationType, int]] = []
    for _ in range(n_tensors):
        name = cur.string()
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
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"invalid general.alignment {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment

    tensors: dict[str, TensorInfo] = {}
    for name, shape, kind, rel_offset in infos:
        if name in tensors:
            raise GGUFError(f"duplicate tensor {name!r}")
        nbytes = _tensor_nbytes(name, kind, shape)
        offset = data_start + rel_offset
        if rel_offset % alignment or offset + nbytes > len(data):
            raise GGUFError(f"tensor {name!r} lies outside the file (truncated?)")
        tensors[name] = TensorInfo(name, shape, kind, offset, nbytes)
    return GGUFFile(path, version, metadata, tensors, data)
