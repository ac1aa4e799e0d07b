"""Regression tests for issues found while reviewing the core (each expected value by hand)."""

from __future__ import annotations

import numpy as np

import simkit
from simkit.perf import PerfModel


def _seed_config() -> simkit.Config:
    return simkit.load_config("tests/data/seed_configs/config.toml")


def test_swapping_the_model_preset_takes_all_architecture_numbers_from_the_new_model() -> None:
    cfg = simkit.with_overrides(_seed_config(), {"model.preset": "llama-3.1-8b"})
    m = cfg.model
    # meta-llama/Llama-3.1-8B config.json: 32 layers, hidden 4096, intermediate 14336
    assert (m.num_layers, m.hidden_dim, m.intermediate_dim) == (32, 4096, 14336)
    assert m.num_parameters == 8_030_261_248
    assert m.max_seq_len == 8192  # the seed's serving length carries over


def test_swapping_the_gpu_preset_keeps_deployment_choices_only() -> None:
    base = simkit.load_config("configs/test_blog.toml")  # h100-sxm, tp=2, FP8
    cfg = simkit.with_overrides(base, {"hardware.preset": "h200"})
    hw = cfg.hardware
    assert hw.memory_bandwidth == 4.8e12 and hw.memory_capacity == 141e9  # H200 datasheet
    assert hw.tp == 2 and hw.bytes_per_param == 1
    seed = simkit.with_overrides(_seed_config(), {"hardware.preset": "h200", "hardware.tp": 2})
    # the seed's explicit H100 numbers (compute 1.513e15, 64 GiB KV) do not leak into the H200
    assert seed.hardware.compute_flops is None
    assert seed.hardware.kv_cache_capacity == 0
    assert seed.hardware.bytes_per_param == 2
    # 140 GB of BF16 weights do not fit one H200's 0.9 × 141 GB: a clear error, not old numbers
    try:
        simkit.with_overrides(_seed_config(), {"hardware.preset": "h200"})
    except simkit.ConfigError as exc:
        assert "model does not fit" in str(exc)
    else:
        raise AssertionError("expected a ConfigError")


def test_tied_embeddings_are_read_as_the_lm_head() -> None:
    data = {"hardware": {"compute_flops": 1e15, "memory_bandwidth": 1e12,
                         "memory_capacity": 1e12},
            "model": {"num_parameters": 1e9, "num_layers": 2, "hidden_dim": 1000,
                      "num_heads": 10, "max_seq_len": 100, "vocab_size": 1000},
            "workload": {"num_requests": 1, "arrival_rate": 1.0}}
    untied = PerfModel.from_config(simkit.config_from_dict(data))
    data["model"]["tie_word_embeddings"] = True
    tied = PerfModel.from_config(simkit.config_from_dict(data))
    # untied: the 1e6-parameter input table is a lookup (2 B each) -> 2e9 - 2e6 bytes read
    assert untied.dense_weight_bytes == 2 * (1e9 - 1e6)
    assert tied.dense_weight_bytes == 2 * 1e9


def test_a_step_ending_on_an_interval_boundary_counts_in_the_interval_it_closes() -> None:
    # one request of 1 prompt token and 2 output tokens; every step takes exactly 1 s (beta)
    data = {"hardware": {"compute_flops": 1e30, "memory_bandwidth": 1e30,
                         "memory_capacity": 1e12, "kv_cache_capacity": 1e9, "beta": 1.0},
            "model": {"num_parameters": 1e3, "num_layers": 1, "hidden_dim": 8,
                      "num_heads": 1, "max_seq_len": 100},
            "workload": {"arrival_pattern": "batched", "num_requests": 1,
                         "input_len_dist": {"type": "fixed", "value": 1},
                         "output_len_dist": {"type": "fixed", "value": 2}},
            "simulation": {"sample_interval_secs": 1.0}}
    for mode in ("exact", "fast"):
        result = simkit.simulate(simkit.config_from_dict(data), mode=mode)
        ts = result.timeseries
        # steps [0,1] and [1,2]: two rows, one step and one output token each, 1 s long
        assert len(ts) == 2
        np.testing.assert_array_equal(ts["steps"], [1, 1])
        np.testing.assert_array_equal(ts["interval_s"], [1.0, 1.0])
        np.testing.assert_array_equal(ts["output_tokens_per_s"], [1.0, 1.0])
        np.testing.assert_array_equal(ts["finished"], [0, 1])
