"""The bert architecture on a real BERT (all-MiniLM-L6-v2, converted to GGUF at test time)
against a float64 reference written from BERT's definition on the original weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.reference_bert import ReferenceBert
from trio_llm.arch.runtime import Pooling
from trio_llm.engine.batch import Batch
from trio_llm.engine.model import Model, check_model_file
from trio_llm.errors import ModelFileError
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.store.gguf_info import capabilities, summarize
from trio_llm.testing.minilm import read_safetensors, vocabulary, write_gguf
from trio_llm.testing.tiny_gguf import F16, TinyModel

PROMPT = "The quick brown fox jumps over the lazy dog near the old riverbank at dawn!!"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> ReferenceBert:
    config = json.loads((minilm_dir / "config.json").read_text())
    return ReferenceBert(config, read_safetensors(minilm_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def model(bert_path: Path) -> Any:
    m = Model.load(bert_path, n_ctx=512)
    yield m
    m.close()


def test_a_20_token_input_pools_to_the_float64_reference(model: Model,
                                                         reference: ReferenceBert) -> None:
    tokens = model.tokenizer.encode(PROMPT)
    assert len(tokens) == 20
    assert model.net.shape.pooling is Pooling.MEAN
    got = model.net.shape.pooling.pool(model.net.hidden_states(tokens))
    assert cosine(got, reference.embedding(tokens)) > 0.9999


def test_every_layer_stays_within_1e_2_of_the_reference(model: Model,
                                                        reference: ReferenceBert) -> None:
    tokens = model.tokenizer.encode(PROMPT)
    seen: dict[int, np.ndarray] = {}

    def trace(name: str, layer: int, x: np.ndarray) -> None:
        if name in ("token_embd", "layer_out"):
            seen[layer + 1] = x.astype(np.float64)

    model.net._run(Batch.sequence(tokens), 0, len(tokens), trace)
    for layer, want in enumerate(reference.hidden_states(tokens)):
        error = np.linalg.norm(seen[layer] - want) / np.linalg.norm(want)
        assert error < 1e-2, f"layer {layer}: relative error {error:.2e}"


@pytest.mark.parametrize(("pooling_type", "pooling"), [(2, "cls"), (3, "last")])
def test_the_pooling_type_in_the_metadata_chooses_the_vector(
        minilm_dir: Path, tmp_path: Path, reference: ReferenceBert, pooling_type: int,
        pooling: str) -> None:
    path = write_gguf(minilm_dir, tmp_path / f"{pooling}.gguf", pooling=pooling_type)
    m = Model.load(path, n_ctx=64)
    try:
        tokens = m.tokenizer.encode(PROMPT)
        assert m.net.shape.pooling is Pooling(pooling)
        got = m.net.shape.pooling.pool(m.net.hidden_states(tokens))
        want = reference.embedding(tokens, pooling)
        assert cosine(got, want) > 0.9999
        assert cosine(got, reference.embedding(tokens, "mean")) < 0.99
    finally:
        m.close()


def test_an_encoder_sees_the_whole_sequence(model: Model) -> None:
    """Bidirectional: the first token's state depends on the tokens after it."""
    a = model.net.hidden_states(model.tokenizer.encode("river bank"))
    b = model.net.hidden_states(model.tokenizer.encode("river boat"))
    assert not np.allclose(a[1], b[1], atol=1e-3)


def test_it_embeds_and_does_not_generate(model: Model, bert_path: Path) -> None:
    assert model.capabilities == frozenset({"embedding"})
    with read_gguf(bert_path) as gguf:
        assert check_model_file(gguf) == frozenset({"embedding"})
    with pytest.raises(ValueError, match="no language-model head"):
        model.net.forward(Batch.sequence([101, 102]))


def test_an_input_longer_than_the_context_is_refused(model: Model) -> None:
    with pytest.raises(ValueError, match="context"):
        model.net.hidden_states([101] + [1996] * 511 + [102])
    assert model.net.hidden_states([101] + [1996] * 510 + [102]).shape == (512, 384)


def tiny_bert(path: Path, vocab: dict[str, Any], **meta: Any) -> Path:
    """A two-layer random-weight bert with the given metadata overrides (None: no such key)."""
    dim, ffn, n_vocab = 32, 64, len(vocab["tokenizer.ggml.tokens"])
    model = TinyModel("bert", vocab=vocab)
    for key, value in {"context_length": 128, "embedding_length": dim,
                       "feed_forward_length": ffn, "block_count": 2,
                       "attention.head_count": 4, "attention.layer_norm_epsilon": 1e-12,
                       "attention.causal": False, "pooling_type": 1, **meta}.items():
        if value is not None:
            model.meta(key, value)
    model.tensor("token_embd.weight", (dim, n_vocab), F16)
    model.tensor("position_embd.weight", (dim, 128), F16)
    model.tensor("token_types.weight", (dim, 2))
    model.norm("token_embd_norm.weight", dim)
    model.norm("token_embd_norm.bias", dim, center=0.0)
    for i in range(2):
        for name, shape in (("attn_q", (dim, dim)), ("attn_k", (dim, dim)),
                            ("attn_v", (dim, dim)), ("attn_output", (dim, dim)),
                            ("ffn_up", (dim, ffn)), ("ffn_down", (ffn, dim))):
            model.tensor(f"blk.{i}.{name}.weight", shape)
            model.norm(f"blk.{i}.{name}.bias", shape[1], center=0.0)
        for norm in ("attn_output_norm", "layer_output_norm"):
            model.norm(f"blk.{i}.{norm}.weight", dim)
            model.norm(f"blk.{i}.{norm}.bias", dim, center=0.0)
    return model.write(path)


@pytest.mark.parametrize(("meta", "message"), [
    ({"pooling_type": 0}, "bert.pooling_type = 0 is not supported"),
    ({"pooling_type": 4}, "bert.pooling_type = 4 \\(rank\\) is a cross-encoder reranker, which is "
     "not supported"),
    ({"attention.causal": True}, "bert.attention.causal must be false"),
    ({"context_length": 4096}, "position_embd.weight"),
    ({"attention.head_count": 5}, "do not split the width 32"),
])
def test_a_file_the_encoder_cannot_run_is_refused_naming_the_cause(
        minilm_dir: Path, tmp_path: Path, meta: dict[str, Any], message: str) -> None:
    vocab = vocabulary(minilm_dir)
    with read_gguf(tiny_bert(tmp_path / "ok.gguf", vocab)) as gguf:
        assert check_model_file(gguf) == frozenset({"embedding"})
    with read_gguf(tiny_bert(tmp_path / "bad.gguf", vocab, **meta)) as gguf, \
            pytest.raises(ModelFileError, match=message):
        check_model_file(gguf)


def test_a_file_without_pooling_type_pools_by_mean(minilm_dir: Path, tmp_path: Path) -> None:
    path = tiny_bert(tmp_path / "plain.gguf", vocabulary(minilm_dir), pooling_type=None)
    with read_gguf(path) as gguf:
        assert "bert.pooling_type" not in gguf.metadata
        assert check_model_file(gguf) == frozenset({"embedding"})
    assert capabilities(summarize(path), template="") == ["embedding"]   # what /api/show says
    m = Model.load(path, n_ctx=16)
    try:
        assert m.net.shape.pooling is Pooling.MEAN
    finally:
        m.close()
