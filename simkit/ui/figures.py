"""Plotly figures of a run, or of several labelled runs side by side.

Every builder takes what :func:`~simkit.ui.runs.as_runs` accepts — a ``SimResult``, a live
``Snapshot``, a :class:`~simkit.ui.runs.LiveRun`, or ``{"baseline": r1, "current": r2}`` —
and returns a ``plotly.graph_objects.Figure``:

- :func:`latency_figure`: TTFT, TPOT and E2E distributions (CDF or histogram) with p50, p90
  and p99 marked;
- :func:`throughput_figure`: input/output tokens per second over time, and requests running
  and waiting;
- :func:`utilization_figure`: compute, memory-bandwidth and KV-cache utilization over time;
- :func:`summary_table`: the headline numbers, one column per run.

The trace data comes from ``*_traces`` functions returning plain dicts, so a live chart
(:class:`~simkit.ui.chart.LiveChart`) can be redrawn from a progress callback without
rebuilding its layout or validating every trace again. The last run of a comparison is drawn solid,
earlier ones (baselines) dashed. Percentiles use numpy's linear interpolation, the definition
of the summary (spec section 5).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from simkit.ui.runs import RunView, as_runs

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "LATENCY_METRICS",
    "SUMMARY_ROWS",
    "latency_figure",
    "latency_traces",
    "summary_frame",
    "summary_html",
    "summary_table",
    "throughput_figure",
    "throughput_traces",
    "utilization_figure",
    "utilization_traces",
]

#: (column of the requests table, chart title) of the latency distributions.
LATENCY_METRICS: tuple[tuple[str, str], ...] = (
    ("ttft_ms", "TTFT (ms)"),
    ("tpot_ms", "TPOT (ms)"),
    ("e2e_ms", "E2E latency (ms)"),
)
MARKED_PERCENTILES = (50, 90, 99)
MAX_CDF_POINTS = 1000
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
SERIES_COLORS = {
    "input": "#1f77b4", "output": "#ff7f0e", "running": "#2ca02c", "waiting": "#d62728",
    "compute": "#9467bd", "bandwidth": "#17becf", "kv": "#8c564b",
}
HEIGHT = 330


def _dash(index: int, count: int) -> str:
    """The last run (the current one) solid; earlier ones dashed/dotted."""
    if index == count - 1:
        return "solid"
    return ("dash", "dot", "dashdot", "longdash")[index % 4]


def _values(run: RunView, column: str) -> np.ndarray:
    """Finite values of one latency column over the finished requests, sorted."""
    df = run.finished_requests
    if df.empty or column not in df:
        return np.empty(0)
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    return np.sort(values[np.isfinite(values)])


def _cdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF (x sorted, y = rank / n), thinned to at most MAX_CDF_POINTS points."""
    n = values.size
    if n == 0:
        return values, values
    y = np.arange(1, n + 1) / n
    if n > MAX_CDF_POINTS:
        keep = np.unique(np.linspace(0, n - 1, MAX_CDF_POINTS).round().astype(int))
        return values[keep], y[keep]
    return values, y


