"""Calibration terms, benchmark mirroring, replay and the ``simkit validate`` command.

Expected numbers come from hand calculation on tiny configs (written out in each test), from
the benchmark's documented harness (InferenceMAX flags in ``data/measured/points.csv``), or
from an independent path (a full simulation vs the replay of its recording).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simkit
from simkit.calibrate import nelder_mead, record
from simkit.cli import main
from simkit.perf import PerfModel
from simkit.validate import (
    REQUIRED_COLUMNS,
    Unmirrorable,
    check_points,
    group_experiments,
    hardware_preset_for,
    load_profile,
    mirror_config,
    model_preset_for,
)

ROOT = Path(__file__).resolve().parents[1]
INFERENCEMAX_NOTES = (
    "closed-loop: max_concurrency=conc, num_prompts=10*conc, random dataset, "
    "random_range_ratio=0.8 (lengths ~U[0.8L,L], mean ~0.9L), ignore_eos; median values over "
    "the run; vLLM flags (InferenceX 70b_fp8_h100_slurm.sh): max-num-batched-tokens 8192, "
    "max-num-seqs=conc, kv-cache-dtype fp8, async-scheduling, no prefix caching, "
    "gpu-memory-utilization 0.9, max-model-len 10240")


def tiny_config(**hardware: float) -> simkit.Config:
    """1e6 params × 2 B = 2e6 B of weights; KV 2·2 layers·4 heads·16·2 B = 512 B/token."""
    hw = {"name": "tiny", "compute_flops": 1e12, "memory_bandwidth": 1e9,
          "memory_capacity": 1e9, "gpu_memory_utilization": 0.5, "bytes_per_param": 2,
          **hardware}
    return simkit.config_from_dict({
        "hardware": hw,
        "model": {"name": "tiny", "num_parameters": 1e6, "num_layers": 2, "hidden_dim": 64,
                  "num_heads": 4, "num_kv_heads": 4, "head_dim": 16, "max_seq_len": 4096},
        "scheduler": {"block_size": 16},
        "workload": {"arrival_pattern": "batched", "num_requests": 4,
                     "input_len_dist": {"type": "fixed", "value": 32},
                     "output_len_dist": {"type": "fixed", "value": 8}},
    })


# ----------------------------------------------------------------------- physics terms
# One decode-like batch: T = 1 token, attn_work = 10 pairs, kv_tokens = 10.
# F = 2·T·1e6 + 4·L·H·d·attn = 2e6 + 4·2·4·16·10 = 2,005,120 FLOP → 2.00512e-6 s at 1e12.
# B = 2e6 + 512·10 = 2,005,120 B → 2.00512e-3 s at 1e9 B/s: memory-bound.
def test_defaults_are_the_pure_roofline() -> None:
    cost = PerfModel.from_config(tiny_config()).step(1, 10.0, 10.0, 3)
    assert cost.time == pytest.approx(2.00512e-3, rel=1e-12)
    assert cost.flops == pytest.approx(2_005_120, rel=1e-12)
    assert cost.bytes == pytest.approx(2_005_120, rel=1e-12)


def test_beta_adds_exactly_beta_per_step() -> None:
    cost = PerfModel.from_config(tiny_config(beta=0.001)).step(1, 10.0, 10.0, 3)
    assert cost.time == pytest.approx(2.00512e-3 + 0.001, rel=1e-12)


def test_per_seq_overhead_scales_with_the_batch() -> None:
    perf = PerfModel.from_config(tiny_config(per_seq_overhead=1e-4))
    assert perf.step(1, 10.0, 10.0, 3).time == pytest.approx(2.00512e-3 + 3e-4, rel=1e-12)
    assert perf.step(1, 10.0, 10.0, 7).time == pytest.approx(2.00512e-3 + 7e-4, rel=1e-12)


def test_attention_efficiency_prices_kv_reads_and_attention_flops() -> None:
    # KV bytes count double at 0.5: B' = 2e6 + 2·5120 = 2,010,240 B → 2.01024e-3 s.
    perf = PerfModel.from_config(tiny_config(attention_efficiency=0.5))
    cost = perf.step(1, 10.0, 10.0, 1)
    assert cost.time == pytest.approx(2.01024e-3, rel=1e-12)
    assert cost.bytes == pytest.approx(2_005_120, rel=1e-12)  # reported bytes stay physical
    # Compute-bound prefill at 5e11 FLOP/s, T = 1000, attn_work = 1000·1001/2 = 500,500 pairs,
    # 4·L·H·d = 4·2·4·16 = 512 FLOP per pair:
    # F  = 2e9 + 512·500,500       = 2,256,256,000 FLOP → 4.512512e-3 s (efficiency 1)
    # F' = 2e9 + 512·500,500 / 0.5 = 2,512,512,000 FLOP → 5.025024e-3 s
    # B' = 2e6 + 2·512·1000 = 3,024,000 B → 3.024e-3 s, so compute wins in both.
    slow = {"compute_flops": 5e11}
    plain = PerfModel.from_config(tiny_config(**slow)).step(1000, 500_500.0, 1000.0, 1)
    assert plain.time == pytest.approx(4.512512e-3, rel=1e-12)
    half = PerfModel.from_config(tiny_config(attention_efficiency=0.5, **slow))
    prefill = half.step(1000, 500_500.0, 1000.0, 1)
    assert prefill.time == pytest.approx(5.025024e-3, rel=1e-12)
    assert prefill.flops == pytest.approx(2_256_256_000, rel=1e-12)


def test_efficiencies_divide_the_peaks() -> None:
    perf = PerfModel.from_config(tiny_config(bandwidth_efficiency=0.8))
    assert perf.step(1, 10.0, 10.0, 1).time == pytest.approx(2.00512e-3 / 0.8, rel=1e-12)


def test_memory_reserve_reduces_the_kv_pool_by_hand() -> None:
    # usable = 1e9 · 0.5 = 5e8 B; weights 2e6 B; block = 16 tokens · 512 B = 8192 B.
    assert tiny_config().num_gpu_blocks == 60791  # floor(498e6 / 8192) = floor(60791.02)
    assert tiny_config(memory_reserve=1e8).num_gpu_blocks == 48583  # floor(398e6 / 8192)
    # per GPU: with tp = 2 the reserve is taken twice: (1e9 − 2e6 − 2e8) / 8192 = 97412.1
    two = tiny_config(memory_reserve=1e8, tp=2, interconnect_bandwidth=1e9)
    assert two.num_gpu_blocks == 97412


def test_memory_reserve_that_leaves_nothing_is_a_clear_error() -> None:
    with pytest.raises(simkit.ConfigError, match="memory_reserve"):
        tiny_config(memory_reserve=4.99e8)


@pytest.mark.parametrize("model", ["llama-3-70b", "qwen3-30b-a3b", "mixtral-8x7b"])
def test_step_and_step_arrays_are_bit_identical_with_every_term(model: str) -> None:
    cfg = simkit.config_from_dict({
        "hardware": {"preset": "h100-sxm", "tp": 2, "bytes_per_param": 1, "alpha": 1.1,
                     "beta": 0.004, "per_seq_overhead": 7e-5, "attention_efficiency": 0.37,
                     "compute_efficiency": 0.45, "bandwidth_efficiency": 0.83},
        "model": {"preset": model},
        "workload": {"arrival_pattern": "batched", "num_requests": 1},
    })
    perf = PerfModel.from_config(cfg)
    rng = np.random.default_rng(5)
    n = 400
    tokens = rng.integers(1, 9000, n)
    attn = rng.random(n) * 3e7
    kv = rng.random(n) * 4e5
    seqs = rng.integers(1, 257, n)
    times, flops, nbytes = perf.step_arrays(tokens, attn, kv, seqs)
    for i in range(n):
        cost = perf.step(int(tokens[i]), float(attn[i]), float(kv[i]), int(seqs[i]))
        assert (cost.time, cost.flops, cost.bytes) == (times[i], flops[i], nbytes[i])


# -------------------------------------------------------------------------- mirroring
def inferencemax_row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "source": "SemiAnalysis InferenceMAX (test)", "engine": "vLLM v0.10.2",
        "hardware": "H100", "num_gpus": 2, "tp": 2.0, "precision": "FP8",
        "model": "nvidia/Llama-3.3-70B-Instruct-FP8", "isl": 1024, "osl": 8192,
        "concurrency": 16, "request_rate": "inf", "metric": "tpot_median", "value": 22.3,
        "unit": "ms", "notes": INFERENCEMAX_NOTES}
    row.update(changes)
    return row


def one_experiment(**changes: object):
    frame = check_points(pd.DataFrame([inferencemax_row(**changes)]).astype(str))
    (exp,) = group_experiments(frame)
    return exp


def test_inferencemax_row_is_mirrored_field_by_field() -> None:
    cfg = mirror_config(one_experiment())
    wl, sc, hw = cfg.workload, cfg.scheduler, cfg.hardware
    assert wl.arrival_pattern == "closed_loop"
    assert wl.num_concurrent_users == 16
    assert wl.num_requests == 160  # num_prompts = 10 × conc
    assert (wl.input_len_dist.type, wl.input_len_dist.min, wl.input_len_dist.max) == \
        ("uniform", 819, 1024)  # int(0.8 · 1024) = 819
    assert (wl.output_len_dist.min, wl.output_len_dist.max) == (6553, 8192)  # int(6553.6)
    assert wl.think_time_secs == 0
    assert sc.max_num_seqs == 16
    assert sc.max_num_batched_tokens == 8192
    assert sc.enable_prefix_caching is False
    assert sc.enable_chunked_prefill is True
    assert hw.preset == "h100-sxm" and hw.tp == 2
    assert hw.bytes_per_param == 1 and hw.kv_element_bytes == 1  # FP8 weights + FP8 KV
    assert hw.gpu_memory_utilization == 0.9
    assert cfg.model.preset == "llama-3.3-70b" and cfg.model.max_seq_len == 10240


def test_kv_dtype_follows_the_flag() -> None:
    notes = INFERENCEMAX_NOTES.replace("kv-cache-dtype fp8, ", "")
    cfg = mirror_config(one_experiment(notes=notes))
    assert cfg.hardware.kv_element_bytes == 2  # vLLM "auto": BF16 activations


def test_trtllm_offline_row_is_a_batch_at_time_zero() -> None:
    exp = one_experiment(engine="TensorRT-LLM (PyTorch backend, v1.0 docs)",
                         hardware="H100 SXM 80GB", isl=1000, osl=1000,
                         concurrency="unbounded", metric="output_throughput",
                         unit="tok/s (total, 2 GPUs)",
                         notes="trtllm-bench throughput, all requests queued at once")
    cfg = mirror_config(exp)
    assert cfg.workload.arrival_pattern == "batched"
    assert cfg.workload.num_requests == 3000  # TensorRT-LLM perf-overview table, 1000/1000
    assert cfg.workload.input_len_dist.type == "fixed"
    assert cfg.workload.input_len_dist.value == 1000
    assert cfg.scheduler.enable_preemption_free is True  # GUARANTEED_NO_EVICT


@pytest.mark.parametrize(("changes", "reason"), [
    ({"isl": "ShareGPT", "osl": "ShareGPT"}, "dataset"),
    ({"model": "Llama-2-70B-chat"}, "no preset"),
    ({"tp": "nan"}, "tp"),
    ({"num_gpus": 8}, "replicas"),
    ({"concurrency": "open-loop", "request_rate": "4.0"}, "arrival"),
])
def test_unmirrorable_rows_say_why(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(Unmirrorable, match=reason):
        mirror_config(one_experiment(**changes))


@pytest.mark.parametrize(("name", "preset"), [
    ("H100", "h100-sxm"), ("H100 SXM 80GB", "h100-sxm"), ("A100 80GB", "a100-80gb"),
    ("H100 PCIe", "h100-pcie"), ("MI300X", "mi300x"), ("TPU v5e", None)])
def test_hardware_names_map_to_presets(name: str, preset: str | None) -> None:
    assert hardware_preset_for(name) == preset


@pytest.mark.parametrize(("name", "preset"), [
    ("nvidia/Llama-3.3-70B-Instruct-FP8", "llama-3.3-70b"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("meta-llama/Meta-Llama-3-70B", "llama-3-70b"),
    ("Llama-2-70B-chat (llama2-70b-99)", None)])
def test_model_names_map_to_presets(name: str, preset: str | None) -> None:
    assert model_preset_for(name) == preset


# ----------------------------------------------------------------------------- replay
def test_replay_of_a_recording_equals_a_new_simulation() -> None:
    exp = one_experiment(model="meta-llama/Llama-3.1-8B-Instruct", tp=1, num_gpus=1, isl=256,
                         osl=64, concurrency=6)
    cfg = mirror_config(exp)
    rec = record(cfg)
    calibrated = simkit.with_overrides(cfg, {"hardware.beta": 0.003,
                                             "hardware.per_seq_overhead": 2e-4,
                                             "hardware.attention_efficiency": 0.4})
    replayed = rec.replay(PerfModel.from_config(calibrated))
    simulated = simkit.simulate(calibrated).summary.to_dict()
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert replayed[key]["p50"] == pytest.approx(simulated[key]["p50"], rel=1e-12)
    assert replayed["throughput"]["total_tokens_per_s_per_gpu"] == pytest.approx(
        simulated["throughput"]["total_tokens_per_s_per_gpu"], rel=1e-12)


def test_nelder_mead_finds_a_known_minimum() -> None:
    x, f, _ = nelder_mead(lambda v: (v[0] - 1.5) ** 2 + 3 * (v[1] + 0.5) ** 2 + 2.0,
                          [0.0, 0.0], max_evals=500, tol=1e-14)
    assert x == pytest.approx([1.5, -0.5], abs=1e-4)
    assert f == pytest.approx(2.0, abs=1e-7)


# ----------------------------------------------------------------------------- profiles
def test_profile_rejects_tables_outside_hardware_and_scheduler(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[workload]\nseed = 3\n")
    with pytest.raises(simkit.ConfigError, match="not allowed"):
        load_profile(bad)


def test_client_latency_shifts_ttft_and_e2e_only() -> None:
    from simkit.validate import summary_value

    summary = {"ttft_ms": {"p50": 100.0, "mean": 120.0}, "tpot_ms": {"p50": 20.0},
               "e2e_ms": {"p50": 5000.0}, "throughput": {"total_tokens_per_s_per_gpu": 7.0}}
    assert summary_value(summary, "ttft_median", "ms", 1, 0.03) == pytest.approx(130.0)
    assert summary_value(summary, "ttft_mean", "ms", 1, 0.03) == pytest.approx(150.0)
    assert summary_value(summary, "e2e_latency_median", "s", 1, 0.03) == pytest.approx(5.03)
    assert summary_value(summary, "tpot_median", "ms", 1, 0.03) == 20.0
    assert summary_value(summary, "total_token_throughput_per_gpu", "tok/s", 1, 0.03) == 7.0


def test_profile_client_table_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[client]\nrequest_latency = -1\n")
    with pytest.raises(simkit.ConfigError, match="request_latency"):
        load_profile(bad)
    bad.write_text("[client]\nrtt = 0.01\n")
    with pytest.raises(simkit.ConfigError, match="valid keys: request_latency"):
        load_profile(bad)


def test_shipped_profile_loads_and_is_physical() -> None:
    from simkit.validate import client_latency, engine_overrides

    profile = load_profile(ROOT / "configs" / "engines" / "vllm-0.10.2.toml")
    assert 0 < client_latency(profile) < 0.2
    cfg = simkit.with_overrides(mirror_config(one_experiment()), engine_overrides(profile))
    hw = cfg.hardware
    assert 0 < hw.bandwidth_efficiency <= 1 and 0 < hw.compute_efficiency <= 1
    assert 0 < hw.attention_efficiency <= 1
    assert 0 < hw.beta < 0.05 and 0 <= hw.per_seq_overhead < 1e-3
    assert 0 <= hw.memory_reserve < hw.memory_capacity * hw.gpu_memory_utilization


# --------------------------------------------------------------------------------- CLI
def write_points(path: Path, rows: list[dict[str, object]]) -> None:
    pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS)).to_csv(path, index=False)


def test_validate_cli_compares_one_row_and_skips_another(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    small = inferencemax_row(model="meta-llama/Llama-3.1-8B-Instruct", tp=1, num_gpus=1,
                             isl=256, osl=32, concurrency=2, metric="tpot_median",
                             value=10.0, unit="ms")
    sharegpt = inferencemax_row(engine="SGLang v0.3.0", isl="ShareGPT", osl="ShareGPT",
                                concurrency="open-loop", request_rate=4.0,
                                metric="ttft_median", value=31.98)
    csv = tmp_path / "points.csv"
    write_points(csv, [small, sharegpt])
    out_json = tmp_path / "report.json"
    assert main(["validate", str(csv), "--json", str(out_json), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ShareGPT" in printed and "dataset" in printed
    report = json.loads(out_json.read_text())
    assert set(report["metrics"]) == {"tpot"}
    assert report["metrics"]["tpot"]["n"] == 1
    (row,) = report["rows"]
    # independent check: the same experiment simulated through the public API
    cfg = mirror_config(one_experiment(**{k: small[k] for k in
                                          ("model", "tp", "num_gpus", "isl", "osl",
                                           "concurrency")}))
    expected = simkit.simulate(cfg).summary.tpot_ms["p50"]
    assert row["predicted"] == pytest.approx(expected, rel=1e-12)
    assert row["pct_error"] == pytest.approx(100 * (expected - 10.0) / 10.0, rel=1e-9)
    assert report["metrics"]["tpot"]["median_abs_pct_error"] == pytest.approx(
        abs(row["pct_error"]), rel=1e-12)
    (skip,) = report["skipped"]
    assert "dataset" in skip["reason"] and skip["num_rows"] == 1


def test_validate_cli_bad_csv_exits_2_naming_the_columns(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "bad.csv"
    pd.DataFrame({"hardware": ["H100"], "value": [1.0]}).to_csv(csv, index=False)
    assert main(["validate", str(csv)]) == 2
    err = capsys.readouterr().err
    assert "missing columns" in err and "concurrency" in err and "Traceback" not in err


def test_validate_cli_missing_file_exits_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(tmp_path / "nope.csv")]) == 2
    assert "no such measurements file" in capsys.readouterr().err


def test_non_numeric_value_is_a_clear_error() -> None:
    frame = pd.DataFrame([inferencemax_row(value="fast")]).astype(str)
    with pytest.raises(simkit.TraceError, match="not a finite number"):
        check_points(frame)


def test_shipped_points_group_into_experiments() -> None:
    points = check_points(pd.read_csv(ROOT / "data" / "measured" / "points.csv", dtype=str,
                                      keep_default_na=False))
    experiments = group_experiments(points)
    assert sum(len(e.row_ids) for e in experiments) == len(points)
    # InferenceMAX: 3 shapes × 3 TP × 5 concurrencies, four metrics each
    imax = [e for e in experiments if e["engine"].startswith("vLLM v0.10.2")]
    assert len(imax) == 45 and all(len(e.metrics) == 4 for e in imax)
    assert math.isfinite(sum(v for e in imax for v, _ in e.metrics.values()))


@pytest.mark.slow
def test_shipped_profile_reproduces_the_kv_cliff_within_a_factor_2() -> None:
    """Measured (InferenceMAX, 8k/1k, 64 users): TTFT median 58.1 s at TP 2, 0.46 s at TP 4."""
    profile = load_profile(ROOT / "configs" / "engines" / "vllm-0.10.2.toml")
    notes = {"isl": 8192, "osl": 1024, "concurrency": 64, "metric": "ttft_median"}
    from simkit.validate import client_latency

    tp2 = simkit.simulate(mirror_config(one_experiment(**notes), profile))
    ttft2 = tp2.summary.ttft_ms["p50"] + 1e3 * client_latency(profile)
    assert 58128.3 / 2 <= ttft2 <= 58128.3 * 2
    assert tp2.summary.counts["preemptions"] > 0  # the pool really runs out
    tp4 = simkit.simulate(mirror_config(one_experiment(tp=4.0, num_gpus=4, **notes), profile))
    assert tp4.summary.ttft_ms["p50"] < 2 * 455.95  # gone with four GPUs' memory
    assert tp4.summary.counts["preemptions"] == 0


def test_calibration_recovers_known_parameters_from_synthetic_measurements() -> None:
    """Measurements made by simulating a known profile; the fit must find that profile again."""
    from simkit.calibrate import fit_profile
    from simkit.validate import summary_value

    truth = {"hardware.beta": 0.003, "hardware.per_seq_overhead": 1e-4,
             "hardware.bandwidth_efficiency": 0.7, "hardware.compute_efficiency": 0.4,
             "hardware.attention_efficiency": 0.5, "client.request_latency": 0.02}
    notes = ("closed loop, num_prompts=10*conc, random_range_ratio=0.8, "
             "max-num-batched-tokens 2048, kv-cache-dtype fp8")
    rows = []
    for isl, osl, conc in [(256, 64, 2), (256, 64, 16), (2048, 64, 4), (2048, 64, 16),
                           (128, 512, 8), (4096, 32, 2)]:
        for metric, unit in (("ttft_median", "ms"), ("tpot_median", "ms"),
                             ("e2e_latency_median", "s"), ("total_token_throughput_per_gpu",
                                                          "tok/s/gpu")):
            rows.append(inferencemax_row(model="meta-llama/Llama-3.1-8B-Instruct", tp=1,
                                         num_gpus=1, isl=isl, osl=osl, concurrency=conc,
                                         metric=metric, unit=unit, value=1.0, notes=notes))
    points = check_points(pd.DataFrame(rows).astype(str))
    for exp in group_experiments(points):
        summary = simkit.simulate(mirror_config(exp, truth)).summary.to_dict()
        for row_id, (metric, (_, unit)) in zip(exp.row_ids, exp.metrics.items(), strict=True):
            points.loc[row_id, "value"] = summary_value(summary, metric, unit, 1, 0.02)
    fit = fit_profile(points, np.ones(len(points), dtype=bool), reserve_grid=(0.0, 5e9),
                      log=lambda _: None)
    for key, value in truth.items():
        assert fit.params[key.split(".")[1]] == pytest.approx(value, rel=1e-3), key
    assert fit.loss < 1e-8


def test_calibrate_cli_writes_a_profile_that_validate_reads(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    rows = [inferencemax_row(model="meta-llama/Llama-3.1-8B-Instruct", tp=1, num_gpus=1,
                             isl=256, osl=32, concurrency=conc, metric=metric, unit="ms",
                             value=value)
            for conc, metric, value in ((2, "tpot_median", 9.0), (2, "ttft_median", 30.0),
                                        (8, "tpot_median", 11.0), (8, "ttft_median", 35.0))]
    csv = tmp_path / "points.csv"
    write_points(csv, rows)
    profile_path = tmp_path / "engine.toml"
    assert main(["calibrate", str(csv), "--train", "concurrency == '2'", "--max-evals", "60",
                 "--out", str(profile_path)]) == 0
    assert "held-out" in capsys.readouterr().out
    text = profile_path.read_text()
    assert "# held-out residuals" in text and "[hardware]" in text
    profile = load_profile(profile_path)
    assert set(profile) == {f"hardware.{k}" for k in (
        "bandwidth_efficiency", "compute_efficiency", "attention_efficiency", "beta",
        "per_seq_overhead", "memory_reserve")} | {"client.request_latency"}
    assert main(["validate", str(csv), "--engine", str(profile_path), "--quiet"]) == 0


def test_calibrate_cli_bad_expression_exits_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "points.csv"
    write_points(csv, [inferencemax_row()])
    assert main(["calibrate", str(csv), "--train", "no_such_column == 1"]) == 2
    assert "--train" in capsys.readouterr().err
