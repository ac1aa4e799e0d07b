"""The explorer served by Voila, driven in real headless Chromium (Playwright).

Starts ``voila notebooks/02_explorer.ipynb --template=simkit`` on 127.0.0.1 (a free port,
``JUPYTER_PATH`` = the repo's ``share/jupyter``), opens it, sets TP and the number of
requests, presses Run, waits for the charts' plotted data, and compares what the page shows
with an independent ``simkit.simulate`` of the same config. Also asserts that the page made
no request outside 127.0.0.1 (offline-safe) and saves ``artifacts/explorer.png``.
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


@pytest.fixture
def voila_url(tmp_path: Path) -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(`make chromium` or `apt-get install -y chromium`); the browser test "
                    "needs it and does not download browsers")
    port = _free_port()
    env = {**os.environ, "JUPYTER_PATH": str(ROOT / "share" / "jupyter"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    log = tmp_path / "voila.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voila", "notebooks/02_explorer.ipynb", "--template=simkit",
             "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
             "--Voila.port_retries=0"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, proc, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        # the server and the kernels it started share the new session's process group
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


CHARTS_JS = """() => Array.from(document.querySelectorAll('.simkit-chart .js-plotly-plot'))
    .map(div => (div.data || []).map(t => ({name: t.name, n: t.x ? t.x.length : 0,
                                            x: Array.from(t.x || []).slice(0, 3)})))"""

DONE_JS = """() => {
  const plots = document.querySelectorAll('.simkit-chart .js-plotly-plot');
  const status = document.querySelector('.simkit-status');
  return plots.length === 3
    && Array.from(plots).every(d => d.data && d.data.length && d.data[0].x
                                    && d.data[0].x.length > 0)
    && !!document.querySelector('.simkit-summary-table')
    && status && status.textContent.includes('Done');
}"""


def test_explorer_in_voila_runs_and_charts_offline(voila_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    expected = simkit.simulate(simkit.with_overrides(
        simkit.load_config(ROOT / "configs" / "test_blog.toml"),
        {"hardware.tp": TP, "workload.num_requests": NUM_REQUESTS}))
    finished = expected.requests[expected.requests["status"] == "finished"]
    ttft_p50 = float(np.percentile(finished["ttft_ms"].to_numpy(dtype=float), 50))

    external: list[str] = []
    page_errors: list[str] = []
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 1000})
        try:
            page = ctx.new_page()
            page.on("request", lambda r: external.append(r.url)
                    if urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None)
                    and not r.url.startswith(("data:", "blob:")) else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            t0 = time.monotonic()
            page.goto(voila_url, wait_until="domcontentloaded", timeout=90_000)
            run = page.locator("button.simkit-run")
            run.wait_for(state="visible", timeout=90_000)
            print(f"page rendered after {time.monotonic() - t0:.1f} s")
            # the three charts are on the page, still empty
            page.wait_for_function(
                "() => document.querySelectorAll('.simkit-chart .js-plotly-plot').length === 3",
                timeout=30_000)

            page.locator(".simkit-field-hardware-tp select").select_option(label=str(TP))
            page.get_by_role("tab", name="Workload").click()
            requests_box = page.locator(".simkit-field-workload-num_requests input")
            requests_box.fill(str(NUM_REQUESTS))
            requests_box.press("Tab")
            page.wait_for_timeout(500)  # let the widget values reach the kernel
            run.click()

            t_run = time.monotonic()
            page.wait_for_function(DONE_JS, timeout=60_000)
            print(f"run charted after {time.monotonic() - t_run:.1f} s; page errors {page_errors}")
            charts = page.evaluate(CHARTS_JS)
            summary_cells = page.evaluate(
                """() => Object.fromEntries(Array.from(
                     document.querySelectorAll('.simkit-summary-table td.simkit-value'))
                     .map(td => [td.dataset.key, [td.dataset.value, td.textContent]]))""")
            error_text = page.locator(".simkit-error").inner_text()
            page.screenshot(path=str(artifacts / "explorer.png"), full_page=True)
        finally:
            ctx.close()

    latency, throughput, utilization = charts
    # latency: CDF + p50/p90/p99 marks for TTFT, TPOT and E2E
    assert len(latency) == 6
    assert latency[0]["n"] == NUM_REQUESTS and latency[1]["name"].endswith("p50/p90/p99")
    assert latency[1]["x"][0] == pytest.approx(ttft_p50, rel=1e-9)
    assert len(throughput) == 4 and throughput[1]["name"] == "output tok/s"
    assert throughput[1]["n"] == len(expected.timeseries)
    assert len(utilization) == 3 and all(t["n"] == len(expected.timeseries)
                                         for t in utilization)
    # summary shown = the independent run
    value, text = summary_cells["counts.finished"]
    assert float(value) == NUM_REQUESTS and text == f"{NUM_REQUESTS}"
    value, text = summary_cells["ttft_ms.p50"]
    assert float(value) == pytest.approx(ttft_p50, rel=1e-9) and text == f"{ttft_p50:,.1f}"
    value, _ = summary_cells["throughput.output_tokens_per_s_per_gpu"]
    assert float(value) == pytest.approx(
        expected.summary.throughput["output_tokens_per_s_per_gpu"], rel=1e-9)
    assert error_text.strip() == ""
    assert not page_errors, page_errors
    assert not external, f"requests left 127.0.0.1: {external}"
