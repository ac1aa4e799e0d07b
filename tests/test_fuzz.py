"""Fuzz: mutated shipped configs and trace slices give a clean result or a SimkitError.

Also a systematic sweep: every config field set to each of 12 hostile values (936 cases).

Inputs: every ``configs/*.toml`` and the reference simulator's seed configs (copied to
``tests/data/seed_configs``), and the first rows of each trace in ``data/traces``. Each case
applies a few random mutations — delete a key or table, swap a value's type, replace a
number by 0 / -1 / nan / ±inf / 1e30 / 1e-30 / 2^63, add an unknown key, truncate the text;
for traces also delete, duplicate or swap rows, blank or corrupt cells, drop the header — and
then loads and simulates it (capped at 48 requests and ``simulation.max_wall_secs = 2``).

The only acceptable outcomes: a :class:`simkit.SimResult` whose counts add up, or a
:class:`simkit.SimkitError` with a non-empty message. Any other exception is a bug; so is a
case that runs longer than ``CASE_CPU_SECS`` of CPU time (a hang), detected with a
``SIGVTALRM`` timer (which leaves pytest-timeout's ``SIGALRM`` alone). Deterministic: the
mutations come from ``random.Random(seed)`` per case.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import random
import signal
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from reliability_helpers import tiny_config_dict

import simkit

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.toml")) + sorted(
    (REPO / "tests" / "data" / "seed_configs").glob("*.toml"))
TRACES = sorted(p for p in (REPO / "data" / "traces").iterdir()
                if p.suffix in (".csv", ".jsonl"))
NUM_CONFIG_CASES = 300
NUM_TRACE_CASES = 120
CONFIG_SEED = 1000  # case i uses random.Random(CONFIG_SEED + i)
TRACE_SEED = 5000
CASE_CPU_SECS = 10.0
MAX_REQUESTS = 48
TRACE_ROWS = 25

HOSTILE_NUMBERS = [0, -1, 0.0, -1.0, math.nan, math.inf, -math.inf, 1e30, 1e-30, 2**63, 0.5]
HOSTILE_VALUES = ["x", "", True, False, [1, 2], {"a": 1}, datetime.date(1979, 5, 27),
                  "fcfs", "closed_loop", "h100-sxm", "llama-3-70b"]


class Hang(BaseException):
    """Raised by the CPU-time alarm; a BaseException so no ``except Exception`` hides it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang()


# ------------------------------------------------------------------------------- mutation
def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path in a nested dict (tables and leaves)."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    return out


