"""Exception types that simkit documents as part of its API.

Every error a user can cause by bad input is a :class:`SimkitError`; callers (the CLI, the
dashboards, sweeps) catch that one type and show its message. Anything else escaping simkit is
a bug in simkit.
"""

from __future__ import annotations

__all__ = ["ConfigError", "SimkitError", "SimulationError", "TraceError"]


class SimkitError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(SimkitError, ValueError):
    """A configuration value is missing, of the wrong type, or out of its allowed range.

    The message names the table, the field, the offending value and what is allowed, e.g.
    ``[scheduler] block_size = 0: must be an integer >= 1``.
    """

    def __init__(self, message: str, *, table: str | None = None, field: str | None = None):
        super().__init__(message)
        self.table = table
        self.field = field


class TraceError(SimkitError, ValueError):
    """A request trace file cannot be read: missing columns, bad timestamps, no rows."""


class SimulationError(SimkitError, RuntimeError):
    """The simulation cannot make progress (e.g. nothing can ever be scheduled)."""
