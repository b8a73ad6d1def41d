"""The shared runtime every architecture runs on: buffers, batching, routing, logits, memory.

An architecture module says only what its network is (hyper-parameters, the tensors of a
block, the forward pass one line per operation) and calls the operations below on named
buffers. This runtime owns everything else: the scratch buffers and the KV cache, cutting a
batch into chunks of at most max_batch tokens, refusing out-of-range batches, choosing each
token's matmul path by its role, the output head and its logits, the hidden states that
embeddings pool, and what all of it costs in memory. Every kernel call goes through one `Ops`
object (`trio_llm.engine.ops`), so a GPU backend is a second Ops, not a second copy of this.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

from trio_llm.arch.memory import (
    MemoryPlan,
    keeps_decode_copies,
    kv_slots,
    plan_memory,
    runtime_batch,
)
from trio_llm.arch.weights import EMBEDDING_FIELD, Weight, WeightLoader, matrices
from trio_llm.engine.batch import Batch
from trio_llm.engine.kernels import ptr
from trio_llm.engine.kv_cache import KVCache, KVLayout
from trio_llm.engine.ops import NULL, Buffer, MatmulPath, Ops, Recorder
from trio_llm.engine.program import Program
from trio_llm.formats.gguf_file import GGUFFile
from trio_llm.options import default

Trace = Callable[[str, int, np.ndarray], None]

# Matmul path by a token's role: a token always takes its role's path, so its bits never depend
# on what shares the batch. Decode rows (and their logits): int8 activations against the weights
# repacked at load (PACKED), or row dots where a format has no repacked layout. Prompt rows (and
# their logits): ~15-bit activations (PRECISE) at about twice the arithmetic, so that a prompt's
# logits stay within 1e-2 of a float64 forward pass (int8 activations alone drift to ~5% on
# SmolLM2 over its 30 layers).
PROMPT_PATH = MatmulPath.PRECISE_TILED
PROMPT_LOGITS_PATH = MatmulPath.PRECISE_ROW_DOTS  # a few rows, each alike


class Pooling(StrEnum):
    """How an embedding model turns a sequence's hidden states into one vector."""

    MEAN = "mean"
    CLS = "cls"     # the first token's state
    LAST = "last"

    def pool(self, states: np.ndarray) -> np.ndarray:
        """One float64 vector from a sequence's final hidden states [n][dim]."""
        if self is Pooling.CLS:
            return states[0].astype(np.float64)
        if self is Pooling.LAST:
            return states[-1].astype(np.float64)
        return states.mean(axis=0, dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class Shape:
    """What the runtime needs to know of a network, whatever its architecture."""

    n_layer: int
    dim: int                           # width of the hidden state the body leaves in buffer x
    vocab_size: int
    context_length: int                # the context the model was trained for
    kv_layers: tuple[KVLayout, ...]    # one per layer that attends
    buffers: Mapping[str, int]         # scratch buffer name -> floats per token ("x": dim)
    causal: bool = True                # False: every token sees its whole sequence (encoders)
    logit_softcap: float = 0.0         # > 0: logits = cap * tanh(logits / cap)
    pooling: Pooling = Pooling.MEAN    # for embeddings


@dataclass(frozen=True)
class Rope:
    """Rotary position embedding of one kind of layer (tl_rope's parameters)."""

    n_rot: int
    base: float
    freq_scale: float = 1.0
    neox: bool = False
    factors: Any = NULL               # per-frequency divisors (LongRoPE), n_rot / 2 floats
    attn_factor: float = 1.0          # LongRoPE's scale of the rotated dims (cos and sin)


@dataclass(frozen=True)
class Heads:
    """Grouped-query attention's shape: query heads, KV heads, head size, score scale."""

    n_head: int
    n_kv_head: int
    head_dim: int
    scale: float

    @classmethod
    def of(cls, n_head: int, n_kv_head: int, head_dim: int, scale: float | None = None) -> Heads:
        return cls(n_head, n_kv_head, head_dim,
                   scale if scale is not None else 1.0 / math.sqrt(head_dim))


class ArchParams(Protocol):
    """An architecture's hyper-parameters; `shape` is the runtime's view of them."""

    @property
    def shape(self) -> Shape: ...


class ArchWeights(Protocol):
    """An architecture's tensors; the runtime reads the embedding table and the output head."""

    token_embd: Weight
    output: Weight | None              # None: no language-model head (an encoder)


class Architecture(Protocol):
    """What an architecture module provides (one module per `general.architecture`)."""

    CAPABILITIES: frozenset[str]

    def read_params(self, gguf: GGUFFile) -> Any: ...
    def load_weights(self, load: WeightLoader, params: Any) -> Any: ...
    def forward(self, rt: Network, weights: Any, params: Any) -> None: ...
    # forward() is a list of the Network's operations whose choices depend only on the
    # network (its shape, n_ctx) and the chunk's size, never on the tokens or positions:
    # decode steps replay it from a recording (Network._replay).


def _repacked(weights: Any) -> Any:
    """The weights with a repacked decode copy of every matrix the linear layers use (all but
    the embedding table, which is only looked up): the set weights.decode_matrices names."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(weights):
        value = getattr(weights, f.name)
        if f.name == EMBEDDING_FIELD:
            continue
        if isinstance(value, Weight):
            changes[f.name] = value.repacked()
        elif isinstance(value, list):
            changes[f.name] = [_repacked(v) if dataclasses.is_dataclass(v) else v for v in value]
        elif dataclasses.is_dataclass(value):
            changes[f.name] = _repacked(value)
    return dataclasses.replace(weights, **changes)


class Network:
    """A loaded network: its architecture's weights and forward pass, on the shared runtime.

    The operation methods (embed, rmsnorm, linear, rope, attention, ...) act on the rows of the
    chunk being run; an architecture's forward() is a list of them."""

    def __init__(self, arch: Architecture, gguf: GGUFFile, ops: Ops, n_ctx: int,
                 n_slots: int = 1, max_batch: int = default("num_batch"),
                 kv_type: str = "f16", prompt_cache: int = 0) -> None:
        self.arch, self.ops = arch, ops
        self.params = arch.read_params(gguf)
        shape: Shape = self.params.shape
        self.shape = shape
        max_batch = runtime_batch(shape, n_ctx, max_batch)
        n_slots = kv_slots(shape, n_ctx, n_slots)
        self.n_ctx, self.n_slots, self.max_batch = n_ctx, n_slots, max_batch
        views = arch.load_weights(WeightLoader(gguf), self.params)
        # What all of this holds, by the rules the allocations below follow (the scheduler
        # reads the same plan before loading): the cache type in force is the plan's.
        self.memory: MemoryPlan = plan_memory(shape, views, gguf, n_ctx, n_slots, max_batch,
                                              kv_type, prompt_cache)
        self.weights = _repacked(views) if keeps_decode_copies(shape) else views
        self.token_embd: Weight = self.weights.token_embd
        self.output: Weight | None = self.weights.output  # tied or not, its own decode copy
        self.cache = KVCache(shape.kv_layers, n_slots, n_ctx, max_batch, self.memory.kv_type)
        self.buf = SimpleNamespace(**{name: ops.buffer(max_batch, width)
                                      for name, width in shape.buffers.items()})
        self.x: Buffer = self.buf.x
        self.tokens = np.zeros(max_batch, np.int32)
        self.positions = np.zeros(max_batch, np.int32)
        self.slots = np.zeros(max_batch, np.int32)
        self.last_seen = np.zeros(max_batch, np.int32)  # bidirectional: each sequence's last
        self.tokens_ptr = ptr(self.tokens, "int32_t *")
        self.positions_ptr = ptr(self.positions, "int32_t *")
        self.slots_ptr = ptr(self.slots, "int32_t *")
        self.last_seen_ptr = ptr(self.last_seen, "int32_t *")
        self.n = 0           # tokens in the chunk being run
        self.n_decode = 0    # decode rows at the front of that chunk
        self._trace: Trace | None = None
        # decode steps replayed from recorded programs, by rows (backends that can record)
        self._replays = callable(getattr(ops, "recorder", None))
        self._programs: dict[int, Program] = {}

    # -- what the network is --------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.shape.vocab_size

    @property
    def dim(self) -> int:
        return self.shape.dim

    @property
    def kv_bytes(self) -> int:
        return self.cache.nbytes

    @property
    def packed_bytes(self) -> int:
        """Memory held by the repacked decode copies of the weights (beyond the mmap)."""
        return sum(w.packed_bytes for w in matrices(self.weights))

    # -- running batches ------------------------------------------------------------------------
    def check(self, batch: Batch) -> None:
        """Refuse a batch that would index outside the cache or the vocabulary."""
        if not len(batch):
            return
        if batch.positions.min() < 0 or batch.positions.max() >= self.n_ctx:
            raise ValueError(f"position outside the context of {self.n_ctx} tokens")
        if batch.slots.min() < 0 or batch.slots.max() >= self.n_slots:
            raise ValueError(f"slot outside the {self.n_slots} KV slots")
        if batch.tokens.min() < 0 or batch.tokens.max() >= self.vocab_size:
            raise ValueError("token id outside the vocabulary")

    def forward(self, batch: Batch, trace: Trace | None = None) -> np.ndarray:
        """Run the batch; return float32 logits [len(batch.logits_for)][vocab]."""
        if self.output is None:
            raise ValueError("this model has no language-model head (an embedding model)")
        self.check(batch)
        logits = np.empty((len(batch.logits_for), self.vocab_size), np.float32)
        for start, end in self._chunks(batch):
            self._run(batch, start, end, trace)
            rows = np.nonzero((batch.logits_for >= start) & (batch.logits_for < end))[0]
            if rows.size:
                hidden = self.x.array[batch.logits_for[rows] - start]
                logits[rows] = self._logits(hidden, batch.logits_for[rows] < batch.n_decode)
        return logits

    def hidden_states(self, tokens: list[int], slot: int = 0) -> np.ndarray:
        """Final hidden states [n][dim] of one sequence from position 0 (for embeddings)."""
        batch = Batch.sequence(tokens, 0, slot)
        self.check(batch)
        out = np.empty((len(tokens), self.dim), np.float32)
        for start, end in self._chunks(batch):
            self._run(batch, start, end, None)
            out[start:end] = self.x.array[: end - start]
        return out

    def hidden_states_of(self, token_lists: list[list[int]], slots: list[int]
                         ) -> list[np.ndarray]:
        """Final hidden states of several sequences in one forward pass, sequence i in
        slots[i] from position 0 (batched embeddings). Every token takes the prompt path and
        attends only within its slot, so each result has the bits it has alone. The tokens
        must fit one chunk (max_batch)."""
        batch = Batch.join([Batch.sequence(ids, 0, slot)
                            for ids, slot in zip(token_lists, slots, strict=True)])
        if len(batch) > self.max_batch:
            raise ValueError(f"{len(batch)} tokens exceed the batch of {self.max_batch}")
        self.check(batch)
        self._run(batch, 0, len(batch), None)
        out, start = [], 0
        for ids in token_lists:
            out.append(self.x.array[start: start + len(ids)].copy())
            start += len(ids)
        return out

    def _chunks(self, batch: Batch) -> Iterator[tuple[int, int]]:
        n = len(batch)
        if not self.shape.causal and n > self.max_batch:
            raise ValueError(f"an input of {n} tokens exceeds the context of {self.n_ctx}")
        for start in range(0, n, self.max_batch):
            yield start, min(n, start + self.max_batch)

    def _run(self, batch: Batch, start: int, end: int, trace: Trace | None) -> None:
        """The architecture's forward pass over tokens [start, end) of the batch."""
        n = self.n = end - start
        self.n_decode = min(max(batch.n_decode - start, 0), n)
        self.tokens[:n] = batch.tokens[start:end]
        self.positions[:n] = batch.positions[start:end]
        self.slots[:n] = batch.slots[start:end]
        if not self.shape.causal:
            last = np.zeros(self.n_slots, np.int32)
            np.maximum.at(last, self.slots[:n], self.positions[:n])
            self.last_seen[:n] = last[self.slots[:n]]
        if trace is None and self.n_decode == n and self._replays:
            self._replay(n)
            return
        self._trace = trace
        try:
            self.arch.forward(self, self.weights, self.params)
        finally:
            self._trace = None

    def _replay(self, n: int) -> None:
        """A chunk of n decode rows: its kernel calls recorded the first time a step of n rows
        comes (the architecture's forward run against a recorder), then replayed in one C
        call (engine/program.py), which holds no GIL. The calls depend only on n: the
        pointers are this network's buffers and cache, which hold the step's tokens and
        positions when the program runs, so the results have the bits of the calls one by one."""
        program = self._programs.get(n)
        if program is None:
            real = self.ops
            recorder = self.ops.recorder()
            self.ops = recorder
            try:
                self.arch.forward(self, self.weights, self.params)
            except _NotRecordable:
                self._replays = False                     # this architecture runs call by call
                self.ops = real
                self.arch.forward(self, self.weights, self.params)
                return
            finally:
                self.ops = real
            program = self._programs[n] = recorder.program
        program.run()

    def _logits(self, hidden: np.ndarray, decode: np.ndarray) -> np.ndarray:
        """The output matrix over the few rows whose logits are wanted: decode rows by their
        decode path, the others by PROMPT_LOGITS_PATH; then soft-capping if the model has it."""
        assert self.output is not None
        hidden = np.ascontiguousarray(hidden, np.float32)
        m = hidden.shape[0]
        out = np.empty((m, self.vocab_size), np.float32)
        for rows, decoding in ((np.nonzero(decode)[0], True), (np.nonzero(~decode)[0], False)):
            if not rows.size:
                continue
            part = hidden if rows.size == m else np.ascontiguousarray(hidden[rows])
            got = out if rows.size == m else np.empty((rows.size, self.vocab_size), np.float32)
            path = _decode_path(self.output) if decoding else PROMPT_LOGITS_PATH
            self.ops.matmul(self.output, ptr(part, "float *"), rows.size, ptr(got, "float *"),
                            path)
            if rows.size != m:
                out[rows] = got
        if self.shape.logit_softcap > 0:
            self.ops.softcap(ptr(out, "float *"), self.shape.logit_softcap, out.size)
        return out

    # -- the operations an architecture's forward() is made of ---------------------------------
    def trace(self, name: str, layer: int, x: Buffer) -> None:
        """Hand an intermediate to the trace hook, if one was given (tests compare layers)."""
        if self._trace is not None:
            self._trace(name, layer, x.array[: self.n])

    def embed(self, table: Weight, out: Buffer) -> None:
        """out = rows of the embedding table for the chunk's tokens."""
        self.ops.embed(table, self.tokens_ptr, self.n, out.ptr)

    def embed_positions(self, table: Weight, out: Buffer) -> None:
        """out = rows of an absolute position embedding table for the chunk's positions."""
        self.ops.embed(table, self.positions_ptr, self.n, out.ptr)

    def rmsnorm(self, x: Buffer, w: Any, y: Buffer, eps: float, heads: int = 1) -> None:
        """y = RMSNorm(x) * w; with heads > 1, per head of x.width / heads floats (QK-norm)."""
        width = x.width // heads
        self.ops.rmsnorm(x.ptr, w, y.ptr, self.n * heads, width, eps)

    def layernorm(self, x: Buffer, w: Any, b: Any, y: Buffer, eps: float) -> None:
        self.ops.layernorm(x.ptr, w, b, y.ptr, self.n, x.width, eps)

    def linear(self, w: Weight, x: Buffer, y: Buffer, bias: Any = None) -> None:
        """y = x @ w.T (+ bias): decode rows by their decode path, prompt rows by PROMPT_PATH."""
        n, dec, ops = self.n, self.n_decode, self.ops
        if dec:
            ops.matmul(w, x.ptr, dec, y.ptr, _decode_path(w))
        if n > dec:
            ops.matmul(w, x.row(dec), n - dec, y.row(dec), PROMPT_PATH)
        if bias is not None:
            ops.add_rows(y.ptr, bias, n, w.n_out)

    def rope(self, x: Buffer, heads: int, rope: Rope) -> None:
        """Rotate the first n_rot dims of each of x's heads by the chunk's positions."""
        self.ops.rope(x.ptr, self.n, heads, x.width // heads, rope.n_rot, self.positions_ptr,
                      rope.base, rope.freq_scale, rope.neox, rope.factors, rope.attn_factor)

    def attention(self, layer: int, q: Buffer, k: Buffer, v: Buffer, out: Buffer,
                  heads: Heads) -> None:
        """Store the chunk's k and v in layer's cache, then out = attention of q over it
        (causal, or over the whole sequence for an encoder)."""
        cache = self.cache.layers[layer]
        self.ops.kv_store(cache, k.ptr, v.ptr, self.n, self.slots_ptr, self.positions_ptr)
        seen = self.positions_ptr if self.shape.causal else self.last_seen_ptr
        self.ops.attention(cache, q.ptr, self.n, self.slots_ptr, seen, heads.n_head,
                           heads.n_kv_head, heads.head_dim, heads.scale, out.ptr)

    def add(self, y: Buffer, x: Buffer) -> None:
        """y += x (a residual connection)."""
        self.ops.add(y.ptr, x.ptr, self.n * y.width)

    def add_bias(self, y: Buffer, b: Any) -> None:
        """y[t] += b for every token t of the chunk (b: y.width floats)."""
        self.ops.add_rows(y.ptr, b, self.n, y.width)

    def scale(self, y: Buffer, s: float) -> None:
        self.ops.scale(y.ptr, s, self.n * y.width)

    def swiglu(self, gate: Buffer, up: Buffer, out: Buffer) -> None:
        self.ops.swiglu(gate.ptr, up.ptr, out.ptr, self.n * gate.width)

    def geglu(self, gate: Buffer, up: Buffer, out: Buffer) -> None:
        self.ops.geglu(gate.ptr, up.ptr, out.ptr, self.n * gate.width)

    def gelu(self, x: Buffer, out: Buffer) -> None:
        self.ops.gelu(x.ptr, out.ptr, self.n * x.width)

    def split(self, fused: Buffer, parts: tuple[Buffer, ...]) -> None:
        """Copy the column blocks of a fused projection (phi3's qkv) into their own buffers
        (numpy, not a kernel: a program cannot record it)."""
        if isinstance(self.ops, Recorder):
            raise _NotRecordable("split")
        col = 0
        for part in parts:
            np.copyto(part.array[: self.n], fused.array[: self.n, col: col + part.width])
            col += part.width


class _NotRecordable(Exception):
    """An operation of the forward pass that is not a kernel call, met while recording."""


def _decode_path(w: Weight) -> MatmulPath:
    return MatmulPath.PACKED if w.packed is not None else MatmulPath.ROW_DOTS
