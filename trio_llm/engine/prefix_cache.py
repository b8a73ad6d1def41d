"""The prompt cache: KV of earlier prompts kept in blocks, reused by any later prompt that starts
with the same tokens (a system prompt, tools, a chat's earlier turns), on any slot.

A block holds up to BLOCK_TOKENS consecutive positions: their token ids and, per layer, the
keys' and values' rows exactly as the cache type stores them. Its key hashes the store's
identity (model, context, cache type: whatever changes what the KV holds) and every token from
position 0 to the block's end, so equal keys mean equal KV. Blocks form a tree (a block's
parent holds the positions just before it); the last block of a prompt may be partial.

Reuse is exact to the token: the longest common prefix of a prompt with the stored blocks (the
first rows of a block whose tokens match only at first are just as valid), never the prompt's
last token, whose logits must be computed. A sliding-window layer's ring keeps only its newest
positions, so a block may lack that layer's rows; a prefix is reused only as far as every ring
layer has the rows its window still needs (the rest is evaluated again). Only rows computed as
prompt rows are stored: a generated token's rows come from the decode path, whose bits differ
from what evaluating the same tokens as a prompt gives, and cached KV must equal recomputed KV
(the runner evaluates a finished answer again as prompt rows to store it).

Blocks are reference-counted (by their child blocks and by the requests copying from them) and
evicted least recently used, unreferenced ones first, to stay within the byte budget that the
model's memory plan counts. The store itself is plain bookkeeping (no locks): the runner calls
it from the event loop and copies rows in worker threads (`read_blocks`, `write_prefix`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trio_llm.engine.context import common_prefix
from trio_llm.engine.kv_cache import KVCache

BLOCK_TOKENS = 64
# A shorter match is not reused: evaluating that many prompt rows costs less than waiting for
# the compute turn that copies them into the slot (a whole step when others are running).
MIN_REUSE_TOKENS = 32
Rows = tuple[np.ndarray | None, ...]   # per layer: uint8 [2][n][row bytes] (keys, values)


@dataclass(frozen=True)
class BlockSpec:
    """Where a block sits in a prompt: its key, its parent's key, its first position, its
    tokens (the whole block for all but a prompt's partial last one)."""

    key: bytes
    parent: bytes
    start: int
    tokens: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


@dataclass(eq=False)
class CachedBlock:
    """A stored block: its place, its rows (None for a ring layer that no longer held them)."""

    spec: BlockSpec
    rows: Rows
    refs: int = 0           # child blocks + requests copying from it; evictable at 0

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.rows if r is not None)


@dataclass
class PrefixMatch:
    """The blocks a prompt reuses, each with how many of its first tokens; pinned (refs held)
    until `PrefixCache.release`."""

    parts: list[tuple[CachedBlock, int]] = field(default_factory=list)
    released: bool = False

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.parts)


def _digest(parent: bytes, tokens: Sequence[int]) -> bytes:
    data = np.asarray(tokens, dtype=np.int32).tobytes()
    return hashlib.blake2b(parent + data, digest_size=16).digest()


def _covers(new: Rows, old: Rows) -> bool:
    """Whether `new` has every layer's rows that `old` has."""
    return all(n is not None or o is None for n, o in zip(new, old, strict=True))


