"""The llama architecture: RMSNorm, RoPE, grouped-query attention, SwiGLU feed-forward.

Reads like the paper, one line per operation; every operation is one C call over the whole
batch, on buffers and pointers made once at load time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trio_llm._kernels import lib
from trio_llm.arch.weights import Weight, WeightLoader
from trio_llm.engine.batch import Batch
from trio_llm.engine.gguf_file import GGUFFile
from trio_llm.engine.kernels import KernelError, Pool, check, ptr
from trio_llm.engine.kv_cache import KVCache

Trace = Callable[[str, int, np.ndarray], None]

# Matmul path by a token's role (tl_matmul_path): a token always takes its role's path, so its
# bits never depend on what shares the batch. Decode rows (and their logits): int8 activations
# against the weights repacked at load (TL_PATH_PACKED), or row dots where a format has no
# repacked layout (Llama._decode_rows), for speed. Prompt rows (and their logits):
# TL_PATH_PRECISE, ~15-bit activations at about twice the arithmetic, so that a prompt's logits
# stay within 1e-2 of a float64 forward pass (issue 2; int8 activations alone drift to ~5% on
# SmolLM2 over its 30 layers).
PROMPT_PATH = lib.TL_PATH_TILED | lib.TL_PATH_PRECISE
PROMPT_LOGITS_PATH = lib.TL_PATH_ROW_DOTS | lib.TL_PATH_PRECISE  # a few rows, each alike


@dataclass(frozen=True)
class LlamaParams:
    """Hyper-parameters, read from the GGUF keys `<arch>.*`."""

    n_layer: int
    dim: int
    n_head: int
    n_kv_head: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    context_length: int
    rope_base: float
    rope_freq_scale: float
    n_rot: int
    norm_eps: float
    rope_neox: bool

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], arch: str = "llama") -> LlamaParams:
        def key(name: str, default: Any = None) -> Any:
            value = meta.get(f"{arch}.{name}", default)
            if value is None:
                raise ValueError(f"model metadata lacks {arch}.{name}")
            return value

        dim = int(key("embedding_length"))
        n_head = int(key("attention.head_count"))
        head_dim = int(key("attention.key_length", dim // n_head))
        vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
        scaling = meta.get(f"{arch}.rope.scaling.factor")
        return cls(
            n_layer=int(key("block_count")),
            dim=dim,
            n_head=n_head,
            n_kv_head=int(key("attention.head_count_kv", n_head)),
            head_dim=head_dim,
            ffn_dim=int(key("feed_forward_length")),
            vocab_size=int(vocab),
            context_length=int(key("context_length", 2048)),
            rope_base=float(key("rope.freq_base", 10000.0)),
            rope_freq_scale=1.0 / float(scaling) if scaling else 1.0,
            n_rot=int(key("rope.dimension_count", head_dim)),
            norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_neox=False,
        )


@dataclass(frozen=True)
class LlamaLayer:
    """The weights of one transformer block, named as in the GGUF (`blk.N.<name>.weight`)."""

    attn_norm: Any
    attn_q: Weight
    attn_k: Weight
    attn_v: Weight
    attn_output: Weight
    ffn_norm: Any
    ffn_gate: Weight
    ffn_up: Weight
    ffn_down: Weight


class Llama:
    """A loaded llama-architecture model with its KV cache and scratch buffers."""

    def __init__(self, gguf: GGUFFile, pool: Pool, n_ctx: int, n_slots: int = 1,
                 max_batch: int = 512, kv_type: str = "f16") -> None:
        arch = gguf.metadata.get("general.architecture", "llama")
        self.params = p = LlamaParams.from_metadata(gguf.metadata, arch)
        self.pool = pool
        self.n_ctx, self.n_slots, self.max_batch = n_ctx, n_slots, max_batch
        load = WeightLoader(gguf)
        self._loader = load
        q_dim, kv_dim = p.n_head * p.head_dim, p.n_kv_head * p.head_dim

        def mat(name: str, n_in: int, n_out: int) -> Weight:
            return load.get(name, n_in, n_out).repacked()

        self.token_embd = load.get("token_embd.weight", p.dim, p.vocab_size)
        self.output_norm = load.floats("output_norm.weight", p.dim)
        self.output = (mat("output.weight", p.dim, p.vocab_size)
                       if load.has("output.weight") else self.token_embd.repacked())
        self.layers = [
            LlamaLayer(
                attn_norm=load.floats(f"blk.{i}.attn_norm.weight", p.dim),
                attn_q=mat(f"blk.{i}.attn_q.weight", p.dim, q_dim),
                attn_k=mat(f"blk.{i}.attn_k.weight", p.dim, kv_dim),
                attn_v=mat(f"blk.{i}.attn_v.weight", p.dim, kv_dim),
                attn_output=mat(f"blk.{i}.attn_output.weight", q_dim, p.dim),
                ffn_norm=load.floats(f"blk.{i}.ffn_norm.weight", p.dim),
                ffn_gate=mat(f"blk.{i}.ffn_gate.weight", p.dim, p.ffn_dim),
                ffn_up=mat(f"blk.{i}.ffn_up.weight", p.dim, p.ffn_dim),
                ffn_down=mat(f"blk.{i}.ffn_down.weight", p.ffn_dim, p.dim),
            )
            for i in range(p.n_layer)
        ]
        self.cache = KVCache(p.n_layer, n_slots, n_ctx, kv_dim, kv_type)
        self._make_buffers(q_dim, kv_dim)
        self._n_decode = 0  # decode rows at the front of the chunk being run

    def _make_buffers(self, q_dim: int, kv_dim: int) -> None:
        p, n = self.params, self.max_batch
        self.bufs = {
            "x": np.zeros((n, p.dim), np.float32), "xn": np.zeros((n, p.dim), np.float32),
            "q": np.zeros((n, q_dim), np.float32), "k": np.zeros((n, kv_dim), np.float32),
            "v": np.zeros((n, kv_dim), np.float32), "att": np.zeros((n, q_dim), np.float32),
            "tmp": np.zeros((n, p.dim), np.float32),
            "gate": np.zeros((n, p.ffn_dim), np.float32),
            "up": np.zeros((n, p.ffn_dim), np.float32),
        }
        self.ptrs = {name: ptr(a, "float *") for name, a in self.bufs.items()}
        self.tokens = np.zeros(n, np.int32)
        self.positions = np.zeros(n, np.int32)
        self.slots = np.zeros(n, np.int32)
        self.tokens_ptr = ptr(self.tokens, "int32_t *")
        self.positions_ptr = ptr(self.positions, "int32_t *")
        self.slots_ptr = ptr(self.slots, "int32_t *")

    @property
    def kv_bytes(self) -> int:
        return self.cache.nbytes

    @property
    def packed_bytes(self) -> int:
        """Memory held by the repacked decode copies of the weights (beyond the mmap)."""
        mats = [self.output] + [getattr(layer, name) for layer in self.layers
                                for name in ("attn_q", "attn_k", "attn_v", "attn_output",
                                             "ffn_gate", "ffn_up", "ffn_down")]
        return sum(w.packed_bytes for w in mats)

    def _check(self, batch: Batch) -> None:
        """Refuse a batch that would index outside the cache or the vocabulary."""
        if not len(batch):
            return
        if batch.positions.min() < 0 or batch.positions.max() >= self.n_ctx:
            raise ValueError(f"position outside the context of {self.n_ctx} tokens")
        if batch.slots.min() < 0 or batch.slots.max() >= self.n_slots:
            raise ValueError(f"slot outside the {self.n_slots} KV slots")
        if batch.tokens.min() < 0 or batch.tokens.max() >= self.params.vocab_size:
            raise ValueError("token id outside the vocabulary")

    def forward(self, batch: Batch, trace: Trace | None = None) -> np.ndarray:
        """Run the batch; return float32 logits [len(batch.logits_for)][vocab]."""
        n = len(batch)
        self._check(batch)
        logits = np.empty((len(batch.logits_for), self.params.vocab_size), np.float32)
        for start in range(0, n, self.max_batch):
            end = min(n, start + self.max_batch)
            self._hidden(batch, start, end, trace)
            rows = np.nonzero((batch.logits_for >= start) & (batch.logits_for < end))[0]
            if rows.size:
                hidden = self.bufs["x"][batch.logits_for[rows] - start]
                logits[rows] = self._logits(hidden, batch.logits_for[rows] < batch.n_decode)
        return logits

    def hidden_states(self, tokens: list[int], slot: int = 0) -> np.ndarray:
        """Final normalised hidden states [n][dim] of one sequence from position 0 (embeddings)."""
        p = self.params
        out = np.empty((len(tokens), p.dim), np.float32)
        batch = Batch.sequence(tokens, 0, slot)
        self._check(batch)
        for start in range(0, len(tokens), self.max_batch):
            end = min(len(tokens), start + self.max_batch)
            self._hidden(batch, start, end, None)
            out[start:end] = self.bufs["x"][: end - start]
        check(lib.tl_rmsnorm(self.pool.handle, ptr(out, "float *"), self.output_norm,
                             ptr(out, "float *"), len(tokens), p.dim, p.norm_eps), "rmsnorm")
        return out

    def _hidden(self, batch: Batch, start: int, end: int, trace: Trace | None) -> None:
        """The transformer body over tokens [start, end) of the batch, leaving x in bufs['x']."""
        p, n, pool, b = self.params, end - start, self.pool.handle, self.ptrs
        self._n_decode = min(max(batch.n_decode - start, 0), n)
        self.tokens[:n] = batch.tokens[start:end]
        self.positions[:n] = batch.positions[start:end]
        self.slots[:n] = batch.slots[start:end]
        pos, slots = self.positions_ptr, self.slots_ptr
        kv_dim = p.n_kv_head * p.head_dim
        scale = 1.0 / math.sqrt(p.head_dim)
        embd = self.token_embd
        st = lib.tl_get_rows(embd.kind, embd.data, p.dim, p.vocab_size, self.tokens_ptr, n, b["x"])
        if trace:
            trace("token_embd", -1, self.bufs["x"][:n])
        for i, layer in enumerate(self.layers):
            st |= lib.tl_rmsnorm(pool, b["x"], layer.attn_norm, b["xn"], n, p.dim, p.norm_eps)
            st |= self._matmul(layer.attn_q, "xn", n, "q")
            st |= self._matmul(layer.attn_k, "xn", n, "k")
            st |= self._matmul(layer.attn_v, "xn", n, "v")
            st |= lib.tl_rope(pool, b["q"], n, p.n_head, p.head_dim, p.n_rot, pos, p.rope_base,
                              p.rope_freq_scale, p.rope_neox)
            st |= lib.tl_rope(pool, b["k"], n, p.n_kv_head, p.head_dim, p.n_rot, pos,
                              p.rope_base, p.rope_freq_scale, p.rope_neox)
            kc, vc = self.cache.key_ptrs[i], self.cache.value_ptrs[i]
            st |= lib.tl_kv_store(self.cache.kind, kc, vc, self.n_ctx, kv_dim, b["k"], b["v"], n,
                                  slots, pos)
            st |= lib.tl_attention(pool, self.cache.kind, kc, vc, self.n_ctx, b["q"], n, slots,
                                   pos, p.n_head, p.n_kv_head, p.head_dim, scale, 0, b["att"])
            if trace:
                trace("attn_out", i, self.bufs["att"][:n])
            st |= self._matmul(layer.attn_output, "att", n, "tmp")
            lib.tl_add(b["x"], b["tmp"], n * p.dim)
            st |= lib.tl_rmsnorm(pool, b["x"], layer.ffn_norm, b["xn"], n, p.dim, p.norm_eps)
            st |= self._matmul(layer.ffn_gate, "xn", n, "gate")
            st |= self._matmul(layer.ffn_up, "xn", n, "up")
            st |= lib.tl_swiglu(pool, b["gate"], b["up"], b["gate"], n * p.ffn_dim)
            st |= self._matmul(layer.ffn_down, "gate", n, "tmp")
            lib.tl_add(b["x"], b["tmp"], n * p.dim)
            if trace:
                trace("layer_out", i, self.bufs["x"][:n])
        check(st, "llama forward")

    def _decode_rows(self, w: Weight, x: Any, n: int, y: Any) -> int:
        """y = x @ w.T for decode rows (and logits rows): the repacked weights when the format
        has them, else the row dots. Either way each row is computed alone, the same way
        whatever the batch, so a sequence's bits never depend on its neighbours."""
        if w.packed is not None:
            return lib.tl_matmul_path(self.pool.handle, w.kind, w.packed, w.n_out, w.n_in, x, n,
                                      y, lib.TL_PATH_PACKED)
        return lib.tl_matmul_path(self.pool.handle, w.kind, w.data, w.n_out, w.n_in, x, n, y,
                                  lib.TL_PATH_ROW_DOTS)

    def _matmul(self, w: Weight, src: str, n: int, dst: str) -> int:
        """dst = src @ w.T over the chunk: decode rows by _decode_rows, prompt rows by
        PROMPT_PATH."""
        pool, x, y, dec = self.pool.handle, self.ptrs[src], self.ptrs[dst], self._n_decode
        st = 0
        if dec:
            st = self._decode_rows(w, x, dec, y)
        if n > dec:
            st |= lib.tl_matmul_path(pool, w.kind, w.data, w.n_out, w.n_in, x + dec * w.n_in,
                                     n - dec, y + dec * w.n_out, PROMPT_PATH)
        return st

    def _logits(self, hidden: np.ndarray, decode: np.ndarray) -> np.ndarray:
        """output_norm then the output matrix, for the few rows whose logits are wanted: rows
        marked in `decode` by _decode_rows, the others by PROMPT_LOGITS_PATH."""
        p = self.params
        hidden = np.ascontiguousarray(hidden, np.float32)
        m = hidden.shape[0]
        out = np.empty((m, p.vocab_size), np.float32)
        hp = ptr(hidden, "float *")
        st = lib.tl_rmsnorm(self.pool.handle, hp, self.output_norm, hp, m, p.dim, p.norm_eps)
        for rows, decoding in ((np.nonzero(decode)[0], True), (np.nonzero(~decode)[0], False)):
            if not rows.size:
                continue
            part = hidden if rows.size == m else np.ascontiguousarray(hidden[rows])
            got = out if rows.size == m else np.empty((rows.size, p.vocab_size), np.float32)
            if decoding:
                st |= self._decode_rows(self.output, ptr(part, "float *"), rows.size,
                                        ptr(got, "float *"))
            else:
                st |= lib.tl_matmul_path(self.pool.handle, self.output.kind, self.output.data,
                                         p.vocab_size, p.dim, ptr(part, "float *"), rows.size,
                                         ptr(got, "float *"), PROMPT_LOGITS_PATH)
            if rows.size != m:
                out[rows] = got
        if st:
            raise KernelError(f"llama output: status {st}")
        return out
