"""Long runs: safety stops end cleanly with partial results, Ctrl-C keeps the summary, and
simulated time does not drift over a million steps.

* ``simulation.max_sim_secs`` / ``max_wall_secs`` / a progress callback returning False /
  Ctrl-C each end the run with ``result.partial`` and a ``stop_reason``; a partial run is an
  exact prefix of the full run (same times for every request that finished before the stop).
* ``simkit run`` on SIGINT prints the partial summary tables, says "interrupted" and exits 130.
* Float hygiene: the simulated end time equals the ``math.fsum`` of every step's duration,
  each re-derived from the spec's roofline (not from simkit's perf model), within 1e-9
  relative — over 1e5 steps of a batched closed loop (exact mode, via ``on_step``) and over
  1e6 steps of a single user (default mode, checked against a closed form).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from reliability_helpers import (
    roofline_batch_time,
    roofline_step_time,
    tiny_config,
    tiny_config_dict,
)

import simkit
from simkit.engine import Engine

REPO = Path(__file__).resolve().parents[1]
MODES = ["exact", "fast"]


def closed_loop(users: int, requests: int, prompt: int, output: int) -> dict:
    return {"arrival_pattern": "closed_loop", "num_concurrent_users": users,
            "num_requests": requests, "input_len_dist": {"type": "fixed", "value": prompt},
            "output_len_dist": {"type": "fixed", "value": output}}


def assert_partial_counts_add_up(result: simkit.SimResult) -> None:
    counts = result.summary.counts
    status = result.requests["status"]
    assert counts["arrived"] == len(result.requests)
    assert counts["finished"] == int((status == "finished").sum())
    assert counts["unfinished"] == int((status == "unfinished").sum())
    assert counts["arrived"] == counts["finished"] + counts["rejected"] + counts["unfinished"]
    assert result.summary.to_dict()["partial"] is True
    assert result.summary.to_dict()["stop_reason"] == result.stop_reason


# ------------------------------------------------------------------------- safety stops
@pytest.mark.parametrize("mode", MODES)
def test_max_sim_secs_stops_cleanly_with_an_exact_prefix_of_the_full_run(mode):
    workload = {"arrival_pattern": "poisson", "arrival_rate": 200.0, "num_requests": 2000,
                "input_len_dist": {"type": "uniform", "min": 1, "max": 60},
                "output_len_dist": {"type": "uniform", "min": 1, "max": 80}}
    slow_gpu = {"memory_bandwidth": 1e9}  # >= 2 ms per step: an overloaded replica
    full = simkit.simulate(tiny_config(num_blocks=200, workload=workload, hardware=slow_gpu),
                           mode=mode)
    assert not full.partial and full.stop_reason is None
    assert full.requests["finish_time"].max() > 4.0  # the full run goes well past the stop
    stopped = simkit.simulate(tiny_config(num_blocks=200, workload=workload, hardware=slow_gpu,
                                          simulation={"max_sim_secs": 2.0}), mode=mode)
    assert stopped.partial and stopped.stop_reason == "max_sim_secs = 2 reached"
    assert_partial_counts_add_up(stopped)
    req = stopped.requests
    assert req["arrival_time"].max() <= 2.0
    assert (req["status"] == "unfinished").any()
    # the partial run is the full run cut at 2 s: same requests, same times
    done = req[req["status"] == "finished"]
    ref = full.requests.set_index("request_id").loc[done["request_id"]]
    for column in ("first_token_time", "finish_time"):
        assert done[column].tolist() == ref[column].tolist()
    # the stop comes at the first step boundary at or after 2 s, at most one step later; a
    # step (<= 8,192 tokens, <= 800 of KV context) takes < 25 ms here: 50 ms is safe
    last = np.nanmax(req[["finish_time", "first_token_time"]].to_numpy())
    assert last <= 2.05
    fin = full.requests
    assert int((fin["finish_time"] <= 2.0).sum()) <= len(done) \
        <= int((fin["finish_time"] <= 2.05).sum())


@pytest.mark.parametrize("mode", MODES)
def test_max_wall_secs_stops_a_long_run_cleanly(mode):
    # 1 user, 100,000 requests × 100 outputs: ~1e7 steps, far more than fits in 0.5 s
    cfg = tiny_config(workload=closed_loop(1, 100_000, 8, 100),
                      simulation={"max_wall_secs": 0.5})
    t = time.perf_counter()
    result = simkit.simulate(cfg, mode=mode)
    wall = time.perf_counter() - t
    assert result.partial and result.stop_reason == "max_wall_secs = 0.5 reached"
    assert 0.5 <= result.wall_time_s <= wall < 5.0
    assert_partial_counts_add_up(result)
    assert result.summary.counts["finished"] > 0
    # the single user's request in flight, unless the stop fell between two requests
    assert result.summary.counts["unfinished"] in (0, 1)


def test_a_progress_callback_returning_false_cancels_with_a_partial_result():
    cfg = tiny_config(workload=closed_loop(2, 50_000, 8, 50),
                      simulation={"progress_interval_secs": 0.0,
                                  "sample_interval_secs": 1e-3})
    snapshots: list[simkit.Snapshot] = []

    def progress(snap: simkit.Snapshot) -> bool:
        snapshots.append(snap)
        return len(snapshots) < 3

    result = simkit.simulate(cfg, progress=progress)
    assert result.partial and result.stop_reason == "cancelled by the progress callback"
    assert_partial_counts_add_up(result)
    assert [s.done for s in snapshots] == [False, False, False, True]
    assert snapshots[-1].num_finished == result.summary.counts["finished"]


def test_ctrl_c_in_the_api_raises_simulation_interrupted_with_the_partial_result():
    cfg = tiny_config(workload=closed_loop(3, 10_000, 8, 40))

    def on_step(engine, t0, t1, out):
        if engine.num_steps == 300:
            raise KeyboardInterrupt

    with pytest.raises(simkit.SimulationInterrupted) as info:
        Engine(cfg, mode="exact", on_step=on_step).run()
    assert isinstance(info.value, KeyboardInterrupt)  # a plain `except KeyboardInterrupt` works
    result = info.value.result
    assert result.partial and result.stop_reason == "interrupted (Ctrl-C)"
    assert result.num_steps == 300
    assert_partial_counts_add_up(result)
    # 3 users: requests 0-2 prefill together (1 step), then 39 decode steps: 3 finish per
    # 40 steps, so 300 steps finish 7 rounds (21 requests) and leave 3 in flight
    assert result.summary.counts["finished"] == 21
    assert result.summary.counts["unfinished"] == 3


def test_ctrl_c_in_the_cli_prints_the_partial_summary_and_exits_130(tmp_path):
    # 4 users, a million requests of 8 + 500 tokens (127 blocks of the 600 each): hours
    data = tiny_config_dict(num_blocks=600, workload=closed_loop(4, 1_000_000, 8, 500))
    path = tmp_path / "long.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "simkit.cli", "run", str(path), "--mode",
                             "exact", "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()  # the config description comes before the run
        assert first.startswith("hardware :"), first
        time.sleep(1.5)
        assert proc.poll() is None, "the run ended before Ctrl-C"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    for table in ("Latency (ms)", "Throughput", "Utilization (time-weighted)", "Counts"):
        assert table in out
    assert "PARTIAL RESULT: interrupted (Ctrl-C)" in out
    counts = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in
              out.split("Counts\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]}
    number = {k: int(v.replace(",", "")) for k, v in counts.items() if k != "prefix-cache "
              "hit rate" and v.replace(",", "").isdigit()}
    assert number["rejected"] == 0 and number["engine steps"] > 0
    # at most the four users' requests in flight (the row is omitted when there are none)
    assert number.get("unfinished", 0) <= 4
    assert number["arrived"] == number["finished"] + number.get("unfinished", 0)


# ------------------------------------------------------------------------- float hygiene
def test_simulated_time_is_the_exact_sum_of_1e5_independently_priced_steps():
    # 8 users, 2,000 requests of 64 + 400 tokens: 100,000+ batched steps, exact mode
    cfg = tiny_config(num_blocks=2000, workload=closed_loop(8, 2000, 64, 400),
                      hardware={"compute_flops": 3e11, "memory_bandwidth": 7e10})
    durations: list[float] = []

    def on_step(engine, t0, t1, out):
        batch = [(s, r.num_computed_tokens - s)
                 for r, s in zip(out.requests, out.num_new_tokens, strict=True)]
        durations.append(roofline_batch_time(cfg, batch))

    engine = Engine(cfg, mode="exact", on_step=on_step)
    result = engine.run()
    assert len(durations) == result.num_steps >= 100_000
    # closed loop, no think time: the replica is never idle, so time = Σ step times
    end = result.requests["finish_time"].max()
    assert end == engine.now
    assert end == pytest.approx(math.fsum(durations), rel=1e-9)


@pytest.mark.slow
def test_a_million_steps_end_at_the_closed_form_time():
    # 1 user, 1,000 requests of 16 + 1,000 tokens, one after another: 1,000,000 steps.
    # Each request takes S(16, 0) + Σ_{m=2..1000} S(1, 16 + m − 2) (spec section 3).
    prompt, output, requests = 16, 1000, 1000
    cfg = tiny_config(num_blocks=300, max_seq_len=2048,
                      workload=closed_loop(1, requests, prompt, output))
    one = math.fsum([roofline_step_time(cfg, prompt, 0)]
                    + [roofline_step_time(cfg, 1, prompt + m - 2) for m in range(2, output + 1)])
    result = simkit.simulate(cfg)
    assert result.num_steps == requests * output
    finish = np.sort(result.requests["finish_time"].to_numpy())
    assert finish[-1] == pytest.approx(requests * one, rel=1e-9)
    # and each request took the same time, to 1e-9 of the end time (no drift)
    assert np.diff(finish, prepend=0.0) == pytest.approx(np.full(requests, one),
                                                          abs=1e-9 * finish[-1])
