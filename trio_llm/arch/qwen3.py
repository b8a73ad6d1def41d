"""qwen3: llama's network with RMSNorm over each head of the queries and keys before RoPE
(QK-norm), RoPE in NeoX order (pairs i and i + head_dim/2) and no biases, as Qwen3 is. Its head
size (attention.key_length, 128) is not dim / heads.

The hyper-parameters are llama's, read from the `qwen3.*` keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trio_llm.arch import llama
from trio_llm.arch.runtime import Network
from trio_llm.arch.weights import Weight, WeightLoader
from trio_llm.formats.gguf_file import GGUFFile

CAPABILITIES = frozenset({"completion"})

Params = llama.Params


def read_params(gguf: GGUFFile) -> Params:
    p = llama.read_params(gguf)
    return dataclasses.replace(p, rope=dataclasses.replace(p.rope, neox=True))


@dataclass(frozen=True)
class Layer:
    """The tensors of one block, named as in the GGUF (`blk.N.<name>.weight`)."""

    attn_norm: Any         # [dim] f32
    attn_q: Weight         # [n_head * head_dim][dim]
    attn_q_norm: Any       # [head_dim] f32, over each query head
    attn_k: Weight         # [n_kv_head * head_dim][dim]
    attn_k_norm: Any       # [head_dim] f32, over each key head
    attn_v: Weight         # [n_kv_head * head_dim][dim]
    attn_output: Weight    # [dim][n_head * head_dim]
    ffn_norm: Any          # [dim] f32
    ffn_gate: Weight       # [ffn_dim][dim]
    ffn_up: Weight         # [ffn_dim][dim]
    ffn_down: Weight       # [dim][ffn_dim]


@dataclass(frozen=True)
class Weights:
    token_embd: Weight     # [vocab][dim]
    output_norm: Any       # [dim] f32
    output: Weight         # [vocab][dim]; token_embd itself when tied (Qwen3 0.6B-4B)
    layers: list[Layer]


def load_weights(load: WeightLoader, p: Params) -> Weights:
    hd = p.heads.head_dim
    q_dim, kv_dim = p.heads.n_head * hd, p.heads.n_kv_head * hd
    token_embd = load.get("token_embd.weight", p.dim, p.vocab_size)
    return Weights(
        token_embd=token_embd,
        output_norm=load.floats("output_norm.weight", p.dim),
        output=load.get("output.weight", p.dim, p.vocab_size) if load.has("output.weight")
        else token_embd,
        layers=[Layer(
            attn_norm=load.floats(f"blk.{i}.attn_norm.weight", p.dim),
            attn_q=load.get(f"blk.{i}.attn_q.weight", p.dim, q_dim),
            attn_q_norm=load.floats(f"blk.{i}.attn_q_norm.weight", hd),
            attn_k=load.get(f"blk.{i}.attn_k.weight", p.dim, kv_dim),
            attn_k_norm=load.floats(f"blk.{i}.attn_k_norm.weight", hd),
            attn_v=load.get(f"blk.{i}.attn_v.weight", p.dim, kv_dim),
            attn_output=load.get(f"blk.{i}.attn_output.weight", q_dim, p.dim),
            ffn_norm=load.floats(f"blk.{i}.ffn_norm.weight", p.dim),
            ffn_gate=load.get(f"blk.{i}.ffn_gate.weight", p.dim, p.ffn_dim),
            ffn_up=load.get(f"blk.{i}.ffn_up.weight", p.dim, p.ffn_dim),
            ffn_down=load.get(f"blk.{i}.ffn_down.weight", p.ffn_dim, p.dim),
        ) for i in range(p.n_layer)])


def forward(rt: Network, w: Weights, p: Params) -> None:
    """Token ids to the final normalised hidden states, in rt.buf.x."""
    b, h = rt.buf, p.heads
    rt.embed(w.token_embd, b.x)
    rt.trace("token_embd", -1, b.x)
    for i, layer in enumerate(w.layers):
        rt.rmsnorm(b.x, layer.attn_norm, b.xn, p.norm_eps)
        rt.linear(layer.attn_q, b.xn, b.q)
        rt.linear(layer.attn_k, b.xn, b.k)
        rt.linear(layer.attn_v, b.xn, b.v)
        rt.rmsnorm(b.q, layer.attn_q_norm, b.q, p.norm_eps, heads=h.n_head)
        rt.rmsnorm(b.k, layer.attn_k_norm, b.k, p.norm_eps, heads=h.n_kv_head)
        rt.rope(b.q, h.n_head, p.rope)
        rt.rope(b.k, h.n_kv_head, p.rope)
        rt.attention(i, b.q, b.k, b.v, b.att, h)
        rt.trace("attn_out", i, b.att)
        rt.linear(layer.attn_output, b.att, b.tmp)
        rt.add(b.x, b.tmp)
        rt.rmsnorm(b.x, layer.ffn_norm, b.xn, p.norm_eps)
        rt.linear(layer.ffn_gate, b.xn, b.gate)
        rt.linear(layer.ffn_up, b.xn, b.up)
        rt.swiglu(b.gate, b.up, b.gate)
        rt.linear(layer.ffn_down, b.gate, b.tmp)
        rt.add(b.x, b.tmp)
        rt.trace("layer_out", i, b.x)
    rt.rmsnorm(b.x, w.output_norm, b.x, p.norm_eps)
