"""Paged KV cache: a pool of fixed-size blocks, as vLLM's ``kv_cache_manager`` / ``block_pool``.

A request holds ``ceil(num_computed_tokens / block_size)`` blocks. Without prefix caching only
the count of free blocks matters, so :class:`KVCacheManager` keeps counts (fast). With prefix
caching, blocks are real objects with reference counts and the hash of the prompt prefix they
hold; a freed block keeps its hash and can be hit again until it is recycled, and recycling
takes the least recently freed block first (LRU). A request frees its blocks tail first, so
the shared prefix blocks of a conversation are the last to be evicted.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict

from simkit.request import Request

__all__ = ["KVCacheManager"]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _FreeBlockQueue:
    """Free block ids in eviction order (least recently freed first), materialized lazily.

    Behaves like ``OrderedDict.fromkeys(range(num_blocks))`` used as a queue: blocks never
    used yet (ids >= ``_next_fresh``) come first, in id order, then freed blocks in the order
    they were freed. Only used blocks take memory, so a cache of 1e9 (or 1e25) blocks costs
    nothing until it is filled (an eager list raised OverflowError / filled memory).
    """

    __slots__ = ("_freed", "_next_fresh", "_num_blocks")

    def __init__(self, num_blocks: int) -> None:
        self._num_blocks = num_blocks
        self._next_fresh = 0
        self._freed: OrderedDict[int, None] = OrderedDict()

    def popitem(self, last: bool = False) -> tuple[int, None]:
        """Take the next block to recycle (``last`` must be False: the LRU end)."""
        assert not last
        if self._next_fresh < self._num_blocks:
            block = self._next_fresh
            self._next_fresh += 1
            return block, None
        return self._freed.popitem(last=False)

    def __delitem__(self, block: int) -> None:
        del self._freed[block]  # only a used (hashed) block can be taken back by a prefix hit

    def __setitem__(self, block: int, value: None) -> None:
        self._freed[block] = value

    def __len__(self) -> int:
        return self._num_blocks - self._next_fresh + len(self._freed)


class KVCacheManager:
    """Allocates blocks to requests; optionally shares prompt-prefix blocks by hash."""

    def __init__(self, num_gpu_blocks: int, block_size: int, *,
                 enable_prefix_caching: bool = False) -> None:
        self.num_gpu_blocks = num_gpu_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._num_free = num_gpu_blocks
        if enable_prefix_caching:
            # per block id, filled on first use (the pool may be huge)
            self._ref_cnt: defaultdict[int, int] = defaultdict(int)
            self._block_hash: defaultdict[int, int | None] = defaultdict(lambda: None)
            self._cached: dict[int, int] = {}  # prefix hash -> block id
            # free blocks in eviction order (least recently freed first)
            self._free_queue = _FreeBlockQueue(num_gpu_blocks)
        # statistics
        self.num_prefix_queries = 0
        self.num_prefix_hit_tokens = 0
        self.num_prefix_query_tokens = 0

    # ------------------------------------------------------------------------------ queries
    @property
    def num_free_blocks(self) -> int:
        return self._num_free

    @property
    def num_used_blocks(self) -> int:
        return self.num_gpu_blocks - self._num_free

    def blocks_needed(self, num_tokens: int) -> int:
        return _cdiv(num_tokens, self.block_size)

    def get_computed_blocks(self, request: Request) -> list[int]:
        """Leading prompt blocks already resident (prefix hits), at most prompt − 1 tokens.

        Only called for a request with nothing computed (new or preempted). Statistics are
        recorded on admission (:meth:`record_hit`), so a head that waits several steps counts
        once, whatever the engine mode.
        """
        if not self.enable_prefix_caching:
            return []
        hashes = request.block_hashes or ()
        max_blocks = min(len(hashes), (request.num_prompt_tokens - 1) // self.block_size)
        hits: list[int] = []
        for h in hashes[:max_blocks]:
            block = self._cached.get(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def take_blocks(self, count: int) -> None:
        """Counting mode: ``count`` blocks leave the free pool (decode-group growth)."""
        self._num_free -= count

    def _take_free_block(self) -> int:
        """Recycle the least recently freed block: forget its hash, give it one reference."""
        block, _none = self._free_queue.popitem(last=False)
        old = self._block_hash[block]
        if old is not None:
            if self._cached.get(old) == block:
                del self._cached[old]
            self._block_hash[block] = None
        self._ref_cnt[block] = 1
        return block

    def append_block(self, request: Request) -> None:
        """Prefix mode: give ``request`` one more block, recycling the LRU free block."""
        assert request.block_ids is not None
        request.block_ids.append(self._take_free_block())
        request.num_blocks += 1
        self._num_free -= 1

    def record_hit(self, request: Request, num_tokens: int) -> None:
        """An admitted request's prefix lookup: its prompt tokens, ``num_tokens`` of them hit."""
        self.num_prefix_queries += 1
        self.num_prefix_query_tokens += request.num_prompt_tokens
        self.num_prefix_hit_tokens += num_tokens

    # ----------------------------------------------------------------------------- changes
    def can_allocate(self, request: Request, num_new_tokens: int,
                     computed_blocks: list[int] | None = None) -> bool:
        """Whether :meth:`allocate_slots` would succeed (no state change)."""
        return self._shortfall(request, num_new_tokens, computed_blocks) <= 0

    def _shortfall(self, request: Request, num_new_tokens: int,
                   computed_blocks: list[int] | None) -> int:
        num_computed = request.num_computed_tokens
        held = request.num_blocks
        evictable_hits = 0
        if computed_blocks:
            num_computed = len(computed_blocks) * self.block_size
            held = len(computed_blocks)
            evictable_hits = sum(1 for b in computed_blocks if self._ref_cnt[b] == 0)
        need = _cdiv(num_computed + num_new_tokens, self.block_size) - held
        return need - (self._num_free - evictable_hits)

    def allocate_slots(self, request: Request, num_new_tokens: int,
                       computed_blocks: list[int] | None = None) -> bool:
        """Give ``request`` blocks for ``num_new_tokens`` more positions; False if short.

        ``computed_blocks`` (prefix hits from :meth:`get_computed_blocks`) are shared first;
        the request's ``num_computed_tokens`` must then be 0 and is set by the caller.
        """
        if self._shortfall(request, num_new_tokens, computed_blocks) > 0:
            return False
        if not self.enable_prefix_caching:
            need = _cdiv(request.num_computed_tokens + num_new_tokens, self.block_size) \
                - request.num_blocks
            if need > 0:
                request.num_blocks += need
                self._num_free -= need
            return True
        if request.block_ids is None:
            request.block_ids = []
        for block in computed_blocks or ():
            if self._ref_cnt[block] == 0:
                del self._free_queue[block]
                self._num_free -= 1
            self._ref_cnt[block] += 1
            request.block_ids.append(block)
        request.num_blocks = len(request.block_ids)
        base = len(computed_blocks) * self.block_size if computed_blocks else \
            request.num_computed_tokens
        need = _cdiv(base + num_new_tokens, self.block_size) - request.num_blocks
        for _ in range(need):
            request.block_ids.append(self._take_free_block())
        self._num_free -= max(need, 0)
        request.num_blocks = len(request.block_ids)
        return True

    def cache_full_blocks(self, request: Request) -> None:
        """Publish the hashes of the request's newly completed prompt blocks for reuse."""
        if not self.enable_prefix_caching or not request.block_hashes or not request.block_ids:
            return
        full = min(request.num_computed_tokens // self.block_size, len(request.block_hashes),
                   len(request.block_ids))
        start = request.num_hashed_blocks
        if full <= start:
            return
        request.num_hashed_blocks = full
        for j in range(start, full):
            block = request.block_ids[j]
            if self._block_hash[block] is not None:
                continue
            h = request.block_hashes[j]
            self._block_hash[block] = h
            self._cached.setdefault(h, block)

    def free(self, request: Request) -> None:
        """Release all of the request's blocks (tail first; hashed blocks stay hittable)."""
        if not self.enable_prefix_caching:
            self._num_free += request.num_blocks
            request.num_blocks = 0
            return
        for block in reversed(request.block_ids or ()):
            self._ref_cnt[block] -= 1
            if self._ref_cnt[block] == 0:
                self._free_queue[block] = None
                self._num_free += 1
        request.block_ids = []
        request.num_blocks = 0
        request.num_hashed_blocks = 0
