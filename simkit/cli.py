"""Command line: ``simkit run [CONFIG]``, ``simkit presets`` (and ``validate``/``sweep``).

Thin on purpose: parse, load, simulate, print. Any :class:`~simkit.errors.SimkitError` becomes
one line on stderr (``simkit: error: ...``) and exit status 2; Ctrl-C prints the partial
summary and exits with 130.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simkit.errors import SimkitError

DEFAULT_CONFIG = "configs/config.toml"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1e5:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
           left: int = 1) -> str:
    """A plain-text table; the first ``left`` columns are left-aligned, the rest right."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    out = [title, line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def describe_config(config: Any) -> str:
    """A short human description of a config (printed before a run)."""
    hw, m, sc, wl = config.hardware, config.model, config.scheduler, config.workload
    lines = [
        f"hardware : {hw.name} × tp={hw.tp}  ({hw.precision}, "
        f"{hw.total_flops / 1e12:,.0f} TFLOP/s, {hw.total_memory_bandwidth / 1e12:.2f} TB/s, "
        f"{hw.total_memory_capacity / 1e9:,.0f} GB)",
        f"model    : {m.name}  ({m.num_parameters / 1e9:.2f} B params"
        + (f", {m.active_parameters / 1e9:.2f} B active" if m.is_moe else "")
        + f", {m.num_layers} layers, KV {config.kv_bytes_per_token / 1024:.0f} KiB/token)",
        f"kv cache : {config.kv_cache_capacity / 1e9:,.1f} GB = {config.num_gpu_blocks:,} "
        f"blocks × {sc.block_size} tokens",
        f"scheduler: {sc.policy}, max_num_batched_tokens={sc.max_num_batched_tokens}, "
        f"max_num_seqs={sc.max_num_seqs}, chunked_prefill={sc.enable_chunked_prefill}, "
        f"prefix_caching={sc.enable_prefix_caching}",
    ]
    if wl.arrival_pattern == "closed_loop":
        load = f"closed loop, {wl.num_concurrent_users} users"
    elif wl.arrival_pattern == "trace":
        load = f"trace {Path(wl.trace_path or '').name} (time_scale {wl.time_scale:g})"
        if wl.trace_limit:
            load += f", first {wl.trace_limit:,} rows"
    elif wl.arrival_pattern == "batched":
        load = "batched (all at t=0)"
    else:
        load = f"{wl.arrival_pattern} {wl.arrival_rate:g} req/s"
    bound = []
    if wl.num_requests:
        bound.append(f"{wl.num_requests:,} requests")
    if wl.duration_secs:
        bound.append(f"{wl.duration_secs:g} s")
    lines.append(f"workload : {load}, {', '.join(bound) or 'whole trace'}, seed {wl.seed}")
    if wl.arrival_pattern != "trace":
        lines.append(f"lengths  : input {wl.input_len_dist.describe()}, output "
                     f"{wl.output_len_dist.describe()}")
    return "\n".join(lines)


def format_summary(summary: Any, wall_time_s: float | None = None) -> str:
    """The result tables: latency, throughput, utilization, counts."""
    s = summary.to_dict()
    lat_rows = []
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"),
                       ("e2e_ms", "E2E"), ("queue_ms", "Queue")):
        st = s[key]
        lat_rows.append([label] + [_fmt(st.get(k)) for k in
                                   ("mean", "p50", "p90", "p95", "p99", "max")])
    parts = [_table("Latency (ms)", ["metric", "mean", "p50", "p90", "p95", "p99", "max"],
                    lat_rows)]
    th = s["throughput"]
    parts.append(_table("Throughput", ["metric", "value"], [
        ["requests/s", _fmt(th["requests_per_s"], 3)],
        ["input tokens/s", _fmt(th["input_tokens_per_s"], 1)],
        ["output tokens/s", _fmt(th["output_tokens_per_s"], 1)],
        ["total tokens/s", _fmt(th["total_tokens_per_s"], 1)],
        ["output tokens/s per GPU", _fmt(th["output_tokens_per_s_per_gpu"], 1)],
        ["total tokens/s per GPU", _fmt(th["total_tokens_per_s_per_gpu"], 1)],
        ["output tokens/s per user", _fmt(th["output_tokens_per_s_per_user"], 1)],
    ]))
    ut = s["utilization"]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f} %"
    parts.append(_table("Utilization (time-weighted)", ["metric", "value"], [
        ["compute (of peak FLOP/s)", pct(ut["compute"])],
        ["memory bandwidth (of peak)", pct(ut["memory_bandwidth"])],
        ["KV cache mean", pct(ut["kv_cache_mean"])],
        ["KV cache peak", pct(ut["kv_cache_peak"])],
        ["busy", pct(ut["busy"])],
    ]))
    c = s["counts"]
    pc = s["prefix_cache"]
    rows = [["arrived", _fmt(c["arrived"])], ["finished", _fmt(c["finished"])],
            ["rejected", _fmt(c["rejected"])], ["preemptions", _fmt(c["preemptions"])],
            ["engine steps", _fmt(c["steps"])],
            ["prefix-cache hit rate", pct(pc["hit_rate"])],
            ["simulated duration (s)", _fmt(s["duration_s"], 2)]]
    if c.get("unfinished"):
        rows.insert(3, ["unfinished", _fmt(c["unfinished"])])
    if wall_time_s is not None:
        rows.append(["wall time (s)", _fmt(wall_time_s, 2)])
    parts.append(_table("Counts", ["metric", "value"], rows))
    if s.get("partial"):
        parts.append(f"PARTIAL RESULT: {s.get('stop_reason')}")
    return "\n\n".join(parts)


