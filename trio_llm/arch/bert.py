"""bert: a bidirectional encoder for embeddings (BERT, MiniLM, BGE, all-MiniLM-L6-v2...).

Word, absolute-position and token-type embeddings summed and LayerNormed; then per block:
self-attention over the whole sequence, residual, LayerNorm; GELU feed-forward, residual,
LayerNorm (post-norms, as BERT has them); every linear layer has a bias. No language-model
head: the final hidden states are pooled (mean, first token or last token, as
`bert.pooling_type` says) into the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trio_llm.arch import hparams
from trio_llm.arch.runtime import Heads, Network, Pooling, Shape
from trio_llm.arch.weights import Weight, WeightLoader
from trio_llm.engine.kv_cache import KVLayout
from trio_llm.errors import ModelFileError
from trio_llm.formats.gguf_file import GGUFFile

CAPABILITIES = frozenset({"embedding"})

# `<arch>.pooling_type`, the GGUF enum (gguf's PoolingType): 0 none and 4 rank make no single
# embedding per input, so a file with them is refused.
POOLING_TYPES = {1: Pooling.MEAN, 2: Pooling.CLS, 3: Pooling.LAST}
RANK_POOLING = 4


@dataclass(frozen=True)
class Encoder:
    """What every BERT-style encoder reads from its `<arch>.*` keys."""

    n_layer: int
    dim: int
    heads: Heads
    ffn_dim: int
    vocab_size: int
    context_length: int
    norm_eps: float
    pooling: Pooling

    def shape(self, buffers: dict[str, int]) -> Shape:
        return Shape(n_layer=self.n_layer, dim=self.dim, vocab_size=self.vocab_size,
                     context_length=self.context_length,
                     kv_layers=(KVLayout(self.dim, 0),) * self.n_layer,
                     buffers=buffers, causal=False, pooling=self.pooling)


def read_encoder(gguf: GGUFFile, arch: str, default_context: int = 512) -> Encoder:
    """The shared hyper-parameters, checked: a bidirectional model with one embedding per
    input (pooling mean, cls or last; mean when the file does not say)."""
    meta = hparams.Metadata(gguf, arch)
    dim = meta.count("embedding_length")
    n_head = meta.count("attention.head_count")
    n_kv_head = meta.count("attention.head_count_kv", n_head)
    if n_kv_head != n_head or dim % n_head:
        raise ModelFileError(f"{arch}: {n_head} heads ({n_kv_head} KV heads) do not split the "
                             f"width {dim} evenly")
    if gguf.metadata.get(f"{arch}.attention.causal", False) is not False:
        raise ModelFileError(f"{arch}.attention.causal must be false: {arch} is an encoder")
    pooling_type = meta.count("pooling_type", 1, low=0, high=1 << 16)
    if pooling_type == RANK_POOLING:
        raise ModelFileError(f"{arch}.pooling_type = 4 (rank) is a cross-encoder reranker, "
                             "which is not supported: rerank with an embedding model (cosine "
                             "similarity)")
    if pooling_type not in POOLING_TYPES:
        raise ModelFileError(f"{arch}.pooling_type = {pooling_type} is not supported (an "
                             "embedding needs 1 mean, 2 cls or 3 last)")
    return Encoder(
        n_layer=meta.count("block_count"), dim=dim, heads=Heads.of(n_head, n_head, dim // n_head),
        ffn_dim=meta.count("feed_forward_length"), vocab_size=hparams.vocab_size(gguf, dim),
        context_length=meta.context_length(default_context),
        norm_eps=meta.positive("attention.layer_norm_epsilon", 1e-12, zero=True),
        pooling=POOLING_TYPES[pooling_type])


@dataclass(frozen=True)
class Params:
    """Hyper-parameters, from the GGUF keys `bert.*` and the tensors' shapes."""

    encoder: Encoder
    n_positions: int       # rows of position_embd, at least the context length

    @property
    def shape(self) -> Shape:
        e = self.encoder
        return e.shape({"x": e.dim, "q": e.dim, "k": e.dim, "v": e.dim, "att": e.dim,
                        "tmp": e.dim, "up": e.ffn_dim})


def read_params(gguf: GGUFFile) -> Params:
    encoder = read_encoder(gguf, "bert")
    positions = hparams.tensor_shape(gguf, "position_embd.weight")
    if len(positions) != 2 or positions[0] != encoder.dim or \
            positions[1] < encoder.context_length:
        raise ModelFileError(f"tensor 'position_embd.weight' has shape {positions}, expected "
                             f"({encoder.dim}, at least bert.context_length = "
                             f"{encoder.context_length})")
    return Params(encoder, positions[1])


