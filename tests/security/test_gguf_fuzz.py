"""The GGUF reader against hostile files: truncated at every offset, every count, length,
dimension and offset field set to 0, 2^31, 2^63 and 2^64-1, shapes whose element count wraps
64 bits, and random byte damage (hypothesis). Each file either is refused with GGUFError, or
opens with every tensor and every metadata item inside the file's bytes."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.gguf_bytes import small_model
from trio_llm.formats.gguf_file import GGUFError, read_gguf
from trio_llm.store.errors import NotGGUF
from trio_llm.store.gguf_info import summarize

HOSTILE = (0, 1 << 31, 1 << 63, (1 << 64) - 1)


def expand(value: object) -> None:
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [v for v in value]
        assert len(items) == len(value)
        if len(value):
            assert value[-1] == items[-1]


def exercise(path: Path) -> bool:
    """Open `path` and touch everything it claims; True if it opened."""
    size = path.stat().st_size
    try:
        gguf = read_gguf(path)
    except GGUFError:
        with pytest.raises(NotGGUF):
            summarize(path, verbose=True)
        return False
    with gguf:
        for value in gguf.metadata.values():
            expand(value)
        for t in gguf.tensors.values():
            block, block_bytes = GGML_QUANT_SIZES[t.type]
            assert t.nbytes == math.prod(t.shape) // block * block_bytes
            assert 0 <= t.offset and t.offset + t.nbytes <= size
            assert len(gguf.tensor_bytes(t.name)) == t.nbytes
    summarize(path, verbose=True)
    return True


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "hostile.gguf"


def test_the_small_model_is_valid(target: Path) -> None:
    model = small_model()
    target.write_bytes(model.data)
    assert exercise(target)
    with read_gguf(target) as gguf:
        assert gguf.metadata["tokenizer.ggml.tokens"] == ["a", "bc", "<s>", "dé"]
        assert [list(v) for v in gguf.metadata["nested"]] == [[1, 2], ["x"]]
        assert list(gguf.metadata["blob"]) == list(range(40))


def test_truncation_at_every_offset_is_refused_or_harmless(target: Path) -> None:
    data = bytes(small_model().data)
    opened = []
    for cut in range(len(data)):
        target.write_bytes(data[:cut])
        if exercise(target):
            opened.append(cut)
    assert all(cut > len(data) - 32 for cut in opened), "only the last tensor's padding may go"


@pytest.mark.parametrize("kind", ["counts", "lengths", "dims", "offsets"])
@pytest.mark.parametrize("value", HOSTILE, ids=["0", "2^31", "2^63", "2^64-1"])
def test_every_count_length_dim_and_offset_field_set_to_hostile_values(
        target: Path, kind: str, value: int) -> None:
    model = small_model()
    for at in getattr(model, kind):
        data = bytearray(model.data)
        struct.pack_into("<Q", data, at, value)
        target.write_bytes(data)
        exercise(target)


@pytest.mark.parametrize("shape", [
    (4096, 1 << 52),              # 2^64 elements: wraps to 0 in int64 arithmetic
    (1 << 32, 1 << 32),
    (32, 1 << 59, 2),
    (1 << 62, 4),
    ((1 << 63) - 32, 3),
    (256, 1 << 56, 1, 1),
])
def test_shapes_whose_element_count_overflows_are_refused(target: Path,
                                                          shape: tuple[int, ...]) -> None:
    model = small_model()
    data = bytearray(model.data)
    # give the first tensor (F32, 2 dims) the hostile shape, rewriting its table entry
    name_at = model.dims[0] - 4 - 8 - len("token_embd.weight")
    entry = struct.pack("<Q", len("token_embd.weight")) + b"token_embd.weight"
    entry += struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
    entry += struct.pack("<IQ", GGMLQuantizationType.F32, 0)
    old_end = model.dims[1] + 8 + 4 + 8
    data[name_at:old_end] = entry
    target.write_bytes(data)
    with pytest.raises(GGUFError):
        read_gguf(target)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
                min_size=1, max_size=6))
def test_random_damage_is_refused_or_harmless(target: Path,
                                              damage: list[tuple[int, bytes]]) -> None:
    data = bytearray(small_model().data)
    for at, patch in damage:
        at %= len(data)
        data[at: at + len(patch)] = patch[: len(data) - at]
    target.write_bytes(data)
    exercise(target)
