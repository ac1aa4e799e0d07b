"""Sweeps, the analysis helpers and ``simkit sweep``, on a real Dask LocalCluster.

Workloads are tiny (tens of requests, short prompts) so the whole file runs in well under a
minute; expected values come from hand arithmetic or from independent runs of
``simkit.simulate``, never from the sweep's own output pasted back.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import simkit
from simkit.analysis import fewest_gpus, meets_slo, pareto_frontier, slo_search
from simkit.sweeps import METRIC_COLUMNS, expand_grid, load_grid_file, sweep

ROOT = Path(__file__).resolve().parents[1]
OSL = 16
NUM_REQUESTS = 24


@pytest.fixture(scope="module")
def base() -> simkit.Config:
    """Llama-3-70B FP8 on H100s, closed loop of 4 users, 24 requests of 128 in / 16 out."""
    cfg = simkit.load_config(ROOT / "configs" / "test_blog.toml")
    return simkit.with_overrides(cfg, {
        "workload.num_concurrent_users": 4, "workload.num_requests": NUM_REQUESTS,
        "workload.input_len_dist.value": 128, "workload.output_len_dist.value": OSL,
    })


@pytest.fixture(scope="module")
def cluster():
    """A real two-process Dask cluster (see /work/shared/recipes, Dask section)."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc, \
            Client(lc, set_as_default=False) as client:  # sweep must not need a default
        yield lc, client


GRID = {"hardware.tp": [1, 2, 4], "workload.num_concurrent_users": [2, 4]}


def _metrics(df: pd.DataFrame) -> pd.DataFrame:
    return df[["hardware.tp", "workload.num_concurrent_users", *METRIC_COLUMNS,
               "output_tokens_per_s_per_gpu", "usd_per_million_output_tokens"]]


def test_dask_and_process_pool_give_the_inline_frame(base, cluster):
    from dask.distributed import get_task_stream

    lc, client = cluster
    inline = sweep(base, GRID, executor="inline", progress=False)
    assert len(inline) == 6 and inline["error"].isna().all()
    assert list(inline["hardware.tp"]) == [1, 1, 2, 2, 4, 4]
    with get_task_stream(client) as stream:
        distributed = sweep(base, GRID, executor=client, progress=False)
    assert len(stream.data) == 6  # the six runs really went through the cluster
    pd.testing.assert_frame_equal(_metrics(distributed), _metrics(inline))
    by_address = sweep(base, {"hardware.tp": [2], "workload.num_concurrent_users": [4]},
                       executor=lc.scheduler_address, progress=False)
    pd.testing.assert_frame_equal(_metrics(by_address),
                                  _metrics(inline.iloc[[3]].reset_index(drop=True)))
    pooled = sweep(base, GRID, executor="process", workers=2, progress=False)
    pd.testing.assert_frame_equal(_metrics(pooled), _metrics(inline))


def test_a_point_that_does_not_fit_is_an_error_row_not_a_crash(base, cluster):
    _, client = cluster
    grid = [{"model.preset": "llama-3.1-405b", "hardware.tp": 1},
            {"model.preset": "llama-3-70b", "hardware.tp": 2},
            {"model.preset": "llama-3-70b", "hardware.tp": 0}]
    df = sweep(base, grid, executor=client, progress=False)
    assert list(df["model.preset"]) == ["llama-3.1-405b", "llama-3-70b", "llama-3-70b"]
    err = df["error"].iloc[0]
    assert "does not fit" in err and "405B" in err and "tp=1" in err
    assert math.isnan(df["ttft_ms.p99"].iloc[0])
    assert pd.isna(df["error"].iloc[1])
    assert df["counts.finished"].iloc[1] == NUM_REQUESTS
    assert "tp" in df["error"].iloc[2] and ">= 1" in df["error"].iloc[2]


