"""How many bytes a loaded model needs: weights, KV cache for num_ctx x slots, compute scratch.

The estimate is split into the pieces placement moves between devices: `n_layer` repeating
blocks (weights plus that block's KV cache) and the rest of the weights (embeddings, output head,
final norm), which is offloaded last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Bytes per cached K or V element for OLLAMA_KV_CACHE_TYPE (q8_0: 34 bytes per 32, q4_0: 18).
KV_BYTES_PER_ELEMENT: dict[str, float] = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True)
class MemoryEstimate:
    """A model's memory need in bytes, in the pieces placement works with."""

    n_layer: int
    layer_weights: int
    layer_kv: int
    other_weights: int
    compute: int = 0

    @property
    def layer(self) -> int:
        """One repeating block on a device: its weights and its KV cache."""
        return self.layer_weights + self.layer_kv

    @property
    def weights(self) -> int:
        return self.n_layer * self.layer_weights + self.other_weights

    @property
    def kv(self) -> int:
        return self.n_layer * self.layer_kv

    @property
    def total(self) -> int:
        """Everything on one device: weights, KV cache and one compute buffer."""
        return self.weights + self.kv + self.compute

    @classmethod
    def flat(cls, total: int, n_layer: int = 9) -> MemoryEstimate:
        """`total` bytes in n_layer + 1 equal pieces, no compute buffer (tests, rough guesses)."""
        piece = total // (n_layer + 1)
        return cls(n_layer=n_layer, layer_weights=piece, layer_kv=0,
                   other_weights=total - n_layer * piece)


def compute_bytes(n_embd: int, n_head: int, n_vocab: int, num_ctx: int, n_slots: int,
                  n_batch: int = 512) -> int:
    """Scratch for one forward step, f32: a batch's activations, its attention scores, logits.

    A deliberately generous guess (about six hidden-size buffers per token, the full score
    matrix for a prompt batch against the whole context, one logits row per slot)."""
    activations = n_batch * 6 * n_embd
    scores = n_head * n_batch * num_ctx
    logits = n_slots * n_vocab
    return 4 * (activations + scores + logits)


def estimate_memory(*, file_size: int, n_layer: int, k_dim: int, v_dim: int, num_ctx: int,
                    n_slots: int = 1, kv_cache_type: str = "f16",
                    block_weights: int | None = None, n_embd: int = 0, n_head: int = 0,
                    n_vocab: int = 0, n_batch: int = 512) -> MemoryEstimate:
    """Estimate a model's memory from its file size and shape.

    k_dim / v_dim are the per-layer K and V widths (KV heads x head size). The KV cache holds
    num_ctx x n_slots positions per layer. `block_weights` is the bytes of all `blk.*` tensors;
    unknown, the non-repeating weights are counted as one more block's worth. The compute buffer
    is zero unless n_embd is given."""
    if n_layer <= 0:
        raise ValueError("n_layer must be positive")
    if kv_cache_type not in KV_BYTES_PER_ELEMENT:
        raise ValueError(f"unknown KV cache type {kv_cache_type!r}")
    blocks = block_weights if block_weights is not None else file_size * n_layer // (n_layer + 1)
    layer_weights = blocks // n_layer
    per_position = (k_dim + v_dim) * KV_BYTES_PER_ELEMENT[kv_cache_type]
    layer_kv = int(num_ctx * n_slots * per_position)
    compute = compute_bytes(n_embd, n_head, n_vocab, num_ctx, n_slots, n_batch) if n_embd else 0
    return MemoryEstimate(n_layer=n_layer, layer_weights=layer_weights, layer_kv=layer_kv,
                          other_weights=max(0, file_size - n_layer * layer_weights),
                          compute=compute)


def estimate_from_gguf(metadata: Mapping[str, Any], tensor_bytes: Mapping[str, int],
                       file_size: int, num_ctx: int, n_slots: int = 1,
                       kv_cache_type: str = "f16", n_batch: int = 512) -> MemoryEstimate:
    """estimate_memory() from a GGUF header: its metadata and each tensor's byte size.

    Reads `<arch>.block_count`, `.embedding_length`, `.attention.head_count[_kv]`,
    `.attention.key_length` / `.value_length` (default: embedding / heads) and the vocabulary."""
    arch = str(metadata["general.architecture"])

    def number(key: str, default: int = 0) -> int:
        value = metadata.get(f"{arch}.{key}", default)
        if isinstance(value, list | tuple):  # per-layer values: size for the widest layer
            value = max(value, default=default)
        return int(value)

    n_layer = number("block_count")
    n_embd = number("embedding_length")
    n_head = number("attention.head_count", 1) or 1
    n_head_kv = number("attention.head_count_kv", n_head) or n_head
    k_len = number("attention.key_length", n_embd // n_head)
    v_len = number("attention.value_length", n_embd // n_head)
    n_vocab = len(metadata.get("tokenizer.ggml.tokens", ())) or number("vocab_size")
    blocks = sum(size for name, size in tensor_bytes.items() if name.startswith("blk."))
    return estimate_memory(file_size=file_size, n_layer=n_layer, k_dim=n_head_kv * k_len,
                           v_dim=n_head_kv * v_len, num_ctx=num_ctx, n_slots=n_slots,
                           kv_cache_type=kv_cache_type, block_weights=blocks, n_embd=n_embd,
                           n_head=n_head, n_vocab=n_vocab, n_batch=n_batch)
