"""The command line: ``simkit run`` tables and output files, options, ``simkit presets``, and
error paths (one ``simkit: error:`` line on stderr, exit status 2).

A few runs go through a real subprocess (``python -m simkit.cli``); the rest call
``simkit.cli.main(argv)`` in-process to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tomli_w
from _tiny import tiny_dict

from simkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, **workload: Any) -> Path:
    """A tiny config (1-s steps) with a small Poisson workload."""
    data = tiny_dict()
    data["hardware"]["interconnect_bandwidth"] = 1e30  # allows --set hardware.tp=2 ...
    # ... which must divide the heads; 1 KV head of width 1 keeps 2 B of KV per token
    data["model"].update(num_heads=2, num_kv_heads=1, head_dim=1)
    data["workload"] = {"arrival_pattern": "poisson", "arrival_rate": 2.0, "num_requests": 6,
                        "seed": 1, "input_len_dist": {"type": "fixed", "value": 6},
                        "output_len_dist": {"type": "fixed", "value": 3}, **workload}
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def simkit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "simkit.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)


def test_run_prints_the_tables(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml")
    proc = simkit_cli("run", str(cfg), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for title in ("Latency (ms)", "Throughput", "Utilization (time-weighted)", "Counts"):
        assert title in out
    for row in ("TTFT", "TPOT", "ITL", "E2E", "requests/s", "output tokens/s per GPU",
                "KV cache peak", "rejected", "preemptions", "prefix-cache hit rate"):
        assert row in out
    assert "finished" in out and "6" in out
    assert proc.stderr == ""


def test_run_output_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml")
    js, rq, ts = tmp_path / "s.json", tmp_path / "r.csv", tmp_path / "t.csv"
    assert main(["run", str(cfg), "--no-progress", "--json", str(js), "--requests-csv",
                 str(rq), "--timeseries-csv", str(ts)]) == 0
    summary = json.loads(js.read_text())
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "queue_ms", "throughput",
                "utilization", "counts", "prefix_cache", "duration_s", "config"):
        assert key in summary
    assert set(summary["ttft_ms"]) == {"mean", "p50", "p90", "p95", "p99", "min", "max"}
    assert summary["counts"]["finished"] == 6
    requests = pd.read_csv(rq)
    assert len(requests) == 6
    assert {"arrival_time", "first_token_time", "finish_time", "ttft_ms", "tpot_ms", "e2e_ms",
            "status"} <= set(requests.columns)
    # every step takes 1 s and a running request decodes once per step: TPOT = 1000 ms
    assert requests["tpot_ms"].tolist() == pytest.approx([1000.0] * 6)
    series = pd.read_csv(ts)
    assert {"time_s", "interval_s", "running", "waiting", "output_tokens_per_s"} <= set(
        series.columns)
    assert series["arrivals"].sum() == 6
    assert "Latency (ms)" in capsys.readouterr().out


def test_seed_and_set_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml")
    runs = {}
    for name, extra in (("a", ["--seed", "5"]), ("b", ["--seed", "5"]), ("c", ["--seed", "6"])):
        rq = tmp_path / f"{name}.csv"
        assert main(["run", str(cfg), "--no-progress", "--requests-csv", str(rq),
                     "--json", str(tmp_path / f"{name}.json"), *extra]) == 0
        runs[name] = pd.read_csv(rq)
    assert json.loads((tmp_path / "a.json").read_text())["config"]["workload"]["seed"] == 5
    pd.testing.assert_frame_equal(runs["a"], runs["b"])  # same seed -> identical
    assert not runs["a"]["arrival_time"].equals(runs["c"]["arrival_time"])
    js = tmp_path / "tp.json"
    assert main(["run", str(cfg), "--no-progress", "--set", "hardware.tp=2",
                 "--set", "scheduler.policy=sjf", "--json", str(js)]) == 0
    summary = json.loads(js.read_text())
    assert summary["config"]["hardware"]["tp"] == 2
    assert summary["config"]["scheduler"]["policy"] == "sjf"
    th = summary["throughput"]
    assert th["output_tokens_per_s_per_gpu"] == pytest.approx(th["output_tokens_per_s"] / 2)
    capsys.readouterr()


def test_presets_lists_the_catalog() -> None:
    proc = simkit_cli("presets")
    assert proc.returncode == 0, proc.stderr
    for name in ("h100-sxm", "h200", "b200", "a100-80gb", "l40s", "mi300x", "llama-3-70b",
                 "llama-3.1-8b", "llama-3.1-405b", "qwen3-30b-a3b", "mixtral-8x7b"):
        assert name in proc.stdout


def test_malformed_toml_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[hardware\ncompute_flops = 1e15\n", encoding="utf-8")
    proc = simkit_cli("run", str(bad), "--no-progress")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("simkit: error:")
    assert "invalid TOML" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", ["unknown_key", "does_not_fit", "missing_file", "bad_set"])
def test_config_errors_exit_2(case: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml")
    args = ["run", str(cfg), "--no-progress"]
    expect = {"unknown_key": "unknown key 'max_batch'", "does_not_fit": "model does not fit",
              "missing_file": "no such config file", "bad_set": "[scheduler] block_size = 0"}
    if case == "unknown_key":
        text = cfg.read_text().replace("[scheduler]\n", "[scheduler]\nmax_batch = 3\n")
        cfg.write_text(text)
    elif case == "does_not_fit":
        data = tiny_dict()
        data["hardware"] = {"preset": "l40s"}
        data["model"] = "llama-3-70b"
        cfg.write_text(tomli_w.dumps(data))
    elif case == "missing_file":
        args[1] = str(tmp_path / "nope.toml")
    else:
        args += ["--set", "scheduler.block_size=0"]
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("simkit: error:")
    assert expect[case] in lines[0]


def test_request_larger_than_the_kv_cache_is_rejected_not_a_hang(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 16 blocks x 4 tokens = 64 positions; 100 + 3 - 1 = 102 positions can never fit.
    cfg = write_config(tmp_path / "c.toml", input_len_dist={"type": "fixed", "value": 100})
    rq = tmp_path / "r.csv"
    assert main(["run", str(cfg), "--no-progress", "--requests-csv", str(rq)]) == 0
    out = capsys.readouterr().out
    assert "rejected 6 request(s)" in out
    assert "needs 26 KV blocks (102 tokens), the whole cache has 16" in out
    requests = pd.read_csv(rq)
    assert (requests["status"] == "rejected").all()
    assert requests["reject_reason"].str.contains("KV blocks").all()
