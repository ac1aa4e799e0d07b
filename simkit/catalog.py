"""Presets of real GPUs and models, read from the package's TOML data files.

``simkit/presets/hardware.toml`` holds per-GPU datasheet numbers and ``models.toml`` the
architectures from each model's published ``config.json``; every number there carries a
``# source:`` comment. A config names a preset (``hardware = "h100-sxm"`` or
``[hardware] preset = "h100-sxm"``) and may override any field.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

from simkit.errors import ConfigError

__all__ = ["hardware_presets", "model_presets", "preset"]


@cache
def _load(kind: str) -> dict[str, dict[str, Any]]:
    text = resources.files("simkit").joinpath("presets", f"{kind}.toml").read_text("utf-8")
    return tomllib.loads(text)


def hardware_presets() -> dict[str, dict[str, Any]]:
    """All GPU presets: id → per-GPU fields of :class:`~simkit.config.HardwareConfig`."""
    return {k: dict(v) for k, v in _load("hardware").items()}


def model_presets() -> dict[str, dict[str, Any]]:
    """All model presets: id → fields of :class:`~simkit.config.ModelConfig`."""
    return {k: dict(v) for k, v in _load("models").items()}


def preset(table: str, name: str) -> dict[str, Any]:
    """The fields of preset ``name`` for ``table`` ('hardware' or 'model'), with ``preset`` set.

    Raises ConfigError listing the known ids when the name is unknown.
    """
    presets = hardware_presets() if table == "hardware" else model_presets()
    key = name.strip().lower()
    if key not in presets:
        raise ConfigError(
            f"[{table}] preset = {name!r}: unknown preset; known: {', '.join(sorted(presets))}",
            table=table, field="preset")
    return {**presets[key], "preset": key}
