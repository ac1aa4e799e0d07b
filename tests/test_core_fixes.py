"""Regression tests for issues found while reviewing the core (each expected value by hand)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

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


# --------------------------------------------------------------------- found by a new-user trial
def _cli(*args: str, cwd: str = ".") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simkit.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_top_level_help_works() -> None:
    proc = _cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "validate" in proc.stdout and "sweep" in proc.stdout


def test_set_can_complete_a_config_file(tmp_path) -> None:
    # Llama-3.1-70B in BF16 (141 GB) does not fit one H100: the file alone is an error ...
    path = tmp_path / "big.toml"
    path.write_text('hardware = "h100-sxm"\nmodel = "llama-3.1-70b"\n[workload]\n'
                    'arrival_rate = 1.0\n', encoding="utf-8")
    with pytest.raises(simkit.ConfigError, match="an open loop needs a bound"):
        simkit.load_config(path)
    with pytest.raises(simkit.ConfigError, match="does not fit"):
        simkit.load_config(path, {"workload.duration_secs": 2.0})
    # ... but --set can give it the GPUs and the bound it lacks
    cfg = simkit.load_config(path, {"hardware.tp": 4, "hardware.interconnect_bandwidth": 450e9,
                                    "workload.duration_secs": 2.0})
    assert cfg.hardware.tp == 4 and cfg.workload.duration_secs == 2.0
    proc = _cli("run", str(path), "--no-progress", "--set", "hardware.tp=4",
                "--set", "workload.duration_secs=2")
    assert proc.returncode == 0, proc.stderr


def test_unused_distribution_parameters_are_errors() -> None:
    cfg = simkit.load_config("configs/config.toml")  # lognormal input lengths
    with pytest.raises(simkit.ConfigError, match="value = 50: not used by type = 'lognormal'"):
        simkit.with_overrides(cfg, {"workload.input_len_dist.value": 50})
    # switching the type starts from the new type's own parameters
    fixed = simkit.with_overrides(cfg, {"workload.input_len_dist.type": "fixed",
                                        "workload.input_len_dist.value": 50})
    assert fixed.workload.input_len_dist.value == 50


def test_huge_lengths_and_request_counts_are_config_errors() -> None:
    cfg = simkit.load_config("configs/config.toml")
    with pytest.raises(simkit.ConfigError, match=r"max = 1e\+30: must be an integer"):
        simkit.with_overrides(cfg, {"workload.input_len_dist": {
            "type": "uniform", "min": 1, "max": 1e30}})
    with pytest.raises(simkit.ConfigError, match="num_requests = 1000000000"):
        simkit.with_overrides(cfg, {"workload.num_requests": 10**9})


def test_tp_must_divide_the_attention_heads() -> None:
    cfg = simkit.load_config("configs/test_blog.toml")  # Llama-3-70B: 64 heads
    with pytest.raises(simkit.ConfigError, match="tp = 3: must divide the model's num_heads"):
        simkit.with_overrides(cfg, {"hardware.tp": 3})


def test_output_paths_are_checked_before_the_run(tmp_path) -> None:
    proc = _cli("run", "configs/test_blog.toml", "--no-progress",
                "--json", str(tmp_path / "missing" / "out.json"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("simkit: error: --json") and "Traceback" not in proc.stderr
    assert "Latency" not in proc.stdout  # nothing was simulated


def test_outputs_are_written_even_if_stdout_closes_early(tmp_path) -> None:
    out = tmp_path / "s.json"
    proc = subprocess.run(f"{sys.executable} -m simkit.cli run configs/test_blog.toml "
                          f"--no-progress --json {out} | head -2", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert json.loads(out.read_text())["counts"]["finished"] == 640
