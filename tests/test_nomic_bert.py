"""The nomic-bert architecture on a small random-weight GGUF (all-MiniLM-L6-v2's WordPiece
vocabulary) against a float64 reference written from its definition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.reference_bert import ReferenceNomicBert, pool
from trio_llm.arch.runtime import Pooling
from trio_llm.engine.model import Model, check_model_file
from trio_llm.errors import ModelFileError
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.testing.minilm import vocabulary
from trio_llm.testing.tiny_gguf import F16, Q8_0, TinyModel

DIM, FFN, HEADS, LAYERS = 64, 128, 4, 2
PROMPT = ("Rotary positions let every token know where it sits in the text, without a "
          "position table.")


def tiny_nomic_bert(path: Path, vocab: dict[str, Any], pooling_type: int = 1,
                    **meta: Any) -> Path:
    n_vocab = len(vocab["tokenizer.ggml.tokens"])
    model = TinyModel("nomic-bert", vocab=vocab, seed=3)
    for key, value in {"context_length": 256, "embedding_length": DIM,
                       "feed_forward_length": FFN, "block_count": LAYERS,
                       "attention.head_count": HEADS, "attention.layer_norm_epsilon": 1e-12,
                       "attention.causal": False, "rope.freq_base": 1000.0,
                       "pooling_type": pooling_type, **meta}.items():
        model.meta(key, value)
    model.tensor("token_embd.weight", (DIM, n_vocab), F16, scale=1.0)
    model.tensor("token_types.weight", (DIM, 2), scale=1.0)
    model.norm("token_embd_norm.weight", DIM)
    model.norm("token_embd_norm.bias", DIM, center=0.0)
    for i in range(LAYERS):
        model.tensor(f"blk.{i}.attn_qkv.weight", (DIM, 3 * DIM), Q8_0)
        model.tensor(f"blk.{i}.attn_output.weight", (DIM, DIM), Q8_0)
        model.tensor(f"blk.{i}.ffn_gate.weight", (DIM, FFN), Q8_0)
        model.tensor(f"blk.{i}.ffn_up.weight", (DIM, FFN), Q8_0)
        model.tensor(f"blk.{i}.ffn_down.weight", (FFN, DIM), F16)
        for norm in ("attn_output_norm", "layer_output_norm"):
            model.norm(f"blk.{i}.{norm}.weight", DIM)
            model.norm(f"blk.{i}.{norm}.bias", DIM, center=0.0)
    return model.write(path)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def vocab(minilm_dir: Path) -> dict[str, Any]:
    return vocabulary(minilm_dir)


@pytest.mark.parametrize(("pooling_type", "pooling"), [(1, "mean"), (2, "cls"), (3, "last")])
def test_a_20_token_input_pools_to_the_float64_reference(
        tmp_path: Path, vocab: dict[str, Any], pooling_type: int, pooling: str) -> None:
    path = tiny_nomic_bert(tmp_path / "nomic.gguf", vocab, pooling_type)
    model = Model.load(path, n_ctx=256)
    try:
        tokens = model.tokenizer.encode(PROMPT)
        assert len(tokens) == 20 and model.capabilities == frozenset({"embedding"})
        states = model.net.hidden_states(tokens)
        want = ReferenceNomicBert(path).hidden_states(tokens)
        assert np.linalg.norm(states - want) / np.linalg.norm(want) < 1e-2
        assert model.net.shape.pooling is Pooling(pooling)
        assert cosine(model.net.shape.pooling.pool(states), pool(want, pooling)) > 0.9999
    finally:
        model.close()


def test_positions_matter_through_the_rotation(tmp_path: Path, vocab: dict[str, Any]) -> None:
    """With no position table, only rotary positions tell "dog bites man" from its reverse."""
    model = Model.load(tiny_nomic_bert(tmp_path / "nomic.gguf", vocab), n_ctx=32)
    try:
        a = model.net.hidden_states(model.tokenizer.encode("dog bites man"))
        b = model.net.hidden_states(model.tokenizer.encode("man bites dog"))
        assert not np.allclose(a.mean(axis=0), b.mean(axis=0), atol=1e-3)
    finally:
        model.close()


@pytest.mark.parametrize(("meta", "message"), [
    ({"pooling_type": 4}, "nomic-bert.pooling_type = 4 \\(rank\\) is a cross-encoder"),
    ({"attention.causal": True}, "nomic-bert.attention.causal must be false"),
    ({"rope.freq_base": -1.0}, "nomic-bert.rope.freq_base"),
])
def test_a_file_the_encoder_cannot_run_is_refused_naming_the_cause(
        tmp_path: Path, vocab: dict[str, Any], meta: dict[str, Any], message: str) -> None:
    with read_gguf(tiny_nomic_bert(tmp_path / "bad.gguf", vocab, **meta)) as gguf, \
            pytest.raises(ModelFileError, match=message):
        check_model_file(gguf)


def test_an_encoder_keeps_no_repacked_decode_copies(tmp_path: Path,
                                                    vocab: dict[str, Any]) -> None:
    """Every encoder row is a prompt row: a decode copy of its Q8_0 matrices (a format with a
    repacked layout) would be memory nothing reads, so neither the load nor the plan has one."""
    m = Model.load(tiny_nomic_bert(tmp_path / "q8.gguf", vocab), n_ctx=64)
    try:
        assert m.net.packed_bytes == 0
        assert m.net.memory.packed == 0
    finally:
        m.close()
