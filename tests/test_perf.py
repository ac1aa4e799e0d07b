"""The roofline step-time model (spec section 3) against hand calculations.

The spec's cross-check ("inference arithmetic" for H100 TP=2 FP8, Llama-3-70B with 69.35 B
non-embedding parameters) is rebuilt from a custom model with exactly 69.35e9 parameters and
no vocabulary (so nothing is subtracted as embedding), on the seed's doubled-spec "one GPU"
(tp = 1) and on a real tp = 2 group whose interconnect is free (latency 0, 1e30 B/s).
"""

from __future__ import annotations

import math

import pytest
from _tiny import col, plan, run

import simkit

N = 69.35e9  # non-embedding parameters = weight bytes at FP8
L, H, D, KVH, HIDDEN = 80, 64, 128, 8, 8192
FLOPS = 3.958e15  # 2 x 1979 TFLOP/s FP8 dense
BW = 6.7e12  # 2 x 3.35 TB/s
KV = 2 * L * KVH * D * 1  # 163,840 B per token at FP8
ATTN = 4 * L * H * D  # FLOPs per query-key pair (QK^T and AV, 2 FLOPs per MAC)

MODEL = {"name": "llama-3-70b-nonembed", "num_parameters": N, "num_layers": L,
         "hidden_dim": HIDDEN, "num_heads": H, "num_kv_heads": KVH, "head_dim": D,
         "max_seq_len": 8192}
WORKLOAD = {"arrival_pattern": "batched", "num_requests": 1}


def blog_config(tp: int = 1, **hardware: float) -> simkit.Config:
    if tp == 1:
        hw = {"name": "H100 TP=2 as one", "compute_flops": FLOPS, "memory_bandwidth": BW,
              "memory_capacity": 171798691840, "bytes_per_param": 1}
    else:
        hw = {"name": "H100", "flops_fp8": FLOPS / 2, "memory_bandwidth": BW / 2,
              "memory_capacity": 171798691840 / 2, "bytes_per_param": 1, "tp": 2,
              "interconnect_bandwidth": 1e30, "interconnect_latency": 0.0}
    hw.update(hardware)
    return simkit.config_from_dict({"hardware": hw, "model": MODEL, "workload": WORKLOAD,
                                    "scheduler": {"max_num_batched_tokens": 8192}})


@pytest.fixture(params=[1, 2], ids=["tp1-doubled", "tp2-free-link"])
def perf(request: pytest.FixtureRequest) -> simkit.PerfModel:
    return simkit.PerfModel.from_config(blog_config(request.param))


def test_kv_bytes_per_token() -> None:
    assert blog_config().kv_bytes_per_token == 163_840


def test_decode_step_at_64_users_context_1536(perf: simkit.PerfModel) -> None:
    # 64 requests each reading 1535 cached + writing 1 new position: 1536 KV entries each.
    cost = perf.step(64, 64 * 1536, 64 * 1536)
    assert cost.bytes == pytest.approx(N + 64 * 1536 * KV)
    assert round(cost.bytes / 1e9, 2) == 85.46  # spec: 85.46 GB per step
    assert cost.time == pytest.approx(cost.bytes / BW, rel=1e-12)  # memory-bound
    assert round(cost.time * 1e3, 3) == 12.755  # spec: 12.755 ms
    # compute is far below: 2*64*N + ATTN * 64*1536 FLOPs
    assert cost.flops == pytest.approx(2 * 64 * N + ATTN * 64 * 1536)
    assert cost.flops / FLOPS < cost.time / 4
    # spec: ~2,509 output tok/s per GPU (64 tokens per step, 2 GPUs)
    assert 64 / cost.time / 2 == pytest.approx(2509, abs=1)


def test_compute_bound_threshold_is_295_tokens(perf: simkit.PerfModel) -> None:
    # 2*T*N / FLOPS = W / BW with W = N bytes at FP8  ->  T* = FLOPS / (2 * BW) = 295.4
    threshold = FLOPS / (2 * BW)
    assert round(threshold) == 295
    weights_time = N / BW
    below = perf.step(295, 0, 0)
    above = perf.step(296, 0, 0)
    assert below.time == pytest.approx(weights_time, rel=1e-12)  # still memory-bound
    assert above.time == pytest.approx(2 * 296 * N / FLOPS, rel=1e-12)  # now compute-bound
    assert above.time > weights_time


