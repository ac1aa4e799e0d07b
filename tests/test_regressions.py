"""Regression tests for real bugs found by the reliability suite (one test per fix).

Each test names the symptom before the fix; all run in well under a second.
"""

from __future__ import annotations

import json
import time

import pytest
from reliability_helpers import tiny_config

import simkit

FEW_REQUESTS = {
    "arrival_pattern": "batched", "num_requests": 3,
    "input_len_dist": {"type": "fixed", "value": 8},
    "output_len_dist": {"type": "fixed", "value": 4},
}


@pytest.mark.parametrize(("overrides", "kind"), [
    # a step of ~1e19 s: the time series used to close 1e19 empty 1-s intervals, one by one
    ({"hardware": {"compute_flops": 1e-12}}, "step"),
    # bandwidth 1e-300 B/s: the step time is inf and int(inf // dt) raised ValueError
    ({"hardware": {"memory_bandwidth": 1e-300}}, "step"),
    # first Poisson arrival after ~1e30 s: the idle jump hung the same way
    ({"workload": {"arrival_pattern": "poisson", "arrival_rate": 1e-30, "num_requests": 2,
                   "input_len_dist": {"type": "fixed", "value": 8},
                   "output_len_dist": {"type": "fixed", "value": 4}}}, "idle gap"),
])
def test_absurd_time_spans_end_with_a_simulation_error_not_a_hang(overrides, kind):
    cfg = tiny_config(**{"workload": FEW_REQUESTS, **overrides})
    t = time.perf_counter()
    with pytest.raises(simkit.SimulationError) as info:
        simkit.simulate(cfg)
    assert time.perf_counter() - t < 5.0
    message = str(info.value)
    assert "sample_interval_secs" in message and "1,000,000 intervals" in message
    assert f"{'an' if kind == 'idle gap' else 'a'} {kind} of" in message


def test_a_tiny_sample_interval_on_a_long_run_is_an_error_naming_the_field():
    # 1e-6 s intervals; one step reads >= 2 MB of weights at 1e6 B/s, >= 2 s: 2 million rows
    cfg = tiny_config(workload={**FEW_REQUESTS, "num_requests": 1,
                                "output_len_dist": {"type": "fixed", "value": 1}},
                      hardware={"memory_bandwidth": 1e6},
                      simulation={"sample_interval_secs": 1e-6})
    with pytest.raises(simkit.SimulationError, match=r"sample_interval_secs = 1e-06 s"):
        simkit.simulate(cfg)


def test_a_run_just_under_the_interval_cap_still_completes():
    # The same request at 1e-4 s intervals needs ~24,000 rows: well under the cap.
    cfg = tiny_config(workload={**FEW_REQUESTS, "num_requests": 1,
                                "output_len_dist": {"type": "fixed", "value": 120}},
                      hardware={"memory_bandwidth": 1e8},
                      simulation={"sample_interval_secs": 1e-4})
    result = simkit.simulate(cfg)
    assert result.summary.counts["finished"] == 1
    # each of the 120 steps reads >= 2 MB of weights at 1e8 B/s: >= 20 ms each
    assert result.requests["e2e_ms"].iloc[0] >= 120 * 20.0


def test_prefix_caching_with_a_huge_kv_cache_runs_like_any_unconstrained_cache():
    # Before the fix the block pool was built eagerly: [0] * 1e25 raised OverflowError
    # (and 1e8 blocks took seconds and gigabytes) as soon as prefix caching was enabled.
    def run(capacity: float) -> simkit.SimResult:
        cfg = tiny_config(workload={**FEW_REQUESTS, "num_requests": 6},
                          scheduler={"enable_prefix_caching": True},
                          hardware={"kv_cache_capacity": capacity})
        return simkit.simulate(cfg)

    t = time.perf_counter()
    huge = run(1e30)
    assert time.perf_counter() - t < 5.0
    roomy = run(10_000 * 4 * 512)  # 10,000 blocks: the 6 requests need 6 × 3
    assert huge.summary.counts["finished"] == 6
    for column in ("first_token_time", "finish_time"):
        assert huge.requests[column].tolist() == roomy.requests[column].tolist()


def test_lazy_free_block_queue_keeps_the_eager_recycling_order():
    # Pool of 5 blocks of 4 tokens. The eager queue was [0, 1, 2, 3, 4]; fresh blocks are
    # handed out in id order, then freed ones least-recently-freed first.
    from simkit.kv_cache import KVCacheManager
    from simkit.request import Request

    kv = KVCacheManager(5, 4, enable_prefix_caching=True)
    a = Request(0, 0.0, 8, 1)
    b = Request(1, 0.0, 4, 1)
    assert kv.allocate_slots(a, 8)  # two blocks
    assert a.block_ids == [0, 1]
    assert kv.allocate_slots(b, 4)
    assert b.block_ids == [2]
    kv.free(a)  # tail first: queue now [3, 4 (fresh), 1, 0]
    c = Request(2, 0.0, 16, 1)
    assert kv.allocate_slots(c, 16)  # four blocks
    assert c.block_ids == [3, 4, 1, 0]
    assert kv.num_free_blocks == 0
    assert not kv.allocate_slots(Request(3, 0.0, 1, 1), 1)
    kv.free(b)
    kv.free(c)
    assert kv.num_free_blocks == 5 and kv.num_used_blocks == 0


