"""Workloads: which requests a benchmark client sends, how long they are, and when.

This module models the client side of ``vllm bench serve``: an arrival process (open loop:
Poisson, gamma, uniform, burst, batched; closed loop: N users each waiting for their previous
reply; or the replay of a real trace), token-length distributions for prompts and outputs
(outputs are exact, as with ``--ignore-eos``), optional priorities, and, for traces that carry
them, prefix-block hashes for prefix caching. The result is a :class:`RequestPlan`: plain arrays
in send order that the engine turns into requests. Nothing here knows about the engine.

Randomness: every concern draws from its own :class:`numpy.random.Generator`, spawned from
``WorkloadConfig.seed`` with :class:`numpy.random.SeedSequence` (in this fixed order: arrivals,
input lengths, output lengths, priorities, closed-loop jitter). Changing one concern (say the
arrival rate) therefore leaves the others' samples unchanged, and the same config always gives a
bit-identical plan. No global random state and no wall clock are used.

Traces (spec section 4): the Azure LLM inference CSV, Mooncake JSONL and a plain
CSV/Parquet, read by :func:`read_trace` into one DataFrame shape.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
else:
    from simkit._lazy import pandas as pd

from simkit.config import TRACE_FORMATS, LengthDist, TraceFormat, WorkloadConfig
from simkit.errors import ConfigError, TraceError

__all__ = ["RequestPlan", "build_workload", "read_trace", "sample_lengths"]

#: Upper clamp of any sampled token count (keeps sums of int64 far from overflow).
_MAX_TOKENS = 10**9
#: An open loop bounded only by ``duration_secs`` may expect at most this many arrivals.
_MAX_EXPECTED_ARRIVALS = 5e7
#: A closed loop bounded only by ``duration_secs`` pre-samples this many requests per user ...
_CLOSED_LOOP_REQUESTS_PER_USER = 1000
#: ... but never more than this many in total.
_CLOSED_LOOP_MAX_REQUESTS = 1_000_000
#: Random streams spawned from the seed, in spawn order (append only: reordering changes plans).
_STREAMS = ("arrivals", "input_lengths", "output_lengths", "priorities", "jitter")
#: Start value of every block-hash chain (any fixed int; ``None`` is not hash-stable in 3.11).
_HASH_ROOT = 0x5EED
#: Columns of the DataFrame returned by :func:`read_trace`.
_TRACE_COLUMNS = ("arrival_time", "input_tokens", "output_tokens")


# ------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class RequestPlan:
    """The requests a workload sends, in send order (index = request id).

    Open loop and traces give ``arrival_times``; a closed loop gives ``num_users`` (and their
    start times) instead, and the engine sends the next request when a user becomes free.
    Arrays are converted to int64 / float64 and made read-only, so a plan can be shared by
    several simulations without one changing another's requests.

    ``block_hashes[i]`` has one int per *full* prompt block of ``block_size`` tokens; equal
    leading hashes mean an equal prompt prefix (the hash of block j identifies blocks 0..j).
    ``stop_sending_at``: no request is sent at or after this simulated time (``duration_secs``).
    """

    num_prompt_tokens: np.ndarray
    max_tokens: np.ndarray
    priorities: np.ndarray
    arrival_times: np.ndarray | None
    block_hashes: list[tuple[int, ...]] | None
    num_users: int | None = None
    user_start_times: np.ndarray | None = None
    think_time_secs: float = 0.0
    stop_sending_at: float | None = None

    def __post_init__(self) -> None:
        n = len(np.asarray(self.num_prompt_tokens))
        for name, dtype in (("num_prompt_tokens", np.int64), ("max_tokens", np.int64),
                            ("priorities", np.int64), ("arrival_times", np.float64)):
            value = getattr(self, name)
            if value is None:
                continue
            arr = _frozen_array(value, dtype)
            if arr.ndim != 1 or len(arr) != n:
                raise ConfigError(f"RequestPlan.{name}: needs one value per request ({n}), "
                                  f"got shape {arr.shape}", field=name)
            object.__setattr__(self, name, arr)
        for name in ("num_prompt_tokens", "max_tokens"):
            arr = getattr(self, name)
            if n and arr.min() < 1:
                raise ConfigError(f"RequestPlan.{name}: every value must be >= 1 "
                                  f"(request {int(np.argmin(arr))} has {int(arr.min())})",
                                  field=name)
        times = self.arrival_times
        if times is not None and n:
            if not np.all(np.isfinite(times)) or times[0] < 0 or np.any(np.diff(times) < 0):
                raise ConfigError("RequestPlan.arrival_times: must be finite, >= 0 and "
                                  "non-decreasing", field="arrival_times")
        if self.block_hashes is not None and len(self.block_hashes) != n:
            raise ConfigError(f"RequestPlan.block_hashes: needs one tuple per request ({n}), "
                              f"got {len(self.block_hashes)}", field="block_hashes")
        if (times is None) == (self.num_users is None):
            raise ConfigError("RequestPlan: give arrival_times (open loop, trace) or num_users "
                              "(closed loop), not both or neither", field="num_users")
        if self.num_users is not None:
            if self.num_users < 1:
                raise ConfigError(f"RequestPlan.num_users = {self.num_users}: must be >= 1",
                                  field="num_users")
            starts = (np.zeros(self.num_users) if self.user_start_times is None
                      else self.user_start_times)
            arr = _frozen_array(starts, np.float64)
            if arr.shape != (self.num_users,) or not np.all(arr >= 0):
                raise ConfigError("RequestPlan.user_start_times: needs one time >= 0 per user",
                                  field="user_start_times")
            object.__setattr__(self, "user_start_times", arr)

    def __len__(self) -> int:
        return len(self.num_prompt_tokens)


def _frozen_array(value: Any, dtype: type) -> np.ndarray:
    arr: np.ndarray = np.array(value, dtype=dtype, copy=True)
    arr.flags.writeable = False
    return arr


# ------------------------------------------------------------------------------- build plan
def build_workload(cfg: WorkloadConfig, *, block_size: int) -> RequestPlan:
    """Sample (or read) the requests ``cfg`` describes.

    ``block_size`` is the KV-cache block size in tokens; it is needed only to map a trace's
    prefix hashes (Mooncake ``hash_ids``) onto the cache's blocks.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise ConfigError(f"[scheduler] block_size = {block_size}: must be an integer >= 1",
                          table="scheduler", field="block_size")
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(_STREAMS))
    rngs = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds, strict=True)}
    if cfg.arrival_pattern == "trace":
        return _trace_plan(cfg, int(block_size), rngs)

    if cfg.arrival_pattern == "closed_loop":
        arrival_times = None
        num_users = cfg.num_concurrent_users
        assert num_users is not None  # WorkloadConfig guarantees it
        n = cfg.num_requests if cfg.num_requests is not None else min(
            num_users * _CLOSED_LOOP_REQUESTS_PER_USER, _CLOSED_LOOP_MAX_REQUESTS)
        jitter = cfg.closed_loop_jitter_secs
        start_times = (rngs["jitter"].uniform(0.0, jitter, num_users) if jitter > 0
                       else np.zeros(num_users))
    else:
        arrival_times = _open_loop_arrivals(cfg, rngs["arrivals"])
        n = len(arrival_times)
        if n == 0:
            raise ConfigError(
                f"[workload] duration_secs = {cfg.duration_secs}: no request arrives before "
                f"it (arrival_rate = {cfg.arrival_rate}); use a longer duration",
                table="workload", field="duration_secs")
        num_users, start_times = None, None

    return RequestPlan(
        num_prompt_tokens=sample_lengths(cfg.input_len_dist, n, rngs["input_lengths"]),
        max_tokens=sample_lengths(cfg.output_len_dist, n, rngs["output_lengths"]),
        priorities=_sample_priorities(cfg.num_priority_levels, n, rngs["priorities"]),
        arrival_times=arrival_times,
        block_hashes=None,
        num_users=num_users,
        user_start_times=start_times,
        think_time_secs=float(cfg.think_time_secs) if num_users is not None else 0.0,
        stop_sending_at=cfg.duration_secs,
    )