def _parent(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = data
    for key in path[:-1]:
        node = node[key]
    return node


VALID_CHOICES = {
    "policy": ["fcfs", "priority", "sjf", "lof", "sif", "lif", "stf", "ltf"],
    "arrival_pattern": ["poisson", "gamma", "uniform", "burst", "batched", "closed_loop",
                        "trace"],
    "type": ["fixed", "uniform", "normal", "lognormal", "empirical"],
    "mode": ["fast", "exact"],
    "trace_format": ["auto", "azure", "mooncake", "csv", "parquet"],
    "preset": ["h100-sxm", "b200", "l40s", "llama-3.1-8b", "qwen3-30b-a3b", "mixtral-8x7b"],
}
MUTATIONS = ["number"] * 3 + ["scale"] * 3 + ["choice"] * 2 + ["type", "delete", "unknown"]


def mutate_dict(data: dict[str, Any], rng: random.Random) -> str:
    """Apply one random mutation in place; return a short description."""
    paths = _paths(data)
    leaves = [p for p in paths if not isinstance(_parent(data, p)[p[-1]], dict)]
    kind = rng.choice(MUTATIONS)
    if kind == "delete" or not leaves:
        path = rng.choice(paths)
        del _parent(data, path)[path[-1]]
        return f"delete {'.'.join(path)}"
    if kind == "unknown":
        path = rng.choice(paths)
        node = _parent(data, path)
        node[rng.choice(["extra", "Max_Num_Seqs", "tp "])] = 1
        return f"unknown key next to {'.'.join(path)}"
    path = rng.choice(leaves)
    parent, key = _parent(data, path), path[-1]
    old = parent[key]
    is_number = isinstance(old, (int, float)) and not isinstance(old, bool)
    if kind == "scale" and is_number:
        new = old * rng.choice([1e-9, 1e-3, 0.5, 2, 1e3, 1e9])
        parent[key] = int(new) if isinstance(old, int) and float(new).is_integer() else new
    elif kind == "choice" and (isinstance(old, bool) or key in VALID_CHOICES):
        parent[key] = (not old) if isinstance(old, bool) else rng.choice(VALID_CHOICES[key])
    elif kind == "type":
        parent[key] = rng.choice(HOSTILE_VALUES)
    else:
        parent[key] = rng.choice(HOSTILE_NUMBERS)
    return f"{'.'.join(path)}: {old!r} -> {parent[key]!r}"


def _absolute_paths(data: dict[str, Any], base: Path) -> None:
    """Make the trace path absolute so a mutated copy can be written anywhere."""
    workload = data.get("workload")
    if isinstance(workload, dict) and isinstance(workload.get("trace_path"), str):
        workload["trace_path"] = str((base / workload["trace_path"]).resolve())


def mutate_trace(lines: list[str], rng: random.Random) -> str:
    """Apply one random line- or cell-level mutation to a trace slice, in place."""
    kind = rng.choice(["delete", "duplicate", "swap", "cell", "cell", "cell", "header",
                       "truncate", "blank"])
    i = rng.randrange(len(lines)) if lines else 0
    if not lines:
        lines.append("")
        return "empty"
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "swap" and len(lines) > 2:
        j = rng.randrange(1, len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "header":
        del lines[0]
    elif kind == "truncate":
        cut = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:cut]
        del lines[i + 1:]
    elif kind == "blank":
        lines[i] = ""
    else:
        lines[i] = _mutate_cell(lines[i], rng)
    return f"{kind} line {i + 1}"


def _mutate_cell(line: str, rng: random.Random) -> str:
    replacement = str(rng.choice(["0", "-1", "nan", "inf", "1e30", "abc", "", "1.5", "null",
                                  "[]", "true", "2023-13-45 99:99:99"]))
    if line.startswith("{"):  # Mooncake JSON: replace one value
        keys = ["timestamp", "input_length", "output_length", "hash_ids"]
        key = rng.choice(keys)
        head, sep, tail = line.partition(f'"{key}": ')
        if not sep:
            return line
        end = min((k for k in (tail.find(", \""), tail.find("}")) if k >= 0), default=len(tail))
        if tail.startswith("["):
            end = tail.find("]") + 1
        return f"{head}{sep}{replacement}{tail[end:]}"
    cells = line.split(",")
    cells[rng.randrange(len(cells))] = replacement
    return ",".join(cells)


# ---------------------------------------------------------------------------- one case
def run_case(make_config: Callable[[], simkit.Config]) -> str:
    """Load + simulate under the CPU alarm; return the outcome class name."""
    old = signal.signal(signal.SIGVTALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_VIRTUAL, CASE_CPU_SECS)
    try:
        cfg = make_config()
        n = cfg.workload.num_requests
        cfg = simkit.with_overrides(cfg, {
            "simulation.max_wall_secs": 2.0,
            "workload.num_requests": MAX_REQUESTS if n is None else min(n, MAX_REQUESTS)})
        result = simkit.simulate(cfg)
        counts = result.summary.counts
        assert counts["arrived"] == len(result.requests) <= MAX_REQUESTS
        assert counts["arrived"] == counts["finished"] + counts["rejected"] + \
            counts["unfinished"]
        assert result.partial or counts["unfinished"] == 0
        return "ok"
    except simkit.SimkitError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
        return type(exc).__name__
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)


def _check_all(cases: list[tuple[str, Callable[[], simkit.Config]]]) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    failures = []
    for label, make in cases:
        try:
            outcome = run_case(make)
        except Hang:
            failures.append(f"{label}: no result after {CASE_CPU_SECS} s of CPU (hang)")
            continue
        except Exception as exc:  # anything but a SimkitError is a bug
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert not failures, "\n".join(failures)
    return outcomes


# ----------------------------------------------------------------------------- the tests
def test_config_files_are_the_expected_ones():
    names = {p.name for p in CONFIGS}
    assert {"config.toml", "test_blog.toml", "quick_test.toml", "qwen3_30b_a3b.toml"} <= names
    assert len(CONFIGS) >= 8 and len(TRACES) == 3


