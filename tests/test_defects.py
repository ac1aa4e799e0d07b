"""One test per known defect of the seed simulator (spec section 7), on paper-sized scenarios.

Most scenarios use :func:`_tiny.tiny_config`: every engine step takes exactly 1 s (a fixed
per-step overhead ``beta = 1`` on top of a negligible roofline), the KV cache has a handful of
4-token blocks and the token budget is 8, so every expected time below is worked out by hand
in the comments (step k spans [k-1, k] when the engine is never idle).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _tiny import col, plan, run, tiny_config, tiny_dict

import simkit


# --------------------------------------------------------------------------------- defect 1
def test_d01_first_token_comes_from_the_step_that_finishes_the_prompt() -> None:
    # step 1 [0,1]: prefill 4 tokens -> token 1 at t=1; steps 2, 3 -> tokens 2, 3.
    result = run(tiny_config(), plan([4], [3]))
    assert col(result, "first_token_time") == [1.0]
    assert col(result, "finish_time") == [3.0]
    assert result.num_steps == 3
    # chunked: 12 tokens with a budget of 8 -> [0,1] 8 tokens, [1,2] 4 tokens + token 1.
    result = run(tiny_config(), plan([12], [2]))
    assert col(result, "first_token_time") == [2.0]
    assert col(result, "finish_time") == [3.0]
    assert result.num_steps == 3


def test_d01_one_token_request_takes_exactly_its_prefill() -> None:
    # prompt + max_tokens - 1 positions: a 1-token output needs no decode step at all.
    result = run(tiny_config(), plan([4], [1]))
    assert col(result, "first_token_time") == [1.0]
    assert col(result, "finish_time") == [1.0]
    assert result.num_steps == 1


# --------------------------------------------------------------------------------- defect 2
def test_d02_preemption_recomputes_and_goes_to_the_front_of_the_queue() -> None:
    # 4 blocks of 4 tokens (16 tokens). A, B: prompt 4, 8 outputs, t=0; C: prompt 4, 1 output,
    # t=0.5. [0,1] A, B prefill (1 block each). From [1,2] A, B decode (2 blocks each from
    # [1,2] on, free 0), C cannot get a block. [5,6]: A needs a 3rd block -> victim B (last
    # in running order): B has 5 tokens, frees its 2 blocks, computed tokens -> 0, goes to the
    # FRONT of waiting (ahead of C, who arrived before B was preempted). [6,7], [7,8]: A
    # decodes (B needs 9 tokens = 3 blocks, only 1 free) -> A finishes at 8 and frees 3.
    # [8,9]: B recomputes 8 of its 4 + 5 = 9 positions (budget 8; C behind it gets no budget).
    # [9,10]: B's last position -> token 6; C prefills -> its only token; C finishes at 10.
    # [10,11], [11,12]: B tokens 7, 8 -> finishes at 12.
    # (Back of the queue would run C at [8,9]: C would finish at 9.)
    result = run(tiny_config(num_blocks=4), plan([4, 4, 4], [8, 8, 1], [0, 0, 0.5]))
    assert col(result, "finish_time") == [8.0, 12.0, 10.0]
    assert col(result, "first_token_time") == [1.0, 1.0, 10.0]
    assert col(result, "num_preemptions") == [0, 1, 0]
    assert result.summary.counts["preemptions"] == 1
    assert col(result, "num_output_tokens") == [8, 8, 1]
    assert result.num_steps == 12


# --------------------------------------------------------------------------------- defect 3
def test_d03_victim_is_never_a_request_already_scheduled_this_step() -> None:
    # policy = priority (victim: highest (priority, arrival)). 4 blocks.
    # X: prompt 4, 6 outputs, priority 5, t=0.  Y: prompt 6, 6 outputs, priority 0, t=0.5.
    # [0,1] X prefill. [1,2] X -> 5 positions (2 blocks), Y prefills 6 (2 blocks): free 0.
    # [2,3], [3,4] both decode within their blocks. [4,5]: X (first in running order) moves to
    # position 8 (fits); Y needs position 9 -> a 3rd block. X has the worst priority but is
    # already in this step's batch, so the victim is Y itself. [5,6]: X's position 9 takes one
    # of Y's freed blocks -> X token 6 -> X finishes at 6. Y (6 + 3 outputs = 9 positions, 3
    # blocks) can't get 2 blocks before X frees: [6,7] 8 positions, [7,8] 1 -> token 4 at 8,
    # tokens 5, 6 at 9, 10.
    cfg = tiny_config(num_blocks=4, policy="priority")
    result = run(cfg, plan([4, 6], [6, 6], [0, 0.5], priorities=[5, 0]))
    assert col(result, "num_preemptions") == [0, 1]
    assert col(result, "finish_time") == [6.0, 10.0]
    assert col(result, "first_token_time") == [1.0, 2.0]


# --------------------------------------------------------------------------------- defect 4
def test_d04_finished_requests_free_their_blocks_before_the_next_allocation() -> None:
    # 2 blocks. A: prompt 4, 1 output (1 block) finishes at the end of [0,1]. B: prompt 8
    # (2 blocks = the whole cache), arrives at 0.5. A's block is free before [1,2] allocates,
    # so B prefills in [1,2] -> token at 2 (seed: one step later).
    result = run(tiny_config(num_blocks=2), plan([4, 8], [1, 1], [0, 0.5]))
    assert col(result, "first_token_time") == [1.0, 2.0]
    assert col(result, "ttft_ms") == [1000.0, 1500.0]
    assert result.num_steps == 2


# --------------------------------------------------------------------------------- defect 5
def test_d05_means_are_true_means_and_percentiles_exact() -> None:
    # Five 1-token prompts, all at t=0, outputs 1, 2, 3, 4, 20: all prefill in [0,1] (token 1
    # at t=1), then one token per step; the request with m outputs finishes at t=m.
    result = run(tiny_config(), plan([1] * 5, [1, 2, 3, 4, 20]))
    e2e = result.summary.e2e_ms
    assert e2e["mean"] == pytest.approx(6000.0)  # (1+2+3+4+20)/5 s
    assert e2e["p50"] == pytest.approx(3000.0)
    assert e2e["p90"] == pytest.approx(13600.0)  # rank 3.6: 4 + 0.6 * (20 - 4)
    assert e2e["p95"] == pytest.approx(16800.0)  # rank 3.8: 4 + 0.8 * 16
    assert e2e["p99"] == pytest.approx(19360.0)  # rank 3.96
    assert (e2e["min"], e2e["max"]) == (pytest.approx(1000.0), pytest.approx(20000.0))
    # every TPOT and every inter-token gap is exactly one step
    assert result.summary.tpot_ms["mean"] == pytest.approx(1000.0)
    assert result.summary.tpot_ms["p99"] == pytest.approx(1000.0)
    assert result.summary.itl_ms["mean"] == pytest.approx(1000.0)
    assert result.summary.itl_ms["max"] == pytest.approx(1000.0)
    assert int(result.itl_count.sum()) == 0 + 1 + 2 + 3 + 19


# --------------------------------------------------------------------------------- defect 6
def test_d06_throughput_is_totals_over_elapsed_time() -> None:
    # Same requests arriving at t=2 (idle before): finishes at 2 + m; duration 22 - 2 = 20 s.
    result = run(tiny_config(), plan([1] * 5, [1, 2, 3, 4, 20], [2.0] * 5))
    th = result.summary.throughput
    assert result.summary.duration_s == pytest.approx(20.0)
    assert th["requests_per_s"] == pytest.approx(5 / 20)
    assert th["input_tokens_per_s"] == pytest.approx(5 / 20)
    assert th["output_tokens_per_s"] == pytest.approx(30 / 20)
    assert th["total_tokens_per_s"] == pytest.approx(35 / 20)
    assert th["output_tokens_per_s_per_gpu"] == pytest.approx(30 / 20)  # tp = 1


# --------------------------------------------------------------------------------- defect 7
def test_d07_prefill_attention_is_causal() -> None:
    # Compute-bound replica (1e4 FLOP/s, unlimited bandwidth), N = 1000 parameters, one layer,
    # one head of width 64: attention costs 4 * 1 * 1 * 64 = 256 FLOPs per query-key pair.
    # Prefill of 10 tokens: 2 * 10 * 1000 + 256 * (10 * 11 / 2) = 20000 + 14080 = 34080 FLOPs
    # -> 3.408 s. (A rectangle would be 20000 + 256 * 100 = 45600 FLOPs -> 4.56 s.)
    data = tiny_dict(max_num_batched_tokens=16)
    data["hardware"].update(compute_flops=1e4, beta=0.0, kv_cache_capacity=128 * 4 * 16)
    data["model"].update(hidden_dim=64, num_heads=1)
    result = run(simkit.config_from_dict(data), plan([10], [1]))
    assert col(result, "finish_time") == [pytest.approx(3.408, rel=1e-12)]
    assert result.summary.utilization["compute"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------- defect 8
def test_d08_moe_decode_reads_only_the_experts_it_touches() -> None:
    cfg = simkit.load_config(_config_path("qwen3_moe.toml"))
    m, hw = cfg.model, cfg.hardware
    perf = simkit.PerfModel.from_config(cfg)
    bpp = hw.bytes_per_param
    e, k = m.num_experts, m.experts_per_token
    expert = 3 * m.hidden_dim * m.intermediate_dim * bpp  # one SwiGLU expert of one layer
    all_experts = m.num_layers * e * expert
    embed = m.vocab_size * m.hidden_dim * bpp
    dense = m.num_parameters * bpp - embed - all_experts
    for t in (1, 4, 64):
        touched = e * (1 - (1 - 1 / e) ** (t * k))
        assert perf.step(t, 0, 0).bytes == pytest.approx(dense + m.num_layers * touched * expert)
    one = perf.step(1, 0, 0).bytes
    # a single decode token reads about k of E experts per layer: far below all weights
    assert one < 0.2 * m.num_parameters * bpp
    # a huge batch touches every expert
    assert perf.step(100_000, 0, 0).bytes == pytest.approx(m.num_parameters * bpp - embed)


# --------------------------------------------------------------------------------- defect 9
def test_d09_idle_time_jumps_to_the_next_arrival() -> None:
    # A at 0 (one step, done at 1); B at 100.5 -> scheduled at exactly 100.5, done at 101.5.
    result = run(tiny_config(), plan([4, 4], [1, 1], [0.0, 100.5]))
    assert result.num_steps == 2  # no idle ticks
    assert result.summary.counts["steps"] == 2
    assert col(result, "first_scheduled_time") == [0.0, 100.5]
    assert col(result, "finish_time") == [1.0, 101.5]
    assert result.summary.utilization["busy"] == pytest.approx(2 / 101.5)


# -------------------------------------------------------------------------------- defect 10
def test_d10_a_request_that_can_never_fit_is_rejected_with_a_reason() -> None:
    # 4 blocks x 4 tokens = 16 positions; max_seq_len 30; budget 8, chunked prefill on.
    data = tiny_dict(num_blocks=4)
    data["model"]["max_seq_len"] = 30
    cfg = simkit.config_from_dict(data)
    #            fits   prompt>cache  grows past cache  prompt>max_seq_len  fits
    p = plan([4, 20, 10, 31, 4], [2, 1, 10, 1, 1], [0, 0, 0, 0, 0])
    result = run(cfg, p)
    assert col(result, "status") == ["finished", "rejected", "rejected", "rejected", "finished"]
    reasons = col(result, "reject_reason")
    assert pd.isna(reasons[0]) and pd.isna(reasons[4])
    assert "KV blocks" in reasons[1] and "4" in reasons[1]
    assert "KV blocks" in reasons[2]  # 10 + 10 - 1 = 19 positions > 16
    assert "max_seq_len" in reasons[3]
    assert result.summary.counts["rejected"] == 3
    assert result.summary.counts["finished"] == 2
    assert not result.partial


def test_d10_prompt_over_the_budget_without_chunking_is_rejected() -> None:
    cfg = tiny_config(enable_chunked_prefill=False)
    result = run(cfg, plan([9, 4], [1, 1]))
    assert col(result, "status") == ["rejected", "finished"]
    assert "max_num_batched_tokens" in col(result, "reject_reason")[0]


# -------------------------------------------------------------------------------- defect 11
@pytest.mark.parametrize("workload, field", [
    ({"arrival_pattern": "closed_loop", "num_requests": 10}, "num_concurrent_users"),
    ({"arrival_pattern": "closed_loop", "num_concurrent_users": 4}, "num_requests"),
    ({"arrival_pattern": "poisson", "arrival_rate": 5.0}, "num_requests"),
    ({"arrival_pattern": "gamma", "arrival_rate": 5.0}, "num_requests"),
    ({"arrival_pattern": "uniform", "arrival_rate": 5.0}, "num_requests"),
    ({"arrival_pattern": "batched"}, "num_requests"),
])
def test_d11_unbounded_workloads_are_config_errors(workload: dict, field: str) -> None:
    data = tiny_dict()
    data["workload"] = workload
    with pytest.raises(simkit.ConfigError) as info:
        simkit.config_from_dict(data)
    assert "[workload]" in str(info.value)
    assert field in str(info.value)
    assert info.value.field == field


# -------------------------------------------------------------------------------- defect 12
def test_d12_prefix_hits_skip_compute() -> None:
    # A: prompt 9 = 2 full blocks (hashes 11, 12) + 1 token: [0,1] 8 tokens, [1,2] 1 -> done
    # at 2; its blocks are freed but stay hashed. B (same prefix) at 5: 8 tokens hit, computes
    # 1 position in one step -> done at 6 (without caching: 2 steps, done at 7).
    cfg = tiny_config(enable_prefix_caching=True)
    p = plan([9, 9], [1, 1], [0, 5], hashes=[(11, 12), (11, 12)])
    result = run(cfg, p)
    assert col(result, "finish_time") == [2.0, 6.0]
    assert col(result, "num_cached_tokens") == [0, 8]
    assert result.num_steps == 3
    assert result.summary.prefix_cache["hit_tokens"] == 8
    assert result.summary.prefix_cache["hit_rate"] == pytest.approx(8 / 18)
    off = run(tiny_config(enable_prefix_caching=False), p)
    assert col(off, "finish_time") == [2.0, 7.0]
    assert off.num_steps == 4


def test_d12_prefix_hits_share_blocks() -> None:
    # A: prompt 9 (hashes 11, 12), 10 outputs, t=0: [0,1] 8, [1,2] 1 -> token 1 at 2, token n
    # at n+1, done at 11 holding 9 + 9 = 18 positions = 5 blocks. B: same prefix at 2.5:
    # [3,4] hits 8, computes 1 (3 blocks, 2 shared) -> token n at n+3. During [9,10] A holds
    # 17 positions (5 blocks) and B 15 (4 blocks): 5 + 4 - 2 shared = 7 blocks, the peak
    # (unshared it would be 9).
    cfg = tiny_config(num_blocks=16, enable_prefix_caching=True)
    result = run(cfg, plan([9, 9], [10, 10], [0, 2.5], hashes=[(11, 12), (11, 12)]))
    assert col(result, "finish_time") == [11.0, 13.0]
    assert result.summary.utilization["kv_cache_peak"] == pytest.approx(7 / 16)


# -------------------------------------------------------------------------------- defect 13
def test_d13_chunked_prefill_off_really_disables_chunking() -> None:
    # A: prompt 4, 3 outputs, t=0; B: prompt 8, 1 output, t=0.5. Budget 8.
    # Off: [1,2] A decodes (budget 7 left) and B's 8-token prompt waits whole; [2,3] same; A
    # done at 3; [3,4] B prefills -> done at 4.
    # On: [1,2] B gets 7 tokens, [2,3] its last one -> done at 3.
    p = plan([4, 8], [3, 1], [0, 0.5])
    off = run(tiny_config(enable_chunked_prefill=False), p)
    assert col(off, "finish_time") == [3.0, 4.0]
    on = run(tiny_config(enable_chunked_prefill=True), p)
    assert col(on, "finish_time") == [3.0, 3.0]


def test_d13_long_prefill_threshold_does_not_chunk_when_chunking_is_off() -> None:
    # The threshold caps chunk sizes "for a prefill with chunking enabled" (spec 2.2).
    p = plan([4], [1])
    off = run(tiny_config(enable_chunked_prefill=False, long_prefill_token_threshold=2), p)
    assert col(off, "finish_time") == [1.0]
    assert off.num_steps == 1
    on = run(tiny_config(enable_chunked_prefill=True, long_prefill_token_threshold=2), p)
    assert col(on, "finish_time") == [2.0]  # 2 + 2 tokens
    assert on.num_steps == 2


# -------------------------------------------------------------------------------- defect 14
def test_d14_utilization_is_time_weighted() -> None:
    # Compute-bound (1e4 FLOP/s): a prompt of 10 with 1 output costs 2*10*1000 + 4*55 = 20220
    # FLOPs = 2.022 s. Requests at 0 and 10 -> busy [0, 2.022] and [10, 12.022], idle between.
    # Time-weighted compute utilization = 2 * 20220 / (12.022 * 1e4); busy = 4.044 / 12.022.
    # Each holds 3 blocks of 16 while it runs: KV mean = 3 * 4.044 / (12.022 * 16).
    data = tiny_dict(num_blocks=16, max_num_batched_tokens=16)  # no chunking of 10 tokens
    data["hardware"].update(compute_flops=1e4, beta=0.0)
    result = run(simkit.config_from_dict(data), plan([10, 10], [1, 1], [0.0, 10.0]))
    u = result.summary.utilization
    assert result.summary.duration_s == pytest.approx(12.022)
    assert u["compute"] == pytest.approx(2 * 20220 / (12.022 * 1e4))
    assert u["busy"] == pytest.approx(4.044 / 12.022)
    assert u["kv_cache_mean"] == pytest.approx(3 * 4.044 / (12.022 * 16))
    assert u["kv_cache_peak"] == pytest.approx(3 / 16)
    # bytes per step: 1000 weight bytes + 2 B/token * 10 tokens, on 1e30 B/s
    assert u["memory_bandwidth"] == pytest.approx(2 * 1020 / (12.022 * 1e30))


# -------------------------------------------------------------------------------- defect 15
def test_d15_interval_rates_use_the_real_elapsed_time() -> None:
    # Steps of 0.3 s (beta), 1 s intervals. Prompt 4, 7 outputs: 7 steps ending at 0.3, 0.6,
    # 0.9, 1.2, 1.5, 1.8, 2.1. Interval [2, 2.1] is 0.1 s long and holds 1 output token.
    data = tiny_dict()
    data["hardware"]["beta"] = 0.3
    result = run(simkit.config_from_dict(data), plan([4], [7]))
    ts = result.timeseries
    assert ts["time_s"].tolist() == [0.0, 1.0, 2.0]
    assert ts["interval_s"].tolist() == pytest.approx([1.0, 1.0, 0.1])
    assert ts["output_tokens_per_s"].tolist() == pytest.approx([3.0, 3.0, 10.0])
    assert ts["input_tokens_per_s"].tolist() == pytest.approx([4.0, 0.0, 0.0])
    assert ts["busy_fraction"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    # rate x elapsed recovers every token
    assert float((ts["output_tokens_per_s"] * ts["interval_s"]).sum()) == pytest.approx(7.0)


# -------------------------------------------------------------------------------- defect 16
def test_d16_duration_secs_stops_open_loop_arrivals() -> None:
    data = tiny_dict()
    data["workload"] = {"arrival_pattern": "poisson", "arrival_rate": 10.0, "num_requests": 400,
                        "seed": 7, "input_len_dist": {"type": "fixed", "value": 1},
                        "output_len_dist": {"type": "fixed", "value": 1}}
    unbounded = simkit.build_workload(simkit.config_from_dict(data).workload, block_size=4)
    data["workload"]["duration_secs"] = 5.0
    cfg = simkit.config_from_dict(data)
    bounded = simkit.build_workload(cfg.workload, block_size=4)
    times = np.asarray(unbounded.arrival_times)
    expected = times[times < 5.0]
    assert 10 < len(expected) < 100  # ~50 expected
    # the bounded plan is the same seed's arrivals, cut at 5 s
    np.testing.assert_array_equal(np.asarray(bounded.arrival_times), expected)
    result = simkit.simulate(cfg, mode="exact")
    assert result.summary.counts["arrived"] == len(expected)
    assert result.requests["arrival_time"].max() < 5.0


def test_d16_duration_secs_stops_a_closed_loop() -> None:
    # 2 users, prompt 4 + 1 output = one 1-s step for both together; they send at 0, 1, 2, 3;
    # the next sends (at 4) are after duration 3.5 -> 8 requests, last done at 4.
    data = tiny_dict()
    data["workload"] = {"arrival_pattern": "closed_loop", "num_concurrent_users": 2,
                        "num_requests": 100, "duration_secs": 3.5,
                        "input_len_dist": {"type": "fixed", "value": 4},
                        "output_len_dist": {"type": "fixed", "value": 1}}
    result = simkit.simulate(simkit.config_from_dict(data), mode="exact")
    assert result.summary.counts["arrived"] == 8
    assert sorted(result.requests["arrival_time"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert result.requests["finish_time"].max() == 4.0


# -------------------------------------------------------------------------------- defect 17
def test_d17_finished_requests_are_never_victims() -> None:
    # 2 blocks. A: prompt 4, 1 output, finishes at 1. B: prompt 4, 3 outputs (grows to 2
    # blocks at [1,2]). B's new block at [1,2] comes from A's freed block; nothing is
    # preempted, A is never touched after it finished.
    result = run(tiny_config(num_blocks=2), plan([4, 4], [1, 3]))
    assert result.summary.counts["preemptions"] == 0
    assert col(result, "num_preemptions") == [0, 0]
    assert col(result, "finish_time") == [1.0, 3.0]


def test_d17_a_full_prefix_hit_still_computes_and_never_stops_admission() -> None:
    # A: prompt 8 = 2 full blocks (hashes 1, 2), done at 1. B: the same 8-token prompt at 2: a
    # hit is capped at prompt - 1 = 7 tokens, i.e. 1 whole block (4 tokens), so B computes 4
    # positions, not 0. C arrives with B and is admitted in the same step (budget 4 + 4).
    cfg = tiny_config(enable_prefix_caching=True)
    p = plan([8, 8, 4], [1, 1, 1], [0, 2, 2], hashes=[(1, 2), (1, 2), ()])
    result = run(cfg, p)
    assert col(result, "num_cached_tokens") == [0, 4, 0]
    assert col(result, "finish_time") == [1.0, 3.0, 3.0]
    assert result.num_steps == 2


def test_d17_overload_drains_completely() -> None:
    # 60 requests arriving faster than served, a cache of 6 blocks: the queue never freezes.
    rng = np.random.default_rng(3)
    n = 60
    prompts = rng.integers(1, 9, n)
    outputs = rng.integers(1, 9, n)
    arrivals = np.sort(rng.uniform(0, 10, n))
    result = run(tiny_config(num_blocks=6), plan(prompts, outputs, arrivals))
    assert result.summary.counts["finished"] == n
    assert col(result, "num_output_tokens") == outputs.tolist()
    assert not result.partial


# -------------------------------------------------------------------------------- defect 18
def test_d18_no_livelock_under_memory_pressure() -> None:
    # 4 blocks; six requests that each need 3 blocks at full length. Every step must compute
    # at least one position, so the run is bounded by the positions to compute, recompute
    # included: at most sum(prompt + outputs - 1) * (1 + preemptions) steps.
    p = plan([6] * 6, [6] * 6)
    result = run(tiny_config(num_blocks=4), p)
    assert result.summary.counts["finished"] == 6
    assert result.summary.counts["preemptions"] > 0
    assert result.num_steps <= 6 * 11 * (1 + result.summary.counts["preemptions"])
    assert not result.partial


def test_d18_self_preemption_is_not_a_livelock() -> None:
    # One request alone in a 2-block cache with prompt 4 + 5 outputs = 8 positions = exactly
    # the cache: it never needs to preempt itself and runs 5 steps.
    result = run(tiny_config(num_blocks=2), plan([4], [5]))
    assert col(result, "finish_time") == [5.0]
    assert result.summary.counts["preemptions"] == 0


def _config_path(name: str) -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "configs" / name)


def test_idle_jump_summary_is_finite() -> None:
    result = run(tiny_config(), plan([4], [1], [50.0]))
    assert math.isfinite(result.summary.utilization["busy"])
    assert result.summary.utilization["busy"] == pytest.approx(1.0)


# ------------------------------------------------------------------- fast mode == exact mode
def _scenarios() -> dict[str, tuple[simkit.Config, simkit.RequestPlan]]:
    rng = np.random.default_rng(11)
    n = 80
    overload = plan(rng.integers(1, 12, n), rng.integers(1, 12, n),
                    np.sort(rng.uniform(0, 15, n)))
    return {
        "d02-preemption": (tiny_config(num_blocks=4), plan([4, 4, 4], [8, 8, 1], [0, 0, 0.5])),
        "d03-priority": (tiny_config(num_blocks=4, policy="priority"),
                         plan([4, 6], [6, 6], [0, 0.5], priorities=[5, 0])),
        "d12-prefix": (tiny_config(enable_prefix_caching=True),
                       plan([9, 9], [10, 10], [0, 2.5], hashes=[(11, 12), (11, 12)])),
        "d13-no-chunking": (tiny_config(enable_chunked_prefill=False),
                            plan([4, 8], [3, 1], [0, 0.5])),
        "d18-pressure": (tiny_config(num_blocks=4), plan([6] * 6, [6] * 6)),
        "overload-fcfs": (tiny_config(num_blocks=6), overload),
        "overload-sjf": (tiny_config(num_blocks=6, policy="sjf"), overload),
        "long-decodes": (tiny_config(num_blocks=64, max_num_seqs=4),
                         plan([3, 5, 7, 2, 9], [40, 25, 60, 5, 33], [0, 0, 1, 2, 30])),
    }


@pytest.mark.parametrize("name", sorted(_scenarios()))
def test_fast_mode_equals_exact_mode(name: str) -> None:
    cfg, p = _scenarios()[name]
    exact = simkit.simulate(cfg, plan=p, mode="exact")
    fast = simkit.simulate(cfg, plan=p, mode="fast")
    pd.testing.assert_frame_equal(fast.requests, exact.requests)
    assert fast.summary.to_dict() == exact.summary.to_dict()
    assert fast.num_steps == exact.num_steps