@pytest.mark.parametrize(("field", "value", "maximum"), [
    # rng.integers(0, 1e30) raised a bare ValueError ("high is out of bounds for int64")
    ("num_priority_levels", 1e30, "<= 1e+09"),
    # np.repeat of one burst of 1e9 arrivals tried to allocate 8 GB for 3 requests
    ("burst_size", 1e9, "<= 1e+06"),
])
def test_huge_workload_counts_are_config_errors_naming_the_limit(field, value, maximum):
    workload = {**FEW_REQUESTS, "arrival_pattern": "burst", "arrival_rate": 1.0, field: value}
    with pytest.raises(simkit.ConfigError) as info:
        tiny_config(workload=workload)
    message = str(info.value)
    assert message.startswith(f"[workload] {field} = ")
    assert message.endswith(f"must be an integer >= 1 and {maximum}")


def test_the_largest_allowed_priority_levels_and_burst_still_simulate():
    workload = {**FEW_REQUESTS, "arrival_pattern": "burst", "arrival_rate": 1e6,
                "num_priority_levels": 10**9, "burst_size": 10**6}
    cfg = tiny_config(workload=workload, scheduler={"policy": "priority"})
    result = simkit.simulate(cfg)
    assert result.summary.counts["finished"] == 3
    # the 3 requests arrive together (one burst), after one exponential gap of mean 1 s
    assert result.requests["arrival_time"].nunique() == 1


def test_more_heads_than_hidden_dim_is_a_config_error_not_a_division_by_zero():
    # head width = hidden_dim // num_heads = 0 made kv_bytes_per_token 0 and
    # Config.num_gpu_blocks raised ZeroDivisionError (found by tests/test_fuzz.py)
    from reliability_helpers import tiny_config_dict

    data = tiny_config_dict()
    data["model"]["num_heads"] = 65  # hidden_dim is 64
    with pytest.raises(simkit.ConfigError) as info:
        simkit.config_from_dict(data)
    assert str(info.value) == ("[model] num_heads = 65: must be <= hidden_dim = 64 (the head "
                               "width hidden_dim // num_heads would be 0), or set head_dim")
    data["model"]["head_dim"] = 1  # an explicit head width makes it a valid (odd) model
    assert simkit.config_from_dict(data).kv_bytes_per_token == 2 * 2 * 65 * 1 * 2


def test_a_huge_integer_sample_interval_runs_with_one_time_series_row():
    # sample_interval_secs = 2**63 (an int from TOML) overflowed numpy's int64 in
    # np.arange(n) * dt when the time series was built (found by tests/test_fuzz.py)
    cfg = tiny_config(workload=FEW_REQUESTS, simulation={"sample_interval_secs": 2**63})
    result = simkit.simulate(cfg)
    assert result.summary.counts["finished"] == 3
    assert len(result.timeseries) == 1
    assert result.timeseries["time_s"].iloc[0] == 0.0


@pytest.mark.parametrize("cell", ["[]", "[1, 2]", "{}"])
def test_a_list_or_object_timestamp_in_a_mooncake_trace_is_a_trace_error(tmp_path, cell):
    # pd.isna([]) is an array: building the message raised "truth value of an empty array
    # is ambiguous" (ValueError) instead of a TraceError (found by tests/test_fuzz.py)
    p = tmp_path / "t.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n'
                 f'{{"timestamp": {cell}, "input_length": 5, "output_length": 2}}\n')
    with pytest.raises(simkit.TraceError) as info:
        simkit.read_trace(p)
    assert str(info.value) == (f"{p}: row 2 (line 2): timestamp = {json.loads(cell)!r} is not a "
                               "finite number")


@pytest.mark.parametrize(("dist", "field"), [
    ({"type": "uniform", "min": 1, "max": 1e30}, "max"),
    ({"type": "uniform", "min": 2**63, "max": 2**64}, "min"),
    ({"type": "fixed", "value": 1e12}, "value"),
])
def test_token_counts_above_1e9_are_config_errors(dist, field):
    # uniform max = 1e30 reached rng.integers and raised "high is out of bounds for int64"
    # (found by a sweep of hostile values over every config field); fixed values above the
    # sampler's 1e9 clamp were silently replaced by 1e9
    with pytest.raises(simkit.ConfigError) as info:
        tiny_config(workload={**FEW_REQUESTS, "input_len_dist": dist})
    message = str(info.value)
    assert message.startswith(f"[workload.input_len_dist] {field} = ")
    assert message.endswith("must be an integer >= 1 and <= 1e+09")
