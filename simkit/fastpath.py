"""Closed-form advance of decode-only stretches (placeholder: exact steps only)."""

from __future__ import annotations

from typing import Any


class FastForward:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def advance(self, max_sim: float) -> bool:
        return False
