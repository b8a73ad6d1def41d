"""The phi3 architecture on a tiny random-weight GGUF, against a float64 reference written from
its definition: fused q|k|v and gate|up projections, partial NeoX RoPE, LongRoPE factors (long
beyond the original context, short within it) and their attention factor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.reference_decoder import (
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
from trio_llm.arch import phi3
from trio_llm.engine.model import Model
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.testing.tiny_gguf import GGMLQuantizationType as Kind
from trio_llm.testing.tiny_gguf import TinyModel, vocabulary_of

DIM, N_HEAD, N_KV_HEAD, HEAD_DIM, N_ROT, FFN, N_LAYER = 64, 2, 1, 32, 24, 128, 2
Q_DIM, KV_DIM = N_HEAD * HEAD_DIM, N_KV_HEAD * HEAD_DIM
EPS, BASE, ORIGINAL, ATTN_FACTOR = 1e-5, 10000.0, 32, 1.2


def phi3_model(vocab: dict, *, attn_factor: float | None) -> TinyModel:
    m = TinyModel("phi3", vocab, seed=3)
    for key, value in {"block_count": N_LAYER, "context_length": 4096, "embedding_length": DIM,
                       "feed_forward_length": FFN, "attention.head_count": N_HEAD,
                       "attention.head_count_kv": N_KV_HEAD, "rope.dimension_count": N_ROT,
                       "rope.freq_base": BASE, "attention.layer_norm_rms_epsilon": EPS,
                       "rope.scaling.original_context_length": ORIGINAL}.items():
        m.meta(key, value)
    if attn_factor is not None:
        m.meta("rope.scaling.attn_factor", attn_factor)
    rng = np.random.default_rng(30)
    m.tensor("rope_factors_long.weight", (N_ROT // 2,),
             values=np.sort(rng.uniform(1.0, 40.0, N_ROT // 2)))
    m.tensor("rope_factors_short.weight", (N_ROT // 2,), values=rng.uniform(1.0, 1.1, N_ROT // 2))
    return m


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Tiny:
    m = phi3_model(vocabulary_of(smollm2_path), attn_factor=ATTN_FACTOR)
    m.tensor("token_embd.weight", (DIM, m.vocab_size), Kind.Q8_0, scale=1.0)
    m.norm("output_norm.weight", DIM)
    m.tensor("output.weight", (DIM, m.vocab_size), Kind.Q8_0, scale=1.0)
    for i in range(N_LAYER):
        m.norm(f"blk.{i}.attn_norm.weight", DIM)
        m.tensor(f"blk.{i}.attn_qkv.weight", (DIM, Q_DIM + 2 * KV_DIM), Kind.Q8_0)
        m.tensor(f"blk.{i}.attn_output.weight", (Q_DIM, DIM), Kind.Q5_0)
        m.norm(f"blk.{i}.ffn_norm.weight", DIM)
        m.tensor(f"blk.{i}.ffn_up.weight", (DIM, 2 * FFN), Kind.Q4_0)
        m.tensor(f"blk.{i}.ffn_down.weight", (FFN, DIM), Kind.Q8_0)
    return Tiny.write(m, tmp_path_factory.mktemp("phi3") / "phi3.gguf")


def reference(tiny: Tiny, factors: str) -> Forward:
    """The forward pass with the LongRoPE factors `rope_factors_<factors>`."""
    w, f = tiny.w, tiny.w[f"rope_factors_{factors}.weight"]

    def turn(x: np.ndarray, heads: int) -> np.ndarray:
        x = x.reshape(len(x), heads, HEAD_DIM)
        return rope(x, N_ROT, BASE, neox=True, factors=f, attn_factor=ATTN_FACTOR)

    def forward(tokens: list[int]) -> np.ndarray:
        """x += o(attention(rope(q), rope(k), v)) with q|k|v = qkv(h); x += down(silu(g) * u)
        with g|u = up(h)."""
        n = len(tokens)
        x = w["token_embd.weight"][tokens]
        for i in range(N_LAYER):
            t = tiny.block(i)
            h = rmsnorm(x, t["attn_norm.weight"], EPS)
            qkv = h @ t["attn_qkv.weight"].T
            q, k, v = qkv[:, :Q_DIM], qkv[:, Q_DIM:Q_DIM + KV_DIM], qkv[:, Q_DIM + KV_DIM:]
            att = attention(turn(q, N_HEAD), turn(k, N_KV_HEAD), v.reshape(n, N_KV_HEAD,
                                                                           HEAD_DIM))
            x = x + att @ t["attn_output.weight"].T
            h = rmsnorm(x, t["ffn_norm.weight"], EPS)
            gate_up = h @ t["ffn_up.weight"].T
            x = x + (silu(gate_up[:, :FFN]) * gate_up[:, FFN:]) @ t["ffn_down.weight"].T
        return rmsnorm(x, w["output_norm.weight"], EPS) @ w["output.weight"].T

    return forward


@pytest.fixture(scope="module")
def model(tiny: Tiny) -> Model:
    """Loaded with a context beyond the original 32 positions: the long factors."""
    return Model.load(tiny.path, n_ctx=64, n_slots=2, n_threads=2)


def test_last_logits_of_20_tokens_match_float64_reference_with_long_factors(
        model: Model, tiny: Tiny) -> None:
    check_prompt(model, reference(tiny, "long"))


def test_within_the_original_context_the_short_factors_rotate(tiny: Tiny) -> None:
    short, long = reference(tiny, "short"), reference(tiny, "long")
    assert relative_error(short(PROMPT_20)[-1], long(PROMPT_20)[-1]) > 0.1  # the choice shows
    check_prompt(Model.load(tiny.path, n_ctx=ORIGINAL, n_threads=2), short)


def test_a_decode_step_after_the_prompt_matches_the_reference(model: Model, tiny: Tiny) -> None:
    check_decode_step(model, reference(tiny, "long"))


def test_a_batch_of_two_sequences_equals_each_alone(model: Model) -> None:
    check_batch_of_two(model)


def test_without_an_attn_factor_key_longrope_computes_its_own(tmp_path: Path) -> None:
    m = phi3_model({}, attn_factor=None)
    m.tensor("token_embd.weight", (DIM, m.vocab_size))
    gguf = read_gguf(m.write(tmp_path / "phi3.gguf"))
    try:
        params = phi3.read_params(gguf)
    finally:
        gguf.close()
    assert params.rope.attn_factor == pytest.approx(math.sqrt(1 + math.log(4096 / 32)
                                                              / math.log(32)))
    assert params.rope.neox and params.rope.n_rot == N_ROT and params.original_context == ORIGINAL
