"""Configuration (spec section 1): validation messages, unknown keys, presets, seed configs,
derived sizes by hand, TOML round trip, dotted overrides.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

import simkit

SEED_DIR = Path(__file__).resolve().parent / "data" / "seed_configs"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def base() -> dict[str, Any]:
    return {
        "hardware": {"compute_flops": 1e15, "memory_bandwidth": 3e12, "memory_capacity": 80e9,
                     "bytes_per_param": 2},
        "model": {"num_parameters": 8e9, "num_layers": 32, "hidden_dim": 4096,
                  "num_heads": 32, "num_kv_heads": 8, "max_seq_len": 8192},
        "scheduler": {},
        "workload": {"arrival_pattern": "poisson", "arrival_rate": 2.0, "num_requests": 10},
        "simulation": {},
    }


def error_for(table: str, field: str, value: Any) -> str:
    """The ConfigError message for ``[table] field = value`` on an otherwise valid config."""
    data = base()
    data[table][field] = value
    with pytest.raises(simkit.ConfigError) as info:
        simkit.config_from_dict(data)
    return str(info.value)


# ------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("table, field, value, allowed", [
    ("hardware", "memory_bandwidth", -1, "> 0"),
    ("hardware", "memory_capacity", 0, "> 0"),
    ("hardware", "gpu_memory_utilization", 1.5, "<= 1"),
    ("hardware", "gpu_memory_utilization", 0, "> 0"),
    ("hardware", "tp", 1.5, "integer"),
    ("hardware", "bytes_per_param", "fp8", "number"),
    ("model", "num_layers", 0, "integer >= 1"),
    ("model", "hidden_dim", 10.5, "integer"),
    ("model", "num_kv_heads", 64, "<= num_heads = 32"),
    ("model", "num_parameters", -5, "> 0"),
    ("scheduler", "block_size", 0, "integer >= 1"),
    ("scheduler", "max_num_seqs", 0, "integer >= 1"),
    ("scheduler", "policy", "lifo", "fcfs"),
    ("scheduler", "enable_chunked_prefill", "yes", "true or false"),
    ("workload", "arrival_rate", -2, "> 0"),
    ("workload", "arrival_pattern", "poison", "poisson"),
    ("workload", "num_requests", 2.5, "integer"),
    ("simulation", "mode", "turbo", "fast, exact"),
    ("simulation", "max_sim_secs", -1, "> 0"),
])
def test_validation_error_names_table_field_value_and_range(
        table: str, field: str, value: Any, allowed: str) -> None:
    message = error_for(table, field, value)
    assert f"[{table}]" in message
    assert field in message
    assert (repr(value) if isinstance(value, str) else f"{value:g}") in message
    assert allowed in message


def test_length_distribution_errors_name_the_nested_table() -> None:
    data = base()
    data["workload"]["input_len_dist"] = {"type": "uniform", "min": 5, "max": 1}
    with pytest.raises(simkit.ConfigError, match=r"\[workload\.input_len_dist\] max = 1: "
                                                 r"must be >= min = 5"):
        simkit.config_from_dict(data)
    data["workload"]["input_len_dist"] = {"type": "fixed"}
    with pytest.raises(simkit.ConfigError, match=r"\[workload\.input_len_dist\] value.*"
                                                 r"required for type = 'fixed'"):
        simkit.config_from_dict(data)
    data["workload"]["input_len_dist"] = {"type": "zipf", "value": 3}
    with pytest.raises(simkit.ConfigError, match="fixed, uniform, normal, lognormal"):
        simkit.config_from_dict(data)


@pytest.mark.parametrize("table", ["config", "hardware", "model", "scheduler", "workload",
                                   "simulation", "workload.output_len_dist"])
def test_unknown_keys_list_the_valid_ones(table: str) -> None:
    data = base()
    if table == "config":
        data["hardwear"] = {}
        valid = "hardware, model, scheduler, workload, simulation"
    elif table == "workload.output_len_dist":
        data["workload"]["output_len_dist"] = {"type": "fixed", "value": 3, "vlaue": 4}
        valid = "type, value, min, max, mean, std_dev, path"
    else:
        data[table]["bogus_key"] = 1
        valid = ", ".join(f.name for f in dataclasses.fields(
            getattr(simkit, {"hardware": "HardwareConfig", "model": "ModelConfig",
                             "scheduler": "SchedulerConfig", "workload": "WorkloadConfig",
                             "simulation": "SimulationConfig"}[table])))
    with pytest.raises(simkit.ConfigError) as info:
        simkit.config_from_dict(data)
    message = str(info.value)
    assert f"[{table}] unknown key" in message
    assert valid in message


def test_missing_table_and_missing_required_key() -> None:
    data = base()
    del data["model"]
    with pytest.raises(simkit.ConfigError, match=r"\[model\] table is missing"):
        simkit.config_from_dict(data)
    data = base()
    del data["hardware"]["memory_bandwidth"]
    with pytest.raises(simkit.ConfigError, match=r"\[hardware\].*memory_bandwidth"):
        simkit.config_from_dict(data)


def test_configs_are_frozen() -> None:
    cfg = simkit.config_from_dict(base())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hardware.tp = 2  # type: ignore[misc]


# ----------------------------------------------------------------------------------- presets
def test_preset_by_name_string_form() -> None:
    data = base()
    data["hardware"] = "h100-sxm"
    data["model"] = "llama-3-70b"
    data["workload"]["num_requests"] = 1
    with pytest.raises(simkit.ConfigError, match="model does not fit"):
        simkit.config_from_dict(data)  # 141 GB of BF16 weights on one 80 GB GPU
    data["model"] = "llama-3.1-8b"
    cfg = simkit.config_from_dict(data)
    assert cfg.hardware.preset == "h100-sxm"
    assert cfg.hardware.memory_bandwidth == 3.35e12
    assert cfg.hardware.memory_capacity == 80e9
    assert cfg.hardware.tp == 1
    assert cfg.model.num_layers == 32
    assert cfg.model.hidden_dim == 4096
    # BF16 by default: the BF16 dense peak
    assert cfg.hardware.total_flops == pytest.approx(989.4e12)


def test_preset_table_with_overrides() -> None:
    data = base()
    data["hardware"] = {"preset": "h100-sxm", "tp": 2, "bytes_per_param": 1}
    data["model"] = {"preset": "llama-3-70b", "max_seq_len": 4096}
    cfg = simkit.config_from_dict(data)
    hw = cfg.hardware
    assert hw.tp == 2
    assert hw.total_flops == pytest.approx(2 * 1978.9e12)  # FP8 peak x tp
    assert hw.total_memory_bandwidth == pytest.approx(2 * 3.35e12)
    assert hw.total_memory_capacity == pytest.approx(160e9)
    assert cfg.model.max_seq_len == 4096
    assert cfg.model.num_layers == 80


def test_unknown_preset_lists_the_known_ones() -> None:
    data = base()
    data["hardware"] = "h100-sxn"
    with pytest.raises(simkit.ConfigError) as info:
        simkit.config_from_dict(data)
    assert "h100-sxn" in str(info.value)
    for known in ("h100-sxm", "h200", "b200", "a100-80gb", "l40s", "mi300x"):
        assert known in str(info.value)


# ------------------------------------------------------------------------- seed configs
@pytest.mark.parametrize("name, blocks", [
    # kv_cache_capacity 64 GiB / (16 x 2*80*8*128*2 B)
    ("config.toml", 68719476736 // (16 * 327680)),
    # (80 GiB x 0.9 - 70e9 B FP8 weights) / (16 x 163,840 B)
    ("quick_test.toml", math.floor((85899345920 * 0.9 - 70e9) / (16 * 163840))),
    # 64 GiB / (16 x 2*48*4*64*2 B)
    ("qwen3_30b_a3b.toml", 68719476736 // (16 * 49152)),
    # (160 GiB x 0.9 - 70e9) / (16 x 163,840)
    ("test_blog.toml", math.floor((171798691840 * 0.9 - 70e9) / (16 * 163840))),
])
def test_seed_configs_load_unchanged(name: str, blocks: int) -> None:
    cfg = simkit.load_config(SEED_DIR / name)
    assert cfg.num_gpu_blocks == blocks
    assert cfg.simulation.log_interval in (5, 10)


# ------------------------------------------------------------------------- derived values
def test_kv_bytes_per_token_llama_3_70b() -> None:
    data = base()
    data["hardware"] = {"preset": "h100-sxm", "tp": 2, "bytes_per_param": 1}
    data["model"] = "llama-3-70b"
    fp8 = simkit.config_from_dict(data)
    assert fp8.kv_bytes_per_token == 163_840  # 2 x 80 x 8 x 128 x 1
    data["hardware"] = {"preset": "h100-sxm", "tp": 4, "bytes_per_param": 2}
    bf16 = simkit.config_from_dict(data)
    assert bf16.kv_bytes_per_token == 327_680
    # FP8 weights with a BF16 KV cache
    data["hardware"] = {"preset": "h100-sxm", "tp": 2, "bytes_per_param": 1,
                        "kv_bytes_per_element": 2}
    assert simkit.config_from_dict(data).kv_bytes_per_token == 327_680


def test_num_gpu_blocks_by_hand() -> None:
    cfg = simkit.load_config(CONFIGS / "test_blog.toml")
    # 2 x 80e9 B x 0.9 - 70,553,706,496 B of FP8 weights = 73,446,293,504 B of KV cache
    capacity = 2 * 80e9 * 0.9 - 70_553_706_496
    assert cfg.kv_cache_capacity == pytest.approx(capacity)
    assert cfg.num_gpu_blocks == 28_017  # floor(73,446,293,504 / (16 x 163,840))
    assert cfg.num_gpu_blocks == math.floor(capacity / (16 * 163_840))


def test_model_does_not_fit() -> None:
    data = base()
    data["hardware"] = "h100-sxm"
    data["model"] = "llama-3.1-405b"
    with pytest.raises(simkit.ConfigError) as info:
        simkit.config_from_dict(data)
    message = str(info.value)
    assert message.startswith("model does not fit")
    # 405.85e9 params x 2 B = 811.7 GB needed; 80 GB x 0.9 = 72.0 GB available
    assert re.search(r"needs 811\.7 GB.*has 72\.0 GB", message)
    assert info.value.table == "hardware"


def test_kv_cache_too_small_for_one_block() -> None:
    data = base()
    data["hardware"]["kv_cache_capacity"] = 1000  # one 16-token block needs 16 x 131072 B
    with pytest.raises(simkit.ConfigError, match="KV cache too small"):
        simkit.config_from_dict(data)


# ------------------------------------------------------------------- open / closed loops
def test_closed_loop_needs_users_and_open_loop_needs_a_bound() -> None:
    data = base()
    data["workload"] = {"arrival_pattern": "closed_loop", "num_requests": 5}
    with pytest.raises(simkit.ConfigError, match=r"\[workload\] num_concurrent_users"):
        simkit.config_from_dict(data)
    data["workload"] = {"arrival_pattern": "poisson", "arrival_rate": 3.0}
    with pytest.raises(simkit.ConfigError, match=r"\[workload\] num_requests.*bound"):
        simkit.config_from_dict(data)
    data["workload"]["duration_secs"] = 10.0  # a duration is a bound too
    assert simkit.config_from_dict(data).workload.duration_secs == 10.0


# ------------------------------------------------------------------------ TOML round trip
@pytest.mark.parametrize("path", [
    CONFIGS / "test_blog.toml", CONFIGS / "config.toml", CONFIGS / "qwen3_moe.toml",
    SEED_DIR / "config.toml", SEED_DIR / "qwen3_30b_a3b.toml",
], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_toml_round_trip(path: Path, tmp_path: Path) -> None:
    cfg = simkit.load_config(path)
    out = tmp_path / "saved.toml"
    simkit.save_config(cfg, out)
    again = simkit.load_config(out)
    assert again == cfg
    assert simkit.config_to_dict(again) == simkit.config_to_dict(cfg)


def test_round_trip_keeps_trace_paths(tmp_path: Path) -> None:
    cfg = simkit.load_config(CONFIGS / "azure_conv.toml")
    assert Path(cfg.workload.trace_path).is_absolute()
    out = tmp_path / "sub" / "saved.toml"
    out.parent.mkdir()
    simkit.save_config(cfg, out)
    assert simkit.load_config(out) == cfg


# ----------------------------------------------------------------------------- overrides
def test_with_overrides_dotted_names() -> None:
    cfg = simkit.load_config(CONFIGS / "test_blog.toml")
    new = simkit.with_overrides(cfg, {"hardware.tp": 4, "workload.input_len_dist.value": 2048,
                                      "scheduler.policy": "sjf"})
    assert new.hardware.tp == 4
    assert new.workload.input_len_dist.value == 2048
    assert new.scheduler.policy == "sjf"
    assert cfg.hardware.tp == 2  # the original is untouched
    # everything else equal
    assert new.model == cfg.model
    assert new.workload.output_len_dist == cfg.workload.output_len_dist


def test_with_overrides_revalidates() -> None:
    cfg = simkit.load_config(CONFIGS / "test_blog.toml")
    with pytest.raises(simkit.ConfigError, match=r"\[hardware\] tp = 0"):
        simkit.with_overrides(cfg, {"hardware.tp": 0})
    with pytest.raises(simkit.ConfigError, match=r"unknown key 'tpp'"):
        simkit.with_overrides(cfg, {"hardware.tpp": 2})
    with pytest.raises(simkit.ConfigError, match="table one of"):
        simkit.with_overrides(cfg, {"gpu.tp": 2})
    with pytest.raises(simkit.ConfigError, match="model does not fit"):
        simkit.with_overrides(cfg, {"hardware.tp": 1, "hardware.bytes_per_param": 2})


def test_preset_swap_keeps_user_set_fields() -> None:
    cfg = simkit.load_config(CONFIGS / "test_blog.toml")  # h100-sxm, tp 2, FP8, util 0.9
    h200 = simkit.with_overrides(cfg, {"hardware.preset": "h200"})
    preset = simkit.hardware_presets()["h200"]
    assert h200.hardware.preset == "h200"
    assert h200.hardware.name == preset["name"]
    assert h200.hardware.memory_capacity == preset["memory_capacity"]
    assert h200.hardware.memory_bandwidth == preset["memory_bandwidth"]
    assert h200.hardware.tp == 2
    assert h200.hardware.bytes_per_param == 1
    small = simkit.with_overrides(cfg, {"model.preset": "llama-3.1-8b"})
    assert small.model.num_layers == 32
    assert small.model.preset == "llama-3.1-8b"
    assert small.hardware == cfg.hardware
    # a field the user set on the model survives a model swap
    short = simkit.with_overrides(cfg, {"model.max_seq_len": 2048})
    swapped = simkit.with_overrides(short, {"model.preset": "llama-3.1-8b"})
    assert swapped.model.max_seq_len == 2048
    assert swapped.model.num_layers == 32