def rejection_note(requests: Any) -> str | None:
    """One line saying how many requests were rejected and why (the first reason), if any."""
    if "reject_reason" not in requests.columns:
        return None
    rejected = requests[requests["status"] == "rejected"]
    if not len(rejected):
        return None
    first = rejected.iloc[0]
    return (f"rejected {len(rejected):,} request(s) that can never run here; e.g. request "
            f"{int(first['request_id'])}: {first['reject_reason']}")


def _progress_bar(total: int | None) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="req", file=sys.stderr, delay=1.0, dynamic_ncols=True,
               leave=False, desc="simulating")

    def callback(snap: Any) -> None:
        done = snap.num_finished + snap.num_rejected
        bar.update(done - bar.n)
        bar.set_postfix_str(f"t={snap.sim_time:,.0f}s running={snap.num_running} "
                            f"waiting={snap.num_waiting}", refresh=False)
        if snap.done:
            bar.close()
    return callback


def _emit(text: str) -> None:
    """Print to stdout; if the reader went away (``| head``), keep going silently so the
    requested output files are still written."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def cmd_run(args: argparse.Namespace) -> int:
    import simkit
    from simkit.io import parse_override

    overrides = dict(parse_override(s) for s in args.set or [])
    if args.seed is not None:
        overrides["workload.seed"] = args.seed
    if args.mode:
        overrides["simulation.mode"] = args.mode
    config = simkit.load_config(args.config, overrides)  # overrides may complete the file
    outputs = [(flag, path) for flag, path in (("--json", args.json),
                                                ("--requests-csv", args.requests_csv),
                                                ("--timeseries-csv", args.timeseries_csv)) if path]
    for flag, path in outputs:  # fail before a long run, not after it
        target = Path(path)
        if target.is_dir() or not target.parent.is_dir():
            raise simkit.ConfigError(f"{flag} {path}: not a writable file path (is the folder "
                                     "there?)")
    _emit(describe_config(config))
    callback = None if args.no_progress else _progress_bar(None)
    status = 0
    try:
        result = simkit.simulate(config, progress=callback)
    except simkit.SimulationInterrupted as exc:
        result = exc.result
        print("\ninterrupted: partial results follow", file=sys.stderr)
        status = 130
    if args.json:
        result.to_json(args.json)
    if args.requests_csv:
        result.requests.to_csv(args.requests_csv, index=False)
    if args.timeseries_csv:
        result.timeseries.to_csv(args.timeseries_csv, index=False)
    _emit("\n" + format_summary(result.summary, result.wall_time_s))
    note = rejection_note(result.requests)
    if note:
        _emit("\n" + note)
    return status


def cmd_presets(args: argparse.Namespace) -> int:
    from simkit.catalog import hardware_presets, model_presets

    hw = hardware_presets()
    rows = [[k, v["name"], _fmt(v.get("flops_bf16", 0) / 1e12, 0),
             _fmt(v["flops_fp8"] / 1e12, 0) if "flops_fp8" in v else "-",
             _fmt(v["flops_fp4"] / 1e12, 0) if "flops_fp4" in v else "-",
             f"{v['memory_bandwidth'] / 1e12:.2f}", f"{v['memory_capacity'] / 1e9:.0f}",
             f"{v.get('interconnect_bandwidth', 0) / 1e9:.0f}",
             _fmt(v.get("price_per_gpu_hour"), 2)] for k, v in hw.items()]
    print(_table("Hardware presets (per GPU; dense peaks)",
                 ["id", "name", "BF16 TF/s", "FP8 TF/s", "FP4 TF/s", "HBM TB/s", "HBM GB",
                  "link GB/s", "$/h"], rows, left=2))
    models = model_presets()
    rows = [[k, v["name"], f"{v['num_parameters'] / 1e9:.1f}",
             f"{v.get('num_active_parameters', v['num_parameters']) / 1e9:.1f}",
             str(v["num_layers"]), str(v["hidden_dim"]),
             f"{v['num_heads']}/{v.get('num_kv_heads', v['num_heads'])}",
             str(v.get("num_experts", "-")), _fmt(v["max_seq_len"])]
            for k, v in models.items()]
    print()
    print(_table("Model presets", ["id", "name", "params B", "active B", "layers", "hidden",
                                   "heads/kv", "experts", "max len"], rows, left=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simkit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate a config and print the results")
    run.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                     help=f"TOML config (default {DEFAULT_CONFIG})")
    run.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    run.add_argument("--requests-csv", metavar="FILE", help="write per-request rows as CSV")
    run.add_argument("--timeseries-csv", metavar="FILE", help="write the time series as CSV")
    run.add_argument("--seed", type=int, help="override workload.seed")
    run.add_argument("--set", action="append", metavar="TABLE.FIELD=VALUE",
                     help="override a config field (repeatable), e.g. --set hardware.tp=4")
    run.add_argument("--mode", choices=["fast", "exact"], help="engine mode")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    presets = sub.add_parser("presets", help="list the hardware and model presets")
    presets.set_defaults(func=cmd_presets)
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: Any) -> None:
    """Commands from other modules register here when present (validate, sweep)."""
    for module in ("simkit.validate", "simkit.sweeps"):
        try:
            mod = __import__(module, fromlist=["add_cli"])
        except ImportError:
            continue
        if hasattr(mod, "add_cli"):
            mod.add_cli(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SimkitError as exc:
        print(f"simkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
