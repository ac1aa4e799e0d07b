"""What a simulation returns: the summary, per-request and per-interval DataFrames.

Also the :class:`Snapshot` handed to a progress callback while a run is under way, so a UI can
draw live charts from the time series so far and the samples that are new since the previous
snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
else:
    from simkit._lazy import pandas as pd

from simkit.config import Config
from simkit.metrics import Summary

__all__ = ["SimResult", "SimulationInterrupted", "Snapshot"]


@dataclass
class Snapshot:
    """Progress of a running simulation (all times simulated seconds).

    ``timeseries`` is every interval so far (the last one may still be open);
    ``new_timeseries`` the rows closed since the previous snapshot; ``new_requests`` the
    requests finished since then (columns ``ttft_ms``, ``tpot_ms``, ``e2e_ms``, ...).
    ``total_requests`` is the number the workload will send (None if unknown).
    """

    sim_time: float
    num_arrived: int
    num_finished: int
    num_rejected: int
    num_running: int
    num_waiting: int
    num_steps: int
    num_preemptions: int
    total_requests: int | None
    timeseries: pd.DataFrame
    new_timeseries: pd.DataFrame
    new_requests: pd.DataFrame
    done: bool = False

    @property
    def fraction_done(self) -> float | None:
        """Share of the workload's requests that have ended (finished or rejected)."""
        if not self.total_requests:
            return None
        return (self.num_finished + self.num_rejected) / self.total_requests


@dataclass
class SimResult:
    """A finished (or safely stopped) run.

    ``requests``: one row per request that arrived (status ``finished``, ``rejected`` or, for
    a partial run, ``unfinished``), times in seconds and latencies in ms.
    ``timeseries``: one row per ``sample_interval_secs``. ``itl_s``/``itl_count``: the pooled
    inter-token gaps as (value, multiplicity) pairs.
    """

    config: Config
    summary: Summary
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    itl_s: np.ndarray
    itl_count: np.ndarray
    num_steps: int
    wall_time_s: float
    partial: bool = False
    stop_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, path: str | Path, **kwargs: Any) -> None:
        """Write ``summary.to_dict()`` as JSON (the documented schema)."""
        Path(path).write_text(self.summary.to_json(indent=2, **kwargs) + "\n", encoding="utf-8")

    def itl_samples(self) -> np.ndarray:
        """The ITL sample expanded to one value per gap (seconds); may be large."""
        return np.repeat(self.itl_s, self.itl_count)


class SimulationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`simkit.simulate`; ``.result`` holds the partial result."""

    def __init__(self, result: SimResult) -> None:
        super().__init__("simulation interrupted")
        self.result = result