class PrefixCache:
    """Blocks of earlier prompts' KV for one loaded model, within `budget` bytes.

    windows: per layer, 0 if it keeps every position, else the sliding window of a ring layer
    (its rows are optional in a block)."""

    def __init__(self, identity: str, budget: int, windows: Sequence[int],
                 block_tokens: int = BLOCK_TOKENS, min_reuse: int = MIN_REUSE_TOKENS) -> None:
        self.root = hashlib.blake2b(identity.encode(), digest_size=16).digest()
        self.min_reuse = min_reuse
        self.budget, self.windows, self.block_tokens = budget, tuple(windows), block_tokens
        self.blocks: OrderedDict[bytes, CachedBlock] = OrderedDict()   # least recent first
        self.children: dict[bytes, set[bytes]] = {}
        self.nbytes = 0
        self.evicted = 0        # blocks dropped for room, over the store's life

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    @property
    def pinned(self) -> int:
        """Blocks held by requests (beyond their children's references), for tests and ps."""
        return sum(b.refs - len(self.children.get(k, ())) for k, b in self.blocks.items())

    def chain(self, tokens: Sequence[int]) -> list[BlockSpec]:
        """The blocks `tokens` falls into, from position 0 (the last one possibly partial)."""
        specs, parent = [], self.root
        for start in range(0, len(tokens), self.block_tokens):
            part = tuple(tokens[start: start + self.block_tokens])
            key = _digest(parent, part)
            specs.append(BlockSpec(key, parent, start, part))
            parent = key
        return specs

    # -- reuse ----------------------------------------------------------------------------------
    def match(self, prompt: Sequence[int]) -> PrefixMatch:
        """The longest stored prefix of `prompt` short of its last token that every ring layer
        can use, pinned; an empty match when nothing fits, when it is shorter than
        `min_reuse` tokens, or when the cache is off."""
        found = PrefixMatch()
        limit, parent, pos = len(prompt) - 1, self.root, 0
        while self.enabled and pos < limit:
            want = prompt[pos: min(pos + self.block_tokens, limit)]
            best: CachedBlock | None = None
            best_n = 0
            whole = self.blocks.get(_digest(parent, want)) if len(want) == self.block_tokens \
                else None
            if whole is not None and whole.spec.tokens == tuple(want):
                best, best_n = whole, len(want)
            else:
                for key in self.children.get(parent, ()):
                    block = self.blocks[key]
                    n = common_prefix(block.spec.tokens, want)
                    if n > best_n:
                        best, best_n = block, n
            if best is None:
                break
            found.parts.append((best, best_n))
            pos += best_n
            if best_n < self.block_tokens:
                break
            parent = best.spec.key
        found.parts = self._usable(found.parts)
        if found.tokens < self.min_reuse:
            found.parts = []
        for block, _ in found.parts:
            block.refs += 1
            self.blocks.move_to_end(block.spec.key)
        return found

    def _usable(self, parts: list[tuple[CachedBlock, int]]) -> list[tuple[CachedBlock, int]]:
        """The longest head of `parts` whose end every ring layer's window finds in the blocks."""
        ends = [sum(n for _, n in parts)] + [b.spec.start for b, _ in reversed(parts)]
        for end in ends:
            if self._ring_ok(parts, end):
                head = [(b, min(n, end - b.spec.start)) for b, n in parts if b.spec.start < end]
                return head
        return []

    def _ring_ok(self, parts: list[tuple[CachedBlock, int]], end: int) -> bool:
        for layer, window in enumerate(self.windows):
            if not window:
                continue
            low = max(0, end - window + 1)
            for block, n in parts:
                start = block.spec.start
                if start < end and start + n > low and block.rows[layer] is None:
                    return False
        return True

    def release(self, found: PrefixMatch) -> None:
        """Unpin a match's blocks (once; safe to call again)."""
        if not found.released:
            found.released = True
            for block, _ in found.parts:
                block.refs -= 1

    # -- storing --------------------------------------------------------------------------------
    def wanted(self, specs: Sequence[BlockSpec], has_rows: Sequence[bool]) -> list[bool]:
        """Per spec, whether storing it would add anything: it is missing, or it could now hold
        ring rows the stored one lacks (`has_rows`: whether the caller still has them)."""
        out = []
        for spec, ring in zip(specs, has_rows, strict=True):
            block = self.blocks.get(spec.key)
            out.append(block is None or (ring and any(r is None for r in block.rows)))
        return out

    def insert(self, specs: Sequence[BlockSpec], rows: Sequence[Rows | None]) -> int:
        """Store a chain of blocks from position 0 (rows None: expected stored already), evicting
        what the budget needs; stops at the first block that cannot be stored. Returns how many
        of the chain are stored afterwards."""
        held: list[CachedBlock] = []
        try:
            for spec, block_rows in zip(specs, rows, strict=True):
                block = self._put(spec, block_rows)
                if block is None:
                    return len(held)
                block.refs += 1                 # the chain stays while its rest goes in
                held.append(block)
            return len(held)
        finally:
            for block in held:
                block.refs -= 1

    def _put(self, spec: BlockSpec, rows: Rows | None) -> CachedBlock | None:
        if spec.parent != self.root and spec.parent not in self.blocks:
            return None
        block = self.blocks.get(spec.key)
        if block is not None:
            if rows is not None and not _covers(block.rows, rows) and _covers(rows, block.rows):
                grows = CachedBlock(spec, rows).nbytes - block.nbytes
                block.refs += 1                 # never evicted to make its own room
                try:
                    if self._make_room(grows):
                        self.nbytes += grows
                        block.rows = rows
                finally:
                    block.refs -= 1
            self.blocks.move_to_end(spec.key)
            return block
        if rows is None or not self.enabled:
            return None
        siblings = [self.blocks[k] for k in self.children.get(spec.parent, ())]
        for other in siblings:                  # a longer sibling already holds these rows
            if other.spec.tokens[: len(spec.tokens)] == spec.tokens and _covers(other.rows, rows):
                self.blocks.move_to_end(other.spec.key)
                return other if len(other.spec.tokens) == len(spec.tokens) else None
        for other in siblings:                  # ... or this one covers a shorter sibling
            if (other.refs == 0 and spec.tokens[: len(other.spec.tokens)] == other.spec.tokens
                    and _covers(rows, other.rows)):
                self._drop(other)
        block = CachedBlock(spec, rows)
        if not self._make_room(block.nbytes):
            return None
        self.blocks[spec.key] = block
        self.nbytes += block.nbytes
        self.children.setdefault(spec.parent, set()).add(spec.key)
        if spec.parent != self.root:
            self.blocks[spec.parent].refs += 1
        return block

    def _make_room(self, nbytes: int) -> bool:
        """Evict unreferenced blocks, least recently used first, until `nbytes` more fit."""
        if nbytes > self.budget:
            return False
        while self.nbytes + nbytes > self.budget:
            victim = next((b for b in self.blocks.values() if b.refs == 0), None)
            if victim is None:
                return False
            self._drop(victim)
            self.evicted += 1
        return True

    def _drop(self, block: CachedBlock) -> None:
        key, parent = block.spec.key, block.spec.parent
        del self.blocks[key]
        self.nbytes -= block.nbytes
        siblings = self.children.get(parent)
        if siblings is not None:
            siblings.discard(key)
            if not siblings:
                del self.children[parent]
        if parent in self.blocks:
            self.blocks[parent].refs -= 1

    def clear(self) -> None:
        """Forget every block (the model is unloading)."""
        self.blocks.clear()
        self.children.clear()
        self.nbytes = 0


