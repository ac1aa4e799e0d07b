"""The sweep figures and the capacity-planner panel (no browser; see the Voila notebook).

Figures are checked on their plotted data against hand-picked points; the panel is built
without its first plan, then planned, and its outputs are checked against the plan computed
independently with :func:`simkit.ui.capacity.plan_capacity`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simkit.analysis import slo_search
from simkit.ui.capacity import RATE, capacity_planner, plan_capacity, planner_config
from simkit.ui.sweep_plots import capacity_figure, frontier_figure, slo_search_figure


def test_frontier_figure_draws_the_hand_picked_frontier():
    df = pd.DataFrame({
        "hardware.preset": ["a", "a", "b", "b", "b", "c"],
        "x": [1.0, 2.0, 3.0, 3.0, 4.0, 9.0],
        "y": [10.0, 8.0, 8.0, 5.0, 1.0, 9.0],
        "ttft_ms.p99": [100.0, 100.0, 100.0, 100.0, 100.0, 5000.0],
        "error": [None, None, None, None, None, None],
    })
    fig = frontier_figure(df, "x", "y")
    front = next(t for t in fig.data if t.name == "Pareto frontier")
    # (9, 9) dominates everything except (1, 10)
    assert list(front.x) == [1.0, 9.0] and list(front.y) == [10.0, 9.0]
    assert sum(len(t.x) for t in fig.data if t.mode == "markers") == 6
    # with an SLO the row at 5 s TTFT is hollow and off the frontier
    fig = frontier_figure(df, "x", "y", slo={"ttft_ms.p99": 1000})
    front = next(t for t in fig.data if t.name == "Pareto frontier")
    assert list(front.x) == [1.0, 3.0, 4.0] and list(front.y) == [10.0, 8.0, 1.0]
    missed = [t for t in fig.data if t.name.endswith("(misses SLO)")]
    assert len(missed) == 1 and list(missed[0].x) == [9.0]


def test_slo_search_figure_plots_every_evaluation_sorted_by_the_knob():
    cfg = planner_config("llama-3.1-8b", isl=256, osl=32, load=4.0)
    res = slo_search(cfg, knob="workload.arrival_rate", lo=1.0, hi=400.0,
                     slo={"ttft_ms.p99": 300, "tpot_ms.p50": 40}, tol=20.0,
                     overrides_for=lambda r: {"workload.num_requests": 60})
    fig = slo_search_figure(res)
    assert len(fig.data) == 2  # one panel per SLO metric
    xs = sorted(res.points["workload.arrival_rate"])
    assert list(fig.data[0].x) == xs and list(fig.data[1].x) == xs
    np.testing.assert_allclose(
        fig.data[0].y, res.points.sort_values("workload.arrival_rate")["ttft_ms.p99"])


def test_capacity_panel_shows_the_plan_it_computes():
    kwargs = dict(traffic=RATE, load=8.0, isl=512, osl=64,
                  slo={"ttft_ms.p99": 2000.0, "tpot_ms.p50": 50.0},
                  gpus=["h100-sxm", "l40s"], tps=[1, 2])
    plan = plan_capacity("llama-3-70b", **kwargs)
    assert plan.best is not None
    l40s_1 = plan.table[(plan.table["hardware.preset"] == "l40s")
                        & (plan.table["hardware.tp"] == 1)].iloc[0]
    assert "does not fit" in l40s_1["error"]
    fig = capacity_figure(plan)
    assert len(fig.data[0].x) == 4

    panel = capacity_planner(gpus=("h100-sxm", "l40s"), tps=(1, 2), run=False)
    widgets = {type(w).__name__ + ":" + str(getattr(w, "description", "")): w
               for box in panel.children[2].children for w in box.children}
    widgets["BoundedFloatText:load"].value = 8.0
    widgets["BoundedIntText:input tokens"].value = 512
    widgets["BoundedIntText:output tokens"].value = 64
    panel.plan()
    best_html = panel.children[4].value
    assert f"{int(plan.best['num_gpus'])} GPU" in best_html
    assert plan.best["hardware.preset"] in best_html
    assert "does not fit" in panel.children[5].value
