"""nomic-bert: BERT with rotary positions and a SwiGLU feed-forward (nomic-embed-text).

Word and token-type embeddings, LayerNorm; then per block: a fused QKV projection, rotary
positions (NeoX halves, over the whole head) on q and k, attention over the whole sequence,
residual, LayerNorm; SwiGLU feed-forward, residual, LayerNorm. No biases, no absolute
positions. Pooling as `nomic-bert.pooling_type` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trio_llm.arch import hparams
from trio_llm.arch.bert import Encoder, Norm, read_encoder
from trio_llm.arch.runtime import Network, Rope, Shape
from trio_llm.arch.weights import Weight, WeightLoader
from trio_llm.formats.gguf_file import GGUFFile

CAPABILITIES = frozenset({"embedding"})


@dataclass(frozen=True)
class Params:
    """Hyper-parameters, from the GGUF keys `nomic-bert.*` and the tensors' shapes."""

    encoder: Encoder
    rope: Rope

    @property
    def shape(self) -> Shape:
        e = self.encoder
        return e.shape({"x": e.dim, "qkv": 3 * e.dim, "q": e.dim, "k": e.dim, "v": e.dim,
                        "att": e.dim, "tmp": e.dim, "gate": e.ffn_dim, "up": e.ffn_dim})


def read_params(gguf: GGUFFile) -> Params:
    encoder = read_encoder(gguf, "nomic-bert", default_context=2048)
    meta = hparams.Metadata(gguf, "nomic-bert")
    head_dim = encoder.heads.head_dim
    hparams.rope_dims(head_dim, head_dim, "nomic-bert")
    return Params(encoder, Rope(head_dim, meta.positive("rope.freq_base", 1000.0), neox=True))


@dataclass(frozen=True)
class Layer:
    """The tensors of one block, named as in the GGUF (`blk.N.<name>`)."""

    attn_qkv: Weight           # [3 * dim][dim]: q, k, v one after another
    attn_output: Weight        # [dim][dim]
    attn_output_norm: Norm     # after the attention residual
    ffn_gate: Weight           # [ffn_dim][dim]
    ffn_up: Weight             # [ffn_dim][dim]
    ffn_down: Weight           # [dim][ffn_dim]
    layer_output_norm: Norm    # after the feed-forward residual


@dataclass(frozen=True)
class Weights:
    token_embd: Weight         # [vocab][dim]
    token_types: Any           # row 0 of token_types.weight [n_types][dim] (sequence A), f32
    token_embd_norm: Norm
    layers: list[Layer]
    output: None = None        # an encoder has no language-model head


def load_weights(load: WeightLoader, p: Params) -> Weights:
    e = p.encoder
    dim = e.dim
    return Weights(
        token_embd=load.get("token_embd.weight", dim, e.vocab_size),
        token_types=load.row_floats("token_types.weight", 0, dim),
        token_embd_norm=Norm.load(load, "token_embd_norm", dim),
        layers=[Layer(
            attn_qkv=load.get(f"blk.{i}.attn_qkv.weight", dim, 3 * dim),
            attn_output=load.get(f"blk.{i}.attn_output.weight", dim, dim),
            attn_output_norm=Norm.load(load, f"blk.{i}.attn_output_norm", dim),
            ffn_gate=load.get(f"blk.{i}.ffn_gate.weight", dim, e.ffn_dim),
            ffn_up=load.get(f"blk.{i}.ffn_up.weight", dim, e.ffn_dim),
            ffn_down=load.get(f"blk.{i}.ffn_down.weight", e.ffn_dim, dim),
            layer_output_norm=Norm.load(load, f"blk.{i}.layer_output_norm", dim),
        ) for i in range(e.n_layer)])


def forward(rt: Network, w: Weights, p: Params) -> None:
    """Token ids to the final hidden states, in rt.buf.x (pooled by the caller)."""
    b, e = rt.buf, p.encoder
    h = e.heads
    rt.embed(w.token_embd, b.x)
    rt.add_bias(b.x, w.token_types)            # every token is of type 0
    rt.layernorm(b.x, w.token_embd_norm.weight, w.token_embd_norm.bias, b.x, e.norm_eps)
    rt.trace("token_embd", -1, b.x)
    for i, layer in enumerate(w.layers):
        rt.linear(layer.attn_qkv, b.x, b.qkv)
        rt.split(b.qkv, (b.q, b.k, b.v))
        rt.rope(b.q, h.n_head, p.rope)
        rt.rope(b.k, h.n_head, p.rope)
        rt.attention(i, b.q, b.k, b.v, b.att, h)
        rt.trace("attn_out", i, b.att)
        rt.linear(layer.attn_output, b.att, b.tmp)
        rt.add(b.x, b.tmp)
        rt.layernorm(b.x, layer.attn_output_norm.weight, layer.attn_output_norm.bias, b.x,
                     e.norm_eps)
        rt.linear(layer.ffn_gate, b.x, b.gate)
        rt.linear(layer.ffn_up, b.x, b.up)
        rt.swiglu(b.gate, b.up, b.gate)
        rt.linear(layer.ffn_down, b.gate, b.tmp)
        rt.add(b.x, b.tmp)
        rt.layernorm(b.x, layer.layer_output_norm.weight, layer.layer_output_norm.bias, b.x,
                     e.norm_eps)
        rt.trace("layer_out", i, b.x)
