"""The capacity-planner dashboard served by a real Voila, driven by headless Chromium.

Checks what a user sees: the first plan appears without any click, the bar chart plots the
GPUs of every option (read from the plotted data, not titles), and a stricter TTFT target
typed in the browser followed by *Plan* changes the answer.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BARS_JS = ("() => { const d = document.querySelectorAll('.js-plotly-plot')[0]._fullData[0];"
           " return [Array.from(d.x), Array.from(d.y)]; }")
BEST_JS = ("() => { const b = Array.from(document.querySelectorAll('b')).find(e =>"
           " e.textContent.startsWith('Cheapest') || e.textContent.startsWith('No option'));"
           " return b ? b.parentElement.innerText : null; }")

pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def voila_url():
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", "08_capacity_planner.ipynb", "--no-browser",
         f"--port={port}", "--Voila.ip=127.0.0.1"],
        cwd=ROOT / "notebooks", env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError("voila did not start listening within 60 s")
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # voila and the kernels it started
        proc.wait(timeout=30)


def test_planner_dashboard_plans_and_replans_in_the_browser(voila_url):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1200, "height": 1000})
        try:
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(voila_url, wait_until="domcontentloaded", timeout=180_000)
            page.wait_for_function(BEST_JS, timeout=180_000)
            page.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)
            first = page.evaluate(BEST_JS)
            labels, gpus = page.evaluate(BARS_JS)
            # default options: 4 GPUs × TP 1, 2, 4, 8; a bar's GPUs are a multiple of its TP
            assert len(labels) == 16
            for label, n in zip(labels, gpus, strict=True):
                if n is not None:
                    assert n % int(label.split()[-1]) == 0
            assert first.startswith("Cheapest option meeting the SLOs")

            ttft = page.locator(".widget-text", has_text="TTFT p99").locator("input")
            ttft.fill("60")
            ttft.press("Enter")
            page.locator("button", has_text="Plan").click()
            page.wait_for_function(f"(old) => {{ const t = ({BEST_JS})(); "
                                   "return t && t !== old; }", arg=first, timeout=120_000)
            second = page.evaluate(BEST_JS)
            page.wait_for_function(f"(old) => JSON.stringify(({BARS_JS})()[1]) !== "
                                   "JSON.stringify(old)", arg=gpus, timeout=60_000)
            labels2, gpus2 = page.evaluate(BARS_JS)
            assert "TTFT p99" in second and second != first
            # a stricter target can only rule options out or need more GPUs for them
            before = dict(zip(labels, gpus, strict=True))
            for label, n in zip(labels2, gpus2, strict=True):
                if n is not None and not math.isnan(n):
                    assert before[label] is not None and n >= before[label]
        finally:
            ctx.close()
    assert errors == []
