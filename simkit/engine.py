"""The discrete-event loop of one replica: arrivals, scheduling steps, idle jumps.

Each iteration admits the requests that have arrived, asks the scheduler for a step, prices it
with the roofline model and applies it at ``now + step_time``. When nothing is runnable, time
jumps to the next arrival (never ticked). In ``fast`` mode, stretches where the batch cannot
change — every running request decoding, nothing admissible, no finish, no new block short —
are advanced in closed form by :mod:`simkit.fastpath`; ``exact`` mode runs every step.

Safety: a request that can never fit is rejected on arrival; a step that schedules nothing
with nothing running is an error (no livelock); ``max_sim_secs`` / ``max_wall_secs`` stop the
run cleanly with a partial result; Ctrl-C raises :class:`SimulationInterrupted` carrying the
partial result; a progress callback returning ``False`` cancels the run.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
else:
    from simkit._lazy import pandas as pd

from simkit.config import Config
from simkit.errors import SimulationError
from simkit.io import config_to_dict
from simkit.kv_cache import KVCacheManager
from simkit.metrics import IntervalSeries, Summary, latency_stats, throughput_totals
from simkit.perf import PerfModel
from simkit.policy import Policy, make_policy
from simkit.request import Request, RequestStatus
from simkit.result import SimResult, SimulationInterrupted, Snapshot
from simkit.scheduler import ItlSink, Scheduler, SchedulerOutput
from simkit.workload import RequestPlan, build_workload

__all__ = ["Engine", "simulate"]

ProgressCallback = Callable[[Snapshot], Any]



def simulate(config: Config, progress: ProgressCallback | None = None, *,
             plan: RequestPlan | None = None, policy: Policy | None = None,
             mode: str | None = None) -> SimResult:
    """Run one simulation of ``config`` and return its :class:`SimResult`.

    ``progress(snapshot)`` is called during the run (about every
    ``simulation.progress_interval_secs`` of wall time, whenever an interval of the time series
    closes) and once at the end with ``done=True``; returning ``False`` stops the run early
    (partial result). ``plan`` replaces the generated workload; ``policy`` a custom
    :class:`~simkit.policy.Policy`; ``mode`` overrides ``simulation.mode``.
    """
    engine = Engine(config, plan=plan, policy=policy, progress=progress, mode=mode)
    return engine.run()


class Engine:
    """One simulation; use :func:`simulate`."""

    def __init__(self, config: Config, *, plan: RequestPlan | None = None,
                 policy: Policy | None = None, progress: ProgressCallback | None = None,
                 mode: str | None = None,
                 on_step: Callable[[Engine, float, float, SchedulerOutput], Any] | None = None,
                 ) -> None:
        self.config = config
        self.on_step = on_step  # test hook: called after every scheduler step (t0, t1, output)
        self.mode = mode or config.simulation.mode
        if self.mode not in ("fast", "exact"):
            raise SimulationError(f"mode = {self.mode!r}: must be 'fast' or 'exact'")
        self.plan = plan if plan is not None else build_workload(
            config.workload, block_size=config.scheduler.block_size)
        self.perf = PerfModel.from_config(config)
        self.kv = KVCacheManager(config.num_gpu_blocks, config.scheduler.block_size,
                                 enable_prefix_caching=config.scheduler.enable_prefix_caching)
        self.scheduler = Scheduler(config, self.kv,
                                   make_policy(policy or config.scheduler.policy), self.perf,
                                   aggregate=self.mode == "fast")
        self.itl = ItlSink()
        self.series = IntervalSeries(config.simulation.sample_interval_secs)
        self.progress = progress
        n = len(self.plan)
        self.num_total = n
        # per-request columns, filled on arrival / end (index = request id)
        self.arrival = np.full(n, np.nan)
        self.first_scheduled = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.num_output = np.zeros(n, dtype=np.int64)
        self.num_preempted = np.zeros(n, dtype=np.int64)
        self.num_cached = np.zeros(n, dtype=np.int64)
        self.status = np.full(n, -1, dtype=np.int8)
        self.reject_reasons: dict[int, str] = {}
        self.live: dict[int, Request] = {}
        self.num_arrived = 0
        self.num_finished = 0
        self.num_rejected = 0
        self.num_steps = 0
        self.total_flops = 0.0
        self.total_bytes = 0.0
        self.busy_time = 0.0
        self.kv_block_time = 0.0
        self.kv_peak_blocks = 0
        self.now = 0.0
        self._finished_order: list[int] = []
        self._snap_finished = 0
        self._snap_rows = 0
        self._snap_wall = 0.0
        # arrival sources
        self._next = 0  # next request index to send
        self._closed = self.plan.arrival_times is None
        self._user_events: list[tuple[float, int, int]] = []  # (time, seq, user)
        self._seq = 0
        self._stop_sending = self.plan.stop_sending_at
        if self._closed:
            starts = self.plan.user_start_times
            users = self.plan.num_users or 0
            for u in range(min(users, n)):
                t = float(starts[u]) if starts is not None else 0.0
                self._push_user(t, u)

    # ----------------------------------------------------------------------------- arrivals
    def _push_user(self, t: float, user: int) -> None:
        self._seq += 1
        heapq.heappush(self._user_events, (t, self._seq, user))

    def next_arrival_time(self) -> float:
        """Time of the next request to arrive (inf if none will)."""
        if self._next >= self.num_total:
            return math.inf
        if self._closed:
            t = self._user_events[0][0] if self._user_events else math.inf
        else:
            t = float(self.plan.arrival_times[self._next])  # type: ignore[index]
        if self._stop_sending is not None and t >= self._stop_sending:
            return math.inf
        return t

    def _admit_arrivals(self, now: float) -> None:
        plan = self.plan
        while True:
            t = self.next_arrival_time()
            if t > now:
                return
            i = self._next
            self._next += 1
            user = -1
            if self._closed:
                _, _, user = heapq.heappop(self._user_events)
            req = Request(
                i, t, int(plan.num_prompt_tokens[i]), int(plan.max_tokens[i]),
                priority=int(plan.priorities[i]),
                block_hashes=plan.block_hashes[i] if plan.block_hashes is not None else None,
                user=user,
            )
            self.arrival[i] = t
            self.num_arrived += 1
            reason = self.scheduler.rejection_reason(req)
            if reason is not None:
                req.status = RequestStatus.REJECTED
                self.status[i] = RequestStatus.REJECTED
                self.reject_reasons[i] = reason
                self.num_rejected += 1
                if user >= 0:  # the client gets an error at once and sends its next request
                    self._push_user(t + plan.think_time_secs, user)
                continue
            self.live[i] = req
            self.scheduler.add_request(req)

    def _on_finished(self, finished: list[Request]) -> None:
        think = self.plan.think_time_secs
        for req in finished:
            i = req.id
            self.first_scheduled[i] = req.first_scheduled_time
            self.first_token[i] = req.first_token_time
            self.finish[i] = req.finish_time
            self.num_output[i] = req.num_output_tokens
            self.num_preempted[i] = req.num_preemptions
            self.num_cached[i] = req.num_cached_tokens
            self.status[i] = RequestStatus.FINISHED
            self._finished_order.append(i)
            del self.live[i]
            if req.user >= 0:
                self._push_user(req.finish_time + think, req.user)
        self.num_finished += len(finished)

    # --------------------------------------------------------------------------------- loop
    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        self._snap_wall = wall0
        sim_cfg = self.config.simulation
        max_sim = sim_cfg.max_sim_secs if sim_cfg.max_sim_secs is not None else math.inf
        max_wall = sim_cfg.max_wall_secs if sim_cfg.max_wall_secs is not None else math.inf
        stop_reason: str | None = None
        iterations = 0
        fast = None
        if self.mode == "fast":
            from simkit.fastpath import FastForward

            fast = FastForward(self)
        try:
            while True:
                self._admit_arrivals(self.now)
                sched = self.scheduler
                if not sched.num_running and not sched.waiting:
                    t_next = self.next_arrival_time()
                    if t_next == math.inf:
                        break
                    if t_next > max_sim:
                        stop_reason = f"max_sim_secs = {max_sim:g} reached"
                        break
                    self._idle_until(t_next)
                    continue
                if self.now >= max_sim:
                    stop_reason = f"max_sim_secs = {max_sim:g} reached"
                    break
                if fast is None or not fast.advance(max_sim):
                    self._step()
                iterations += 1
                if iterations & 255 == 0 and time.perf_counter() - wall0 > max_wall:
                    stop_reason = f"max_wall_secs = {max_wall:g} reached"
                    break
                if self.progress is not None and self._maybe_progress() is False:
                    stop_reason = "cancelled by the progress callback"
                    break
        except KeyboardInterrupt:
            result = self._finish(wall0, "interrupted (Ctrl-C)")
            raise SimulationInterrupted(result) from None
        return self._finish(wall0, stop_reason)

    def _idle_until(self, t: float) -> None:
        self.series.add_span(self.now, t, 0.0, 0.0, self.kv.num_used_blocks * (t - self.now),
                             False, 0, len(self.scheduler.waiting))
        self.now = t

    def _step(self) -> None:
        sched = self.scheduler
        out = sched.schedule()
        if out.num_tokens == 0:
            if out.preempted:
                return  # the running pass preempted its own head; try again
            raise SimulationError(self._stuck_message())
        cost = self.perf.step(out.num_tokens, out.attn_work, out.kv_tokens, out.num_seqs)
        t0 = self.now
        t1 = t0 + cost.time
        used = self.kv.num_used_blocks
        self.series.add_span(t0, t1, cost.flops, cost.bytes, used * cost.time, True,
                             sched.num_running, len(sched.waiting))
        self.itl.step_start = t0
        finished = sched.update(out, t1, self.itl)
        emitted = sched.last_num_emitted
        self.series.add_tokens(out.num_prefill_tokens, out.num_tokens - out.num_prefill_tokens,
                               emitted)
        self.num_steps += 1
        self.total_flops += cost.flops
        self.total_bytes += cost.bytes
        self.busy_time += cost.time
        self.kv_block_time += used * cost.time
        if used > self.kv_peak_blocks:
            self.kv_peak_blocks = used
        self.now = t1
        if finished:
            self._on_finished(finished)
        if self.on_step is not None:
            self.on_step(self, t0, t1, out)

    def _stuck_message(self) -> str:
        sched = self.scheduler
        head = sched.waiting.peek() if sched.waiting else None
        return (f"the simulation cannot make progress at t = {self.now:.3f} s: nothing could be "
                f"scheduled ({sched.num_running} running, {len(sched.waiting)} waiting, "
                f"{self.kv.num_free_blocks}/{self.kv.num_gpu_blocks} KV blocks free"
                + (f"; next waiting request needs {head.num_tokens} tokens" if head else "")
                + ")")

    # ------------------------------------------------------------------------------ output
    def _request_frame(self, ids: np.ndarray | None = None) -> pd.DataFrame:
        plan = self.plan
        sel = np.arange(self.num_total) if ids is None else ids
        arrival = self.arrival[sel]
        ft = self.first_token[sel]
        fin = self.finish[sel]
        out = self.num_output[sel]
        ttft = ft - arrival
        e2e = fin - arrival
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out > 1, (e2e - ttft) / np.maximum(out - 1, 1), np.nan)
        status = self.status[sel]
        names = np.array(["unfinished", "finished", "rejected"], dtype=object)
        code = np.where(status == RequestStatus.FINISHED, 1,
                        np.where(status == RequestStatus.REJECTED, 2, 0))
        frame = pd.DataFrame({
            "request_id": sel.astype(np.int64),
            "status": names[code],
            "arrival_time": arrival,
            "first_scheduled_time": self.first_scheduled[sel],
            "first_token_time": ft,
            "finish_time": fin,
            "num_prompt_tokens": np.asarray(plan.num_prompt_tokens)[sel],
            "max_tokens": np.asarray(plan.max_tokens)[sel],
            "num_output_tokens": out,
            "num_cached_tokens": self.num_cached[sel],
            "num_preemptions": self.num_preempted[sel],
            "ttft_ms": ttft * 1e3,
            "tpot_ms": tpot * 1e3,
            "e2e_ms": e2e * 1e3,
            "queue_ms": (self.first_scheduled[sel] - arrival) * 1e3,
        })
        if self.reject_reasons:
            reasons = np.full(len(sel), None, dtype=object)
            pos = {int(r): k for k, r in enumerate(sel)}
            for rid, why in self.reject_reasons.items():
                if rid in pos:
                    reasons[pos[rid]] = why
            frame["reject_reason"] = reasons
        else:
            frame["reject_reason"] = None
        return frame

    def _timeseries(self, *, start_row: int = 0) -> pd.DataFrame:
        done = self._finished_order
        ids = np.asarray(done, dtype=np.int64)
        arrived = self.arrival[~np.isnan(self.arrival)]
        ttft = self.first_token[ids] - self.arrival[ids]
        out = self.num_output[ids]
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out > 1, (self.finish[ids] - self.first_token[ids])
                            / np.maximum(out - 1, 1), np.nan)
        return self.series.frame(
            end_time=self.now, running=self.scheduler.num_running,
            waiting=len(self.scheduler.waiting), include_open=True,
            num_gpu_blocks=self.kv.num_gpu_blocks, peak_flops=self.perf.peak_flops,
            peak_bandwidth=self.perf.peak_bandwidth, arrivals=arrived,
            finish_times=self.finish[ids], ttft=ttft, tpot=tpot, start_row=start_row)

    def _snapshot(self, done: bool) -> Snapshot:
        new_ids = np.asarray(self._finished_order[self._snap_finished:], dtype=np.int64)
        self._snap_finished = len(self._finished_order)
        ts = self._timeseries()
        closed = self.series.num_closed
        new_ts = ts.iloc[self._snap_rows:closed if not done else len(ts)].reset_index(drop=True)
        self._snap_rows = closed
        new_req = self._request_frame(new_ids)
        return Snapshot(
            sim_time=self.now, num_arrived=self.num_arrived, num_finished=self.num_finished,
            num_rejected=self.num_rejected, num_running=self.scheduler.num_running,
            num_waiting=len(self.scheduler.waiting), num_steps=self.num_steps,
            num_preemptions=self.scheduler.num_preemptions, total_requests=self.num_total,
            timeseries=ts, new_timeseries=new_ts, new_requests=new_req, done=done)

    def _maybe_progress(self) -> bool | None:
        if self.series.num_closed <= self._snap_rows:
            return None
        wall = time.perf_counter()
        if wall - self._snap_wall < self.config.simulation.progress_interval_secs:
            return None
        self._snap_wall = wall
        assert self.progress is not None
        return self.progress(self._snapshot(done=False)) is not False

    def _finish(self, wall0: float, stop_reason: str | None) -> SimResult:
        partial = stop_reason is not None
        for i, req in self.live.items():  # partial run: record what the live requests did
            self.first_scheduled[i] = req.first_scheduled_time if req.first_scheduled_time >= 0 \
                else np.nan
            self.first_token[i] = req.first_token_time if req.first_token_time >= 0 else np.nan
            self.num_output[i] = req.num_output_tokens
            self.num_preempted[i] = req.num_preemptions
        arrived_ids = np.flatnonzero(~np.isnan(self.arrival))
        requests = self._request_frame(arrived_ids)
        timeseries = self._timeseries()
        summary = self._summary(requests, partial, stop_reason)
        itl_s = np.asarray(self.itl.gaps, dtype=float)
        itl_count = np.asarray(self.itl.counts, dtype=np.int64)
        summary.itl_ms = latency_stats(itl_s, itl_count)
        result = SimResult(
            config=self.config, summary=summary, requests=requests, timeseries=timeseries,
            itl_s=itl_s, itl_count=itl_count, num_steps=self.num_steps,
            wall_time_s=time.perf_counter() - wall0, partial=partial, stop_reason=stop_reason)
        if self.progress is not None:
            self.progress(self._snapshot(done=True))
        return result

    def _summary(self, requests: pd.DataFrame, partial: bool,
                 stop_reason: str | None) -> Summary:
        fin = requests[requests["status"] == "finished"]
        tp = self.config.hardware.tp
        if len(fin):
            duration = float(fin["finish_time"].max() - requests["arrival_time"].min())
        else:
            duration = 0.0
        safe = duration if duration > 0 else math.nan
        in_tok = float(fin["num_prompt_tokens"].sum())
        out_tok = float(fin["num_output_tokens"].sum())
        throughput = {
            **throughput_totals(len(fin), in_tok, out_tok, safe, tp),
            # what one user sees while streaming: mean over requests of 1 / TPOT
            "output_tokens_per_s_per_user": float((1e3 / fin["tpot_ms"]).mean())
            if fin["tpot_ms"].notna().any() else math.nan,
        }
        kv = self.kv
        utilization = {
            "compute": self.total_flops / (safe * self.perf.peak_flops),
            "memory_bandwidth": self.total_bytes / (safe * self.perf.peak_bandwidth),
            "kv_cache_mean": self.kv_block_time / (safe * kv.num_gpu_blocks),
            "kv_cache_peak": self.kv_peak_blocks / kv.num_gpu_blocks,
            "busy": self.busy_time / safe,
        }
        queries = kv.num_prefix_query_tokens
        prefix = {
            "hit_rate": kv.num_prefix_hit_tokens / queries if queries else 0.0,
            "hit_tokens": kv.num_prefix_hit_tokens,
        }
        counts = {
            "arrived": self.num_arrived, "finished": self.num_finished,
            "rejected": self.num_rejected, "preemptions": self.scheduler.num_preemptions,
            "steps": self.num_steps,
            "unfinished": self.num_arrived - self.num_finished - self.num_rejected,
        }
        return Summary(
            ttft_ms=latency_stats(fin["ttft_ms"].to_numpy() / 1e3),
            tpot_ms=latency_stats(fin["tpot_ms"].dropna().to_numpy() / 1e3),
            itl_ms={},
            e2e_ms=latency_stats(fin["e2e_ms"].to_numpy() / 1e3),
            queue_ms=latency_stats(fin["queue_ms"].to_numpy() / 1e3),
            throughput=throughput, utilization=utilization, counts=counts,
            prefix_cache=prefix, duration_s=duration, partial=partial,
            stop_reason=stop_reason, config=config_to_dict(self.config))
