"""simkit: simulate a vLLM-style LLM inference server on given GPUs.

Three lines from config to numbers::

    cfg = simkit.load_config("configs/config.toml")
    result = simkit.simulate(cfg, progress=callback)
    result.summary, result.requests, result.timeseries

The core imports no UI library; ``simkit.ui`` (Plotly, ipywidgets) is separate and lazy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simkit.catalog import hardware_presets, model_presets
from simkit.config import (
    Config,
    HardwareConfig,
    LengthDist,
    ModelConfig,
    SchedulerConfig,
    SimulationConfig,
    WorkloadConfig,
)
from simkit.engine import simulate
from simkit.errors import ConfigError, SimkitError, SimulationError, TraceError
from simkit.io import (
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
    save_config,
    with_overrides,
)
from simkit.metrics import Summary
from simkit.perf import PerfModel, StepCost
from simkit.policy import Policy
from simkit.result import SimResult, SimulationInterrupted, Snapshot
from simkit.workload import RequestPlan, build_workload, read_trace

if TYPE_CHECKING:
    import pandas as pd

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "HardwareConfig",
    "LengthDist",
    "ModelConfig",
    "PerfModel",
    "Policy",
    "RequestPlan",
    "SchedulerConfig",
    "SimResult",
    "SimkitError",
    "SimulationConfig",
    "SimulationError",
    "SimulationInterrupted",
    "Snapshot",
    "StepCost",
    "Summary",
    "TraceError",
    "WorkloadConfig",
    "build_workload",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "hardware_presets",
    "load_config",
    "model_presets",
    "read_trace",
    "save_config",
    "simulate",
    "sweep",
    "with_overrides",
]


def sweep(config: Config, grid: Any, **kwargs: Any) -> pd.DataFrame:
    """Run a grid of overrides of ``config``; see :func:`simkit.sweeps.sweep`."""
    from simkit.sweeps import sweep as _sweep

    return _sweep(config, grid, **kwargs)