def _sample_priorities(levels: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform over ``0 .. levels-1`` (0 = most important, as in vLLM); zeros for one level."""
    if levels > 1:
        return rng.integers(0, levels, n, dtype=np.int64)
    return np.zeros(n, dtype=np.int64)


def _open_loop_arrivals(cfg: WorkloadConfig, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in seconds (non-decreasing) of an open-loop pattern.

    ``num_requests`` arrivals are drawn and those at or after ``duration_secs`` dropped; with
    no ``num_requests`` the process is drawn in vectorized chunks until it passes the duration.
    """
    pattern, n, duration = cfg.arrival_pattern, cfg.num_requests, cfg.duration_secs
    if pattern == "batched":
        assert n is not None  # WorkloadConfig requires num_requests for batched
        return np.zeros(n)
    rate = cfg.arrival_rate
    assert rate is not None  # WorkloadConfig requires arrival_rate for these patterns
    horizon = duration if duration is not None else math.inf
    expected = rate * horizon  # arrivals expected before the duration (inf: no duration)
    if n is None and expected > _MAX_EXPECTED_ARRIVALS:
        raise ConfigError(
            f"[workload] arrival_rate × duration_secs = {expected:.3g} expected requests: "
            f"at most {_MAX_EXPECTED_ARRIVALS:.0e} without num_requests; set num_requests "
            "or a shorter duration_secs", table="workload", field="duration_secs")

    if pattern in ("uniform", "fixed_rate"):
        count = n if n is not None else math.ceil(expected) + 1
        times = np.arange(1, count + 1, dtype=np.float64) / rate
    else:
        group = cfg.burst_size if pattern == "burst" else 1
        if pattern == "gamma":
            shape = cfg.burstiness

            def gaps(k: int) -> np.ndarray:
                return rng.gamma(shape, 1.0 / (rate * shape), k)
        else:  # poisson, burst (one gap per group of `group` requests)
            def gaps(k: int) -> np.ndarray:
                return rng.exponential(group / rate, k)

        if n is not None:
            group_times = np.cumsum(gaps(-(-n // group)))
        else:
            group_times = _draw_until(gaps, expected / group, horizon)
        times = np.repeat(group_times, group) if group > 1 else group_times
        if n is not None:
            times = times[:n]
    if duration is not None:
        times = times[times < duration]
    return times


def _draw_until(gaps: Callable[[int], np.ndarray], expected: float,
                duration: float) -> np.ndarray:
    """Cumulative sums of ``gaps(k)`` chunks until the last one reaches ``duration``."""
    chunk = int(expected + 6.0 * math.sqrt(expected) + 16)
    parts: list[np.ndarray] = []
    last = 0.0
    while last < duration:
        part = last + np.cumsum(gaps(chunk))
        parts.append(part)
        last = float(part[-1])
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------- lengths
def sample_lengths(dist: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` token counts from ``dist`` (int64), truncated toward zero and clamped to [1, 1e9].

    ``uniform`` draws integers in [min, max] inclusive; ``lognormal`` takes μ and σ of the
    underlying normal (median e^μ); ``empirical`` draws with replacement from the file's values.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"number of samples n = {n}: must be an integer >= 0")
    dist.check("workload.length_dist")
    values: np.ndarray
    if dist.type == "fixed":
        assert dist.value is not None  # dist.check ensures the fields each type needs
        values = np.full(n, float(dist.value))
    elif dist.type == "uniform":
        assert dist.min is not None and dist.max is not None
        values = rng.integers(int(dist.min), int(dist.max) + 1, n)
    elif dist.type in ("normal", "lognormal"):
        assert dist.mean is not None and dist.std_dev is not None
        draw = rng.normal if dist.type == "normal" else rng.lognormal
        values = draw(dist.mean, dist.std_dev, n)
    else:
        assert dist.path is not None
        pool = _read_empirical(dist.path)
        values = pool[rng.integers(0, len(pool), n)]
    return np.trunc(np.clip(values, 1, _MAX_TOKENS)).astype(np.int64)


def _read_empirical(path: str | os.PathLike[str]) -> np.ndarray:
    """Values of an empirical length file: one number per line, or a CSV's first numeric column.

    A first row that is not numeric is taken as a header.
    """
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"empirical length file not found: {p}")
    try:
        raw = pd.read_csv(p, header=None, dtype=str, skip_blank_lines=True,
                          skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise TraceError(f"empirical length file {p} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TraceError(f"empirical length file {p} cannot be parsed as CSV: {exc}") from None
    numeric = raw.apply(pd.to_numeric, errors="coerce")
    header = None
    if len(raw) and numeric.iloc[0].isna().all():
        header, raw, numeric = raw.iloc[0].tolist(), raw.iloc[1:], numeric.iloc[1:]
    if len(raw) == 0:
        raise TraceError(f"empirical length file {p} has no values")
    for col in raw.columns:
        vals = numeric[col].to_numpy(dtype=np.float64)
        if np.all(np.isfinite(vals)):
            return vals
    first_bad = int(np.flatnonzero(~np.isfinite(numeric[raw.columns[0]].to_numpy(float)))[0])
    line = first_bad + 1 + (header is not None)
    raise TraceError(
        f"empirical length file {p}: no column is entirely numeric (columns: "
        f"{header if header is not None else list(range(raw.shape[1]))}); e.g. line {line} "
        f"holds {raw.iloc[first_bad, 0]!r}")


# ----------------------------------------------------------------------------------- traces
def _trace_plan(cfg: WorkloadConfig, block_size: int,
                rngs: dict[str, np.random.Generator]) -> RequestPlan:
    """Replay ``cfg.trace_path``: its first ``min(trace_limit, num_requests)`` rows, arrivals
    before ``duration_secs``. A trace's own ``priority`` column wins over
    ``num_priority_levels``; Mooncake ``hash_ids`` become ``block_hashes``."""
    limits = [v for v in (cfg.trace_limit, cfg.num_requests) if v is not None]
    assert cfg.trace_path is not None  # WorkloadConfig requires it for pattern 'trace'
    df = read_trace(cfg.trace_path, fmt=cfg.trace_format, time_scale=cfg.time_scale,
                    limit=min(limits) if limits else None)
    if cfg.duration_secs is not None:
        df = df[df["arrival_time"].to_numpy() < cfg.duration_secs]
        if len(df) == 0:
            raise ConfigError(f"[workload] duration_secs = {cfg.duration_secs}: no request of "
                              f"{cfg.trace_path} arrives before it", table="workload",
                              field="duration_secs")
    n = len(df)
    if "priority" in df.columns:
        priorities = df["priority"].to_numpy(dtype=np.int64)
    else:
        priorities = _sample_priorities(cfg.num_priority_levels, n, rngs["priorities"])
    input_tokens = df["input_tokens"].to_numpy(dtype=np.int64)
    block_hashes = None
    if "hash_ids" in df.columns:
        block_hashes = _map_block_hashes(df["hash_ids"].tolist(), input_tokens, block_size,
                                         cfg.trace_hash_block_tokens)
    return RequestPlan(
        num_prompt_tokens=input_tokens,
        max_tokens=df["output_tokens"].to_numpy(dtype=np.int64),
        priorities=priorities,
        arrival_times=df["arrival_time"].to_numpy(dtype=np.float64),
        block_hashes=block_hashes,
        stop_sending_at=cfg.duration_secs,
    )


def read_trace(path: str | os.PathLike[str], *, fmt: TraceFormat = "auto",
               time_scale: float = 1.0, limit: int | None = None) -> pd.DataFrame:
    """Read a request trace into columns ``arrival_time`` (s), ``input_tokens``,
    ``output_tokens`` (+ ``priority`` if a plain CSV/Parquet has it, + ``hash_ids``, a list per
    row, for Mooncake).

    ``arrival_time`` is relative to the first row and divided by ``time_scale`` (a speed-up
    factor: 2 replays twice as fast). ``limit`` keeps the first rows only. ``fmt = "auto"``
    picks the format from the extension (``.jsonl``/``.json`` Mooncake, ``.parquet``/``.pq``)
    or the CSV header (``TIMESTAMP,ContextTokens,...`` Azure, else plain).

    Rows must be sorted by time; token counts must be integers, prompts >= 1. An output count
    of 0 is replayed as 1 token (a served request produces at least one; the Azure 2023 traces
    shipped in ``data/traces`` have none, their minimum is 6 or 7). Any defect raises
    :class:`TraceError` naming the file and the first bad row (1-based, header not counted).
    """
    if fmt not in TRACE_FORMATS:
        raise ConfigError(f"[workload] trace_format = {fmt!r}: must be one of "
                          f"{', '.join(TRACE_FORMATS)}", table="workload", field="trace_format")
    if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) \
            or not math.isfinite(time_scale) or time_scale <= 0:
        raise ConfigError(f"[workload] time_scale = {time_scale}: must be a number > 0",
                          table="workload", field="time_scale")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or limit < 1):
        raise ConfigError(f"[workload] trace_limit = {limit}: must be an integer >= 1",
                          table="workload", field="trace_limit")
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"trace file not found: {p}")
    if p.stat().st_size == 0:
        raise TraceError(f"trace file {p} is empty")
    kind = _detect_format(p) if fmt == "auto" else fmt
    if kind == "mooncake":
        df = _read_mooncake(p, limit)
    elif kind == "parquet":
        df = _read_parquet(p, limit)
    else:
        df = _read_csv(p, limit, azure=kind == "azure")
    df["arrival_time"] = df["arrival_time"] / float(time_scale)
    return df.reset_index(drop=True)


def _detect_format(p: Path) -> str:
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "mooncake"
    with p.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    first = next((line for line in head.splitlines() if line.strip()), b"").strip()
    if first.startswith(b"{"):
        return "mooncake"
    columns = {c.strip().strip('"') for c in first.decode("utf-8", "replace").split(",")}
    return "azure" if {"TIMESTAMP", "ContextTokens"} & columns else "csv"


def _row(i: int, line_offset: int | None) -> str:
    """Name data row ``i`` (0-based) for a message: 1-based, with its file line if known."""
    return f"row {i + 1}" + (f" (line {i + line_offset})" if line_offset is not None else "")


def _cell(value: Any) -> str:
    """A trace cell for a message: ``5``, ``2.5`` or ``'abc'`` (not ``np.float64(2.5)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _require_columns(p: Path, kind: str, found: list[str], needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in found]
    if missing:
        raise TraceError(f"{p}: a {kind} trace needs columns {', '.join(needed)}; missing "
                         f"{', '.join(missing)}; found {', '.join(map(str, found)) or 'none'}")


def _read_csv(p: Path, limit: int | None, *, azure: bool) -> pd.DataFrame:
    try:
        raw = pd.read_csv(p, nrows=limit, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise TraceError(f"trace file {p} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TraceError(f"{p}: cannot be parsed as CSV: {exc}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    found = list(raw.columns)
    if azure:
        _require_columns(p, "Azure", found, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))
    else:
        _require_columns(p, "CSV", found, _TRACE_COLUMNS)
    if len(raw) == 0:
        raise TraceError(f"trace file {p} has a header but no rows")
    if azure:
        stamps = pd.to_datetime(raw["TIMESTAMP"], format="ISO8601", errors="coerce")
        bad = np.flatnonzero(stamps.isna().to_numpy())
        if len(bad):
            i = int(bad[0])
            cell = _cell(raw["TIMESTAMP"].iloc[i])
            raise TraceError(f"{p}: {_row(i, 2)}: TIMESTAMP = {cell} is not a date-time like "
                             "'2023-11-16 18:15:46.6805900'")
        ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        _check_sorted(p, "TIMESTAMP", ns, 2)
        arrival = (ns - ns[0]) / 1e9
        columns = {"input_tokens": "ContextTokens", "output_tokens": "GeneratedTokens"}
    else:
        t = _numeric(p, raw, "arrival_time", 2)
        _check_sorted(p, "arrival_time", t, 2)
        arrival = t - t[0]
        columns = {"input_tokens": "input_tokens", "output_tokens": "output_tokens"}
    df = pd.DataFrame({"arrival_time": arrival})
    df["input_tokens"] = _tokens(p, raw, columns["input_tokens"], 2, minimum=1)
    df["output_tokens"] = np.maximum(_tokens(p, raw, columns["output_tokens"], 2, minimum=0), 1)
    if not azure and "priority" in raw.columns:
        df["priority"] = _tokens(p, raw, "priority", 2, minimum=None)
    return df


def _read_parquet(p: Path, limit: int | None) -> pd.DataFrame:
    try:
        raw = pd.read_parquet(p)
    except ImportError as exc:
        raise TraceError(f"{p}: reading Parquet needs pyarrow ({exc})") from None
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise TraceError(f"{p}: cannot be read as Parquet: {exc}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    _require_columns(p, "Parquet", list(raw.columns), _TRACE_COLUMNS)
    if limit is not None:
        raw = raw.iloc[:limit]
    if len(raw) == 0:
        raise TraceError(f"trace file {p} has no rows")
    raw = raw.reset_index(drop=True)
    t = _numeric(p, raw, "arrival_time", None)
    _check_sorted(p, "arrival_time", t, None)
    df = pd.DataFrame({"arrival_time": t - t[0]})
    df["input_tokens"] = _tokens(p, raw, "input_tokens", None, minimum=1)
    df["output_tokens"] = np.maximum(_tokens(p, raw, "output_tokens", None, minimum=0), 1)
    if "priority" in raw.columns:
        df["priority"] = _tokens(p, raw, "priority", None, minimum=None)
    return df


def _read_mooncake(p: Path, limit: int | None) -> pd.DataFrame:
    """Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``.

    Parsed with :mod:`json` line by line (pandas' JSON reader would turn a column called
    ``timestamp`` into dates). ``hash_ids`` is optional; a row without it has no shared prefix.
    """
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    with p.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{p}: line {lineno} is not valid JSON: {exc}") from None
            if not isinstance(record, dict):
                raise TraceError(f"{p}: line {lineno} is not a JSON object")
            records.append(record)
            lines.append(lineno)
            if limit is not None and len(records) >= limit:
                break
    if not records:
        raise TraceError(f"trace file {p} has no rows")
    raw = pd.DataFrame.from_records(records)
    needed = ("timestamp", "input_length", "output_length")
    _require_columns(p, "Mooncake", list(raw.columns), needed)
    line_offset = 1 if lines[-1] == len(lines) else None  # no blank lines: row i is line i+1
    ms = _numeric(p, raw, "timestamp", line_offset)
    _check_sorted(p, "timestamp", ms, line_offset)
    df = pd.DataFrame({"arrival_time": (ms - ms[0]) / 1000.0})
    df["input_tokens"] = _tokens(p, raw, "input_length", line_offset, minimum=1)
    df["output_tokens"] = np.maximum(_tokens(p, raw, "output_length", line_offset, minimum=0), 1)
    if "hash_ids" in raw.columns:
        hash_ids: list[list[int]] = []
        for i, ids in enumerate(raw["hash_ids"].tolist()):
            if ids is None or (isinstance(ids, float) and math.isnan(ids)):
                ids = []
            if not isinstance(ids, list) or not all(type(h) is int for h in ids):
                raise TraceError(f"{p}: {_row(i, line_offset)}: hash_ids must be a list of "
                                 f"integers, got {str(ids)[:60]}")
            hash_ids.append(ids)
        df["hash_ids"] = pd.Series(hash_ids, dtype=object)
    return df


def _numeric(p: Path, raw: pd.DataFrame, col: str, line_offset: int | None) -> np.ndarray:
    """Column ``col`` as finite float64 >= 0, or a TraceError naming the first bad row."""
    values = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        i = int(bad[0])
        cell = raw[col].iloc[i]
        why = ("is missing (NaN)" if pd.api.types.is_scalar(cell) and pd.isna(cell)
               else "is negative" if np.isfinite(values[i]) and values[i] < 0
               else "is not a finite number")
        raise TraceError(f"{p}: {_row(i, line_offset)}: {col} = {_cell(cell)} {why}")
    return values


def _check_sorted(p: Path, col: str, values: np.ndarray, line_offset: int | None) -> None:
    back = np.flatnonzero(np.diff(values) < 0)
    if len(back):
        i = int(back[0]) + 1
        raise TraceError(f"{p}: rows are not sorted by {col}: {_row(i, line_offset)} is "
                         f"earlier than the row before it")


def _tokens(p: Path, raw: pd.DataFrame, col: str, line_offset: int | None, *,
            minimum: int | None) -> np.ndarray:
    """Column ``col`` as int64 (integral values >= ``minimum``), or a TraceError with the row."""
    values = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(values) & (values == np.trunc(values)) & (np.abs(values) <= _MAX_TOKENS)
    if minimum is not None:
        ok &= values >= minimum
    bad = np.flatnonzero(~ok)
    if len(bad):
        i = int(bad[0])
        allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        cell = _cell(raw[col].iloc[i])
        raise TraceError(f"{p}: {_row(i, line_offset)}: {col} = {cell}: must be {allowed}")
    return values.astype(np.int64)


# ------------------------------------------------------------------------------ block hashes
def _map_block_hashes(hash_ids: list[list[int]], input_tokens: np.ndarray, block_size: int,
                      trace_block_tokens: int) -> list[tuple[int, ...]]:
    """Map a trace's per-``trace_block_tokens`` prefix ids onto ``block_size``-token blocks.

    Block j of a prompt covers tokens ``[j·bs, (j+1)·bs)`` and touches trace blocks
    ``j·bs // tb`` to ``((j+1)·bs − 1) // tb`` (one when ``bs`` divides ``tb``). Blocks are
    grouped by the trace block m they start in. Each group has an entering hash ``g``, chained
    ``g' = hash((g, ids of the trace blocks the group touches, first j))`` from a fixed root,
    so ``g`` identifies every id before the group. Block j's hash mixes
    ``hash((g, ids of the trace blocks j touches))`` with ``j`` (a SplitMix64 finalizer, a
    bijection on 64 bits, vectorized with numpy). It thus depends exactly on the ids of the
    trace blocks that tokens ``[0, (j+1)·bs)`` touch and on j: equal leading hashes <=> equal
    prefix, exactly when ``bs`` divides ``tb`` (else a block spanning two trace blocks carries
    both ids), up to 64-bit collisions. Trace blocks a request has no id for (``hash_ids`` too
    short) get the key ``(-1, request)``, unique to the request and structurally unlike any
    trace id. Python's ``hash`` of (nested) tuples of ints is deterministic across processes
    (only str/bytes hashing is salted), so plans are reproducible.

    Limitation of the trace's resolution: a prompt ending inside a trace block has a partial
    last block whose id differs from the full block that a later, longer prompt has there, so
    the blocks of that region are not shared even if their tokens were.

    Each distinct group is hashed once and its tuple (and int objects) shared by every request
    with that prefix, which keeps a 12k-request Mooncake trace at 16-token blocks near 1 s.
    """
    tb, bs = trace_block_tokens, block_size
    memo: dict[tuple[Any, ...], tuple[int, int]] = {}  # group key -> (segment, next g)
    run_keys: list[int] = []  # one run = consecutive blocks of a group touching the same ids
    run_starts: list[int] = []
    run_counts: list[int] = []
    seg_runs: list[int] = []  # segment s covers runs seg_runs[s] .. seg_runs[s + 1] - 1
    plans: list[list[int]] = []  # per request: its segments in order
    for req, (ids, n) in enumerate(zip(hash_ids, input_tokens.tolist(), strict=True)):
        num_blocks = n // bs
        segments: list[int] = []
        g = _HASH_ROOT
        j = 0
        num_ids = len(ids)
        while j < num_blocks:
            m = (j * bs) // tb
            j_end = ((m + 1) * tb + bs - 1) // bs  # first block starting after trace block m
            if j_end > num_blocks:
                j_end = num_blocks
            m_last = (j_end * bs - 1) // tb
            touched: tuple[int | tuple[int, int], ...]
            if m_last == m:  # the common case, always so when bs divides tb
                touched = (ids[m],) if m < num_ids else ((-1, req),)
            else:
                touched = tuple(ids[k] if k < num_ids else (-1, req)
                                for k in range(m, m_last + 1))
            key = (g, touched, j, j_end)
            hit = memo.get(key)
            if hit is None:
                seg_runs.append(len(run_keys))
                # Only the group's last block can reach past trace block m: it touches all of
                # m..m_last; the blocks before it touch m alone.
                runs = [(touched, j, j_end - j)] if len(touched) == 1 else (
                    [(touched[:1], j, j_end - 1 - j)] if j_end - 1 > j else []
                ) + [(touched, j_end - 1, 1)]
                for sub, first, count in runs:
                    run_keys.append(hash((g, sub)))
                    run_starts.append(first)
                    run_counts.append(count)
                hit = memo[key] = (len(seg_runs) - 1, hash((g, touched, j)))
            segments.append(hit[0])
            g = hit[1]
            j = j_end
        plans.append(segments)
    seg_runs.append(len(run_keys))

    counts = np.asarray(run_counts, dtype=np.int64)
    run_first_block = np.concatenate(([0], np.cumsum(counts)))
    keys = np.repeat(np.asarray(run_keys, dtype=np.int64).view(np.uint64), counts)
    block_index = (np.repeat(np.asarray(run_starts, dtype=np.int64), counts)
                   + np.arange(len(keys)) - np.repeat(run_first_block[:-1], counts))
    flat = _splitmix64(keys ^ (block_index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))
    values = flat.view(np.int64).tolist()
    bounds = run_first_block[seg_runs].tolist()
    seg_hashes = [tuple(values[a:b]) for a, b in itertools.pairwise(bounds)]
    return [seg_hashes[segments[0]] if len(segments) == 1
            else tuple(itertools.chain.from_iterable(map(seg_hashes.__getitem__, segments)))
            for segments in plans]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 (a bijection; wraps modulo 2**64 as intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
