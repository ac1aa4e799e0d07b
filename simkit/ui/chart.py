"""A chart that callbacks can redraw, in JupyterLab and under Voila alike.

:class:`LiveChart` shows a plain Plotly figure inside an ``ipywidgets.Output`` and redraws it
by replacing the output's content (the ``application/vnd.plotly.v1+json`` mimetype, rendered by
the ``jupyterlab-plotly`` extension shipped in the plotly wheel). This is the second recipe of
``shared/recipes/README.md``: ``FigureWidget`` updates from callbacks were unreliable under
Voila on a loaded machine — anywidget gives each model 2 s to initialize its 5 MB bundle and,
when that times out ("[anywidget] Failed to initialize model"), the chart silently stops
receiving updates. Replacing an output needs no such handshake and works from the simulation
thread. The layout is fixed when the chart is built; each update sends the traces again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["PLOTLY_MIMETYPE", "LiveChart"]

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"
_CONFIG = {"displaylogo": False, "responsive": True}


class LiveChart:
    """A Plotly figure in an ``Output`` widget (``.widget``) that :meth:`update` redraws."""

    def __init__(self, figure: go.Figure, name: str) -> None:
        self.name = name
        self.layout: dict[str, Any] = figure.layout.to_plotly_json()
        self.traces: list[dict[str, Any]] = [t.to_plotly_json() for t in figure.data]
        self.widget = widgets.Output()
        self.widget.add_class("simkit-chart")
        self.widget.add_class(f"simkit-chart-{name}")
        self.revision = 0
        self._push()

    def update(self, traces: Sequence[Mapping[str, Any]]) -> None:
        """Replace the traces (dicts as from the ``*_traces`` builders) and redraw."""
        self.traces = [dict(t) for t in traces]
        self._push()

    @property
    def figure(self) -> go.Figure:
        """The chart as a validated ``go.Figure`` (built on demand)."""
        return go.Figure({"data": self.traces, "layout": self.layout})

    def _push(self) -> None:
        figure = {"data": self.traces, "layout": self.layout}
        payload = json.loads(pio.to_json(figure, validate=False))
        payload["config"] = _CONFIG
        self.revision += 1
        self.widget.outputs = ({
            "output_type": "display_data",
            "metadata": {},
            "data": {PLOTLY_MIMETYPE: payload, "text/plain": f"<{self.name} chart>"},
        },)
