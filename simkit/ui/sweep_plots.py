"""Plotly figures for sweeps: the Pareto frontier, an SLO search, a capacity plan.

Each function takes the plain results of :mod:`simkit.sweeps` / :mod:`simkit.analysis` (a
DataFrame, a :class:`~simkit.analysis.SloSearchResult`, a :class:`~simkit.analysis.CapacityPlan`)
and returns a static ``plotly.graph_objects.Figure``; plotly is imported only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from simkit.analysis import CapacityPlan, SloSearchResult, meets_slo, pareto_frontier

__all__ = ["capacity_figure", "frontier_figure", "slo_search_figure"]

_LABELS = {
    "output_tokens_per_s_per_gpu": "output tokens/s per GPU",
    "output_tokens_per_s_per_user": "output tokens/s per user",
    "usd_per_million_output_tokens": "$ per million output tokens",
    "throughput.output_tokens_per_s": "output tokens/s",
    "ttft_ms.p99": "TTFT p99 (ms)", "ttft_ms.p50": "TTFT p50 (ms)",
    "tpot_ms.p50": "TPOT p50 (ms)", "tpot_ms.p99": "TPOT p99 (ms)",
    "e2e_ms.p50": "E2E p50 (ms)", "e2e_ms.p99": "E2E p99 (ms)",
    "workload.arrival_rate": "arrival rate (req/s)",
    "workload.num_concurrent_users": "concurrent users",
    "num_gpus": "GPUs",
}


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def _hover(df: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    def fmt(v: Any) -> str:
        return f"{v:,.4g}" if isinstance(v, float) else str(v)
    return ["<br>".join(f"{c}: {fmt(r[c])}" for c in cols) for _, r in df.iterrows()]


def frontier_figure(
    df: pd.DataFrame,
    x: str = "output_tokens_per_s_per_user",
    y: str = "output_tokens_per_s_per_gpu",
    *,
    color: str | None = "hardware.preset",
    maximize: tuple[bool, bool] = (True, True),
    slo: Mapping[str, float] | None = None,
    hover: Sequence[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Every successful row as a point (one trace per ``color`` value) and the Pareto frontier.

    With ``slo``, rows that miss it are drawn as hollow markers and the frontier is taken over
    the rows that meet it. ``hover`` lists the columns shown on hover (default: the swept
    columns before the metrics plus x and y).
    """
    ok = df[df["error"].isna()] if "error" in df.columns else df
    ok = ok[pd.to_numeric(ok[x], errors="coerce").notna()
            & pd.to_numeric(ok[y], errors="coerce").notna()]
    meets = meets_slo(ok, slo) if slo else pd.Series(True, index=ok.index)
    if hover is None:
        first_metric = next((i for i, c in enumerate(df.columns) if c == "ttft_ms.mean"),
                            len(df.columns))
        swept = [c for c in df.columns[:first_metric] if c != "meets"][:6]
        hover = [*swept, x, y]
        if slo:
            hover += [m for m in slo if m not in hover]
    hover = [c for c in hover if c in df.columns]
    fig = go.Figure()
    groups = [(str(k), g) for k, g in ok.groupby(color, sort=True)] \
        if color and color in ok.columns else [("runs", ok)]
    for name, group in groups:
        for passing in (True, False):
            part = group[meets.loc[group.index] == passing]
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part[x], y=part[y], mode="markers", name=name if passing else
                f"{name} (misses SLO)", legendgroup=name,
                marker={"size": 9, "symbol": "circle" if passing else "circle-open"},
                text=_hover(part, hover), hovertemplate="%{text}<extra></extra>"))
    base = ok[meets] if slo else ok
    if len(base):
        front = pareto_frontier(base, x, y, maximize=maximize)
        fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines", name="Pareto frontier",
                                 line={"color": "black", "dash": "dash", "shape": "hv"
                                       if maximize == (True, True) else "linear"},
                                 hoverinfo="skip"))
    fig.update_layout(title=title or f"{_label(y)} vs {_label(x)}",
                      xaxis_title=_label(x), yaxis_title=_label(y), template="plotly_white",
                      legend={"groupclick": "togglegroup"}, margin={"t": 50})
    return fig


def slo_search_figure(result: SloSearchResult, title: str | None = None) -> go.Figure:
    """Each SLO metric against the knob at every simulated point, with the bounds and limit.

    Points that meet the whole SLO are green, the others red; dashed lines are the bounds and
    the dotted vertical line the largest load found to meet the SLO.
    """
    pts = result.points.sort_values(result.knob, kind="stable")
    metrics = list(result.slo)
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True,
                        subplot_titles=[_label(m) for m in metrics], vertical_spacing=0.12)
    colors = ["#2ca02c" if m else "#d62728" for m in pts["meets"]]
    for i, metric in enumerate(metrics, start=1):
        fig.add_trace(go.Scatter(
            x=pts[result.knob], y=pts[metric], mode="lines+markers", name=_label(metric),
            marker={"color": colors, "size": 9}, line={"color": "#888"}, showlegend=False,
            hovertemplate=f"{_label(result.knob)}: %{{x:,.4g}}<br>{_label(metric)}: "
                          "%{y:,.4g}<extra></extra>"), row=i, col=1)
        fig.add_hline(y=result.slo[metric], line_dash="dash", line_color="#d62728", row=i,
                      col=1, annotation_text=f"SLO {result.slo[metric]:g}")
        if result.best is not None:
            fig.add_vline(x=result.best, line_dash="dot", line_color="#2ca02c", row=i, col=1)
    limit = "none" if result.best is None else f"{result.best:,.4g}"
    fig.update_xaxes(title_text=_label(result.knob), row=len(metrics), col=1)
    fig.update_layout(title=title or f"SLO search: largest {_label(result.knob)} meeting the "
                      f"SLO = {limit}", template="plotly_white", margin={"t": 70},
                      height=260 * len(metrics) + 80)
    return fig


def capacity_figure(plan: CapacityPlan, label_cols: Sequence[str] | None = None,
                    title: str | None = None) -> go.Figure:
    """GPUs each candidate needs for the load (bars; cost on hover), best first."""
    table = plan.table
    if label_cols is None:
        first = list(table.columns).index("meets")
        label_cols = list(table.columns[:first])
    labels = [" ".join(str(r[c]) for c in label_cols if not pd.isna(r[c]))
              for _, r in table.iterrows()]
    feasible = table["meets"].astype(bool)
    gpus = pd.to_numeric(table["num_gpus"], errors="coerce").where(feasible)
    notes = []
    for _, r in table.iterrows():
        if isinstance(r.get("error"), str):
            notes.append(r["error"][:80])
        elif not r["meets"]:
            notes.append(str(r.get("note") or "misses the SLO"))
        else:
            usd = r.get("usd_per_hour")
            notes.append(f"{int(r['replicas'])} replica(s), "
                         + (f"${usd:,.2f}/h" if not pd.isna(usd) else "no price"))
    fig = go.Figure(go.Bar(
        x=labels, y=gpus, text=[str(int(g)) if not pd.isna(g) else "✗" for g in gpus],
        textposition="outside", customdata=notes,
        marker_color=["#1f77b4" if f else "#cccccc" for f in feasible],
        hovertemplate="%{x}<br>%{y} GPUs<br>%{customdata}<extra></extra>"))
    fig.update_layout(title=title or f"GPUs needed for {plan.load:g} "
                      f"({_label(plan.knob)}) within the SLO", yaxis_title="GPUs",
                      template="plotly_white", margin={"t": 50})
    return fig