def test_parquet_holds_every_row_and_resume_reruns_only_missing_points(base, tmp_path):
    out = tmp_path / "runs.parquet"
    first = sweep(base, GRID, executor="inline", out=out, progress=False)
    stored = pd.read_parquet(out)
    assert len(stored) == 6
    assert sorted(zip(stored["hardware.tp"], stored["workload.num_concurrent_users"],
                      strict=True)) == \
        sorted((tp, u) for tp in (1, 2, 4) for u in (2, 4))

    # drop the (tp=2, users=4) row from the file, keeping its metadata
    table = pq.read_table(out)
    keep = ~((stored["hardware.tp"] == 2) & (stored["workload.num_concurrent_users"] == 4))
    pq.write_table(table.filter(pa.array(keep.to_numpy())), out)
    assert len(pd.read_parquet(out)) == 5

    ran: list[dict] = []
    again = sweep(base, GRID, executor="inline", out=out, progress=False, on_row=ran.append)
    assert [(r["hardware.tp"], r["workload.num_concurrent_users"]) for r in ran] == [(2, 4)]
    assert len(again) == 6 and len(pd.read_parquet(out)) == 6
    # resumed rows are the stored ones (same wall time), the rerun one is new
    others = again.index != 3
    np.testing.assert_array_equal(again.loc[others, "wall_time_s"],
                                  first.loc[others, "wall_time_s"])
    pd.testing.assert_frame_equal(_metrics(again), _metrics(first))

    nothing: list[dict] = []
    sweep(base, GRID, executor="inline", out=out, progress=False, on_row=nothing.append)
    assert nothing == []
    other_base = simkit.with_overrides(base, {"workload.seed": 7})
    with pytest.raises(simkit.ConfigError, match="different base config"):
        sweep(other_base, GRID, executor="inline", out=out, progress=False)


def test_cost_columns_match_hand_arithmetic(base):
    df = sweep(base, {"hardware.tp": [2]}, executor="inline", progress=False)
    row = df.iloc[0]
    price = simkit.hardware_presets()["h100-sxm"]["price_per_gpu_hour"]
    assert price == 2.69
    # closed loop, fixed lengths: every request emits OSL tokens over the run's duration
    out_tok_s = NUM_REQUESTS * OSL / row["duration_s"]
    assert row["throughput.output_tokens_per_s"] == pytest.approx(out_tok_s, rel=1e-12)
    assert row["num_gpus"] == 2
    assert row["price_per_gpu_hour"] == price
    assert row["output_tokens_per_s_per_gpu"] == pytest.approx(out_tok_s / 2, rel=1e-12)
    usd = 2.69 * 2 / (out_tok_s * 3600) * 1e6
    assert row["usd_per_million_output_tokens"] == pytest.approx(usd, rel=1e-12)


def test_pareto_frontier_of_a_hand_made_frame():
    df = pd.DataFrame({
        "name": ["A", "B", "C", "D", "E", "F", "G", "H"],
        "x": [1.0, 2.0, 3.0, 3.0, 4.0, 2.0, 4.0, np.nan],
        "y": [10.0, 8.0, 8.0, 5.0, 1.0, 2.0, 1.0, 99.0],
    })
    both_max = pareto_frontier(df, "x", "y")
    assert sorted(both_max["name"]) == ["A", "C", "E", "G"]  # B, D, F dominated; H has no x
    assert list(both_max["x"]) == sorted(both_max["x"])
    max_x_min_y = pareto_frontier(df, "x", "y", maximize=(True, False))
    assert sorted(max_x_min_y["name"]) == ["E", "G"]
    min_both = pareto_frontier(df, "x", "y", maximize=(False, False))
    assert sorted(min_both["name"]) == ["A", "E", "F", "G"]


def _p99_ttft_ms(cfg: simkit.Config, users: int) -> float:
    """Independent check: simulate directly and take the percentile of the request rows."""
    cfg = simkit.with_overrides(cfg, {"workload.num_concurrent_users": users,
                                      "workload.num_requests": 4 * users})
    ttft = simkit.simulate(cfg).requests["ttft_ms"].to_numpy(dtype=float)
    return float(np.percentile(ttft, 99))


