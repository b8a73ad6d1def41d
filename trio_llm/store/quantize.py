"""Quantize an F32/F16/BF16 GGUF to q8_0, q4_0, q4_K_M or q4_K_S with our own C kernels.

`ollama create --quantize` turns a full-precision model into a smaller one. We read the source
over an mmap, convert one tensor at a time (in row chunks spread over threads, so even a large
model needs only about one output tensor of memory), and write a new GGUF with the `gguf`
package's GGUFWriter: every metadata pair copied byte-exact in the same order,
`general.file_type` set to the target, tensors in the same order with their GGML shapes.

Which type each tensor gets (`tensor_type`), for want of Q6_K/Q5_x quantizers:

* 1-D tensors (norms, biases) are stored as F32, whatever the target.
* q8_0: every other tensor is Q8_0.
* q4_0: Q4_0, except the output projection (`output.weight`, or `token_embd.weight` when the
  embeddings are tied) which is Q8_0: it sets every logit.
* q4_K_S: Q4_K, except `token_embd.weight` and `output.weight`, which are Q8_0.
* q4_K_M: as q4_K_S, and like llama.cpp's _M mixes gives more bits (Q8_0 here, where
  llama.cpp uses Q6_K) to `attn_v` and `ffn_down` in the first and last eighth of the layers
  and in every third layer between them.
* A row length a Q4_K block (256) does not divide falls back to Q8_0, never to a smaller type:
  the fallback keeps at least the precision asked for, at the cost of size (SmolLM2's rows of
  576 make most of its q4_K_M tensors Q8_0). A row a 32-block does not divide stays F16.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter, LlamaFileType

from trio_llm.engine import kernels
from trio_llm.formats.gguf_file import GGUFArray, GGUFError, GGUFFile, TensorInfo, read_gguf
from trio_llm.store.errors import InvalidRequest, QuantizationNotSupported
from trio_llm.store.gguf_info import quantization_level

Q = GGMLQuantizationType
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
FLOAT_FILE_TYPES = (LlamaFileType.ALL_F32, LlamaFileType.MOSTLY_F16, LlamaFileType.MOSTLY_BF16)
QUANTIZATION_VERSION = 2        # general.quantization_version of the current block formats
CHUNK_ELEMENTS = 1 << 20        # rows converted per task: about 4 MiB of floats in flight
_LAYER = re.compile(r"blk\.(\d+)\.")


class CannotQuantize(QuantizationNotSupported):
    """A quantize request we refuse (HTTP 400): an unknown target or a non-float source."""

    def __init__(self, target: str, message: str) -> None:
        InvalidRequest.__init__(self, message)
        self.target = target


@dataclass(frozen=True)
class Target:
    """A quantization the user can ask for: its name, file type and main tensor type."""

    name: str                      # as Ollama prints it: "Q4_K_M"
    file_type: LlamaFileType
    base: GGMLQuantizationType     # the type most 2-D weights get
    more_bits: bool = False        # the _M rule: attn_v / ffn_down of some layers get Q8_0


TARGETS = {t.name.lower(): t for t in (
    Target("Q8_0", LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
    Target("Q4_0", LlamaFileType.MOSTLY_Q4_0, Q.Q4_0),
    Target("Q4_K_S", LlamaFileType.MOSTLY_Q4_K_S, Q.Q4_K),
    Target("Q4_K_M", LlamaFileType.MOSTLY_Q4_K_M, Q.Q4_K, more_bits=True),
)}


def parse_target(text: str) -> Target:
    """The target named by `text`, case-insensitively ("q4_k_m", "Q4_K_M")."""
    target = TARGETS.get(text.strip().lower())
    if target is None:
        raise CannotQuantize(text, f"unsupported quantization type {text}")
    return target


def source_type(gguf: GGUFFile) -> str:
    """The source's type name ("F16"), refusing anything but an all-float model."""
    file_type = gguf.metadata.get("general.file_type")
    floats = all(t.type in FLOAT_TYPES for t in gguf.tensors.values())
    if not floats or (file_type is not None and file_type not in FLOAT_FILE_TYPES):
        raise CannotQuantize("", "quantization is only supported for F16, BF16 and F32 models")
    if file_type is not None:
        return quantization_level(file_type)
    counts: dict[str, int] = {}
    for t in gguf.tensors.values():
        counts[t.type.name] = counts.get(t.type.name, 0) + t.n_elements
    return max(counts, key=lambda name: counts[name]) if counts else "F32"


def more_bits(layer: int, n_layers: int) -> bool:
    """Whether layer `layer` of `n_layers` is one the _M mix gives more bits to: the first and
    last eighth, and every third layer in between."""
    eighth = n_layers // 8
    return layer < eighth or layer >= 7 * n_layers // 8 or (layer - eighth) % 3 == 2


