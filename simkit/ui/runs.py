"""What the charts draw: one labelled run, finished or still running.

A :class:`RunView` is the plain data every figure builder reads — the requests finished so far,
the interval time series, the summary (only once a run has finished) and the number of GPUs.
:func:`as_runs` turns whatever a caller has into a list of them: a :class:`~simkit.SimResult`,
a live :class:`~simkit.Snapshot`, a :class:`LiveRun` (which accumulates the requests that
snapshots hand over a few at a time), or a ``{"baseline": r1, "current": r2}`` mapping for a
comparison. Nothing here imports plotly, so it is cheap to use from a progress callback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from simkit import SimResult, Snapshot

__all__ = ["LiveRun", "RunLike", "RunView", "as_runs"]


@dataclass(frozen=True)
class RunView:
    """One run as the charts see it.

    ``requests`` has the columns of ``SimResult.requests`` (possibly only the requests finished
    so far); ``timeseries`` those of ``SimResult.timeseries``; ``summary`` is
    ``Summary.to_dict()`` for a finished (or stopped) run and ``None`` while it runs.
    """

    label: str
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    summary: dict[str, Any] | None = None
    num_gpus: int = 1
    done: bool = True

    @property
    def finished_requests(self) -> pd.DataFrame:
        """Rows of requests that finished (the ones with latencies)."""
        if self.requests.empty or "status" not in self.requests:
            return self.requests
        return self.requests[self.requests["status"] == "finished"]


class LiveRun:
    """Accumulates the snapshots of one running simulation into a :class:`RunView`.

    A snapshot carries every time-series row so far but only the requests finished since the
    previous snapshot, so the latency charts need this running collection.
    """

    def __init__(self, label: str = "current", num_gpus: int = 1) -> None:
        self.label = label
        self.num_gpus = num_gpus
        self._request_parts: list[pd.DataFrame] = []
        self._requests: pd.DataFrame | None = pd.DataFrame()
        self.timeseries = pd.DataFrame()
        self.last: Snapshot | None = None
        self.result: SimResult | None = None

    def update(self, snapshot: Snapshot) -> None:
        """Take in one progress snapshot."""
        self.last = snapshot
        self.timeseries = snapshot.timeseries
        if len(snapshot.new_requests):
            self._request_parts.append(snapshot.new_requests)
            self._requests = None

    def finish(self, result: SimResult) -> None:
        """Replace the accumulated data by the run's final result."""
        self.result = result

    @property
    def requests(self) -> pd.DataFrame:
        if self._requests is None:
            self._requests = pd.concat(self._request_parts, ignore_index=True)
        return self._requests

    def view(self, label: str | None = None) -> RunView:
        """The run so far (or its final result) as a :class:`RunView`."""
        if self.result is not None:
            return _from_result(self.result, label or self.label)
        return RunView(label=label or self.label, requests=self.requests,
                       timeseries=self.timeseries, summary=None, num_gpus=self.num_gpus,
                       done=False)


def _from_result(result: SimResult, label: str) -> RunView:
    return RunView(label=label, requests=result.requests, timeseries=result.timeseries,
                   summary=result.summary.to_dict(), num_gpus=result.config.num_gpus,
                   done=True)


RunLike = SimResult | Snapshot | LiveRun | RunView


def _as_run(obj: Any, label: str) -> RunView:
    if isinstance(obj, RunView):
        return obj if obj.label == label else replace(obj, label=label)
    if isinstance(obj, SimResult):
        return _from_result(obj, label)
    if isinstance(obj, LiveRun):
        return obj.view(label)
    if isinstance(obj, Snapshot):
        return RunView(label=label, requests=obj.new_requests, timeseries=obj.timeseries,
                       summary=None, done=obj.done)
    raise TypeError(f"cannot chart a {type(obj).__name__}: expected a SimResult, Snapshot, "
                    "LiveRun or RunView (or a mapping label -> one of them)")


def as_runs(runs: RunLike | Mapping[str, RunLike] | Sequence[RunLike],
            label: str = "run") -> list[RunView]:
    """Normalize the argument of every figure builder to a list of labelled runs.

    A bare :class:`~simkit.Snapshot` only holds the requests finished since the previous
    snapshot; pass a :class:`LiveRun` to chart all of them.
    """
    if isinstance(runs, Mapping):
        return [_as_run(v, str(k)) for k, v in runs.items()]
    if isinstance(runs, Sequence) and not isinstance(runs, str):
        return [_as_run(v, getattr(v, "label", f"{label} {i + 1}")) for i, v in enumerate(runs)]
    return [_as_run(runs, label)]
