"""The explorer: a control panel generated from the config, live charts and a summary.

:class:`ExplorerPanel` is an ``ipywidgets.VBox``. Its controls come from
:mod:`simkit.ui.controls` (one per config field); its charts are
:class:`~simkit.ui.chart.LiveChart`\\ s (Plotly figures in ``Output`` widgets), built when the
panel is created and redrawn only from callbacks — the Run button's simulation thread — which
is what reaches the browser under Voila too. Run simulates in a background thread so the Stop
button (the progress callback then returns False) and the rest of the page stay responsive; the
charts follow every progress snapshot and the summary table is filled when the run ends. "Keep
as baseline" pins the last result; later runs are drawn next to it. Bad input (any
:class:`~simkit.SimkitError`) shows its message in an HTML widget with the CSS class
``simkit-error`` and leaves the previous charts alone.
"""

from __future__ import annotations

import html
import threading
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

import simkit
from simkit import Config, SimkitError, SimResult, Snapshot
from simkit.ui.chart import LiveChart
from simkit.ui.controls import PANEL_FIELDS, Control, build_config, controls_for, get_path
from simkit.ui.controls import is_relevant as _is_relevant
from simkit.ui.figures import (
    latency_figure,
    latency_traces,
    summary_html,
    throughput_figure,
    throughput_traces,
    utilization_figure,
    utilization_traces,
)
from simkit.ui.runs import LiveRun, RunView, as_runs

__all__ = ["DEFAULT_CONFIG", "ExplorerPanel", "default_config", "explorer", "show_error"]

#: The explorer's starting point: configs/test_blog.toml (Llama-3-70B FP8 on 2 × H100 SXM,
#: 64 closed-loop users, 640 requests, ISL = OSL = 1024) run in ``exact`` mode. Fast mode gives
#: the same numbers in a few hundredths of a second; exact mode takes about two seconds, so the
#: live charts can be watched filling up. Switch ``simulation: mode`` to ``fast`` for big runs.
DEFAULT_CONFIG: dict[str, Any] = {
    "hardware": {"preset": "h100-sxm", "tp": 2, "bytes_per_param": 1,
                 "gpu_memory_utilization": 0.9},
    "model": {"preset": "llama-3-70b"},
    "scheduler": {"max_num_batched_tokens": 8192, "max_num_seqs": 64, "policy": "fcfs",
                  "enable_chunked_prefill": True, "block_size": 16},
    "workload": {"arrival_pattern": "closed_loop", "num_concurrent_users": 64,
                 "num_requests": 640, "seed": 42,
                 "input_len_dist": {"type": "fixed", "value": 1024},
                 "output_len_dist": {"type": "fixed", "value": 1024}},
    "simulation": {"mode": "exact", "sample_interval_secs": 1.0},
}

_TABS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Hardware & model", ("model", "hardware")),
    ("Scheduler", ("scheduler",)),
    ("Workload", ("workload",)),
    ("Simulation", ("simulation",)),
)


def default_config() -> Config:
    """The :data:`DEFAULT_CONFIG` as a validated :class:`~simkit.Config`."""
    return simkit.config_from_dict(DEFAULT_CONFIG)


def show_error(target: widgets.HTML, error: BaseException | str | None) -> None:
    """Show ``error``'s message in ``target`` (hidden when None); never a traceback."""
    if error is None:
        target.value = ""
        target.layout.display = "none"
        return
    message = str(error) if isinstance(error, (str, SimkitError)) else (
        f"unexpected error (please report it): {type(error).__name__}: {error}")
    target.value = (f'<div class="simkit-error-message" style="color:#b00020;'
                    f'background:#fdecea;padding:6px 10px;border-radius:4px">'
                    f"{html.escape(message, quote=False)}</div>")
    target.layout.display = None


