"""Invariants of the engine on random small workloads (Hypothesis).

Every example is a tiny replica (see ``reliability_helpers``: 512 B of KV per token, a KV
cache of 4-48 blocks of 1-16 tokens, so preemption is common) with random scheduler knobs
(all policies, chunked prefill on/off, prefix caching on/off with shared prefix blocks,
per-request chunk caps, partial-prefill limits, preemption-free admission), random hardware
speeds and calibration terms (tp 1 or 2), and a random request plan, open or closed loop. The
run goes through ``simkit.engine.Engine(..., mode="exact", on_step=...)`` so invariants are
checked after every scheduler step as well as on the result:

* each arrived request ends exactly once: finished (with ``max_tokens`` outputs) or rejected
  with a reason, and rejected exactly when it can never fit (checked against an independent
  rule: prompt + max_tokens > max_seq_len, more blocks than the cache, or — chunking off — a
  prompt over the token budget); never scheduled after finishing;
* per request ``arrival <= first scheduled <= first token <= finish``;
* TTFT, TPOT and E2E are at least the roofline time of the request alone (derivation in
  :func:`latency_lower_bounds`);
* KV blocks in use never exceed the pool, match the blocks the running requests hold
  (``ceil(num_computed_tokens / block_size)`` each, shared prefix blocks once), and are all
  free at the end;
* every step respects ``max_num_batched_tokens`` and ``max_num_seqs``; a preemption victim
  is never in the step's batch; chunking off means a prompt is computed in one step;
  preemption-free admission never preempts; a closed loop never has more requests in flight
  than users;
* simulated time never goes backwards and every step takes time;
* the same inputs give identical results; ``fast`` mode equals ``exact`` mode;
* a faster GPU never makes the mean E2E of a closed loop worse (5 % tolerance), nor does a
  bigger KV cache when steps are memory-bound (as LLM decode is on real GPUs); when every
  token costs compute, a bigger cache can be worse (a kept counterexample explains why).

The profile ``ci`` (default) is derandomized, so CI runs the same examples every time; set
``HYPOTHESIS_PROFILE=thorough`` for 10x more random examples.
"""

from __future__ import annotations

import heapq
import math
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from reliability_helpers import roofline_step_time, tiny_config, tiny_config_dict

import simkit
from simkit.config import POLICIES
from simkit.engine import Engine
from simkit.request import RequestStatus

settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(n: int) -> int:
    """``n`` examples under the ``ci`` profile (max_examples 100), scaled for others."""
    return max(1, n * settings.default.max_examples // 100)


REL = 1e-9  # relative tolerance of float comparisons of simulated times


# ----------------------------------------------------------------------------- scenarios
class Scenario:
    """One random example: a config and a request plan (printed compactly on failure)."""

    def __init__(self, config: simkit.Config, plan: simkit.RequestPlan) -> None:
        self.config = config
        self.plan = plan

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        sc = self.config.scheduler
        return (f"Scenario(blocks={self.config.num_gpu_blocks}x{sc.block_size}, "
                f"scheduler={simkit.config_to_dict(self.config)['scheduler']}, "
                f"hardware={simkit.config_to_dict(self.config)['hardware']}, "
                f"max_seq_len={self.config.model.max_seq_len}, "
                f"prompts={self.plan.num_prompt_tokens.tolist()}, "
                f"outputs={self.plan.max_tokens.tolist()}, "
                f"arrivals={None if self.plan.arrival_times is None else self.plan.arrival_times.tolist()}, "  # noqa: E501
                f"users={self.plan.num_users}, think={self.plan.think_time_secs}, "
                f"starts={None if self.plan.user_start_times is None else self.plan.user_start_times.tolist()}, "  # noqa: E501
                f"priorities={self.plan.priorities.tolist()}, "
                f"hashes={self.plan.block_hashes})")


def make_plan(prompts: list[int], outputs: list[int], *, block_size: int,
              arrivals: list[float] | None = None, num_users: int | None = None,
              user_starts: list[float] | None = None, think: float = 0.0,
              priorities: list[int] | None = None,
              families: list[tuple[int, int]] | None = None) -> simkit.RequestPlan:
    """A plan; ``families[i] = (f, k)``: request i's first k full prompt blocks are family f's.

    Block j of family f has hash ``(f << 32) | j``; other blocks ``((1000 + i) << 32) | j``,
    unique to the request. So equal leading hashes mean an equal prefix, as the engine
    assumes (the hash of block j stands for blocks 0..j).
    """
    n = len(prompts)
    hashes = None
    if families is not None:
        hashes = []
        for i, (p, (f, k)) in enumerate(zip(prompts, families, strict=True)):
            full = p // block_size
            hashes.append(tuple((f << 32) | j if j < k else ((1000 + i) << 32) | j
                                for j in range(full)))
    return simkit.RequestPlan(
        num_prompt_tokens=prompts, max_tokens=outputs,
        priorities=priorities if priorities is not None else [0] * n,
        arrival_times=arrivals, block_hashes=hashes, num_users=num_users,
        user_start_times=user_starts, think_time_secs=think)


@st.composite
def scenarios(draw: Any, *, closed_loop: bool | None = None, max_requests: int = 24,
              allow_rejections: bool = True, memory_bound: bool = False,
              max_output: int = 40) -> Scenario:
    """Random tiny scenarios (outputs of 1 to ``max_output`` tokens).

    ``memory_bound``: every step's time is set by the bytes read (1 TFLOP/s vs <= 10 GB/s
    and at most 64 tokens per step: 2·1e6·64 FLOP take 128 µs, the 2 MB of weights alone
    200 µs), the regime of LLM decode on real GPUs.
    """
    block_size = draw(st.sampled_from([1, 2, 4, 8, 16]))
    num_blocks = draw(st.integers(4, 48))
    chunked = draw(st.booleans())
    sched = {
        "block_size": block_size,
        "policy": draw(st.sampled_from(POLICIES)),
        "enable_chunked_prefill": chunked,
        "max_num_batched_tokens": draw(st.integers(1, 64 if memory_bound else 160)),
        "max_num_seqs": draw(st.integers(1, 12)),
        "long_prefill_token_threshold": draw(st.sampled_from([0, 0, 0, 1, 5, 24]))
        if chunked else 0,
        "max_num_partial_prefills": draw(st.sampled_from([0, 0, 1, 2])),
        "enable_prefix_caching": draw(st.booleans()),
        "enable_preemption_free": draw(st.sampled_from([False, False, False, True])),
    }
    tp = 1 if memory_bound else draw(st.sampled_from([1, 1, 2]))
    hardware = {
        # 1e9-1e12 FLOP/s vs 1e9-1e12 B/s: steps range from compute- to bandwidth-bound
        "compute_flops": 1e12 if memory_bound else draw(st.sampled_from([1e9, 1e11, 1e12])),
        "memory_bandwidth": draw(st.sampled_from([1e9, 1e10] if memory_bound
                                                 else [1e9, 1e10, 1e12])),
        "alpha": draw(st.sampled_from([1.0, 1.0, 0.5, 2.5])),
        "beta": draw(st.sampled_from([0.0, 0.0, 1e-4])),
        "compute_efficiency": 1.0 if memory_bound else draw(st.sampled_from([1.0, 0.6])),
        "bandwidth_efficiency": draw(st.sampled_from([1.0, 0.8])),
        "tp": tp,
    }
    if tp > 1:
        hardware.update(interconnect_bandwidth=draw(st.sampled_from([1e9, 4.5e11])),
                        interconnect_latency=draw(st.sampled_from([0.0, 5e-6])))
    capacity = num_blocks * block_size
    max_len = draw(st.integers(8, 400)) if allow_rejections else 10_000
    n = draw(st.integers(1, max_requests))
    top_prompt = 80 if allow_rejections else max(1, min(80, capacity // 2))
    top_output = max_output if allow_rejections else max(1, min(max_output,
                                                                capacity - top_prompt + 1))
    prompts = draw(st.lists(st.integers(1, top_prompt), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, top_output), min_size=n, max_size=n))
    if not allow_rejections and not chunked:
        sched["max_num_batched_tokens"] = max(sched["max_num_batched_tokens"], max(prompts))
    priorities = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    num_families = draw(st.integers(1, 3))
    families = [(draw(st.integers(0, num_families - 1)), draw(st.integers(0, p // block_size)))
                for p in prompts]
    closed = draw(st.booleans()) if closed_loop is None else closed_loop
    if closed:
        users = draw(st.integers(1, 6))
        starts = draw(st.lists(st.sampled_from([0.0, 0.0, 1e-4, 3e-3]), min_size=users,
                               max_size=users))
        think = draw(st.sampled_from([0.0, 0.0, 2e-3]))
        plan = make_plan(prompts, outputs, block_size=block_size, num_users=users,
                         user_starts=starts, think=think, priorities=priorities,
                         families=families)
    else:
        span = draw(st.sampled_from([0.0, 1e-3, 0.05, 1.0]))
        gaps = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
        arrivals = np.cumsum(gaps) / max(sum(gaps), 1e-12) * span
        plan = make_plan(prompts, outputs, block_size=block_size,
                         arrivals=arrivals.tolist(), priorities=priorities, families=families)
    cfg = tiny_config(num_blocks=num_blocks, block_size=block_size, max_seq_len=max_len,
                      scheduler=sched, hardware=hardware)
    return Scenario(cfg, plan)


# ------------------------------------------------------------------------------ checkers
class StepChecker:
    """The ``on_step`` hook: asserts the per-step invariants after every scheduler step."""

    def __init__(self, config: simkit.Config, plan: simkit.RequestPlan) -> None:
        sc = config.scheduler
        self.budget = sc.max_num_batched_tokens
        self.max_seqs = sc.max_num_seqs
        self.block_size = sc.block_size
        self.prefix = sc.enable_prefix_caching
        self.whole_prompts = not sc.enable_chunked_prefill and not \
            sc.long_prefill_token_threshold
        self.preemption_free = sc.enable_preemption_free
        self.num_blocks = config.num_gpu_blocks
        self.num_users = plan.num_users
        self.last_t1 = 0.0
        self.num_steps = 0
        self.finished: set[int] = set()
        self.max_used = 0

    def __call__(self, engine: Engine, t0: float, t1: float, out: Any) -> None:
        # time moves forward: a step starts at or after the previous one ended, and lasts
        assert t0 >= self.last_t1, (t0, self.last_t1)
        assert t1 > t0, (t0, t1)
        self.last_t1 = t1
        self.num_steps += 1
        # the step's batch
        assert out.num_tokens == sum(out.num_new_tokens)
        assert 0 < out.num_tokens <= self.budget
        assert min(out.num_new_tokens) >= 1
        assert len(out.requests) <= self.max_seqs
        ids = [r.id for r in out.requests]
        assert len(set(ids)) == len(ids), "a request twice in one step"
        assert not self.finished & set(ids), "a finished request was scheduled again"
        assert not {r.id for r in out.preempted} & set(ids), "victim in this step's batch"
        if self.preemption_free:
            assert not out.preempted, "preemption with enable_preemption_free"
        # requests after the step
        sched = engine.scheduler
        running = list(sched.running)
        assert len(running) <= self.max_seqs
        if self.num_users is not None:
            assert len(running) + len(sched.waiting) <= self.num_users
        for r in out.requests:
            if r.status == RequestStatus.FINISHED:
                self.finished.add(r.id)
                assert r.num_output_tokens == r.max_tokens
                assert r.num_blocks == 0
            else:
                assert r.status == RequestStatus.RUNNING
                assert r.num_output_tokens < r.max_tokens
            if self.whole_prompts and r.num_preemptions == 0:
                assert r.status == RequestStatus.FINISHED or r.num_remaining_tokens == 1, \
                    f"prompt of {r!r} split with chunked prefill disabled"
        # KV accounting: the pool, and what each running request holds
        kv = engine.kv
        used = kv.num_used_blocks
        assert kv.num_gpu_blocks == self.num_blocks
        assert 0 <= used <= self.num_blocks
        # during the step the just-finished requests still held their blocks (no prefix
        # caching: ceil(computed / block_size) each, not shared)
        during = used + sum(-(-r.num_computed_tokens // self.block_size)
                            for r in out.requests if r.status == RequestStatus.FINISHED)
        if not self.prefix:
            assert during <= self.num_blocks
        self.max_used = max(self.max_used, used if self.prefix else during)
        for r in running:
            assert r.status == RequestStatus.RUNNING
            assert r.num_blocks == -(-r.num_computed_tokens // self.block_size), r
        if self.prefix:
            held = {b for r in running for b in r.block_ids}
            assert len(held) == used
            assert sum(len(r.block_ids) for r in running) == sum(r.num_blocks for r in running)
        else:
            assert sum(r.num_blocks for r in running) == used
        for r in sched.waiting:
            assert r.num_blocks == 0 and r.num_computed_tokens == 0
            assert r.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED)


def never_fits(config: simkit.Config, prompt: int, output: int) -> bool:
    """Spec 2.2 step 4, restated: can this request never complete on this replica?"""
    sc = config.scheduler
    positions = prompt + output - 1  # the last output token's KV is never written
    return (prompt + output > config.model.max_seq_len
            or -(-positions // sc.block_size) > config.num_gpu_blocks
            or (not sc.enable_chunked_prefill and prompt > sc.max_num_batched_tokens))


def latency_lower_bounds(config: simkit.Config, prompt: int, output: int,
                         num_cached: int) -> tuple[float, float]:
    """(TTFT, E2E − TTFT) lower bounds for one request: its own work, priced alone.

    Why these bound the simulated latencies (spec section 3): a step's FLOPs and bytes are
    sums over its requests, weights are read once per step, and every term of the step time
    is non-decreasing in them, so a step takes at least as long as the request's own share
    priced as a step of its own (``S(s, c)`` = roofline of s positions after c).
    *TTFT*: after its last admission the request computes positions ``c..p-1`` in chunks
    (c = prefix-cache hit, 0 without prefix caching), all after its arrival. Over the chunks,
    FLOPs add up exactly to those of one step computing ``p − c`` positions after c (the
    causal triangle splits exactly), the bytes add up to at least one weight read plus
    ``k·p`` (the last chunk alone reads and writes p positions of KV), communication and
    beta add up to at least one step's; and ``Σ max(a_i, b_i) >= max(Σ a_i, Σ b_i)``. So
    ``TTFT >= S(p − c, c)``; S decreases in c, so any c' >= c gives a valid bound. The hit
    c is at most ``num_cached_tokens`` (summed over admissions) and at most the full blocks
    of ``p − 1`` tokens, so c' = min of the two.
    *E2E − TTFT*: tokens 2..n come from n − 1 distinct later steps; the one emitting token m
    computes s >= 1 positions ending at position p + m − 2 (a decode, or the tail of a
    recompute after preemption), which costs at least ``S(1, p + m − 2)``.
    A 1-token output has no decode part; its TPOT is undefined.
    """
    bs = config.scheduler.block_size
    c = min(num_cached, (prompt - 1) // bs * bs) if config.scheduler.enable_prefix_caching \
        else 0
    ttft = roofline_step_time(config, prompt - c, c)
    decode = math.fsum(roofline_step_time(config, 1, prompt + m - 2)
                       for m in range(2, output + 1))
    return ttft, decode


def run_checked(scenario: Scenario) -> tuple[simkit.SimResult, Engine, StepChecker]:
    checker = StepChecker(scenario.config, scenario.plan)
    engine = Engine(scenario.config, plan=scenario.plan, mode="exact", on_step=checker)
    result = engine.run()
    return result, engine, checker


def check_result(scenario: Scenario, result: simkit.SimResult, engine: Engine,
                 checker: StepChecker) -> None:
    cfg, plan = scenario.config, scenario.plan
    n = len(plan)
    req = result.requests
    assert not result.partial and result.stop_reason is None
    # every request arrived and ended exactly once
    assert len(req) == n
    assert sorted(req["request_id"].tolist()) == list(range(n))
    req = req.set_index("request_id").sort_index()
    prompts, outputs = plan.num_prompt_tokens, plan.max_tokens
    expected_rejected = np.array([never_fits(cfg, int(p), int(o))
                                  for p, o in zip(prompts, outputs, strict=True)])
    status = req["status"].to_numpy()
    assert set(status) <= {"finished", "rejected"}
    assert np.array_equal(status == "rejected", expected_rejected)
    reasons = req["reject_reason"].to_numpy()
    for s, why in zip(status, reasons, strict=True):
        assert (isinstance(why, str) and why) if s == "rejected" else pd.isna(why)
    counts = result.summary.counts
    assert counts["arrived"] == n
    assert counts["finished"] == int((status == "finished").sum())
    assert counts["rejected"] == int(expected_rejected.sum())
    assert counts["unfinished"] == 0
    assert counts["steps"] == checker.num_steps == result.num_steps
    assert counts["preemptions"] == int(req["num_preemptions"].sum())
    if cfg.scheduler.enable_preemption_free:
        assert counts["preemptions"] == 0
    assert checker.finished == set(np.flatnonzero(status == "finished").tolist())
    # engine state at the end: nothing left, every block free
    assert engine.kv.num_used_blocks == 0
    assert not engine.scheduler.running and not engine.scheduler.waiting
    peak = result.summary.utilization["kv_cache_peak"]
    if cfg.scheduler.enable_prefix_caching:
        assert checker.max_used / cfg.num_gpu_blocks <= peak <= 1.0
    else:
        assert peak == checker.max_used / cfg.num_gpu_blocks
    # arrivals: as planned (open loop), or when a user's previous request ended (closed)
    arrival = req["arrival_time"].to_numpy()
    assert np.all(np.diff(arrival) >= 0), "requests arrive in send order"
    if plan.arrival_times is not None:
        assert np.array_equal(arrival, plan.arrival_times)
    else:
        # replay the client: the next request goes out when the first user becomes free
        # (its start time, or its previous request's end + think time; rejected at once)
        ends = np.where(status == "finished", req["finish_time"].to_numpy(), arrival)
        free_at = sorted(plan.user_start_times[:min(plan.num_users, n)].tolist())
        for i in range(n):
            t = heapq.heappop(free_at)
            assert arrival[i] == t, f"request {i} arrived at {arrival[i]}, not {t}"
            heapq.heappush(free_at, ends[i] + plan.think_time_secs)
    fin = req[status == "finished"]
    if len(fin) == 0:
        return
    # outputs and lifecycle order
    assert np.array_equal(fin["num_output_tokens"].to_numpy(), fin["max_tokens"].to_numpy())
    a, s, f, e = (fin[c].to_numpy() for c in ("arrival_time", "first_scheduled_time",
                                               "first_token_time", "finish_time"))
    assert np.all(a <= s) and np.all(s <= f) and np.all(f <= e)
    assert np.all(s < f), "a first token takes a step"
    assert e.max() <= checker.last_t1
    # latencies >= the request's own roofline work
    for rid, row in fin.iterrows():
        p, o = int(row["num_prompt_tokens"]), int(row["max_tokens"])
        ttft_min, decode_min = latency_lower_bounds(cfg, p, o, int(row["num_cached_tokens"]))
        ttft = row["first_token_time"] - row["arrival_time"]
        e2e = row["finish_time"] - row["arrival_time"]
        slack = REL * (1.0 + row["finish_time"])
        assert ttft >= ttft_min * (1 - REL) - slack, (rid, ttft, ttft_min)
        assert e2e >= (ttft_min + decode_min) * (1 - REL) - slack, (rid, e2e)
        if o > 1:
            tpot = row["tpot_ms"] / 1e3
            assert tpot >= decode_min / (o - 1) * (1 - REL) - slack, (rid, tpot)


def assert_same_results(a: simkit.SimResult, b: simkit.SimResult) -> None:
    pd.testing.assert_frame_equal(a.requests, b.requests, check_exact=True)
    pd.testing.assert_frame_equal(a.timeseries, b.timeseries, check_exact=True)
    assert a.summary.to_dict() == b.summary.to_dict()
    assert np.array_equal(a.itl_s, b.itl_s) and np.array_equal(a.itl_count, b.itl_count)


# ----------------------------------------------------------------------------- the tests
def _scenario(prompts: list[int], outputs: list[int], *, blocks: int, bs: int,
              sched: dict[str, Any] | None = None, hardware: dict[str, Any] | None = None,
              max_len: int = 512, **plan_kw: Any) -> Scenario:
    cfg = tiny_config(num_blocks=blocks, block_size=bs, max_seq_len=max_len,
                      scheduler={"block_size": bs, **(sched or {})}, hardware=hardware)
    if "arrivals" not in plan_kw and "num_users" not in plan_kw:
        plan_kw["arrivals"] = [0.0] * len(prompts)
    return Scenario(cfg, make_plan(prompts, outputs, block_size=bs, **plan_kw))


# Hand-picked corners, kept as regular examples: preemption storms in a 6-block cache, a
# prefix shared by a family of requests, a closed loop with think time, and rejections of
# every kind (too long for max_seq_len, for the cache, and for the budget without chunking).
PREEMPTION_STORM = _scenario([9, 7, 11, 5], [12, 9, 4, 15], blocks=6, bs=4,
                             sched={"max_num_batched_tokens": 16})
SHARED_PREFIX = _scenario([33, 35, 40, 17], [3, 5, 2, 6], blocks=30, bs=8,
                          sched={"enable_prefix_caching": True, "max_num_seqs": 2},
                          arrivals=[0.0, 0.005, 0.01, 0.02],
                          families=[(0, 4), (0, 4), (0, 3), (1, 2)])
CLOSED_THINK = _scenario([20, 3, 9, 14, 6], [5, 7, 1, 3, 8], blocks=12, bs=2,
                         sched={"policy": "sjf"}, num_users=2, user_starts=[0.0, 1e-3],
                         think=2e-3)
REJECTIONS = _scenario([60, 10, 4, 30], [1, 100, 2, 2], blocks=10, bs=4, max_len=64,
                       sched={"enable_chunked_prefill": False, "max_num_batched_tokens": 20})


@given(scenarios())
@settings(max_examples=examples(400))
@example(PREEMPTION_STORM)
@example(SHARED_PREFIX)
@example(CLOSED_THINK)
@example(REJECTIONS)
def test_invariants_hold_on_random_workloads(scenario: Scenario) -> None:
    result, engine, checker = run_checked(scenario)
    check_result(scenario, result, engine, checker)
    counts = result.summary.counts
    event(f"preemptions: {'yes' if counts['preemptions'] else 'no'}")
    event(f"rejections: {'yes' if counts['rejected'] else 'no'}")
    event(f"prefix hits: {'yes' if result.summary.prefix_cache['hit_tokens'] else 'no'}")
    event(f"steps: {'>= 100' if counts['steps'] >= 100 else '< 100'}")
    # same inputs, a fresh engine without the hook: identical results
    assert_same_results(result, simkit.simulate(scenario.config, plan=scenario.plan,
                                                mode="exact"))


def test_the_hand_picked_corners_exercise_what_they_claim() -> None:
    # guards the examples above against silently becoming trivial
    storm, _, _ = run_checked(PREEMPTION_STORM)
    # by hand: step 1 admits requests 0 and 1 (3 + 2 of the 6 blocks), request 2 cannot get
    # 3 blocks; by step 5 request 0 needs a 4th block, none is free: request 1 is preempted
    assert storm.summary.counts["preemptions"] >= 1
    assert storm.requests["num_preemptions"].iloc[1] >= 1
    shared, _, _ = run_checked(SHARED_PREFIX)
    # request 0 is done (~20 µs steps) before the others arrive, its blocks freed but still
    # hashed: request 1 hits its 4 family blocks ((35 - 1) // 8 = 4, 32 tokens), request 2
    # has 3 family blocks (24 tokens), request 3 is another family
    assert shared.requests["num_cached_tokens"].tolist() == [0, 32, 24, 0]
    rejected = run_checked(REJECTIONS)[0].requests
    assert rejected["status"].tolist() == ["rejected", "rejected", "finished", "rejected"]
    reasons = rejected["reject_reason"].tolist()
    assert "max_num_batched_tokens" in reasons[3]
    assert "needs 15 KV blocks" in reasons[0]  # ceil(60 / 4) blocks, the cache has 10
    assert "max_seq_len 64" in reasons[1]


@given(scenarios(max_requests=12, max_output=300))  # long decode stretches for fast mode
@settings(max_examples=examples(60))
@example(PREEMPTION_STORM)
@example(SHARED_PREFIX)
@example(CLOSED_THINK)
def test_fast_mode_equals_exact_mode(scenario: Scenario) -> None:
    fast = simkit.simulate(scenario.config, plan=scenario.plan, mode="fast")
    exact = simkit.simulate(scenario.config, plan=scenario.plan, mode="exact")
    for key in ("arrived", "finished", "rejected", "preemptions", "unfinished"):
        assert fast.summary.counts[key] == exact.summary.counts[key], key
    assert fast.requests["status"].tolist() == exact.requests["status"].tolist()
    assert fast.requests["num_output_tokens"].tolist() == \
        exact.requests["num_output_tokens"].tolist()
    for column in ("first_token_time", "finish_time"):
        np.testing.assert_allclose(fast.requests[column], exact.requests[column],
                                   rtol=REL, atol=0)


# --------------------------------------------------------------------- same seed, same run
@st.composite
def sampled_workloads(draw: Any) -> dict[str, Any]:
    pattern = draw(st.sampled_from(["poisson", "gamma", "uniform", "burst", "batched",
                                    "closed_loop"]))
    workload: dict[str, Any] = {
        "arrival_pattern": pattern,
        "num_requests": draw(st.integers(1, 20)),
        "seed": draw(st.integers(0, 2**32)),
        "input_len_dist": draw(st.sampled_from([
            {"type": "uniform", "min": 1, "max": 60},
            {"type": "lognormal", "mean": 3.0, "std_dev": 0.8},
            {"type": "normal", "mean": 20, "std_dev": 10}])),
        "output_len_dist": {"type": "uniform", "min": 1, "max": 30},
        "num_priority_levels": draw(st.integers(1, 3)),
    }
    if pattern == "closed_loop":
        workload.update(num_concurrent_users=draw(st.integers(1, 5)),
                        closed_loop_jitter_secs=draw(st.sampled_from([0.0, 0.01])))
    elif pattern != "batched":
        workload["arrival_rate"] = draw(st.sampled_from([10.0, 1000.0]))
    return workload


@given(sampled_workloads(), st.sampled_from(POLICIES), st.booleans())
@settings(max_examples=examples(30))
def test_the_same_seed_gives_identical_results(workload: dict[str, Any], policy: str,
                                               prefix: bool) -> None:
    cfg = tiny_config(num_blocks=24, block_size=4, workload=workload,
                      scheduler={"policy": policy, "enable_prefix_caching": prefix})
    first = simkit.simulate(cfg)
    again = simkit.simulate(simkit.config_from_dict(simkit.config_to_dict(cfg)))
    assert_same_results(first, again)


# ---------------------------------------------------------------------------- monotonicity
MONOTONE_TOLERANCE = 1.05  # scheduling anomalies of a few % are allowed, not worse


def _mean_e2e(cfg: simkit.Config, plan: simkit.RequestPlan) -> float:
    result = simkit.simulate(cfg, plan=plan, mode="exact")
    assert result.summary.counts["finished"] == len(plan)
    return float(result.requests["e2e_ms"].mean())


def _with(cfg: simkit.Config, **tables: dict[str, Any]) -> simkit.Config:
    data = simkit.config_to_dict(cfg)
    for name, changes in tables.items():
        data[name] = {**data[name], **changes}
    return simkit.config_from_dict(data)


@given(scenarios(closed_loop=True, allow_rejections=False, memory_bound=True),
       st.integers(1, 64))
@settings(max_examples=examples(150))
def test_a_bigger_kv_cache_never_makes_a_closed_loop_slower(scenario: Scenario,
                                                            extra_blocks: int) -> None:
    cfg = scenario.config
    bigger = _with(cfg, hardware={"kv_cache_capacity": cfg.kv_cache_capacity + extra_blocks
                                  * cfg.scheduler.block_size * cfg.kv_bytes_per_token})
    assert bigger.num_gpu_blocks == cfg.num_gpu_blocks + extra_blocks
    small, large = _mean_e2e(cfg, scenario.plan), _mean_e2e(bigger, scenario.plan)
    assert large <= small * MONOTONE_TOLERANCE, (small, large)


def test_a_bigger_kv_cache_can_slow_a_compute_bound_closed_loop() -> None:
    """The shrunk counterexample that restricted the property above to memory-bound steps.

    1 GFLOP/s makes every token cost 2 ms of compute (2·1e6 FLOP), so batching saves
    nothing. 3 users, 7 requests, 8-token blocks, 5 tokens per step. Both runs preempt
    request 6 at t ≈ 56 ms. With a 5th block, request 6's recompute joins the final decode
    step of requests 4 and 5 as a 3-token chunk: that step computes 5 tokens instead of 2,
    ~6 ms longer, so requests 4 and 5 finish ~6 ms later, while request 6 finishes at the
    same time (the same 9 recompute tokens, the same total work). Mean E2E over 7 requests:
    + 2 · 6 / 7 ≈ 1.71 ms (5.7 %). The chunked-prefill trade-off, not a bug: vLLM schedules
    the same way. Kept as a regular test so the anomaly stays documented.
    """
    def run(blocks: int) -> pd.DataFrame:
        sc = _scenario([1, 1, 1, 1, 1, 1, 2], [1, 1, 1, 1, 10, 10, 8], blocks=blocks, bs=8,
                       sched={"max_num_batched_tokens": 5, "max_num_seqs": 3},
                       hardware={"compute_flops": 1e9, "memory_bandwidth": 1e9},
                       max_len=10_000, num_users=3, user_starts=[0.0] * 3)
        return simkit.simulate(sc.config, plan=sc.plan, mode="exact").requests

    small, large = run(4), run(5)
    later = (large["e2e_ms"] - small["e2e_ms"]).to_numpy()
    assert later[4] == pytest.approx(6.0, rel=0.01) and later[5] == pytest.approx(6.0, rel=0.01)
    assert later[6] == pytest.approx(0.0, abs=1e-9)
    assert np.all(later[:4] == 0.0)
    assert large["e2e_ms"].mean() - small["e2e_ms"].mean() == pytest.approx(12 / 7, rel=0.01)


@given(scenarios(closed_loop=True, allow_rejections=False),
       st.sampled_from([1.0, 1.5, 4.0]), st.sampled_from([1.0, 2.0, 10.0]))
@settings(max_examples=examples(150))
def test_a_faster_gpu_never_makes_a_closed_loop_slower(scenario: Scenario, flops_x: float,
                                                       bandwidth_x: float) -> None:
    cfg = scenario.config
    hw = cfg.hardware
    faster = _with(cfg, hardware={"compute_flops": hw.compute_flops * flops_x,
                                  "memory_bandwidth": hw.memory_bandwidth * bandwidth_x})
    slow, fast = _mean_e2e(cfg, scenario.plan), _mean_e2e(faster, scenario.plan)
    assert fast <= slow * MONOTONE_TOLERANCE, (slow, fast)


def test_roofline_helper_matches_a_hand_calculation() -> None:
    # Tiny model, 10 positions after 6 cached, 1e12 FLOP/s, 1e11 B/s:
    # F = 2·10·1e6 + 4·2·4·16·10·(6 + 5.5) = 2e7 + 58,880 = 20,058,880 FLOP -> 20.05888 µs
    # B = 1e6·2 + 512·16 = 2,008,192 B -> 20.08192 µs (bandwidth-bound)
    cfg = tiny_config()
    assert roofline_step_time(cfg, 10, 6) == pytest.approx(20.08192e-6, rel=1e-12)
    # and the engine prices that step the same way
    perf = simkit.PerfModel.from_config(cfg)
    attn, kv = perf.attention_sums(10, 6)
    assert perf.step(10, attn, kv).time == pytest.approx(20.08192e-6, rel=1e-12)


def test_tiny_config_dict_round_trips() -> None:
    data = tiny_config_dict(num_blocks=7, block_size=8)
    assert simkit.config_from_dict(data).num_gpu_blocks == 7