# ----------------------------------------------------------------------------------- latency
def latency_traces(runs: Any, kind: Literal["cdf", "hist"] = "cdf") -> list[dict[str, Any]]:
    """Traces of :func:`latency_figure`: per metric and run, the distribution and its marks.

    The marks are a scatter of the p50, p90 and p99 of the finished requests' values.
    """
    if kind not in ("cdf", "hist"):
        raise ValueError(f"kind = {kind!r}: must be 'cdf' or 'hist'")
    views = as_runs(runs)
    traces: list[dict[str, Any]] = []
    for m, (column, title) in enumerate(LATENCY_METRICS):
        axis = "" if m == 0 else str(m + 1)
        for i, run in enumerate(views):
            values = _values(run, column)
            color = RUN_COLORS[i % len(RUN_COLORS)]
            common = {"xaxis": f"x{axis}", "yaxis": f"y{axis}", "legendgroup": run.label}
            if kind == "cdf":
                x, y = _cdf_points(values)
                traces.append({"type": "scatter", "mode": "lines", "name": run.label,
                               "x": x, "y": y, "showlegend": m == 0,
                               "line": {"color": color, "dash": _dash(i, len(views))},
                               "hovertemplate": f"{title}: %{{x:.1f}}<br>CDF %{{y:.3f}}"
                                                "<extra>%{fullData.name}</extra>", **common})
            else:
                traces.append({"type": "histogram", "name": run.label, "x": values,
                               "opacity": 0.6, "marker": {"color": color},
                               "showlegend": m == 0, **common})
            pct = (np.percentile(values, MARKED_PERCENTILES) if values.size
                   else np.empty(0))
            marks_y = ([q / 100 for q in MARKED_PERCENTILES] if kind == "cdf"
                       else [0.0] * len(MARKED_PERCENTILES))
            traces.append({"type": "scatter", "mode": "markers+text",
                           "name": f"{run.label} p50/p90/p99", "x": pct,
                           "y": marks_y[:pct.size],
                           "text": [f"p{q}" for q in MARKED_PERCENTILES][:pct.size],
                           "textposition": "middle left" if kind == "cdf" else "top center",
                           "marker": {"color": color, "size": 8,
                                      "symbol": "circle" if kind == "cdf" else "triangle-up"},
                           "showlegend": False,
                           "hovertemplate": "%{text}: %{x:.1f} ms<extra>" + html.escape(
                               run.label) + "</extra>", **common})
    return traces


def _subplot_layout(titles: Sequence[str], *, rows: int, cols: int, height: int,
                    shared_x: bool = False) -> go.Figure:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles),
                        shared_xaxes=shared_x, vertical_spacing=0.12, horizontal_spacing=0.07)
    fig.update_layout(template="plotly_white", height=height,
                      margin={"l": 55, "r": 20, "t": 60, "b": 45},
                      legend={"orientation": "h", "y": 1.13, "x": 0, "yanchor": "bottom"})
    return fig


def latency_figure(runs: Any, kind: Literal["cdf", "hist"] = "cdf") -> go.Figure:
    """TTFT, TPOT and E2E distributions of finished requests, p50/p90/p99 marked."""
    fig = _subplot_layout([t for _, t in LATENCY_METRICS], rows=1, cols=3, height=HEIGHT)
    fig.add_traces(latency_traces(runs, kind))
    fig.update_yaxes(title_text="CDF" if kind == "cdf" else "requests", row=1, col=1)
    if kind == "cdf":
        fig.update_yaxes(range=[0, 1.02])
    else:
        fig.update_layout(barmode="overlay")
    fig.update_layout(title={"text": "Latency distributions", "x": 0, "y": 0.99,
                             "font": {"size": 14}})
    return fig


