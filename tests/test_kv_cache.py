"""Paged KV cache (spec 2.4): block counts, shared prefix blocks with reference counts, LRU
recycling of freed blocks that stay hittable until recycled, prefix hits capped at prompt - 1.
"""

from __future__ import annotations

import pytest

from simkit.kv_cache import KVCacheManager
from simkit.request import Request


def req(i: int, prompt: int, hashes: tuple[int, ...] | None = None) -> Request:
    return Request(i, 0.0, prompt, 4, block_hashes=hashes)


def prefill(kv: KVCacheManager, r: Request) -> None:
    """Admit ``r`` with its prefix hits, compute its whole prompt, publish its blocks."""
    hits = kv.get_computed_blocks(r)
    cached = len(hits) * kv.block_size
    assert kv.allocate_slots(r, r.num_prompt_tokens - cached, hits)
    r.num_computed_tokens = r.num_prompt_tokens
    kv.cache_full_blocks(r)


@pytest.mark.parametrize("caching", [False, True])
def test_block_counting(caching: bool) -> None:
    kv = KVCacheManager(10, 16, enable_prefix_caching=caching)
    assert [kv.blocks_needed(n) for n in (1, 16, 17, 32, 33)] == [1, 1, 2, 2, 3]
    a = req(0, 17)
    assert kv.allocate_slots(a, 17)  # ceil(17/16) = 2 blocks
    assert a.num_blocks == 2
    assert kv.num_free_blocks == 8
    a.num_computed_tokens = 17
    assert kv.allocate_slots(a, 15)  # 32 positions: still 2 blocks
    assert kv.num_free_blocks == 8
    a.num_computed_tokens = 32
    assert kv.allocate_slots(a, 1)  # position 33 -> a third block
    assert kv.num_free_blocks == 7
    b = req(1, 7 * 16 + 1)
    assert not kv.can_allocate(b, 7 * 16 + 1)  # needs 8 of 7 free
    assert not kv.allocate_slots(b, 7 * 16 + 1)
    assert kv.num_free_blocks == 7  # a failed allocation changes nothing
    assert kv.allocate_slots(b, 7 * 16)
    assert kv.num_free_blocks == 0
    kv.free(a)
    assert kv.num_free_blocks == 3
    assert a.num_blocks == 0
    kv.free(b)
    assert kv.num_free_blocks == 10


def test_shared_prefix_blocks_are_reference_counted() -> None:
    kv = KVCacheManager(8, 4, enable_prefix_caching=True)
    a = req(0, 9, (11, 12))  # 2 full blocks + 1 token = 3 blocks
    prefill(kv, a)
    assert kv.num_used_blocks == 3
    b = req(1, 9, (11, 12))
    hits = kv.get_computed_blocks(b)
    assert hits == a.block_ids[:2]
    assert kv.allocate_slots(b, 1, hits)
    b.num_computed_tokens = 9
    assert kv.num_used_blocks == 4  # 3 + one of B's own; the 2 prefix blocks count once
    assert b.block_ids[:2] == a.block_ids[:2]
    assert b.block_ids[2] != a.block_ids[2]
    kv.free(a)
    assert kv.num_used_blocks == 3  # shared blocks still held by B
    c = req(2, 9, (11, 12))
    assert kv.get_computed_blocks(c) == b.block_ids[:2]
    kv.free(b)
    assert kv.num_used_blocks == 0
    assert kv.num_free_blocks == 8


def test_freed_hashed_blocks_stay_hittable_until_recycled_lru() -> None:
    # 4 blocks of 4. A holds blocks with hashes (10, 11), B (20, 21); both freed, A first.
    # Freeing goes tail first, so the free queue is [A1, A0, B1, B0]: the least recently
    # freed block is recycled first.
    kv = KVCacheManager(4, 4, enable_prefix_caching=True)
    a = req(0, 8, (10, 11))
    b = req(1, 8, (20, 21))
    prefill(kv, a)
    prefill(kv, b)
    a0, a1 = a.block_ids
    b0, b1 = b.block_ids
    kv.free(a)
    kv.free(b)
    assert kv.num_free_blocks == 4
    # all four still hittable (prompts of 9 allow 2 whole blocks)
    assert kv.get_computed_blocks(req(2, 9, (10, 11))) == [a0, a1]
    assert kv.get_computed_blocks(req(3, 9, (20, 21))) == [b0, b1]
    # a request without hashes takes one block: A's tail block (hash 11) is recycled
    c = req(4, 4)
    assert kv.allocate_slots(c, 4)
    assert c.block_ids == [a1]
    assert kv.get_computed_blocks(req(5, 9, (10, 11))) == [a0]  # stops at the first miss
    assert kv.get_computed_blocks(req(6, 9, (20, 21))) == [b0, b1]
    # next recycled: a0, then b1, then b0
    d = req(7, 12)
    assert kv.allocate_slots(d, 12)
    assert d.block_ids == [a0, b1, b0]
    assert kv.get_computed_blocks(req(8, 9, (10, 11))) == []
    assert kv.get_computed_blocks(req(9, 9, (20, 21))) == []


def test_a_hit_on_a_free_block_takes_it_out_of_the_free_pool() -> None:
    kv = KVCacheManager(3, 4, enable_prefix_caching=True)
    a = req(0, 8, (10, 11))
    prefill(kv, a)
    kv.free(a)
    b = req(1, 9, (10, 11))
    hits = kv.get_computed_blocks(b)
    assert len(hits) == 2
    # 2 hit blocks (free, evictable) + 1 new = all 3 blocks: fits
    assert kv.can_allocate(b, 1, hits)
    assert kv.allocate_slots(b, 1, hits)
    assert kv.num_free_blocks == 0
    # a request needing 2 more blocks on top of 2 free hits in a 3-block pool does not fit
    kv2 = KVCacheManager(3, 4, enable_prefix_caching=True)
    a2 = req(0, 8, (10, 11))
    prefill(kv2, a2)
    kv2.free(a2)
    big = req(1, 13, (10, 11, 12))
    hits = kv2.get_computed_blocks(big)
    assert len(hits) == 2
    assert not kv2.can_allocate(big, 5, hits)  # 13 positions = 4 blocks > 3


@pytest.mark.parametrize("prompt, expected_blocks", [
    (8, 1),  # 2 full blocks cached, but at most 7 tokens may hit -> 1 block
    (9, 2),  # 8 <= 9 - 1
    (5, 1),
    (4, 0),  # 3 tokens can't hold a whole block
    (1, 0),
])
def test_prefix_hit_is_capped_at_prompt_minus_one(prompt: int, expected_blocks: int) -> None:
    kv = KVCacheManager(8, 4, enable_prefix_caching=True)
    prefill(kv, req(0, 12, (1, 2, 3)))
    n = prompt // 4
    hits = kv.get_computed_blocks(req(1, prompt, (1, 2, 3)[:n]))
    assert len(hits) == expected_blocks
    assert len(hits) * 4 <= prompt - 1


def test_no_hits_without_prefix_caching() -> None:
    kv = KVCacheManager(8, 4, enable_prefix_caching=False)
    a = req(0, 9, (11, 12))
    assert kv.allocate_slots(a, 9)
    a.num_computed_tokens = 9
    kv.cache_full_blocks(a)
    assert kv.get_computed_blocks(req(1, 9, (11, 12))) == []
