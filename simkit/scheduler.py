"""One scheduling step of vLLM's v1 scheduler (spec section 2.2), in small pieces.

``schedule()`` fills a token budget of ``max_num_batched_tokens``:

1. *running pass* — running requests in running order each get their remaining positions
   (rest of the prompt, or 1 to decode), capped by the budget and, for prefills, by
   ``long_prefill_token_threshold``. If the block pool is short, the policy's victim among
   running requests not yet scheduled this step is preempted (blocks freed, computed tokens
   reset: recompute) and put back at the front of the waiting queue; if the victim would be the
   request itself, it is preempted and the pass stops.
2. *waiting pass* — only if nothing was preempted: waiting requests in policy order join
   while budget and ``max_num_seqs`` allow; prefix-cache hits count as computed; without
   chunked prefill a prompt that does not fit the remaining budget waits (FCFS: blocks the
   queue; other policies: skipped this step); a failed block allocation stops admission.

``update()`` applies a step's outcome at its end time: computed tokens advance, a request
whose computed tokens reach ``prompt + outputs`` samples a token, and finished requests free
their blocks at once — so they are gone before the next step allocates anything.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from simkit.config import Config
from simkit.decode_group import DecodeGroup
from simkit.kv_cache import KVCacheManager
from simkit.perf import PerfModel
from simkit.policy import Policy
from simkit.request import Request, RequestStatus

__all__ = ["Scheduler", "SchedulerOutput", "WaitingQueue"]


@dataclass(slots=True)
class SchedulerOutput:
    """One step's decision: who computes how many positions, and the batch sums for perf."""

    requests: list[Request] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    num_tokens: int = 0
    num_group: int = 0  # decode-group members, one decode token each (fast mode)
    num_prefill_tokens: int = 0
    attn_work: float = 0.0
    kv_tokens: float = 0.0

    @property
    def num_seqs(self) -> int:
        return self.num_group + len(self.requests)

    def add(self, request: Request, num_new: int, perf: PerfModel) -> None:
        self.requests.append(request)
        self.num_new_tokens.append(num_new)
        self.num_tokens += num_new
        c = request.num_computed_tokens
        if num_new > 1 or request.num_output_tokens == 0 or c + 1 != request.num_tokens:
            self.num_prefill_tokens += num_new  # prompt, chunk or recompute
        attn, kv = perf.attention_sums(num_new, c)
        self.attn_work += attn
        self.kv_tokens += kv


class WaitingQueue:
    """Waiting requests: FCFS deque (preempted go to the front) or a policy-ordered heap."""

    def __init__(self, policy: Policy) -> None:
        self.fcfs = policy.name == "fcfs"
        self._key = policy.admit_key
        self._deque: deque[Request] = deque()
        self._heap: list[tuple[object, int, Request]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._deque) if self.fcfs else len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._deque) if self.fcfs else bool(self._heap)

    def add(self, request: Request) -> None:
        if self.fcfs:
            self._deque.append(request)
        else:
            self._seq += 1
            heapq.heappush(self._heap, (self._key(request), self._seq, request))

    def add_front(self, request: Request) -> None:
        """A preempted request: first in line under FCFS, by its key otherwise."""
        if self.fcfs:
            self._deque.appendleft(request)
        else:
            self.add(request)

    def peek(self) -> Request:
        return self._deque[0] if self.fcfs else self._heap[0][2]

    def pop(self) -> Request:
        return self._deque.popleft() if self.fcfs else heapq.heappop(self._heap)[2]

    def __iter__(self) -> Iterator[Request]:
        if self.fcfs:
            return iter(self._deque)
        return (item[2] for item in sorted(self._heap))


