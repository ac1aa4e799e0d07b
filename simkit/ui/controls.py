"""Widgets generated from the config dataclasses, and the config read back from them.

Each exposed field of :class:`~simkit.Config` becomes one :class:`Control`; its widget follows
from the field's type hint — ``Literal[...]`` a dropdown of the choices, ``bool`` a checkbox,
``int``/``float`` a number box, an optional (``X | None``) field a text box where empty means
"not set", a nested dataclass (the length distributions) its own fields. A few fields get a
friendlier widget through :data:`WIDGET_HINTS` (presets from the catalog, TP as 1/2/4/8,
``bytes_per_param`` as BF16/FP8/FP4). Number boxes do not clamp: the config's own validation
is the one authority on ranges, and a value out of range comes back as a
:class:`~simkit.ConfigError` naming the field and the allowed range.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import ipywidgets as widgets

import simkit
from simkit import Config, ConfigError

__all__ = [
    "PANEL_FIELDS",
    "WIDGET_HINTS",
    "Control",
    "build_config",
    "controls_for",
    "get_path",
    "is_relevant",
]

Kind = Literal["choice", "bool", "int", "float", "text", "optional_int", "optional_float",
               "optional_text"]

#: Fields the explorer shows, per table (None = every field of the dataclass).
PANEL_FIELDS: dict[str, tuple[str, ...] | None] = {
    "hardware": ("preset", "tp", "bytes_per_param", "gpu_memory_utilization"),
    "model": ("preset",),
    "scheduler": None,
    "workload": ("arrival_pattern", "arrival_rate", "num_concurrent_users", "num_requests",
                 "duration_secs", "seed", "trace_path", "trace_format", "input_len_dist",
                 "output_len_dist"),
    "simulation": ("mode", "sample_interval_secs", "max_wall_secs"),
}

_TABLE_CLASSES: dict[str, type] = {
    "hardware": simkit.HardwareConfig,
    "model": simkit.ModelConfig,
    "scheduler": simkit.SchedulerConfig,
    "workload": simkit.WorkloadConfig,
    "simulation": simkit.SimulationConfig,
}

PRECISIONS: tuple[tuple[str, float], ...] = (("BF16", 2.0), ("FP8", 1.0), ("FP4", 0.5))


def _preset_options(kind: str) -> list[tuple[str, Any]]:
    presets = simkit.hardware_presets() if kind == "hardware" else simkit.model_presets()
    return [(key, key) for key in presets]


#: Per-field widget overrides: label and/or a choice list (callable: evaluated when built).
WIDGET_HINTS: dict[str, dict[str, Any]] = {
    "hardware.preset": {"label": "GPU", "options": lambda: _preset_options("hardware")},
    "model.preset": {"label": "model", "options": lambda: _preset_options("model")},
    "hardware.gpu_memory_utilization": {"label": "GPU memory share"},
    "hardware.tp": {"label": "TP (GPUs)", "options": [(str(n), n) for n in (1, 2, 4, 8)]},
    "hardware.bytes_per_param": {"label": "precision", "options": list(PRECISIONS)},
}

#: Which length-distribution parameters each distribution type reads.
_DIST_PARAMS: dict[str, tuple[str, ...]] = {
    "fixed": ("value",), "uniform": ("min", "max"), "normal": ("mean", "std_dev"),
    "lognormal": ("mean", "std_dev"), "empirical": ("path",),
}


@dataclass
class Control:
    """One config field on screen: its dotted path, widget kind and the widget."""

    path: str
    kind: Kind
    widget: widgets.Widget
    options: list[tuple[str, Any]] | None = None

    def read(self) -> Any:
        """The field value the widget holds (``None`` for an empty optional box)."""
        value = self.widget.value
        if not self.kind.startswith("optional"):
            return value
        text = str(value).strip()
        if text == "" or text.lower() == "none":
            return None
        if self.kind == "optional_text":
            return text
        kind = "an integer" if self.kind == "optional_int" else "a number"
        try:
            number = float(text)
        except ValueError:
            raise _error(self.path, text, f"must be {kind} (or empty for none)") from None
        if self.kind == "optional_int":
            if not number.is_integer():
                raise _error(self.path, text, f"must be {kind} (or empty for none)")
            return int(number)
        return number

    def write(self, value: Any) -> None:
        """Show ``value`` (a config field value) in the widget."""
        if self.kind == "choice":
            assert self.options is not None
            if value not in [v for _, v in self.options]:
                label = "custom" if value is None else str(value)
                self.options.append((label, value))
                self.widget.options = list(self.options)
            self.widget.value = value
        elif self.kind.startswith("optional"):
            self.widget.value = "" if value is None else _number_text(value)
        elif self.kind == "float":
            self.widget.value = float(value)
        else:
            self.widget.value = value


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _error(path: str, value: Any, allowed: str) -> ConfigError:
    table, _, name = path.rpartition(".")
    return ConfigError(f"[{table}] {name} = {value!r}: {allowed}", table=table, field=name)


def _kind_of(hint: Any) -> tuple[Kind, list[tuple[str, Any]] | None]:
    """Widget kind of a resolved type hint (Literal choices come with their options)."""
    origin = get_origin(hint)
    if origin is Literal:
        return "choice", [(str(v), v) for v in get_args(hint)]
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1 and type(None) in get_args(hint):
            kind, _ = _kind_of(inner[0])
            if kind in ("int", "float", "text"):
                return typing.cast(Kind, f"optional_{kind}"), None
    if hint is bool:
        return "bool", None
    if hint is int:
        return "int", None
    if hint is float:
        return "float", None
    if hint is str:
        return "text", None
    raise TypeError(f"no widget for type {hint!r}")


def _label(name: str) -> str:
    return name.replace("num_", "").replace("_", " ")


def _make_widget(kind: Kind, label: str, options: list[tuple[str, Any]] | None
                 ) -> widgets.Widget:
    style = {"description_width": "150px"}
    layout = widgets.Layout(width="320px")
    if kind == "choice":
        return widgets.Dropdown(options=list(options or []), description=label, style=style,
                                layout=layout)
    if kind == "bool":
        return widgets.Checkbox(description=label, indent=False,
                                layout=widgets.Layout(width="320px"))
    if kind == "int":
        return widgets.IntText(description=label, style=style, layout=layout)
    if kind == "float":
        return widgets.FloatText(description=label, style=style, layout=layout)
    return widgets.Text(description=label, style=style, layout=layout,
                        placeholder="none" if kind.startswith("optional") else "")


def _controls_of(cls: type, prefix: str, names: tuple[str, ...] | None) -> list[Control]:
    hints = get_type_hints(cls)
    out: list[Control] = []
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        path = f"{prefix}.{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.extend(_controls_of(typing.cast(type, hint), path, None))
            continue
        kind, options = _kind_of(hint)
        extra = WIDGET_HINTS.get(path, {})
        if "options" in extra:
            kind = "choice"
            options = extra["options"]() if callable(extra["options"]) else extra["options"]
        label = extra.get("label", _label(f.name))
        if prefix.endswith("_len_dist"):
            label = f"{prefix.split('.')[-1].split('_')[0]} {label}"
        widget = _make_widget(kind, label, options)
        widget.add_class("simkit-field")
        widget.add_class("simkit-field-" + path.replace(".", "-"))
        out.append(Control(path=path, kind=kind, widget=widget,
                           options=list(options) if options is not None else None))
    return out


def controls_for(table: str, names: tuple[str, ...] | None = None) -> list[Control]:
    """Controls for the fields ``names`` of config table ``table`` (all fields if None)."""
    return _controls_of(_TABLE_CLASSES[table], table, names)


def get_path(config: Config, path: str) -> Any:
    """The value at a dotted path of a config (``"workload.input_len_dist.value"``)."""
    node: Any = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def is_relevant(path: str, values: Mapping[str, Any]) -> bool:
    """Whether a field matters given the other values (irrelevant ones are hidden/ignored)."""
    pattern = values.get("workload.arrival_pattern")
    if path == "workload.arrival_rate":
        return pattern not in ("closed_loop", "trace", "batched")
    if path == "workload.num_concurrent_users":
        return pattern == "closed_loop"
    if path in ("workload.trace_path", "workload.trace_format"):
        return pattern == "trace"
    for dist in ("workload.input_len_dist", "workload.output_len_dist"):
        if path.startswith(dist + ".") and not path.endswith(".type"):
            return path.rsplit(".", 1)[1] in _DIST_PARAMS.get(values.get(dist + ".type"), ())
    return True


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def build_config(base: Config, values: Mapping[str, Any]) -> Config:
    """``base`` with the panel's ``values`` (dotted path → value) applied and validated.

    Choosing another hardware or model preset starts that table afresh from the preset (the
    panel's other values for it are applied on top); a length distribution keeps only the
    parameters its type reads. Raises :class:`~simkit.ConfigError` for bad values.
    """
    data = simkit.config_to_dict(base)
    for table in ("hardware", "model"):
        preset = values.get(f"{table}.preset")
        if preset is not None and preset != data[table].get("preset"):
            data[table] = {"preset": preset}
    for dist in ("input_len_dist", "output_len_dist"):
        if f"workload.{dist}.type" in values:
            data["workload"][dist] = {}
    for path, value in values.items():
        if path.endswith(".preset") or not is_relevant(path, values):
            continue
        _set_path(data, path, value)
    return simkit.config_from_dict(data)