class ExplorerPanel(widgets.VBox):
    """Configure, run and chart one simulation (and compare it with a kept baseline).

    ``config`` is a :class:`~simkit.Config`, a TOML path, or None for
    :func:`default_config`. ``background=False`` runs simulations in the calling thread (the
    Stop button then cannot be pressed during a run). Useful attributes: ``controls`` (dotted
    path → :class:`~simkit.ui.controls.Control`), ``run_button``, ``stop_button``,
    ``baseline_button``, ``charts`` (name → :class:`~simkit.ui.chart.LiveChart`), ``figures``
    (name → the chart's current ``go.Figure``), ``summary``, ``error``,
    ``result`` (the last :class:`~simkit.SimResult`) and ``baseline``.
    """

    def __init__(self, config: Config | str | Path | None = None, *,
                 background: bool = True) -> None:
        super().__init__()
        if config is None:
            config = default_config()
        elif not isinstance(config, Config):
            config = simkit.load_config(config)
        self.base_config: Config = config
        self.background = background
        self.result: SimResult | None = None
        self.result_config: Config | None = None
        self.baseline: SimResult | None = None
        self._live: LiveRun | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._shown_runs: list[RunView] = []

        self.controls: dict[str, Control] = {}
        for table, names in PANEL_FIELDS.items():
            for control in controls_for(table, names):
                self.controls[control.path] = control
        for path in ("workload.arrival_pattern", "workload.input_len_dist.type",
                     "workload.output_len_dist.type"):
            self.controls[path].widget.observe(lambda _: self._refresh_visibility(), "value")

        self.run_button = self._button("Run", "primary", self._on_run)
        self.stop_button = self._button("Stop", "warning", self._on_stop)
        self.stop_button.disabled = True
        self.baseline_button = self._button("Keep as baseline", "",
                                            self._on_keep_baseline)
        self.clear_baseline_button = self._button("Clear baseline", "",
                                                  self._on_clear_baseline)
        self.toml_path = widgets.Text(placeholder="configs/config.toml",
                                      description="TOML file",
                                      layout=widgets.Layout(width="420px"))
        self.toml_path.add_class("simkit-toml-path")
        self.load_button = self._button("Load TOML", "", self._on_load)
        self.upload = widgets.FileUpload(accept=".toml", multiple=False,
                                         description="Upload TOML")
        self.upload.observe(self._on_upload, "value")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="",
                                              layout=widgets.Layout(width="260px"))
        self.progress.add_class("simkit-progress")
        self.status = widgets.HTML(value="Set the controls and press <b>Run</b>.")
        self.status.add_class("simkit-status")
        self.error = widgets.HTML(value="", layout=widgets.Layout(display="none"))
        self.error.add_class("simkit-error")
        self.summary = widgets.HTML(value="")
        self.summary.add_class("simkit-summary")
        self.charts: dict[str, LiveChart] = {
            "latency": LiveChart(latency_figure([]), "latency"),
            "throughput": LiveChart(throughput_figure([]), "throughput"),
            "utilization": LiveChart(utilization_figure([]), "utilization"),
        }

        tabs = widgets.Tab(children=[self._tab_box(tables) for _, tables in _TABS]
                           + [widgets.VBox([widgets.HBox([self.toml_path, self.load_button]),
                                            self.upload])],
                           titles=[title for title, _ in _TABS] + ["Load config"])
        buttons = widgets.HBox([self.run_button, self.stop_button, self.progress,
                                self.baseline_button, self.clear_baseline_button])
        self.children = [tabs, buttons, self.status, self.error,
                         *(c.widget for c in self.charts.values()), self.summary]
        self.add_class("simkit-explorer")
        self.set_config(config)

    @property
    def figures(self) -> dict[str, go.Figure]:
        """The charts as they are drawn now (``go.Figure`` per chart name)."""
        return {name: chart.figure for name, chart in self.charts.items()}

    # ------------------------------------------------------------------------ building
    @staticmethod
    def _button(text: str, style: str, handler: Any) -> widgets.Button:
        # no icons: the offline Voila template ships without the fontawesome font
        button = widgets.Button(description=text, button_style=style)
        button.add_class("simkit-" + text.lower().replace(" ", "-"))
        button.on_click(handler)
        return button

    def _tab_box(self, tables: tuple[str, ...]) -> widgets.Box:
        items = [c.widget for c in self.controls.values() if c.path.split(".")[0] in tables]
        return widgets.GridBox(items, layout=widgets.Layout(
            grid_template_columns="repeat(auto-fill, 330px)", grid_gap="4px 12px"))

    # --------------------------------------------------------------------- config <-> UI
    def values(self) -> dict[str, Any]:
        """Dotted path → value of every control (raises ConfigError for unreadable text)."""
        return {path: control.read() for path, control in self.controls.items()}

    def current_config(self) -> Config:
        """The config the controls describe (validated; raises ConfigError if bad)."""
        return build_config(self.base_config, self.values())

    def set_config(self, config: Config) -> None:
        """Show ``config`` in the controls; it becomes the base for fields not shown."""
        self.base_config = config
        for path, control in self.controls.items():
            control.write(get_path(config, path))
        self._refresh_visibility()

    def _refresh_visibility(self) -> None:
        values = {p: c.widget.value for p, c in self.controls.items()
                  if p.endswith((".type", "arrival_pattern"))}
        for path, control in self.controls.items():
            control.widget.layout.display = None if _is_relevant(path, values) else "none"

    # ---------------------------------------------------------------------------- runs
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Validate the controls and simulate (in a thread when ``background``)."""
        if self.running:
            return
        show_error(self.error, None)
        try:
            config = self.current_config()
        except Exception as exc:  # SimkitError: bad input; anything else: shown, not raised
            show_error(self.error, exc)
            return
        self._stop_requested = False
        self._live = LiveRun("current", num_gpus=config.num_gpus)
        self.progress.value = 0.0
        self.progress.bar_style = ""
        self._set_running(True)
        self.status.value = "Running…"
        if self.background:
            self._thread = threading.Thread(target=self._execute, args=(config,),
                                            name="simkit-explorer", daemon=True)
            self._thread.start()
        else:
            self._execute(config)

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until the current run (if any) has ended; for scripts and tests."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"simulation still running after {timeout} s")

    def stop(self) -> None:
        """Ask the running simulation to stop at its next progress report."""
        self._stop_requested = True

    def _execute(self, config: Config) -> None:
        live = self._live
        assert live is not None
        started = time.perf_counter()
        try:
            result = simkit.simulate(config, progress=self._on_progress)
        except Exception as exc:  # shown in the panel: a thread has no one else to tell
            show_error(self.error, exc)
            self._draw(self._shown_runs)
            self.status.value = "The run failed; the charts show the previous run."
            self.progress.bar_style = "danger"
        else:
            live.finish(result)
            self.result, self.result_config = result, config
            runs = self._runs(live)
            self._draw(runs)
            self.summary.value = summary_html(runs)
            self.progress.value = 1.0 if not result.partial else self.progress.value
            self.progress.bar_style = "warning" if result.partial else "success"
            self.status.value = self._final_status(result, time.perf_counter() - started)
        finally:
            self._set_running(False)

    def _on_progress(self, snapshot: Snapshot) -> bool:
        live = self._live
        assert live is not None
        live.update(snapshot)
        if snapshot.fraction_done is not None:
            self.progress.value = min(1.0, snapshot.fraction_done)
        self.status.value = (
            f"Running… simulated {snapshot.sim_time:,.1f} s · {snapshot.num_finished:,} of "
            f"{snapshot.total_requests or '?'} requests finished · {snapshot.num_running} "
            f"running · {snapshot.num_waiting} waiting")
        self._draw(self._runs(live), record=False)
        return not self._stop_requested

    def _runs(self, current: LiveRun | SimResult) -> list[RunView]:
        if self.baseline is None:
            return as_runs({"current": current})
        return as_runs({"baseline": self.baseline, "current": current})

    def _draw(self, runs: list[RunView], record: bool = True) -> None:
        self.charts["latency"].update(latency_traces(runs))
        self.charts["throughput"].update(throughput_traces(runs))
        self.charts["utilization"].update(utilization_traces(runs))
        if record:
            self._shown_runs = runs

    @staticmethod
    def _final_status(result: SimResult, wall_s: float) -> str:
        counts = result.summary.counts
        text = (f"{counts.get('finished', 0):,} requests finished in "
                f"{result.summary.duration_s:,.1f} simulated s ({wall_s:.1f} s wall)")
        if result.partial:
            return f"Stopped ({result.stop_reason}): partial result, {text}."
        return f"Done: {text}."

    def _set_running(self, running: bool) -> None:
        self.run_button.disabled = running
        self.stop_button.disabled = not running
        self.baseline_button.disabled = running
        self.load_button.disabled = running

    # ------------------------------------------------------------------------ handlers
    def _on_run(self, _button: Any = None) -> None:
        self.run()

    def _on_stop(self, _button: Any = None) -> None:
        self.stop()

    def _on_keep_baseline(self, _button: Any = None) -> None:
        if self.result is None:
            show_error(self.error, "Run a simulation first: the baseline is the last result.")
            return
        show_error(self.error, None)
        self.baseline = self.result
        runs = self._runs(self.result)
        self._draw(runs)
        self.summary.value = summary_html(runs)
        self.status.value = "Baseline kept: the next run is drawn next to it (dashed)."

    def _on_clear_baseline(self, _button: Any = None) -> None:
        self.baseline = None
        if self.result is not None:
            runs = self._runs(self.result)
            self._draw(runs)
            self.summary.value = summary_html(runs)

    def load_toml(self, path: str | Path) -> None:
        """Load a TOML config into the controls (errors are shown, not raised)."""
        show_error(self.error, None)
        if not str(path).strip():
            show_error(self.error, "Enter the path of a TOML config file.")
            return
        try:
            config = simkit.load_config(Path(str(path).strip()).expanduser())
        except SimkitError as exc:
            show_error(self.error, exc)
            return
        self.set_config(config)
        self.status.value = f"Loaded {html.escape(str(path))}; press <b>Run</b>."

    def _on_load(self, _button: Any = None) -> None:
        self.load_toml(self.toml_path.value)

    def _on_upload(self, change: Mapping[str, Any]) -> None:
        files = change.get("new") or ()
        if not files:
            return
        upload = files[0]
        show_error(self.error, None)
        try:
            data = tomllib.loads(bytes(upload["content"]).decode("utf-8"))
            config = simkit.config_from_dict(data)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            show_error(self.error, f"{upload.get('name', 'upload')}: invalid TOML: {exc}")
            return
        except SimkitError as exc:
            show_error(self.error, f"{upload.get('name', 'upload')}: {exc}")
            return
        self.set_config(config)
        self.status.value = f"Loaded {html.escape(str(upload.get('name')))}; press <b>Run</b>."


def explorer(config: Config | str | Path | None = None) -> ExplorerPanel:
    """The explorer panel for ``config`` (default: :func:`default_config`); display it."""
    return ExplorerPanel(config)
