"""Mistral-style llama files: every layer attends to a sliding window of the last
llama.attention.sliding_window positions, and keeps only that window (plus one call's tokens)
in a ring. A tiny random-weight GGUF against a float64 reference with the window mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.reference_decoder import (
    OTHER_PROMPT,
    PROMPT_20,
    Forward,
    Tiny,
    attention,
    check_batch_of_two,
    check_decode_step,
    check_prompt,
    relative_error,
    rmsnorm,
    rope,
    silu,
)
from trio_llm.engine.model import Model
from trio_llm.testing.tiny_gguf import GGMLQuantizationType as Kind
from trio_llm.testing.tiny_gguf import TinyModel, vocabulary_of

DIM, N_HEAD, N_KV_HEAD, FFN, N_LAYER = 64, 4, 2, 128, 2
HEAD_DIM, KV_DIM = DIM // N_HEAD, N_KV_HEAD * DIM // N_HEAD
EPS, BASE, WINDOW = 1e-5, 10000.0, 16
N_CTX, MAX_BATCH = 64, 8
PROMPT_40 = PROMPT_20 + PROMPT_20[::-1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Tiny:
    m = TinyModel("llama", vocabulary_of(smollm2_path), seed=5)
    for key, value in {"block_count": N_LAYER, "context_length": 32768, "embedding_length": DIM,
                       "feed_forward_length": FFN, "attention.head_count": N_HEAD,
                       "attention.head_count_kv": N_KV_HEAD, "rope.freq_base": BASE,
                       "attention.layer_norm_rms_epsilon": EPS,
                       "attention.sliding_window": WINDOW}.items():
        m.meta(key, value)
    m.tensor("token_embd.weight", (DIM, m.vocab_size), Kind.Q8_0, scale=1.0)
    m.norm("output_norm.weight", DIM)
    m.tensor("output.weight", (DIM, m.vocab_size), Kind.Q8_0, scale=1.0)
    for i in range(N_LAYER):
        m.norm(f"blk.{i}.attn_norm.weight", DIM)
        m.tensor(f"blk.{i}.attn_q.weight", (DIM, DIM), Kind.Q8_0)
        m.tensor(f"blk.{i}.attn_k.weight", (DIM, KV_DIM), Kind.Q8_0)
        m.tensor(f"blk.{i}.attn_v.weight", (DIM, KV_DIM), Kind.Q5_0)
        m.tensor(f"blk.{i}.attn_output.weight", (DIM, DIM), Kind.Q4_0)
        m.norm(f"blk.{i}.ffn_norm.weight", DIM)
        m.tensor(f"blk.{i}.ffn_gate.weight", (DIM, FFN), Kind.Q4_0)
        m.tensor(f"blk.{i}.ffn_up.weight", (DIM, FFN), Kind.Q5_0)
        m.tensor(f"blk.{i}.ffn_down.weight", (FFN, DIM), Kind.Q8_0)
    return Tiny.write(m, tmp_path_factory.mktemp("mistral") / "mistral.gguf")


@pytest.fixture(scope="module")
def model(tiny: Tiny) -> Model:
    """Chunks of 8 tokens, so a 40-token prompt wraps the ring several times."""
    return Model.load(tiny.path, n_ctx=N_CTX, n_slots=2, n_threads=2, max_batch=MAX_BATCH)


def reference(tiny: Tiny, window: int) -> Forward:
    def forward(tokens: list[int]) -> np.ndarray:
        """llama's block (normal-order RoPE); attention sees the last `window` positions."""
        n, w = len(tokens), tiny.w
        x = w["token_embd.weight"][tokens]
        for i in range(N_LAYER):
            t = tiny.block(i)
            h = rmsnorm(x, t["attn_norm.weight"], EPS)
            q = rope((h @ t["attn_q.weight"].T).reshape(n, N_HEAD, HEAD_DIM), HEAD_DIM, BASE,
                     neox=False)
            k = rope((h @ t["attn_k.weight"].T).reshape(n, N_KV_HEAD, HEAD_DIM), HEAD_DIM,
                     BASE, neox=False)
            v = (h @ t["attn_v.weight"].T).reshape(n, N_KV_HEAD, HEAD_DIM)
            x = x + attention(q, k, v, window) @ t["attn_output.weight"].T
            h = rmsnorm(x, t["ffn_norm.weight"], EPS)
            gate, up = h @ t["ffn_gate.weight"].T, h @ t["ffn_up.weight"].T
            x = x + (silu(gate) * up) @ t["ffn_down.weight"].T
        return rmsnorm(x, w["output_norm.weight"], EPS) @ w["output.weight"].T

    return forward


def test_a_prompt_longer_than_the_window_matches_the_windowed_reference(
        model: Model, tiny: Tiny) -> None:
    windowed, full = reference(tiny, WINDOW), reference(tiny, 0)
    assert relative_error(windowed(PROMPT_40)[-1], full(PROMPT_40)[-1]) > 0.1  # the mask shows
    check_prompt(model, windowed, PROMPT_40)


def test_a_decode_step_past_the_window_matches_the_reference(model: Model, tiny: Tiny) -> None:
    check_decode_step(model, reference(tiny, WINDOW), PROMPT_40)


def test_a_batch_of_two_long_sequences_equals_each_alone(model: Model) -> None:
    check_batch_of_two(model, PROMPT_40, OTHER_PROMPT * 3)


def test_each_layer_keeps_a_ring_of_the_window_not_the_context(model: Model) -> None:
    for layer in model.net.cache.layers:
        assert layer.window == WINDOW
        assert layer.n_cache == WINDOW + MAX_BATCH - 1 < N_CTX
