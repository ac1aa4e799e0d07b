"""Parameter sweeps: many independent simulations of one base config, one row per point.

A *grid* names config fields by their dotted names (the keys :func:`simkit.with_overrides`
takes) and lists values for each. A dict is a cartesian product, in key order::

    {"hardware.preset": ["h100-sxm", "h200"], "hardware.tp": [1, 2, 4]}        # 6 points

A key may also link several fields that change together (a tuple in Python, a comma-separated
string in a grid file), its values then being tuples of the same length::

    {("workload.num_concurrent_users", "workload.num_requests"): [(8, 32), (64, 256)]}

A list of dicts is an explicit list of points. Each point runs :func:`simkit.simulate` on
``with_overrides(base, point)`` in a worker (``run_point``, a top-level function taking the
config as a plain dict so it pickles to any process or Dask worker) and returns one flat row:
the swept values, every summary metric (``ttft_ms.p99``, ``throughput.output_tokens_per_s``,
``counts.finished`` ...), cost columns and ``error``. A bad combination (a model that does not
fit, an invalid value) gives a row whose ``error`` holds the message; it never stops the sweep.

Executors: ``"inline"`` (this process, for tiny sweeps), ``"process"`` (a local pool, all
cores by default), a ``dask.distributed.Client`` or a scheduler address (the same sweep on a
cluster). Dask is imported only when used.

With ``out``, rows are written to a Parquet file as they arrive, so an interrupted sweep loses
nothing, and ``resume`` skips points whose swept values already have a row there.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simkit.config import (
    Config,
    HardwareConfig,
    LengthDist,
    ModelConfig,
    SchedulerConfig,
    SimulationConfig,
    WorkloadConfig,
)
from simkit.errors import ConfigError, SimkitError

if TYPE_CHECKING:
    import argparse

    import pandas as pd

__all__ = [
    "COST_COLUMNS",
    "METRIC_COLUMNS",
    "add_cli",
    "expand_grid",
    "load_grid_file",
    "run_point",
    "sweep",
]

# ------------------------------------------------------------------------------ columns
_STATS = ("mean", "p50", "p90", "p95", "p99", "min", "max")
_LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "queue_ms")

#: Summary metrics as flat column names, in the order a result frame shows them (spec §5).
METRIC_COLUMNS: tuple[str, ...] = (
    *(f"{lat}.{st}" for lat in _LATENCIES for st in _STATS),
    *(f"throughput.{k}" for k in (
        "requests_per_s", "input_tokens_per_s", "output_tokens_per_s", "total_tokens_per_s",
        "output_tokens_per_s_per_gpu", "total_tokens_per_s_per_gpu",
        "output_tokens_per_s_per_user")),
    *(f"utilization.{k}" for k in (
        "compute", "memory_bandwidth", "kv_cache_mean", "kv_cache_peak", "busy")),
    *(f"counts.{k}" for k in (
        "arrived", "finished", "rejected", "preemptions", "steps", "unfinished")),
    "prefix_cache.hit_rate", "prefix_cache.hit_tokens",
    "duration_s", "partial", "stop_reason",
)

#: Columns every row has after the metrics.
COST_COLUMNS: tuple[str, ...] = (
    "num_gpus", "output_tokens_per_s_per_gpu", "output_tokens_per_s_per_user",
    "price_per_gpu_hour", "usd_per_million_output_tokens",
)
_TAIL_COLUMNS = (*COST_COLUMNS, "error", "wall_time_s")
_LOST = "_lost"  # marks a row whose run was lost (worker died): returned, not saved

_TABLE_CLASSES: dict[str, type] = {
    "hardware": HardwareConfig, "model": ModelConfig, "scheduler": SchedulerConfig,
    "workload": WorkloadConfig, "simulation": SimulationConfig,
}
_DIST_FIELDS = ("input_len_dist", "output_len_dist")


# --------------------------------------------------------------------------------- grids
def _check_name(name: Any) -> str:
    """Reject a dotted name that no config field has, listing the valid ones."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"grid key {name!r}: expected a dotted field name such as "
                          "'hardware.tp'")
    parts = name.split(".")
    if parts[0] not in _TABLE_CLASSES or len(parts) < 2:
        raise ConfigError(f"grid key {name!r}: expected table.field with table one of "
                          f"{', '.join(_TABLE_CLASSES)}")
    fields = [f.name for f in dataclasses.fields(_TABLE_CLASSES[parts[0]])]
    if parts[1] not in fields:
        raise ConfigError(f"grid key {name!r}: [{parts[0]}] has no field {parts[1]!r}; valid "
                          f"fields: {', '.join(fields)}", table=parts[0], field=parts[1])
    if len(parts) > 2:
        dist_fields = [f.name for f in dataclasses.fields(LengthDist)]
        if parts[0] != "workload" or parts[1] not in _DIST_FIELDS or len(parts) != 3:
            raise ConfigError(f"grid key {name!r}: only workload.input_len_dist.<field> and "
                              "workload.output_len_dist.<field> have sub-fields")
        if parts[2] not in dist_fields:
            raise ConfigError(f"grid key {name!r}: a length distribution has no field "
                              f"{parts[2]!r}; valid: {', '.join(dist_fields)}")
    return name