def tensor_type(info: TensorInfo, target: Target, n_layers: int, tied: bool
                ) -> GGMLQuantizationType:
    """The type tensor `info` gets under `target` (the rules are in the module docstring)."""
    if len(info.shape) == 1:
        return Q.F32
    name = info.name
    want = target.base
    if name == "output.weight" or (name == "token_embd.weight" and tied):
        want = Q.Q8_0
    elif name == "token_embd.weight" and target.base == Q.Q4_K:
        want = Q.Q8_0
    elif target.more_bits and name.endswith(("attn_v.weight", "ffn_down.weight")):
        match = _LAYER.match(name)
        if match and more_bits(int(match.group(1)), n_layers):
            want = Q.Q8_0
    if want == Q.Q4_K and info.row_length % 256:
        want = Q.Q8_0
    if info.row_length % 32:
        want = Q.F16
    return want


def plan(gguf: GGUFFile, target: Target) -> dict[str, GGMLQuantizationType]:
    """Every tensor's new type, in file order."""
    arch = gguf.metadata.get("general.architecture", "")
    layers = [int(m.group(1)) for m in map(_LAYER.match, gguf.tensors) if m]
    n_layers = gguf.metadata.get(f"{arch}.block_count") or (max(layers) + 1 if layers else 0)
    tied = "output.weight" not in gguf.tensors
    return {name: tensor_type(info, target, int(n_layers), tied)
            for name, info in gguf.tensors.items()}


def quantize_gguf(source: Path, dest: Path, target: str | Target,
                  n_threads: int | None = None) -> Iterator[tuple[str, int, int]]:
    """Write `dest`, the quantized copy of `source`, then re-read it to verify.

    Yields (source type name, source bytes converted, total source bytes) before the first
    tensor and after each one. Raises CannotQuantize before writing anything for an unknown
    target or a source that is not F32/F16/BF16; GGUFError if the result does not read back
    as planned.
    """
    wanted = target if isinstance(target, Target) else parse_target(target)
    with read_gguf(source) as gguf:
        _check_header_size(gguf)
        kind = source_type(gguf)
        types = plan(gguf, wanted)
        total = sum(t.nbytes for t in gguf.tensors.values())
        yield kind, 0, total
        writer = _writer(gguf, dest, wanted, types)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            done = 0
            workers = n_threads or os.cpu_count() or 1
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for name, info in gguf.tensors.items():
                    writer.write_tensor_data(_convert(gguf, info, types[name], pool))
                    done += info.nbytes
                    yield kind, done, total
        finally:
            writer.close()
        _verify(gguf, dest, wanted, types)


MAX_COPIED_ITEMS = 1 << 22     # metadata array items a quantize copies (Gemma 3 has ~800k)


def _check_header_size(gguf: GGUFFile) -> None:
    """Refuse to copy a header whose arrays GGUFWriter would expand item by item into more
    than MAX_COPIED_ITEMS Python objects (a crafted file holds arrays of millions)."""
    items = sum(v.nbytes if v.item_type == GGUFValueType.ARRAY else len(v)   # nested: bound
                for v in gguf.metadata.values() if isinstance(v, GGUFArray))
    if items > MAX_COPIED_ITEMS:
        raise CannotQuantize("", f"the model's metadata holds {items} array items; "
                                 f"quantization copies at most {MAX_COPIED_ITEMS}")


def _writer(gguf: GGUFFile, dest: Path, target: Target,
            types: dict[str, GGMLQuantizationType]) -> GGUFWriter:
    """A GGUFWriter holding the source's metadata (file type updated) and the new tensor table."""
    writer = GGUFWriter(dest, str(gguf.metadata.get("general.architecture", "")))
    fields = typed_metadata(gguf)
    keys = {key for key, *_ in fields}
    for key, vtype, sub_type, value in fields:
        if key == "general.architecture":
            continue   # the writer put it first already
        if key == "general.file_type":
            vtype, sub_type, value = GGUFValueType.UINT32, None, int(target.file_type)
        if key == "general.alignment":
            writer.data_alignment = int(value)
        if vtype == GGUFValueType.ARRAY and not value:
            continue   # GGUFWriter cannot write an empty array; readers see [] and absent alike
        writer.add_key_value(key, value, vtype, sub_type)
    if "general.file_type" not in keys:
        writer.add_key_value("general.file_type", int(target.file_type), GGUFValueType.UINT32)
    if "general.quantization_version" not in keys:
        writer.add_key_value("general.quantization_version", QUANTIZATION_VERSION,
                             GGUFValueType.UINT32)
    for name, info in gguf.tensors.items():
        kind = types[name]
        row_bytes = _row_bytes(kind, info.row_length)
        byte_shape = (*reversed(info.shape[1:]), row_bytes)   # numpy order, rows in bytes
        writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), row_bytes * info.n_rows,
                               raw_dtype=kind)
    return writer


