"""gemma3: Gemma 3's text decoder (gemma3:270m and the larger Gemma 3 text models).

Against llama it differs in: embeddings scaled by sqrt(dim); RMSNorm weights stored with the +1
already added; per-head RMSNorm of q and k (QK-norm); norms after attention and after the
feed-forward as well as before them; a GELU-tanh gated feed-forward; NeoX-style rope; and
interleaved layers: five sliding-window ("local") layers with their own rope base for every
global one. The attention scale is 1/sqrt(head size) unless the file says otherwise; the logits
are soft-capped where the metadata has a cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trio_llm.arch import hparams
from trio_llm.arch.runtime import Heads, Network, Rope, Shape
from trio_llm.arch.weights import Weight, WeightLoader
from trio_llm.engine.kv_cache import KVLayout
from trio_llm.errors import ModelFileError
from trio_llm.formats.gguf_file import GGUFFile

CAPABILITIES = frozenset({"completion"})

GLOBAL_EVERY = 6          # Gemma 3: every 6th layer attends globally, the others locally
LOCAL_ROPE_BASE = 10000.0  # the local layers' rope base (the file holds the global one)


@dataclass(frozen=True)
class Params:
    """Hyper-parameters, from the GGUF keys `gemma3.*` and the tensors' shapes."""

    n_layer: int
    dim: int
    heads: Heads
    ffn_dim: int
    vocab_size: int
    context_length: int
    window: int                      # the local layers' sliding window
    is_global: tuple[bool, ...]      # per layer
    global_rope: Rope
    local_rope: Rope
    norm_eps: float
    logit_softcap: float

    @property
    def shape(self) -> Shape:
        q_dim = self.heads.n_head * self.heads.head_dim
        kv_dim = self.heads.n_kv_head * self.heads.head_dim
        return Shape(
            n_layer=self.n_layer, dim=self.dim, vocab_size=self.vocab_size,
            context_length=self.context_length,
            kv_layers=tuple(KVLayout(kv_dim, 0 if g else self.window, self.heads.head_dim)
                            for g in self.is_global),
            buffers={"x": self.dim, "xn": self.dim, "q": q_dim, "k": kv_dim, "v": kv_dim,
                     "att": q_dim, "tmp": self.dim, "gate": self.ffn_dim, "up": self.ffn_dim},
            logit_softcap=self.logit_softcap)


