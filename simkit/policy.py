"""Scheduling policies: the admission order of waiting requests and the preemption victim.

A policy is two key functions. Waiting requests are admitted in increasing ``admit_key``; the
preemption victim is the running candidate with the largest ``victim_key``. Ties break by
arrival order (then id): the earlier request is admitted first and preempted last. ``fcfs`` is
special-cased by the scheduler for speed and for vLLM's exact behaviour (a deque; the victim is
the last request in running order). Users may pass their own :class:`Policy`.

=========  ===============================  =============================
policy     admitted first                   preempted first
=========  ===============================  =============================
fcfs       earliest arrival                 last in running order
priority   lowest (priority, arrival)       highest (priority, arrival)
sjf / sof  fewest max_tokens                most remaining output
lof        most max_tokens                  most remaining output
sif        shortest prompt                  longest prompt
lif        longest prompt                   longest prompt
stf        smallest prompt + max_tokens     most remaining total
ltf        largest prompt + max_tokens      most remaining total
=========  ===============================  =============================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simkit.errors import ConfigError
from simkit.request import Request

__all__ = ["Policy", "make_policy"]

Key = Callable[[Request], Any]


@dataclass(frozen=True)
class Policy:
    """A named pair of key functions (see module docstring)."""

    name: str
    admit_key: Key
    victim_key: Key


def _remaining_output(r: Request) -> int:
    return r.max_tokens - r.num_output_tokens


def _remaining_total(r: Request) -> int:
    return r.num_prompt_tokens + r.max_tokens - r.num_computed_tokens


def _tie(r: Request) -> tuple[float, int]:
    return (r.arrival_time, r.id)


_POLICIES: dict[str, Policy] = {
    "fcfs": Policy("fcfs", lambda r: _tie(r), lambda r: _tie(r)),
    "priority": Policy("priority", lambda r: (r.priority, *_tie(r)),
                       lambda r: (r.priority, *_tie(r))),
    "sjf": Policy("sjf", lambda r: (r.max_tokens, *_tie(r)),
                  lambda r: (_remaining_output(r), *_tie(r))),
    "lof": Policy("lof", lambda r: (-r.max_tokens, *_tie(r)),
                  lambda r: (_remaining_output(r), *_tie(r))),
    "sif": Policy("sif", lambda r: (r.num_prompt_tokens, *_tie(r)),
                  lambda r: (r.num_prompt_tokens, *_tie(r))),
    "lif": Policy("lif", lambda r: (-r.num_prompt_tokens, *_tie(r)),
                  lambda r: (r.num_prompt_tokens, *_tie(r))),
    "stf": Policy("stf", lambda r: (r.num_prompt_tokens + r.max_tokens, *_tie(r)),
                  lambda r: (_remaining_total(r), *_tie(r))),
    "ltf": Policy("ltf", lambda r: (-(r.num_prompt_tokens + r.max_tokens), *_tie(r)),
                  lambda r: (_remaining_total(r), *_tie(r))),
}
_POLICIES["sof"] = Policy("sof", _POLICIES["sjf"].admit_key, _POLICIES["sjf"].victim_key)


def make_policy(policy: str | Policy) -> Policy:
    """Resolve a policy name (``[scheduler] policy``) or pass a user's Policy through."""
    if isinstance(policy, Policy):
        return policy
    try:
        return _POLICIES[policy]
    except KeyError:
        raise ConfigError(f"[scheduler] policy = {policy!r}: must be one of "
                          f"{', '.join(_POLICIES)}", table="scheduler", field="policy") from None
