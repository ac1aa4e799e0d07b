"""Fast mode: advance a stretch of decode-only steps in one vectorized move.

While every running request is in the decode group (:mod:`simkit.decode_group`), nothing in
the waiting queue can be admitted, no request arrives, and no member finishes or runs short of
KV blocks, the batch is fixed and step ``j`` of the stretch is fully determined: ``n`` requests
each compute one position on top of a context that grew by ``j``, so the batch sums are
``T = n`` and ``attn_work = kv_tokens = C + n·(j + 1)`` (``C`` = tokens computed so far). The
step times come from :meth:`simkit.perf.PerfModel.step_arrays` (the same arithmetic as the
one-step path) and step end times are accumulated left to right exactly as the step-by-step
loop does, so results are bit-identical to ``exact`` mode. Inter-token gaps, KV block growth,
the interval time series and the utilization totals are booked per stretch (segments between
interval boundaries), not per token.

A stretch ends at the first of: the step in which the next member emits its last token, the
last step before the block pool runs short, the last step that starts before the next arrival
(which might be admitted), ``max_sim_secs``, or ``MAX_STRETCH`` steps.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from functools import reduce
from itertools import accumulate
from operator import add
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from simkit.engine import Engine

__all__ = ["FastForward"]

#: Longest stretch priced at once (bounds the temporary arrays).
MAX_STRETCH = 8192
#: Stretches up to this long are priced step by step in Python (cheaper than numpy set-up).
SCALAR_MAX = 48


class FastForward:
    """Closed-form stretches for one engine (see module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.num_stretches = 0

    def _max_steps_by_blocks(self, free: int) -> int:
        """Most steps whose block allocations fit in ``free`` blocks."""
        group = self.engine.scheduler.group
        assert group is not None
        bs = group.block_size
        p = group.g % bs
        rotated = group.cnt[p:] + group.cnt[:p]
        n = group.n
        full, rem = divmod(free, n)
        return full * bs + bisect_right(list(accumulate(rotated)), rem)

    def advance(self, max_sim: float) -> bool:
        """Try to advance a stretch; False if the next step must be taken one by one."""
        e = self.engine
        sched = e.scheduler
        group = sched.group
        if group is None or not group.n or sched.tail:
            return False
        n = group.n
        if n > sched.max_num_batched_tokens:
            return False
        if sched.waiting and sched.peek_waiting_blocked() is not True:
            return False
        limit = min(group.steps_to_next_finish(), MAX_STRETCH,
                    self._max_steps_by_blocks(e.kv.num_free_blocks))
        if limit < 1:
            return False
        now = e.now
        total = group.total_computed + n
        horizon = min(e.next_arrival_time(), max_sim)
        if horizon != math.inf:
            # steps only get longer as contexts grow, so at most this many start before it
            d0 = e.perf.step(n, float(total), float(total), n).time
            limit = min(limit, int((horizon - now) / d0) + 2)
        if limit <= SCALAR_MAX:
            return self._advance_scalar(limit, horizon)
        work = total + n * np.arange(limit, dtype=float)
        d, flops, nbytes = e.perf.step_arrays(float(n), work, work, n)
        ends = np.cumsum(np.concatenate(([now], d)))[1:]
        starts = np.concatenate(([now], ends[:-1]))
        k = limit
        if horizon != math.inf:
            k = min(k, int(np.searchsorted(starts, horizon, side="left")))
        if k < 1:
            return False
        if k < limit:
            d, flops, nbytes, ends, starts = d[:k], flops[:k], nbytes[:k], ends[:k], starts[:k]
        self._apply(k, d, flops, nbytes, starts, ends)
        return True

    def _advance_scalar(self, limit: int, horizon: float) -> bool:
        """A short stretch, one step at a time with the same arithmetic as ``Engine._step``."""
        e = self.engine
        sched = e.scheduler
        group = sched.group
        assert group is not None
        n = group.n
        bs = group.block_size
        cnt = group.cnt
        g = group.g
        kv = e.kv
        perf = e.perf
        series = e.series
        itl = e.itl
        waiting = len(sched.waiting)
        total = group.total_computed + n
        dt = series.dt
        used = kv.num_used_blocks
        peak = e.kv_peak_blocks
        tf, tb, busy, kvt = e.total_flops, e.total_bytes, e.busy_time, e.kv_block_time
        # steps inside one interval are booked together: (start, flops, bytes, kv, steps)
        c_start, c_fl, c_by, c_kv, c_n = e.now, 0.0, 0.0, 0.0, 0
        t0 = e.now
        k = 0
        while k < limit and t0 < horizon:
            alloc = cnt[(g + k) % bs]
            if alloc:
                if group.buckets is None:
                    kv.take_blocks(alloc)
                else:
                    for request in group.buckets[(g + k) % bs].values():
                        kv.append_block(request)
                used += alloc
            work = float(total + n * k)
            cost = perf.step(n, work, work, n)
            d = cost.time
            t1 = t0 + d
            kv_s = used * d
            if t0 // dt == t1 // dt:
                c_fl += cost.flops
                c_by += cost.bytes
                c_kv += kv_s
                c_n += 1
            else:  # crosses (or ends on) an interval boundary: book alone
                if c_n:
                    series.add_span(c_start, t0, c_fl, c_by, c_kv, True, n, waiting, c_n)
                    series.add_tokens(0, n * c_n, n * c_n)
                series.add_span(t0, t1, cost.flops, cost.bytes, kv_s, True, n, waiting)
                series.add_tokens(0, n, n)
                c_start, c_fl, c_by, c_kv, c_n = t1, 0.0, 0.0, 0.0, 0
            itl.add(t1 - t0, n)
            tf += cost.flops
            tb += cost.bytes
            busy += d
            kvt += kv_s
            if used > peak:
                peak = used
            itl.step_start = t0
            t0 = t1
            k += 1
        if c_n:
            series.add_span(c_start, t0, c_fl, c_by, c_kv, True, n, waiting, c_n)
            series.add_tokens(0, n * c_n, n * c_n)
        e.total_flops, e.total_bytes, e.busy_time, e.kv_block_time = tf, tb, busy, kvt
        e.kv_peak_blocks = peak
        if not k:
            return False
        self._close(k, t0)
        return True

    def _close(self, k: int, end: float) -> None:
        """End a stretch of ``k`` steps at ``end``: clocks, the group's counter, finishes."""
        e = self.engine
        sched = e.scheduler
        assert sched.group is not None
        e.num_steps += k
        e.itl.last_step_end = end
        e.now = end
        sched.last_num_emitted = sched.group.n
        finished = sched.group.advance(k, end)
        self.num_stretches += 1
        if finished:
            sched.retire(finished, end, 0)
            e._on_finished(finished)

    def _apply(self, k: int, d: np.ndarray, flops: np.ndarray, nbytes: np.ndarray,
               starts: np.ndarray, ends: np.ndarray) -> None:
        e = self.engine
        sched = e.scheduler
        group = sched.group
        assert group is not None
        n = group.n
        bs = group.block_size
        # KV blocks: member phases decide who needs a block on which step
        phases = (group.g + np.arange(k)) % bs
        alloc = np.asarray(group.cnt, dtype=np.int64)[phases]
        if group.buckets is not None:
            for j in np.flatnonzero(alloc).tolist():
                for request in group.buckets[(group.g + j) % bs].values():
                    e.kv.append_block(request)
        else:
            e.kv.take_blocks(int(alloc.sum()))
        used = (e.kv.num_used_blocks - int(alloc.sum())) + np.cumsum(alloc)
        kv_block_s = used * d
        # inter-token gaps: every member emits each step, one step after its previous token
        gaps = ends - starts
        e.itl.gaps.extend(gaps.tolist())
        e.itl.counts.extend([n] * k)
        # interval time series: runs of steps inside one interval, straddling steps alone
        self._book_series(k, n, len(sched.waiting), starts, ends, flops, nbytes, kv_block_s)
        # totals, accumulated left to right like the step-by-step loop
        e.total_flops = reduce(add, flops.tolist(), e.total_flops)
        e.total_bytes = reduce(add, nbytes.tolist(), e.total_bytes)
        e.busy_time = reduce(add, d.tolist(), e.busy_time)
        e.kv_block_time = reduce(add, kv_block_s.tolist(), e.kv_block_time)
        peak = int(used[-1])
        if peak > e.kv_peak_blocks:
            e.kv_peak_blocks = peak
        e.itl.step_start = float(starts[-1])
        self._close(k, float(ends[-1]))

    def _book_series(self, k: int, n: int, waiting: int, starts: np.ndarray, ends: np.ndarray,
                     flops: np.ndarray, nbytes: np.ndarray, kv_block_s: np.ndarray) -> None:
        series = self.engine.series
        dt = series.dt
        straddle = np.flatnonzero((starts // dt) != (ends // dt)).tolist()
        a = 0
        for b in [*straddle, k]:
            if b > a:  # steps a..b-1 lie inside one interval
                series.add_span(float(starts[a]), float(ends[b - 1]), float(flops[a:b].sum()),
                                float(nbytes[a:b].sum()), float(kv_block_s[a:b].sum()), True,
                                n, waiting, b - a)
                series.add_tokens(0, n * (b - a), n * (b - a))
            if b < k:  # step b crosses an interval boundary
                series.add_span(float(starts[b]), float(ends[b]), float(flops[b]),
                                float(nbytes[b]), float(kv_block_s[b]), True, n, waiting, 1)
                series.add_tokens(0, n, n)
            a = b + 1