@dataclass(frozen=True)
class Linear:
    """A linear layer and its bias, named `<name>.weight` and `<name>.bias` in the GGUF."""

    weight: Weight
    bias: Any              # [n_out] f32

    @classmethod
    def load(cls, load: WeightLoader, name: str, n_in: int, n_out: int) -> Linear:
        return cls(load.get(f"{name}.weight", n_in, n_out), load.floats(f"{name}.bias", n_out))


@dataclass(frozen=True)
class Norm:
    """A LayerNorm's scale and shift (`<name>.weight`, `<name>.bias`), [dim] f32 each."""

    weight: Any
    bias: Any

    @classmethod
    def load(cls, load: WeightLoader, name: str, n: int) -> Norm:
        return cls(load.floats(f"{name}.weight", n), load.floats(f"{name}.bias", n))


@dataclass(frozen=True)
class Layer:
    """The tensors of one block, named as in the GGUF (`blk.N.<name>`)."""

    attn_q: Linear             # [dim][dim]
    attn_k: Linear             # [dim][dim]
    attn_v: Linear             # [dim][dim]
    attn_output: Linear        # [dim][dim]
    attn_output_norm: Norm     # after the attention residual
    ffn_up: Linear             # [ffn_dim][dim]
    ffn_down: Linear           # [dim][ffn_dim]
    layer_output_norm: Norm    # after the feed-forward residual


@dataclass(frozen=True)
class Weights:
    token_embd: Weight         # [vocab][dim]
    position_embd: Weight      # [context][dim]
    token_types: Any           # row 0 of token_types.weight [n_types][dim] (sequence A), f32
    token_embd_norm: Norm
    layers: list[Layer]
    output: None = None        # an encoder has no language-model head


def load_weights(load: WeightLoader, p: Params) -> Weights:
    e = p.encoder
    dim = e.dim
    return Weights(
        token_embd=load.get("token_embd.weight", dim, e.vocab_size),
        position_embd=load.get("position_embd.weight", dim, p.n_positions),
        token_types=load.row_floats("token_types.weight", 0, dim),
        token_embd_norm=Norm.load(load, "token_embd_norm", dim),
        layers=[Layer(
            attn_q=Linear.load(load, f"blk.{i}.attn_q", dim, dim),
            attn_k=Linear.load(load, f"blk.{i}.attn_k", dim, dim),
            attn_v=Linear.load(load, f"blk.{i}.attn_v", dim, dim),
            attn_output=Linear.load(load, f"blk.{i}.attn_output", dim, dim),
            attn_output_norm=Norm.load(load, f"blk.{i}.attn_output_norm", dim),
            ffn_up=Linear.load(load, f"blk.{i}.ffn_up", dim, e.ffn_dim),
            ffn_down=Linear.load(load, f"blk.{i}.ffn_down", e.ffn_dim, dim),
            layer_output_norm=Norm.load(load, f"blk.{i}.layer_output_norm", dim),
        ) for i in range(e.n_layer)])


def forward(rt: Network, w: Weights, p: Params) -> None:
    """Token ids to the final hidden states, in rt.buf.x (pooled by the caller)."""
    b, e = rt.buf, p.encoder
    rt.embed(w.token_embd, b.x)
    rt.embed_positions(w.position_embd, b.tmp)
    rt.add(b.x, b.tmp)
    rt.add_bias(b.x, w.token_types)            # every token is of type 0
    rt.layernorm(b.x, w.token_embd_norm.weight, w.token_embd_norm.bias, b.x, e.norm_eps)
    rt.trace("token_embd", -1, b.x)
    for i, layer in enumerate(w.layers):
        rt.linear(layer.attn_q.weight, b.x, b.q, bias=layer.attn_q.bias)
        rt.linear(layer.attn_k.weight, b.x, b.k, bias=layer.attn_k.bias)
        rt.linear(layer.attn_v.weight, b.x, b.v, bias=layer.attn_v.bias)
        rt.attention(i, b.q, b.k, b.v, b.att, e.heads)
        rt.trace("attn_out", i, b.att)
        rt.linear(layer.attn_output.weight, b.att, b.tmp, bias=layer.attn_output.bias)
        rt.add(b.x, b.tmp)
        rt.layernorm(b.x, layer.attn_output_norm.weight, layer.attn_output_norm.bias, b.x,
                     e.norm_eps)
        rt.linear(layer.ffn_up.weight, b.x, b.up, bias=layer.ffn_up.bias)
        rt.gelu(b.up, b.up)
        rt.linear(layer.ffn_down.weight, b.up, b.tmp, bias=layer.ffn_down.bias)
        rt.add(b.x, b.tmp)
        rt.layernorm(b.x, layer.layer_output_norm.weight, layer.layer_output_norm.bias, b.x,
                     e.norm_eps)
        rt.trace("layer_out", i, b.x)
