"""Configs in and out: TOML files and plain dicts, presets, dotted overrides.

``config_from_dict`` is the one place that turns user data into a :class:`Config`: it resolves
presets, rejects unknown keys (listing the valid ones), and resolves relative file paths against
the config file's folder. ``with_overrides`` applies ``{"hardware.tp": 2}``-style changes (the
CLI's ``--set``, sweeps and the widgets use it); changing ``hardware.preset`` or
``model.preset`` swaps the preset's numbers while keeping fields the user set explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simkit.catalog import preset as load_preset
from simkit.config import (
    Config,
    HardwareConfig,
    LengthDist,
    ModelConfig,
    SchedulerConfig,
    SimulationConfig,
    WorkloadConfig,
)
from simkit.errors import ConfigError

__all__ = [
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "load_config",
    "parse_override",
    "save_config",
    "with_overrides",
]

_TABLES: dict[str, type] = {
    "hardware": HardwareConfig,
    "model": ModelConfig,
    "scheduler": SchedulerConfig,
    "workload": WorkloadConfig,
    "simulation": SimulationConfig,
}
_REQUIRED_TABLES = ("hardware", "model", "workload")
_DIST_FIELDS = ("input_len_dist", "output_len_dist")
_PATH_FIELDS = {("workload", "trace_path")}


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _check_keys(table: str, data: Mapping[str, Any], allowed: list[str]) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ConfigError(
            f"[{table}] unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)}; valid keys: {', '.join(allowed)}",
            table=table, field=unknown[0])


def _resolve_path(value: Any, base_dir: Path | None) -> Any:
    if isinstance(value, str) and base_dir is not None and not Path(value).is_absolute():
        candidate = base_dir / value
        return str(candidate)
    return value


def _build_table(name: str, raw: Any, base_dir: Path | None) -> Any:
    cls = _TABLES[name]
    if isinstance(raw, str) and name in ("hardware", "model"):
        raw = {"preset": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}] must be a table (or a preset name for hardware/model), "
                          f"got {raw!r}", table=name)
    data = dict(raw)
    _check_keys(name, data, _field_names(cls))
    if name in ("hardware", "model") and data.get("preset") is not None:
        if not isinstance(data["preset"], str):
            raise ConfigError(f"[{name}] preset = {data['preset']!r}: must be a preset name",
                              table=name, field="preset")
        data = {**load_preset(name, data["preset"]), **data}
        data["preset"] = data["preset"].strip().lower()
    if name == "workload":
        for dist in _DIST_FIELDS:
            if dist in data:
                data[dist] = _build_dist(f"workload.{dist}", data[dist], base_dir)
    for table, fname in _PATH_FIELDS:
        if table == name and fname in data:
            data[fname] = _resolve_path(data[fname], base_dir)
    try:
        return cls(**data)
    except TypeError as exc:  # a required field is missing
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"[{name}] missing required key(s): {', '.join(missing)}"
                          if missing else f"[{name}] {exc}", table=name,
                          field=missing[0] if missing else None) from None


def _build_dist(table: str, raw: Any, base_dir: Path | None) -> LengthDist:
    if isinstance(raw, LengthDist):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{table}] must be a table such as {{type = \"fixed\", value = 1024}}"
                          f", got {raw!r}", table=table)
    data = dict(raw)
    _check_keys(table, data, _field_names(LengthDist))
    if "path" in data:
        data["path"] = _resolve_path(data["path"], base_dir)
    dist = LengthDist(**data)
    dist.check(table)
    used = {"type", *LengthDist.PARAMETERS.get(str(data.get("type", "fixed")), ())}
    unused = [k for k in data if k not in used]
    if unused:
        raise ConfigError(f"[{table}] {unused[0]} = {data[unused[0]]!r}: not used by type = "
                          f"{dist.type!r}, which takes {', '.join(sorted(used - {'type'}))}",
                          table=table, field=unused[0])
    return dist


def config_from_dict(data: Mapping[str, Any], *, base_dir: str | Path | None = None) -> Config:
    """Build and validate a :class:`Config` from nested dicts (the TOML structure).

    ``base_dir`` is the folder relative file paths (traces, empirical lengths) refer to.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a table of tables, got {type(data).__name__}")
    _check_keys("config", data, list(_TABLES))
    for name in _REQUIRED_TABLES:
        if name not in data:
            raise ConfigError(f"[{name}] table is missing (a config needs "
                              f"{', '.join(_REQUIRED_TABLES)})", table=name)
    base = Path(base_dir) if base_dir is not None else None
    tables = {name: _build_table(name, data[name], base) for name in _TABLES if name in data}
    return Config(**tables)


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read a TOML config file (seed inference-lab configs load unchanged).

    ``overrides`` (dotted names, as in :func:`with_overrides`) are applied to the file's data
    *before* validation, so they can complete or repair a file (``hardware.tp`` for a model
    that does not fit one GPU, ``workload.duration_secs`` for a file without a bound).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    base_dir = path.resolve().parent
    try:
        if overrides:
            data = _apply_overrides(_resolve_presets(data), overrides)
        return config_from_dict(data, base_dir=base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", table=exc.table, field=exc.field) from None


def _clean(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _clean(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    return value


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as nested plain dicts (``None`` fields left out); JSON- and TOML-safe."""
    return _clean(config)  # type: ignore[no-any-return]


def config_to_toml(config: Config) -> str:
    """The config as TOML text that :func:`load_config` reads back to an equal config."""
    import tomli_w

    return tomli_w.dumps(config_to_dict(config))


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as TOML (fully resolved: presets expanded, paths absolute)."""
    Path(path).write_text(config_to_toml(config), encoding="utf-8")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``table.field=value`` (value in TOML syntax; bare words are strings)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected table.field=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


#: Fields that survive swapping a table's preset: deployment choices, not properties of the
#: old GPU or model (swapping GPUs keeps tp, precision and calibration; swapping models keeps
#: the serving max_seq_len). Everything else comes from the new preset.
_HW_SPEC_FIELDS = {"name", "preset", "compute_flops", "flops_bf16", "flops_fp8", "flops_fp4",
                   "memory_bandwidth", "memory_capacity", "interconnect_bandwidth",
                   "interconnect_latency", "price_per_gpu_hour", "kv_cache_capacity"}
_CARRY_OVER = {
    "hardware": {f.name for f in dataclasses.fields(HardwareConfig)} - _HW_SPEC_FIELDS,
    "model": {"max_seq_len"},
}


def with_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with dotted-name overrides applied and everything re-validated.

    ``{"hardware.tp": 4, "workload.input_len_dist.value": 2048, "model.preset": "llama-3.1-8b"}``.
    Setting a ``preset`` re-bases the table on that preset: the new GPU's or model's numbers
    replace the old ones, while deployment choices the user set (``tp``, ``bytes_per_param``,
    ``gpu_memory_utilization``, calibration terms; the model's ``max_seq_len``) carry over.
    """
    return config_from_dict(_apply_overrides(config_to_dict(config), overrides))


def _resolve_presets(data: Mapping[str, Any]) -> dict[str, Any]:
    """Raw TOML data with preset-name tables written as ``{"preset": name}`` tables."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    for name in ("hardware", "model"):
        if isinstance(out.get(name), str):
            out[name] = {"preset": out[name]}
    return out


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply dotted overrides to nested config data (see :func:`with_overrides`)."""
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) < 2 or parts[0] not in _TABLES:
            raise ConfigError(f"override {key!r}: expected table.field with table one of "
                              f"{', '.join(_TABLES)}")
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"override {key} = nan: must be a number")
        table = data.setdefault(parts[0], {})
        if not isinstance(table, dict):
            raise ConfigError(f"override {key!r}: [{parts[0]}] is not a table")
        if len(parts) == 2 and parts[1] == "preset" and parts[0] in ("hardware", "model"):
            old = load_preset(parts[0], table["preset"]) if table.get("preset") else {}
            kept = {k: v for k, v in table.items()
                    if k in _CARRY_OVER[parts[0]] and (k not in old or old[k] != v)}
            data[parts[0]] = {**load_preset(parts[0], str(value)), **kept}
            continue
        if len(parts) == 3 and parts[1] in _DIST_FIELDS and parts[2] == "type":
            table[parts[1]] = {}  # a new distribution type starts from its own parameters
        node = table
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part} is not a table")
        node[parts[-1]] = value
    return data
