"""simkit.ui: Plotly figures and ipywidgets panels for notebooks and Voila (``simkit[ui]``).

Kept apart from the core: ``import simkit`` never imports this package, plotly or ipywidgets.

- :func:`explorer` — configure, run and chart one simulation live, keep a baseline to compare;
- :func:`capacity_planner` — model, traffic and SLOs → the cheapest deployment that meets them;
- :func:`compare_dashboard` — throughput per GPU vs per-user speed across GPU / TP / precision;
- figure builders (:func:`latency_figure`, :func:`throughput_figure`,
  :func:`utilization_figure`, :func:`summary_table`) for a ``SimResult``, a live ``Snapshot``
  or ``{"baseline": r1, "current": r2}``.
"""

from __future__ import annotations

from simkit.ui.capacity import capacity_planner
from simkit.ui.compare import CompareDashboard, compare_dashboard
from simkit.ui.figures import (
    latency_figure,
    summary_frame,
    summary_table,
    throughput_figure,
    utilization_figure,
)
from simkit.ui.panel import ExplorerPanel, default_config, explorer
from simkit.ui.runs import LiveRun, RunView, as_runs

__all__ = [
    "CompareDashboard",
    "ExplorerPanel",
    "LiveRun",
    "RunView",
    "as_runs",
    "capacity_planner",
    "compare_dashboard",
    "default_config",
    "explorer",
    "latency_figure",
    "summary_frame",
    "summary_table",
    "throughput_figure",
    "utilization_figure",
]
