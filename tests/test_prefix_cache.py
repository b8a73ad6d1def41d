"""The prompt cache's block store on its own: matching, reference counts, LRU eviction within the
budget, ring layers' optional rows. Rows are small byte arrays whose values name their block."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trio_llm.engine.prefix_cache import BlockSpec, PrefixCache, Rows

B = 4          # tokens per block
ROW = 8        # bytes per position and layer (keys + values: 2 x ROW)


def rows_for(spec: BlockSpec, layers: int = 2, missing: Sequence[int] = ()) -> Rows:
    """Per layer [2][n][ROW] bytes; a layer in `missing` lacks its rows (a ring that lost them)."""
    value = spec.start % 251
    return tuple(None if i in missing else np.full((2, len(spec.tokens), ROW), value, np.uint8)
                 for i in range(layers))


def block_bytes(n: int = B, layers: int = 2) -> int:
    return layers * 2 * n * ROW


def store(tokens: Sequence[int], cache: PrefixCache, missing: Sequence[int] = ()) -> int:
    specs = cache.chain(tokens)
    return cache.insert(specs, [rows_for(s, len(cache.windows), missing) for s in specs])


def test_a_prompt_reuses_the_longest_stored_prefix_short_of_its_last_token() -> None:
    cache = PrefixCache("m", 1 << 20, (0, 0), block_tokens=B, min_reuse=1)
    store(list(range(10)), cache)                        # blocks 0-3, 4-7, and 8-9 (partial)
    assert len(cache.blocks) == 3 and cache.nbytes == 2 * block_bytes() + block_bytes(2)
    assert cache.match(list(range(10))).tokens == 9      # the last token is always evaluated
    assert cache.match(list(range(6)) + [99, 98]).tokens == 6    # inside a block, to the token
    assert cache.match([1, 2, 3]).tokens == 0
    assert cache.match(list(range(20))).tokens == 10


def test_the_same_tokens_under_another_identity_never_match() -> None:
    first = PrefixCache("model-a num_ctx=2048 f16", 1 << 20, (0,), block_tokens=B, min_reuse=1)
    other = PrefixCache("model-a num_ctx=4096 f16", 1 << 20, (0,), block_tokens=B, min_reuse=1)
    store(list(range(12)), first)
    assert {s.key for s in first.chain(range(12))}.isdisjoint(
        s.key for s in other.chain(range(12)))
    specs = first.chain(range(12))
    other.insert(specs, [rows_for(s, 1) for s in specs])   # another model's blocks: refused
    assert not other.blocks and other.match(list(range(13))).tokens == 0


def test_a_match_pins_its_blocks_until_released() -> None:
    cache = PrefixCache("m", block_bytes() * 2, (0, 0), block_tokens=B, min_reuse=1)
    store(list(range(8)), cache)
    found = cache.match(list(range(9)))
    assert found.tokens == 8 and cache.pinned == 2
    assert store([50 + i for i in range(8)], cache) == 0    # nothing may go: no room
    cache.release(found)
    cache.release(found)                                     # twice is harmless
    assert cache.pinned == 0
    assert store([50 + i for i in range(8)], cache) == 2     # now the old chain is evicted
    assert cache.match(list(range(9))).tokens == 0


def test_eviction_is_least_recently_used_and_takes_leaves_before_parents() -> None:
    cache = PrefixCache("m", block_bytes() * 4, (0, 0), block_tokens=B, min_reuse=1)
    store([1, 2, 3, 4, 5, 6, 7, 8], cache)                   # a: two blocks
    store([9, 9, 9, 9, 8, 8, 8, 8], cache)                   # b: two blocks
    cache.release(cache.match([1, 2, 3, 4, 5, 6, 7, 8, 0]))  # a is now the more recent
    store([7, 7, 7, 7], cache)                               # needs one block's room
    for prompt, reused in (([9, 9, 9, 9, 8, 8, 8, 8, 0], 4),    # b lost its leaf only
                           ([1, 2, 3, 4, 5, 6, 7, 8, 0], 8)):
        found = cache.match(prompt)
        assert found.tokens == reused
        cache.release(found)
    assert cache.nbytes <= cache.budget
    for block in cache.blocks.values():
        children = [b for b in cache.blocks.values() if b.spec.parent == block.spec.key]
        assert block.refs == len(children)


def test_a_full_block_replaces_the_partial_one_it_covers() -> None:
    cache = PrefixCache("m", 1 << 20, (0, 0), block_tokens=B, min_reuse=1)
    store([1, 2, 3, 4, 5, 6], cache)                          # 1-4, 5-6
    store([1, 2, 3, 4, 5, 6, 7, 8, 9], cache)                 # 5-8 covers 5-6
    assert len(cache.blocks) == 3
    assert cache.nbytes == 3 * block_bytes(4) - block_bytes(4) + block_bytes(1)
    store([1, 2, 3, 4, 5], cache)                             # 5 alone: already held by 5-8
    assert len(cache.blocks) == 3


def test_a_budget_of_zero_stores_and_serves_nothing() -> None:
    cache = PrefixCache("m", 0, (0, 0), block_tokens=B, min_reuse=1)
    assert not cache.enabled and store(list(range(8)), cache) == 0
    assert cache.match(list(range(9))).tokens == 0 and cache.nbytes == 0


def test_a_block_larger_than_the_budget_is_not_stored() -> None:
    cache = PrefixCache("m", block_bytes() - 1, (0, 0), block_tokens=B, min_reuse=1)
    assert store(list(range(8)), cache) == 0 and not cache.blocks


def test_ring_layers_reuse_a_prefix_only_where_their_window_has_rows() -> None:
    # layer 1 is a ring with a window of 3: the next token sees the 2 positions before it
    cache = PrefixCache("m", 1 << 20, (0, 3), block_tokens=B, min_reuse=1)
    specs = cache.chain(list(range(12)))                      # 0-3, 4-7, 8-11
    cache.insert(specs, [rows_for(specs[0], missing=[1]), rows_for(specs[1], missing=[1]),
                         rows_for(specs[2])])
    assert cache.match(list(range(13))).tokens == 12          # window 10-11: held
    cache.release(cache.match([]))
    # a prompt that leaves the chain at 6 needs positions 4-5 of layer 1: gone, so it falls
    # back to a block start whose window is held; 4 needs 2-3 (gone), 0 needs nothing
    found = cache.match(list(range(6)) + [77, 78])
    assert found.tokens == 0
    cache.release(found)
    # storing the middle block again with its ring rows makes that prefix usable
    cache.insert(specs[:2], [None, rows_for(specs[1])])
    assert cache.match(list(range(6)) + [77, 78]).tokens == 6


def test_the_rows_a_match_hands_out_are_the_blocks_own() -> None:
    cache = PrefixCache("m", 1 << 20, (0,), block_tokens=B, min_reuse=1)
    store(list(range(8)), cache)
    found = cache.match(list(range(7)) + [1])
    assert [(b.spec.start, n) for b, n in found.parts] == [(0, 4), (4, 3)]
    assert all(int(b.rows[0][0, 0, 0]) == b.spec.start for b, _ in found.parts)


def test_gaining_ring_rows_never_evicts_the_block_that_gains_them() -> None:
    cache = PrefixCache("m", block_bytes(), (0, 3), block_tokens=B, min_reuse=1)
    [spec] = cache.chain([1, 2, 3, 4])
    cache.insert([spec], [rows_for(spec, missing=[1])])
    assert cache.nbytes == block_bytes() // 2
    assert cache.insert([spec], [rows_for(spec)]) == 1       # fits once the ring rows are in
    assert cache.nbytes == block_bytes() and cache.blocks[spec.key].rows[1] is not None
    small = PrefixCache("m", block_bytes() - 1, (0, 3), block_tokens=B, min_reuse=1)
    small.insert([spec], [rows_for(spec, missing=[1])])
    assert small.insert([spec], [rows_for(spec)]) == 1       # no room: keeps what it had
    assert small.nbytes == block_bytes() // 2 and small.blocks[spec.key].rows[1] is None


def test_a_match_shorter_than_min_reuse_is_not_taken() -> None:
    """Evaluating a few prompt rows costs less than the compute turn that would copy them."""
    cache = PrefixCache("m", 1 << 20, (0,), block_tokens=B, min_reuse=6)
    store(list(range(8)), cache)
    short = cache.match([0, 1, 2, 3, 4, 9, 9])             # 5 stored tokens: too few
    long = cache.match(list(range(7)) + [9])               # 7
    assert short.tokens == 0 and not short.parts and long.tokens == 7