def read_params(gguf: GGUFFile) -> Params:
    meta = hparams.Metadata(gguf, "gemma3")
    dim = meta.count("embedding_length")
    n_layer = meta.count("block_count")
    n_head = meta.count("attention.head_count")
    n_kv_head = meta.count("attention.head_count_kv", n_head)
    hparams.heads(n_head, n_kv_head, "gemma3")
    head_dim = meta.count("attention.key_length", dim // n_head)
    if meta.count("attention.value_length", head_dim) != head_dim:
        raise ModelFileError("gemma3: keys and values of different sizes are not supported")
    scale = 1.0 / math.sqrt(meta.positive("attention.query_pre_attn_scalar", head_dim)) \
        if meta.has("attention.query_pre_attn_scalar") else None
    if meta.has("attn_logit_softcapping") and meta.positive("attn_logit_softcapping", zero=True):
        raise ModelFileError("gemma3: attention logit soft-capping is not supported")
    return Params(
        n_layer=n_layer, dim=dim, heads=Heads.of(n_head, n_kv_head, head_dim, scale),
        ffn_dim=meta.count("feed_forward_length"), vocab_size=hparams.vocab_size(gguf, dim),
        context_length=meta.context_length(),
        window=meta.count("attention.sliding_window", high=hparams.MAX_CONTEXT),
        is_global=_global_layers(meta, n_layer),
        global_rope=Rope(head_dim, meta.positive("rope.freq_base", 1e6), meta.linear_rope_scale(),
                         neox=True),
        local_rope=Rope(head_dim, meta.positive("rope.freq_base_swa", LOCAL_ROPE_BASE),
                        neox=True),
        norm_eps=meta.positive("attention.layer_norm_rms_epsilon", 1e-6, zero=True),
        logit_softcap=meta.positive("final_logit_softcapping", zero=True)
        if meta.has("final_logit_softcapping") else 0.0)


def _global_layers(meta: hparams.Metadata, n_layer: int) -> tuple[bool, ...]:
    """Which layers attend globally: `sliding_window_pattern` as a per-layer list of booleans
    (true = sliding) or as a period N (every Nth global), else Gemma 3's every 6th."""
    pattern = meta.gguf.metadata.get("gemma3.attention.sliding_window_pattern", GLOBAL_EVERY)
    if isinstance(pattern, Sequence) and not isinstance(pattern, str):
        if len(pattern) != n_layer:
            raise ModelFileError(f"gemma3.attention.sliding_window_pattern has {len(pattern)} "
                                 f"entries for {n_layer} layers")
        return tuple(not bool(sliding) for sliding in pattern)
    if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 1:
        raise ModelFileError(f"gemma3.attention.sliding_window_pattern = {pattern!r} is not a "
                             "positive integer")
    return tuple((i + 1) % pattern == 0 for i in range(n_layer))


@dataclass(frozen=True)
class Layer:
    """The tensors of one block, named as in the GGUF (`blk.N.<name>.weight`)."""

    attn_norm: Any             # [dim] f32, +1 included (as every norm here)
    attn_q: Weight             # [n_head * head_dim][dim]
    attn_k: Weight             # [n_kv_head * head_dim][dim]
    attn_v: Weight             # [n_kv_head * head_dim][dim]
    attn_q_norm: Any           # [head_dim] f32
    attn_k_norm: Any           # [head_dim] f32
    attn_output: Weight        # [dim][n_head * head_dim]
    post_attention_norm: Any   # [dim] f32
    ffn_norm: Any              # [dim] f32
    ffn_gate: Weight           # [ffn_dim][dim]
    ffn_up: Weight             # [ffn_dim][dim]
    ffn_down: Weight           # [dim][ffn_dim]
    post_ffw_norm: Any         # [dim] f32


@dataclass(frozen=True)
class Weights:
    token_embd: Weight         # [vocab][dim]
    output_norm: Any           # [dim] f32
    output: Weight             # token_embd (tied) unless the file has output.weight
    layers: list[Layer]


def load_weights(load: WeightLoader, p: Params) -> Weights:
    hd = p.heads.head_dim
    q_dim, kv_dim = p.heads.n_head * hd, p.heads.n_kv_head * hd
    token_embd = load.get("token_embd.weight", p.dim, p.vocab_size)

    def norm(i: int, name: str, n: int = p.dim) -> Any:
        return load.floats(f"blk.{i}.{name}.weight", n)

    return Weights(
        token_embd=token_embd,
        output_norm=load.floats("output_norm.weight", p.dim),
        output=load.get("output.weight", p.dim, p.vocab_size) if load.has("output.weight")
        else token_embd,
        layers=[Layer(
            attn_norm=norm(i, "attn_norm"),
            attn_q=load.get(f"blk.{i}.attn_q.weight", p.dim, q_dim),
            attn_k=load.get(f"blk.{i}.attn_k.weight", p.dim, kv_dim),
            attn_v=load.get(f"blk.{i}.attn_v.weight", p.dim, kv_dim),
            attn_q_norm=norm(i, "attn_q_norm", hd),
            attn_k_norm=norm(i, "attn_k_norm", hd),
            attn_output=load.get(f"blk.{i}.attn_output.weight", q_dim, p.dim),
            post_attention_norm=norm(i, "post_attention_norm"),
            ffn_norm=norm(i, "ffn_norm"),
            ffn_gate=load.get(f"blk.{i}.ffn_gate.weight", p.dim, p.ffn_dim),
            ffn_up=load.get(f"blk.{i}.ffn_up.weight", p.dim, p.ffn_dim),
            ffn_down=load.get(f"blk.{i}.ffn_down.weight", p.ffn_dim, p.dim),
            post_ffw_norm=norm(i, "post_ffw_norm"),
        ) for i in range(p.n_layer)])


def forward(rt: Network, w: Weights, p: Params) -> None:
    """Token ids to the final normalised hidden states, in rt.buf.x."""
    b, h, eps = rt.buf, p.heads, p.norm_eps
    rt.embed(w.token_embd, b.x)
    rt.scale(b.x, math.sqrt(p.dim))
    rt.trace("token_embd", -1, b.x)
    for i, layer in enumerate(w.layers):
        rope = p.global_rope if p.is_global[i] else p.local_rope
        rt.rmsnorm(b.x, layer.attn_norm, b.xn, eps)
        rt.linear(layer.attn_q, b.xn, b.q)
        rt.linear(layer.attn_k, b.xn, b.k)
        rt.linear(layer.attn_v, b.xn, b.v)
        rt.rmsnorm(b.q, layer.attn_q_norm, b.q, eps, heads=h.n_head)
        rt.rmsnorm(b.k, layer.attn_k_norm, b.k, eps, heads=h.n_kv_head)
        rt.rope(b.q, h.n_head, rope)
        rt.rope(b.k, h.n_kv_head, rope)
        rt.attention(i, b.q, b.k, b.v, b.att, h)
        rt.trace("attn_out", i, b.att)
        rt.linear(layer.attn_output, b.att, b.tmp)
        rt.rmsnorm(b.tmp, layer.post_attention_norm, b.tmp, eps)
        rt.add(b.x, b.tmp)
        rt.rmsnorm(b.x, layer.ffn_norm, b.xn, eps)
        rt.linear(layer.ffn_gate, b.xn, b.gate)
        rt.linear(layer.ffn_up, b.xn, b.up)
        rt.geglu(b.gate, b.up, b.gate)
        rt.linear(layer.ffn_down, b.gate, b.tmp)
        rt.rmsnorm(b.tmp, layer.post_ffw_norm, b.tmp, eps)
        rt.add(b.x, b.tmp)
        rt.trace("layer_out", i, b.x)
    rt.rmsnorm(b.x, w.output_norm, b.x, eps)
