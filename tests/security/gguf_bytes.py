"""A GGUF file built byte by byte, remembering where each count, length and dimension field
sits, so the fuzz tests can set exactly those fields to hostile values."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gguf import GGMLQuantizationType, GGUFValueType

ALIGN = 32


@dataclass
class GGUFBytes:
    """The bytes so far and the offsets of the fields worth attacking, by kind."""

    data: bytearray = field(default_factory=bytearray)
    counts: list[int] = field(default_factory=list)      # u64 counts (tensors, keys, items)
    lengths: list[int] = field(default_factory=list)     # u64 string lengths
    dims: list[int] = field(default_factory=list)        # u64 tensor dimensions
    offsets: list[int] = field(default_factory=list)     # u64 tensor data offsets

    def u32(self, v: int) -> None:
        self.data += struct.pack("<I", v)

    def u64(self, v: int, kind: list[int] | None = None) -> None:
        if kind is not None:
            kind.append(len(self.data))
        self.data += struct.pack("<Q", v)

    def string(self, text: str) -> None:
        raw = text.encode()
        self.u64(len(raw), self.lengths)
        self.data += raw

    def value(self, kind: GGUFValueType, value: object) -> None:
        if kind == GGUFValueType.STRING:
            self.string(str(value))
        elif kind == GGUFValueType.UINT32:
            self.u32(int(value))  # type: ignore[call-overload]
        elif kind == GGUFValueType.FLOAT32:
            self.data += struct.pack("<f", value)
        elif kind == GGUFValueType.UINT8:
            self.data += struct.pack("<B", value)
        else:
            raise ValueError(kind)

    def array(self, item: GGUFValueType, items: list[object]) -> None:
        self.u32(item)
        self.u64(len(items), self.counts)
        for v in items:
            if item == GGUFValueType.ARRAY:
                inner_kind, inner = v  # type: ignore[misc]
                self.array(inner_kind, inner)
            else:
                self.value(item, v)


def small_model() -> GGUFBytes:
    """A valid little GGUF: scalar, string, string-array, byte-array and nested-array keys,
    then an F32 and a Q8_0 tensor with their data."""
    b = GGUFBytes()
    b.data += b"GGUF"
    b.u32(3)
    b.u64(2, b.counts)       # tensors
    b.u64(6, b.counts)       # metadata pairs
    b.string("general.architecture")
    b.u32(GGUFValueType.STRING)
    b.string("llama")
    b.string("llama.block_count")
    b.u32(GGUFValueType.UINT32)
    b.u32(1)
    b.string("tokenizer.ggml.tokens")
    b.u32(GGUFValueType.ARRAY)
    b.array(GGUFValueType.STRING, ["a", "bc", "<s>", "dé"])
    b.string("tokenizer.ggml.scores")
    b.u32(GGUFValueType.ARRAY)
    b.array(GGUFValueType.FLOAT32, [0.0, -1.0, -2.0, -3.0])
    b.string("blob")
    b.u32(GGUFValueType.ARRAY)
    b.array(GGUFValueType.UINT8, list(range(40)))
    b.string("nested")
    b.u32(GGUFValueType.ARRAY)
    b.array(GGUFValueType.ARRAY, [(GGUFValueType.UINT32, [1, 2]), (GGUFValueType.STRING, ["x"])])
    tensors = [("token_embd.weight", (8, 4), GGMLQuantizationType.F32, 8 * 4 * 4),
               ("blk.0.attn_q.weight", (32, 2), GGMLQuantizationType.Q8_0, 2 * 34)]
    offset = 0
    placed = []
    for name, shape, kind, nbytes in tensors:
        b.string(name)
        b.u32(len(shape))
        for d in shape:
            b.u64(d, b.dims)
        b.u32(kind)
        b.u64(offset, b.offsets)
        placed.append((offset, nbytes))
        offset += -(-nbytes // ALIGN) * ALIGN
    b.data += b"\0" * (-len(b.data) % ALIGN)
    start = len(b.data)
    b.data += bytes(range(256)) * (offset // 256 + 1)
    del b.data[start + offset:]
    return b
