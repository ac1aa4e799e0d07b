"""Tiny hand-checkable scenarios shared by the core tests.

``tiny_config`` builds a replica whose roofline is negligible (1e30 FLOP/s and B/s) and whose
fixed per-step overhead ``beta`` is exactly 1 s, so every engine step takes exactly one second
and all times in a run are small integers one can work out on paper. The model has one layer,
one head of width 1, so one token of KV is 2 bytes at ``bytes_per_param = 1``; the KV cache
holds ``num_blocks`` blocks of ``block_size`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import simkit


def tiny_dict(*, num_blocks: int = 16, block_size: int = 4, max_num_batched_tokens: int = 8,
              max_num_seqs: int = 8, **scheduler: Any) -> dict[str, Any]:
    """The nested dict of a tiny config (see module docstring)."""
    kv_bytes_per_token = 2  # 2 (K and V) x 1 layer x 1 head x width 1 x 1 byte
    return {
        "hardware": {"name": "tiny", "compute_flops": 1e30, "memory_bandwidth": 1e30,
                     "memory_capacity": 1e12, "bytes_per_param": 1, "beta": 1.0,
                     "kv_cache_capacity": num_blocks * block_size * kv_bytes_per_token},
        "model": {"name": "tiny", "num_parameters": 1000, "num_layers": 1, "hidden_dim": 1,
                  "num_heads": 1, "max_seq_len": 100_000},
        "scheduler": {"max_num_batched_tokens": max_num_batched_tokens,
                      "max_num_seqs": max_num_seqs, "block_size": block_size, **scheduler},
        "workload": {"arrival_pattern": "batched", "num_requests": 1},
    }


def tiny_config(**kwargs: Any) -> simkit.Config:
    return simkit.config_from_dict(tiny_dict(**kwargs))


def plan(prompts: Sequence[int], outputs: Sequence[int], arrivals: Sequence[float] | None = None,
         *, priorities: Sequence[int] | None = None,
         hashes: Sequence[tuple[int, ...]] | None = None) -> simkit.RequestPlan:
    """An open-loop plan of explicit requests (ids in the given order)."""
    n = len(prompts)
    return simkit.RequestPlan(
        num_prompt_tokens=list(prompts), max_tokens=list(outputs),
        priorities=list(priorities) if priorities is not None else [0] * n,
        arrival_times=list(arrivals) if arrivals is not None else [0.0] * n,
        block_hashes=list(hashes) if hashes is not None else None)


def run(config: simkit.Config, p: simkit.RequestPlan, **kwargs: Any) -> simkit.SimResult:
    """Simulate in exact (step-by-step) mode."""
    return simkit.simulate(config, plan=p, mode="exact", **kwargs)


def col(result: simkit.SimResult, name: str) -> list[Any]:
    """One column of ``result.requests`` in request-id order, as a plain list."""
    return result.requests.sort_values("request_id")[name].tolist()
