"""Shared helpers of the reliability tests: a tiny custom replica and an independent roofline.

The tiny model (2 layers, 4 heads of width 16, 1 M parameters, BF16) has
``kv_bytes_per_token = 2 · 2 · 4 · 16 · 2 = 512`` bytes, so a KV cache of a few kilobytes
holds only tens of blocks and preemption happens with a handful of short requests.
:func:`roofline_step_time` re-derives a step's time from the spec's formulas (section 3),
without using :mod:`simkit.perf`, so tests can bound simulated latencies independently.
"""

from __future__ import annotations

from typing import Any

import simkit

TINY_LAYERS = 2
TINY_HEADS = 4
TINY_HEAD_DIM = 16
TINY_PARAMS = 1e6
TINY_KV_BYTES_PER_TOKEN = 2 * TINY_LAYERS * TINY_HEADS * TINY_HEAD_DIM * 2  # 512 B


def tiny_config_dict(*, num_blocks: int = 40, block_size: int = 4, max_seq_len: int = 512,
                     scheduler: dict[str, Any] | None = None,
                     hardware: dict[str, Any] | None = None,
                     workload: dict[str, Any] | None = None,
                     simulation: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config dict of the tiny replica whose KV cache holds exactly ``num_blocks`` blocks."""
    return {
        "hardware": {
            "name": "tiny-gpu",
            "compute_flops": 1e12,
            "memory_bandwidth": 1e11,
            "memory_capacity": 1e10,
            "kv_cache_capacity": num_blocks * block_size * TINY_KV_BYTES_PER_TOKEN,
            "bytes_per_param": 2,
            **(hardware or {}),
        },
        "model": {
            "name": "tiny-model",
            "num_parameters": TINY_PARAMS,
            "num_layers": TINY_LAYERS,
            "hidden_dim": TINY_HEADS * TINY_HEAD_DIM,
            "num_heads": TINY_HEADS,
            "max_seq_len": max_seq_len,
        },
        "scheduler": {"block_size": block_size, **(scheduler or {})},
        "workload": workload or {
            "arrival_pattern": "batched", "num_requests": 1,
            "input_len_dist": {"type": "fixed", "value": 8},
            "output_len_dist": {"type": "fixed", "value": 8},
        },
        "simulation": {"mode": "exact", **(simulation or {})},
    }


def tiny_config(**kwargs: Any) -> simkit.Config:
    """:func:`tiny_config_dict` built into a validated :class:`simkit.Config`."""
    return simkit.config_from_dict(tiny_config_dict(**kwargs))


def roofline_step_time(cfg: simkit.Config, num_new: int, num_cached: int) -> float:
    """Spec section 3 for ONE request computing ``num_new`` positions after ``num_cached``.

    Dense model, no vocabulary given (so no embedding table is excluded): N = num_parameters.
    ``F = 2·s·N + 4·L·H·d·s·(c + (s + 1)/2)``, ``B = N·bytes_per_param + k·(c + s)``,
    ``t = alpha·max(F / (flops·tp·eff_c), B / (bw·tp·eff_b)) + t_comm + beta`` with
    ``t_comm = 2·L·(latency + 2(tp − 1)/tp · s·hidden·2 / link_bw)`` when tp > 1.
    """
    hw, m = cfg.hardware, cfg.model
    s, c = num_new, num_cached
    head = m.head_dim or m.hidden_dim // m.num_heads
    kv_heads = m.num_kv_heads or m.num_heads
    kv_per_token = 2 * m.num_layers * kv_heads * head * (hw.kv_bytes_per_element
                                                          or hw.bytes_per_param)
    flops = 2.0 * s * m.num_parameters + 4.0 * m.num_layers * m.num_heads * head * s * (
        c + (s + 1) / 2.0)
    nbytes = m.num_parameters * hw.bytes_per_param + kv_per_token * (c + s)
    peak = hw.compute_flops * hw.tp * hw.compute_efficiency
    bandwidth = hw.memory_bandwidth * hw.tp * hw.bandwidth_efficiency
    comm = 0.0
    if hw.tp > 1:
        volume = s * m.hidden_dim * 2.0
        comm = 2 * m.num_layers * (hw.interconnect_latency
                                   + 2.0 * (hw.tp - 1) / hw.tp * volume
                                   / hw.interconnect_bandwidth)
    return hw.alpha * max(flops / peak, nbytes / bandwidth) + comm + hw.beta


def roofline_batch_time(cfg: simkit.Config, batch: list[tuple[int, int]]) -> float:
    """Spec section 3 for a batch of ``(num_new, num_cached)`` pairs, one per request.

    Weights are read once per step; FLOPs, KV bytes and communication add over requests.
    """
    hw, m = cfg.hardware, cfg.model
    head = m.head_dim or m.hidden_dim // m.num_heads
    kv_heads = m.num_kv_heads or m.num_heads
    kv_per_token = 2 * m.num_layers * kv_heads * head * (hw.kv_bytes_per_element
                                                          or hw.bytes_per_param)
    tokens = sum(s for s, _ in batch)
    pairs = sum(s * (c + (s + 1) / 2.0) for s, c in batch)
    kv = sum(c + s for s, c in batch)
    flops = 2.0 * tokens * m.num_parameters + 4.0 * m.num_layers * m.num_heads * head * pairs
    nbytes = m.num_parameters * hw.bytes_per_param + kv_per_token * kv
    peak = hw.compute_flops * hw.tp * hw.compute_efficiency
    bandwidth = hw.memory_bandwidth * hw.tp * hw.bandwidth_efficiency
    comm = 0.0
    if hw.tp > 1:
        comm = 2 * m.num_layers * (hw.interconnect_latency + 2.0 * (hw.tp - 1) / hw.tp
                                   * tokens * m.hidden_dim * 2.0 / hw.interconnect_bandwidth)
    return hw.alpha * max(flops / peak, nbytes / bandwidth) + comm + hw.beta
