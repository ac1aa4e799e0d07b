"""Time of ``import simkit`` in fresh interpreters (median of N), and which heavy modules load.

Usage: ``python benchmarks/import_time.py [N]``. The core must stay light: no pandas, plotly,
ipywidgets or dask at import (they load lazily when used).
"""

from __future__ import annotations

import statistics
import subprocess
import sys

CODE = ("import sys, time; t = time.perf_counter(); import simkit; "
        "print(time.perf_counter() - t, *sorted(m for m in ('pandas', 'plotly', 'ipywidgets', "
        "'dask') if m in sys.modules))")


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    times, loaded = [], set()
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                             check=True).stdout.split()
        times.append(float(out[0]))
        loaded.update(out[1:])
    print(f"import simkit: median {statistics.median(times):.3f} s over {n} fresh interpreters "
          f"(min {min(times):.3f}, max {max(times):.3f}); heavy modules loaded: "
          f"{', '.join(sorted(loaded)) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
