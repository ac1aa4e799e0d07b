"""Configuration: five frozen dataclasses, validated on construction, and the derived sizes.

The structure mirrors the TOML file (``[hardware]``, ``[model]``, ``[scheduler]``,
``[workload]``, ``[simulation]``) and the configs of the reference Rust simulator
*inference-lab*, which load unchanged. Every field is checked in ``__post_init__`` and a bad
value raises :class:`~simkit.errors.ConfigError` naming table, field, value and allowed range.
Derived quantities (KV bytes per token, weight bytes, number of KV blocks) are properties, so a
variant made with :func:`dataclasses.replace` is always consistent.

Conventions (SI units unless a name says otherwise): FLOP/s, bytes, bytes/s, seconds, tokens.
Hardware numbers are **per GPU**; a replica is a tensor-parallel group of ``tp`` identical GPUs
and its totals are the per-GPU numbers times ``tp`` (the seed configs have no ``tp`` and so
describe the whole group as one "GPU").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from simkit.errors import ConfigError

__all__ = [
    "ARRIVAL_PATTERNS",
    "POLICIES",
    "Config",
    "HardwareConfig",
    "LengthDist",
    "ModelConfig",
    "SchedulerConfig",
    "SimulationConfig",
    "WorkloadConfig",
]

Policy = Literal["fcfs", "priority", "sjf", "sof", "lof", "sif", "lif", "stf", "ltf"]
ArrivalPattern = Literal[
    "poisson", "gamma", "uniform", "fixed_rate", "burst", "batched", "closed_loop", "trace"
]
LengthType = Literal["fixed", "uniform", "normal", "lognormal", "empirical"]
TraceFormat = Literal["auto", "azure", "mooncake", "csv", "parquet"]
EngineMode = Literal["fast", "exact"]

POLICIES: tuple[str, ...] = get_args(Policy)
ARRIVAL_PATTERNS: tuple[str, ...] = get_args(ArrivalPattern)
LENGTH_TYPES: tuple[str, ...] = get_args(LengthType)
TRACE_FORMATS: tuple[str, ...] = get_args(TraceFormat)
ENGINE_MODES: tuple[str, ...] = get_args(EngineMode)

#: Most requests one run may send (memory: about 100 bytes of state each).
MAX_REQUESTS = 50_000_000

#: Bytes of one activation element exchanged by tensor-parallel all-reduces (BF16).
ACTIVATION_BYTES = 2


# --------------------------------------------------------------------------- validation helpers
def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _fail(table: str, name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(
        f"[{table}] {name} = {_fmt(value)}: {allowed}", table=table, field=name
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(
    table: str,
    name: str,
    value: Any,
    *,
    integer: bool = False,
    minimum: float | None = None,
    exclusive_min: bool = False,
    maximum: float | None = None,
    optional: bool = False,
) -> None:
    """Validate one numeric field; raise a ConfigError that says what is allowed."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if exclusive_min else '>='} {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    allowed = f"must be {kind}" + (f" {' and '.join(bounds)}" if bounds else "")
    if not _is_number(value):
        raise _fail(table, name, value, allowed)
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(table, name, value, allowed + " (finite)")
    if integer and not float(value).is_integer():
        raise _fail(table, name, value, allowed)
    if minimum is not None and (value <= minimum if exclusive_min else value < minimum):
        raise _fail(table, name, value, allowed)
    if maximum is not None and value > maximum:
        raise _fail(table, name, value, allowed)


