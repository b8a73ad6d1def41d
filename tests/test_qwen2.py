"""The qwen2 architecture on a tiny random-weight GGUF, against a float64 reference written from
its definition: llama's block with q/k/v biases and NeoX-order RoPE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.reference_decoder import (
    Forward,
    Tiny,
    attention,
    check_batch_of_two,
    check_decode_step,
    check_prompt,
    rmsnorm,
    rope,
    silu,
)
from trio_llm.engine.model import Model
from trio_llm.testing.tiny_gguf import GGMLQuantizationType as Kind
from trio_llm.testing.tiny_gguf import TinyModel, vocabulary_of

DIM, N_HEAD, N_KV_HEAD, FFN, N_LAYER = 64, 4, 2, 128, 2
HEAD_DIM, KV_DIM = DIM // N_HEAD, N_KV_HEAD * DIM // N_HEAD
EPS, BASE = 1e-6, 1e6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Tiny:
    m = TinyModel("qwen2", vocabulary_of(smollm2_path), seed=2)
    for key, value in {"block_count": N_LAYER, "context_length": 32768, "embedding_length": DIM,
                       "feed_forward_length": FFN, "attention.head_count": N_HEAD,
                       "attention.head_count_kv": N_KV_HEAD, "rope.freq_base": BASE,
                       "attention.layer_norm_rms_epsilon": EPS}.items():
        m.meta(key, value)
    m.tensor("token_embd.weight", (DIM, m.vocab_size), Kind.Q8_0, scale=1.0)  # tied output
    m.norm("output_norm.weight", DIM)
    for i in range(N_LAYER):
        m.norm(f"blk.{i}.attn_norm.weight", DIM)
        for name, rows, kind in (("attn_q", DIM, Kind.Q8_0), ("attn_k", KV_DIM, Kind.Q5_0),
                                 ("attn_v", KV_DIM, Kind.Q4_0)):
            m.tensor(f"blk.{i}.{name}.weight", (DIM, rows), kind)
            m.tensor(f"blk.{i}.{name}.bias", (rows,), scale=0.5)
        m.tensor(f"blk.{i}.attn_output.weight", (DIM, DIM), Kind.Q4_1)
        m.norm(f"blk.{i}.ffn_norm.weight", DIM)
        m.tensor(f"blk.{i}.ffn_gate.weight", (DIM, FFN), Kind.Q5_0)
        m.tensor(f"blk.{i}.ffn_up.weight", (DIM, FFN), Kind.Q8_0)
        m.tensor(f"blk.{i}.ffn_down.weight", (FFN, DIM), Kind.Q4_0)
    return Tiny.write(m, tmp_path_factory.mktemp("qwen2") / "qwen2.gguf")


@pytest.fixture(scope="module")
def model(tiny: Tiny) -> Model:
    return Model.load(tiny.path, n_ctx=64, n_slots=2, n_threads=2)


@pytest.fixture(scope="module")
def reference(tiny: Tiny) -> Forward:
    def forward(tokens: list[int]) -> np.ndarray:
        """x += o(attention(rope(q(h) + bq), rope(k(h) + bk), v(h) + bv)); x += ffn(x)."""
        n, w = len(tokens), tiny.w
        x = w["token_embd.weight"][tokens]
        for i in range(N_LAYER):
            t = tiny.block(i)
            h = rmsnorm(x, t["attn_norm.weight"], EPS)
            q = (h @ t["attn_q.weight"].T + t["attn_q.bias"]).reshape(n, N_HEAD, HEAD_DIM)
            k = (h @ t["attn_k.weight"].T + t["attn_k.bias"]).reshape(n, N_KV_HEAD, HEAD_DIM)
            v = (h @ t["attn_v.weight"].T + t["attn_v.bias"]).reshape(n, N_KV_HEAD, HEAD_DIM)
            q, k = rope(q, HEAD_DIM, BASE, neox=True), rope(k, HEAD_DIM, BASE, neox=True)
            x = x + attention(q, k, v) @ t["attn_output.weight"].T
            h = rmsnorm(x, t["ffn_norm.weight"], EPS)
            gate, up = h @ t["ffn_gate.weight"].T, h @ t["ffn_up.weight"].T
            x = x + (silu(gate) * up) @ t["ffn_down.weight"].T
        return rmsnorm(x, w["output_norm.weight"], EPS) @ w["token_embd.weight"].T

    return forward


def test_last_logits_of_20_tokens_match_float64_reference(model: Model,
                                                           reference: Forward) -> None:
    check_prompt(model, reference)


def test_a_decode_step_after_the_prompt_matches_the_reference(model: Model,
                                                               reference: Forward) -> None:
    check_decode_step(model, reference)


def test_a_batch_of_two_sequences_equals_each_alone(model: Model) -> None:
    check_batch_of_two(model)
