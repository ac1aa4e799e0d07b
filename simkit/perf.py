"""Roofline time of one engine step (spec section 3): FLOPs vs bytes on the replica's peaks.

A step's batch is summarised by four sums, so the engine can update them incrementally and
advance decode-only stretches in closed form:

* ``num_tokens``  T = Σ s_i, the positions computed this step;
* ``num_seqs``    requests in the batch;
* ``attn_work``   Σ s_i · (c_i + (s_i + 1) / 2): query-key pairs of causal attention, where
  request i computes s_i new positions on top of c_i cached ones (new token j attends to
  c_i + j positions, so prefill is a triangle, not a rectangle);
* ``kv_tokens``   Σ (c_i + s_i): KV entries read (context) and written (new) this step.

Compute ``F = 2·T·N + 4·L·H·d·attn_work`` with N the active non-embedding parameters.
Memory ``B = W(T) + kv_bytes_per_token · kv_tokens``; W(T) is every weight for a dense model and
for MoE the non-expert weights plus the experts touched, ``E·(1 − (1 − 1/E)^(T·k))`` per MoE
layer in expectation (decode of a small batch reads a few experts, not all of them).
Tensor parallelism adds two all-reduces per layer of ``T·hidden·2`` bytes, each
``latency + 2(tp−1)/tp · V / link_bandwidth`` (ring all-reduce), serially after the roofline.
Step time ``= alpha · max(F' / (peak · compute_eff), B' / (bw · bandwidth_eff)) + t_comm + beta
+ per_seq_overhead · num_seqs``, where ``F' = 2·T·N + 4·L·H·d·attn_work / attention_eff`` and
``B' = W(T) + kv_bytes_per_token · kv_tokens / attention_eff`` price attention (prefill
attention FLOPs, decode KV reads) at a fraction of the GEMMs' achievable rates. The reported
FLOPs and bytes stay the physical ones (F, B). Every calibration term depends only on the four
batch sums and config constants, so :meth:`PerfModel.step` and :meth:`PerfModel.step_arrays`
agree bit for bit; the defaults (alpha 1, beta 0, efficiencies 1, per-sequence overhead 0)
are the pure roofline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simkit.config import ACTIVATION_BYTES, Config

__all__ = ["PerfModel", "StepCost"]


@dataclass(frozen=True, slots=True)
class StepCost:
    """Time (s), FLOPs and HBM bytes of one step."""

    time: float
    flops: float
    bytes: float


@dataclass(frozen=True)
class PerfModel:
    """Coefficients of the step-time model for one config (see module docstring)."""

    linear_flops_per_token: float
    attn_flops_per_pair: float
    kv_bytes_per_token: float
    dense_weight_bytes: float
    expert_bytes: float
    num_moe_layers: int
    num_experts: int
    experts_per_token: int
    moe_fallback_active_bytes: float
    flops_rate: float
    bandwidth_rate: float
    peak_flops: float
    peak_bandwidth: float
    comm_fixed: float
    comm_per_token: float
    alpha: float
    beta: float
    sliding_window: int
    sliding_fraction: float
    per_seq_overhead: float = 0.0
    attn_time_flops_per_pair: float | None = None
    kv_time_bytes_per_token: float | None = None

    @classmethod
    def from_config(cls, config: Config) -> PerfModel:
        hw, m = config.hardware, config.model
        bpp = hw.bytes_per_param
        embed = m.embedding_parameters
        n_compute = max(m.active_parameters - embed, 0.0)
        experts = m.expert_parameters
        num_experts = m.num_experts or 0
        k = m.experts_per_token or 0
        if num_experts > 1 and experts > 0:
            dense_bytes = (m.num_parameters - embed - experts) * bpp
            expert_bytes = 3.0 * m.hidden_dim * (m.intermediate_dim or 0) * bpp
            moe_layers = m.num_layers
            fallback = 0.0
        elif m.is_moe:
            # Expert sizes unknown (e.g. the seed's Qwen3 config gives only total and active
            # counts): read min(all, T × active) weights, the many-small-experts limit.
            dense_bytes = (m.num_parameters - embed) * bpp  # upper bound: every weight
            expert_bytes = 0.0
            moe_layers = 0
            fallback = (m.active_parameters - embed) * bpp
        else:
            dense_bytes = (m.num_parameters - embed) * bpp
            expert_bytes = 0.0
            moe_layers = 0
            fallback = 0.0
        tp = hw.tp
        if tp > 1:
            assert hw.interconnect_bandwidth is not None
            per_bytes = 2.0 * (tp - 1) / tp / hw.interconnect_bandwidth
            comm_fixed = 2.0 * m.num_layers * hw.interconnect_latency
            comm_per_token = 2.0 * m.num_layers * m.hidden_dim * ACTIVATION_BYTES * per_bytes
        else:
            comm_fixed = comm_per_token = 0.0
        window = m.sliding_window or 0
        sliding_layers = (m.num_sliding_layers or m.num_layers) if window else 0
        return cls(
            linear_flops_per_token=2.0 * n_compute,
            attn_flops_per_pair=4.0 * m.num_layers * m.num_heads * m.head_size,
            kv_bytes_per_token=config.kv_bytes_per_token,
            dense_weight_bytes=dense_bytes,
            expert_bytes=expert_bytes,
            num_moe_layers=moe_layers,
            num_experts=num_experts,
            experts_per_token=k,
            moe_fallback_active_bytes=fallback,
            flops_rate=hw.total_flops * hw.compute_efficiency,
            bandwidth_rate=hw.total_memory_bandwidth * hw.bandwidth_efficiency,
            peak_flops=hw.total_flops,
            peak_bandwidth=hw.total_memory_bandwidth,
            comm_fixed=comm_fixed,
            comm_per_token=comm_per_token,
            alpha=hw.alpha,
            beta=hw.beta,
            sliding_window=window,
            sliding_fraction=sliding_layers / m.num_layers,
            per_seq_overhead=hw.per_seq_overhead,
            attn_time_flops_per_pair=(4.0 * m.num_layers * m.num_heads * m.head_size
                                      / hw.attention_efficiency),
            kv_time_bytes_per_token=config.kv_bytes_per_token / hw.attention_efficiency,
        )

    def __post_init__(self) -> None:
        # Attention priced at the physical rates unless an efficiency below 1 was given.
        if self.attn_time_flops_per_pair is None:
            object.__setattr__(self, "attn_time_flops_per_pair", self.attn_flops_per_pair)
        if self.kv_time_bytes_per_token is None:
            object.__setattr__(self, "kv_time_bytes_per_token", self.kv_bytes_per_token)

    @property
    def is_moe(self) -> bool:
        return self.num_moe_layers > 0 or self.moe_fallback_active_bytes > 0

    @property
    def total_weight_bytes(self) -> float:
        """Weight bytes read by a step that touches every expert."""
        if self.moe_fallback_active_bytes:
            return self.dense_weight_bytes
        return self.dense_weight_bytes + self.num_moe_layers * self.num_experts * self.expert_bytes

    def weight_bytes(self, num_tokens: int) -> float:
        """Weight bytes read by a step computing ``num_tokens`` positions."""
        if self.num_moe_layers:
            e = self.num_experts
            touched = e * -math.expm1(num_tokens * self.experts_per_token * math.log1p(-1.0 / e))
            return self.dense_weight_bytes + self.num_moe_layers * touched * self.expert_bytes
        if self.moe_fallback_active_bytes:
            return min(self.moe_fallback_active_bytes * num_tokens, self.dense_weight_bytes)
        return self.dense_weight_bytes

    def step(self, num_tokens: int, attn_work: float, kv_tokens: float,
             num_seqs: int = 1) -> StepCost:
        """Cost of a step with the batch sums described in the module docstring.

        ``num_seqs`` (requests in the batch) prices ``per_seq_overhead``.
        """
        linear = self.linear_flops_per_token * num_tokens
        weights = self.weight_bytes(num_tokens)
        flops = linear + self.attn_flops_per_pair * attn_work
        nbytes = weights + self.kv_bytes_per_token * kv_tokens
        time_flops = linear + self.attn_time_flops_per_pair * attn_work  # type: ignore[operator]
        time_bytes = weights + self.kv_time_bytes_per_token * kv_tokens  # type: ignore[operator]
        roof = max(time_flops / self.flops_rate, time_bytes / self.bandwidth_rate)
        comm = self.comm_fixed + self.comm_per_token * num_tokens if self.comm_per_token else 0.0
        time = self.alpha * roof + comm + self.beta
        if self.per_seq_overhead:
            time = time + self.per_seq_overhead * num_seqs
        return StepCost(time, flops, nbytes)

    def step_arrays(self, num_tokens: np.ndarray, attn_work: np.ndarray,
                    kv_tokens: np.ndarray, num_seqs: np.ndarray | int = 1,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorized :meth:`step` over many steps: (time, flops, bytes) arrays.

        Must give the same numbers as :meth:`step` element by element (same operations in
        the same order), because the fast engine path uses it to price decode stretches.
        """
        num_tokens = np.asarray(num_tokens, dtype=float)
        linear = self.linear_flops_per_token * num_tokens
        flops = linear + self.attn_flops_per_pair * attn_work
        if self.num_moe_layers:
            e = self.num_experts
            touched = e * -np.expm1(num_tokens * self.experts_per_token * math.log1p(-1.0 / e))
            weights = self.dense_weight_bytes + self.num_moe_layers * touched * self.expert_bytes
        elif self.moe_fallback_active_bytes:
            weights = np.minimum(self.moe_fallback_active_bytes * num_tokens,
                                 self.dense_weight_bytes)
        else:
            weights = self.dense_weight_bytes
        kv_tokens = np.asarray(kv_tokens, dtype=float)
        nbytes = weights + self.kv_bytes_per_token * kv_tokens
        time_flops = linear + self.attn_time_flops_per_pair * attn_work  # type: ignore[operator]
        time_bytes = weights + self.kv_time_bytes_per_token * kv_tokens  # type: ignore[operator]
        roof = np.maximum(time_flops / self.flops_rate, time_bytes / self.bandwidth_rate)
        if self.comm_per_token:
            comm = self.comm_fixed + self.comm_per_token * num_tokens
        else:
            comm = 0.0
        time = self.alpha * roof + comm + self.beta
        if self.per_seq_overhead:
            time = time + self.per_seq_overhead * np.asarray(num_seqs, dtype=float)
        return time, flops, nbytes

    def attention_sums(self, num_new: int, num_cached: int) -> tuple[float, float]:
        """(attn_work, kv_tokens) of one request computing ``num_new`` after ``num_cached``.

        With a sliding window on a fraction f of the layers, those layers attend to at most
        ``window`` positions; the sums are the layer-weighted mix of full and windowed work.
        """
        s, c = num_new, num_cached
        full_attn = s * (c + (s + 1) / 2.0)
        full_kv = c + s
        if not self.sliding_window:
            return full_attn, full_kv
        w = self.sliding_window
        # token j (1..s) attends to min(c + j, w) positions
        lo = max(0, min(s, w - c))  # tokens with c + j <= w
        win_attn = lo * (c + (lo + 1) / 2.0) + (s - lo) * w
        win_kv = min(c, w) + s
        f = self.sliding_fraction
        return (1 - f) * full_attn + f * win_attn, (1 - f) * full_kv + f * win_kv
