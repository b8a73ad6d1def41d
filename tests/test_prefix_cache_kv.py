"""The prompt cache against the real networks: a prefix's KV copied out of one slot and into
another gives, after evaluating the rest of a prompt, bit for bit the KV and logits of evaluating
the whole prompt (SmolLM2's full layers in f16 and q8_0, Gemma 3's sliding-window rings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trio_llm.engine.batch import Batch
from trio_llm.engine.model import Model
from trio_llm.engine.prefix_cache import (
    PrefixCache,
    read_blocks,
    ring_rows_held,
    windows_of,
    write_prefix,
)


def words(n: int, seed: int) -> list[int]:
    """n token ids of ordinary text (no control tokens), from a fixed seed."""
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(300, 5000, n)]


def publish(model: Model, cache: PrefixCache, prompt: list[int], slot: int) -> None:
    """What the runner does once a prompt is evaluated: copy its blocks out of the slot."""
    kv = model.net.cache
    specs = cache.chain(prompt)
    held = [ring_rows_held(kv, len(prompt), s.start) for s in specs]
    assert cache.insert(specs, read_blocks(kv, slot, len(prompt), specs)) == len(specs)
    assert any(held) and len(held) == len(specs)


def positions_seen(model: Model, layer: int, end: int) -> np.ndarray:
    """The positions the next token after `end` may read in a layer (a ring: its window)."""
    lay = model.net.cache.layers[layer]
    low = max(0, end - lay.window + 1) if model.net.cache.is_ring(layer) else 0
    return np.arange(low, end) % lay.n_cache


def assert_same_kv(model: Model, slot_a: int, slot_b: int, end: int) -> None:
    kv = model.net.cache
    for layer in range(len(kv.layers)):
        at = positions_seen(model, layer, end)
        for a, b in zip(kv.slot_rows(layer, slot_a), kv.slot_rows(layer, slot_b), strict=True):
            assert np.array_equal(a[at], b[at]), f"layer {layer} differs"


def reuse(model: Model, cache: PrefixCache, prompt: list[int], expect: int) -> None:
    """Evaluate `prompt` in slot 1 from the cache and in slot 0 from scratch: the same bits."""
    found = cache.match(prompt)
    assert found.tokens == expect
    write_prefix(model.net.cache, 1, found)
    cache.release(found)
    reused = model.net.forward(Batch.sequence(prompt[expect:], expect, 1))
    fresh = model.net.forward(Batch.sequence(prompt, 0, 0))
    assert np.array_equal(reused, fresh)
    assert_same_kv(model, 0, 1, len(prompt))


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_smollm2_reused_prefix_gives_the_bits_of_evaluating_it(smollm2_path: Path,
                                                                kv_type: str) -> None:
    model = Model.load(smollm2_path, n_ctx=1024, n_slots=2, n_threads=2, max_batch=128,
                       kv_type=kv_type)
    try:
        cache = PrefixCache("smollm2", 1 << 28, windows_of(model.net.cache), block_tokens=64)
        first = words(300, 1)
        model.net.forward(Batch.sequence(first, 0, 0))
        publish(model, cache, first, 0)
        # a later prompt sharing 250 tokens (inside the fourth block), then its own 40
        reuse(model, cache, first[:250] + words(40, 2), 250)
        # the whole first prompt and more: every stored token is reused
        reuse(model, cache, first + words(20, 3), 300)
    finally:
        model.close()


# Gemma 3 over 720-token prompts, ~6 s: the full tier; the rings' rules stay in the fast one
# (tests/test_prefix_cache.py, ring layers) with SmolLM2's reuse above
@pytest.mark.full
def test_gemma3_rings_reuse_only_what_their_window_still_holds(gemma3_path: Path) -> None:
    # local layers: window 512 in a ring of 512 + 64 - 1 rows; every 6th layer keeps all 1024
    model = Model.load(gemma3_path, n_ctx=1024, n_slots=2, n_threads=2, max_batch=64)
    try:
        kv = model.net.cache
        windows = windows_of(kv)
        assert 512 in windows and 0 in windows
        cache = PrefixCache("gemma3", 1 << 28, windows, block_tokens=64)
        first = [model.tokenizer.bos_id or 2] + words(699, 4)
        model.net.forward(Batch.sequence(first, 0, 0))
        publish(model, cache, first, 0)       # the rings hold positions 125.. only
        early = [b for b in cache.blocks.values() if b.spec.start < 125]
        assert early and all(any(r is None for r in b.rows) for b in early)
        reuse(model, cache, first[:690] + words(30, 5), 690)   # its window 179..689: held
        # diverging at 600 needs ring rows from 89 on, which are gone: evaluated from 0
        reuse(model, cache, first[:600] + words(30, 6), 0)
    finally:
        model.close()
