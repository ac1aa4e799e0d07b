"""Sanity checks on the preset catalog data files (stdlib tomllib only; no simkit import)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

PRESETS = Path(__file__).resolve().parents[1] / "simkit" / "presets"
HARDWARE_PATH = PRESETS / "hardware.toml"
MODELS_PATH = PRESETS / "models.toml"

REQUIRED_HARDWARE = ["h100-sxm", "h200", "b200", "a100-80gb", "l40s", "mi300x"]
REQUIRED_MODELS = [
    "llama-3-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "qwen3-30b-a3b",
    "mixtral-8x7b",
]
HARDWARE_REQUIRED_KEYS = [
    "name",
    "flops_bf16",
    "memory_bandwidth",
    "memory_capacity",
    "interconnect_bandwidth",
]
FP8_HARDWARE = ["h100-sxm", "h200", "b200", "l40s", "mi300x"]
# FP8 dense must be 2x BF16 dense within 1%. Exception: the NVIDIA L40S datasheet itself lists
# BF16 362.05 TFLOPS and FP8 733 TFLOPS (ratio 2.025), so the catalog keeps the datasheet values
# and this one entry is allowed 1.5% (it is 1.23% off).
FP8_RATIO_TOLERANCE = {"l40s": 0.015}

# Published parameter counts (total, active) from the model cards / HF safetensors metadata.
PUBLISHED_TOTAL = {
    # meta-llama/Meta-Llama-3-70B (HF safetensors total)
    "llama-3-70b": 70_553_706_496,
    # meta-llama/Llama-3.1-8B (HF safetensors total)
    "llama-3.1-8b": 8_030_261_248,
    # meta-llama/Llama-3.1-70B (HF safetensors total; same architecture as Llama 3 70B)
    "llama-3.1-70b": 70_553_706_496,
    # meta-llama/Llama-3.1-405B (HF safetensors total, ~405.85B)
    "llama-3.1-405b": 405.85e9,
    # meta-llama/Llama-3.3-70B-Instruct (HF safetensors total)
    "llama-3.3-70b": 70_553_706_496,
    # Qwen/Qwen3-30B-A3B model card: "30.5B in total"
    "qwen3-30b-a3b": 30.5e9,
    # Qwen/Qwen3-235B-A22B model card: "235B in total"
    "qwen3-235b-a22b": 235e9,
    # mistralai/Mixtral-8x7B-v0.1, Mistral "Mixtral of experts" post: 46.7B total
    "mixtral-8x7b": 46.7e9,
}
PUBLISHED_ACTIVE = {
    # Qwen/Qwen3-30B-A3B model card: "3.3B activated" (computed 3.353B; Qwen truncates)
    "qwen3-30b-a3b": 3.3e9,
    # Qwen/Qwen3-235B-A22B model card: "22B activated"
    "qwen3-235b-a22b": 22e9,
    # Mistral "Mixtral of experts" post: 12.9B active parameters per token
    "mixtral-8x7b": 12.9e9,
}


def _load(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def hardware() -> dict:
    return _load(HARDWARE_PATH)


@pytest.fixture(scope="module")
def models() -> dict:
    return _load(MODELS_PATH)


def _is_moe(m: dict) -> bool:
    return "num_experts" in m


def _param_count(m: dict, *, active: bool = False) -> int:
    """Independent re-derivation of the parameter count from the architecture keys."""
    h = m["hidden_dim"]
    n_q = m["num_heads"]
    n_kv = m["num_kv_heads"]
    d = m["head_dim"]
    vocab = m["vocab_size"]
    embeddings = vocab * h * (1 if m["tie_word_embeddings"] else 2)
    attention = h * n_q * d + 2 * h * n_kv * d + n_q * d * h
    norms = 2 * h
    if m["name"].lower().startswith("qwen3"):
        norms += 2 * d  # q_norm and k_norm over head_dim
    if _is_moe(m):
        experts = m["experts_per_token"] if active else m["num_experts"]
        ffn = h * m["num_experts"] + experts * 3 * h * m["intermediate_dim"]
    else:
        ffn = 3 * h * m["intermediate_dim"]
    return embeddings + m["num_layers"] * (attention + norms + ffn) + h


@pytest.mark.parametrize("preset_id", REQUIRED_HARDWARE)
def test_required_hardware_present_with_keys(hardware: dict, preset_id: str) -> None:
    assert preset_id in hardware
    for key in HARDWARE_REQUIRED_KEYS:
        assert key in hardware[preset_id], f"{preset_id} missing {key}"


def test_every_hardware_entry_has_required_keys_and_sane_values(hardware: dict) -> None:
    for preset_id, hw in hardware.items():
        for key in HARDWARE_REQUIRED_KEYS:
            assert key in hw, f"{preset_id} missing {key}"
        assert isinstance(hw["name"], str) and hw["name"]
        assert 1e14 < hw["flops_bf16"] < 1e16, preset_id
        assert 5e11 < hw["memory_bandwidth"] < 2e13, preset_id
        assert 1e10 < hw["memory_capacity"] < 1e12, preset_id
        assert 1e10 < hw["interconnect_bandwidth"] < 5e12, preset_id
        if "interconnect_latency" in hw:
            assert 1e-7 < hw["interconnect_latency"] < 1e-3, preset_id
        if "price_per_gpu_hour" in hw:
            assert 0 < hw["price_per_gpu_hour"] < 100, preset_id


@pytest.mark.parametrize("preset_id", FP8_HARDWARE)
def test_fp8_dense_is_twice_bf16_dense(hardware: dict, preset_id: str) -> None:
    hw = hardware[preset_id]
    assert "flops_fp8" in hw
    tol = FP8_RATIO_TOLERANCE.get(preset_id, 0.01)
    assert hw["flops_fp8"] == pytest.approx(2 * hw["flops_bf16"], rel=tol)


def test_no_fp8_or_fp4_on_a100(hardware: dict) -> None:
    assert "flops_fp8" not in hardware["a100-80gb"]
    assert "flops_fp4" not in hardware["a100-80gb"]


def test_fp4_only_where_declared_and_twice_fp8(hardware: dict) -> None:
    for preset_id, hw in hardware.items():
        if "flops_fp4" in hw:
            assert hw["flops_fp4"] == pytest.approx(2 * hw["flops_fp8"], rel=0.01), preset_id
    assert "flops_fp4" in hardware["b200"]
    assert "flops_fp4" not in hardware["h100-sxm"]


@pytest.mark.parametrize("preset_id", REQUIRED_MODELS)
def test_required_models_present(models: dict, preset_id: str) -> None:
    # Ids containing dots must be quoted table headers (["llama-3.1-8b"]), otherwise TOML nests
    # them; a flat table with a name proves the header was quoted.
    assert preset_id in models
    assert isinstance(models[preset_id].get("name"), str), preset_id


def test_num_parameters_matches_architecture(models: dict) -> None:
    for preset_id, m in models.items():
        assert m["num_parameters"] == pytest.approx(_param_count(m), rel=0.005), preset_id
        if _is_moe(m):
            expected = _param_count(m, active=True)
            assert m["num_active_parameters"] == pytest.approx(expected, rel=0.005), preset_id


def test_num_parameters_matches_published(models: dict) -> None:
    for preset_id in REQUIRED_MODELS:
        assert preset_id in PUBLISHED_TOTAL, preset_id
    for preset_id, m in models.items():
        assert preset_id in PUBLISHED_TOTAL, f"add a published total for {preset_id}"
        published = PUBLISHED_TOTAL[preset_id]
        assert m["num_parameters"] == pytest.approx(published, rel=0.01), preset_id


def test_active_parameters_match_published(models: dict) -> None:
    # Published active counts are rounded to 2-3 significant figures (Qwen truncates 3.35B to
    # "3.3B"), so allow 2% here.
    for preset_id, published in PUBLISHED_ACTIVE.items():
        m = models[preset_id]
        assert m["num_active_parameters"] == pytest.approx(published, rel=0.02), preset_id


def test_llama_head_dim_times_heads_is_hidden(models: dict) -> None:
    llamas = [pid for pid in models if pid.startswith("llama")]
    assert llamas
    for preset_id in llamas:
        m = models[preset_id]
        assert m["num_heads"] * m["head_dim"] == m["hidden_dim"], preset_id


def test_qwen3_head_dim_is_explicit_128(models: dict) -> None:
    m = models["qwen3-30b-a3b"]
    assert m["head_dim"] == 128
    assert m["num_heads"] * m["head_dim"] != m["hidden_dim"]


def test_moe_invariants(models: dict) -> None:
    moes = [pid for pid, m in models.items() if _is_moe(m)]
    assert {"qwen3-30b-a3b", "mixtral-8x7b"} <= set(moes)
    for preset_id in moes:
        m = models[preset_id]
        assert 0 < m["experts_per_token"] < m["num_experts"], preset_id
        assert 0 < m["num_active_parameters"] < m["num_parameters"], preset_id


def test_dense_models_have_no_moe_keys(models: dict) -> None:
    for preset_id, m in models.items():
        if not _is_moe(m):
            assert "experts_per_token" not in m, preset_id
            assert "num_active_parameters" not in m, preset_id


def test_gqa_divides_heads(models: dict) -> None:
    for preset_id, m in models.items():
        assert m["num_heads"] % m["num_kv_heads"] == 0, preset_id


@pytest.mark.parametrize("path", [HARDWARE_PATH, MODELS_PATH], ids=lambda p: p.name)
def test_every_key_line_has_source_comment(path: Path) -> None:
    missing = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("["):
            continue
        if "# source:" not in line:
            missing.append(f"{path.name}:{lineno}: {line}")
    assert not missing, "key lines without '# source:' comment:\n" + "\n".join(missing)