def _axis(key: Any, values: Any) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """One axis of a product: its field names and its list of value tuples."""
    names = tuple(key) if isinstance(key, tuple) else (key,)
    for name in names:
        _check_name(name)
    label = ", ".join(names)
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ConfigError(f"grid[{label!r}] = {values!r}: expected a list of values")
    values = list(values)
    if not values:
        raise ConfigError(f"grid[{label!r}] is an empty list: give at least one value")
    if len(names) == 1:
        return names, [(v,) for v in values]
    rows = []
    for v in values:
        if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Sequence) \
                or len(v) != len(names):
            raise ConfigError(f"grid[{label!r}]: each value must be a list of {len(names)} "
                              f"values (one per linked field), got {v!r}")
        rows.append(tuple(v))
    return names, rows


def expand_grid(grid: Mapping[Any, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The list of points (override dicts) a grid describes, in a deterministic order.

    A mapping is a cartesian product (the last key varies fastest); a key that is a tuple of
    names links those fields. A sequence of mappings is taken as the explicit list of points.
    Every name is checked against the config's fields.
    """
    if isinstance(grid, Mapping):
        if not grid:
            raise ConfigError("grid is empty: give at least one field and its values")
        axes = [_axis(k, v) for k, v in grid.items()]
        names = [n for axis_names, _ in axes for n in axis_names]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"grid names {', '.join(dupes)} more than once")
        points = []
        for combo in itertools.product(*(vals for _, vals in axes)):
            point: dict[str, Any] = {}
            for (axis_names, _), value_tuple in zip(axes, combo, strict=True):
                point.update(zip(axis_names, value_tuple, strict=True))
            points.append(point)
        return points
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence):
        raise ConfigError(f"grid must be a dict of field -> list of values or a list of "
                          f"dicts, got {type(grid).__name__}")
    points = []
    for i, point in enumerate(grid):
        if not isinstance(point, Mapping):
            raise ConfigError(f"grid point {i} = {point!r}: expected a dict of field -> value")
        for name in point:
            _check_name(name)
        points.append(dict(point))
    if not points:
        raise ConfigError("grid is an empty list: give at least one point")
    return points


def _flatten_tables(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"hardware": {"tp": [1, 2]}}`` → ``{"hardware.tp": [1, 2]}`` (TOML dotted keys)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten_tables(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load_grid_file(path: str | Path) -> tuple[dict[Any, list[Any]], dict[str, float]]:
    """Read a grid file: its ``[grid]`` table and optional ``[slo]`` table.

    ``[grid]`` maps dotted field names to lists (``"hardware.tp" = [1, 2, 4]`` or, unquoted,
    ``hardware.tp = [1, 2, 4]``); a key naming several fields separated by commas links them
    (``"workload.num_concurrent_users,workload.num_requests" = [[8, 32], [16, 64]]``).
    ``[slo]`` maps metric names to upper bounds (``ttft_ms_p99 = 2000`` or
    ``"ttft_ms.p99" = 2000``). Returns ``(grid, slo)``.
    """
    from simkit.analysis import normalize_slo

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such grid file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read grid file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = [k for k in data if k not in ("grid", "slo")]
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}; a grid file has "
                          "[grid] and optionally [slo]")
    if not isinstance(data.get("grid"), Mapping) or not data["grid"]:
        raise ConfigError(f"{path}: needs a [grid] table of dotted field names -> lists, e.g. "
                          '"hardware.tp" = [1, 2, 4]')
    grid: dict[Any, list[Any]] = {}
    for key, values in _flatten_tables(data["grid"]).items():
        names = tuple(n.strip() for n in key.split(","))
        grid[names if len(names) > 1 else names[0]] = values
    try:
        expand_grid(grid)
        slo = normalize_slo(_flatten_tables(data.get("slo", {})))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return grid, slo


# ------------------------------------------------------------------------- one point
def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _column_value(value: Any) -> Any:
    """A swept value as stored in a column: scalars as they are, tables/lists as JSON text."""
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _fallback_num_gpus(config_dict: Mapping[str, Any], overrides: Mapping[str, Any]) -> Any:
    tp = overrides.get("hardware.tp", config_dict.get("hardware", {}).get("tp", 1))
    return tp if isinstance(tp, int) and not isinstance(tp, bool) else None


def _cost_columns(config: Config, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """GPUs, per-GPU and per-user speed, and the price of a million output tokens."""
    num_gpus = config.num_gpus
    out_per_s = metrics.get("throughput.output_tokens_per_s")
    price = config.hardware.price_per_gpu_hour
    per_gpu = out_per_s / num_gpus if out_per_s is not None else None
    usd = None
    if price is not None and out_per_s:
        usd = price * num_gpus / (out_per_s * 3600.0) * 1e6
    return {
        "num_gpus": num_gpus,
        "output_tokens_per_s_per_gpu": per_gpu,
        "output_tokens_per_s_per_user": metrics.get("throughput.output_tokens_per_s_per_user"),
        "price_per_gpu_hour": price,
        "usd_per_million_output_tokens": usd,
    }


def run_point(config_dict: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Simulate one grid point and return its flat result row (never raises for bad input).

    Top-level and dict-in/dict-out so it pickles to worker processes and Dask workers.
    A :class:`~simkit.errors.SimkitError` (e.g. "model does not fit") becomes the row's
    ``error``; any other exception too, prefixed with its type (that one is a simkit bug).
    """
    from simkit.engine import simulate
    from simkit.io import config_from_dict, with_overrides

    start = time.perf_counter()
    row: dict[str, Any] = {name: _column_value(v) for name, v in overrides.items()}
    try:
        config = with_overrides(config_from_dict(config_dict), overrides)
        result = simulate(config)
        metrics: dict[str, Any] = {}
        summary = {k: v for k, v in result.summary.to_dict().items() if k != "config"}
        _flatten("", summary, metrics)
        row.update(metrics)
        row.update(_cost_columns(config, metrics))
        row["error"] = None
    except SimkitError as exc:
        row.update(num_gpus=_fallback_num_gpus(config_dict, overrides), error=str(exc))
    except Exception as exc:  # a bug in simkit: report it on the row, keep the sweep going
        row.update(num_gpus=_fallback_num_gpus(config_dict, overrides),
                   error=f"internal error {type(exc).__name__}: {exc}")
    row["wall_time_s"] = time.perf_counter() - start
    return row


def _lost_row(overrides: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    row = {name: _column_value(v) for name, v in overrides.items()}
    row.update(error=f"run lost ({type(exc).__name__}: {exc})", wall_time_s=None)
    row[_LOST] = True
    return row


# ---------------------------------------------------------------------------- frames
def _frame(rows: Sequence[Mapping[str, Any]], swept: Sequence[str]) -> pd.DataFrame:
    """Rows as a DataFrame with a fixed column order: swept, metrics, extras, cost, tail."""
    import pandas as pd

    clean = [{k: v for k, v in r.items() if k != _LOST} for r in rows]
    df = pd.DataFrame(clean) if clean else pd.DataFrame()
    known = set(swept) | set(METRIC_COLUMNS) | set(_TAIL_COLUMNS)
    extras = [c for c in df.columns if c not in known]
    columns = [*swept, *METRIC_COLUMNS, *extras, *_TAIL_COLUMNS]
    return df.reindex(columns=columns)


def _key_value(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _point_key(point: Mapping[str, Any], swept: Sequence[str]) -> tuple[Any, ...]:
    """What identifies a point for ``resume``: its swept values (1 and 1.0 are equal)."""
    return tuple(_key_value(_column_value(point.get(name))) for name in swept)


class _ParquetSink:
    """Keeps ``out`` a valid Parquet file holding every row finished so far.

    A Parquet file's footer is written only when it is closed, so appending row groups to an
    open file would leave an unreadable file if the process were killed. Instead each flush
    writes all rows to a temporary file next to ``out`` and renames it over ``out`` (atomic),
    at most every ``interval_s`` seconds and at the end: a kill loses at most that interval.
    The base config is stored in the file's metadata so a resume with another base is refused.
    """

    def __init__(self, path: Path, swept: Sequence[str], base_json: str,
                 interval_s: float = 1.0) -> None:
        self.path = path
        self.swept = list(swept)
        self.base_json = base_json
        self.interval_s = interval_s
        self.rows: list[dict[str, Any]] = []
        self._dirty = False
        self._last = 0.0

    def read_existing(self) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(self.path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: cannot resume from it ({exc}); delete it or pass "
                              "resume=False (CLI: --no-resume)") from None
        meta = table.schema.metadata or {}
        stored = meta.get(b"simkit.base_config")
        if stored is not None and stored.decode() != self.base_json:
            raise ConfigError(f"{self.path} holds a sweep of a different base config; use "
                              "another --out file or resume=False (CLI: --no-resume)")
        missing = [n for n in self.swept if n not in table.column_names]
        if missing:
            raise ConfigError(f"{self.path} has no column(s) {', '.join(missing)}: it holds "
                              "another grid's results; use another --out file or resume=False")
        return list(table.to_pandas().to_dict("records"))

    def add(self, row: Mapping[str, Any]) -> None:
        if not row.get(_LOST):
            self.rows.append(dict(row))
            self._dirty = True
        if time.monotonic() - self._last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        df = _frame(self.rows, self.swept)
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"simkit.base_config"] = self.base_json.encode()
        table = table.replace_schema_metadata(meta)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)
        self._dirty = False
        self._last = time.monotonic()


# ------------------------------------------------------------------------- executors
Todo = list[tuple[int, dict[str, Any]]]


def _run_inline(config_dict: dict[str, Any],
                todo: Todo) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, point in todo:
        yield index, run_point(config_dict, point)


def _process_context() -> Any:
    """A ``forkserver`` context (spawn where unavailable) that preloads this module.

    Not ``fork``: forking a process that runs threads (Jupyter, tqdm, a Dask client) can
    deadlock. The forkserver imports only ``simkit.sweeps``, never the user's ``__main__``.
    """
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["simkit.sweeps"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_process(config_dict: dict[str, Any], todo: Todo,
                 workers: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    num = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    pool = ProcessPoolExecutor(max_workers=num, mp_context=_process_context())
    try:
        futures = {pool.submit(run_point, config_dict, point): (index, point)
                   for index, point in todo}
        for future in as_completed(futures):
            index, point = futures[future]
            try:
                yield index, future.result()
            except Exception as exc:  # the worker process died (e.g. out of memory)
                yield index, _lost_row(point, exc)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(client: Any, config_dict: dict[str, Any],
              todo: Todo) -> Iterator[tuple[int, dict[str, Any]]]:
    from dask.distributed import as_completed

    futures = client.map(run_point, [config_dict] * len(todo), [p for _, p in todo],
                         pure=False)
    where = {future.key: item for future, item in zip(futures, todo, strict=True)}
    try:
        for future in as_completed(futures, loop=client.loop):
            index, point = where[future.key]
            try:
                yield index, future.result()
            except Exception as exc:  # the task could not run (worker lost, ...)
                yield index, _lost_row(point, exc)
            future.release()
    finally:
        client.cancel([f for f in futures if not f.done()])


def _connect(address: str) -> Any:
    from dask.distributed import Client

    try:
        return Client(address, timeout="15s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot connect to the Dask scheduler at {address!r}: {exc}") \
            from None


def _is_dask_client(obj: Any) -> bool:
    cls = type(obj)
    return cls.__module__.startswith("distributed") and cls.__name__ == "Client"


def _executor_mode(executor: Any) -> str:
    """'inline', 'process' or 'dask' (a Client, or an address string with a ':')."""
    if isinstance(executor, str) and executor in ("inline", "process"):
        return executor
    if (isinstance(executor, str) and ":" in executor) or _is_dask_client(executor):
        return "dask"
    raise ConfigError(f"sweep: executor = {executor!r}: must be 'inline', 'process', a "
                      "dask.distributed.Client or a scheduler address such as "
                      "'tcp://host:8786'")


# ------------------------------------------------------------------------------ sweep
def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="sweep",
                unit="run", file=sys.stderr, dynamic_ncols=True)


def sweep(
    base_config: Config | str | Path,
    grid: Mapping[Any, Any] | Sequence[Mapping[str, Any]],
    *,
    executor: Any = "process",
    workers: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Simulate every point of ``grid`` applied to ``base_config``; one row per point.

    ``executor``: ``"inline"`` (this process), ``"process"`` (a local process pool of
    ``workers`` processes, default all cores), a ``dask.distributed.Client``, or a Dask
    scheduler address such as ``"tcp://10.0.0.5:8786"`` (a client is opened and closed; the
    cluster decides the parallelism, ``workers`` is ignored). Workers must be able to import
    simkit and read any trace files the config names.

    ``out``: a Parquet file kept up to date with every finished row (see ``_ParquetSink``).
    With ``resume=True`` points whose swept values already have a row in ``out`` are not run
    again (rows with an error included: they are deterministic); ``resume=False`` starts the
    file afresh. ``progress``: a tqdm bar (a widget in notebooks). ``on_row``: called with each
    new row as it arrives.

    Returns the rows in grid order (rows resumed from ``out`` included): swept values (one
    column per dotted name), :data:`METRIC_COLUMNS`, :data:`COST_COLUMNS`, ``error`` (missing
    when the run succeeded, else its message) and ``wall_time_s``. Swept values that are tables
    or lists are stored as JSON text.
    """
    from simkit.io import config_to_dict, load_config

    if isinstance(base_config, (str, Path)):
        base_config = load_config(base_config)
    if not isinstance(base_config, Config):
        raise ConfigError(f"sweep: base_config must be a simkit Config or a path, got "
                          f"{type(base_config).__name__}")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool)
                                or workers < 1):
        raise ConfigError(f"sweep: workers = {workers!r}: must be an integer >= 1")
    points = expand_grid(grid)
    swept = list(dict.fromkeys(name for p in points for name in p))
    config_dict = config_to_dict(base_config)
    base_json = json.dumps(config_dict, sort_keys=True, default=str)

    mode = _executor_mode(executor)
    if out is not None:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ConfigError(f"sweep: out = {str(out)!r} needs pyarrow to write Parquet: "
                              "pip install 'simkit[sweep]'")

    sink = _ParquetSink(Path(out), swept, base_json) if out is not None else None
    results: dict[int, dict[str, Any]] = {}
    todo: Todo = []
    if sink is not None and resume and sink.path.exists():
        sink.rows = sink.read_existing()
        done = {_point_key(r, swept): r for r in sink.rows}
        for index, point in enumerate(points):
            row = done.get(_point_key(point, swept))
            if row is not None:
                results[index] = row
            else:
                todo.append((index, point))
    else:
        todo = list(enumerate(points))

    client = executor if mode == "dask" else None
    own_client = isinstance(client, str)
    if mode == "dask" and todo and own_client:
        client = _connect(client)
    stream: Iterator[tuple[int, dict[str, Any]]]
    if mode == "dask":
        stream = _run_dask(client, config_dict, todo) if todo else iter(())
    elif mode == "process":
        stream = _run_process(config_dict, todo, workers) if todo else iter(())
    else:
        stream = _run_inline(config_dict, todo)

    bar = _progress_bar(len(points), len(results), progress)
    errors = sum(1 for r in results.values() if isinstance(r.get("error"), str))
    try:
        for index, row in stream:
            results[index] = row
            if sink is not None:
                sink.add(row)
            if isinstance(row.get("error"), str):
                errors += 1
                bar.set_postfix_str(f"{errors} failed", refresh=False)
            bar.update(1)
            if on_row is not None:
                on_row(row)
    finally:
        if hasattr(stream, "close"):
            stream.close()  # stops a pool / cancels Dask tasks on an interrupt
        bar.close()
        if sink is not None:
            sink.flush()
        if own_client and not isinstance(client, str):
            client.close()
    return _frame([results[i] for i in range(len(points)) if i in results], swept)


# ---------------------------------------------------------------------------------- CLI
def _lower_is_better(metric: str) -> bool:
    return (metric.split(".")[0].endswith("_ms") or metric.startswith("usd")
            or metric in ("num_gpus", "price_per_gpu_hour", "wall_time_s", "duration_s")
            or metric.startswith("counts.rejected") or metric.startswith("counts.preemptions"))


def _format_best(df: pd.DataFrame, swept: Sequence[str], sort: str, top: int,
                 slo: Mapping[str, float]) -> str:
    from simkit.analysis import meets_slo
    from simkit.cli import _fmt, _table

    ok = df[df["error"].isna()]
    title = f"Best {min(top, len(ok))} of {len(ok)} configurations by {sort}"
    if slo:
        ok = ok[meets_slo(ok, slo)]
        bounds = ", ".join(f"{k} <= {v:g}" for k, v in slo.items())
        title = f"Best {min(top, len(ok))} of {len(ok)} configurations meeting {bounds}, by {sort}"
    if ok.empty:
        return title + "\n(none)"
    ascending = _lower_is_better(sort)
    best = ok.sort_values(sort, ascending=ascending, kind="stable", na_position="last").head(top)
    shown = [sort] if sort not in swept else []
    for col in ("ttft_ms.p99", "tpot_ms.p50", "throughput.output_tokens_per_s",
                "output_tokens_per_s_per_gpu", "output_tokens_per_s_per_user",
                "usd_per_million_output_tokens"):
        if col not in shown and col not in swept:
            shown.append(col)
    labels = {"ttft_ms.p99": "TTFT p99 ms", "tpot_ms.p50": "TPOT p50 ms",
              "throughput.output_tokens_per_s": "out tok/s",
              "output_tokens_per_s_per_gpu": "tok/s/GPU",
              "output_tokens_per_s_per_user": "tok/s/user",
              "usd_per_million_output_tokens": "$/Mtok"}
    header = [*swept, *(labels.get(c, c) for c in shown)]
    rows = [[str(r[c]) for c in swept] + [_fmt(r[c]) for c in shown]
            for _, r in best.iterrows()]
    return _table(title, header, rows)


def _format_errors(df: pd.DataFrame, swept: Sequence[str], limit: int = 5) -> str:
    failed = df[df["error"].notna()]
    if failed.empty:
        return ""
    lines = [f"{len(failed)} point(s) failed:"]
    for _, r in failed.head(limit).iterrows():
        where = " ".join(f"{c}={r[c]}" for c in swept)
        lines.append(f"  {where}: {r['error']}")
    if len(failed) > limit:
        lines.append(f"  ... and {len(failed) - limit} more (see the 'error' column)")
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace) -> int:
    from simkit.io import load_config

    config = load_config(args.config)
    grid, slo = load_grid_file(args.grid)
    all_columns = (*METRIC_COLUMNS, *_TAIL_COLUMNS)
    if args.sort not in all_columns:
        raise ConfigError(f"--sort {args.sort!r}: unknown metric; choose one of "
                          f"{', '.join(all_columns)}")
    if args.top < 1:
        raise ConfigError(f"--top {args.top}: must be >= 1")
    executor: Any = args.scheduler if args.scheduler else "process"
    if args.inline:
        executor = "inline"
    points = expand_grid(grid)
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else (
        "this process" if args.inline else
        f"{args.workers or os.cpu_count()} local worker process(es)")
    print(f"sweep: {len(points)} points on {where}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    df = sweep(config, grid, executor=executor, workers=args.workers, out=args.out,
               progress=not args.no_progress, resume=not args.no_resume)
    elapsed = time.perf_counter() - start
    swept = list(dict.fromkeys(name for p in points for name in p))
    print(_format_best(df, swept, args.sort, args.top, slo))
    errors = _format_errors(df, swept)
    if errors:
        print("\n" + errors)
    num_failed = int(df["error"].notna().sum())
    print(f"\n{len(df)} rows ({len(df) - num_failed} ok, {num_failed} failed) in "
          f"{elapsed:.1f} s wall time" + (f"; results in {args.out}" if args.out else ""))
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``simkit sweep CONFIG --grid GRID.toml ...`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "sweep", help="run a grid of config variants and print the best",
        description="Simulate every point of a grid (a [grid] table of dotted field names -> "
                    "lists in GRID.toml) and print the best configurations, optionally only "
                    "those meeting an [slo] table of upper bounds (e.g. ttft_ms_p99 = 2000).")
    p.add_argument("config", help="base TOML config")
    p.add_argument("--grid", required=True, metavar="GRID.toml", help="grid file")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: all cores)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask cluster, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--inline", action="store_true", help="run in this process (no pool)")
    p.add_argument("--out", metavar="FILE.parquet",
                   help="write rows to this Parquet file as they finish (and resume from it)")
    p.add_argument("--no-resume", action="store_true",
                   help="rerun every point even if --out already holds it")
    p.add_argument("--top", type=int, default=10, metavar="K", help="rows to print (10)")
    p.add_argument("--sort", default="output_tokens_per_s_per_gpu", metavar="METRIC",
                   help="column to rank by (default output_tokens_per_s_per_gpu; latency and "
                        "cost columns rank ascending, the rest descending)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)
