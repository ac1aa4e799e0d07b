"""simkit speed benchmarks: fast mode vs the exact step-by-step mode, in one process.

Usage::

    python benchmarks/run.py                 # all workloads, median of 5 fast runs
    python benchmarks/run.py --only B1,B2 --repeat 3
    python benchmarks/run.py --no-exact      # skip the (slow) exact baselines

For each workload it prints simulated requests, engine steps, the median wall time of
``simkit.simulate`` in fast mode, the exact mode's wall time on the same workload (B5: on its
first ``--exact-requests`` requests, since the exact mode would take too long on a million),
the speed-up, the peak RSS of a separate process running the fast simulation, and whether fast
and exact agree (per-request first-token and finish times within 1e-9 relative).
Numbers are machine-dependent; the ratios are what to compare across changes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import simkit  # noqa: E402

CONFIGS = ROOT / "configs"


def b1() -> simkit.Config:
    """The blog benchmark: H100 TP=2 FP8 Llama-3-70B, closed loop 64 users, 640 requests."""
    return simkit.load_config(CONFIGS / "test_blog.toml")


def b2() -> simkit.Config:
    """configs/config.toml (Poisson 5 req/s, overloaded) with 20,000 requests."""
    return simkit.with_overrides(simkit.load_config(CONFIGS / "config.toml"),
                                 {"workload.num_requests": 20_000})


def b3() -> simkit.Config:
    """The full Azure LLM inference 2023 conversation trace (19,366 requests)."""
    return simkit.load_config(CONFIGS / "azure_conv.toml")


def b4() -> simkit.Config:
    """The Mooncake conversation trace (12,031 requests) with prefix caching."""
    return simkit.load_config(CONFIGS / "mooncake_conversation.toml")


def b5(num_requests: int = 1_000_000) -> simkit.Config:
    """A million short requests, Poisson at a rate the system can just sustain."""
    return simkit.with_overrides(simkit.load_config(CONFIGS / "million.toml"),
                                 {"workload.num_requests": num_requests})


WORKLOADS: dict[str, Callable[[], simkit.Config]] = {
    "B1": b1, "B2": b2, "B3": b3, "B4": b4, "B5": b5,
}
EXACT_SUBSET = {"B5": lambda n: b5(n)}


def _timed(config: simkit.Config, mode: str) -> tuple[float, simkit.SimResult]:
    t0 = time.perf_counter()
    result = simkit.simulate(config, mode=mode)
    return time.perf_counter() - t0, result


def _rss_child(name: str, conn: mp.connection.Connection) -> None:
    config = WORKLOADS[name]()
    simkit.simulate(config, mode="fast")
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def peak_rss(name: str) -> float:
    """Peak resident memory (bytes) of a fresh process running the fast simulation."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_rss_child, args=(name, child))
    proc.start()
    value = parent.recv()
    proc.join()
    return float(value)


def agree(a: simkit.SimResult, b: simkit.SimResult) -> bool:
    """Per-request first-token and finish times equal within 1e-9 relative, same counts."""
    if a.summary.counts != b.summary.counts:
        return False
    for col in ("first_token_time", "finish_time"):
        x, y = a.requests[col].to_numpy(), b.requests[col].to_numpy()
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return False
        if not np.allclose(x[~np.isnan(x)], y[~np.isnan(y)], rtol=1e-9, atol=0):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-exact", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--exact-requests", type=int, default=20_000,
                        help="B5's exact baseline runs on this many requests")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    header = (f"{'':3} {'requests':>9} {'steps':>10} {'fast s':>8} {'exact s':>8} "
              f"{'speed-up':>8} {'peak RSS':>9}  fast==exact")
    print(header)
    print("-" * len(header))
    for name in names:
        config = WORKLOADS[name]()
        times = []
        fast = None
        for _ in range(args.repeat):
            wall, fast = _timed(config, "fast")
            times.append(wall)
        assert fast is not None
        median = statistics.median(times)
        exact_wall, same, ratio = float("nan"), "-", float("nan")
        if not args.no_exact:
            if name in EXACT_SUBSET:
                sub = EXACT_SUBSET[name](args.exact_requests)
                fast_sub = _timed(sub, "fast")
                exact_wall, exact = _timed(sub, "exact")
                ratio = exact_wall / fast_sub[0]
                same = f"{agree(fast_sub[1], exact)} (first {args.exact_requests:,})"
            else:
                exact_wall, exact = _timed(config, "exact")
                ratio = exact_wall / median
                same = str(agree(fast, exact))
        rss = float("nan") if args.no_memory else peak_rss(name) / 2**20
        print(f"{name:3} {fast.summary.counts['arrived']:>9,} {fast.num_steps:>10,} "
              f"{median:>8.3f} {exact_wall:>8.2f} {ratio:>7.1f}x {rss:>7.0f}MB  {same}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
