"""Validation against measured serving benchmarks: mirror each measured experiment, simulate it,
report predicted vs measured with signed % errors (spec section 6).

A measurements CSV has one metric per row with the columns ``source, engine, hardware,
num_gpus, tp, precision, model, isl, osl, concurrency, request_rate, metric, value, unit,
notes`` (``data/measured/points.csv``; users can bring their own). Rows that share everything
but ``metric/value/unit`` are one *experiment*; :func:`mirror_config` turns an experiment into a
:class:`~simkit.config.Config` that reruns "the same experiment" in simkit:

* **closed loop** (``concurrency`` an integer, ``request_rate`` inf — InferenceMAX /
  ``vllm bench serve --max-concurrency N``): N users start at t = 0, ``max_num_seqs = N``,
  ``num_prompts`` requests (``num_prompts=10*conc`` or ``num_prompts=K`` in ``notes``; default
  10 × N), lengths uniform in ``[int(r·L), L]`` when ``notes`` give ``random_range_ratio=r``
  (vLLM's random dataset), else fixed; outputs exact (ignore-eos).
* **offline** (``concurrency`` "unbounded"/"offline", rate inf — ``trtllm-bench throughput``):
  every request queued at t = 0, fixed ISL/OSL, the request counts of the TensorRT-LLM
  perf-overview page, admission without eviction (TensorRT-LLM's default
  GUARANTEED_NO_EVICT); a different engine, so its rows measure transfer, not fit.
* engine flags parsed from ``notes``: ``max-num-batched-tokens``, ``max-model-len``,
  ``gpu-memory-utilization``, ``kv-cache-dtype fp8``, prefix caching (always off here).
* ``hardware``/``model`` names map to presets (``H100`` → ``h100-sxm``,
  ``nvidia/Llama-3.3-70B-Instruct-FP8`` → ``llama-3.3-70b``); ``precision`` sets
  ``bytes_per_param``.

Anything that cannot be mirrored honestly (a dataset such as ShareGPT whose length
distribution is not shipped, an unknown model, data-parallel replicas) is skipped with its
reason. An *engine profile* (``configs/engines/*.toml``, fitted by :mod:`simkit.calibrate`)
is a TOML file of calibration fields, ``[hardware] beta = 0.005`` etc., applied with
:func:`~simkit.io.with_overrides` to every mirrored config, plus an optional
``[client] request_latency`` (seconds): time the benchmark client and the serving front end add
to every request outside the engine's steps (HTTP, tokenization, detokenization, streaming,
the step a request waits to be admitted under async scheduling). It is added to predicted TTFT
and E2E (all their statistics shift by the same constant); the engine does not model it yet,
and its small delay of each closed-loop user's next request is neglected (≈ 30 ms against
E2E of seconds).
"""

from __future__ import annotations

import json
import math
import re
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simkit.config import Config
from simkit.errors import ConfigError, SimkitError, TraceError

__all__ = [
    "REQUIRED_COLUMNS",
    "Experiment",
    "ValidationReport",
    "apply_profile",
    "client_latency",
    "engine_overrides",
    "group_experiments",
    "hardware_preset_for",
    "load_profile",
    "mirror_config",
    "model_preset_for",
    "predicted_value",
    "read_points",
    "validate",
]

#: Columns every measurements CSV must have (order irrelevant, extra columns ignored).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "source", "engine", "hardware", "num_gpus", "tp", "precision", "model", "isl", "osl",
    "concurrency", "request_rate", "metric", "value", "unit", "notes")
_KEY_COLUMNS = ("source", "engine", "hardware", "num_gpus", "tp", "precision", "model", "isl",
                "osl", "concurrency", "request_rate", "notes")

