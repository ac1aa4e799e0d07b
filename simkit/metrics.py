"""Metrics as ``vllm bench serve`` defines them (spec section 5), and the interval time series.

Per finished request: TTFT = first token − arrival; E2E = finish − arrival; TPOT =
(E2E − TTFT) / (output tokens − 1), undefined (excluded) for 1-token outputs; queueing delay =
first scheduled − arrival. ITL pools every gap between consecutive tokens of a request over all
requests; it is kept as (gap, count) pairs — most steps give many requests the same gap — and
its percentiles are exactly those of the expanded sample. Percentiles use linear interpolation
(numpy's default). Throughput divides totals by ``duration = last finish − first arrival``;
utilizations are time-weighted over that same window, idle time included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
else:
    from simkit._lazy import pandas as pd

from simkit.errors import SimulationError

__all__ = [
    "IntervalSeries",
    "Summary",
    "latency_stats",
    "weighted_percentiles",
]

PERCENTILES = (50, 90, 95, 99)
#: Most rows a time series may have; a run whose simulated time would need more stops with a
#: SimulationError instead of filling memory (and hanging) one empty interval at a time.
MAX_INTERVALS = 1_000_000
STAT_KEYS = ("mean", "p50", "p90", "p95", "p99", "min", "max")


def weighted_percentiles(values: np.ndarray, weights: np.ndarray,
                         qs: Sequence[float]) -> np.ndarray:
    """Percentiles of ``values`` repeated ``weights`` times, as ``np.percentile`` would give.

    Linear interpolation between the order statistics at rank ``q/100 · (N − 1)``, computed
    from cumulative counts without expanding the sample.
    """
    order = np.argsort(values, kind="stable")
    v = np.asarray(values, dtype=float)[order]
    cum = np.cumsum(np.asarray(weights, dtype=np.int64)[order])
    n = int(cum[-1])
    out = []
    for q in qs:
        rank = q / 100.0 * (n - 1)
        lo = math.floor(rank)
        hi = min(lo + 1, n - 1)
        v_lo = v[np.searchsorted(cum, lo, side="right")]
        v_hi = v[np.searchsorted(cum, hi, side="right")]
        out.append(v_lo + (v_hi - v_lo) * (rank - lo))
    return np.array(out)


def latency_stats(values: np.ndarray, weights: np.ndarray | None = None,
                  scale: float = 1e3) -> dict[str, float | None]:
    """mean, p50, p90, p95, p99, min, max of ``values`` × ``scale`` (seconds → ms).

    An empty sample gives ``None`` for every key (JSON ``null``).
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0 or (weights is not None and np.sum(weights) == 0):
        return dict.fromkeys(STAT_KEYS)
    if weights is None:
        pct = np.percentile(values, PERCENTILES)
        mean = float(np.mean(values))
    else:
        w = np.asarray(weights, dtype=np.int64)
        keep = w > 0
        values, w = values[keep], w[keep]
        pct = weighted_percentiles(values, w, PERCENTILES)
        mean = float(np.dot(values, w) / w.sum())
    result = {"mean": mean * scale}
    result.update({f"p{q}": float(p) * scale for q, p in zip(PERCENTILES, pct, strict=True)})
    result["min"] = float(values.min()) * scale
    result["max"] = float(values.max()) * scale
    return result


def throughput_totals(num_requests: int, input_tokens: float, output_tokens: float,
                      duration: float, tp: int) -> dict[str, float]:
    """Throughputs over ``duration`` (last finish − first arrival), also per GPU (÷ ``tp``)."""
    total = input_tokens + output_tokens
    return {
        "requests_per_s": num_requests / duration,
        "input_tokens_per_s": input_tokens / duration,
        "output_tokens_per_s": output_tokens / duration,
        "total_tokens_per_s": total / duration,
        "output_tokens_per_s_per_gpu": output_tokens / duration / tp,
        "total_tokens_per_s_per_gpu": total / duration / tp,
    }


