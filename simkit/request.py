"""One inference request and its lifecycle, as vLLM's ``vllm/v1/request.py`` tracks it.

A request computes ``num_prompt_tokens + max_tokens - 1`` positions in all: the step that
computes the last prompt position also samples output token 1, and each later decode step
computes one position and samples one token. There are no explicit prefill/decode phases: a
step gives a request tokens until ``num_computed_tokens`` catches up with
``num_prompt_tokens + num_output_tokens``; that one rule covers chunked prefill, prefix-cache
hits, resumption after preemption (recompute) and decode.
"""

from __future__ import annotations

import enum

__all__ = ["Request", "RequestStatus"]


class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED = 3
    REJECTED = 4


class Request:
    """Mutable per-request state inside one simulation (times in simulated seconds)."""

    __slots__ = (
        "arrival_time",
        "block_hashes",
        "block_ids",
        "finish_time",
        "first_scheduled_time",
        "first_token_time",
        "group_c0",
        "group_g0",
        "group_o0",
        "group_seq",
        "id",
        "last_token_time",
        "max_tokens",
        "num_blocks",
        "num_cached_tokens",
        "num_computed_tokens",
        "num_hashed_blocks",
        "num_output_tokens",
        "num_preemptions",
        "num_prompt_tokens",
        "priority",
        "status",
        "user",
    )

    def __init__(
        self,
        id: int,
        arrival_time: float,
        num_prompt_tokens: int,
        max_tokens: int,
        *,
        priority: int = 0,
        block_hashes: tuple[int, ...] | None = None,
        user: int = -1,
    ) -> None:
        self.id = id
        self.arrival_time = arrival_time
        self.num_prompt_tokens = num_prompt_tokens
        self.max_tokens = max_tokens
        self.priority = priority
        self.block_hashes = block_hashes
        self.user = user
        self.status = RequestStatus.WAITING
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        self.num_blocks = 0
        self.block_ids: list[int] | None = None
        self.num_cached_tokens = 0
        self.num_hashed_blocks = 0  # prompt blocks whose hash is published (prefix caching)
        self.num_preemptions = 0
        self.first_scheduled_time = -1.0
        self.first_token_time = -1.0
        self.last_token_time = -1.0
        self.finish_time = -1.0

    @property
    def num_tokens(self) -> int:
        """Tokens whose KV must exist before the next token can be sampled."""
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_remaining_tokens(self) -> int:
        """Positions to compute before the next token is sampled (1 while decoding)."""
        return self.num_prompt_tokens + self.num_output_tokens - self.num_computed_tokens

    @property
    def max_total_tokens(self) -> int:
        """Positions the request ever holds in KV: prompt + max_tokens - 1."""
        return self.num_prompt_tokens + self.max_tokens - 1

    def __repr__(self) -> str:
        return (f"Request(id={self.id}, status={self.status.name}, prompt="
                f"{self.num_prompt_tokens}, out={self.num_output_tokens}/{self.max_tokens}, "
                f"computed={self.num_computed_tokens})")
