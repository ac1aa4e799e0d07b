"""The Jupyter front end without a browser: widgets driven from Python, real simulations.

Expected numbers come from independent runs of the public API (``simkit.simulate`` on a
config built here, not by the panel) and from numpy on the per-request table, never from the
panel's own output.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import subprocess
import sys
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pytest

import simkit
from simkit.ui import ExplorerPanel, compare, figures
from simkit.ui.chart import PLOTLY_MIMETYPE
from simkit.ui.runs import LiveRun

ROOT = Path(__file__).resolve().parents[1]
TEST_BLOG = ROOT / "configs" / "test_blog.toml"


def blog(**overrides: object) -> simkit.Config:
    """configs/test_blog.toml in exact mode (the explorer's documented default) + overrides."""
    return simkit.with_overrides(simkit.load_config(TEST_BLOG),
                                 {"simulation.mode": "exact", **overrides})


def finished_values(result: simkit.SimResult, column: str) -> np.ndarray:
    df = result.requests[result.requests["status"] == "finished"]
    values = df[column].to_numpy(dtype=float)
    return np.sort(values[np.isfinite(values)])


def cell_value(summary_html: str, key: str, run: str) -> float:
    match = re.search(rf'data-key="{re.escape(key)}" data-run="{re.escape(run)}" '
                      r'data-value="([^"]+)">([^<]*)<', summary_html)
    assert match, f"no summary cell {key} / {run}"
    return float(match.group(1))


def trace_data(fig) -> list[tuple[str, tuple, tuple]]:
    return [(t.name, tuple(np.asarray(t.x, dtype=float)), tuple(np.asarray(t.y, dtype=float)))
            for t in fig.data]


def set_values(panel: ExplorerPanel, **values: object) -> None:
    for path, value in values.items():
        panel.controls[path.replace("__", ".")].widget.value = value


def run(panel: ExplorerPanel) -> None:
    panel.run_button.click()
    panel.wait(timeout=60)


# ------------------------------------------------------------------------------- imports
def test_import_simkit_does_not_import_plotly_or_ipywidgets() -> None:
    code = (
        "import sys, simkit\n"
        "cfg = simkit.load_config(sys.argv[1])\n"
        "heavy = {'plotly', 'ipywidgets', 'anywidget', 'dask'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
        "import simkit.ui\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(TEST_BLOG)], capture_output=True,
                         text=True, check=True, cwd=ROOT, timeout=120).stdout.splitlines()
    assert out[0] == "[]"
    # the check can see them: importing the UI package does load both
    assert "plotly" in out[1] and "ipywidgets" in out[1]


# ------------------------------------------------------------------------------ controls
def test_controls_are_generated_from_the_config_fields() -> None:
    panel = ExplorerPanel()
    scheduler_fields = {f.name for f in dataclasses.fields(simkit.SchedulerConfig)}
    shown = {p.split(".", 1)[1] for p in panel.controls if p.startswith("scheduler.")}
    assert shown == scheduler_fields
    assert isinstance(panel.controls["scheduler.enable_chunked_prefill"].widget,
                      widgets.Checkbox)
    assert isinstance(panel.controls["scheduler.max_num_seqs"].widget, widgets.IntText)
    policy = panel.controls["scheduler.policy"].widget
    assert isinstance(policy, widgets.Dropdown)
    assert {"fcfs", "priority", "sjf"} <= {v for _, v in policy.options}
    pattern = panel.controls["workload.arrival_pattern"].widget
    assert {"poisson", "closed_loop", "gamma", "trace"} <= {v for _, v in pattern.options}
    assert isinstance(panel.controls["workload.arrival_rate"].widget, widgets.Text)
    mode = panel.controls["simulation.mode"].widget
    assert {v for _, v in mode.options} == {"fast", "exact"} and mode.value == "exact"
    gpus = {v for _, v in panel.controls["hardware.preset"].widget.options}
    assert gpus == set(simkit.hardware_presets())
    models = {v for _, v in panel.controls["model.preset"].widget.options}
    assert models == set(simkit.model_presets())
    precision = panel.controls["hardware.bytes_per_param"].widget.options
    assert dict(precision) == {"BF16": 2.0, "FP8": 1.0, "FP4": 0.5}
    # both length distributions get every LengthDist parameter
    for dist in ("input_len_dist", "output_len_dist"):
        for f in dataclasses.fields(simkit.LengthDist):
            assert f"workload.{dist}.{f.name}" in panel.controls


def test_default_is_test_blog_in_exact_mode_and_hides_irrelevant_fields() -> None:
    panel = ExplorerPanel()
    assert panel.current_config() == blog()
    hidden = {p for p, c in panel.controls.items() if c.widget.layout.display == "none"}
    # closed loop: no arrival rate; fixed lengths: only `value`
    assert "workload.arrival_rate" in hidden
    assert "workload.num_concurrent_users" not in hidden
    assert "workload.input_len_dist.mean" in hidden
    assert "workload.input_len_dist.value" not in hidden
    panel.controls["workload.arrival_pattern"].widget.value = "poisson"
    assert panel.controls["workload.arrival_rate"].widget.layout.display is None
    assert panel.controls["workload.num_concurrent_users"].widget.layout.display == "none"
    assert panel.controls["workload.trace_path"].widget.layout.display == "none"
    panel.controls["workload.arrival_pattern"].widget.value = "trace"
    assert panel.controls["workload.trace_path"].widget.layout.display is None
    assert panel.controls["workload.arrival_rate"].widget.layout.display == "none"
    panel.run_button.click()  # no trace file given
    assert "trace_path" in panel.error.value and not panel.running


# ----------------------------------------------------------------------------------- runs
def test_run_fills_charts_and_summary_equal_to_simulate() -> None:
    panel = ExplorerPanel()
    set_values(panel, hardware__tp=4, workload__num_requests="48",
               workload__num_concurrent_users="16")
    assert all(len(t.x) == 0 for t in panel.figures["latency"].data)
    run(panel)
    assert panel.error.layout.display == "none"

    expected = simkit.simulate(blog(**{"hardware.tp": 4, "workload.num_requests": 48,
                                       "workload.num_concurrent_users": 16}))
    ttft = finished_values(expected, "ttft_ms")
    assert ttft.size == 48
    p50 = float(np.percentile(ttft, 50))
    assert p50 == pytest.approx(expected.summary.ttft_ms["p50"], rel=1e-12)

    # summary shown = the independent run's numbers
    html = panel.summary.value
    assert cell_value(html, "ttft_ms.p50", "current") == pytest.approx(p50, rel=1e-12)
    assert f">{p50:,.1f}<" in html
    assert cell_value(html, "throughput.output_tokens_per_s_per_gpu", "current") == \
        pytest.approx(expected.summary.throughput["output_tokens_per_s_per_gpu"], rel=1e-12)
    assert cell_value(html, "counts.finished", "current") == 48

    # latency chart: the empirical CDF of TTFT and its percentile marks
    cdf, marks = panel.figures["latency"].data[:2]
    np.testing.assert_allclose(cdf.x, ttft)
    np.testing.assert_allclose(cdf.y, np.arange(1, 49) / 48)
    np.testing.assert_allclose(marks.x, np.percentile(ttft, [50, 90, 99]))
    # ... and that is what the Output widget hands the browser (plotly mimetype JSON)
    (sent,) = panel.charts["latency"].widget.outputs
    plotted = sent["data"][PLOTLY_MIMETYPE]["data"]
    np.testing.assert_allclose(plotted[0]["x"], ttft)
    assert plotted[1]["name"] == "current p50/p90/p99"
    # throughput chart: output tok/s per interval
    by_name = {t.name: t for t in panel.figures["throughput"].data}
    np.testing.assert_allclose(by_name["output tok/s"].y,
                               expected.timeseries["output_tokens_per_s"])
    util = {t.name: t for t in panel.figures["utilization"].data}
    np.testing.assert_allclose(util["KV cache"].y,
                               100 * expected.timeseries["kv_cache_utilization"])
    assert panel.progress.value == 1.0
    assert "Done" in panel.status.value


def test_charts_update_while_the_run_is_under_way() -> None:
    # a snapshot at every closed interval, so the run reports progress many times
    base = simkit.with_overrides(blog(), {"simulation.progress_interval_secs": 0.0,
                                          "workload.num_requests": 128})
    panel = ExplorerPanel(base)
    seen: list[tuple[int, int, float]] = []
    original = panel._on_progress

    def spy(snapshot: simkit.Snapshot) -> bool:
        keep_going = original(snapshot)
        tput = panel.charts["throughput"].traces[0]
        cdf = panel.charts["latency"].traces[0]
        seen.append((len(tput["x"]), len(cdf["x"]), panel.progress.value))
        return keep_going

    panel._on_progress = spy  # type: ignore[method-assign]
    run(panel)
    assert len(seen) >= 5
    lengths = [s[0] for s in seen]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    # the latency CDF grew as requests finished: 2 closed-loop waves of 64
    assert {s[1] for s in seen} >= {0, 64}
    assert seen[-1][1] == 128
    assert seen[0][2] < 1.0


def test_bad_values_show_a_message_and_keep_the_previous_charts(tmp_path: Path) -> None:
    panel = ExplorerPanel()
    set_values(panel, workload__num_requests="32", workload__num_concurrent_users="8")
    run(panel)
    before = {name: trace_data(fig) for name, fig in panel.figures.items()}
    summary_before = panel.summary.value
    assert before["latency"][0][1]  # there is data to keep

    panel.controls["scheduler.max_num_seqs"].widget.value = 0
    panel.run_button.click()
    assert not panel.running
    assert panel.error.layout.display != "none"
    assert "max_num_seqs" in panel.error.value and "&gt;= 1" in panel.error.value
    assert "Traceback" not in panel.error.value
    assert {name: trace_data(fig) for name, fig in panel.figures.items()} == before
    assert panel.summary.value == summary_before

    panel.controls["scheduler.max_num_seqs"].widget.value = 64
    panel.controls["workload.num_requests"].widget.value = "many"
    panel.run_button.click()
    assert "num_requests" in panel.error.value and "'many'" in panel.error.value

    panel.controls["workload.num_requests"].widget.value = "32"
    missing = tmp_path / "nope.toml"
    panel.toml_path.value = str(missing)
    panel.load_button.click()
    assert str(missing) in panel.error.value and "no such config file" in panel.error.value
    assert {name: trace_data(fig) for name, fig in panel.figures.items()} == before

    # a model that cannot fit: 405B in BF16 on two H100s
    set_values(panel, model__preset="llama-3.1-405b", hardware__bytes_per_param=2.0)
    panel.run_button.click()
    assert "does not fit" in panel.error.value
    assert {name: trace_data(fig) for name, fig in panel.figures.items()} == before

    # a good run clears the message
    set_values(panel, model__preset="llama-3-70b", hardware__bytes_per_param=1.0)
    run(panel)
    assert panel.error.layout.display == "none" and panel.error.value == ""


def test_keep_as_baseline_draws_both_runs() -> None:
    panel = ExplorerPanel()
    set_values(panel, workload__num_requests="32", workload__num_concurrent_users="16")
    run(panel)
    n_traces = len(panel.figures["latency"].data)
    panel.baseline_button.click()
    set_values(panel, hardware__tp=4)
    run(panel)

    first = simkit.simulate(blog(**{"workload.num_requests": 32,
                                    "workload.num_concurrent_users": 16}))
    second = simkit.simulate(blog(**{"hardware.tp": 4, "workload.num_requests": 32,
                                     "workload.num_concurrent_users": 16}))
    latency = panel.figures["latency"].data
    assert len(latency) == 2 * n_traces
    cdfs = {t.name: t for t in latency if t.mode == "lines" and t.xaxis == "x"}  # TTFT
    np.testing.assert_allclose(cdfs["baseline"].x, finished_values(first, "ttft_ms"))
    np.testing.assert_allclose(cdfs["current"].x, finished_values(second, "ttft_ms"))
    names = {t.name for t in panel.figures["throughput"].data}
    assert {"output tok/s (baseline)", "output tok/s (current)"} <= names
    html = panel.summary.value
    assert cell_value(html, "e2e_ms.p50", "baseline") == \
        pytest.approx(first.summary.e2e_ms["p50"], rel=1e-12)
    assert cell_value(html, "e2e_ms.p50", "current") == \
        pytest.approx(second.summary.e2e_ms["p50"], rel=1e-12)
    # TP 4 decodes faster than TP 2 on the same workload
    assert second.summary.tpot_ms["p50"] < first.summary.tpot_ms["p50"]

    panel.clear_baseline_button.click()
    assert len(panel.figures["latency"].data) == n_traces


def test_stop_button_ends_the_run_with_a_partial_result() -> None:
    panel = ExplorerPanel()
    set_values(panel, workload__num_requests="20000")
    panel.run_button.click()
    panel.stop_button.click()
    panel.wait(timeout=60)
    assert panel.result is not None and panel.result.partial
    assert panel.result.summary.counts["finished"] < 20000
    assert "Stopped" in panel.status.value
    assert not panel.run_button.disabled and panel.stop_button.disabled


def test_load_toml_sets_the_controls(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(
        '[hardware]\npreset = "l40s"\n[model]\npreset = "llama-3.1-8b"\n'
        '[scheduler]\nmax_num_seqs = 32\nenable_prefix_caching = true\n'
        '[workload]\narrival_pattern = "poisson"\narrival_rate = 4.0\nnum_requests = 20\n'
        'input_len_dist = { type = "uniform", min = 100, max = 300 }\n'
        'output_len_dist = { type = "fixed", value = 50 }\n', encoding="utf-8")
    panel = ExplorerPanel()
    panel.toml_path.value = str(path)
    panel.load_button.click()
    assert panel.error.value == ""
    assert panel.controls["model.preset"].widget.value == "llama-3.1-8b"
    assert panel.controls["scheduler.max_num_seqs"].widget.value == 32
    assert panel.controls["scheduler.enable_prefix_caching"].widget.value is True
    assert panel.controls["workload.arrival_rate"].widget.value == "4"
    assert panel.controls["workload.input_len_dist.max"].widget.value == "300"
    assert panel.controls["workload.arrival_rate"].widget.layout.display is None
    assert panel.current_config() == simkit.load_config(path)
    run(panel)
    assert cell_value(panel.summary.value, "counts.finished", "current") == 20


def test_upload_of_a_bad_toml_shows_the_message() -> None:
    panel = ExplorerPanel()
    content = b"[hardware]\npreset = \"h100-sxm\"\n[model\n"
    panel.upload.value = ({"name": "broken.toml", "type": "", "size": len(content),
                           "content": memoryview(content),
                           "last_modified": datetime.datetime.now(datetime.UTC)},)
    assert "broken.toml" in panel.error.value and "invalid TOML" in panel.error.value


# -------------------------------------------------------------------------------- figures
def test_figures_of_a_result_a_snapshot_and_a_comparison() -> None:
    cfg = blog(**{"workload.num_requests": 64, "simulation.progress_interval_secs": 0.0})
    live = LiveRun()
    snapshots: list[simkit.Snapshot] = []

    def progress(snapshot: simkit.Snapshot) -> None:
        live.update(snapshot)
        snapshots.append(snapshot)

    result = simkit.simulate(cfg, progress=progress)
    # the live accumulation holds every finished request
    assert sorted(live.view().requests["request_id"]) == \
        sorted(result.requests.loc[result.requests["status"] == "finished", "request_id"])

    fig = figures.latency_figure({"baseline": result, "current": live}, kind="hist")
    hist = [t for t in fig.data if t.type == "histogram"]
    assert [t.name for t in hist[:2]] == ["baseline", "current"]
    np.testing.assert_allclose(np.sort(hist[0].x), finished_values(result, "ttft_ms"))

    last_with_requests = next(s for s in reversed(snapshots) if len(s.new_requests))
    snap_fig = figures.latency_figure(last_with_requests)
    assert len(snap_fig.data[0].x) == len(last_with_requests.new_requests)

    mid = next(s for s in snapshots if 0 < len(s.timeseries) < len(result.timeseries))
    tput = figures.throughput_figure(mid)
    assert len(tput.data[0].x) == len(mid.timeseries)

    table = figures.summary_table({"a": result})
    cells = table.data[0].cells.values
    row = [label for label in cells[0]].index("TPOT p50 (ms)")
    assert cells[1][row] == f"{result.summary.tpot_ms['p50']:,.2f}"
    frame = figures.summary_frame({"a": result, "live": live.view()})
    assert frame.at["ttft_ms.p99", "a"] == pytest.approx(
        np.percentile(finished_values(result, "ttft_ms"), 99), rel=1e-12)


# -------------------------------------------------------------------------------- compare
def test_compare_dashboard_plots_one_point_per_configuration_and_concurrency() -> None:
    dash = compare.CompareDashboard()
    dash.model.value = "llama-3.1-8b"
    dash.gpus.value = ("h100-sxm", "l40s")
    dash.tps.value = (1,)
    dash.precisions.value = (2.0, 1.0)
    dash.concurrencies.value = "4, 16"
    dash.input_len.value, dash.output_len.value = 256, 128
    dash.run_button.click()
    dash.wait(timeout=120)
    assert dash.error.value == ""
    assert len(dash.results) == 8
    traces = {t.name: t for t in dash.figure.data}
    assert set(traces) == {"h100-sxm × 1 BF16", "h100-sxm × 1 FP8", "l40s × 1 BF16",
                           "l40s × 1 FP8"}
    assert all(len(t.x) == 2 for t in traces.values())

    expected = simkit.simulate(simkit.config_from_dict({
        "hardware": {"preset": "l40s", "tp": 1, "bytes_per_param": 1},
        "model": {"preset": "llama-3.1-8b"},
        "scheduler": {"max_num_seqs": 16},
        "workload": {"arrival_pattern": "closed_loop", "num_concurrent_users": 16,
                     "num_requests": 32, "seed": 42,
                     "input_len_dist": {"type": "fixed", "value": 256},
                     "output_len_dist": {"type": "fixed", "value": 128}}}))
    fp8 = traces["l40s × 1 FP8"]
    assert fp8.y[1] == pytest.approx(
        expected.summary.throughput["output_tokens_per_s_per_gpu"], rel=1e-12)
    assert fp8.x[1] == pytest.approx(
        expected.summary.throughput["output_tokens_per_s_per_user"], rel=1e-12)
    # more users: more throughput per GPU, less speed per user
    assert fp8.y[1] > fp8.y[0] and fp8.x[1] < fp8.x[0]
    assert "l40s × 1 FP8" in dash.table.value


def test_compare_dashboard_reports_bad_input_and_configs_that_do_not_fit() -> None:
    dash = compare.CompareDashboard()
    dash.concurrencies.value = "8, lots"
    dash.run_button.click()
    assert "concurrencies" in dash.error.value and not dash.running

    points = compare.comparison_points("llama-3.1-405b", ["l40s"], [1], [2.0], [8])
    assert points[0].config is None and "does not fit" in (points[0].error or "")
    table = compare.run_comparison(points)
    assert table.loc[0, "error"] == points[0].error
    assert compare.tradeoff_traces(table) == []
