"""RoPE scaling metadata: linear is honoured, any other type is refused, never run as linear."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_llm.arch import llama
from trio_llm.engine.model import check_model_file
from trio_llm.errors import ModelFileError
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.testing.tiny_gguf import tiny_llama


def written(tmp_path: Path, **meta: object) -> Path:
    model = tiny_llama()
    for key, value in meta.items():
        model.meta(key, value)
    return model.write(tmp_path / "model.gguf")


@pytest.mark.parametrize(("meta", "scale"), [
    ({}, 1.0),
    ({"rope.scaling.factor": 4.0}, 0.25),                      # the factor alone is linear
    ({"rope.scaling.type": "linear", "rope.scaling.factor": 2.0}, 0.5),
    ({"rope.scaling.type": "none", "rope.scaling.factor": 8.0}, 1.0),
])
def test_linear_and_no_rope_scaling_set_the_position_scale(
        tmp_path: Path, meta: dict[str, object], scale: float) -> None:
    with read_gguf(written(tmp_path, **meta)) as gguf:
        assert llama.read_params(gguf).rope.freq_scale == scale


@pytest.mark.parametrize("kind", ["yarn", "longrope", "dynamic"])
def test_a_rope_scaling_type_we_do_not_implement_is_refused_naming_it(
        tmp_path: Path, kind: str) -> None:
    path = written(tmp_path, **{"rope.scaling.type": kind, "rope.scaling.factor": 4.0})
    with read_gguf(path) as gguf, pytest.raises(ModelFileError,
                                                match=f"llama.rope.scaling.type = '{kind}'"):
        check_model_file(gguf)
