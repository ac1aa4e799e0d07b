"""Compare deployments: throughput per GPU against per-user speed, InferenceMAX style.

For one model, every combination of GPU preset × TP × precision is run as a closed loop at
several concurrencies (users), with fixed input and output lengths. Each run is one point:
x = output tokens/s per user (how fast one user sees tokens), y = output tokens/s per GPU
(what the hardware delivers); a configuration's points, joined in order of concurrency, trace
its trade-off curve. :func:`comparison_points` builds the configs, :func:`run_comparison` the
table, :func:`tradeoff_figure` the chart and :class:`CompareDashboard` the widgets.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

import simkit
from simkit import Config, SimkitError
from simkit.ui.chart import LiveChart
from simkit.ui.controls import PRECISIONS
from simkit.ui.panel import show_error

__all__ = [
    "CompareDashboard",
    "ComparisonPoint",
    "compare_dashboard",
    "comparison_points",
    "run_comparison",
    "tradeoff_figure",
    "tradeoff_traces",
]

_PRECISION_NAMES = {value: name for name, value in PRECISIONS}
TABLE_COLUMNS = ("configuration", "gpu", "tp", "precision", "concurrency",
                 "output_tokens_per_s_per_gpu", "output_tokens_per_s_per_user",
                 "ttft_p50_ms", "tpot_p50_ms", "e2e_p50_ms", "finished", "error")


@dataclass(frozen=True)
class ComparisonPoint:
    """One run of a comparison: its configuration label, concurrency and config (or error)."""

    label: str
    gpu: str
    tp: int
    precision: str
    concurrency: int
    config: Config | None
    error: str | None = None


def comparison_points(model: str, gpus: Sequence[str], tps: Sequence[int],
                      precisions: Sequence[float], concurrencies: Sequence[int], *,
                      input_len: int = 1024, output_len: int = 1024,
                      requests_per_user: int = 2, max_num_batched_tokens: int = 8192,
                      seed: int = 42) -> list[ComparisonPoint]:
    """The configs of a comparison, one per GPU × TP × precision × concurrency.

    A combination that is not valid (e.g. the model does not fit) is kept with its error
    message instead of a config, so the table can say why it is missing. ``max_num_seqs`` is
    the concurrency, so every user is served at once when memory allows.
    """
    points = []
    for gpu in gpus:
        for tp in tps:
            for bpp in precisions:
                precision = _PRECISION_NAMES.get(bpp, f"{bpp:g} B")
                label = f"{gpu} × {tp} {precision}"
                for users in concurrencies:
                    data = {
                        "hardware": {"preset": gpu, "tp": tp, "bytes_per_param": bpp},
                        "model": {"preset": model},
                        "scheduler": {"max_num_batched_tokens": max_num_batched_tokens,
                                      "max_num_seqs": users},
                        "workload": {"arrival_pattern": "closed_loop",
                                     "num_concurrent_users": users,
                                     "num_requests": users * requests_per_user, "seed": seed,
                                     "input_len_dist": {"type": "fixed", "value": input_len},
                                     "output_len_dist": {"type": "fixed",
                                                         "value": output_len}},
                    }
                    try:
                        config: Config | None = simkit.config_from_dict(data)
                        error = None
                    except SimkitError as exc:
                        config, error = None, str(exc)
                    points.append(ComparisonPoint(label, gpu, tp, precision, users, config,
                                                  error))
    return points


def _row(point: ComparisonPoint, result: simkit.SimResult | None,
         error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"configuration": point.label, "gpu": point.gpu, "tp": point.tp,
                           "precision": point.precision, "concurrency": point.concurrency}
    if result is None:
        row.update(dict.fromkeys(TABLE_COLUMNS[5:-1], float("nan")), error=error)
        return row
    s = result.summary
    row.update(output_tokens_per_s_per_gpu=s.throughput["output_tokens_per_s_per_gpu"],
               output_tokens_per_s_per_user=s.throughput["output_tokens_per_s_per_user"],
               ttft_p50_ms=s.ttft_ms["p50"], tpot_p50_ms=s.tpot_ms["p50"],
               e2e_p50_ms=s.e2e_ms["p50"], finished=s.counts["finished"],
               error="partial: " + str(result.stop_reason) if result.partial else None)
    return row


def run_comparison(points: Sequence[ComparisonPoint],
                   on_row: Callable[[int, dict[str, Any]], bool | None] | None = None,
                   ) -> pd.DataFrame:
    """Simulate every point; one table row each (:data:`TABLE_COLUMNS`).

    ``on_row(index, row)`` is called after each point; returning False stops the comparison.
    """
    rows = []
    for i, point in enumerate(points):
        if point.config is None:
            row = _row(point, None, point.error)
        else:
            try:
                row = _row(point, simkit.simulate(point.config), None)
            except SimkitError as exc:
                row = _row(point, None, str(exc))
        rows.append(row)
        if on_row is not None and on_row(i, row) is False:
            break
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def tradeoff_traces(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One line+markers trace per configuration: x per-user speed, y throughput per GPU."""
    traces = []
    ok = table[table["error"].isna()] if len(table) else table
    for label, group in ok.groupby("configuration", sort=False):
        group = group.sort_values("concurrency")
        traces.append({
            "type": "scatter", "mode": "lines+markers+text", "name": str(label),
            "x": group["output_tokens_per_s_per_user"].to_numpy(dtype=float),
            "y": group["output_tokens_per_s_per_gpu"].to_numpy(dtype=float),
            "text": [f"{c}" for c in group["concurrency"]], "textposition": "top center",
            "customdata": group[["concurrency", "ttft_p50_ms"]].to_numpy(dtype=float),
            "hovertemplate": ("%{customdata[0]:.0f} users<br>%{x:.1f} tok/s per user<br>"
                              "%{y:,.0f} tok/s per GPU<br>TTFT p50 %{customdata[1]:.0f} ms"
                              "<extra>%{fullData.name}</extra>"),
        })
    return traces