@dataclass
class Summary:
    """The run's headline numbers; ``to_dict()`` is the documented, stable JSON schema."""

    ttft_ms: dict[str, float | None]
    tpot_ms: dict[str, float | None]
    itl_ms: dict[str, float | None]
    e2e_ms: dict[str, float | None]
    queue_ms: dict[str, float | None]
    throughput: dict[str, float]
    utilization: dict[str, float]
    counts: dict[str, int]
    prefix_cache: dict[str, float]
    duration_s: float
    partial: bool = False
    stop_reason: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe; NaN/inf become None)."""
        def clean(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, (np.floating, np.integer)):
                return clean(x.item())
            return x
        return clean({
            "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "itl_ms": self.itl_ms,
            "e2e_ms": self.e2e_ms, "queue_ms": self.queue_ms,
            "throughput": self.throughput, "utilization": self.utilization,
            "counts": self.counts, "prefix_cache": self.prefix_cache,
            "duration_s": self.duration_s, "partial": self.partial,
            "stop_reason": self.stop_reason, "config": self.config,
        })

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def latency_frame(self) -> pd.DataFrame:
        """Latency table: one row per metric (TTFT, TPOT, ITL, E2E, queue), ms."""
        rows = {"TTFT": self.ttft_ms, "TPOT": self.tpot_ms, "ITL": self.itl_ms,
                "E2E": self.e2e_ms, "Queue": self.queue_ms}
        return pd.DataFrame.from_dict(rows, orient="index", columns=list(STAT_KEYS))


class IntervalSeries:
    """Accumulates busy/idle spans into fixed intervals of ``dt`` simulated seconds.

    Continuous quantities (FLOPs, bytes, busy time, KV block-seconds) are split across interval
    boundaries in proportion to overlap; token counts go to the interval containing the end of
    the step that produced them; running/waiting are sampled at each interval's end.
    """

    COLUMNS = ("busy_s", "flops", "bytes", "kv_block_s", "prefill_tokens", "decode_tokens",
               "output_tokens", "running", "waiting", "steps")

    def __init__(self, dt: float) -> None:
        self.dt = float(dt)  # an int from TOML (2**63) would overflow numpy in frame()
        self.index = 0  # the open interval
        self._cols: dict[str, list[float]] = {c: [] for c in self.COLUMNS}
        self._cur = dict.fromkeys(self.COLUMNS, 0.0)
        self.num_closed = 0

    def _close_until(self, k: int, running: int, waiting: int) -> None:
        cur, cols = self._cur, self._cols
        while self.index < k:
            cur["running"] = running
            cur["waiting"] = waiting
            for c in self.COLUMNS:
                cols[c].append(cur[c])
                cur[c] = 0.0
            self.index += 1
        self.num_closed = self.index

    def add_span(self, t0: float, t1: float, flops: float, nbytes: float, kv_block_s: float,
                 busy: bool, running: int, waiting: int, steps: int = 1) -> None:
        """Add the busy (one or more steps) or idle span [t0, t1] with its totals.

        ``kv_block_s`` is the integral of KV blocks in use over the span (block-seconds).

        Raises :class:`SimulationError` if ``t1`` is not finite or lies beyond
        :data:`MAX_INTERVALS` intervals (absurd speeds or arrival gaps, or a tiny interval).
        """
        dt = self.dt
        if not t1 // dt < MAX_INTERVALS:  # also catches inf and nan
            raise SimulationError(
                f"simulated time reached {t1:.6g} s ({'a step' if busy else 'an idle gap'} of "
                f"{t1 - t0:.6g} s from t = {t0:.6g} s): the time series would need more than "
                f"{MAX_INTERVALS:,} intervals of simulation.sample_interval_secs = {dt:g} s. "
                "Raise sample_interval_secs, set simulation.max_sim_secs, or check the "
                "hardware speeds and the workload's arrival times")
        cur = self._cur
        k0 = int(t0 // dt)
        if k0 > self.index:
            self._close_until(k0, running, waiting)
        k1 = int(t1 // dt)
        span = t1 - t0
        if span > 0 and k1 > k0 and t1 == k1 * dt:
            k1 -= 1  # a span ending exactly on a boundary belongs to the interval it closes
        if k1 == self.index or span <= 0:
            if busy:
                cur["busy_s"] += span
                cur["flops"] += flops
                cur["bytes"] += nbytes
                cur["steps"] += steps
            cur["kv_block_s"] += kv_block_s
            return
        start = t0
        while self.index < k1:
            end = (self.index + 1) * dt
            frac = (end - start) / span
            if busy:
                cur["busy_s"] += end - start
                cur["flops"] += flops * frac
                cur["bytes"] += nbytes * frac
            cur["kv_block_s"] += kv_block_s * frac
            self._close_until(self.index + 1, running, waiting)
            start = end
        frac = (t1 - start) / span
        if busy:
            cur["busy_s"] += t1 - start
            cur["flops"] += flops * frac
            cur["bytes"] += nbytes * frac
            cur["steps"] += steps
        cur["kv_block_s"] += kv_block_s * frac

    def add_tokens(self, prefill: int, decode: int, output: int) -> None:
        cur = self._cur
        cur["prefill_tokens"] += prefill
        cur["decode_tokens"] += decode
        cur["output_tokens"] += output

    def frame(self, *, end_time: float, running: int, waiting: int, include_open: bool,
              num_gpu_blocks: int, peak_flops: float, peak_bandwidth: float,
              arrivals: np.ndarray, finish_times: np.ndarray, ttft: np.ndarray,
              tpot: np.ndarray, start_row: int = 0) -> pd.DataFrame:
        """The time series so far as a DataFrame (rows from ``start_row``)."""
        cols = {c: list(v) for c, v in self._cols.items()}
        n_closed = len(cols["busy_s"])
        if include_open:
            for c in self.COLUMNS:
                cols[c].append(self._cur[c])
            cols["running"][-1] = running
            cols["waiting"][-1] = waiting
        n = len(cols["busy_s"])
        dt = self.dt
        start = np.arange(n) * dt
        elapsed = np.full(n, dt)
        if include_open and n > n_closed:
            elapsed[-1] = max(end_time - start[-1], 0.0)
        safe = np.where(elapsed > 0, elapsed, np.nan)
        arr = np.asarray
        # a request finishing exactly on a boundary counts in the interval that boundary closes
        fin_idx = (np.maximum(np.ceil(finish_times / dt) - 1, 0).astype(np.int64)
                   if len(finish_times) else np.zeros(0, int))

        def per_interval(idx: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
            idx = idx[(idx >= 0) & (idx < n)] if weights is None else idx
            if weights is not None:
                ok = (idx >= 0) & (idx < n)
                return np.bincount(idx[ok], weights=weights[ok], minlength=n)[:n]
            return np.bincount(idx, minlength=n)[:n]

        arrivals_idx = (arrivals // dt).astype(np.int64) if len(arrivals) else np.zeros(0, int)
        finished = per_interval(fin_idx)
        ttft_sum = per_interval(fin_idx, ttft)
        tpot_ok = ~np.isnan(tpot)
        tpot_sum = per_interval(fin_idx[tpot_ok], tpot[tpot_ok])
        tpot_n = per_interval(fin_idx[tpot_ok])
        with np.errstate(invalid="ignore", divide="ignore"):
            frame = pd.DataFrame({
                "time_s": start,
                "interval_s": elapsed,
                "arrivals": per_interval(arrivals_idx),
                "running": arr(cols["running"], dtype=np.int64),
                "waiting": arr(cols["waiting"], dtype=np.int64),
                "kv_cache_utilization": arr(cols["kv_block_s"]) / (safe * num_gpu_blocks),
                "prefill_tokens": arr(cols["prefill_tokens"], dtype=np.int64),
                "decode_tokens": arr(cols["decode_tokens"], dtype=np.int64),
                "input_tokens_per_s": arr(cols["prefill_tokens"]) / safe,
                "output_tokens_per_s": arr(cols["output_tokens"]) / safe,
                "compute_utilization": arr(cols["flops"]) / (safe * peak_flops),
                "bandwidth_utilization": arr(cols["bytes"]) / (safe * peak_bandwidth),
                "busy_fraction": arr(cols["busy_s"]) / safe,
                "steps": arr(cols["steps"], dtype=np.int64),
                "finished": finished.astype(np.int64),
                "ttft_mean_ms": np.where(finished > 0, ttft_sum / np.maximum(finished, 1),
                                         np.nan) * 1e3,
                "tpot_mean_ms": np.where(tpot_n > 0, tpot_sum / np.maximum(tpot_n, 1),
                                         np.nan) * 1e3,
            })
        return frame.iloc[start_row:].reset_index(drop=True)
