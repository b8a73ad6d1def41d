"""One owner for memory facts: the plan a network allocates by is the plan the scheduler reads.

The allocations are counted here from the objects themselves (array sizes, repacked copies, the
mapped file), independently of the plan's arithmetic; the plan read from the file before
loading must equal the loaded network's, for every cache type and for sliding windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trio_llm.arch.memory import MemoryPlan
from trio_llm.arch.weights import matrices
from trio_llm.engine.batch import Batch
from trio_llm.engine.kv_cache import KV_TYPES, KVLayout, cache_rows, cache_type_for
from trio_llm.engine.model import Model, plan_model
from trio_llm.testing.tiny_gguf import F32, Q8_0, TinyModel, vocabulary_of

MB = 10**6


def tiny_llama(path: Path, head_dim: int, window: int = 0, n_layer: int = 2,
               vocab: dict[str, Any] | None = None) -> Path:
    """A 2-layer llama of 4 heads (2 KV heads) of head_dim, random weights; its vocabulary is
    512 tokens without a tokenizer, or the one given."""
    m = TinyModel("llama", vocab=vocab or {})
    dim, n_head, n_kv, ffn, vocab_size = 4 * head_dim, 4, 2, 96, m.vocab_size
    vocab_size = vocab_size if vocab else 512
    for key, value in (("block_count", n_layer), ("embedding_length", dim),
                       ("attention.head_count", n_head), ("attention.head_count_kv", n_kv),
                       ("feed_forward_length", ffn), ("context_length", 8192)):
        m.meta(key, value)
    if window:
        m.meta("attention.sliding_window", window)
    m.tensor("token_embd.weight", (dim, vocab_size), Q8_0)
    m.norm("output_norm.weight", dim)
    for i in range(n_layer):
        m.norm(f"blk.{i}.attn_norm.weight", dim)
        m.norm(f"blk.{i}.ffn_norm.weight", dim)
        for name, shape in (("attn_q", (dim, dim)), ("attn_k", (dim, n_kv * head_dim)),
                            ("attn_v", (dim, n_kv * head_dim)), ("attn_output", (dim, dim)),
                            ("ffn_gate", (dim, ffn)), ("ffn_up", (dim, ffn)),
                            ("ffn_down", (ffn, dim))):
            m.tensor(f"blk.{i}.{name}.weight", shape, Q8_0 if shape[0] % 32 == 0 else F32)
    return m.write(path)


@pytest.fixture(scope="module")
def smollm(smollm2_path: Path) -> Iterator[Model]:
    """SmolLM2 with a 2048-token context for 2 slots and a q8_0 cache."""
    model = Model.load(smollm2_path, n_ctx=2048, n_slots=2, max_batch=256, kv_type="q8_0")
    yield model
    model.close()


def test_the_loaded_network_holds_exactly_its_plan(smollm: Model, smollm2_path: Path) -> None:
    net, plan = smollm.net, smollm.net.memory
    assert plan == plan_model(smollm2_path, 2048, 2, 256, "q8_0")
    assert plan.kv_type == "q8_0" and plan.kv_note == ""
    assert plan.kv == net.cache.nbytes == sum(a.nbytes for a in net.cache._arrays)
    assert plan.packed == sum(w.packed_bytes for w in matrices(net.weights)) == net.packed_bytes
    assert plan.mapped_blocks + plan.mapped_other == smollm2_path.stat().st_size
    held = sum(b.array.nbytes for b in vars(net.buf).values())
    assert held <= plan.buffers <= held + 4 * MB  # + token arrays and one step's logits
    assert smollm.weight_bytes <= plan.weights


def test_plans_differ_only_in_the_cache_by_type(smollm2_path: Path) -> None:
    plans = {t: plan_model(smollm2_path, 8192, 4, 512, t) for t in ("f16", "q8_0", "q4_0")}
    f16 = plans["f16"]
    assert f16.kv == 30 * 4 * 8192 * 2 * 192 * 2  # 30 layers, 4 slots, K and V, 192 wide f16
    assert plans["q8_0"].kv == f16.kv * 34 // 64
    assert plans["q4_0"].kv == f16.kv * 18 // 64
    assert 1 - plans["q8_0"].kv / f16.kv >= 0.45 and 1 - plans["q4_0"].kv / f16.kv >= 0.70
    for plan in plans.values():
        assert plan.total - plan.kv == f16.total - f16.kv


def test_the_estimate_splits_the_plan_without_losing_a_byte(smollm2_path: Path) -> None:
    plan = plan_model(smollm2_path, 4096, 1, 512, "f16")
    estimate = plan.estimate(cpu_only=True)
    assert estimate.total == plan.total and estimate.cpu_only
    assert estimate.n_layer == 30
    # The repacked copies count: the weights take about twice the file's tensors.
    assert estimate.weights > 1.9 * (smollm2_path.stat().st_size - 2 * MB)
    assert estimate.layer_kv == 4096 * 2 * 192 * 2


def test_sliding_window_layers_cost_only_their_ring(tmp_path: Path) -> None:
    full = plan_model(tiny_llama(tmp_path / "full.gguf", 32), 8192, 2, 64, "q8_0")
    ring = plan_model(tiny_llama(tmp_path / "ring.gguf", 32, window=512), 8192, 2, 64, "q8_0")
    rows, _ = cache_rows(KVLayout(64, 512, 32), 8192, 64)
    assert rows == 512 + 64 - 1
    row_bytes = 64 // 32 * 34
    assert ring.kv == 2 * 2 * 2 * rows * row_bytes  # layers x (K, V) x slots x rows
    assert full.kv == 2 * 2 * 2 * 8192 * row_bytes
    assert ring.total - ring.kv - ring.mapped_other == full.total - full.kv - full.mapped_other


def test_a_model_whose_heads_are_not_whole_blocks_keeps_f16_and_says_why(
        tmp_path: Path, smollm2_path: Path) -> None:
    path = tiny_llama(tmp_path / "h16.gguf", 16, vocab=vocabulary_of(smollm2_path))
    plan = plan_model(path, 1024, 1, 64, "q4_0")
    assert plan.kv_type == "f16" and "head size 16" in plan.kv_note
    assert plan.kv == plan_model(path, 1024, 1, 64, "f16").kv
    model = Model.load(path, n_ctx=1024, max_batch=64, kv_type="q4_0")
    try:
        assert model.net.memory == plan
        assert {layer.kind for layer in model.net.cache.layers} == {KV_TYPES["f16"]}
        assert model.net.forward(Batch.sequence([1, 2, 3])).shape == (1, model.net.vocab_size)
    finally:
        model.close()


def test_cache_type_rules() -> None:
    layouts = [KVLayout(192, 0, 64)] * 3
    assert cache_type_for(layouts, "q8_0") == ("q8_0", "")
    assert cache_type_for(layouts, "q8_0", causal=False)[0] == "f16"  # embeddings, as Ollama
    assert cache_type_for([KVLayout(192)], "q4_0")[0] == "f16"       # head size not given
    assert cache_type_for([KVLayout(96, 0, 48)], "q4_0")[0] == "f16"
    assert cache_type_for([KVLayout(96, 0, 48)], "f16") == ("f16", "")
    with pytest.raises(ValueError):
        cache_type_for(layouts, "q5_1")


def test_plan_fields_add_up() -> None:
    plan = MemoryPlan(kv_type="f16", kv_note="", n_layer=3, mapped_blocks=30, mapped_other=7,
                      packed_blocks=29, packed_other=5, kv=11, buffers=13, pool=2)
    estimate = plan.estimate(cpu_only=False)
    assert plan.total == 30 + 7 + 29 + 5 + 11 + 13 + 2 == estimate.total
    assert estimate.layer_weights == (30 + 29) // 3 and estimate.layer_kv == 11 // 3
    assert np.isclose(estimate.kv + estimate.compute, 11 + 15)


def test_the_prompt_cache_budget_is_in_the_plan_except_for_an_encoder(
        smollm2_path: Path, bert_path: Path) -> None:
    base = plan_model(smollm2_path, 1024)
    cached = plan_model(smollm2_path, 1024, prompt_cache=64 << 20)
    assert cached.prompt_cache == 64 << 20 and cached.total - base.total == 64 << 20
    assert cached.estimate(cpu_only=True).total == cached.total
    assert plan_model(bert_path, 512, prompt_cache=64 << 20).prompt_cache == 0
