"""Small random-weight GGUF files, written at test time with the `gguf` package.

No real weights of most architectures are on PyPI, so their tests build a few-MB model of the
architecture's exact tensor layout with random weights, and compare our engine against a
float64 reference on it. The vocabulary is borrowed from a real model (SmolLM2's byte-level
BPE by default) so the tokenizer path is the real one too.

    model = TinyModel("qwen2", vocab=smollm2_vocabulary(path))
    model.meta("embedding_length", 64)
    model.tensor("blk.0.attn_q.weight", (64, 64))
    model.write(tmp_path / "qwen2.gguf")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter
from gguf.quants import dequantize, quantize

from trio_llm.formats.gguf_file import read_gguf

F32 = GGMLQuantizationType.F32
F16 = GGMLQuantizationType.F16
Q8_0 = GGMLQuantizationType.Q8_0

TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.scores",
                  "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix")


def vocabulary_of(path: Path | str) -> dict[str, Any]:
    """The tokenizer.ggml.* keys of a real GGUF file, to give a tiny model the same tokenizer.
    (Read with our own reader: gguf's GGUFReader takes seconds over 100k strings.)"""
    gguf = read_gguf(path)
    try:
        return {key: _expanded(gguf.metadata[key]) for key in TOKENIZER_KEYS
                if key in gguf.metadata}
    finally:
        gguf.close()


def _expanded(value: Any) -> Any:
    """A metadata value as plain Python (a lazy GGUF array read out before the file closes)."""
    return value.tolist() if hasattr(value, "tolist") else value


@dataclass
class TinyModel:
    """Metadata and tensors of one model, written as GGUF by write()."""

    arch: str
    vocab: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    _meta: dict[str, Any] = field(default_factory=dict)
    _tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType]] = field(default_factory=dict)
    _stored: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab.get("tokenizer.ggml.tokens", ())) or 256

    def meta(self, key: str, value: Any) -> TinyModel:
        """Set `<arch>.key` (or a full key when it contains the architecture's prefix already)."""
        name = key if key.startswith(("general.", "tokenizer.")) else f"{self.arch}.{key}"
        self._meta[name] = value
        return self

    def tensor(self, name: str, shape: tuple[int, ...], kind: GGMLQuantizationType = F32,
               scale: float | None = None, values: np.ndarray | None = None) -> np.ndarray:
        """Add a tensor of GGML-order `shape` (row length first): random normal values scaled
        by 1/sqrt(row length) unless given (norm weights: pass values). Returns the float32
        values as stored after quantization (numpy order: reversed shape)."""
        numpy_shape = tuple(reversed(shape))
        if values is None:
            s = scale if scale is not None else 1.0 / np.sqrt(shape[0])
            values = (self._rng.standard_normal(numpy_shape) * s).astype(np.float32)
        values = np.ascontiguousarray(values, np.float32).reshape(numpy_shape)
        if kind == F32:
            data, stored = values, values
        elif kind == F16:
            data = values.astype(np.float16)
            stored = data.astype(np.float32)
        else:
            data = quantize(values, kind)
            stored = dequantize(data, kind).astype(np.float32).reshape(numpy_shape)
        self._tensors[name] = (data, kind)
        self._stored[name] = stored
        return stored

    def stored(self) -> dict[str, np.ndarray]:
        """Every tensor as the file holds it, dequantized to float64 (for a reference forward)."""
        return {name: values.astype(np.float64) for name, values in self._stored.items()}

    def norm(self, name: str, n: int, center: float = 1.0) -> np.ndarray:
        """A norm weight vector near `center` (F32)."""
        return self.tensor(name, (n,), F32,
                           values=(center + 0.1 * self._rng.standard_normal(n)).astype(np.float32))

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        writer = GGUFWriter(str(path), self.arch)
        for key, value in {**self.vocab, **self._meta}.items():
            _add(writer, key, value)
        for name, (data, kind) in self._tensors.items():
            if kind in (F32, F16):
                writer.add_tensor(name, data)
            else:
                writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path


def _add(writer: GGUFWriter, key: str, value: Any) -> None:
    """One metadata key with the GGUF type its Python value implies (ints as int32/uint32
    as llama.cpp's converters write them, floats as float32, lists of strings or numbers)."""
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value) if value >= 0 else writer.add_int32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list | tuple | np.ndarray):
        items = list(value)
        if items and isinstance(items[0], str):
            writer.add_array(key, items)
        elif items and isinstance(items[0], float | np.floating):
            writer.add_key_value(key, [float(v) for v in items], GGUFValueType.ARRAY,
                                 sub_type=GGUFValueType.FLOAT32)
        else:
            writer.add_key_value(key, [int(v) for v in items], GGUFValueType.ARRAY,
                                 sub_type=GGUFValueType.INT32)
    else:
        raise TypeError(f"metadata {key!r}: cannot write {type(value).__name__}")


def byte_vocabulary() -> dict[str, Any]:
    """A minimal byte-level BPE vocabulary: the 256 byte tokens and <|endoftext|>, no merges.
    Enough for a tokenizer that round-trips any text, in a model of a few hundred KB."""
    from trio_llm.engine.bpe import byte_alphabet

    tokens = [*byte_alphabet(), "<|endoftext|>"]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": [1] * 256 + [3],
            "tokenizer.ggml.bos_token_id": 256,
            "tokenizer.ggml.eos_token_id": 256}


def tiny_llama(vocab: Mapping[str, Any] | None = None, *, dim: int = 256, ffn_dim: int = 512,
               n_layer: int = 1, n_head: int = 4, n_kv_head: int = 2,
               kind: GGMLQuantizationType = F16, seed: int = 0) -> TinyModel:
    """A complete llama-architecture model (every tensor the engine loads), random weights of
    type `kind`, the byte vocabulary unless another is given; call .write(path)."""
    model = TinyModel("llama", byte_vocabulary() if vocab is None else vocab, seed=seed)
    head_dim = dim // n_head
    for key, value in {"block_count": n_layer, "embedding_length": dim,
                       "feed_forward_length": ffn_dim, "context_length": 512,
                       "attention.head_count": n_head, "attention.head_count_kv": n_kv_head,
                       "rope.freq_base": 10000.0,
                       "attention.layer_norm_rms_epsilon": 1e-5}.items():
        model.meta(key, value)
    model.tensor("token_embd.weight", (dim, model.vocab_size), kind, scale=1.0)
    model.norm("output_norm.weight", dim)
    for i in range(n_layer):
        model.norm(f"blk.{i}.attn_norm.weight", dim)
        model.tensor(f"blk.{i}.attn_q.weight", (dim, n_head * head_dim), kind)
        model.tensor(f"blk.{i}.attn_k.weight", (dim, n_kv_head * head_dim), kind)
        model.tensor(f"blk.{i}.attn_v.weight", (dim, n_kv_head * head_dim), kind)
        model.tensor(f"blk.{i}.attn_output.weight", (n_head * head_dim, dim), kind)
        model.norm(f"blk.{i}.ffn_norm.weight", dim)
        model.tensor(f"blk.{i}.ffn_gate.weight", (dim, ffn_dim), kind)
        model.tensor(f"blk.{i}.ffn_up.weight", (dim, ffn_dim), kind)
        model.tensor(f"blk.{i}.ffn_down.weight", (ffn_dim, dim), kind)
    return model
