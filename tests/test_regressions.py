"""Regression tests for real bugs found by the reliability suite (one test per fix).

Each test names the symptom before the fix; all run in well under a second.
"""

from __future__ import annotations

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
    assert f"a {kind} of" in message


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
