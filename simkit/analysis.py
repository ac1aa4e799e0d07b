"""Capacity-planning questions answered from simulations: frontiers, SLO limits, fewest GPUs.

- :func:`pareto_frontier`: the rows of a sweep no other row beats on two metrics at once
  (e.g. output tokens/s per GPU against tokens/s per user, or cost against latency).
- :func:`slo_search`: the largest load (arrival rate or concurrent users) one replica serves
  within latency SLOs, by bisection rather than a brute-force grid.
- :func:`fewest_gpus`: over candidate hardware configs, how many replicas (and so GPUs, and
  dollars per hour) a given total load needs within the SLOs, best candidate first.

An SLO is a mapping of metric column (as in a sweep row: ``"ttft_ms.p99"``, ``"tpot_ms.p50"``)
to an upper bound. A row meets it when its run succeeded completely (no error, not partial, no
rejected request) and every named metric is at most its bound. Core module: numpy and pandas
only, no plotting (figures live in :mod:`simkit.ui.sweep_plots`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from simkit.config import Config, LengthDist
from simkit.errors import ConfigError
from simkit.sweeps import COST_COLUMNS, METRIC_COLUMNS, _check_name, expand_grid, run_point

__all__ = [
    "CapacityPlan",
    "SloSearchResult",
    "fewest_gpus",
    "meets_slo",
    "normalize_slo",
    "pareto_frontier",
    "slo_search",
]

_SLO_METRICS = (*METRIC_COLUMNS, *COST_COLUMNS)


# --------------------------------------------------------------------------------- SLOs
def normalize_slo(slo: Mapping[str, Any] | None) -> dict[str, float]:
    """``{"ttft_ms_p99": 2000}`` or ``{"ttft_ms.p99": 2000}`` → ``{"ttft_ms.p99": 2000.0}``.

    The underscore form (handy as a bare TOML key) replaces the last ``_`` with a dot. Bounds
    must be positive numbers; unknown metrics are an error listing examples of valid names.
    """
    out: dict[str, float] = {}
    for key, bound in (slo or {}).items():
        name = str(key)
        if name not in _SLO_METRICS and "_" in name:
            head, _, tail = name.rpartition("_")
            if f"{head}.{tail}" in _SLO_METRICS:
                name = f"{head}.{tail}"
        if name not in _SLO_METRICS:
            raise ConfigError(f"slo {key!r}: unknown metric; use a result column such as "
                              "ttft_ms.p99, tpot_ms.p50, e2e_ms.p90, itl_ms.p95 (or "
                              "ttft_ms_p99 ...)")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) \
                or not math.isfinite(bound) or bound <= 0:
            raise ConfigError(f"slo {key} = {bound!r}: must be a positive number (an upper "
                              "bound)")
        out[name] = float(bound)
    return out


def _row_meets(row: Mapping[str, Any], slo: Mapping[str, float]) -> bool:
    error = row.get("error")
    if isinstance(error, str):
        return False
    if row.get("partial") is True:
        return False
    rejected = row.get("counts.rejected")
    if rejected is not None and not (isinstance(rejected, float) and math.isnan(rejected)) \
            and rejected > 0:
        return False
    for metric, bound in slo.items():
        value = row.get(metric)
        if value is None or not isinstance(value, (int, float, np.number)) \
                or not math.isfinite(float(value)) or float(value) > bound:
            return False
    return True


def meets_slo(rows: pd.DataFrame | Mapping[str, Any],
              slo: Mapping[str, Any]) -> pd.Series | bool:
    """Whether each row (a DataFrame → boolean Series) or one row (a dict → bool) meets ``slo``.

    Meeting means: no ``error``, not ``partial``, ``counts.rejected`` is 0, and every metric of
    the SLO is a finite number at most its bound (a missing metric fails).
    """
    bounds = normalize_slo(slo)
    if isinstance(rows, pd.DataFrame):
        records = rows.to_dict("records")
        return pd.Series([_row_meets(r, bounds) for r in records], index=rows.index,
                         dtype=bool)
    return _row_meets(rows, bounds)


# ----------------------------------------------------------------------------- frontier
def pareto_frontier(df: pd.DataFrame, x: str, y: str,
                    maximize: tuple[bool, bool] = (True, True)) -> pd.DataFrame:
    """The rows of ``df`` not dominated on (``x``, ``y``), sorted by ``x``.

    A row is dominated when another row is at least as good on both metrics and strictly
    better on one (``maximize`` says which direction is good for each). Rows with a missing
    x or y are ignored; identical non-dominated rows are all kept. O(n log n).
    """
    for col in (x, y):
        if col not in df.columns:
            raise ConfigError(f"pareto_frontier: no column {col!r}; columns: "
                              f"{', '.join(map(str, df.columns))}")
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    valid = np.isfinite(xs) & np.isfinite(ys)
    # work in "bigger is better" for both
    gx = np.where(maximize[0], xs, -xs)
    gy = np.where(maximize[1], ys, -ys)
    idx = np.flatnonzero(valid)
    order = idx[np.lexsort((-gy[idx], -gx[idx]))]  # x best first, then y best first
    keep: list[int] = []
    best_y_better_x = -np.inf  # best y among rows with a strictly better x
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and gx[order[j]] == gx[order[i]]:
            j += 1
        group = order[i:j]
        top_y = gy[group[0]]
        if top_y > best_y_better_x:
            keep.extend(int(k) for k in group if gy[k] == top_y)
        best_y_better_x = max(best_y_better_x, top_y)
        i = j
    frontier = df.iloc[sorted(keep)]
    return frontier.sort_values(x, kind="stable")


# ---------------------------------------------------------------------------- SLO search
@dataclass
class SloSearchResult:
    """The outcome of :func:`slo_search`.

    ``best``: the largest evaluated knob value that met the SLO (None if even ``lo`` failed);
    ``lowest_failing``: the smallest evaluated value that failed (None if ``hi`` met, i.e.
    the limit is at or above ``hi``); ``points``: every simulated point in evaluation order
    (the knob, ``meets``, and the full sweep row); ``converged``: the bracket shrank to ``tol``.
    """

    knob: str
    slo: dict[str, float]
    best: float | int | None
    lowest_failing: float | int | None
    best_row: dict[str, Any] | None
    points: pd.DataFrame
    converged: bool
    integer: bool

    def __repr__(self) -> str:
        return (f"SloSearchResult(knob={self.knob!r}, best={self.best!r}, "
                f"lowest_failing={self.lowest_failing!r}, evaluations={len(self.points)}, "
                f"converged={self.converged})")


def _field_type(knob: str) -> str:
    from simkit.sweeps import _TABLE_CLASSES

    parts = knob.split(".")
    cls = LengthDist if len(parts) == 3 else _TABLE_CLASSES[parts[0]]
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    return types.get(parts[-1], "")


def _is_integer_knob(knob: str) -> bool:
    kind = _field_type(knob)
    return "int" in kind and "float" not in kind


class _Evaluator:
    """Runs (and remembers) one simulation per knob value for a fixed set of overrides."""

    def __init__(self, base: Config, knob: str, slo: dict[str, float],
                 overrides: Mapping[str, Any] | None,
                 overrides_for: Callable[[Any], Mapping[str, Any]] | None) -> None:
        from simkit.io import config_to_dict

        self.config_dict = config_to_dict(base)
        self.knob = knob
        self.slo = slo
        self.overrides = dict(overrides or {})
        self.overrides_for = overrides_for
        self.rows: list[dict[str, Any]] = []
        self.swept: list[str] = []
        self._memo: dict[Any, dict[str, Any]] = {}

    def __call__(self, value: Any) -> dict[str, Any]:
        if value in self._memo:
            return self._memo[value]
        point = {**self.overrides, self.knob: value}
        if self.overrides_for is not None:
            point.update(self.overrides_for(value))
        self.swept.extend(k for k in point if k not in self.swept)
        row = run_point(self.config_dict, point)
        row["meets"] = _row_meets(row, self.slo)
        self._memo[value] = row
        self.rows.append(row)
        return row

    def frame(self) -> pd.DataFrame:
        """The evaluated rows in order: swept columns, ``meets``, metrics, cost, error."""
        from simkit.sweeps import _frame

        df = _frame(self.rows, self.swept)
        meets = df.pop("meets").astype(bool)
        df.insert(len(self.swept), "meets", meets)
        return df


def slo_search(
    base_config: Config,
    *,
    knob: str = "workload.arrival_rate",
    lo: float,
    hi: float,
    slo: Mapping[str, Any],
    tol: float | None = None,
    max_iter: int = 20,
    integer: bool | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_for: Callable[[Any], Mapping[str, Any]] | None = None,
) -> SloSearchResult:
    """The largest value of ``knob`` in [``lo``, ``hi``] at which the config meets ``slo``.

    Bisection: simulate ``lo`` (if it fails, there is no answer) and ``hi`` (if it meets, the
    answer is ``hi``: the limit is at or above it), then halve the bracket [meets, fails] until
    it is at most ``tol`` wide (default 1 % of ``hi - lo``; 1 for integer knobs) or ``max_iter``
    more simulations ran. This **assumes the SLO metrics grow monotonically with the knob**
    (more load, worse latency), as they do for arrival rate and concurrency in a queueing
    system; with a random workload of few requests the metrics are noisy, so near the limit
    the answer is only as sharp as that noise.

    ``integer`` (default: from the field's type, e.g. True for ``workload.num_concurrent_users``)
    makes the bisection step over integers. ``overrides`` apply to every run (e.g. the
    candidate's GPU); ``overrides_for(value)`` gives extra overrides that depend on the knob,
    e.g. ``lambda users: {"workload.num_requests": 4 * users}`` so a closed loop always runs
    four requests per user.
    """
    _check_name(knob)
    bounds = normalize_slo(slo)
    if not bounds:
        raise ConfigError("slo_search: slo is empty; give e.g. {'ttft_ms.p99': 2000}")
    if integer is None:
        integer = _is_integer_knob(knob)
    for name, value in (("lo", lo), ("hi", hi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"slo_search: {name} = {value!r}: must be a positive number")
    if integer:
        lo, hi = math.ceil(lo), math.floor(hi)
    if not lo < hi:
        raise ConfigError(f"slo_search: lo = {lo} must be below hi = {hi}")
    if tol is None:
        tol = 1 if integer else (hi - lo) / 100
    if not tol > 0:
        raise ConfigError(f"slo_search: tol = {tol!r}: must be positive")
    if max_iter < 0:
        raise ConfigError(f"slo_search: max_iter = {max_iter}: must be >= 0")

    evaluate = _Evaluator(base_config, knob, bounds, overrides, overrides_for)
    best: Any = None
    failing: Any = None
    converged = True
    if not evaluate(lo)["meets"]:
        failing = lo
    elif evaluate(hi)["meets"]:
        best = hi
    else:
        best, failing = lo, hi
        for _ in range(max_iter):
            if failing - best <= tol:
                break
            mid = (best + failing) // 2 if integer else (best + failing) / 2
            if mid in (best, failing):
                break
            if evaluate(mid)["meets"]:
                best = mid
            else:
                failing = mid
        converged = failing - best <= tol
    best_row = evaluate(best) if best is not None else None
    return SloSearchResult(knob=knob, slo=bounds, best=best, lowest_failing=failing,
                           best_row=best_row, points=evaluate.frame(), converged=converged,
                           integer=integer)


# ------------------------------------------------------------------------- fewest GPUs
@dataclass
class CapacityPlan:
    """The outcome of :func:`fewest_gpus`.

    ``table``: one row per candidate, best first (its override columns, ``error``,
    ``max_load_per_replica``, ``replicas``, ``load_per_replica``, ``num_gpus``,
    ``usd_per_hour``, ``meets`` and the metrics at the load each replica would carry);
    ``best``: the first row that meets the SLO (None if none does); ``points``: every
    simulation of every candidate's search (with the candidate columns), e.g. for a frontier.
    """

    load: float
    knob: str
    slo: dict[str, float]
    table: pd.DataFrame
    points: pd.DataFrame
    best: dict[str, Any] | None = field(default=None)


_PLAN_METRICS = ("ttft_ms.p99", "tpot_ms.p50", "throughput.output_tokens_per_s",
                 "output_tokens_per_s_per_gpu", "output_tokens_per_s_per_user",
                 "usd_per_million_output_tokens")


def fewest_gpus(
    base_config: Config,
    candidates: Mapping[Any, Any] | Sequence[Mapping[str, Any]],
    *,
    load: float,
    slo: Mapping[str, Any],
    knob: str = "workload.arrival_rate",
    lo: float | None = None,
    by: str = "num_gpus",
    tol: float | None = None,
    max_iter: int = 12,
    overrides_for: Callable[[Any], Mapping[str, Any]] | None = None,
    progress: Callable[[int, int, Mapping[str, Any]], None] | None = None,
) -> CapacityPlan:
    """How many GPUs each candidate config needs to serve ``load`` within ``slo``; best first.

    For each candidate (override dicts, or a grid dict that expands to them, e.g.
    ``{"hardware.preset": ["h100-sxm", "h200"], "hardware.tp": [1, 2, 4]}``):
    :func:`slo_search` finds the most load one replica carries within the SLO, searching
    ``[lo, load]`` (``lo`` default: 1 for integer knobs, else ``load / 64``); then
    ``replicas = ceil(load / that)``, and the load each replica then carries
    (``load / replicas``, rounded up for integer knobs) is simulated to confirm it meets the
    SLO (if noise says otherwise, one more replica is tried, up to three times).
    ``num_gpus = replicas × tp`` and ``usd_per_hour = num_gpus × price_per_gpu_hour``.

    Assumes a load balancer splits the load evenly over identical replicas (a Poisson stream
    split at random stays Poisson; users split evenly). ``by``: ``"num_gpus"`` (ties broken by
    cost) or ``"usd_per_hour"`` (ties broken by GPUs). Candidates that cannot meet the SLO
    even at ``lo`` per replica, or whose config is invalid, come last with ``meets`` False.
    ``progress(i, n, candidate)`` is called before candidate ``i`` of ``n`` is searched.
    """
    if by not in ("num_gpus", "usd_per_hour"):
        raise ConfigError(f"fewest_gpus: by = {by!r}: must be 'num_gpus' or 'usd_per_hour'")
    _check_name(knob)
    integer = _is_integer_knob(knob)
    if isinstance(load, bool) or not isinstance(load, (int, float)) or not load > 0:
        raise ConfigError(f"fewest_gpus: load = {load!r}: must be a positive number")
    if lo is None:
        lo = 1 if integer else load / 64
    bounds = normalize_slo(slo)
    points = expand_grid(candidates)
    cand_cols = list(dict.fromkeys(k for p in points for k in p))
    rows: list[dict[str, Any]] = []
    all_points: list[pd.DataFrame] = []
    for number, cand in enumerate(points):
        if progress is not None:
            progress(number, len(points), cand)
        row: dict[str, Any] = {c: cand.get(c) for c in cand_cols}
        if lo >= load:  # one replica must carry it all: no search needed
            evaluate = _Evaluator(base_config, knob, bounds, cand, overrides_for)
            r = evaluate(load)
            best = load if r["meets"] else None
            search_points = evaluate.frame()
            first = r
        else:
            res = slo_search(base_config, knob=knob, lo=lo, hi=load, slo=bounds, tol=tol,
                             max_iter=max_iter, integer=integer, overrides=cand,
                             overrides_for=overrides_for)
            best = res.best
            search_points = res.points
            first = res.points.iloc[0].to_dict()
        extra: list[dict[str, Any]] = []
        error = first.get("error")
        if isinstance(error, str):
            row.update(error=error, meets=False)
        elif best is None:
            row.update(error=None, meets=False, max_load_per_replica=None,
                       note=f"misses the SLO even at {lo:g} per replica")
        else:
            replicas = max(1, math.ceil(load / best - 1e-9))
            verify = _Evaluator(base_config, knob, bounds, cand, overrides_for)
            for _ in range(3):
                per = math.ceil(load / replicas) if integer else load / replicas
                op = verify(per)
                if op["meets"]:
                    break
                replicas += 1
            extra = verify.rows
            tp = op.get("num_gpus")
            price = op.get("price_per_gpu_hour")
            num_gpus = replicas * tp if tp is not None else None
            row.update(error=None, meets=bool(op["meets"]), max_load_per_replica=best,
                       replicas=replicas, load_per_replica=per, num_gpus=num_gpus,
                       usd_per_hour=(num_gpus * price if num_gpus is not None
                                     and price is not None and not pd.isna(price) else None),
                       **{m: op.get(m) for m in _PLAN_METRICS})
        rows.append(row)
        frame = search_points
        if extra:  # the verification runs, minus any the search had already made
            frame = pd.concat([frame, verify.frame()], ignore_index=True)
            frame = frame.drop_duplicates(subset=[knob], ignore_index=True)
        all_points.append(frame)
    cols = [*cand_cols, "meets", "replicas", "num_gpus", "usd_per_hour", "max_load_per_replica",
            "load_per_replica", *_PLAN_METRICS, "error", "note"]
    table = pd.DataFrame(rows).reindex(columns=cols)
    keys = ["num_gpus", "usd_per_hour"] if by == "num_gpus" else ["usd_per_hour", "num_gpus"]
    table["_rank"] = ~table["meets"].astype(bool)
    table = table.sort_values(["_rank", *keys], kind="stable", na_position="last")
    table = table.drop(columns="_rank").reset_index(drop=True)
    ok = table[table["meets"].astype(bool)]
    best_row = ok.iloc[0].to_dict() if len(ok) else None
    pts = pd.concat(all_points, ignore_index=True) if all_points else pd.DataFrame()
    return CapacityPlan(load=load, knob=knob, slo=bounds, table=table, points=pts,
                        best=best_row)
