"""Metrics (spec section 5) against numpy and hand-derived token times."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny import col, plan, run, tiny_config, tiny_dict

import simkit
from simkit.metrics import latency_stats, weighted_percentiles

QS = (50, 90, 95, 99)

# The defect-2 scenario (4 blocks, 1-s steps): token times worked out by hand in
# tests/test_defects.py::test_d02_preemption_recomputes_and_goes_to_the_front_of_the_queue.
ARRIVALS = [0.0, 0.0, 0.5]
TOKEN_TIMES = {
    0: [1, 2, 3, 4, 5, 6, 7, 8],  # A
    1: [1, 2, 3, 4, 5, 10, 11, 12],  # B: preempted after token 5, recomputed at [8,10]
    2: [10],  # C: one token
}


@pytest.fixture(scope="module")
def known() -> simkit.SimResult:
    return run(tiny_config(num_blocks=4), plan([4, 4, 4], [8, 8, 1], ARRIVALS))


def test_per_request_definitions(known: simkit.SimResult) -> None:
    ttft = [TOKEN_TIMES[i][0] - ARRIVALS[i] for i in range(3)]
    e2e = [TOKEN_TIMES[i][-1] - ARRIVALS[i] for i in range(3)]
    assert col(known, "ttft_ms") == pytest.approx([1e3 * x for x in ttft])
    assert col(known, "e2e_ms") == pytest.approx([1e3 * x for x in e2e])
    tpot = col(known, "tpot_ms")
    assert tpot[:2] == pytest.approx([1e3 * 7 / 7, 1e3 * 11 / 7])  # (E2E - TTFT) / (n - 1)
    assert np.isnan(tpot[2])  # undefined for a 1-token output
    # queueing delay = first scheduled - arrival: C waited from 0.5 to its step at 9
    assert col(known, "queue_ms") == pytest.approx([0.0, 0.0, 8500.0])
    # the columns agree with each other
    req = known.requests
    assert np.allclose(req["ttft_ms"], 1e3 * (req["first_token_time"] - req["arrival_time"]))
    assert np.allclose(req["e2e_ms"], 1e3 * (req["finish_time"] - req["arrival_time"]))


def test_summary_statistics_equal_numpy(known: simkit.SimResult) -> None:
    s = known.summary
    for key, values in (
        ("ttft_ms", [1e3 * (TOKEN_TIMES[i][0] - ARRIVALS[i]) for i in range(3)]),
        ("e2e_ms", [1e3 * (TOKEN_TIMES[i][-1] - ARRIVALS[i]) for i in range(3)]),
        ("tpot_ms", [1e3, 1e3 * 11 / 7]),  # the 1-token request is excluded
        ("queue_ms", [0.0, 0.0, 8500.0]),
    ):
        stats = getattr(s, key)
        assert stats["mean"] == pytest.approx(np.mean(values))
        for q in QS:
            assert stats[f"p{q}"] == pytest.approx(np.percentile(values, q))
        assert stats["min"] == pytest.approx(min(values))
        assert stats["max"] == pytest.approx(max(values))


def test_itl_pools_every_gap(known: simkit.SimResult) -> None:
    gaps = np.concatenate([np.diff(t) for t in TOKEN_TIMES.values()]) * 1e3
    assert sorted(known.itl_samples() * 1e3) == pytest.approx(sorted(gaps))
    itl = known.summary.itl_ms
    assert itl["mean"] == pytest.approx(gaps.mean())
    assert itl["mean"] == pytest.approx(18 / 14 * 1e3)  # 13 gaps of 1 s and one of 5 s
    for q in QS:
        assert itl[f"p{q}"] == pytest.approx(np.percentile(gaps, q))
    assert itl["max"] == pytest.approx(5000.0)


def test_throughput_is_totals_over_last_finish_minus_first_arrival(
        known: simkit.SimResult) -> None:
    th = known.summary.throughput
    duration = 12.0 - 0.0
    assert known.summary.duration_s == pytest.approx(duration)
    assert th["requests_per_s"] == pytest.approx(3 / duration)
    assert th["input_tokens_per_s"] == pytest.approx(12 / duration)
    assert th["output_tokens_per_s"] == pytest.approx(17 / duration)
    assert th["total_tokens_per_s"] == pytest.approx(29 / duration)
    # mean over requests of 1 / TPOT (the 1-token request has none)
    assert th["output_tokens_per_s_per_user"] == pytest.approx(np.mean([1.0, 7 / 11]))


def test_per_gpu_throughput_divides_by_tp() -> None:
    data = tiny_dict()
    data["hardware"].update(tp=4, interconnect_bandwidth=1e30)
    data["model"].update(num_heads=4, num_kv_heads=1, head_dim=1)  # tp must divide the heads
    data["hardware"]["compute_flops"] = 1e30 / 4  # same totals as the tp=1 replica
    data["hardware"]["memory_bandwidth"] = 1e30 / 4
    data["hardware"]["kv_cache_capacity"] = 16 * 4 * 2
    result = run(simkit.config_from_dict(data), plan([1] * 5, [1, 2, 3, 4, 20]))
    th = result.summary.throughput
    assert th["output_tokens_per_s"] == pytest.approx(30 / 20)
    assert th["output_tokens_per_s_per_gpu"] == pytest.approx(30 / 20 / 4)
    assert th["total_tokens_per_s_per_gpu"] == pytest.approx(35 / 20 / 4)


@pytest.mark.parametrize("seed", range(6))
def test_weighted_percentiles_equal_numpy_on_the_expanded_sample(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    values = np.round(rng.lognormal(0, 1, n), 2 if seed % 2 else 6)  # ties when rounded
    weights = rng.integers(0 if seed > 2 else 1, 50, n)
    if weights.sum() == 0:
        weights[0] = 1
    expanded = np.repeat(values, weights)
    qs = [0, 1, 25, 50, 90, 95, 99, 99.9, 100]
    got = weighted_percentiles(values, weights, qs)
    np.testing.assert_allclose(got, np.percentile(expanded, qs), rtol=1e-12, atol=1e-12)
    stats = latency_stats(values, weights, scale=1.0)
    assert stats["mean"] == pytest.approx(expanded.mean())
    assert stats["min"] == expanded.min()
    assert stats["max"] == expanded.max()


def test_latency_stats_of_nothing_is_null() -> None:
    assert latency_stats(np.array([])) == dict.fromkeys(
        ("mean", "p50", "p90", "p95", "p99", "min", "max"))


def test_json_summary_schema(known: simkit.SimResult, tmp_path) -> None:
    d = known.summary.to_dict()
    stat = {"mean", "p50", "p90", "p95", "p99", "min", "max"}
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "queue_ms"):
        assert set(d[key]) == stat
    assert {"requests_per_s", "input_tokens_per_s", "output_tokens_per_s",
            "total_tokens_per_s", "output_tokens_per_s_per_gpu",
            "total_tokens_per_s_per_gpu", "output_tokens_per_s_per_user"} <= set(d["throughput"])
    assert set(d["utilization"]) >= {"compute", "memory_bandwidth", "kv_cache_mean",
                                     "kv_cache_peak", "busy"}
    assert set(d["counts"]) >= {"arrived", "finished", "rejected", "preemptions", "steps"}
    assert set(d["prefix_cache"]) >= {"hit_rate", "hit_tokens"}
    assert d["duration_s"] == pytest.approx(12.0)
    assert d["config"]["scheduler"]["block_size"] == 4
    assert d["counts"] == {"arrived": 3, "finished": 3, "rejected": 0, "preemptions": 1,
                           "steps": 12, "unfinished": 0}
    # JSON-safe: NaN never appears (a 1-request run has no TPOT at all -> null)
    one = run(tiny_config(), plan([4], [1]))
    text = one.summary.to_json()
    assert "NaN" not in text
    assert json.loads(text)["tpot_ms"]["mean"] is None
    out = tmp_path / "s.json"
    known.to_json(out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(d))


def test_timeseries_totals_match_the_run(known: simkit.SimResult) -> None:
    ts = known.timeseries
    assert int(ts["arrivals"].sum()) == 3
    assert int(ts["finished"].sum()) == 3
    assert int(ts["steps"].sum()) == 12
    # prefill: the three prompts + B's recompute of its prompt and outputs 1-4 (8 positions).
    # decode: A 7; B 4 before the preemption, then the position of token 5 fed back (the
    # one-token tail of its recompute, exactly what its next decode step would have computed)
    # and 2 more. Total = sum(prompt + max_tokens - 1) + 8 recomputed = 26 + 8.
    assert int(ts["prefill_tokens"].sum()) == 4 + 4 + 4 + 8
    assert int(ts["decode_tokens"].sum()) == 7 + 4 + 1 + 2
    assert float((ts["busy_fraction"] * ts["interval_s"]).sum()) == pytest.approx(12.0)
    assert np.all(np.diff(ts["time_s"]) == pytest.approx(1.0))