def test_slo_search_finds_the_boundary_in_users(base):
    # long prompts against a small token budget: TTFT grows with the number of users
    cfg = simkit.with_overrides(base, {"workload.input_len_dist.value": 2048,
                                       "scheduler.max_num_batched_tokens": 2048,
                                       "scheduler.max_num_seqs": 256})
    # TTFT p99 rises ~87 ms per user here (one 2048-token prefill each), so a bound half-way
    # between 9 and 10 users puts the limit at 9 with ~40 ms of margin on either side
    bound = 0.5 * (_p99_ttft_ms(cfg, 9) + _p99_ttft_ms(cfg, 10))
    res = slo_search(cfg, knob="workload.num_concurrent_users", lo=1, hi=40,
                     slo={"ttft_ms.p99": bound},
                     overrides_for=lambda u: {"workload.num_requests": 4 * u})
    assert res.integer and res.converged
    assert res.best == 9 and res.lowest_failing == 10
    assert _p99_ttft_ms(cfg, res.best) <= bound < _p99_ttft_ms(cfg, res.best + 1)
    assert len(res.points) <= 2 + math.ceil(math.log2(40))
    assert res.points["meets"].sum() >= 1
    too_strict = slo_search(cfg, knob="workload.num_concurrent_users", lo=1, hi=8,
                            slo={"ttft_ms.p99": 1e-3})
    assert too_strict.best is None and too_strict.lowest_failing == 1


def test_slo_search_over_arrival_rate_is_a_float_bisection(base):
    cfg = simkit.with_overrides(base, {"workload.arrival_pattern": "poisson",
                                       "workload.arrival_rate": 1.0,
                                       "workload.num_requests": 40,
                                       "workload.input_len_dist.value": 1024,
                                       "hardware.tp": 1})
    res = slo_search(cfg, knob="workload.arrival_rate", lo=0.5, hi=200.0,
                     slo={"ttft_ms_p99": 500}, tol=0.5)
    assert not res.integer and res.best is not None and res.lowest_failing is not None
    assert res.lowest_failing - res.best <= 0.5
    below = simkit.simulate(simkit.with_overrides(cfg, {"workload.arrival_rate": res.best}))
    above = simkit.simulate(simkit.with_overrides(
        cfg, {"workload.arrival_rate": res.lowest_failing}))
    assert np.percentile(below.requests["ttft_ms"], 99) <= 500
    assert np.percentile(above.requests["ttft_ms"], 99) > 500


def test_fewest_gpus_counts_replicas_and_checks_the_operating_point(base):
    cfg = simkit.with_overrides(base, {"workload.input_len_dist.value": 2048,
                                       "scheduler.max_num_batched_tokens": 2048,
                                       "scheduler.max_num_seqs": 256})
    slo = {"ttft_ms.p99": 0.5 * (_p99_ttft_ms(cfg, 9) + _p99_ttft_ms(cfg, 10))}
    plan = fewest_gpus(cfg, [{"hardware.tp": 2}, {"hardware.tp": 1, "hardware.preset": "l40s"}],
                       load=40, knob="workload.num_concurrent_users", slo=slo,
                       overrides_for=lambda u: {"workload.num_requests": 4 * u})
    best = plan.best
    assert best is not None and best["hardware.tp"] == 2
    # one tp=2 replica carries 9 users within the SLO (see the slo_search test): 40 users
    # need ceil(40 / 9) = 5 replicas of 8 users, i.e. 10 GPUs at 5 × 2 × $2.69/h
    assert best["max_load_per_replica"] == 9 and best["replicas"] == 5
    assert best["num_gpus"] == 2 * best["replicas"]
    assert best["usd_per_hour"] == pytest.approx(2.69 * best["num_gpus"])
    assert best["load_per_replica"] == math.ceil(40 / best["replicas"])
    assert _p99_ttft_ms(cfg, best["load_per_replica"]) <= slo["ttft_ms.p99"]
    l40s = plan.table[plan.table["hardware.preset"] == "l40s"].iloc[0]
    assert not l40s["meets"] and "does not fit" in l40s["error"]