def tradeoff_figure(table: pd.DataFrame) -> go.Figure:
    """Throughput per GPU vs output speed per user; labels are the concurrencies."""
    fig = go.Figure(tradeoff_traces(table))
    fig.update_layout(template="plotly_white", height=460,
                      title={"text": "Throughput per GPU vs speed per user "
                                     "(points labelled with concurrency)",
                             "font": {"size": 14}},
                      xaxis_title="output tokens/s per user (interactivity)",
                      yaxis_title="output tokens/s per GPU",
                      margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(rangemode="tozero")
    fig.update_yaxes(rangemode="tozero")
    return fig


def table_html(table: pd.DataFrame) -> str:
    """The comparison table as HTML (class ``simkit-compare-table``)."""
    def fmt(value: Any, digits: int) -> str:
        if isinstance(value, float):
            return "—" if value != value else f"{value:,.{digits}f}"
        return "" if value is None else html.escape(str(value))

    num = 'style="text-align:right;padding:1px 10px"'
    head = "".join(f"<th {num}>{h}</th>" for h in (
        "users", "tok/s per GPU", "tok/s per user", "TTFT p50 (ms)", "TPOT p50 (ms)",
        "E2E p50 (ms)"))
    body = "".join(
        f'<tr><td style="padding:1px 10px 1px 0">{fmt(r.configuration, 0)}</td>'
        f"<td {num}>{r.concurrency}</td>"
        f"<td {num}>{fmt(r.output_tokens_per_s_per_gpu, 0)}</td>"
        f"<td {num}>{fmt(r.output_tokens_per_s_per_user, 1)}</td>"
        f"<td {num}>{fmt(r.ttft_p50_ms, 1)}</td><td {num}>{fmt(r.tpot_p50_ms, 2)}</td>"
        f"<td {num}>{fmt(r.e2e_p50_ms, 0)}</td><td>{fmt(r.error, 0)}</td></tr>"
        for r in table.itertuples())
    return (f'<table class="simkit-compare-table" style="border-collapse:collapse;'
            f'font-variant-numeric:tabular-nums"><thead><tr><th style="text-align:left">'
            f"configuration</th>{head}<th>note</th></tr></thead><tbody>{body}</tbody></table>")


def _parse_ints(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise simkit.ConfigError(f"{name} = {text!r}: must be integers separated by commas "
                                 "(e.g. 8, 32, 128)") from None
    if not values or min(values) < 1:
        raise simkit.ConfigError(f"{name} = {text!r}: must list at least one integer >= 1")
    return values


class CompareDashboard(widgets.VBox):
    """Pick a model and deployments, run them, chart throughput/GPU vs speed/user.

    Attributes: ``model``, ``gpus``, ``tps``, ``precisions`` (selectors),
    ``concurrencies`` (comma-separated text), ``input_len``, ``output_len``,
    ``requests_per_user``, ``run_button``, ``stop_button``, ``chart`` (a
    :class:`~simkit.ui.chart.LiveChart`; ``figure`` is its current ``go.Figure``), ``table``
    (HTML), ``error``, ``results`` (the last :class:`pandas.DataFrame`).
    """

    def __init__(self, *, background: bool = True) -> None:
        super().__init__()
        self.background = background
        self.results = pd.DataFrame(columns=list(TABLE_COLUMNS))
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        wide = {"description_width": "130px"}
        models = list(simkit.model_presets())
        gpus = list(simkit.hardware_presets())
        self.model = widgets.Dropdown(options=models, value="llama-3-70b",
                                      description="model", style=wide)
        self.gpus = widgets.SelectMultiple(options=gpus, value=("h100-sxm", "h200"),
                                           description="GPUs", rows=len(gpus), style=wide)
        self.tps = widgets.SelectMultiple(options=[1, 2, 4, 8], value=(2, 4),
                                          description="TP", rows=4, style=wide)
        self.precisions = widgets.SelectMultiple(options=list(PRECISIONS), value=(1.0,),
                                                 description="precision", rows=3,
                                                 style=wide)
        self.concurrencies = widgets.Text(value="8, 32, 128", description="concurrencies",
                                          style=wide)
        self.input_len = widgets.IntText(value=1024, description="input tokens",
                                         style=wide)
        self.output_len = widgets.IntText(value=1024, description="output tokens",
                                          style=wide)
        self.requests_per_user = widgets.IntText(value=2, description="requests per user",
                                                 style=wide)
        for w in (self.model, self.gpus, self.tps, self.precisions, self.concurrencies,
                  self.input_len, self.output_len, self.requests_per_user):
            w.add_class("simkit-field")
        self.run_button = widgets.Button(description="Run", button_style="primary")
        self.run_button.add_class("simkit-run")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button = widgets.Button(description="Stop", button_style="warning",
                                          disabled=True)
        self.stop_button.add_class("simkit-stop")
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = widgets.IntProgress(value=0, min=0, max=1)
        self.progress.add_class("simkit-progress")
        self.status = widgets.HTML("Choose deployments and press <b>Run</b>.")
        self.status.add_class("simkit-status")
        self.error = widgets.HTML("", layout=widgets.Layout(display="none"))
        self.error.add_class("simkit-error")
        self.chart = LiveChart(tradeoff_figure(self.results), "tradeoff")
        self.table = widgets.HTML("")
        self.table.add_class("simkit-summary")
        self.children = [
            widgets.HBox([
                widgets.VBox([self.model, self.gpus, self.tps]),
                widgets.VBox([self.precisions, self.concurrencies, self.input_len,
                              self.output_len, self.requests_per_user]),
            ]),
            widgets.HBox([self.run_button, self.stop_button, self.progress]),
            self.status, self.error, self.chart.widget, self.table,
        ]
        self.add_class("simkit-compare")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def figure(self) -> go.Figure:
        """The chart as it is drawn now."""
        return self.chart.figure

    def points(self) -> list[ComparisonPoint]:
        """The configurations the controls select (raises ConfigError if unreadable)."""
        if not self.gpus.value or not self.tps.value or not self.precisions.value:
            raise simkit.ConfigError("select at least one GPU, one TP and one precision")
        for name, w in (("input tokens", self.input_len), ("output tokens",
                                                           self.output_len),
                        ("requests per user", self.requests_per_user)):
            if w.value < 1:
                raise simkit.ConfigError(f"{name} = {w.value}: must be an integer >= 1")
        return comparison_points(
            self.model.value, list(self.gpus.value), list(self.tps.value),
            list(self.precisions.value),
            _parse_ints(self.concurrencies.value, "concurrencies"),
            input_len=self.input_len.value, output_len=self.output_len.value,
            requests_per_user=self.requests_per_user.value)

    def run(self) -> None:
        """Validate the selection and run every point (in a thread when background)."""
        if self.running:
            return
        show_error(self.error, None)
        try:
            points = self.points()
        except SimkitError as exc:
            show_error(self.error, exc)
            return
        self._stop_requested = False
        self.progress.max, self.progress.value = len(points), 0
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.status.value = f"Running {len(points)} simulations…"
        if self.background:
            self._thread = threading.Thread(target=self._execute, args=(points,),
                                            name="simkit-compare", daemon=True)
            self._thread.start()
        else:
            self._execute(points)

    def wait(self, timeout: float | None = 120.0) -> None:
        """Block until the comparison has ended; for scripts and tests."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"comparison still running after {timeout} s")

    def stop(self) -> None:
        self._stop_requested = True

    def _execute(self, points: list[ComparisonPoint]) -> None:
        rows: list[dict[str, Any]] = []

        def on_row(i: int, row: dict[str, Any]) -> bool:
            rows.append(row)
            self.progress.value = i + 1
            table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
            self.chart.update(tradeoff_traces(table))
            self.status.value = (f"Ran {i + 1} of {len(points)}: "
                                 f"{html.escape(row['configuration'])} at "
                                 f"{row['concurrency']} users.")
            return not self._stop_requested

        try:
            self.results = run_comparison(points, on_row)
        except Exception as exc:  # shown in the dashboard, never a traceback
            show_error(self.error, exc)
        else:
            self.table.value = table_html(self.results)
            self.progress.bar_style = "success"
            done = len(self.results)
            self.status.value = (f"Done: {done} of {len(points)} runs."
                                 if done == len(points) else
                                 f"Stopped after {done} of {len(points)} runs.")
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True


def compare_dashboard() -> CompareDashboard:
    """The comparison dashboard widget (display it in a notebook or Voila)."""
    return CompareDashboard()