#: Hardware name patterns (searched case-insensitively, first match wins) → preset id.
_HARDWARE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"h100.*pcie|h100.*nvl", "h100-pcie"),
    (r"h100", "h100-sxm"),
    (r"h200", "h200"),
    (r"b200", "b200"),
    (r"a100", "a100-80gb"),
    (r"l40s", "l40s"),
    (r"mi300x", "mi300x"),
)
#: Model name patterns → preset id (the org prefix and -Instruct/-FP8 suffixes are ignored).
_MODEL_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"llama-?3\.3-70b", "llama-3.3-70b"),
    (r"llama-?3\.1-405b", "llama-3.1-405b"),
    (r"llama-?3\.1-70b", "llama-3.1-70b"),
    (r"llama-?3\.1-8b", "llama-3.1-8b"),
    (r"(meta-)?llama-?3-70b", "llama-3-70b"),
    (r"qwen3-30b-a3b", "qwen3-30b-a3b"),
    (r"qwen3-235b-a22b", "qwen3-235b-a22b"),
    (r"mixtral-8x7b", "mixtral-8x7b"),
)
_BYTES_PER_PARAM = {"fp4": 0.5, "nvfp4": 0.5, "fp8": 1.0, "int8": 1.0, "bf16": 2.0,
                    "fp16": 2.0, "fp32": 4.0}
#: ``trtllm-bench`` request counts per ISL/OSL (TensorRT-LLM docs, performance/perf-overview.md,
#: "Preparing a Dataset" table); other lengths use 1000.
_TRTLLM_NUM_REQUESTS = {(128, 128): 30000, (128, 2048): 3000, (128, 4096): 1500,
                        (1000, 2000): 1500, (2048, 128): 3000, (2048, 2048): 1500,
                        (5000, 500): 1500, (1000, 1000): 3000, (500, 2000): 3000,
                        (20000, 2000): 1000}
_LATENCY_BASES = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_ms",
                  "e2e_latency": "e2e_ms", "e2e": "e2e_ms", "queue": "queue_ms"}
_STATS = {"median": "p50", "p50": "p50", "mean": "mean", "p90": "p90", "p95": "p95",
          "p99": "p99", "min": "min", "max": "max"}
#: Short metric families used in summaries (any ``*_median`` etc. maps to its family).
METRIC_FAMILIES = ("ttft", "tpot", "itl", "e2e", "throughput")


class Unmirrorable(Exception):
    """An experiment simkit cannot reproduce honestly; ``str(exc)`` is the reason."""


