"""The capacity planner: pick a model, traffic and SLOs; see the GPUs each option needs.

``capacity_planner()`` returns an ipywidgets panel (a Voila dashboard is a title cell and this
one call). Pressing *Plan* builds a base config from the inputs (:func:`planner_config`), runs
:func:`simkit.analysis.fewest_gpus` over every chosen GPU × tensor-parallel size, and shows the
cheapest option that meets the SLOs, a bar chart of GPUs per option, and the throughput-per-GPU
vs per-user-speed frontier of every simulated point. Figures are plain ``go.Figure`` objects
redrawn inside ``Output`` widgets (FigureWidget updates made while Voila is still executing
never reach the browser).

The planner's simulations are deliberately short (at most ``max_requests`` requests each) so
a plan takes seconds; use :func:`simkit.sweep` / :func:`fewest_gpus` directly for careful runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import pandas as pd
from IPython.display import display

from simkit.analysis import CapacityPlan, fewest_gpus
from simkit.catalog import hardware_presets, model_presets
from simkit.config import Config
from simkit.errors import SimkitError
from simkit.io import config_from_dict
from simkit.ui.sweep_plots import capacity_figure, frontier_figure

__all__ = ["capacity_planner", "plan_capacity", "planner_config"]

RATE = "arrival rate (req/s)"
USERS = "concurrent users"


def planner_config(model: str, *, isl: int, osl: int, bytes_per_param: float = 1,
                   users: bool = False, load: float = 1.0, seed: int = 0) -> Config:
    """The planner's base config: ``model`` on one H100 (the candidates override the GPU).

    Fixed input/output lengths, chunked prefill with an 8192-token budget, 256 sequences,
    FP8 weights and KV cache by default; Poisson arrivals, or a closed loop of ``load`` users.
    """
    workload: dict[str, Any] = {
        "seed": seed, "input_len_dist": {"type": "fixed", "value": int(isl)},
        "output_len_dist": {"type": "fixed", "value": int(osl)}, "num_requests": 100,
    }
    if users:
        workload.update(arrival_pattern="closed_loop", num_concurrent_users=max(1, int(load)))
    else:
        workload.update(arrival_pattern="poisson", arrival_rate=float(load))
    return config_from_dict({
        "hardware": {"preset": "h100-sxm", "bytes_per_param": bytes_per_param},
        "model": {"preset": model},
        "scheduler": {"max_num_batched_tokens": 8192, "max_num_seqs": 256,
                      "enable_chunked_prefill": True},
        "workload": workload,
    })


def plan_capacity(model: str, *, traffic: str, load: float, isl: int, osl: int,
                  slo: Mapping[str, float], gpus: Sequence[str], tps: Sequence[int],
                  bytes_per_param: float = 1, max_requests: int = 200,
                  progress: Any = None) -> CapacityPlan:
    """Fewest GPUs for ``load`` over ``gpus`` × ``tps`` (what the panel's *Plan* runs).

    ``traffic`` is :data:`RATE` or :data:`USERS`. Each simulation runs a bounded number of
    requests: ``min(max_requests, max(40, 10 s of arrivals))`` at a rate, ``3 × users`` (at
    most ``max_requests``, at least the users) in a closed loop. The bisection stops at 10 %
    of the load, so the answer is accurate to about one replica.
    """
    users = traffic == USERS
    base = planner_config(model, isl=isl, osl=osl, bytes_per_param=bytes_per_param,
                          users=users, load=load)
    if users:
        knob = "workload.num_concurrent_users"

        def requests_for(u: Any) -> dict[str, Any]:
            return {"workload.num_requests": int(max(u, min(max_requests, 3 * u))),
                    "scheduler.max_num_seqs": max(256, int(u))}
        tol: float = max(1, math.floor(load / 10))
    else:
        knob = "workload.arrival_rate"

        def requests_for(r: Any) -> dict[str, Any]:
            return {"workload.num_requests": int(min(max_requests, max(40, 10 * r)))}
        tol = load / 10
    candidates = [{"hardware.preset": g, "hardware.tp": int(t)} for g in gpus for t in tps]
    return fewest_gpus(base, candidates, load=int(load) if users else float(load), slo=slo,
                       knob=knob, tol=tol, max_iter=8, overrides_for=requests_for,
                       progress=progress, by="usd_per_hour")


def _best_html(plan: CapacityPlan) -> str:
    best = plan.best
    if best is None:
        return ("<b>No option meets the SLOs</b> (see the notes in the table); try more GPUs, "
                "larger tensor-parallel sizes or looser SLOs.")
    usd = best.get("usd_per_hour")
    cost = f"${usd:,.2f}/hour" if usd is not None and not pd.isna(usd) else "no price listed"
    gpus = int(best["num_gpus"])
    if best["max_load_per_replica"] >= plan.load:
        carry = f"One replica carries the whole load of {plan.load:,.3g}"
    else:
        carry = (f"Each replica carries {best['load_per_replica']:,.3g} (its limit within "
                 f"the SLOs is about {best['max_load_per_replica']:,.3g})")
    return (f"<b>Cheapest option meeting the SLOs:</b> {int(best['replicas'])} × "
            f"{best['hardware.preset']} tp={int(best['hardware.tp'])} = "
            f"<b>{gpus} GPU{'s' if gpus != 1 else ''}</b>, {cost}. {carry}: "
            f"TTFT p99 {best['ttft_ms.p99']:,.0f} ms, TPOT p50 {best['tpot_ms.p50']:,.1f} ms, "
            f"{best['output_tokens_per_s_per_gpu']:,.0f} output tok/s per GPU.")


def _table_html(plan: CapacityPlan) -> str:
    cols = {"hardware.preset": "GPU", "hardware.tp": "TP", "meets": "meets SLO",
            "replicas": "replicas", "num_gpus": "GPUs", "usd_per_hour": "$/hour",
            "max_load_per_replica": "max load / replica", "ttft_ms.p99": "TTFT p99 ms",
            "tpot_ms.p50": "TPOT p50 ms", "output_tokens_per_s_per_gpu": "tok/s/GPU"}
    t = plan.table.reindex(columns=[*cols, "error", "note"]).copy()
    t["note"] = [e if isinstance(e, str) else (n if isinstance(n, str) else "")
                 for e, n in zip(t["error"], t["note"], strict=True)]
    for col in ("replicas", "num_gpus"):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype("Int64")
    t["meets"] = ["yes" if m is True or m == 1 else "no" for m in t["meets"]]
    t = t.drop(columns="error").rename(columns={**cols, "note": "note"})
    return t.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:,.1f}",
                     classes="simkit-plan")


def capacity_planner(*, gpus: Sequence[str] = ("h100-sxm", "h200", "b200", "mi300x"),
                     tps: Sequence[int] = (1, 2, 4, 8), model: str = "llama-3-70b",
                     run: bool = True) -> w.VBox:
    """The capacity-planner panel; with ``run`` it plans the defaults once when built.

    Defaults: four GPUs × four tensor-parallel sizes, runs of at most 200 requests; the first
    plan takes a few seconds.
    """
    hw_ids = list(hardware_presets())
    style = {"description_width": "150px"}
    layout = w.Layout(width="340px")
    model_w = w.Dropdown(options=list(model_presets()), value=model, description="model",
                         style=style, layout=layout)
    precision_w = w.Dropdown(options=[("FP8", 1.0), ("BF16", 2.0)], value=1.0,
                             description="precision", style=style, layout=layout)
    traffic_w = w.ToggleButtons(options=[RATE, USERS], value=RATE, description="traffic",
                                style={"description_width": "150px", "button_width": "160px"})
    load_w = w.BoundedFloatText(value=8.0, min=0.01, max=1e6, description="load",
                                style=style, layout=layout)
    isl_w = w.BoundedIntText(value=1024, min=1, max=131072, description="input tokens",
                             style=style, layout=layout)
    osl_w = w.BoundedIntText(value=128, min=2, max=32768, description="output tokens",
                             style=style, layout=layout)
    ttft_w = w.BoundedFloatText(value=2000.0, min=1, max=1e7, description="TTFT p99 ≤ (ms)",
                                style=style, layout=layout)
    tpot_w = w.BoundedFloatText(value=50.0, min=0.1, max=1e6, description="TPOT p50 ≤ (ms)",
                                style=style, layout=layout)
    gpus_w = w.SelectMultiple(options=hw_ids, value=tuple(g for g in gpus if g in hw_ids),
                              rows=min(8, len(hw_ids)), description="GPUs", style=style,
                              layout=layout)
    tps_w = w.SelectMultiple(options=[1, 2, 4, 8], value=tuple(t for t in tps
                                                              if t in (1, 2, 4, 8)),
                             rows=4, description="tensor parallel", style=style, layout=layout)
    button = w.Button(description="Plan", button_style="primary", icon="play")
    status = w.HTML()
    best_out = w.HTML()
    table_out = w.HTML()
    bars_out = w.Output()
    frontier_out = w.Output()

    def on_traffic(change: dict[str, Any]) -> None:
        load_w.value = 64.0 if change["new"] == USERS else 8.0
    traffic_w.observe(on_traffic, names="value")

    def plan(_: Any = None) -> None:
        if not gpus_w.value or not tps_w.value:
            status.value = "<span style='color:#b00'>Pick at least one GPU and one size.</span>"
            return
        button.disabled = True

        def progress(i: int, n: int, cand: Mapping[str, Any]) -> None:
            status.value = (f"simulating option {i + 1} of {n}: {cand['hardware.preset']} "
                            f"tp={cand['hardware.tp']} …")
        try:
            result = plan_capacity(
                model_w.value, traffic=traffic_w.value, load=load_w.value,
                isl=isl_w.value, osl=osl_w.value,
                slo={"ttft_ms.p99": ttft_w.value, "tpot_ms.p50": tpot_w.value},
                gpus=list(gpus_w.value), tps=list(tps_w.value),
                bytes_per_param=precision_w.value, progress=progress)
        except SimkitError as exc:
            status.value = f"<span style='color:#b00'>{exc}</span>"
            return
        finally:
            button.disabled = False
        status.value = (f"{len(result.points)} simulations of {len(result.table)} options "
                        f"for {load_w.value:g} ({traffic_w.value}).")
        best_out.value = _best_html(result)
        table_out.value = _table_html(result)
        bars_out.clear_output(wait=True)
        with bars_out:
            display(capacity_figure(result, label_cols=["hardware.preset", "hardware.tp"]))
        frontier_out.clear_output(wait=True)
        with frontier_out:
            display(frontier_figure(result.points, slo=result.slo,
                                    hover=["hardware.preset", "hardware.tp", result.knob,
                                           "ttft_ms.p99", "tpot_ms.p50"],
                                    title="Every simulated point: throughput per GPU vs "
                                          "speed per user"))
    button.on_click(plan)

    inputs = w.HBox([
        w.VBox([model_w, precision_w, load_w, isl_w, osl_w]),
        w.VBox([ttft_w, tpot_w, gpus_w, tps_w]),
    ])
    panel = w.VBox([
        w.HTML("<h3>simkit capacity planner</h3><p>How many GPUs does each option need to "
               "serve this traffic within the latency targets? Each option's load per "
               "replica is found by bisection on short simulations.</p>"),
        traffic_w, inputs, w.HBox([button, status]), best_out, table_out, bars_out,
        frontier_out,
    ])
    panel.plan = plan  # type: ignore[attr-defined]
    if run:
        plan()
    return panel

