"""Fit an engine profile (calibration terms of ``[hardware]``) to measured benchmarks.

The fit minimises the sum of squared log errors ``Σ log(predicted / measured)²`` over the
metrics of a training subset of experiments (TTFT, TPOT, E2E medians and throughput), with a
small Nelder-Mead written here (no SciPy dependency). The parameters are few and physical:
``bandwidth_efficiency``, ``compute_efficiency``, ``attention_efficiency``, ``beta`` (s per
step), ``per_seq_overhead`` (s per sequence per step), ``memory_reserve`` (bytes per GPU
kept from the KV cache) and the client's ``request_latency`` (s added to TTFT and E2E, see
:mod:`simkit.validate`), so the profile transfers to GPUs it was not fitted on.

Speed: a closed loop with zero think time (InferenceMAX) or an offline batch is *time
invariant*: which requests share each step depends only on the order of steps, never on their
durations (arrivals happen exactly at finishes). So one exact simulation per experiment is
recorded (:func:`record`: each step's four batch sums, each request's arrival / first-token /
finish step), and any step-time model is then *replayed* in a few vectorised numpy operations
(:meth:`Recording.replay`), bit-identical to simulating again (the engine adds step times in
the same order as ``numpy.cumsum``). Only ``memory_reserve`` changes the schedule (the KV
pool's size); it is fitted on a grid, re-recording the experiments whose KV pool was binding.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simkit.config import Config
from simkit.errors import ConfigError, SimulationError
from simkit.metrics import throughput_totals
from simkit.perf import PerfModel
from simkit.validate import (
    Experiment,
    Unmirrorable,
    check_points,
    group_experiments,
    metric_family,
    mirror_config,
    read_points,
    summary_value,
)

__all__ = ["FIT_PARAMETERS", "Recording", "fit_profile", "nelder_mead", "record",
           "write_profile"]

#: Continuous parameters and their bounds (log-scale search inside the bounds).
FIT_PARAMETERS: dict[str, tuple[float, float]] = {
    "bandwidth_efficiency": (0.3, 1.0),
    "compute_efficiency": (0.1, 1.0),
    "attention_efficiency": (0.05, 1.0),
    "beta": (1e-4, 0.05),
    "per_seq_overhead": (1e-7, 2e-3),
    "request_latency": (1e-4, 0.2),
}
#: Fitted parameters that are not hardware fields (profile table ``[client]``).
CLIENT_PARAMETERS = ("request_latency",)
#: Metrics fitted (families of :func:`simkit.validate.metric_family`).
FIT_FAMILIES = ("ttft", "tpot", "e2e", "throughput")


# ---------------------------------------------------------------------------- recording
@dataclass(frozen=True)
class Recording:
    """One exact simulation reduced to what step-time models need to replay it."""

    config: Config
    num_tokens: np.ndarray
    attn_work: np.ndarray
    kv_tokens: np.ndarray
    num_seqs: np.ndarray
    arrival_step: np.ndarray  # step whose end is the arrival time; -1 = t = 0
    first_token_step: np.ndarray
    finish_step: np.ndarray
    num_prompt_tokens: np.ndarray
    num_output_tokens: np.ndarray
    peak_blocks: int
    num_preemptions: int
    wall_time_s: float

    @property
    def num_steps(self) -> int:
        return len(self.num_tokens)

    def binding(self) -> bool:
        """True if the KV pool ever limited the schedule (preemption or too little headroom)."""
        cfg = self.config
        worst = int(np.max(self.num_prompt_tokens + self.num_output_tokens))
        headroom = math.ceil(worst / cfg.scheduler.block_size)
        return self.num_preemptions > 0 or self.peak_blocks + headroom > cfg.num_gpu_blocks

    def valid_for(self, config: Config) -> bool:
        """Whether this recording's schedule is also the schedule under ``config``'s KV pool."""
        if config.num_gpu_blocks == self.config.num_gpu_blocks:
            return True
        if self.binding():
            return False
        worst = int(np.max(self.num_prompt_tokens + self.num_output_tokens))
        headroom = math.ceil(worst / config.scheduler.block_size)
        return self.peak_blocks + headroom <= config.num_gpu_blocks

    def same_schedule_inputs(self, config: Config) -> bool:
        """Whether ``config`` has this recording's workload, scheduler and model (any tp)."""
        mine = self.config
        return (config.workload == mine.workload and config.scheduler == mine.scheduler
                and config.model == mine.model
                and config.kv_bytes_per_token == mine.kv_bytes_per_token)

    def replay(self, perf: PerfModel, tp: int | None = None) -> dict[str, Any]:
        """Summary dict (the keys :func:`simkit.validate.summary_value` reads) under ``perf``.

        ``tp`` (GPUs, for per-GPU throughput) defaults to the recorded config's.
        """
        step_time = perf.step_arrays(self.num_tokens, self.attn_work, self.kv_tokens,
                                     self.num_seqs)[0]
        ends = np.concatenate(([0.0], np.cumsum(step_time)))
        arrival = ends[self.arrival_step + 1]
        first = ends[self.first_token_step + 1]
        finish = ends[self.finish_step + 1]
        ttft = first - arrival
        e2e = finish - arrival
        out = self.num_output_tokens
        multi = out > 1
        tpot = (e2e[multi] - ttft[multi]) / (out[multi] - 1)
        duration = float(finish.max() - arrival.min())
        tp = self.config.hardware.tp if tp is None else tp
        n_in, n_out = float(self.num_prompt_tokens.sum()), float(out.sum())

        def stats(x: np.ndarray) -> dict[str, float]:
            if not len(x):
                return {}
            ms = x * 1e3
            return {"mean": float(ms.mean()), "p50": float(np.median(ms)),
                    "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99))}
        return {
            "ttft_ms": stats(ttft), "tpot_ms": stats(tpot), "e2e_ms": stats(e2e),
            "itl_ms": {}, "queue_ms": {},
            "throughput": throughput_totals(len(out), n_in, n_out, duration, tp),
        }


def record(config: Config) -> Recording:
    """Simulate ``config`` exactly once and keep its schedule (see module docstring).

    Raises :class:`~simkit.errors.SimulationError` if the run is not time invariant (idle gaps,
    timed arrivals) or did not finish every request.
    """
    from simkit.engine import Engine

    wl = config.workload
    if not ((wl.arrival_pattern == "closed_loop" and wl.think_time_secs == 0
             and wl.closed_loop_jitter_secs == 0 and wl.duration_secs is None)
            or wl.arrival_pattern == "batched"):
        raise SimulationError("record() needs a closed loop without think time/jitter or a "
                              "batched workload (schedules that do not depend on time)")
    sums: list[tuple[int, float, float, int, float, float]] = []

    def on_step(engine: Any, t0: float, t1: float, out: Any) -> None:
        sums.append((out.num_tokens, out.attn_work, out.kv_tokens, len(out.requests), t0, t1))

    wall0 = time.perf_counter()
    engine = Engine(config, mode="exact", on_step=on_step)
    result = engine.run()
    wall = time.perf_counter() - wall0
    if result.partial:
        raise SimulationError(f"recording stopped early: {result.stop_reason}")
    arr = np.asarray(sums, dtype=float).reshape(-1, 6)
    t0, t1 = arr[:, 4], arr[:, 5]
    if len(arr) and (t0[0] != 0.0 or np.any(t0[1:] != t1[:-1])):
        raise SimulationError("recording has idle gaps; it cannot be replayed")
    req = result.requests
    fin = req[req["status"] == "finished"]
    if len(fin) != len(req):
        raise SimulationError(f"{len(req) - len(fin)} requests did not finish (rejected?)")

    def step_of(times: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(t1, times)
        idx = np.minimum(idx, len(t1) - 1)
        zero = times == 0.0
        if not np.all(zero | (t1[idx] == times)):
            raise SimulationError("a request time is not a step end; cannot replay")
        return np.where(zero, -1, idx).astype(np.int64)

    return Recording(
        config=config,
        num_tokens=arr[:, 0].copy(), attn_work=arr[:, 1].copy(), kv_tokens=arr[:, 2].copy(),
        num_seqs=arr[:, 3].copy(),
        arrival_step=step_of(fin["arrival_time"].to_numpy(float)),
        first_token_step=step_of(fin["first_token_time"].to_numpy(float)),
        finish_step=step_of(fin["finish_time"].to_numpy(float)),
        num_prompt_tokens=fin["num_prompt_tokens"].to_numpy(np.int64),
        num_output_tokens=fin["num_output_tokens"].to_numpy(np.int64),
        peak_blocks=round(result.summary.utilization["kv_cache_peak"] * config.num_gpu_blocks),
        num_preemptions=int(result.summary.counts["preemptions"]),
        wall_time_s=wall,
    )


# ---------------------------------------------------------------------------- optimiser
def nelder_mead(fun: Callable[[np.ndarray], float], x0: Sequence[float], *,
                step: float = 0.5, max_evals: int = 400, tol: float = 1e-6,
                ) -> tuple[np.ndarray, float, int]:
    """Minimise ``fun`` from ``x0`` (standard Nelder-Mead); returns (x, f(x), evaluations)."""
    x0 = np.asarray(x0, dtype=float)
    n = len(x0)
    simplex = [x0] + [x0 + step * np.eye(n)[i] for i in range(n)]
    values = [fun(x) for x in simplex]
    evals = n + 1
    while evals < max_evals:
        order = np.argsort(values)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[-1] - values[0]) <= tol * (abs(values[0]) + tol):
            break
        centroid = np.mean(simplex[:-1], axis=0)
        worst = simplex[-1]
        xr = centroid + (centroid - worst)
        fr = fun(xr)
        evals += 1
        if fr < values[0]:
            xe = centroid + 2.0 * (centroid - worst)
            fe = fun(xe)
            evals += 1
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
        else:
            xc = centroid + 0.5 * (worst - centroid) if fr >= values[-1] else \
                centroid + 0.5 * (xr - centroid)
            fc = fun(xc)
            evals += 1
            if fc < min(fr, values[-1]):
                simplex[-1], values[-1] = xc, fc
            else:  # shrink towards the best
                best = simplex[0]
                simplex = [best] + [best + 0.5 * (x - best) for x in simplex[1:]]
                values = [values[0]] + [fun(x) for x in simplex[1:]]
                evals += n
    i = int(np.argmin(values))
    return simplex[i], float(values[i]), evals


def _decode(x: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Unconstrained x → parameters in their bounds (log-scale logistic)."""
    out = {}
    for xi, name in zip(x, names, strict=True):
        lo, hi = FIT_PARAMETERS[name]
        s = 1.0 / (1.0 + math.exp(-float(np.clip(xi, -30, 30))))
        out[name] = float(math.exp(math.log(lo) + s * (math.log(hi) - math.log(lo))))
    return out


def _encode(params: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    x = []
    for name in names:
        lo, hi = FIT_PARAMETERS[name]
        v = min(max(params[name], lo * 1.0001), hi / 1.0001)
        s = (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        x.append(math.log(s / (1 - s)))
    return np.asarray(x)


# ------------------------------------------------------------------------------- fitting
@dataclass
class Target:
    """A mirrored experiment: its config (reserve applied later) and measured metrics."""

    experiment: Experiment
    config: Config
    recording: Recording | None = None


def _with_hardware(config: Config, params: Mapping[str, float]) -> Config:
    hardware = {k: v for k, v in params.items() if k not in CLIENT_PARAMETERS}
    return config.replace(hardware=dataclasses.replace(config.hardware, **hardware))


def residuals(targets: Sequence[Target], params: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per (experiment, metric) rows: measured, predicted (replayed), log error."""
    rows = []
    for tgt in targets:
        rec = tgt.recording
        assert rec is not None
        perf = PerfModel.from_config(_with_hardware(tgt.config, params))
        tp = tgt.config.hardware.tp
        summary = rec.replay(perf, tp)
        for metric, (measured, unit) in tgt.experiment.metrics.items():
            family = metric_family(metric)
            if family not in FIT_FAMILIES:
                continue
            pred = summary_value(summary, metric, unit, tp,
                                 params.get("request_latency", 0.0))
            rows.append({"experiment": tgt.experiment.label, "metric": metric,
                         "family": family, "measured": measured, "predicted": pred,
                         "log_error": math.log(pred / measured) if pred > 0 else 10.0})
    return rows


def loss(targets: Sequence[Target], params: Mapping[str, float]) -> float:
    return float(sum(r["log_error"] ** 2 for r in residuals(targets, params)))


def _ensure_recordings(targets: Sequence[Target], reserve: float,
                       cache: dict[tuple[str, float], Recording],
                       log: Callable[[str], Any]) -> None:
    """Attach a valid recording for ``reserve`` to every target, re-recording if needed.

    A recording is shared by every target with the same workload, scheduler and model whose
    KV pool it is valid for (e.g. the same benchmark at tp 4 and 8 when memory never binds).
    """
    for tgt in targets:
        cfg = _with_hardware(tgt.config, {"memory_reserve": reserve})
        label = tgt.experiment.label
        rec = next((r for r in cache.values()
                    if r.same_schedule_inputs(cfg) and r.valid_for(cfg)), None)
        if rec is None:
            rec = record(cfg)
            cache[(label, reserve)] = rec
            log(f"  recorded {label} (reserve {reserve / 1e9:g} GB/GPU): {rec.num_steps} "
                f"steps, {rec.wall_time_s:.1f} s, peak {rec.peak_blocks}/"
                f"{cfg.num_gpu_blocks} blocks, {rec.num_preemptions} preemptions")
        tgt.recording = rec


@dataclass
class FitResult:
    params: dict[str, float]
    loss: float
    train: pd.DataFrame
    test: pd.DataFrame
    evaluations: int
    record_wall_s: float
    fit_wall_s: float
    reserve_losses: dict[float, float]


def _mirror_all(points: pd.DataFrame) -> tuple[list[Target], list[tuple[str, str]]]:
    targets, skipped = [], []
    for exp in group_experiments(points):
        try:
            targets.append(Target(exp, mirror_config(exp)))
        except Unmirrorable as why:
            skipped.append((exp.label, str(why)))
    return targets, skipped


def fit_profile(points: pd.DataFrame, train: pd.Series | np.ndarray, *,
                reserve_grid: Sequence[float] = (0.0, 8e9, 12e9, 14e9, 16e9, 18e9, 20e9),
                start: Mapping[str, float] | None = None, max_evals: int = 400,
                cache: dict[tuple[str, float], Recording] | None = None,
                log: Callable[[str], Any] = print) -> FitResult:
    """Fit the profile on the experiments of ``points[train]``; report the rest as held out.

    Stage 1 fits the continuous :data:`FIT_PARAMETERS` with ``memory_reserve = 0``; stage 2
    picks the reserve on ``reserve_grid`` (bytes per GPU) with those parameters; stage 3 refits
    the continuous parameters at that reserve. ``cache`` (label, reserve) → recording is
    reused and filled, so repeated fits (other splits) do not re-simulate.
    """
    points = check_points(points)
    mask = np.asarray(train, dtype=bool)
    train_targets, skipped_train = _mirror_all(points[mask])
    test_targets, _ = _mirror_all(points[~mask])
    for label, why in skipped_train:
        log(f"  skipped (train) {label}: {why}")
    if not train_targets:
        raise ConfigError("no mirrorable experiment in the training subset")
    names = list(FIT_PARAMETERS)
    params = dict(start or {"bandwidth_efficiency": 0.8, "compute_efficiency": 0.5,
                            "attention_efficiency": 0.5, "beta": 0.005,
                            "per_seq_overhead": 5e-5, "request_latency": 0.01})
    cache = {} if cache is None else cache
    t_rec = time.perf_counter()
    _ensure_recordings(train_targets, 0.0, cache, log)
    record_wall = time.perf_counter() - t_rec
    t_fit = time.perf_counter()
    evals = 0

    def fit_continuous(reserve: float) -> tuple[dict[str, float], float]:
        nonlocal evals

        def objective(x: np.ndarray) -> float:
            return loss(train_targets, {**_decode(x, names), "memory_reserve": reserve})
        x, f, n = nelder_mead(objective, _encode(params, names), max_evals=max_evals)
        evals += n
        return _decode(x, names), f

    params, best = fit_continuous(0.0)
    log(f"stage 1 (reserve 0): loss {best:.4f} {params}")
    reserve_losses = {}
    for reserve in reserve_grid:
        t0 = time.perf_counter()
        try:
            _ensure_recordings(train_targets, reserve, cache, log)
        except ConfigError as exc:
            log(f"  reserve {reserve / 1e9:g} GB: {exc}")
            continue
        record_wall += time.perf_counter() - t0
        reserve_losses[reserve] = loss(train_targets, {**params, "memory_reserve": reserve})
        log(f"stage 2: reserve {reserve / 1e9:g} GB/GPU -> loss {reserve_losses[reserve]:.4f}")
    reserve = min(reserve_losses, key=reserve_losses.__getitem__)
    _ensure_recordings(train_targets, reserve, cache, log)
    params, best = fit_continuous(reserve)
    params["memory_reserve"] = reserve
    log(f"stage 3 (reserve {reserve / 1e9:g} GB/GPU): loss {best:.4f} {params}")
    fit_wall = time.perf_counter() - t_fit - 0.0
    train_rows = pd.DataFrame(residuals(train_targets, params))
    t0 = time.perf_counter()
    _ensure_recordings(test_targets, reserve, cache, log)
    record_wall += time.perf_counter() - t0
    test_rows = pd.DataFrame(residuals(test_targets, params)) if test_targets else \
        pd.DataFrame(columns=train_rows.columns)
    return FitResult(params=params, loss=best, train=train_rows, test=test_rows,
                     evaluations=evals, record_wall_s=record_wall, fit_wall_s=fit_wall,
                     reserve_losses=reserve_losses)


def error_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Median / p90 absolute % error and n per metric family."""
    if rows.empty:
        return pd.DataFrame(columns=["median_abs_pct_error", "p90_abs_pct_error", "n"])
    pct = 100.0 * (rows["predicted"] / rows["measured"] - 1.0)
    frame = rows.assign(abs_pct=pct.abs())
    return frame.groupby("family", sort=False)["abs_pct"].agg(
        median_abs_pct_error="median",
        p90_abs_pct_error=lambda s: float(np.percentile(s, 90)), n="count")


def write_profile(path: str | Path, fit: FitResult, *, description: str) -> None:
    """Write the fitted profile TOML with comments on the data, date and residuals."""
    lines = [f"# simkit engine profile: {description}",
             f"# Fitted {_dt.date.today().isoformat()} by `simkit calibrate` "
             "(least squares on log errors, Nelder-Mead; see simkit/calibrate.py).",
             f"# Training loss {fit.loss:.4f} over {len(fit.train)} metric rows "
             f"({fit.train['experiment'].nunique()} experiments); {len(fit.test)} held-out metric "
             "rows.",
             f"# Cost: {fit.record_wall_s:.0f} s recording exact simulations (10 x conc "
             f"requests each), {fit.fit_wall_s:.0f} s fitting ({fit.evaluations} replayed "
             "evaluations, incl. re-recordings for the reserve grid).",
             "# Apply with `simkit validate POINTS.csv --engine THIS_FILE` or "
             "simkit.with_overrides(cfg, simkit.validate.load_profile(THIS_FILE)).", "#"]
    for name, rows in (("training", fit.train), ("held-out", fit.test)):
        lines.append(f"# {name} residuals (|% error|: median / p90 / n):")
        table = error_table(rows)
        for family, r in table.iterrows():
            lines.append(f"#   {family:<10} {r['median_abs_pct_error']:6.1f} % "
                         f"{r['p90_abs_pct_error']:7.1f} %  n={int(r['n'])}")
    lines += ["#", "# memory_reserve grid (bytes/GPU -> training loss): "
              + ", ".join(f"{k / 1e9:g} GB: {v:.3f}" for k, v in fit.reserve_losses.items()),
              "", "[hardware]"]
    comments = {
        "bandwidth_efficiency": "achieved fraction of peak HBM bandwidth (weight reads)",
        "compute_efficiency": "achieved fraction of peak dense FLOP/s (GEMMs)",
        "attention_efficiency": "attention kernels' fraction of those rates (KV reads, "
                                "prefill attention)",
        "beta": "s per engine step (launch, scheduling, sync not hidden)",
        "per_seq_overhead": "s per sequence per step (input prep, sampling, outputs)",
        "memory_reserve": "bytes per GPU kept from the KV cache (activations, CUDA graphs, "
                          "buffers)",
        "request_latency": "s the client + API server add to TTFT and E2E (outside steps)",
    }
    for name in (*FIT_PARAMETERS, "memory_reserve"):
        if name in CLIENT_PARAMETERS:
            continue
        value = fit.params[name]
        text = f"{value:.4g}"
        if "e" in text and "." not in text.split("e")[0]:
            text = text.replace("e", ".0e")
        lines.append(f"{name} = {text}  # {comments[name]}")
    lines += ["", "[client]"]
    for name in CLIENT_PARAMETERS:
        text = f"{fit.params[name]:.4g}"
        if "e" in text and "." not in text.split("e")[0]:
            text = text.replace("e", ".0e")
        lines.append(f"{name} = {text}  # {comments[name]}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------ CLI
def _cmd_calibrate(args: Any) -> int:
    points = read_points(args.points)
    try:
        train = points.eval(args.train, engine="python")
    except Exception as exc:  # pandas raises many types for a bad expression
        raise ConfigError(f"--train {args.train!r}: {exc}") from None
    if args.query:
        keep = points.eval(args.query, engine="python")
        points, train = points[keep], train[keep]
    fit = fit_profile(points, train.to_numpy(bool), max_evals=args.max_evals)
    for name, rows in (("training", fit.train), ("held-out", fit.test)):
        print(f"\n{name} errors:\n{error_table(rows).to_string()}")
    print(f"\nrecording {fit.record_wall_s:.1f} s, fitting {fit.fit_wall_s:.1f} s "
          f"({fit.evaluations} evaluations)")
    if args.out:
        write_profile(args.out, fit, description=args.description or
                      f"fitted on {args.points} where {args.train}")
        print(f"wrote {args.out}")
    return 0


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("calibrate", help="fit an engine profile to measured points")
    p.add_argument("points", help="measurements CSV")
    p.add_argument("--train", required=True, metavar="EXPR",
                   help="pandas expression selecting training rows, e.g. \"tp != '4'\"; "
                        "the other mirrorable rows are reported as held out")
    p.add_argument("--query", metavar="EXPR", help="restrict to these rows first")
    p.add_argument("--out", metavar="PROFILE", help="write the profile TOML here")
    p.add_argument("--description", help="first comment line of the profile")
    p.add_argument("--max-evals", type=int, default=400, help="Nelder-Mead budget per stage")
    p.set_defaults(func=_cmd_calibrate)