# ----------------------------------------------------------------------------- time series
def _series(run: RunView, column: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    ts = run.timeseries
    if ts.empty or column not in ts:
        return np.empty(0), np.empty(0)
    x = ts["time_s"].to_numpy(dtype=float)
    y = ts[column].to_numpy(dtype=float) * scale
    return x, y


def _line_traces(views: list[RunView], specs: Sequence[tuple[str, str, str, float, str]],
                 ) -> list[dict[str, Any]]:
    """One line per (spec, run); spec = (column, name, color key, scale, axis suffix)."""
    traces = []
    for column, name, color, scale, axis in specs:
        for i, run in enumerate(views):
            x, y = _series(run, column, scale)
            label = name if len(views) == 1 else f"{name} ({run.label})"
            traces.append({"type": "scatter", "mode": "lines", "name": label, "x": x, "y": y,
                           "xaxis": f"x{axis}", "yaxis": f"y{axis}",
                           "line": {"color": SERIES_COLORS[color],
                                    "dash": _dash(i, len(views))}})
    return traces


_THROUGHPUT_SPECS = (
    ("input_tokens_per_s", "input tok/s", "input", 1.0, ""),
    ("output_tokens_per_s", "output tok/s", "output", 1.0, ""),
    ("running", "running", "running", 1.0, "2"),
    ("waiting", "waiting", "waiting", 1.0, "2"),
)
_UTILIZATION_SPECS = (
    ("compute_utilization", "compute", "compute", 100.0, ""),
    ("bandwidth_utilization", "memory bandwidth", "bandwidth", 100.0, ""),
    ("kv_cache_utilization", "KV cache", "kv", 100.0, ""),
)


def throughput_traces(runs: Any) -> list[dict[str, Any]]:
    """Traces of :func:`throughput_figure`."""
    return _line_traces(as_runs(runs), _THROUGHPUT_SPECS)


def utilization_traces(runs: Any) -> list[dict[str, Any]]:
    """Traces of :func:`utilization_figure`."""
    return _line_traces(as_runs(runs), _UTILIZATION_SPECS)


def throughput_figure(runs: Any) -> go.Figure:
    """Tokens per second (input, output) and requests running / waiting per interval."""
    fig = _subplot_layout(["Throughput (tokens/s)", "Requests running / waiting"], rows=1,
                          cols=2, height=HEIGHT)
    fig.add_traces(throughput_traces(runs))
    fig.update_xaxes(title_text="simulated time (s)")
    fig.update_yaxes(rangemode="tozero")
    return fig


def utilization_figure(runs: Any) -> go.Figure:
    """Compute, memory-bandwidth and KV-cache utilization (%) per interval."""
    fig = _subplot_layout(["Utilization (%)"], rows=1, cols=1, height=HEIGHT)
    fig.add_traces(utilization_traces(runs))
    fig.update_xaxes(title_text="simulated time (s)")
    fig.update_yaxes(range=[0, 105])
    return fig


# -------------------------------------------------------------------------------- summary
def _stat(section: str, key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda s: (s.get(section) or {}).get(key)


def _pct(section: str, key: str) -> Callable[[dict[str, Any]], Any]:
    def get(s: dict[str, Any]) -> Any:
        value = (s.get(section) or {}).get(key)
        return None if value is None else 100.0 * value
    return get


#: (key, label, getter on ``Summary.to_dict()``, number format) of the summary table rows.
SUMMARY_ROWS: tuple[tuple[str, str, Callable[[dict[str, Any]], Any], str], ...] = (
    ("counts.finished", "requests finished", _stat("counts", "finished"), "{:,.0f}"),
    ("counts.rejected", "requests rejected", _stat("counts", "rejected"), "{:,.0f}"),
    ("ttft_ms.p50", "TTFT p50 (ms)", _stat("ttft_ms", "p50"), "{:,.1f}"),
    ("ttft_ms.p90", "TTFT p90 (ms)", _stat("ttft_ms", "p90"), "{:,.1f}"),
    ("ttft_ms.p99", "TTFT p99 (ms)", _stat("ttft_ms", "p99"), "{:,.1f}"),
    ("tpot_ms.p50", "TPOT p50 (ms)", _stat("tpot_ms", "p50"), "{:,.2f}"),
    ("tpot_ms.p90", "TPOT p90 (ms)", _stat("tpot_ms", "p90"), "{:,.2f}"),
    ("tpot_ms.p99", "TPOT p99 (ms)", _stat("tpot_ms", "p99"), "{:,.2f}"),
    ("e2e_ms.p50", "E2E p50 (ms)", _stat("e2e_ms", "p50"), "{:,.0f}"),
    ("e2e_ms.p90", "E2E p90 (ms)", _stat("e2e_ms", "p90"), "{:,.0f}"),
    ("e2e_ms.p99", "E2E p99 (ms)", _stat("e2e_ms", "p99"), "{:,.0f}"),
    ("throughput.requests_per_s", "requests/s", _stat("throughput", "requests_per_s"),
     "{:,.2f}"),
    ("throughput.input_tokens_per_s", "input tok/s", _stat("throughput", "input_tokens_per_s"),
     "{:,.0f}"),
    ("throughput.output_tokens_per_s", "output tok/s",
     _stat("throughput", "output_tokens_per_s"), "{:,.0f}"),
    ("throughput.output_tokens_per_s_per_gpu", "output tok/s per GPU",
     _stat("throughput", "output_tokens_per_s_per_gpu"), "{:,.0f}"),
    ("throughput.output_tokens_per_s_per_user", "output tok/s per user",
     _stat("throughput", "output_tokens_per_s_per_user"), "{:,.1f}"),
    ("utilization.compute", "compute utilization (%)", _pct("utilization", "compute"),
     "{:.1f}"),
    ("utilization.memory_bandwidth", "bandwidth utilization (%)",
     _pct("utilization", "memory_bandwidth"), "{:.1f}"),
    ("utilization.kv_cache_peak", "KV cache peak (%)", _pct("utilization", "kv_cache_peak"),
     "{:.1f}"),
    ("counts.preemptions", "preemptions", _stat("counts", "preemptions"), "{:,.0f}"),
    ("duration_s", "simulated duration (s)", lambda s: s.get("duration_s"), "{:,.2f}"),
)


def _partial_summary(run: RunView) -> dict[str, Any]:
    """What can be said of a run still going: latency percentiles of the finished requests."""
    out: dict[str, Any] = {"counts": {"finished": len(run.finished_requests)}}
    for column, _ in LATENCY_METRICS:
        values = _values(run, column)
        if values.size:
            p50, p90, p99 = np.percentile(values, MARKED_PERCENTILES)
            out[column] = {"p50": p50, "p90": p90, "p99": p99}
    return out


def summary_frame(runs: Any) -> pd.DataFrame:
    """The summary numbers, one row per :data:`SUMMARY_ROWS` key and one column per run.

    Finished runs use their ``Summary``; a running one only the finished requests so far
    (other cells NaN).
    """
    views = as_runs(runs)
    columns = {}
    for run in views:
        summary = run.summary if run.summary is not None else _partial_summary(run)
        column = []
        for _, _, get, _ in SUMMARY_ROWS:
            value = get(summary)
            column.append(math.nan if value is None else float(value))
        columns[run.label] = column
    return pd.DataFrame(columns, index=[key for key, *_ in SUMMARY_ROWS])


def _fmt(value: float, fmt: str) -> str:
    return "—" if not math.isfinite(value) else fmt.format(value)


def summary_html(runs: Any) -> str:
    """The summary as an HTML table (class ``simkit-summary-table``).

    Each value cell carries ``data-key`` (e.g. ``ttft_ms.p50``), ``data-run`` and
    ``data-value`` (full precision) so tests and scripts can read it back.
    """
    frame = summary_frame(runs)
    head = "".join(f'<th style="text-align:right;padding:1px 10px">{html.escape(str(c))}</th>'
                   for c in frame.columns)
    rows = []
    for key, label, _, fmt in SUMMARY_ROWS:
        cells = "".join(
            f'<td class="simkit-value" style="text-align:right;padding:1px 10px" '
            f'data-key="{key}" data-run="{html.escape(str(run))}" '
            f'data-value="{float(frame.at[key, run])!r}">{_fmt(frame.at[key, run], fmt)}</td>'
            for run in frame.columns)
        rows.append(f'<tr><th style="text-align:left;padding:1px 12px 1px 0">'
                    f"{html.escape(label)}</th>{cells}</tr>")
    return (
        '<table class="simkit-summary-table" style="border-collapse:collapse;'
        'font-variant-numeric:tabular-nums">'
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def summary_table(runs: Any) -> go.Figure:
    """The summary numbers as a Plotly table, one column per run."""
    import plotly.graph_objects as go

    frame = summary_frame(runs)
    formats = [fmt for *_, fmt in SUMMARY_ROWS]
    cells = [[label for _, label, *_ in SUMMARY_ROWS]]
    cells += [[_fmt(v, f) for v, f in zip(frame[c], formats, strict=True)] for c in frame.columns]
    fig = go.Figure(go.Table(
        header={"values": ["", *map(str, frame.columns)], "align": "left"},
        cells={"values": cells, "align": ["left"] + ["right"] * len(frame.columns)}))
    fig.update_layout(template="plotly_white", height=40 + 24 * len(SUMMARY_ROWS),
                      margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig
