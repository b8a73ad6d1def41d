"""phi3: llama's block with the q, k and v projections fused into one matrix (`attn_qkv`, rows
q | k | v) and the gate and up projections into another (`ffn_up`, rows gate | up), RoPE in
NeoX order over the first rope.dimension_count dims of each head (Phi-4-mini rotates 3/4), and
LongRoPE where the file has its factors (Phi-3 128k, Phi-3.5, Phi-4-mini).

LongRoPE divides each rotary frequency by a per-frequency factor: the short factors serve a
context up to rope.scaling.original_context_length, the long ones anything beyond. The choice
is made once per loaded model, from the context it was loaded with (as llama.cpp does), never
per sequence length: a cache whose keys were rotated under two factor sets would be garbage.
The rotated dims of q and k are also scaled by an attention factor: rope.scaling.attn_factor
when the file says it, else LongRoPE's own rule, sqrt(1 + ln(s) / ln(original)) for the
extension s = context_length / original (1 when s <= 1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from trio_llm.arch import hparams, llama
from trio_llm.arch.runtime import Network, Shape
from trio_llm.arch.weights import Weight, WeightLoader
from trio_llm.formats.gguf_file import GGUFFile

CAPABILITIES = frozenset({"completion"})


@dataclass(frozen=True)
class Params(llama.Params):
    """llama's hyper-parameters, and the context LongRoPE's short factors serve."""

    original_context: int  # rope.scaling.original_context_length

    @property
    def shape(self) -> Shape:
        base = super().shape
        qkv_dim = (self.heads.n_head + 2 * self.heads.n_kv_head) * self.heads.head_dim
        return dataclasses.replace(base, buffers={**base.buffers, "qkv": qkv_dim,
                                                  "gate_up": 2 * self.ffn_dim})


def longrope_attn_factor(context: int, original: int) -> float:
    """LongRoPE's attention factor for extending `original` positions to `context`."""
    s = context / original
    return math.sqrt(1.0 + math.log(s) / math.log(original)) if s > 1 and original > 1 else 1.0


def read_params(gguf: GGUFFile) -> Params:
    p = llama.read_params(gguf)
    meta = hparams.Metadata(gguf, "phi3")
    original = meta.count("rope.scaling.original_context_length", p.context_length,
                          high=hparams.MAX_CONTEXT)
    longrope = "rope_factors_long.weight" in gguf.tensors
    attn_factor = meta.positive("rope.scaling.attn_factor",
                                longrope_attn_factor(p.context_length, original) if longrope
                                else 1.0)
    rope = dataclasses.replace(p.rope, neox=True, attn_factor=attn_factor)
    fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    return Params(**{**fields, "rope": rope}, original_context=original)


@dataclass(frozen=True)
class Layer:
    """The tensors of one block, named as in the GGUF (`blk.N.<name>.weight`)."""

    attn_norm: Any         # [dim] f32
    attn_qkv: Weight       # [(n_head + 2 n_kv_head) * head_dim][dim]: q | k | v
    attn_output: Weight    # [dim][n_head * head_dim]
    ffn_norm: Any          # [dim] f32
    ffn_up: Weight         # [2 ffn_dim][dim]: gate | up
    ffn_down: Weight       # [dim][ffn_dim]


@dataclass(frozen=True)
class Weights:
    token_embd: Weight          # [vocab][dim]
    output_norm: Any            # [dim] f32
    output: Weight              # [vocab][dim]; token_embd itself when tied
    rope_factors_long: Any      # [n_rot / 2] f32 LongRoPE factors beyond original_context, or NULL
    rope_factors_short: Any     # [n_rot / 2] f32 LongRoPE factors up to it, or NULL
    layers: list[Layer]


def load_weights(load: WeightLoader, p: Params) -> Weights:
    q_dim = p.heads.n_head * p.heads.head_dim
    qkv_dim = q_dim + 2 * p.heads.n_kv_head * p.heads.head_dim
    token_embd = load.get("token_embd.weight", p.dim, p.vocab_size)
    return Weights(
        token_embd=token_embd,
        output_norm=load.floats("output_norm.weight", p.dim),
        output=load.get("output.weight", p.dim, p.vocab_size) if load.has("output.weight")
        else token_embd,
        rope_factors_long=load.optional_floats("rope_factors_long.weight", p.rope.n_rot // 2),
        rope_factors_short=load.optional_floats("rope_factors_short.weight", p.rope.n_rot // 2),
        layers=[Layer(
            attn_norm=load.floats(f"blk.{i}.attn_norm.weight", p.dim),
            attn_qkv=load.get(f"blk.{i}.attn_qkv.weight", p.dim, qkv_dim),
            attn_output=load.get(f"blk.{i}.attn_output.weight", q_dim, p.dim),
            ffn_norm=load.floats(f"blk.{i}.ffn_norm.weight", p.dim),
            ffn_up=load.get(f"blk.{i}.ffn_up.weight", p.dim, 2 * p.ffn_dim),
            ffn_down=load.get(f"blk.{i}.ffn_down.weight", p.ffn_dim, p.dim),
        ) for i in range(p.n_layer)])


def forward(rt: Network, w: Weights, p: Params) -> None:
    """Token ids to the final normalised hidden states, in rt.buf.x."""
    b, h = rt.buf, p.heads
    long = rt.n_ctx > p.original_context
    rope = dataclasses.replace(p.rope, factors=w.rope_factors_long if long
                               else w.rope_factors_short)
    rt.embed(w.token_embd, b.x)
    rt.trace("token_embd", -1, b.x)
    for i, layer in enumerate(w.layers):
        rt.rmsnorm(b.x, layer.attn_norm, b.xn, p.norm_eps)
        rt.linear(layer.attn_qkv, b.xn, b.qkv)
        rt.split(b.qkv, (b.q, b.k, b.v))
        rt.rope(b.q, h.n_head, rope)
        rt.rope(b.k, h.n_kv_head, rope)
        rt.attention(i, b.q, b.k, b.v, b.att, h)
        rt.trace("attn_out", i, b.att)
        rt.linear(layer.attn_output, b.att, b.tmp)
        rt.add(b.x, b.tmp)
        rt.rmsnorm(b.x, layer.ffn_norm, b.xn, p.norm_eps)
        rt.linear(layer.ffn_up, b.xn, b.gate_up)
        rt.split(b.gate_up, (b.gate, b.up))
        rt.swiglu(b.gate, b.up, b.gate)
        rt.linear(layer.ffn_down, b.gate, b.tmp)
        rt.add(b.x, b.tmp)
        rt.trace("layer_out", i, b.x)
    rt.rmsnorm(b.x, w.output_norm, b.x, p.norm_eps)
