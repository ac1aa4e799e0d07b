"""Fast mode must make exactly the decisions of the exact step-by-step mode.

Expected values here come from an independent method: the exact mode runs every step through
the per-request scheduler; the fast mode keeps decoding requests in aggregate and prices
decode stretches with numpy. Both must give the same per-request first-token and finish times
(the issue allows 1e-9 relative; the implementations are built to be bit-identical, which is
asserted too) and the same counts on random configurations.
"""

from __future__ import annotations

import numpy as np
import pytest

import simkit

POLICIES = ["fcfs", "priority", "sjf", "lof", "sif", "lif", "stf", "ltf"]


def tiny_config(rng: np.random.Generator, **extra: object) -> simkit.Config:
    """A random small setup whose KV cache holds only a few requests (forces preemption)."""
    block_size = int(rng.choice([1, 4, 16]))
    kv_tokens = int(rng.integers(300, 3000))
    closed = bool(rng.integers(0, 2))
    workload: dict[str, object] = {
        "seed": int(rng.integers(0, 2**31)),
        "num_requests": int(rng.integers(20, 120)),
        "num_priority_levels": int(rng.integers(1, 4)),
        "input_len_dist": {"type": "uniform", "min": 1, "max": int(rng.integers(2, 200))},
        "output_len_dist": {"type": "uniform", "min": 1, "max": int(rng.integers(2, 200))},
    }
    if closed:
        workload.update(arrival_pattern="closed_loop",
                        num_concurrent_users=int(rng.integers(1, 24)),
                        think_time_secs=float(rng.choice([0.0, 0.05])))
    else:
        workload.update(arrival_pattern=str(rng.choice(["poisson", "gamma", "burst"])),
                        arrival_rate=float(rng.uniform(5, 200)), burstiness=0.5)
    data = {
        "hardware": {"name": "toy", "compute_flops": 1e14, "memory_bandwidth": 1e12,
                     "memory_capacity": 1e12, "bytes_per_param": 2,
                     # KV of kv_tokens tokens at 2·2·4·64·2 = 2048 B/token
                     "kv_cache_capacity": kv_tokens * 2048.0},
        "model": {"name": "toy", "num_parameters": 1e9, "num_layers": 2, "hidden_dim": 512,
                  "num_heads": 8, "num_kv_heads": 4, "max_seq_len": 4096},
        "scheduler": {"block_size": block_size,
                      "max_num_batched_tokens": int(rng.choice([64, 256, 2048])),
                      "max_num_seqs": int(rng.integers(1, 40)),
                      "policy": str(rng.choice(POLICIES)),
                      "enable_chunked_prefill": bool(rng.integers(0, 2)),
                      "long_prefill_token_threshold": int(rng.choice([0, 0, 32])),
                      "enable_preemption_free": bool(rng.integers(0, 4) == 0)},
        "workload": workload,
        "simulation": {"sample_interval_secs": float(rng.choice([0.01, 0.1, 1.0]))},
    }
    for key, value in extra.items():
        table, name = key.split(".")
        data[table][name] = value  # type: ignore[index]
    return simkit.config_from_dict(data)


def assert_same(config: simkit.Config) -> tuple[simkit.SimResult, simkit.SimResult]:
    exact = simkit.simulate(config, mode="exact")
    fast = simkit.simulate(config, mode="fast")
    assert fast.summary.counts == exact.summary.counts
    for col in ("first_scheduled_time", "first_token_time", "finish_time",
                "num_output_tokens", "num_preemptions", "num_cached_tokens"):
        a = exact.requests[col].to_numpy()
        b = fast.requests[col].to_numpy()
        np.testing.assert_array_equal(a, b, err_msg=col)
    assert fast.summary.itl_ms == exact.summary.itl_ms
    assert fast.summary.prefix_cache == exact.summary.prefix_cache
    for key in ("compute", "memory_bandwidth", "kv_cache_mean", "busy"):
        assert fast.summary.utilization[key] == pytest.approx(
            exact.summary.utilization[key], rel=1e-9)
    ts_a, ts_b = exact.timeseries, fast.timeseries
    assert len(ts_a) == len(ts_b)
    for col in ("running", "waiting", "prefill_tokens", "decode_tokens", "steps", "finished"):
        np.testing.assert_array_equal(ts_a[col].to_numpy(), ts_b[col].to_numpy(), err_msg=col)
    for col in ("kv_cache_utilization", "compute_utilization", "bandwidth_utilization"):
        np.testing.assert_allclose(ts_a[col].to_numpy(), ts_b[col].to_numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=col)
    return exact, fast


@pytest.mark.parametrize("seed", range(40))
def test_fast_equals_exact_on_random_tiny_configs(seed: int) -> None:
    assert_same(tiny_config(np.random.default_rng(seed)))


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_exact_with_prefix_caching(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    config = tiny_config(rng, **{"scheduler.enable_prefix_caching": True})
    n = 80
    prompts = rng.integers(16, 160, n)
    # requests share one of three system prompts of 64 tokens (4 blocks of 16)
    shared = rng.integers(0, 3, n)
    bs = config.scheduler.block_size
    hashes = []
    for i in range(n):
        blocks = int(prompts[i]) // bs
        prefix_blocks = 64 // bs
        hashes.append(tuple(
            hash(("sys", int(shared[i]), j)) if j < prefix_blocks else hash(("own", i, j))
            for j in range(blocks)))
    plan = simkit.RequestPlan(
        num_prompt_tokens=prompts, max_tokens=rng.integers(1, 120, n),
        priorities=np.zeros(n, dtype=np.int64),
        arrival_times=np.sort(rng.uniform(0, 2.0, n)), block_hashes=hashes)
    exact = simkit.simulate(config, plan=plan, mode="exact")
    fast = simkit.simulate(config, plan=plan, mode="fast")
    for col in ("first_token_time", "finish_time", "num_cached_tokens", "num_preemptions"):
        np.testing.assert_array_equal(exact.requests[col].to_numpy(),
                                      fast.requests[col].to_numpy(), err_msg=col)
    assert exact.summary.prefix_cache == fast.summary.prefix_cache


@pytest.mark.parametrize("path", ["test_blog.toml", "config.toml", "qwen3_moe.toml"])
def test_fast_equals_exact_on_shipped_configs(path: str) -> None:
    config = simkit.load_config(f"configs/{path}")
    config = simkit.with_overrides(config, {"workload.num_requests": 300})
    exact, fast = assert_same(config)
    assert exact.num_steps == fast.num_steps


def test_fast_equals_exact_on_a_trace_slice() -> None:
    config = simkit.with_overrides(simkit.load_config("configs/azure_conv.toml"),
                                   {"workload.trace_limit": 1500})
    assert_same(config)


def test_fast_mode_really_skips_work() -> None:
    """The decode stretches are priced in bulk: far fewer engine iterations than steps."""
    from simkit.engine import Engine

    config = simkit.load_config("configs/test_blog.toml")
    engine = Engine(config, mode="fast")
    calls = 0
    original = engine.scheduler.schedule

    def counting() -> object:
        nonlocal calls
        calls += 1
        return original()

    engine.scheduler.schedule = counting  # type: ignore[method-assign]
    result = engine.run()
    assert result.num_steps > 10 * calls
