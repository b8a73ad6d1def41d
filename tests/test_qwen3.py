"""The qwen3 architecture on a tiny random-weight GGUF, against a float64 reference written from
its definition: llama's block with per-head RMSNorm of q and k before NeoX-order RoPE, no
biases, and a head size that is not dim / heads."""

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

DIM, N_HEAD, N_KV_HEAD, HEAD_DIM, FFN, N_LAYER = 64, 4, 2, 32, 128, 2
Q_DIM, KV_DIM = N_HEAD * HEAD_DIM, N_KV_HEAD * HEAD_DIM
EPS, BASE = 1e-6, 1e6


def qwen3_model(smollm2_path: Path) -> TinyModel:
    """A 2-layer qwen3 of random weights with SmolLM2's vocabulary (about 5 MB)."""
    m = TinyModel("qwen3", vocabulary_of(smollm2_path), seed=6)
    for key, value in {"block_count": N_LAYER, "context_length": 40960, "embedding_length": DIM,
                       "feed_forward_length": FFN, "attention.head_count": N_HEAD,
                       "attention.head_count_kv": N_KV_HEAD, "attention.key_length": HEAD_DIM,
                       "attention.value_length": HEAD_DIM, "rope.freq_base": BASE,
                       "attention.layer_norm_rms_epsilon": EPS}.items():
        m.meta(key, value)
    m.tensor("token_embd.weight", (DIM, m.vocab_size), Kind.Q8_0, scale=1.0)  # tied output
    m.norm("output_norm.weight", DIM)
    for i in range(N_LAYER):
        m.norm(f"blk.{i}.attn_norm.weight", DIM)
        m.tensor(f"blk.{i}.attn_q.weight", (DIM, Q_DIM), Kind.Q8_0)
        m.norm(f"blk.{i}.attn_q_norm.weight", HEAD_DIM)
        m.tensor(f"blk.{i}.attn_k.weight", (DIM, KV_DIM), Kind.Q4_0)
        m.norm(f"blk.{i}.attn_k_norm.weight", HEAD_DIM)
        m.tensor(f"blk.{i}.attn_v.weight", (DIM, KV_DIM), Kind.Q5_0)
        m.tensor(f"blk.{i}.attn_output.weight", (Q_DIM, DIM), Kind.Q8_0)
        m.norm(f"blk.{i}.ffn_norm.weight", DIM)
        m.tensor(f"blk.{i}.ffn_gate.weight", (DIM, FFN), Kind.Q8_0)
        m.tensor(f"blk.{i}.ffn_up.weight", (DIM, FFN), Kind.Q4_0)
        m.tensor(f"blk.{i}.ffn_down.weight", (FFN, DIM), Kind.Q5_0)
    return m


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Tiny:
    return Tiny.write(qwen3_model(smollm2_path), tmp_path_factory.mktemp("qwen3") / "qwen3.gguf")


@pytest.fixture(scope="module")
def model(tiny: Tiny) -> Model:
    return Model.load(tiny.path, n_ctx=64, n_slots=2, n_threads=2)


@pytest.fixture(scope="module")
def reference(tiny: Tiny) -> Forward:
    def forward(tokens: list[int]) -> np.ndarray:
        """x += o(attention(rope(qnorm(q(h))), rope(knorm(k(h))), v(h))); x += ffn(x)."""
        n, w = len(tokens), tiny.w
        x = w["token_embd.weight"][tokens]
        for i in range(N_LAYER):
            t = tiny.block(i)
            h = rmsnorm(x, t["attn_norm.weight"], EPS)
            q = rmsnorm((h @ t["attn_q.weight"].T).reshape(n, N_HEAD, HEAD_DIM),
                        t["attn_q_norm.weight"], EPS)
            k = rmsnorm((h @ t["attn_k.weight"].T).reshape(n, N_KV_HEAD, HEAD_DIM),
                        t["attn_k_norm.weight"], EPS)
            v = (h @ t["attn_v.weight"].T).reshape(n, N_KV_HEAD, HEAD_DIM)
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
