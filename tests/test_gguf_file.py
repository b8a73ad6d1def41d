"""Our GGUF header reader agrees with the gguf package and refuses malformed files cleanly."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from trio_llm.formats.gguf_file import GGUFArray, GGUFError, read_gguf


@pytest.fixture(scope="module")
def oracle(smollm2_reader: GGUFReader) -> GGUFReader:
    return smollm2_reader


def test_metadata_matches_gguf_reader(smollm2_path: Path, oracle: GGUFReader) -> None:
    ours = read_gguf(smollm2_path)
    for name, field in oracle.fields.items():
        if name.startswith("GGUF."):
            continue
        expected = field.contents()
        got = ours.metadata[name]
        if isinstance(expected, float):
            assert got == pytest.approx(expected), name
        else:
            assert got == expected, name
    assert set(ours.metadata) == {n for n in oracle.fields if not n.startswith("GGUF.")}


def test_tensor_table_matches_gguf_reader(smollm2_path: Path, oracle: GGUFReader) -> None:
    ours = read_gguf(smollm2_path)
    assert len(ours.tensors) == len(oracle.tensors)
    for t in oracle.tensors:
        info = ours.tensors[t.name]
        assert info.shape == tuple(int(d) for d in t.shape)
        assert info.type == t.tensor_type
        assert info.offset == t.data_offset
        assert info.nbytes == t.n_bytes
        assert bytes(ours.tensor_bytes(t.name)[:64]) == np.asarray(t.data).tobytes()[:64]


def test_weights_stay_in_the_mmap(smollm2_path: Path) -> None:
    ours = read_gguf(smollm2_path)
    view = ours.tensor_bytes("blk.0.attn_q.weight")
    assert view.obj is ours.data  # a view of the mapping, not a copy


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"GGML" + b"\0" * 40, "bad magic"),
    (b"GGUF" + struct.pack("<IQQ", 99, 0, 0), "version"),
    (b"GGUF" + struct.pack("<I", 3), "truncated"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40), "implausible"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k"
     + struct.pack("<I", 77), "unknown GGUF value type"),
])
def test_malformed_headers_raise_gguf_error(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=message):
        read_gguf(write(tmp_path, data))


def test_truncated_model_is_refused(tmp_path: Path, smollm2_path: Path) -> None:
    data = smollm2_path.read_bytes()
    for cut in (10, 1000, 2_000_000, len(data) - 1):
        with pytest.raises(GGUFError):
            read_gguf(write(tmp_path, data[:cut]))


def test_tensor_with_bad_shape_is_refused(tmp_path: Path) -> None:
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
    # one Q4_0 tensor whose row (33 elements) is not a whole number of 32-element blocks
    tensor = struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 33, 2, 0)
    with pytest.raises(GGUFError, match="whole"):
        read_gguf(write(tmp_path, header + tensor + b"\0" * 64))


def test_arrays_stay_in_the_mmap_until_asked_for(smollm2_path: Path) -> None:
    with read_gguf(smollm2_path) as ours:
        tokens = ours.metadata["tokenizer.ggml.tokens"]
        assert isinstance(tokens, GGUFArray) and not isinstance(tokens, list)
        assert len(tokens) == 49152 and tokens[1] == "<|im_start|>" and tokens[-1] == list(
            tokens)[-1]
        assert tokens[10:12] == list(tokens)[10:12]
        types = ours.metadata["tokenizer.ggml.token_type"]
        assert types.numpy().dtype == np.int32 and types.tolist()[:3] == list(types)[:3]


def test_close_with_live_views_does_not_mask_the_callers_error(smollm2_path: Path) -> None:
    ours = read_gguf(smollm2_path)
    view = np.frombuffer(ours.tensor_bytes("blk.0.attn_q.weight"), dtype=np.uint8)
    ours.close()            # a failed load still holding views: no BufferError
    assert view[:4].tolist() == np.asarray(view[:4]).tolist()