def _row_bytes(kind: GGMLQuantizationType, n: int) -> int:
    try:
        return kernels.row_bytes(int(kind), n)
    except kernels.KernelError as e:
        raise kernels.KernelError(f"a row of {n} is not whole {kind.name} blocks", e.status) from e


def _convert(gguf: GGUFFile, info: TensorInfo, kind: GGMLQuantizationType,
             pool: ThreadPoolExecutor) -> np.ndarray:
    """Tensor `info` re-encoded as `kind`: chunks of rows decoded from the mmap and encoded by
    the C kernels on the pool's threads (they run without the GIL), written into one array."""
    row, n_rows = info.row_length, info.n_rows
    src_row, dst_row = _row_bytes(info.type, row), _row_bytes(kind, row)
    src = np.frombuffer(gguf.data, np.uint8, info.nbytes, info.offset)
    out = np.empty(n_rows * dst_row, dtype=np.uint8)
    step = max(1, CHUNK_ELEMENTS // row)

    def rows(start: int) -> None:
        stop = min(n_rows, start + step)
        values = kernels.dequantize(int(info.type), src[start * src_row: stop * src_row],
                                    (stop - start) * row)
        out[start * dst_row: stop * dst_row] = kernels.quantize(int(kind), values)

    for future in [pool.submit(rows, start) for start in range(0, n_rows, step)]:
        future.result()
    return out


def _verify(source: GGUFFile, dest: Path, target: Target,
            types: dict[str, GGMLQuantizationType]) -> None:
    """Re-read `dest` and check it holds what we meant to write: the same metadata apart from
    the file type, and every tensor in order with its shape and planned type."""
    with read_gguf(dest) as out:
        if out.metadata.get("general.file_type") != int(target.file_type):
            raise GGUFError("quantized file has the wrong general.file_type")
        for key, value in source.metadata.items():
            if key != "general.file_type" and out.metadata.get(key, []) != value:
                raise GGUFError(f"quantized file lost metadata {key!r}")
        got = [(t.name, t.shape, t.type) for t in out.tensors.values()]
        want = [(t.name, t.shape, types[t.name]) for t in source.tensors.values()]
        if got != want:
            raise GGUFError("quantized file's tensors are not the ones planned")


# -- typed metadata ----------------------------------------------------------------------------

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


def typed_metadata(gguf: GGUFFile) -> list[tuple[str, GGUFValueType, GGUFValueType | None, Any]]:
    """The metadata pairs with their GGUF value types, in file order, for GGUFWriter.

    `read_gguf` (which already validated the header) keeps values only; a copy needs the
    exact types too, so this walks the same bytes again. Strings come back as raw bytes, so a
    token that is not valid UTF-8 is copied unchanged.
    """
    data: mmap.mmap = gguf.data
    pos = 4 + 4 + 8          # magic, version, tensor count
    (n_kv,) = struct.unpack_from("<Q", data, pos)
    pos += 8

    def string(at: int) -> tuple[bytes, int]:
        (n,) = struct.unpack_from("<Q", data, at)
        return bytes(data[at + 8: at + 8 + n]), at + 8 + n

    def value(vtype: GGUFValueType, at: int, raw: bool = True) -> tuple[Any, int]:
        if vtype == GGUFValueType.STRING:
            text, at = string(at)
            return (text if raw else text.decode("utf-8", errors="replace")), at
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype]
            return struct.unpack_from(fmt, data, at)[0], at + struct.calcsize(fmt)
        item, n = struct.unpack_from("<IQ", data, at)
        at += 12
        item_type = GGUFValueType(item)
        if item_type in _SCALARS:
            fmt = _SCALARS[item_type]
            size = struct.calcsize(fmt)
            items = np.frombuffer(data, np.dtype(fmt), n, at).tolist()
            return items, at + n * size
        out = []
        for _ in range(n):   # nested arrays: GGUFWriter infers inner types, so give it str
            element, at = value(item_type, at, raw and item_type != GGUFValueType.ARRAY)
            out.append(element)
        return out, at

    fields = []
    for _ in range(n_kv):
        key, pos = string(pos)
        (raw_type,) = struct.unpack_from("<I", data, pos)
        vtype = GGUFValueType(raw_type)
        sub_type = None
        if vtype == GGUFValueType.ARRAY:
            sub_type = GGUFValueType(struct.unpack_from("<I", data, pos + 4)[0])
        val, pos = value(vtype, pos + 4)
        fields.append((key.decode("utf-8", errors="replace"), vtype, sub_type, val))
    return fields