def test_meets_slo_requires_a_clean_run():
    df = pd.DataFrame({"ttft_ms.p99": [100.0, 100.0, 300.0, 100.0, np.nan],
                       "counts.rejected": [0, 1, 0, 0, 0],
                       "partial": [False, False, False, False, False],
                       "error": [None, None, None, "boom", None]})
    assert list(meets_slo(df, {"ttft_ms_p99": 200})) == [True, False, False, False, False]
    with pytest.raises(simkit.ConfigError, match="unknown metric"):
        meets_slo(df, {"ttft_p99": 200})


def test_grid_expansion_and_bad_grids():
    pts = expand_grid({"hardware.tp": [1, 2],
                       ("workload.num_concurrent_users", "workload.num_requests"):
                           [(8, 32), (16, 64)]})
    assert pts == [
        {"hardware.tp": 1, "workload.num_concurrent_users": 8, "workload.num_requests": 32},
        {"hardware.tp": 1, "workload.num_concurrent_users": 16, "workload.num_requests": 64},
        {"hardware.tp": 2, "workload.num_concurrent_users": 8, "workload.num_requests": 32},
        {"hardware.tp": 2, "workload.num_concurrent_users": 16, "workload.num_requests": 64},
    ]
    with pytest.raises(simkit.ConfigError, match=r"has no field .TP.*tp"):
        expand_grid({"hardware.TP": [1]})
    with pytest.raises(simkit.ConfigError, match="empty list"):
        expand_grid({"hardware.tp": []})
    with pytest.raises(simkit.ConfigError, match="list of 2 values"):
        expand_grid({("hardware.tp", "workload.seed"): [(1, 2, 3)]})
    with pytest.raises(simkit.ConfigError, match="executor"):
        sweep(simkit.load_config(ROOT / "configs" / "test_blog.toml"), {"hardware.tp": [1]},
              executor="proces")


def test_shipped_grid_file_has_100_points():
    grid, slo = load_grid_file(ROOT / "configs" / "grids" / "llama70b_gpu_tp_users.toml")
    assert len(expand_grid(grid)) == 100
    assert slo == {"ttft_ms.p99": 2000.0, "tpot_ms.p50": 50.0}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simkit.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_cli_prints_the_best_configs_and_writes_parquet(base, tmp_path):
    config = tmp_path / "base.toml"
    simkit.save_config(base, config)
    grid = tmp_path / "grid.toml"
    grid.write_text('[grid]\n"hardware.preset" = ["h100-sxm", "l40s"]\nhardware.tp = [1, 2]\n'
                    "[slo]\nttft_ms_p99 = 100000\n")
    out = tmp_path / "out.parquet"
    proc = _cli("sweep", str(config), "--grid", str(grid), "--workers", "2", "--out", str(out),
                "--no-progress", "--top", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Best 2 of 3 configurations meeting ttft_ms.p99 <= 100000" in proc.stdout
    assert "1 point(s) failed" in proc.stdout and "does not fit" in proc.stdout
    table = pd.read_parquet(out)
    assert len(table) == 4 and table["error"].notna().sum() == 1
    # the printed order is by tok/s per GPU, best first
    best = table[table["error"].isna()].sort_values("output_tokens_per_s_per_gpu").iloc[-1]
    lines = proc.stdout.splitlines()
    first_row = lines[lines.index(next(s for s in lines if s.startswith("---"))) + 1].split()
    assert first_row[:2] == [best["hardware.preset"], str(best["hardware.tp"])]

    bad = _cli("sweep", str(config), "--grid", str(tmp_path / "missing.toml"))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"simkit: error: {tmp_path / 'missing.toml'}: no such grid file"]


def test_core_import_pulls_no_heavy_dependency():
    code = ("import sys, simkit, simkit.sweeps, simkit.analysis; "
            "print(sorted(m for m in ('dask', 'distributed', 'plotly', 'ipywidgets')"
            " if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_simkit_sweep_stays_a_function_after_the_module_is_imported(base):
    import simkit.sweeps  # the module is simkit.sweeps; simkit.sweep stays the function

    assert callable(simkit.sweep) and not isinstance(simkit.sweep, type(simkit))
    df = simkit.sweep(base, {"hardware.tp": [2]}, executor="inline", progress=False)
    assert len(df) == 1 and df["counts.finished"].iloc[0] == NUM_REQUESTS
