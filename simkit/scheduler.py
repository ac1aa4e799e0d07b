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
    num_prefill_tokens: int = 0
    attn_work: float = 0.0
    kv_tokens: float = 0.0

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
    """Running list, waiting queue and KV cache of one replica."""

    def __init__(self, config: Config, kv: KVCacheManager, policy: Policy,
                 perf: PerfModel) -> None:
        sc = config.scheduler
        self.max_num_batched_tokens = sc.max_num_batched_tokens
        self.max_num_seqs = sc.max_num_seqs
        self.chunked = sc.enable_chunked_prefill
        self.threshold = sc.long_prefill_token_threshold
        self.max_partial = sc.max_num_partial_prefills
        self.preemption_free = sc.enable_preemption_free
        self.prefix_caching = sc.enable_prefix_caching
        self.max_seq_len = config.model.max_seq_len
        self.kv = kv
        self.policy = policy
        self.perf = perf
        self.running: list[Request] = []
        self.waiting = WaitingQueue(policy)
        self.num_preemptions = 0
        self.last_num_emitted = 0
        self._reserved_blocks = 0  # preemption-free admission: Σ blocks at full length

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

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        running = self.running
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
            return self.running[-1]
        key = self.policy.victim_key
        return max(self.running[index:], key=key)

    def _preempt(self, victim: Request, out: SchedulerOutput) -> None:
        self.running.remove(victim)
        self.kv.free(victim)
        if self.preemption_free:
            self._reserved_blocks -= self.kv.blocks_needed(victim.max_total_tokens)
        victim.num_computed_tokens = 0
        victim.num_preemptions += 1
        victim.status = RequestStatus.PREEMPTED
        self.num_preemptions += 1
        self.waiting.add_front(victim)
        out.preempted.append(victim)

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> None:
        waiting = self.waiting
        skipped: list[Request] = []
        partial = 0
        if self.max_partial:
            partial = sum(1 for r, n in zip(out.requests, out.num_new_tokens)
                          if n < r.num_remaining_tokens)
        while waiting and budget > 0 and len(self.running) < self.max_num_seqs:
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
                self.kv.record_hit(num_cached, request.num_prompt_tokens)
            if hits:
                request.num_cached_tokens += num_cached
            request.num_computed_tokens = num_cached
            if self.preemption_free:
                self._reserved_blocks += self.kv.blocks_needed(request.max_total_tokens)
            if num_new < remaining:
                partial += 1
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            out.add(request, num_new, self.perf)
            budget -= num_new
        for request in skipped:
            waiting.add(request)

    # ------------------------------------------------------------------------------ update
    def update(self, out: SchedulerOutput, now: float, itl: ItlSink) -> list[Request]:
        """Apply a step that ended at ``now``; return the requests that finished."""
        finished: list[Request] = []
        regular = 0
        emitted = 0
        step_start = itl.step_start
        for request, num_new in zip(out.requests, out.num_new_tokens):
            if request.first_scheduled_time < 0:
                request.first_scheduled_time = itl.step_start
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
            self._retire(finished, now)
        itl.last_step_end = now
        return finished


    def _retire(self, finished: list[Request], now: float) -> None:
        """Remove finished requests from running and free their blocks immediately."""
        for request in finished:
            request.status = RequestStatus.FINISHED
            request.finish_time = now
            self.kv.free(request)
            if self.preemption_free:
                self._reserved_blocks -= self.kv.blocks_needed(request.max_total_tokens)
        if len(finished) == 1:
            self.running.remove(finished[0])
        else:
            self.running = [r for r in self.running if r.status != RequestStatus.FINISHED]


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