# -- copying rows between a slot and blocks (worker threads) -----------------------------------
def windows_of(cache: KVCache) -> tuple[int, ...]:
    """Per layer of `cache`: 0 if it keeps every position, else its ring's window."""
    return tuple(lay.window if cache.is_ring(i) else 0 for i, lay in enumerate(cache.layers))


def ring_rows_held(cache: KVCache, position: int, start: int) -> bool:
    """Whether every ring layer of a slot that has stored `position` positions still holds the
    rows from `start` on."""
    return all(start >= position - lay.n_cache
               for i, lay in enumerate(cache.layers) if cache.is_ring(i))


def read_blocks(cache: KVCache, slot: int, position: int, specs: Sequence[BlockSpec]
                ) -> list[Rows]:
    """Copy each block's rows out of a slot that has stored `position` positions (a ring layer
    gives None for a block it no longer holds whole)."""
    out = []
    for spec in specs:
        rows: list[np.ndarray | None] = []
        for i, lay in enumerate(cache.layers):
            keys, values = cache.slot_rows(i, slot)
            if not cache.is_ring(i):
                rows.append(np.stack((keys[spec.start: spec.end], values[spec.start: spec.end])))
            elif spec.start >= position - lay.n_cache:
                at = np.arange(spec.start, spec.end) % lay.n_cache
                rows.append(np.stack((keys[at], values[at])))
            else:
                rows.append(None)
        out.append(tuple(rows))
    return out


def write_prefix(cache: KVCache, slot: int, found: PrefixMatch) -> None:
    """Copy a match's rows into a slot, at their positions: every position of a full layer,
    the window's last positions of a ring layer (those the next token can still see)."""
    end = found.tokens
    for i, lay in enumerate(cache.layers):
        keys, values = cache.slot_rows(i, slot)
        ring = cache.is_ring(i)
        low = max(0, end - lay.window + 1) if ring else 0
        for block, n in found.parts:
            a, b = max(block.spec.start, low), block.spec.start + n
            if a >= b:
                continue
            src = block.rows[i]
            assert src is not None, "a match never uses a block without its ring rows"
            rows = src[:, a - block.spec.start: b - block.spec.start]
            at = np.arange(a, b) % lay.n_cache if ring else slice(a, b)
            keys[at], values[at] = rows[0], rows[1]