def test_mutated_configs_give_a_result_or_a_simkit_error(tmp_path):
    bases = []
    for path in CONFIGS:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        _absolute_paths(data, path.parent)
        bases.append((path.name, data))
    cases = []
    for i in range(NUM_CONFIG_CASES):
        rng = random.Random(CONFIG_SEED + i)
        name, base = rng.choice(bases)
        data = copy.deepcopy(base)
        changes = [mutate_dict(data, rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        text = tomli_w.dumps(data)
        if rng.random() < 0.1:  # truncated file
            cut = rng.randrange(len(text) + 1)
            text = text[:cut]
            changes.append(f"truncated at {cut}")
        path = tmp_path / f"case{i}.toml"
        path.write_text(text, encoding="utf-8")
        cases.append((f"case {i} ({name}; {'; '.join(changes)})",
                      lambda path=path: simkit.load_config(path)))
    start = time.perf_counter()
    outcomes = _check_all(cases)
    # the fuzz is not vacuous: some mutants still run, most are rejected with a message
    assert outcomes.get("ok", 0) >= 30 and outcomes.get("ConfigError", 0) >= 100, outcomes
    assert time.perf_counter() - start < 120


def test_mutated_trace_slices_give_a_result_or_a_simkit_error(tmp_path):
    slices = []
    for path in TRACES:
        with path.open(encoding="utf-8") as fh:
            lines = [next(fh).rstrip("\n") for _ in range(TRACE_ROWS + 1)]
        slices.append((path, lines))
    cases = []
    for i in range(NUM_TRACE_CASES):
        rng = random.Random(TRACE_SEED + i)
        source, base = rng.choice(slices)
        lines = list(base)
        changes = [mutate_trace(lines, rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        path = tmp_path / f"trace{i}{source.suffix}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        fmt = rng.choice(["auto", "auto", {".csv": "azure", ".jsonl": "mooncake"}[
            source.suffix] if "azure" in source.name or source.suffix == ".jsonl" else "csv"])
        data = tiny_config_dict(num_blocks=4000, block_size=16, max_seq_len=4096,
                                workload={"arrival_pattern": "trace", "trace_path": str(path),
                                          "trace_format": fmt})
        data["scheduler"]["enable_prefix_caching"] = rng.random() < 0.5
        cases.append((f"trace case {i} ({source.name}, {fmt}; {'; '.join(changes)})",
                      lambda data=data: simkit.config_from_dict(data)))
    outcomes = _check_all(cases)
    assert outcomes.get("ok", 0) >= 20 and outcomes.get("TraceError", 0) >= 20, outcomes


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_unmutated_config_runs_under_the_caps(path):
    # the baseline the mutants start from: every shipped config runs within the fuzz caps
    assert run_case(lambda: simkit.load_config(path)) == "ok"


def _all_fields() -> list[str]:
    tables = {"hardware": simkit.HardwareConfig, "model": simkit.ModelConfig,
              "scheduler": simkit.SchedulerConfig, "workload": simkit.WorkloadConfig,
              "simulation": simkit.SimulationConfig}
    names = [f"{t}.{f.name}" for t, cls in tables.items() for f in dataclasses.fields(cls)
             if f.name not in ("input_len_dist", "output_len_dist")]
    names += [f"workload.{d}.{k}" for d in ("input_len_dist", "output_len_dist")
              for k in ("value", "min", "max", "mean", "std_dev")]
    return names


SWEEP_VALUES = [math.nan, math.inf, -math.inf, -1, 0, 1e-300, 1e30, 2**63, 2**64, "x", True,
                [1]]


def test_every_config_field_with_every_hostile_value(tmp_path):
    # a systematic companion of the random fuzz: each field of each table (and of the length
    # distributions) set to each hostile value, on a small config with prefix caching
    base = simkit.config_from_dict(tiny_config_dict(
        workload={"arrival_pattern": "poisson", "arrival_rate": 50.0, "num_requests": 20,
                  "input_len_dist": {"type": "uniform", "min": 1, "max": 60},
                  "output_len_dist": {"type": "uniform", "min": 1, "max": 30}},
        scheduler={"enable_prefix_caching": True}))
    fields = _all_fields()
    assert len(fields) >= 70
    cases = [(f"{name} = {value!r}",
              lambda name=name, value=value: simkit.with_overrides(base, {name: value}))
             for name in fields for value in SWEEP_VALUES]
    outcomes = _check_all(cases)
    assert outcomes.get("ConfigError", 0) >= len(cases) // 2, outcomes