def _check_choice(table: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(table, name, value, f"must be one of {', '.join(choices)}")


def _check_bool(table: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(table, name, value, "must be true or false")


def _check_str(table: str, name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise _fail(table, name, value, "must be a string")


def _as_int(obj: Any, name: str) -> None:
    """Store an integral float (e.g. 7e10 from TOML) as int so sizes stay exact."""
    value = getattr(obj, name)
    if _is_number(value) and float(value).is_integer() and not isinstance(value, int):
        object.__setattr__(obj, name, int(value))


# --------------------------------------------------------------------------------- hardware
@dataclass(frozen=True, kw_only=True)
class HardwareConfig:
    """One replica: a tensor-parallel group of ``tp`` identical GPUs (numbers per GPU).

    ``compute_flops`` is the dense peak at the precision in use; when absent it is taken from
    ``flops_fp8`` (``bytes_per_param = 1``), ``flops_fp4`` (0.5) or ``flops_bf16`` (otherwise).
    ``bytes_per_param`` is the weight element size and, unless ``kv_bytes_per_element`` is set,
    the KV-cache element size too (the seed's convention).

    Calibration terms (section 3.4 of the spec; 1 and 0 give the pure roofline):
    ``alpha`` scales the roofline time, ``beta`` is a fixed per-step overhead in seconds,
    ``compute_efficiency`` / ``bandwidth_efficiency`` are achievable fractions of the peaks.
    ``per_seq_overhead`` adds seconds per sequence in the batch per step (input preparation,
    sampling and output processing grow with the batch). ``attention_efficiency`` is the
    fraction of those achievable rates that attention kernels reach (paged KV reads and
    prefill attention run below the weight GEMMs' rates, more so for long contexts):
    attention FLOPs and KV bytes are priced divided by it. ``memory_reserve`` is the
    non-weight, non-KV memory of each GPU (activation peak of a ``max_num_batched_tokens``
    step, CUDA graphs, communication buffers, allocator slack) taken from the
    ``gpu_memory_utilization`` budget before the KV cache, as vLLM's memory profiler does.
    """

    name: str = "custom"
    preset: str | None = None
    compute_flops: float | None = None
    memory_bandwidth: float
    memory_capacity: float
    kv_cache_capacity: float = 0.0
    gpu_memory_utilization: float = 0.9
    bytes_per_param: float = 2.0
    kv_bytes_per_element: float | None = None
    tp: int = 1
    flops_bf16: float | None = None
    flops_fp8: float | None = None
    flops_fp4: float | None = None
    interconnect_bandwidth: float | None = None
    interconnect_latency: float = 0.0
    price_per_gpu_hour: float | None = None
    alpha: float = 1.0
    beta: float = 0.0
    compute_efficiency: float = 1.0
    bandwidth_efficiency: float = 1.0
    per_seq_overhead: float = 0.0
    attention_efficiency: float = 1.0
    memory_reserve: float = 0.0

    def __post_init__(self) -> None:
        t = "hardware"
        _check_str(t, "name", self.name)
        _check_str(t, "preset", self.preset, optional=True)
        for name in ("memory_bandwidth", "memory_capacity"):
            _check_number(t, name, getattr(self, name), minimum=0, exclusive_min=True)
        for name in ("compute_flops", "flops_bf16", "flops_fp8", "flops_fp4",
                     "interconnect_bandwidth"):
            _check_number(t, name, getattr(self, name), minimum=0, exclusive_min=True,
                          optional=True)
        _check_number(t, "kv_cache_capacity", self.kv_cache_capacity, minimum=0)
        _check_number(t, "gpu_memory_utilization", self.gpu_memory_utilization, minimum=0,
                      exclusive_min=True, maximum=1)
        _check_number(t, "bytes_per_param", self.bytes_per_param, minimum=0, exclusive_min=True,
                      maximum=8)
        _check_number(t, "kv_bytes_per_element", self.kv_bytes_per_element, minimum=0,
                      exclusive_min=True, maximum=8, optional=True)
        _check_number(t, "tp", self.tp, integer=True, minimum=1, maximum=1024)
        _check_number(t, "interconnect_latency", self.interconnect_latency, minimum=0)
        _check_number(t, "price_per_gpu_hour", self.price_per_gpu_hour, minimum=0,
                      optional=True)
        _check_number(t, "alpha", self.alpha, minimum=0, exclusive_min=True)
        _check_number(t, "beta", self.beta, minimum=0)
        for name in ("compute_efficiency", "bandwidth_efficiency", "attention_efficiency"):
            _check_number(t, name, getattr(self, name), minimum=0, exclusive_min=True,
                          maximum=1)
        _check_number(t, "per_seq_overhead", self.per_seq_overhead, minimum=0, maximum=1)
        _check_number(t, "memory_reserve", self.memory_reserve, minimum=0,
                      maximum=self.memory_capacity)
        _as_int(self, "tp")
        if self.peak_flops_per_gpu is None:
            raise _fail(t, "compute_flops", None,
                        "must be given (or flops_bf16 / flops_fp8 / flops_fp4 for the "
                        f"precision of bytes_per_param = {self.bytes_per_param:g})")
        if self.tp > 1 and self.interconnect_bandwidth is None:
            raise _fail(t, "interconnect_bandwidth", None,
                        f"must be given when tp = {self.tp} > 1 (per-GPU bytes/s, e.g. 450e9 "
                        "for NVLink 4)")

    @property
    def precision(self) -> str:
        """Weight precision implied by ``bytes_per_param``: 'fp4', 'fp8', 'bf16' or 'fp32'."""
        return {0.5: "fp4", 1: "fp8", 2: "bf16", 4: "fp32"}.get(self.bytes_per_param,
                                                              f"{self.bytes_per_param:g}B")

    @property
    def peak_flops_per_gpu(self) -> float | None:
        """Dense peak FLOP/s of one GPU at the precision in use."""
        if self.compute_flops is not None:
            return float(self.compute_flops)
        by_precision = {0.5: self.flops_fp4, 1: self.flops_fp8}.get(self.bytes_per_param)
        value = by_precision if by_precision is not None else self.flops_bf16
        return None if value is None else float(value)

    @property
    def total_flops(self) -> float:
        """Peak FLOP/s of the whole replica (per-GPU × tp)."""
        assert self.peak_flops_per_gpu is not None
        return self.peak_flops_per_gpu * self.tp

    @property
    def total_memory_bandwidth(self) -> float:
        return float(self.memory_bandwidth) * self.tp

    @property
    def total_memory_capacity(self) -> float:
        return float(self.memory_capacity) * self.tp

    @property
    def kv_element_bytes(self) -> float:
        return float(self.kv_bytes_per_element or self.bytes_per_param)


# ------------------------------------------------------------------------------------ model
@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Transformer architecture, as in the model's Hugging Face ``config.json``.

    ``num_parameters`` counts all weights (every expert for MoE); ``num_active_parameters``
    those used per token. ``intermediate_dim`` is the dense FFN width, or the per-expert width
    for MoE. ``vocab_size`` lets simkit leave the input-embedding table (a lookup, not a matmul
    and not read in full) out of the per-step FLOPs and weight reads.
    """

    name: str = "custom"
    preset: str | None = None
    num_parameters: float
    num_active_parameters: float | None = None
    num_layers: int
    hidden_dim: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    intermediate_dim: int | None = None
    vocab_size: int | None = None
    tie_word_embeddings: bool = False
    max_seq_len: int
    num_experts: int | None = None
    experts_per_token: int | None = None
    sliding_window: int | None = None
    num_sliding_layers: int | None = None

    def __post_init__(self) -> None:
        t = "model"
        _check_str(t, "name", self.name)
        _check_str(t, "preset", self.preset, optional=True)
        _check_number(t, "num_parameters", self.num_parameters, minimum=0, exclusive_min=True)
        _check_number(t, "num_active_parameters", self.num_active_parameters, minimum=0,
                      exclusive_min=True, maximum=self.num_parameters, optional=True)
        for name in ("num_layers", "hidden_dim", "num_heads", "max_seq_len"):
            _check_number(t, name, getattr(self, name), integer=True, minimum=1)
        for name in ("num_kv_heads", "head_dim", "intermediate_dim", "vocab_size",
                     "num_experts", "experts_per_token", "sliding_window",
                     "num_sliding_layers"):
            _check_number(t, name, getattr(self, name), integer=True, minimum=1, optional=True)
        _check_bool(t, "tie_word_embeddings", self.tie_word_embeddings)
        for name in ("num_parameters", "num_active_parameters", "num_layers", "hidden_dim",
                     "num_heads", "num_kv_heads", "head_dim", "intermediate_dim", "vocab_size",
                     "max_seq_len", "num_experts", "experts_per_token", "sliding_window",
                     "num_sliding_layers"):
            _as_int(self, name)
        if self.head_dim is None and self.num_heads > self.hidden_dim:
            raise _fail(t, "num_heads", self.num_heads,
                        f"must be <= hidden_dim = {self.hidden_dim} (the head width "
                        "hidden_dim // num_heads would be 0), or set head_dim")
        if self.num_kv_heads is not None and self.num_kv_heads > self.num_heads:
            raise _fail(t, "num_kv_heads", self.num_kv_heads,
                        f"must be <= num_heads = {self.num_heads}")
        if self.num_experts is not None:
            if self.experts_per_token is None or self.experts_per_token > self.num_experts:
                raise _fail(t, "experts_per_token", self.experts_per_token,
                            f"must be an integer in [1, num_experts = {self.num_experts}] "
                            "for a mixture-of-experts model")
        if self.num_sliding_layers is not None and self.num_sliding_layers > self.num_layers:
            raise _fail(t, "num_sliding_layers", self.num_sliding_layers,
                        f"must be <= num_layers = {self.num_layers}")
        if self.embedding_parameters >= self.num_parameters:
            raise _fail(t, "vocab_size", self.vocab_size,
                        "vocab_size × hidden_dim must be smaller than num_parameters")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_size(self) -> int:
        """Width of one attention head (``head_dim``, default hidden_dim / num_heads)."""
        return self.head_dim or self.hidden_dim // self.num_heads

    @property
    def active_parameters(self) -> float:
        return float(self.num_active_parameters or self.num_parameters)

    @property
    def is_moe(self) -> bool:
        return (self.num_experts or 0) > 1 or self.active_parameters < self.num_parameters

    @property
    def embedding_parameters(self) -> float:
        """Input-embedding table (V × h): gathered, not multiplied, so left out of FLOPs and
        weight reads. 0 when vocab is unknown or the table is tied to the output layer (then
        it is the LM head's matmul and is read every step)."""
        if not self.vocab_size or self.tie_word_embeddings:
            return 0.0
        return float(self.vocab_size * self.hidden_dim)

    @property
    def expert_parameters(self) -> float:
        """Parameters of all routed experts (SwiGLU: 3·h·I each, in every layer); 0 if dense."""
        if not self.num_experts or not self.intermediate_dim:
            return 0.0
        return float(self.num_layers * self.num_experts * 3 * self.hidden_dim
                     * self.intermediate_dim)

    def kv_bytes_per_token(self, element_bytes: float) -> float:
        """K and V of every layer for one token: ``2 · L · kv_heads · head_dim · bytes``."""
        return 2.0 * self.num_layers * self.kv_heads * self.head_size * element_bytes


# -------------------------------------------------------------------------------- scheduler
@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """vLLM v1 scheduler knobs (names as in ``vllm serve``)."""

    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    policy: Policy = "fcfs"
    enable_chunked_prefill: bool = True
    long_prefill_token_threshold: int = 0
    max_num_partial_prefills: int = 0
    block_size: int = 16
    enable_prefix_caching: bool = False
    enable_preemption_free: bool = False

    def __post_init__(self) -> None:
        t = "scheduler"
        _check_number(t, "max_num_batched_tokens", self.max_num_batched_tokens, integer=True,
                      minimum=1)
        _check_number(t, "max_num_seqs", self.max_num_seqs, integer=True, minimum=1)
        _check_choice(t, "policy", self.policy, POLICIES)
        _check_bool(t, "enable_chunked_prefill", self.enable_chunked_prefill)
        _check_number(t, "long_prefill_token_threshold", self.long_prefill_token_threshold,
                      integer=True, minimum=0)
        _check_number(t, "max_num_partial_prefills", self.max_num_partial_prefills,
                      integer=True, minimum=0)
        _check_number(t, "block_size", self.block_size, integer=True, minimum=1, maximum=4096)
        _check_bool(t, "enable_prefix_caching", self.enable_prefix_caching)
        _check_bool(t, "enable_preemption_free", self.enable_preemption_free)
        for name in ("max_num_batched_tokens", "max_num_seqs", "long_prefill_token_threshold",
                     "max_num_partial_prefills", "block_size"):
            _as_int(self, name)


# --------------------------------------------------------------------------------- workload
@dataclass(frozen=True, kw_only=True)
class LengthDist:
    """A token-length distribution; samples are clamped to >= 1 and truncated to integers.

    ``lognormal``: ``mean`` and ``std_dev`` are μ and σ of the underlying normal (median e^μ),
    the seed's convention. ``uniform``: integers in [min, max] inclusive. ``empirical``: values
    drawn with replacement from a file with one integer per line (or a CSV's first column).
    """

    #: parameters each distribution type takes
    PARAMETERS: ClassVar[dict[str, tuple[str, ...]]] = {
        "fixed": ("value",), "uniform": ("min", "max"), "normal": ("mean", "std_dev"),
        "lognormal": ("mean", "std_dev"), "empirical": ("path",)}

    type: LengthType = "fixed"
    value: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std_dev: float | None = None
    path: str | None = None

    def check(self, table: str) -> None:
        """Validate for the named table (e.g. ``workload.input_len_dist``)."""
        _check_choice(table, "type", self.type, LENGTH_TYPES)
        need = {
            "fixed": ("value",),
            "uniform": ("min", "max"),
            "normal": ("mean", "std_dev"),
            "lognormal": ("mean", "std_dev"),
            "empirical": ("path",),
        }[self.type]
        for name in need:
            if getattr(self, name) is None:
                raise _fail(table, name, None, f"is required for type = {self.type!r}")
        # token counts above 1e9 (the sampler's clamp) cannot be drawn as int64 integers
        if self.type == "fixed":
            _check_number(table, "value", self.value, integer=True, minimum=1, maximum=1e9)
        elif self.type == "uniform":
            _check_number(table, "min", self.min, integer=True, minimum=1, maximum=1e9)
            _check_number(table, "max", self.max, integer=True, minimum=1, maximum=1e9)
            if self.max < self.min:  # type: ignore[operator]
                raise _fail(table, "max", self.max, f"must be >= min = {self.min}")
        elif self.type in ("normal", "lognormal"):
            _check_number(table, "mean", self.mean,
                          minimum=None if self.type == "lognormal" else 0,
                          maximum=50 if self.type == "lognormal" else None)
            _check_number(table, "std_dev", self.std_dev, minimum=0,
                          maximum=20 if self.type == "lognormal" else None)
        else:
            _check_str(table, "path", self.path)

    @property
    def upper_bound(self) -> float:
        """Largest value this distribution can produce (inf when unbounded)."""
        if self.type == "fixed":
            return float(self.value)  # type: ignore[arg-type]
        if self.type == "uniform":
            return float(self.max)  # type: ignore[arg-type]
        return math.inf

    def describe(self) -> str:
        if self.type == "fixed":
            return f"fixed {self.value:g}"
        if self.type == "uniform":
            return f"uniform [{self.min:g}, {self.max:g}]"
        if self.type == "lognormal":
            return f"lognormal(μ={self.mean:g}, σ={self.std_dev:g}; median {math.exp(self.mean):.0f})"  # type: ignore[arg-type]  # noqa: E501
        if self.type == "normal":
            return f"normal({self.mean:g}, {self.std_dev:g})"
        return f"empirical {self.path}"


@dataclass(frozen=True, kw_only=True)
class WorkloadConfig:
    """Request arrivals and lengths (section 4 of the spec).

    Open-loop patterns (poisson, gamma, uniform/fixed_rate, burst, batched) need
    ``num_requests`` or ``duration_secs``; ``closed_loop`` needs ``num_concurrent_users`` and
    ``num_requests``; ``trace`` replays ``trace_path``. ``duration_secs`` stops new arrivals at
    that simulated time, after which the engine drains what is in flight.
    """

    arrival_pattern: ArrivalPattern = "poisson"
    arrival_rate: float | None = None
    num_requests: int | None = None
    duration_secs: float | None = None
    seed: int = 42
    burstiness: float = 1.0
    burst_size: int = 8
    num_concurrent_users: int | None = None
    closed_loop_jitter_secs: float = 0.0
    think_time_secs: float = 0.0
    num_priority_levels: int = 1
    trace_path: str | None = None
    trace_format: TraceFormat = "auto"
    time_scale: float = 1.0
    trace_limit: int | None = None
    trace_hash_block_tokens: int = 512
    input_len_dist: LengthDist = field(
        default_factory=lambda: LengthDist(type="lognormal", mean=6.9, std_dev=0.7))
    output_len_dist: LengthDist = field(
        default_factory=lambda: LengthDist(type="lognormal", mean=5.3, std_dev=0.8))

    def __post_init__(self) -> None:
        t = "workload"
        _check_choice(t, "arrival_pattern", self.arrival_pattern, ARRIVAL_PATTERNS)
        _check_number(t, "arrival_rate", self.arrival_rate, minimum=0, exclusive_min=True,
                      optional=True)
        # ~100 B of state per request: 5e7 requests already need ~5 GB
        _check_number(t, "num_requests", self.num_requests, integer=True, minimum=1,
                      maximum=MAX_REQUESTS, optional=True)
        _check_number(t, "duration_secs", self.duration_secs, minimum=0, exclusive_min=True,
                      optional=True)
        _check_number(t, "seed", self.seed, integer=True, minimum=0, maximum=2**63 - 1)
        _check_number(t, "burstiness", self.burstiness, minimum=0, exclusive_min=True)
        _check_number(t, "burst_size", self.burst_size, integer=True, minimum=1,
                      maximum=1e6)  # the arrival times of a burst are materialized
        _check_number(t, "num_concurrent_users", self.num_concurrent_users, integer=True,
                      minimum=1, maximum=1e7, optional=True)
        _check_number(t, "closed_loop_jitter_secs", self.closed_loop_jitter_secs, minimum=0)
        _check_number(t, "think_time_secs", self.think_time_secs, minimum=0)
        _check_number(t, "num_priority_levels", self.num_priority_levels, integer=True,
                      minimum=1, maximum=1e9)  # sampled as int64
        _check_str(t, "trace_path", self.trace_path, optional=True)
        _check_choice(t, "trace_format", self.trace_format, TRACE_FORMATS)
        _check_number(t, "time_scale", self.time_scale, minimum=0, exclusive_min=True)
        _check_number(t, "trace_limit", self.trace_limit, integer=True, minimum=1,
                      optional=True)
        _check_number(t, "trace_hash_block_tokens", self.trace_hash_block_tokens,
                      integer=True, minimum=1)
        for name in ("num_requests", "seed", "burst_size", "num_concurrent_users",
                     "num_priority_levels", "trace_limit", "trace_hash_block_tokens"):
            _as_int(self, name)
        for name in ("input_len_dist", "output_len_dist"):
            dist = getattr(self, name)
            if not isinstance(dist, LengthDist):
                raise _fail(t, name, dist, "must be a table such as {type = \"fixed\", value = "
                                           "1024}")
            dist.check(f"{t}.{name}")
        pattern = self.arrival_pattern
        if pattern == "closed_loop":
            if self.num_concurrent_users is None:
                raise _fail(t, "num_concurrent_users", None,
                            "is required for arrival_pattern = 'closed_loop'")
            if self.num_requests is None and self.duration_secs is None:
                raise _fail(t, "num_requests", None,
                            "is required for arrival_pattern = 'closed_loop' (or set "
                            "duration_secs)")
        elif pattern == "trace":
            if not self.trace_path:
                raise _fail(t, "trace_path", None, "is required for arrival_pattern = 'trace'")
        else:
            if self.num_requests is None and self.duration_secs is None:
                raise _fail(t, "num_requests", None,
                            f"is required for arrival_pattern = {pattern!r} (or set "
                            "duration_secs): an open loop needs a bound")
            if pattern != "batched" and self.arrival_rate is None:
                raise _fail(t, "arrival_rate", None,
                            f"is required for arrival_pattern = {pattern!r} (requests/s > 0)")
            if pattern == "batched" and self.num_requests is None:
                raise _fail(t, "num_requests", None,
                            "is required for arrival_pattern = 'batched'")

    @property
    def is_closed_loop(self) -> bool:
        return self.arrival_pattern == "closed_loop"


# ------------------------------------------------------------------------------- simulation
@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """Engine options.

    ``mode = "fast"`` advances decode-only stretches in closed form; ``"exact"`` runs every
    step through the scheduler (for verification; same results within 1e-9 relative).
    ``max_sim_secs`` and ``max_wall_secs`` are safety stops: the run ends cleanly and its result
    is marked partial. ``log_interval`` is accepted for seed compatibility and unused.
    """

    sample_interval_secs: float = 1.0
    max_sim_secs: float | None = None
    max_wall_secs: float | None = None
    mode: EngineMode = "fast"
    log_interval: int | None = None
    progress_interval_secs: float = 0.2

    def __post_init__(self) -> None:
        t = "simulation"
        _check_number(t, "sample_interval_secs", self.sample_interval_secs, minimum=1e-6)
        _check_number(t, "max_sim_secs", self.max_sim_secs, minimum=0, exclusive_min=True,
                      optional=True)
        _check_number(t, "max_wall_secs", self.max_wall_secs, minimum=0, exclusive_min=True,
                      optional=True)
        _check_choice(t, "mode", self.mode, ENGINE_MODES)
        _check_number(t, "log_interval", self.log_interval, integer=True, minimum=0,
                      optional=True)
        _check_number(t, "progress_interval_secs", self.progress_interval_secs, minimum=0)


# ------------------------------------------------------------------------------------- all
@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole simulation: one replica's hardware, the model, scheduler, workload, options.

    Cross-table checks happen here: the weights must fit in ``gpu_memory_utilization`` of the
    memory, and the KV cache must hold at least one block.
    """

    hardware: HardwareConfig
    model: ModelConfig
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    workload: WorkloadConfig
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    def __post_init__(self) -> None:
        for name, cls in (("hardware", HardwareConfig), ("model", ModelConfig),
                          ("scheduler", SchedulerConfig), ("workload", WorkloadConfig),
                          ("simulation", SimulationConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"[{name}] must be a {cls.__name__}", table=name)
        hw = self.hardware
        if not hw.kv_cache_capacity:
            usable = hw.total_memory_capacity * hw.gpu_memory_utilization
            if usable - self.weight_bytes - hw.memory_reserve * hw.tp <= 0:
                reserve = (f" + {hw.memory_reserve * hw.tp / 1e9:.1f} GB memory_reserve"
                           if hw.memory_reserve else "")
                raise ConfigError(
                    f"model does not fit: {self.model.name} needs "
                    f"{self.weight_bytes / 1e9:.1f} GB of weights{reserve}, {hw.name} × "
                    f"tp={hw.tp} has "
                    f"{usable / 1e9:.1f} GB usable ({hw.gpu_memory_utilization:g} of "
                    f"{hw.total_memory_capacity / 1e9:.1f} GB); use more GPUs (hardware.tp), "
                    "a smaller precision (hardware.bytes_per_param) or a bigger GPU",
                    table="hardware", field="memory_capacity")
        if self.model.num_heads % hw.tp:
            raise ConfigError(
                f"[hardware] tp = {hw.tp}: must divide the model's num_heads = "
                f"{self.model.num_heads} (tensor parallelism splits attention heads)",
                table="hardware", field="tp")
        if self.num_gpu_blocks < 1:
            raise ConfigError(
                f"KV cache too small: {self.kv_cache_capacity / 1e9:.3f} GB holds no block of "
                f"{self.scheduler.block_size} tokens × {self.kv_bytes_per_token:.0f} B/token",
                table="hardware", field="kv_cache_capacity")

    # derived sizes ---------------------------------------------------------------------
    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes of one token across the whole replica."""
        return self.model.kv_bytes_per_token(self.hardware.kv_element_bytes)

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights of the model at ``bytes_per_param``."""
        return self.model.num_parameters * self.hardware.bytes_per_param

    @property
    def kv_cache_capacity(self) -> float:
        """KV-cache bytes: as configured, or memory × utilization − weights − reserve × tp."""
        hw = self.hardware
        if hw.kv_cache_capacity:
            return float(hw.kv_cache_capacity)
        free = hw.total_memory_capacity * hw.gpu_memory_utilization - self.weight_bytes
        if hw.memory_reserve:
            free -= hw.memory_reserve * hw.tp
        return free

    @property
    def num_gpu_blocks(self) -> int:
        """KV blocks in the pool: ``floor(capacity / (block_size × kv_bytes_per_token))``."""
        return int(self.kv_cache_capacity
                   // (self.scheduler.block_size * self.kv_bytes_per_token))

    @property
    def num_gpus(self) -> int:
        return self.hardware.tp

    def replace(self, **changes: Any) -> Config:
        """A copy with whole tables replaced (``cfg.replace(scheduler=...)``)."""
        return dataclasses.replace(self, **changes)