def test_prefill_1024_tokens(perf: simkit.PerfModel) -> None:
    # Causal: 2*1024*N + ATTN * 1024*1025/2 FLOPs
    #   = 1.42029e14 + 1.37573e12 = 1.43404e14 FLOPs -> 36.23 ms (compute-bound).
    s = 1024
    attn_work, kv_tokens = perf.attention_sums(s, 0)
    assert attn_work == s * (s + 1) / 2
    assert kv_tokens == s
    cost = perf.step(s, attn_work, kv_tokens)
    linear = 2 * s * N / FLOPS
    causal = ATTN * s * (s + 1) / 2 / FLOPS
    assert round(linear * 1e3, 2) == 35.88
    assert round(causal * 1e3, 3) == 0.348
    assert cost.time == pytest.approx(linear + causal, rel=1e-12)
    assert round(cost.time * 1e3, 2) == 36.23
    # The spec's 36.58 ms counts attention as a full s x s rectangle (4*L*H*d*s^2 FLOPs,
    # 0.695 ms): 35.88 + 0.69 = 36.58. simkit's causal triangle is half of that (defect 7).
    rectangle = ATTN * s * s / FLOPS
    assert round((linear + rectangle) * 1e3, 2) == 36.58
    assert cost.time == pytest.approx(36.58e-3 - rectangle / 2, rel=1e-3)


def test_prefill_1024_tokens_end_to_end() -> None:
    # One request, prompt 1024, one output: TTFT = E2E = the single prefill step.
    expected = (2 * 1024 * N + ATTN * 1024 * 1025 / 2) / FLOPS
    for tp in (1, 2):
        result = run(blog_config(tp), plan([1024], [1]))
        assert col(result, "ttft_ms") == [pytest.approx(expected * 1e3, rel=1e-9)]


def test_causal_attention_is_a_triangle(perf: simkit.PerfModel) -> None:
    # Token j (1..s) of a chunk on top of c cached positions attends to c + j positions.
    for s, c in ((1, 0), (7, 0), (5, 3), (1, 1535)):
        attn, kv = perf.attention_sums(s, c)
        assert attn == sum(c + j for j in range(1, s + 1))
        assert kv == c + s
    # half the rectangle (plus the diagonal): s(s+1)/2 pairs, not s^2
    attn, _ = perf.attention_sums(1000, 0)
    assert attn == 500_500
    # chunking does not change the total work
    a1, _ = perf.attention_sums(600, 0)
    a2, _ = perf.attention_sums(400, 600)
    assert a1 + a2 == attn
    flops = perf.step(1000, attn, 1000).flops - 2 * 1000 * N
    assert flops == pytest.approx(4 * L * H * D * 1000 * 1001 / 2)


# ------------------------------------------------------------------------------------- MoE
def moe_config(num_experts: int, k: int) -> simkit.Config:
    # 2 layers, hidden 1000, expert width 500: one expert = 3 * 1000 * 500 = 1.5e6 params;
    # 8e6 non-expert params; BF16.
    expert = 3 * 1000 * 500
    model = {"name": "moe", "num_parameters": 8e6 + 2 * num_experts * expert,
             "num_active_parameters": 8e6 + 2 * k * expert, "num_layers": 2,
             "hidden_dim": 1000, "num_heads": 10, "intermediate_dim": 500,
             "num_experts": num_experts, "experts_per_token": k, "max_seq_len": 4096}
    hw = {"compute_flops": 1e15, "memory_bandwidth": 1e12, "memory_capacity": 80e9,
          "bytes_per_param": 2}
    return simkit.config_from_dict({"hardware": hw, "model": model, "workload": WORKLOAD})


def test_moe_single_token_reads_its_experts_only() -> None:
    expert_bytes = 3 * 1000 * 500 * 2
    dense_bytes = 8e6 * 2
    # k = 1: one token touches exactly one expert per layer: E(1 - (1 - 1/E)^1) = 1
    perf = simkit.PerfModel.from_config(moe_config(64, 1))
    assert perf.step(1, 0, 0).bytes == pytest.approx(dense_bytes + 2 * 1 * expert_bytes)
    # k = 8 of 128: the spec's expectation E(1 - (1 - 1/E)^8) = 7.78, about k
    perf = simkit.PerfModel.from_config(moe_config(128, 8))
    touched = 128 * (1 - (127 / 128) ** 8)
    assert 7.7 < touched < 8
    assert perf.step(1, 0, 0).bytes == pytest.approx(dense_bytes + 2 * touched * expert_bytes)
    # T tokens: E(1 - (1 - 1/E)^(T k))
    for t in (2, 16, 100):
        touched = 128 * (1 - (127 / 128) ** (8 * t))
        assert perf.step(t, 0, 0).bytes == pytest.approx(dense_bytes
                                                         + 2 * touched * expert_bytes)
    # a huge batch reads every expert = all weights
    assert perf.step(10**6, 0, 0).bytes == pytest.approx(dense_bytes + 2 * 128 * expert_bytes)
    # compute uses active parameters only
    assert perf.step(1, 0, 0).flops == pytest.approx(2 * (8e6 + 2 * 8 * 1.5e6))


def test_moe_without_expert_sizes_reads_active_weights_per_token() -> None:
    # The seed's Qwen3 config gives only total (30.5e9) and active (3.34e9) counts, BF16.
    # simkit's documented fallback: min(T x active, all) weight bytes.
    cfg = simkit.load_config(_seed("qwen3_30b_a3b.toml"))
    perf = simkit.PerfModel.from_config(cfg)
    assert perf.step(1, 0, 0).bytes == pytest.approx(3.34e9 * 2)
    assert perf.step(5, 0, 0).bytes == pytest.approx(5 * 3.34e9 * 2)
    assert perf.step(100, 0, 0).bytes == pytest.approx(30.5e9 * 2)


