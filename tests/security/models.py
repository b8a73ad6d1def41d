"""Hostile variants of the real SmolLM2 file: the same bytes with one header value or tensor
name changed in place, so the file stays a well-formed GGUF that a careless loader accepts."""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path

from gguf import GGUFValueType

FORMATS = {GGUFValueType.UINT32: "<I", GGUFValueType.FLOAT32: "<f", GGUFValueType.UINT64: "<Q"}


def _key_at(data: bytes | bytearray, key: str) -> tuple[int, GGUFValueType]:
    """Where the value of metadata `key` starts, and its type."""
    raw = key.encode()
    at = bytes(data[: 1 << 22]).find(struct.pack("<Q", len(raw)) + raw)
    if at < 0:
        raise KeyError(key)
    at += 8 + len(raw)
    (kind,) = struct.unpack_from("<I", data, at)
    return at + 4, GGUFValueType(kind)


def patched(source: Path, dest: Path, values: dict[str, float] | None = None,
            renames: dict[str, str] | None = None) -> Path:
    """A copy of `source` with metadata scalars set (`values`) and tensors renamed to names
    of the same length (`renames`)."""
    shutil.copyfile(source, dest)
    with open(dest, "r+b") as f:
        head = bytearray(f.read(1 << 22))
        for key, value in (values or {}).items():
            at, kind = _key_at(head, key)
            number = value if kind == GGUFValueType.FLOAT32 or math.isnan(value) else int(value)
            struct.pack_into(FORMATS[kind], head, at, number)
        for old, new in (renames or {}).items():
            assert len(old) == len(new)
            entry = struct.pack("<Q", len(old)) + old.encode()
            at = head.find(entry)
            assert at >= 0, old
            head[at + 8: at + 8 + len(new)] = new.encode()
        f.seek(0)
        f.write(head)
    return dest