# ----------------------------------------------------------------------------------- input
def read_points(path: str | Path) -> pd.DataFrame:
    """Read a measurements CSV and check its columns (TraceError naming what is missing)."""
    path = Path(path)
    try:
        points = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise TraceError(f"{path}: no such measurements file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            IsADirectoryError) as exc:
        raise TraceError(f"{path}: cannot read as CSV: {exc}") from None
    return check_points(points, str(path))


def check_points(points: pd.DataFrame, name: str = "points") -> pd.DataFrame:
    """Validate the columns and the ``value`` column; return a copy with ``value`` as float."""
    missing = [c for c in REQUIRED_COLUMNS if c not in points.columns]
    if missing:
        raise TraceError(f"{name}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)}; a measurements CSV needs "
                         f"{', '.join(REQUIRED_COLUMNS)}")
    points = points.copy()
    values = pd.to_numeric(points["value"], errors="coerce")
    bad = values.isna() | ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(f"{name}: row {i + 1}: value = {points['value'].iloc[i]!r} is not a "
                         "finite number")
    points["value"] = values.astype(float)
    for col in _KEY_COLUMNS:
        points[col] = points[col].astype(str).str.strip()
    return points.reset_index(drop=True)


@dataclass(frozen=True)
class Experiment:
    """One measured benchmark run: the shared columns and its metrics (name → value, unit)."""

    fields: Mapping[str, str]
    metrics: Mapping[str, tuple[float, str]]
    row_ids: tuple[int, ...]

    def __getitem__(self, name: str) -> str:
        return self.fields[name]

    @property
    def label(self) -> str:
        f = self.fields
        return (f"{_short_engine(f['engine'])} {f['hardware']} tp{_num(f['tp'])} "
                f"{f['isl']}/{f['osl']} c={f['concurrency']}"
                + (f" rate={f['request_rate']}" if f["request_rate"] not in ("inf", "") else ""))


def group_experiments(points: pd.DataFrame) -> list[Experiment]:
    """Group metric rows into experiments (same values in every column but the metric's)."""
    out = []
    for _, group in points.groupby(list(_KEY_COLUMNS), sort=False):
        first = group.iloc[0]
        metrics = {str(r.metric).strip(): (float(r.value), str(r.unit).strip())
                   for r in group.itertuples()}
        out.append(Experiment({c: str(first[c]) for c in _KEY_COLUMNS}, metrics,
                              tuple(int(i) for i in group.index)))
    return out


def _short_engine(engine: str) -> str:
    return engine.split("(")[0].strip()


def _num(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{value:g}"


def _int_or_none(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or not value.is_integer():
        return None
    return int(value)


# ------------------------------------------------------------------------------ presets
def hardware_preset_for(name: str) -> str | None:
    """Preset id of a hardware name such as 'H100' or 'H100 SXM 80GB' (None if unknown)."""
    low = name.lower()
    for pattern, preset in _HARDWARE_PATTERNS:
        if re.search(pattern, low):
            return preset
    return None


def model_preset_for(name: str) -> str | None:
    """Preset id of a model name such as 'nvidia/Llama-3.3-70B-Instruct-FP8' (None if unknown)."""
    low = name.lower().split("/")[-1].replace("_", "-").replace("meta-llama-3", "llama-3")
    for pattern, preset in _MODEL_PATTERNS:
        if re.search(pattern, low):
            return preset
    return None


# ------------------------------------------------------------------------------ mirroring
def _flag(notes: str, *names: str) -> str | None:
    """Value of ``--name V``, ``name=V`` or ``name V`` in free-text notes (dashes or _)."""
    for name in names:
        pattern = name.replace("-", "[-_ ]")
        match = re.search(rf"{pattern}\s*[=: ]\s*([0-9]+\*conc|[0-9.]+(?:e[0-9]+)?|fp8|auto)",
                          notes, flags=re.IGNORECASE)
        if match:
            return match.group(1)
    return None


def mirror_config(exp: Experiment, profile: Mapping[str, Any] | None = None, *,
                  num_requests: int | None = None, seed: int = 0) -> Config:
    """The simkit config that reruns experiment ``exp`` (raises :class:`Unmirrorable`).

    ``profile`` (dotted overrides, see :func:`load_profile`) is applied last. ``num_requests``
    replaces the benchmark's request count (for quick looks; the default mirrors it).
    """
    from simkit.io import config_from_dict, with_overrides

    notes = exp["notes"]
    low_notes = notes.lower()
    hw = hardware_preset_for(exp["hardware"])
    if hw is None:
        raise Unmirrorable(f"hardware {exp['hardware']!r} matches no preset")
    model = model_preset_for(exp["model"])
    if model is None:
        raise Unmirrorable(f"model {exp['model']!r} matches no preset")
    tp = _int_or_none(exp["tp"])
    if tp is None or tp < 1:
        raise Unmirrorable(f"tp = {exp['tp']!r} is not given (tensor/pipeline split unknown)")
    num_gpus = _int_or_none(exp["num_gpus"])
    if num_gpus is not None and num_gpus != tp:
        raise Unmirrorable(f"num_gpus = {num_gpus} != tp = {tp}: several replicas or pipeline "
                           "stages are not mirrored")
    isl, osl = _int_or_none(exp["isl"]), _int_or_none(exp["osl"])
    if isl is None or osl is None:
        raise Unmirrorable(f"ISL/OSL = {exp['isl']}/{exp['osl']} is a dataset, not lengths; "
                           "its length distribution is not shipped, so the workload cannot be "
                           "mirrored honestly")
    precision = exp["precision"].lower()
    if precision not in _BYTES_PER_PARAM:
        raise Unmirrorable(f"precision {exp['precision']!r} unknown (one of "
                           f"{', '.join(_BYTES_PER_PARAM)})")
    bpp = _BYTES_PER_PARAM[precision]
    trtllm = "trtllm-bench" in low_notes or "tensorrt" in exp["engine"].lower()
    kv_dtype = _flag(notes, "kv-cache-dtype")
    if kv_dtype == "fp8" or (trtllm and bpp <= 1):
        kv_bytes = 1.0  # vLLM --kv-cache-dtype fp8; TRT-LLM FP8 checkpoints quantize KV too
    else:
        kv_bytes = max(bpp, 2.0)  # vLLM "auto": the activation dtype (BF16) or wider
    rate = exp["request_rate"].lower()
    conc = _int_or_none(exp["concurrency"])
    ratio_text = _flag(notes, "random-range-ratio")
    ratio = float(ratio_text) if ratio_text else 1.0
    if not 0 < ratio <= 1:
        raise Unmirrorable(f"random_range_ratio = {ratio:g} outside (0, 1]")

    def lengths(length: int) -> dict[str, Any]:
        low = max(1, int(length * ratio))
        if low >= length:
            return {"type": "fixed", "value": length}
        return {"type": "uniform", "min": low, "max": length}

    scheduler: dict[str, Any] = {"enable_prefix_caching": False, "policy": "fcfs",
                                 "enable_chunked_prefill": True}
    workload: dict[str, Any] = {"seed": seed, "input_len_dist": lengths(isl),
                                "output_len_dist": lengths(osl)}
    batched = _flag(notes, "max-num-batched-tokens")
    scheduler["max_num_batched_tokens"] = int(float(batched)) if batched else 8192
    if conc is not None and rate in ("inf", "", "nan"):
        prompts = _flag(notes, "num-prompts")
        if prompts and prompts.endswith("*conc"):
            n = int(prompts.split("*")[0]) * conc
        elif prompts:
            n = int(float(prompts))
        else:
            n = 10 * conc
        workload.update(arrival_pattern="closed_loop", num_concurrent_users=conc,
                        num_requests=n)
        scheduler["max_num_seqs"] = conc
    elif conc is None and exp["concurrency"].lower() in ("unbounded", "offline") \
            and rate in ("inf", ""):
        if not trtllm:
            raise Unmirrorable("offline run of an engine other than trtllm-bench: request "
                               "count and batch limits unknown")
        n = _TRTLLM_NUM_REQUESTS.get((isl, osl), 1000)
        workload.update(arrival_pattern="batched", num_requests=n,
                        input_len_dist={"type": "fixed", "value": isl},
                        output_len_dist={"type": "fixed", "value": osl})
        scheduler["max_num_seqs"] = 2048  # trtllm-bench's largest tuned batch size
        # TensorRT-LLM's default capacity scheduler (GUARANTEED_NO_EVICT) admits a request
        # only if every running one can grow to its full length: no preemption.
        scheduler["enable_preemption_free"] = True
    else:
        raise Unmirrorable(f"concurrency = {exp['concurrency']!r} with request_rate = "
                           f"{exp['request_rate']!r} is not a mirrored arrival pattern "
                           "(closed loop or offline)")
    if num_requests is not None:
        workload["num_requests"] = int(num_requests)
    hardware: dict[str, Any] = {"preset": hw, "tp": tp, "bytes_per_param": bpp,
                                "kv_bytes_per_element": kv_bytes}
    util = _flag(notes, "gpu-memory-utilization")
    hardware["gpu_memory_utilization"] = float(util) if util else 0.9
    model_table: dict[str, Any] = {"preset": model}
    max_len = _flag(notes, "max-model-len")
    if max_len:
        model_table["max_seq_len"] = int(float(max_len))
    data = {"hardware": hardware, "model": model_table, "scheduler": scheduler,
            "workload": workload, "simulation": {"sample_interval_secs": 60.0}}
    try:
        config = config_from_dict(data)
        if profile:
            config = with_overrides(config, engine_overrides(profile))
    except ConfigError as exc:
        raise Unmirrorable(f"mirrored config is invalid: {exc}") from None
    return config


# -------------------------------------------------------------------------------- metrics
def metric_family(metric: str) -> str:
    """'ttft', 'tpot', 'itl', 'e2e' or 'throughput' (or the metric itself if unknown)."""
    m = metric.lower()
    if "throughput" in m:
        return "throughput"
    for base in ("ttft", "tpot", "itl", "e2e"):
        if m.startswith(base):
            return base
    return m


def summary_value(summary: Mapping[str, Any], metric: str, unit: str,
                  tp: int, client_latency: float = 0.0) -> float:
    """The simulated value of a measured ``metric`` in ``unit`` from a summary dict.

    ``client_latency`` (s, see the module docstring) is added to TTFT and E2E statistics.
    Raises :class:`Unmirrorable` for a metric simkit does not produce.
    """
    m, u = metric.lower().strip(), unit.lower().strip()
    th = summary["throughput"]
    if m == "total_token_throughput_per_gpu":
        return float(th["total_tokens_per_s_per_gpu"])
    if m in ("total_token_throughput", "total_throughput"):
        return float(th["total_tokens_per_s_per_gpu"] * tp if "gpu" in u
                     else th["total_tokens_per_s"])
    if m in ("output_throughput", "output_token_throughput"):
        return float(th["output_tokens_per_s_per_gpu"] if "/gpu" in u
                     else th["output_tokens_per_s"])
    if m == "output_throughput_per_gpu":
        return float(th["output_tokens_per_s_per_gpu"])
    if m in ("request_throughput", "requests_per_s"):
        return float(th["requests_per_s"])
    base, _, stat = m.rpartition("_")
    if base in _LATENCY_BASES and stat in _STATS:
        value_ms = summary[_LATENCY_BASES[base]].get(_STATS[stat])
        if value_ms is None:
            return math.nan
        if base in ("ttft", "e2e", "e2e_latency") and client_latency:
            value_ms = value_ms + client_latency * 1e3
        if u in ("ms", "msec", "milliseconds"):
            return float(value_ms)
        if u in ("s", "sec", "seconds"):
            return float(value_ms) / 1e3
        raise Unmirrorable(f"unit {unit!r} of {metric} is not ms or s")
    raise Unmirrorable(f"metric {metric!r} is not one simkit predicts")


def predicted_value(result: Any, metric: str, unit: str) -> float:
    """:func:`summary_value` of a :class:`~simkit.result.SimResult`."""
    return summary_value(result.summary.to_dict(), metric, unit, result.config.hardware.tp)


# ------------------------------------------------------------------------------- profiles
def load_profile(path: str | Path) -> dict[str, Any]:
    """Read an engine profile TOML into dotted overrides ({"hardware.beta": 0.005, ...}).

    Only tables of calibration/engine fields are allowed (``hardware``, ``scheduler``, and
    ``client`` with ``request_latency``); the values are checked when applied
    (:func:`apply_profile`).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such engine profile") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    overrides: dict[str, Any] = {}
    for table, values in data.items():
        if table not in ("hardware", "scheduler", "client"):
            raise ConfigError(f"{path}: [{table}] is not allowed in an engine profile "
                              "(use [hardware] calibration fields, [scheduler] knobs, "
                              "[client] request_latency)", table=table)
        if not isinstance(values, Mapping):
            raise ConfigError(f"{path}: {table} must be a table", table=table)
        for key, value in values.items():
            overrides[f"{table}.{key}"] = value
    client_latency(overrides)  # validate now
    return overrides


def engine_overrides(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's config overrides (everything but the ``client.*`` keys)."""
    return {k: v for k, v in profile.items() if not k.startswith("client.")}


def client_latency(profile: Mapping[str, Any] | None) -> float:
    """``client.request_latency`` of a profile in seconds (0 if absent); checked."""
    if not profile:
        return 0.0
    unknown = [k for k in profile if k.startswith("client.") and k != "client.request_latency"]
    if unknown:
        raise ConfigError(f"[client] unknown key {unknown[0].split('.', 1)[1]!r}; valid keys: "
                          "request_latency", table="client", field=unknown[0])
    value = profile.get("client.request_latency", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= 60:
        raise ConfigError(f"[client] request_latency = {value!r}: must be a number of seconds "
                          "in [0, 60]", table="client", field="request_latency")
    return float(value)


def apply_profile(config: Config, profile: Mapping[str, Any] | None) -> Config:
    """``config`` with an engine profile's overrides applied (re-validated)."""
    from simkit.io import with_overrides

    return with_overrides(config, engine_overrides(profile)) if profile else config


# ------------------------------------------------------------------------------ validate
@dataclass
class ValidationReport:
    """Per-row predictions and the per-metric error summary (spec section 6 JSON)."""

    rows: pd.DataFrame
    skipped: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0

    def metrics_summary(self, rows: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
        """{family: {median_abs_pct_error, p90_abs_pct_error, n}} over rows with a prediction."""
        rows = self.rows if rows is None else rows
        out: dict[str, dict[str, Any]] = {}
        if rows.empty:
            return out
        ok = rows[np.isfinite(rows["pct_error"].astype(float))]
        for family, group in ok.groupby("family", sort=False):
            err = np.abs(group["pct_error"].to_numpy(dtype=float))
            out[str(family)] = {"median_abs_pct_error": float(np.median(err)),
                                "p90_abs_pct_error": float(np.percentile(err, 90)),
                                "n": len(err)}
        return out

    def to_dict(self) -> dict[str, Any]:
        rows = self.rows.replace({np.nan: None}).to_dict(orient="records")
        return {"metrics": self.metrics_summary(), "by_engine": self.by_engine(),
                "rows": rows, "skipped": self.skipped, "wall_time_s": self.wall_time_s}

    def by_engine(self) -> dict[str, dict[str, dict[str, Any]]]:
        """:meth:`metrics_summary` per engine (different engines are never pooled silently)."""
        if self.rows.empty:
            return {}
        return {str(engine): self.metrics_summary(group)
                for engine, group in self.rows.groupby("engine", sort=False)}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=_json_default),
                              encoding="utf-8")

    def format(self) -> str:
        """Human-readable table + summary (what ``simkit validate`` prints)."""
        lines = []
        if not self.rows.empty:
            lines.append(f"{'experiment':<54} {'metric':<31} {'measured':>12} "
                         f"{'predicted':>12} {'error':>8}")
            for r in self.rows.itertuples():
                err = "-" if not np.isfinite(r.pct_error) else f"{r.pct_error:+.1f}%"
                lines.append(f"{r.experiment[:54]:<54} {r.metric[:31]:<31} "
                             f"{_g(r.measured):>12} {_g(r.predicted):>12} {err:>8}")
        groups = [("all rows", self.metrics_summary())]
        if self.rows["engine"].nunique() > 1:
            groups += list(self.by_engine().items())
        for title, summary in groups:
            lines.append(f"\n{title}:")
            lines.append(f"  {'metric':<12} {'n':>4} {'median |err|':>13} {'p90 |err|':>10}")
            for family, s in summary.items():
                lines.append(f"  {family:<12} {s['n']:>4} {s['median_abs_pct_error']:>12.1f}% "
                             f"{s['p90_abs_pct_error']:>9.1f}%")
        num_skipped_rows = sum(s["num_rows"] for s in self.skipped)
        lines.append(f"\n{len(self.rows)} metric rows compared; {num_skipped_rows} rows in "
                     f"{len(self.skipped)} experiments skipped; simulated in "
                     f"{self.wall_time_s:.1f} s")
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + s["num_rows"]
        for reason, n in reasons.items():
            lines.append(f"  skipped {n} rows: {reason}")
        return "\n".join(lines)


def _g(x: float) -> str:
    if not np.isfinite(x):
        return "-"
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.3g}"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def validate(points: pd.DataFrame, profile: Mapping[str, Any] | None = None, *,
             num_requests: int | None = None, seed: int = 0,
             progress: Callable[[int, int, str], Any] | None = None) -> ValidationReport:
    """Mirror and simulate every experiment in ``points``; compare metric by metric.

    ``points`` is a DataFrame with :data:`REQUIRED_COLUMNS` (see :func:`read_points`).
    ``progress(i, n, label)`` is called before each simulation.
    """
    import simkit

    points = check_points(points)
    latency = client_latency(profile)
    experiments = group_experiments(points)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    wall0 = time.perf_counter()
    for i, exp in enumerate(experiments):
        if progress is not None:
            progress(i, len(experiments), exp.label)
        try:
            config = mirror_config(exp, profile, num_requests=num_requests, seed=seed)
        except Unmirrorable as why:
            skipped.append({"experiment": exp.label, "reason": str(why),
                            "num_rows": len(exp.row_ids), "row_ids": list(exp.row_ids)})
            continue
        t0 = time.perf_counter()
        try:
            result = simkit.simulate(config)
        except SimkitError as exc:
            skipped.append({"experiment": exp.label, "reason": f"simulation failed: {exc}",
                            "num_rows": len(exp.row_ids), "row_ids": list(exp.row_ids)})
            continue
        sim_s = time.perf_counter() - t0
        summary = result.summary.to_dict()
        for row_id, (metric, (measured, unit)) in zip(exp.row_ids, exp.metrics.items(),
                                                      strict=True):
            try:
                pred = summary_value(summary, metric, unit, config.hardware.tp, latency)
            except Unmirrorable as why:
                skipped.append({"experiment": exp.label, "reason": str(why), "num_rows": 1,
                                "row_ids": [row_id]})
                continue
            pct = 100.0 * (pred - measured) / measured if measured else math.nan
            records.append({
                "row_id": row_id, "experiment": exp.label, "engine": exp["engine"],
                "hardware": exp["hardware"], "tp": _int_or_none(exp["tp"]),
                "model": exp["model"], "isl": exp["isl"], "osl": exp["osl"],
                "concurrency": exp["concurrency"], "metric": metric, "unit": unit,
                "family": metric_family(metric), "measured": measured, "predicted": pred,
                "pct_error": pct, "sim_wall_s": sim_s,
                "num_requests": config.workload.num_requests,
                "num_gpu_blocks": config.num_gpu_blocks,
                "preemptions": summary["counts"]["preemptions"],
            })
    columns = ["row_id", "experiment", "engine", "hardware", "tp", "model", "isl", "osl",
               "concurrency", "metric", "unit", "family", "measured", "predicted",
               "pct_error", "sim_wall_s", "num_requests", "num_gpu_blocks", "preemptions"]
    rows = pd.DataFrame.from_records(records, columns=columns)
    return ValidationReport(rows=rows, skipped=skipped,
                            wall_time_s=time.perf_counter() - wall0)


# ------------------------------------------------------------------------------------ CLI
def _cmd_validate(args: Any) -> int:
    import sys

    points = read_points(args.points)
    if args.query:
        try:
            points = points.query(args.query, engine="python")
        except Exception as exc:  # pandas raises many types for a bad expression
            raise ConfigError(f"--query {args.query!r}: {exc}") from None
    profile = load_profile(args.engine) if args.engine else None

    def progress(i: int, n: int, label: str) -> None:
        if not args.quiet:
            print(f"[{i + 1}/{n}] {label}", file=sys.stderr, flush=True)
    report = validate(points, profile, num_requests=args.num_requests, seed=args.seed,
                      progress=progress)
    print(report.format())
    if args.json:
        report.to_json(args.json)
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``simkit validate`` (and ``simkit calibrate``) on the main parser."""
    p = subparsers.add_parser(
        "validate", help="simulate measured benchmark points and report the %% error",
        description="Mirror each experiment of a measurements CSV (columns: "
                    + ", ".join(REQUIRED_COLUMNS) + "), simulate it and compare.")
    p.add_argument("points", help="measurements CSV (e.g. data/measured/points.csv)")
    p.add_argument("--engine", metavar="PROFILE",
                   help="engine profile TOML (e.g. configs/engines/vllm-0.10.2.toml)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--query", metavar="EXPR",
                   help="pandas query selecting rows (values are strings as in the CSV), "
                        "e.g. \"tp == '4.0' and isl == '1024'\"")
    p.add_argument("--num-requests", type=int, metavar="N",
                   help="override each benchmark's request count (quicker, less faithful)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_validate)
    try:
        from simkit.calibrate import add_cli as add_calibrate
    except ImportError:  # pragma: no cover
        return
    add_calibrate(subparsers)


def families(metrics: Sequence[str]) -> list[str]:
    """Metric families present in ``metrics``, in :data:`METRIC_FAMILIES` order."""
    present = {metric_family(m) for m in metrics}
    return [f for f in METRIC_FAMILIES if f in present]