class Scheduler:
    """Running requests, waiting queue and KV cache of one replica.

    The running order is ``group members`` (fast mode only, see
    :mod:`simkit.decode_group`) followed by ``tail``, the requests handled one by one. In
    exact mode the group is never used and ``tail`` is the whole running list. A fast-mode step
    uses the group in aggregate when that cannot change any decision (every member gets its
    token and its blocks); otherwise the group is dissolved into the tail and the step runs the
    exact per-request algorithm, so both modes make the same decisions.
    """

    def __init__(self, config: Config, kv: KVCacheManager, policy: Policy,
                 perf: PerfModel, *, aggregate: bool = False) -> None:
        sc = config.scheduler
        self.max_num_batched_tokens = sc.max_num_batched_tokens
        self.max_num_seqs = sc.max_num_seqs
        self.chunked = sc.enable_chunked_prefill
        self.threshold = sc.long_prefill_token_threshold
        self.max_partial = sc.max_num_partial_prefills
        self.preemption_free = sc.enable_preemption_free
        self.prefix_caching = sc.enable_prefix_caching
        self.max_seq_len = config.model.max_seq_len
        self.block_size = sc.block_size
        self.kv = kv
        self.policy = policy
        self.perf = perf
        self.tail: list[Request] = []
        use_group = aggregate and not perf.sliding_window
        self.group = DecodeGroup(sc.block_size, prefix=sc.enable_prefix_caching) \
            if use_group else None
        self.waiting = WaitingQueue(policy)
        self.num_preemptions = 0
        self.last_num_emitted = 0
        self._reserved_blocks = 0  # preemption-free admission: Σ blocks at full length

    # ------------------------------------------------------------------------------ views
    @property
    def num_running(self) -> int:
        group = self.group
        return len(self.tail) + group.n if group is not None else len(self.tail)

    @property
    def running(self) -> list[Request]:
        """Running requests in running order (group members' fields may be stale)."""
        if self.group is None or not self.group.n:
            return self.tail
        return [*self.group.members.values(), *self.tail]

    # -------------------------------------------------------------------------- admission
    def rejection_reason(self, request: Request) -> str | None:
        """Why a request can never complete here (checked on arrival), or None."""
        p, total = request.num_prompt_tokens, request.num_prompt_tokens + request.max_tokens
        if p > self.max_seq_len:
            return f"prompt of {p} tokens exceeds max_seq_len {self.max_seq_len}"
        if total > self.max_seq_len:
            return (f"prompt + max_tokens = {total} tokens exceeds max_seq_len "
                    f"{self.max_seq_len}")
        blocks = self.kv.blocks_needed(request.max_total_tokens)
        if blocks > self.kv.num_gpu_blocks:
            return (f"needs {blocks} KV blocks ({request.max_total_tokens} tokens), the whole "
                    f"cache has {self.kv.num_gpu_blocks}")
        if not self.chunked and p > self.max_num_batched_tokens:
            return (f"prompt of {p} tokens exceeds max_num_batched_tokens "
                    f"{self.max_num_batched_tokens} with chunked prefill disabled")
        return None

    def add_request(self, request: Request) -> None:
        request.status = RequestStatus.WAITING
        self.waiting.add(request)

    # ---------------------------------------------------------------------------- schedule
    def schedule(self) -> SchedulerOutput:
        group = self.group
        if group is not None and group.n:
            out = self._schedule_aggregated(group)
            if out is not None:
                return out
            self.tail = group.dissolve() + self.tail
        out = SchedulerOutput()
        budget = self._schedule_running(out, self.max_num_batched_tokens)
        if not out.preempted:
            self._schedule_waiting(out, budget)
        return out

    def _cap(self, request: Request, num_new: int, budget: int) -> int:
        # the threshold caps prefill chunks only when chunked prefill is on (spec 2.2)
        if self.chunked and self.threshold and num_new > 1 and num_new > self.threshold:
            num_new = self.threshold
        return min(num_new, budget)

    def _schedule_aggregated(self, group: DecodeGroup) -> SchedulerOutput | None:
        """The running pass with the group in aggregate, or None if that could differ from
        the exact pass (budget or blocks short: someone would be skipped or preempted)."""
        n = group.n
        budget = self.max_num_batched_tokens - n
        if budget < 0:
            return None
        need = group.blocks_needed_now()
        plan: list[tuple[Request, int]] = []
        left = budget
        for request in self.tail:
            if left <= 0:
                break
            num_new = self._cap(request, request.num_remaining_tokens, left)
            need += -(-(request.num_computed_tokens + num_new) // self.block_size) \
                - request.num_blocks
            plan.append((request, num_new))
            left -= num_new
        out = SchedulerOutput()
        if need > self.kv.num_free_blocks:
            if not self._preempt_suffix(group, plan, need - self.kv.num_free_blocks, out):
                return None
            n = group.n
        out.num_group = n
        total = float(group.total_computed + n)
        out.num_tokens = n
        out.attn_work = total
        out.kv_tokens = total
        if group.buckets is not None:
            for request in group.bucket_now().values():
                self.kv.append_block(request)
        else:
            self.kv.take_blocks(group.blocks_needed_now())
        for request, num_new in plan:
            ok = self.kv.allocate_slots(request, num_new)
            assert ok, "block plan and allocation disagree"
            out.add(request, num_new, self.perf)
        if not out.preempted:
            self._schedule_waiting(out, left)
        return out

    def _preempt_suffix(self, group: DecodeGroup, plan: list[tuple[Request, int]],
                        deficit: int, out: SchedulerOutput) -> bool:
        """FCFS block shortage, in aggregate: preempt from the end of the running order.

        The exact pass preempts the last running request whenever the request it is serving
        cannot get its blocks. With counted blocks the outcome depends only on totals: the
        fewest last requests whose (blocks needed this step + blocks held) cover the
        deficit. Returns False when only the exact pass can decide (other policies, prefix
        caching: there the order of frees and allocations matters).
        """
        if not self.waiting.fcfs or group.buckets is not None:
            return False
        bs = self.block_size
        got = 0
        planned = {id(r): k for r, k in plan}
        tail = self.tail
        while got < deficit and tail:
            request = tail.pop()
            k = planned.pop(id(request), 0)
            if k:
                plan.pop()
                got += -(-(request.num_computed_tokens + k) // bs) - request.num_blocks
            got += request.num_blocks
            self._evict(request, out)
        while got < deficit and group.n:
            request = next(reversed(group.members.values()))
            group.materialize(request)
            group.remove(request)
            if request.num_computed_tokens % bs == 0:  # it needed a block this step
                got += 1
            got += request.num_blocks
            self._evict(request, out)
        return True

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        running = self.tail
        i = 0
        while i < len(running) and budget > 0:
            request = running[i]
            num_new = self._cap(request, request.num_remaining_tokens, budget)
            scheduled = True
            while not self.kv.allocate_slots(request, num_new):
                victim = self._pick_victim(i)
                self._preempt(victim, out)
                if victim is request:
                    scheduled = False
                    break
            if not scheduled:
                break
            out.add(request, num_new, self.perf)
            budget -= num_new
            i += 1
        return budget

    def _pick_victim(self, index: int) -> Request:
        """The policy's victim among running[index:] (never one already scheduled)."""
        if self.waiting.fcfs:
            return self.tail[-1]
        key = self.policy.victim_key
        return max(self.tail[index:], key=key)

    def _preempt(self, victim: Request, out: SchedulerOutput) -> None:
        if self.tail and self.tail[-1] is victim:
            self.tail.pop()
        else:
            self.tail.remove(victim)
        self._evict(victim, out)

    def _evict(self, victim: Request, out: SchedulerOutput) -> None:
        """Preempt a request already taken out of the running order: free, reset, requeue."""
        self.kv.free(victim)
        if self.preemption_free:
            self._reserved_blocks -= self.kv.blocks_needed(victim.max_total_tokens)
        victim.num_computed_tokens = 0
        victim.num_preemptions += 1
        victim.status = RequestStatus.PREEMPTED
        self.num_preemptions += 1
        self.waiting.add_front(victim)
        out.preempted.append(victim)

    def peek_waiting_blocked(self) -> bool | None:
        """Whether the waiting pass would admit nothing now, with no side effects.

        True: it cannot admit anything, and will not while only decode steps happen (free
        blocks only shrink, the head and the budget stay). None: cannot tell cheaply.
        """
        waiting = self.waiting
        if not waiting:
            return False
        if self.num_running >= self.max_num_seqs:
            return True
        budget = self.max_num_batched_tokens - self.num_running  # all running decode
        if budget <= 0:
            return True
        request = waiting.peek()
        hits = self.kv.get_computed_blocks(request) if self.prefix_caching else []
        remaining = request.num_tokens - len(hits) * self.block_size
        if not self.chunked and remaining > budget and \
                not (request.num_output_tokens and remaining > self.max_num_batched_tokens):
            return True if waiting.fcfs else None
        num_new = self._cap(request, remaining, budget)
        if self.max_partial and num_new < remaining:
            return None
        if self.preemption_free and self._reserved_blocks + self.kv.blocks_needed(
                request.max_total_tokens) > self.kv.num_gpu_blocks:
            return True
        return not self.kv.can_allocate(request, num_new, hits)

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> None:
        waiting = self.waiting
        skipped: list[Request] = []
        partial = 0
        if self.max_partial:
            partial = sum(1 for r, n in zip(out.requests, out.num_new_tokens, strict=True)
                          if n < r.num_remaining_tokens)
        while waiting and budget > 0 and self.num_running < self.max_num_seqs:
            request = waiting.peek()
            hits = self.kv.get_computed_blocks(request) if self.prefix_caching else []
            num_cached = len(hits) * self.kv.block_size
            remaining = request.num_tokens - num_cached
            if not self.chunked and remaining > budget and \
                    not (request.num_output_tokens and remaining > self.max_num_batched_tokens):
                if waiting.fcfs:
                    break
                skipped.append(waiting.pop())
                continue
            num_new = self._cap(request, remaining, budget)
            if self.max_partial and num_new < remaining and partial >= self.max_partial:
                break
            if self.preemption_free:
                need = self.kv.blocks_needed(request.max_total_tokens)
                if self._reserved_blocks + need > self.kv.num_gpu_blocks:
                    break
            if not self.kv.allocate_slots(request, num_new, hits):
                break
            waiting.pop()
            if self.prefix_caching:
                self.kv.record_hit(request, num_cached)
                request.num_cached_tokens += num_cached
            request.num_computed_tokens = num_cached
            if self.preemption_free:
                self._reserved_blocks += self.kv.blocks_needed(request.max_total_tokens)
            if num_new < remaining:
                partial += 1
            request.status = RequestStatus.RUNNING
            self.tail.append(request)
            out.add(request, num_new, self.perf)
            budget -= num_new
        for request in skipped:
            waiting.add(request)

    # ------------------------------------------------------------------------------ update
    def update(self, out: SchedulerOutput, now: float, itl: ItlSink) -> list[Request]:
        """Apply a step that ended at ``now``; return the requests that finished."""
        finished: list[Request] = []
        step_start = itl.step_start
        regular = out.num_group
        emitted = out.num_group
        if out.num_group:
            assert self.group is not None
            finished.extend(self.group.advance(1, now))
        num_from_group = len(finished)
        for request, num_new in zip(out.requests, out.num_new_tokens, strict=True):
            if request.first_scheduled_time < 0:
                request.first_scheduled_time = step_start
            request.num_computed_tokens += num_new
            if self.prefix_caching:
                self.kv.cache_full_blocks(request)
            if request.num_computed_tokens < request.num_prompt_tokens + \
                    request.num_output_tokens:
                continue
            request.num_output_tokens += 1
            emitted += 1
            if request.num_output_tokens == 1:
                request.first_token_time = now
            elif request.last_token_time == step_start:
                regular += 1
            else:
                itl.add(now - request.last_token_time, 1)
            request.last_token_time = now
            if request.num_output_tokens >= request.max_tokens:
                finished.append(request)
        if regular:
            itl.add(now - step_start, regular)
        self.last_num_emitted = emitted
        if finished:
            self.retire(finished, now, len(finished) - num_from_group)
        itl.last_step_end = now
        if self.group is not None:
            self._regroup(now)
        return finished

    def retire(self, finished: list[Request], now: float, in_tail: int) -> None:
        """Mark finished requests, free their blocks at once, drop the ``in_tail`` of them
        that are in the tail (the others already left the decode group)."""
        for request in finished:
            request.status = RequestStatus.FINISHED
            request.finish_time = now
            self.kv.free(request)
            if self.preemption_free:
                self._reserved_blocks -= self.kv.blocks_needed(request.max_total_tokens)
        if in_tail == 1:
            self.tail.remove(finished[-1])
        elif in_tail:
            self.tail = [r for r in self.tail if r.status != RequestStatus.FINISHED]

    def _regroup(self, now: float) -> None:
        """Move the decoding head of the tail into the group (fast mode)."""
        group = self.group
        assert group is not None
        tail = self.tail
        k = 0
        while k < len(tail):
            request = tail[k]
            if request.last_token_time != now or request.num_remaining_tokens != 1:
                break
            k += 1
        if k:
            if not group.n:
                group.last_end = now
            for request in tail[:k]:
                group.join(request)
            del tail[:k]


class ItlSink:
    """Collects inter-token latencies as (gap, count) pairs: one pair per step for the
    requests that also emitted in the previous step, one per irregular gap."""

    __slots__ = ("counts", "gaps", "last_step_end", "step_start")

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.counts: list[int] = []
        self.last_step_end = -1.0
        self.step_start = 0.0

    def add(self, gap: float, count: int) -> None:
        self.gaps.append(gap)
        self.counts.append(count)
