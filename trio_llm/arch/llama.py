"""llama: RMSNorm, RoPE, grouped-query attention, SwiGLU feed-forward (SmolLM2, Llama 2/3,
Mistral-style files with a sliding window).

Reads like the paper, one line per operation; the shared runtime (arch/runtime.py) does the
batching, the matmul paths and the output head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trio_llm.arch import hparams
from trio_llm.arch.runtime import Heads, Network, Rope, Shape
from trio_llm.arch.weights import Weight, WeightLoader
from trio_llm.engine.kv_cache import KVLayout
from trio_llm.formats.gguf_file import GGUFFile

CAPABILITIES = frozenset({"completion"})


@dataclass(frozen=True)
class Params:
    """Hyper-parameters, from the GGUF keys `<arch>.*` and the tensors' shapes."""

    n_layer: int
    dim: int
    heads: Heads
    ffn_dim: int
    vocab_size: int
    context_length: int
    rope: Rope
    norm_eps: float
    window: int            # > 0: every layer attends to this many positions (Mistral)

    @property
    def shape(self) -> Shape:
        q_dim = self.heads.n_head * self.heads.head_dim
        kv_dim = self.heads.n_kv_head * self.heads.head_dim
        return Shape(
            n_layer=self.n_layer, dim=self.dim, vocab_size=self.vocab_size,
            context_length=self.context_length,
            kv_layers=(KVLayout(kv_dim, self.window, self.heads.head_dim),) * self.n_layer,
            buffers={"x": self.dim, "xn": self.dim, "q": q_dim, "k": kv_dim, "v": kv_dim,
                     "att": q_dim, "tmp": self.dim, "gate": self.ffn_dim, "up": self.ffn_dim})


def read_params(gguf: GGUFFile) -> Params:
    arch = str(gguf.metadata.get("general.architecture", "llama"))
    meta = hparams.Metadata(gguf, arch)
    dim = meta.count("embedding_length")
    n_head = meta.count("attention.head_count")
    n_kv_head = meta.count("attention.head_count_kv", n_head)
    hparams.heads(n_head, n_kv_head, arch)
    head_dim = meta.count("attention.key_length", dim // n_head)
    n_rot = meta.count("rope.dimension_count", head_dim)
    hparams.rope_dims(n_rot, head_dim, arch)
    return Params(
        n_layer=meta.count("block_count"), dim=dim,
        heads=Heads.of(n_head, n_kv_head, head_dim), ffn_dim=meta.count("feed_forward_length"),
        vocab_size=hparams.vocab_size(gguf, dim), context_length=meta.context_length(),
        rope=Rope(n_rot, meta.positive("rope.freq_base", 10000.0), meta.linear_rope_scale()),
        norm_eps=meta.positive("attention.layer_norm_rms_epsilon", 1e-5, zero=True),
        window=meta.count("attention.sliding_window", 0, low=0, high=hparams.MAX_CONTEXT))


@dataclass(frozen=True)
class Layer:
    """The tensors of one block, named as in the GGUF (`blk.N.<name>.weight`)."""

    attn_norm: Any         # [dim] f32
    attn_q: Weight         # [n_head * head_dim][dim]
    attn_k: Weight         # [n_kv_head * head_dim][dim]
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
    output: Weight         # [vocab][dim]; token_embd itself when tied
    rope_freqs: Any        # [n_rot / 2] f32 frequency factors (Llama 3.1), or NULL
    layers: list[Layer]


def load_weights(load: WeightLoader, p: Params) -> Weights:
    q_dim, kv_dim = p.heads.n_head * p.heads.head_dim, p.heads.n_kv_head * p.heads.head_dim
    token_embd = load.get("token_embd.weight", p.dim, p.vocab_size)
    return Weights(
        token_embd=token_embd,
        output_norm=load.floats("output_norm.weight", p.dim),
        output=load.get("output.weight", p.dim, p.vocab_size) if load.has("output.weight")
        else token_embd,
        rope_freqs=load.optional_floats("rope_freqs.weight", p.rope.n_rot // 2),
        layers=[Layer(
            attn_norm=load.floats(f"blk.{i}.attn_norm.weight", p.dim),
            attn_q=load.get(f"blk.{i}.attn_q.weight", p.dim, q_dim),
            attn_k=load.get(f"blk.{i}.attn_k.weight", p.dim, kv_dim),
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
    rope = Rope(p.rope.n_rot, p.rope.base, p.rope.freq_scale, factors=w.rope_freqs)
    rt.embed(w.token_embd, b.x)
    rt.trace("token_embd", -1, b.x)
    for i, layer in enumerate(w.layers):
        rt.rmsnorm(b.x, layer.attn_norm, b.xn, p.norm_eps)
        rt.linear(layer.attn_q, b.xn, b.q)
        rt.linear(layer.attn_k, b.xn, b.k)
        rt.linear(layer.attn_v, b.xn, b.v)
        rt.rope(b.q, h.n_head, rope)
        rt.rope(b.k, h.n_kv_head, rope)
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
