"""The explorer served by Voila, driven in real headless Chromium (Playwright).

Starts ``voila notebooks --template=simkit`` on 127.0.0.1 (a free port, ``JUPYTER_PATH`` =
the repo's ``share/jupyter``). In the explorer: sets TP and the number of requests, presses
Run, waits for the charts' plotted data (``.js-plotly-plot`` ``.data``, not titles) and
compares it and the summary with an independent ``simkit.simulate``; then keeps the run as
baseline, runs another TP and checks both are drawn. In the compare dashboard: runs the
default selection and checks one point against ``simkit.simulate``. Both pages must make no
request outside 127.0.0.1 (offline-safe) and raise no page error. Screenshots go to
``artifacts/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

import simkit

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TP, NUM_REQUESTS = 4, 128
ARTIFACTS = ROOT / "artifacts"
ARTIFACTS.mkdir(exist_ok=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path,
                    timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"voila exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    pytest.fail(f"voila did not listen on port {port} within {timeout} s:\n"
                f"{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Voila serving notebooks/ (both dashboards) with the simkit template; base URL."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(`make chromium` or `apt-get install -y chromium`); the browser test "
                    "needs it and does not download browsers")
    port = _free_port()
    env = {**os.environ, "JUPYTER_PATH": str(ROOT / "share" / "jupyter"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voila", "notebooks", "--template=simkit",
             "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
             "--Voila.port_retries=0"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, proc, log)
        yield f"http://127.0.0.1:{port}/voila/render/"
    finally:
        # the server and the kernels it started share the new session's process group
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


CHARTS_JS = """() => Array.from(document.querySelectorAll('.simkit-chart'))
    .map(out => { const div = out.querySelector('.js-plotly-plot');
                  return ((div && div.data) || []).map(t => ({
                      name: t.name, n: t.x ? t.x.length : 0,
                      x: Array.from(t.x || []).slice(0, 3),
                      y: Array.from(t.y || []).slice(0, 3)})); })"""

SUMMARY_JS = """() => Object.fromEntries(Array.from(
    document.querySelectorAll('.simkit-summary-table td.simkit-value'))
    .map(td => [td.dataset.key + '|' + td.dataset.run, [td.dataset.value, td.textContent]]))"""


def _done_js(num_traces: list[int]) -> str:
    """Chart i shows num_traces[i] traces, all with data, and the status says Done."""
    return f"""() => {{
      const want = {num_traces};
      const outs = document.querySelectorAll('.simkit-chart');
      const status = document.querySelector('.simkit-status');
      return outs.length === want.length && Array.from(outs).every((out, i) => {{
          const div = out.querySelector('.js-plotly-plot');
          return div && div.data && div.data.length === want[i]
                 && div.data.every(t => t.x && t.x.length > 0);
        }}) && status && status.textContent.includes('Done');
    }}"""


class Browser:
    """A headless Chromium page that records requests leaving 127.0.0.1 and page errors."""

    def __init__(self, playwright, profile: Path) -> None:  # type: ignore[no-untyped-def]
        self.external: list[str] = []
        self.page_errors: list[str] = []
        self.context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 2150})
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.external.append(r.url)
                     if urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None)
                     and not r.url.startswith(("data:", "blob:")) else None)
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def open(self, url: str) -> None:
        t0 = time.monotonic()
        self.page.goto(url, wait_until="domcontentloaded", timeout=90_000)
        self.page.locator("button.simkit-run").wait_for(state="visible", timeout=90_000)
        print(f"{url} rendered after {time.monotonic() - t0:.1f} s")

    def wait_done(self, num_traces: list[int]) -> None:
        t0 = time.monotonic()
        self.page.wait_for_function(_done_js(num_traces), timeout=60_000)
        print(f"charted after {time.monotonic() - t0:.1f} s")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = Browser(p, tmp_path / "profile")
        try:
            yield b
        finally:
            b.context.close()


def test_explorer_in_voila_runs_compares_and_charts_offline(voila_url: str,
                                                            browser: Browser) -> None:
    blog = simkit.with_overrides(simkit.load_config(ROOT / "configs" / "test_blog.toml"),
                                 {"workload.num_requests": NUM_REQUESTS})
    expected = simkit.simulate(simkit.with_overrides(blog, {"hardware.tp": TP}))
    baseline_expected = simkit.simulate(blog)  # TP 2
    finished = expected.requests[expected.requests["status"] == "finished"]
    ttft_p50 = float(np.percentile(finished["ttft_ms"].to_numpy(dtype=float), 50))

    page = browser.page
    browser.open(voila_url + "02_explorer.ipynb")
    # three empty charts before the first run
    assert page.evaluate(CHARTS_JS) == [[], [], []]

    page.locator(".simkit-field-hardware-tp select").select_option(label=str(TP))
    page.get_by_role("tab", name="Workload").click()
    requests_box = page.locator(".simkit-field-workload-num_requests input")
    requests_box.fill(str(NUM_REQUESTS))
    requests_box.press("Tab")
    page.wait_for_timeout(500)  # let the widget values reach the kernel
    page.locator("button.simkit-run").click()
    browser.wait_done([6, 4, 3])
    latency, throughput, utilization = page.evaluate(CHARTS_JS)
    cells = page.evaluate(SUMMARY_JS)
    error_text = page.locator(".simkit-error").inner_text()

    # latency: CDF + p50/p90/p99 marks for TTFT, TPOT and E2E
    assert len(latency) == 6
    assert latency[0]["n"] == NUM_REQUESTS and latency[1]["name"] == "current p50/p90/p99"
    assert latency[1]["x"][0] == pytest.approx(ttft_p50, rel=1e-9)
    assert [t["name"] for t in throughput] == ["input tok/s", "output tok/s", "running",
                                               "waiting"]
    assert throughput[1]["n"] == len(expected.timeseries)
    assert throughput[1]["y"] == pytest.approx(
        list(expected.timeseries["output_tokens_per_s"][:3]), rel=1e-9)
    assert len(utilization) == 3
    assert all(t["n"] == len(expected.timeseries) for t in utilization)
    # summary shown = the independent run
    value, text = cells["counts.finished|current"]
    assert float(value) == NUM_REQUESTS and text == f"{NUM_REQUESTS}"
    value, text = cells["ttft_ms.p50|current"]
    assert float(value) == pytest.approx(ttft_p50, rel=1e-9) and text == f"{ttft_p50:,.1f}"
    value, _ = cells["throughput.output_tokens_per_s_per_gpu|current"]
    assert float(value) == pytest.approx(
        expected.summary.throughput["output_tokens_per_s_per_gpu"], rel=1e-9)
    assert error_text.strip() == ""

    # keep it as the baseline, go back to TP 2, run again: both runs in the same charts
    page.locator("button.simkit-keep-as-baseline").click()
    page.get_by_role("tab", name="Hardware & model").click()
    page.locator(".simkit-field-hardware-tp select").select_option(label="2")
    page.wait_for_timeout(500)
    page.locator("button.simkit-run").click()
    browser.wait_done([12, 8, 6])
    latency = page.evaluate(CHARTS_JS)[0]
    cells = page.evaluate(SUMMARY_JS)
    page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)

    assert [t["name"] for t in latency[:4]] == ["baseline", "baseline p50/p90/p99", "current",
                                                "current p50/p90/p99"]
    assert latency[1]["x"][0] == pytest.approx(ttft_p50, rel=1e-9)  # the kept TP-4 run
    assert float(cells["e2e_ms.p50|current"][0]) == pytest.approx(
        baseline_expected.summary.e2e_ms["p50"], rel=1e-9)
    assert float(cells["e2e_ms.p50|baseline"][0]) == pytest.approx(
        expected.summary.e2e_ms["p50"], rel=1e-9)
    assert page.locator(".simkit-error").inner_text().strip() == ""
    assert not browser.page_errors, browser.page_errors
    assert not browser.external, f"requests left 127.0.0.1: {browser.external}"


def test_compare_dashboard_in_voila(voila_url: str, browser: Browser) -> None:
    page = browser.page
    browser.open(voila_url + "07_compare_dashboard.ipynb")
    page.locator("button.simkit-run").click()
    browser.wait_done([4])
    (traces,) = page.evaluate(CHARTS_JS)
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)

    # default selection: Llama-3-70B, H100 SXM and H200, TP 2 and 4, FP8, 8/32/128 users
    assert sorted(t["name"] for t in traces) == ["h100-sxm × 2 FP8", "h100-sxm × 4 FP8",
                                                "h200 × 2 FP8", "h200 × 4 FP8"]
    assert all(t["n"] == 3 for t in traces)
    expected = simkit.simulate(simkit.config_from_dict({
        "hardware": {"preset": "h200", "tp": 4, "bytes_per_param": 1},
        "model": {"preset": "llama-3-70b"},
        "scheduler": {"max_num_seqs": 8},
        "workload": {"arrival_pattern": "closed_loop", "num_concurrent_users": 8,
                     "num_requests": 16, "seed": 42,
                     "input_len_dist": {"type": "fixed", "value": 1024},
                     "output_len_dist": {"type": "fixed", "value": 1024}}}))
    h200x4 = next(t for t in traces if t["name"] == "h200 × 4 FP8")
    assert h200x4["x"][0] == pytest.approx(
        expected.summary.throughput["output_tokens_per_s_per_user"], rel=1e-9)
    assert h200x4["y"][0] == pytest.approx(
        expected.summary.throughput["output_tokens_per_s_per_gpu"], rel=1e-9)
    assert "h200 × 4 FP8" in page.locator(".simkit-compare-table").inner_text()
    assert page.locator(".simkit-error").inner_text().strip() == ""
    assert not browser.page_errors, browser.page_errors
    assert not browser.external, f"requests left 127.0.0.1: {browser.external}"
