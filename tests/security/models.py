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


def tiny_llama_f32(path: Path, dim: int = 256, layers: int = 4, ffn: int = 768,
                   vocab: int = 512) -> Path:
    """A small but complete llama-architecture model in F32 (random weights, a byte-level
    vocabulary): something create can quantize in about a second."""
    import numpy as np
    from gguf import GGUFWriter, LlamaFileType

    rng = np.random.default_rng(16)
    heads, kv_heads = 4, 2
    head_dim = dim // heads
    writer = GGUFWriter(path, "llama")
    writer.add_file_type(int(LlamaFileType.ALL_F32))
    writer.add_block_count(layers)
    writer.add_context_length(512)
    writer.add_embedding_length(dim)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    tokens = [bytes([i]).decode("latin-1") for i in range(256)]
    tokens += [f"<extra_{i}>" for i in range(vocab - 256)]
    writer.add_token_list(tokens)
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([])
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(257)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, dim))
    writer.add_tensor("output_norm.weight", np.ones(dim, np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(dim, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(dim, dim))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_heads * head_dim, dim))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_heads * head_dim, dim))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(dim, dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(dim, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, dim))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, dim))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(dim, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