# ------------------------------------------------------------------------ TP, alpha, beta
def test_tensor_parallel_all_reduce_time() -> None:
    # 2 all-reduces per layer of T * hidden * 2 bytes, each latency + 2(tp-1)/tp * V / link.
    # tp = 2, link 450 GB/s, 8 us, T = 64: V = 1,048,576 B -> 8e-6 + 2.3302e-6 s each,
    # x 160 = 1.65283 ms on top of the roofline.
    cfg = blog_config(2, interconnect_bandwidth=450e9, interconnect_latency=8e-6)
    perf = simkit.PerfModel.from_config(cfg)
    free = simkit.PerfModel.from_config(blog_config(2))
    v = 64 * HIDDEN * 2
    comm = 2 * L * (8e-6 + 2 * (2 - 1) / 2 * v / 450e9)
    assert comm == pytest.approx(1.65283e-3, rel=1e-5)
    args = (64, 64 * 1536, 64 * 1536)
    assert perf.step(*args).time == pytest.approx(free.step(*args).time + comm, rel=1e-12)
    # tp = 4 with the same per-GPU specs: factor 2*3/4 on the volume
    cfg4 = blog_config(2, interconnect_bandwidth=450e9, interconnect_latency=8e-6)
    cfg4 = simkit.with_overrides(cfg4, {"hardware.tp": 4})
    perf4 = simkit.PerfModel.from_config(cfg4)
    comm4 = 2 * L * (8e-6 + 2 * 3 / 4 * v / 450e9)
    roof4 = max((2 * 64 * N + ATTN * 64 * 1536) / (2 * FLOPS),
                (N + 64 * 1536 * KV) / (2 * BW))
    assert perf4.step(*args).time == pytest.approx(roof4 + comm4, rel=1e-12)


def test_tp1_has_no_communication() -> None:
    perf = simkit.PerfModel.from_config(blog_config(1, interconnect_latency=1.0))
    assert perf.step(64, 0, 0).time == pytest.approx(N / BW, rel=1e-12)


def test_alpha_beta_and_efficiencies() -> None:
    base = simkit.PerfModel.from_config(blog_config())
    args = (64, 64 * 1536, 64 * 1536)
    t = base.step(*args).time
    cal = simkit.PerfModel.from_config(blog_config(alpha=1.5, beta=2e-3))
    assert cal.step(*args).time == pytest.approx(1.5 * t + 2e-3, rel=1e-12)
    # bandwidth efficiency 0.8: the memory-bound step takes 1/0.8 as long
    eff = simkit.PerfModel.from_config(blog_config(bandwidth_efficiency=0.8))
    assert eff.step(*args).time == pytest.approx(t / 0.8, rel=1e-12)
    # compute efficiency 0.5 on a compute-bound prefill
    ce = simkit.PerfModel.from_config(blog_config(compute_efficiency=0.5))
    pre = (1024, 1024 * 1025 / 2, 1024)
    assert ce.step(*pre).time == pytest.approx(2 * base.step(*pre).time, rel=1e-12)
    # FLOPs and bytes are physical quantities, not scaled by calibration
    assert cal.step(*args).bytes == base.step(*args).bytes


def test_embedding_table_is_not_multiplied_or_read() -> None:
    # With vocab_size, the V x h input-embedding table leaves the per-token FLOPs and the
    # per-step weight reads (a lookup, not a matmul).
    model = dict(MODEL, num_parameters=N + 128256 * HIDDEN, vocab_size=128256)
    cfg = simkit.config_from_dict({
        "hardware": {"compute_flops": FLOPS, "memory_bandwidth": BW,
                     "memory_capacity": 171798691840, "bytes_per_param": 1},
        "model": model, "workload": WORKLOAD})
    perf = simkit.PerfModel.from_config(cfg)
    assert perf.step(1, 0, 0).bytes == pytest.approx(N)
    assert perf.step(1, 0, 0).flops == pytest.approx(2 * N)


def test_step_arrays_matches_step() -> None:
    perf = simkit.PerfModel.from_config(moe_config(128, 8))
    import numpy as np

    t = np.array([1, 7, 300, 5000])
    attn = np.array([10.0, 700.0, 1e5, 3e6])
    kv = np.array([10.0, 100.0, 1e4, 1e5])
    times, flops, nbytes = perf.step_arrays(t, attn, kv)
    for i in range(len(t)):
        cost = perf.step(int(t[i]), float(attn[i]), float(kv[i]))
        assert (times[i], flops[i], nbytes[i]) == (cost.time, cost.flops, cost.bytes)
    assert math.isfinite(float(times.sum()))


def _seed(name: str) -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "data" / "seed_configs" / name)
