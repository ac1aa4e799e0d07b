"""Hostile inputs: each gives one clear message and a documented failure, never a traceback.

API: :class:`simkit.ConfigError` (config files and values), :class:`simkit.TraceError`
(trace files), :class:`simkit.SimulationError` (a run that cannot proceed) — all
:class:`simkit.SimkitError`. CLI: ``simkit run`` prints one line ``simkit: error: ...`` on
stderr and exits with status 2. Every message names the file (when there is one), the
table/field or trace row/line, and what is allowed. A request that can never fit is not an
error: it is rejected with a reason and the run completes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from reliability_helpers import tiny_config_dict

import simkit
from simkit.cli import main

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, data: dict | None = None, text: str | None = None,
                 name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text if text is not None else tomli_w.dumps(data or tiny_config_dict()),
                    encoding="utf-8")
    return path


BASE_TOML = tomli_w.dumps(tiny_config_dict())


def cli_error(path: Path | str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Run ``simkit run PATH`` in-process; assert exit 2 and one stderr line; return it."""
    code = main(["run", str(path), "--no-progress", *extra])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("simkit: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def load_error(path: Path, error: type[simkit.SimkitError] = simkit.ConfigError) -> str:
    with pytest.raises(error) as info:
        simkit.load_config(path)
    return str(info.value)


# ------------------------------------------------------------------------------ TOML files
def test_malformed_toml_names_file_line_and_column(tmp_path, capsys):
    path = write_config(tmp_path, text=BASE_TOML.replace("block_size = 4", "block_size = = 4"))
    line = 1 + BASE_TOML.splitlines().index("block_size = 4")
    message = load_error(path)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert f"(at line {line}, column 14)" in message
    assert cli_error(path, capsys) == f"simkit: error: {message}"


@pytest.mark.parametrize("text", ["", "\n\n# only a comment\n"])
def test_an_empty_config_lists_the_required_tables(tmp_path, capsys, text):
    path = write_config(tmp_path, text=text)
    message = load_error(path)
    assert message == (f"{path}: [hardware] table is missing (a config needs hardware, "
                       "model, workload)")
    cli_error(path, capsys)


@pytest.mark.parametrize(("payload", "why"), [
    (b"\xff\xfe[hardware]\n", "cannot read config"),          # not UTF-8
    (b"\x00\x01\x02\x03", "invalid TOML"),                    # binary
])
def test_binary_or_non_utf8_files_are_config_errors(tmp_path, capsys, payload, why):
    path = tmp_path / "binary.toml"
    path.write_bytes(payload)
    assert why in load_error(path)
    cli_error(path, capsys)


def test_a_missing_file_or_a_directory_is_a_config_error(tmp_path, capsys):
    assert load_error(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such config file"
    assert cli_error(tmp_path / "nope.toml", capsys).endswith("no such config file")
    assert "cannot read config" in load_error(tmp_path)
    cli_error(tmp_path, capsys)


# ------------------------------------------------------------------------- wrong values
@pytest.mark.parametrize(("table", "field", "toml_value", "shown", "allowed"), [
    # wrong types
    ("hardware", "tp", '"two"', "'two'", "must be an integer >= 1 and <= 1024"),
    ("scheduler", "max_num_seqs", "true", "True", "must be an integer >= 1"),
    ("scheduler", "max_num_seqs", "64.5", "64.5", "must be an integer >= 1"),
    ("scheduler", "max_num_seqs", "[64]", "[64]", "must be an integer >= 1"),
    ("scheduler", "max_num_seqs", "1979-05-27", "1979-05-27", "must be an integer >= 1"),
    ("scheduler", "enable_prefix_caching", '"yes"', "'yes'", "must be true or false"),
    ("scheduler", "policy", "3", "3",
     "must be one of fcfs, priority, sjf, sof, lof, sif, lif, stf, ltf"),
    ("model", "name", "3", "3", "must be a string"),
    # negative, zero, NaN, infinite (TOML has nan and inf literals)
    ("hardware", "memory_bandwidth", "-1.0", "-1.0", "must be a number > 0"),
    ("hardware", "memory_bandwidth", "0", "0", "must be a number > 0"),
    ("hardware", "memory_bandwidth", "nan", "nan", "must be a number > 0 (finite)"),
    ("hardware", "compute_flops", "inf", "inf", "must be a number > 0 (finite)"),
    ("hardware", "compute_flops", "-inf", "-inf", "must be a number > 0 (finite)"),
    ("hardware", "gpu_memory_utilization", "1.5", "1.5", "must be a number > 0 and <= 1"),
    ("hardware", "beta", "-0.001", "-0.001", "must be a number >= 0"),
    ("scheduler", "block_size", "0", "0", "must be an integer >= 1 and <= 4096"),
    ("scheduler", "max_num_batched_tokens", "-5", "-5", "must be an integer >= 1"),
    ("model", "num_layers", "nan", "nan", "must be an integer >= 1 (finite)"),
    ("simulation", "max_sim_secs", "0", "0", "must be a number > 0"),
    ("simulation", "max_wall_secs", "-inf", "-inf", "must be a number > 0 (finite)"),
    ("simulation", "sample_interval_secs", "0.0", "0.0", "must be a number >= 1e-06"),
    ("simulation", "mode", '"turbo"', "'turbo'", "must be one of fast, exact"),
    # huge counts
    ("workload", "num_requests", "1e30", "1e+30", "must be an integer >= 1 and <= 5e+07"),
    ("workload", "seed", "-1", "-1", "must be an integer >= 0 and <= 9.22337e+18"),
])
def test_bad_values_name_table_field_value_and_allowed_range(tmp_path, capsys, table, field,
                                                            toml_value, shown, allowed):
    data = tiny_config_dict()
    text = tomli_w.dumps(data)
    header = f"[{table}]\n"
    assert header in text
    text = text.replace(header, f"{header}{field} = {toml_value}\n", 1)
    # the field may already be in the table: drop the original line
    lines = text.splitlines()
    start = lines.index(f"[{table}]")
    seen = [i for i, ln in enumerate(lines[start + 1:], start + 1)
            if ln.startswith(f"{field} = ") and i != start + 1]
    for i in reversed(seen):
        del lines[i]
    path = write_config(tmp_path, text="\n".join(lines) + "\n")
    message = load_error(path)
    assert message == f"{path}: [{table}] {field} = {shown}: {allowed}"
    assert cli_error(path, capsys) == f"simkit: error: {message}"


@pytest.mark.parametrize(("dist", "message"), [
    ('"fixed"', "[workload.input_len_dist] must be a table such as "
                "{type = \"fixed\", value = 1024}, got 'fixed'"),
    ('{ type = "zipf" }', "[workload.input_len_dist] type = 'zipf': must be one of fixed, "
                          "uniform, normal, lognormal, empirical"),
    ('{ type = "fixed" }', "[workload.input_len_dist] value = None: is required for "
                           "type = 'fixed'"),
    ('{ type = "fixed", value = nan }', "[workload.input_len_dist] value = nan: must be an "
                                        "integer >= 1 and <= 1e+09 (finite)"),
    ('{ type = "uniform", min = 10, max = 5 }', "[workload.input_len_dist] max = 5: must be "
                                                ">= min = 10"),
    ('{ type = "lognormal", mean = 6.9, std_dev = -1 }', "[workload.input_len_dist] std_dev "
                                                         "= -1: must be a number >= 0 and "
                                                         "<= 20"),
    ('{ type = "fixed", value = 8, shape = 2 }', "[workload.input_len_dist] unknown key "
                                                 "'shape'; valid keys: type, value, min, "
                                                 "max, mean, std_dev, path"),
])
def test_bad_length_distributions_name_the_nested_table(tmp_path, capsys, dist, message):
    data = tiny_config_dict()
    del data["workload"]["input_len_dist"]
    text = tomli_w.dumps(data).replace("[workload]\n", f"[workload]\ninput_len_dist = {dist}\n")
    path = write_config(tmp_path, text=text)
    assert load_error(path) == f"{path}: {message}"
    cli_error(path, capsys)


# ----------------------------------------------------------------- presets, keys, tables
def test_an_unknown_preset_lists_the_known_ones(tmp_path, capsys):
    path = write_config(tmp_path, text='[hardware]\npreset = "h100-sxmm"\n[model]\n'
                                       'preset = "llama-3-70b"\n[workload]\n'
                                       'arrival_pattern = "batched"\nnum_requests = 1\n')
    message = load_error(path)
    assert message.startswith(f"{path}: [hardware] preset = 'h100-sxmm': unknown preset; "
                              "known: ")
    for known in simkit.hardware_presets():
        assert known in message
    assert "unknown preset" in cli_error(path, capsys)
    with pytest.raises(simkit.ConfigError, match=r"\[model\] preset = 'gpt-5'.*llama-3-70b"):
        simkit.with_overrides(simkit.load_config(REPO / "configs" / "test_blog.toml"),
                              {"model.preset": "gpt-5"})


def test_unknown_keys_and_tables_list_the_valid_ones(tmp_path, capsys):
    path = write_config(tmp_path, text=BASE_TOML.replace("[scheduler]\n",
                                                         "[scheduler]\nmax_batch = 3\n"))
    message = load_error(path)
    assert message.startswith(f"{path}: [scheduler] unknown key 'max_batch'; valid keys: ")
    assert "max_num_batched_tokens" in message and "block_size" in message
    cli_error(path, capsys)
    path = write_config(tmp_path, text=BASE_TOML + "\n[foo]\nx = 1\n")
    assert load_error(path) == (f"{path}: [config] unknown key 'foo'; valid keys: hardware, "
                                "model, scheduler, workload, simulation")


def test_a_table_given_as_a_number_or_a_missing_required_key_is_named(tmp_path, capsys):
    data = tiny_config_dict()
    text = tomli_w.dumps({k: v for k, v in data.items() if k != "hardware"})
    path = write_config(tmp_path, text="hardware = 3\n" + text)
    assert load_error(path) == (f"{path}: [hardware] must be a table (or a preset name for "
                                "hardware/model), got 3")
    del data["model"]["num_layers"]
    path = write_config(tmp_path, data)
    assert load_error(path) == f"{path}: [model] missing required key(s): num_layers"
    cli_error(path, capsys)


def test_bad_command_line_overrides_are_errors_not_tracebacks(tmp_path, capsys):
    path = write_config(tmp_path)
    assert cli_error(path, capsys, "--set", "hardware.tp") == \
        "simkit: error: --set 'hardware.tp': expected table.field=value"
    assert "table one of hardware, model" in cli_error(path, capsys, "--set", "foo.tp=2")
    # overrides are applied to the file's data before validation, so the file is named too
    assert cli_error(path, capsys, "--set", "hardware.tp=nan") == \
        f"simkit: error: {path}: override hardware.tp = nan: must be a number"
    assert cli_error(path, capsys, "--set", "workload.num_requests=-3") == \
        f"simkit: error: {path}: [workload] num_requests = -3: must be an integer >= 1 and " \
        "<= 5e+07"
    assert "[workload] seed = -1" in cli_error(path, capsys, "--seed", "-1")


# --------------------------------------------------------------------- workload semantics
def test_zero_arrival_rate_is_a_config_error(tmp_path, capsys):
    data = tiny_config_dict(workload={"arrival_pattern": "poisson", "arrival_rate": 0,
                                      "num_requests": 5})
    path = write_config(tmp_path, data)
    assert load_error(path) == f"{path}: [workload] arrival_rate = 0: must be a number > 0"
    cli_error(path, capsys)


@pytest.mark.parametrize(("workload", "message"), [
    ({"arrival_pattern": "poisson", "arrival_rate": 5.0},
     "[workload] num_requests = None: is required for arrival_pattern = 'poisson' (or set "
     "duration_secs): an open loop needs a bound"),
    ({"arrival_pattern": "closed_loop", "num_requests": 5},
     "[workload] num_concurrent_users = None: is required for arrival_pattern = "
     "'closed_loop'"),
    ({"arrival_pattern": "trace"},
     "[workload] trace_path = None: is required for arrival_pattern = 'trace'"),
    ({"arrival_pattern": "poisson", "num_requests": 5},
     "[workload] arrival_rate = None: is required for arrival_pattern = 'poisson' "
     "(requests/s > 0)"),
])
def test_workloads_that_would_hang_the_seed_simulator_are_config_errors(tmp_path, workload,
                                                                      message):
    path = write_config(tmp_path, tiny_config_dict(workload=workload))
    assert load_error(path) == f"{path}: {message}"


def test_a_model_that_does_not_fit_says_how_much_memory_it_needs(tmp_path, capsys):
    path = write_config(tmp_path, text='[hardware]\npreset = "h100-sxm"\nbytes_per_param = 2\n'
                                       '[model]\npreset = "llama-3-70b"\n[workload]\n'
                                       'arrival_pattern = "batched"\nnum_requests = 1\n')
    message = load_error(path)
    # 70.55 B params × 2 B = 141.1 GB; 0.9 × 80 GB = 72.0 GB usable
    assert "model does not fit" in message
    assert "needs 141.1 GB of weights" in message and "has 72.0 GB usable" in message
    assert "hardware.tp" in message
    cli_error(path, capsys)


def test_a_kv_cache_too_small_for_one_block_is_a_config_error(tmp_path):
    data = tiny_config_dict()
    data["hardware"]["kv_cache_capacity"] = 100  # one 4-token block needs 2048 B
    with pytest.raises(simkit.ConfigError, match=r"KV cache too small.*4 tokens × 512 B/token"):
        simkit.config_from_dict(data)


def test_prompts_too_long_for_max_seq_len_or_the_cache_are_rejected_and_the_run_completes(
        tmp_path, capsys):
    # 40 blocks × 4 tokens = 160 positions of KV; max_seq_len 128
    plan = simkit.RequestPlan(num_prompt_tokens=[200, 100, 10, 150], max_tokens=[5, 40, 5, 1],
                              priorities=[0] * 4, arrival_times=[0.0] * 4, block_hashes=None)
    data = tiny_config_dict(max_seq_len=128, num_blocks=40)
    result = simkit.simulate(simkit.config_from_dict(data), plan=plan)
    req = result.requests
    assert req["status"].tolist() == ["rejected", "rejected", "finished", "rejected"]
    assert req["reject_reason"].iloc[0] == "prompt of 200 tokens exceeds max_seq_len 128"
    assert req["reject_reason"].iloc[1] == ("prompt + max_tokens = 140 tokens exceeds "
                                            "max_seq_len 128")
    assert result.summary.counts == {"arrived": 4, "finished": 1, "rejected": 3,
                                     "preemptions": 0, "steps": 5, "unfinished": 0}
    # the cache: max_seq_len 4096, 150 tokens fit, 161 positions do not (41 blocks > 40)
    data = tiny_config_dict(max_seq_len=4096, num_blocks=40)
    plan = simkit.RequestPlan(num_prompt_tokens=[150, 161], max_tokens=[11, 1],
                              priorities=[0, 0], arrival_times=[0.0, 0.0], block_hashes=None)
    result = simkit.simulate(simkit.config_from_dict(data), plan=plan)
    assert result.requests["status"].tolist() == ["finished", "rejected"]
    assert result.requests["reject_reason"].iloc[1] == ("needs 41 KV blocks (161 tokens), the "
                                                        "whole cache has 40")
    # CLI: prompts of 1e9 tokens (the largest allowed) are rejected, the run prints its
    # summary and succeeds; 1e12 is a config error naming the limit
    data = tiny_config_dict(workload={"arrival_pattern": "batched", "num_requests": 3,
                                      "input_len_dist": {"type": "fixed", "value": 1e9},
                                      "output_len_dist": {"type": "fixed", "value": 4}})
    assert main(["run", str(write_config(tmp_path, data)), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Latency (ms)" in out
    counts = out.split("Counts\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[-1] for line in counts
            if line.split()[0] in ("finished", "rejected")] == ["0", "3"]
    data["workload"]["input_len_dist"]["value"] = 1e12
    assert cli_error(write_config(tmp_path, data), capsys).endswith(
        "[workload.input_len_dist] value = 1000000000000.0: must be an integer >= 1 and "
        "<= 1e+09")


# ---------------------------------------------------------------------------------- traces
TRACE_HEADER = "arrival_time,input_tokens,output_tokens\n"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("empty.csv", "", "trace file {p} is empty"),
    ("header.csv", TRACE_HEADER, "trace file {p} has a header but no rows"),
    ("missing.csv", "arrival_time,input_tokens\n0,5\n",
     "{p}: a CSV trace needs columns arrival_time, input_tokens, output_tokens; missing "
     "output_tokens; found arrival_time, input_tokens"),
    ("azure.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.97,5\n",
     "{p}: a Azure trace needs columns TIMESTAMP, ContextTokens, GeneratedTokens; missing "
     "GeneratedTokens; found TIMESTAMP, ContextTokens"),
    ("badts.csv", AZURE_HEADER + "2023-11-16 18:17:03.97,4,5\nyesterday,4,5\n",
     "{p}: row 2 (line 3): TIMESTAMP = 'yesterday' is not a date-time like "
     "'2023-11-16 18:15:46.6805900'"),
    ("azure_unsorted.csv", AZURE_HEADER + "2023-11-16 18:17:03.9,4,5\n2023-11-16 18:17:02,4,5\n",
     "{p}: rows are not sorted by TIMESTAMP: row 2 (line 3) is earlier than the row before it"),
    ("unsorted.csv", TRACE_HEADER + "0,1,1\n1.0,1,1\n0.5,1,1\n",
     "{p}: rows are not sorted by arrival_time: row 3 (line 4) is earlier than the row before "
     "it"),
    ("negative.csv", TRACE_HEADER + "-1,1,1\n", "{p}: row 1 (line 2): arrival_time = -1 is "
                                                "negative"),
    ("nan.csv", TRACE_HEADER + "0,1,1\nnan,1,1\n", "{p}: row 2 (line 3): arrival_time = nan "
                                                   "is missing (NaN)"),
    ("inf.csv", TRACE_HEADER + "inf,1,1\n", "{p}: row 1 (line 2): arrival_time = inf is not a "
                                            "finite number"),
    ("text.csv", TRACE_HEADER + "soon,1,1\n", "{p}: row 1 (line 2): arrival_time = 'soon' is "
                                              "not a finite number"),
    ("huge.csv", TRACE_HEADER + "0,1e30,1\n", "{p}: row 1 (line 2): input_tokens = 1e+30: "
                                              "must be an integer >= 1"),
    ("zero.csv", TRACE_HEADER + "0,0,1\n", "{p}: row 1 (line 2): input_tokens = 0: must be an "
                                           "integer >= 1"),
    ("frac.csv", TRACE_HEADER + "0,5,2.5\n", "{p}: row 1 (line 2): output_tokens = 2.5: must "
                                             "be an integer >= 0"),
    ("moon.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 1,',
     "{p}: line 2 is not valid JSON: Expecting property name enclosed in double quotes: "
     "line 1 column 17 (char 16)"),
    ("moon_missing.jsonl", '{"timestamp": 0, "input_length": 5}\n',
     "{p}: a Mooncake trace needs columns timestamp, input_length, output_length; missing "
     "output_length; found timestamp, input_length"),
    ("moon_unsorted.jsonl", '{"timestamp": 5, "input_length": 5, "output_length": 1}\n'
                            '{"timestamp": 1, "input_length": 5, "output_length": 1}\n',
     "{p}: rows are not sorted by timestamp: row 2 (line 2) is earlier than the row before it"),
    ("moon_blank.jsonl", "\n\n", "trace file {p} has no rows"),
    ("moon_hash.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 1, '
                        '"hash_ids": [1, "a"]}\n',
     "{p}: row 1 (line 1): hash_ids must be a list of integers, got [1, 'a']"),
    ("garbage.parquet", "PAR1 not really",
     "{p}: cannot be read as Parquet: "),
])
def test_bad_traces_name_the_file_and_the_first_bad_row(tmp_path, capsys, name, text,
                                                        message):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    with pytest.raises(simkit.TraceError) as info:
        simkit.read_trace(p)
    assert str(info.value).startswith(message.format(p=p))
    # the same file through a config and the CLI: exit 2, the same message
    data = tiny_config_dict(workload={"arrival_pattern": "trace", "trace_path": str(p)})
    line = cli_error(write_config(tmp_path, data), capsys)
    assert line.startswith("simkit: error: " + message.format(p=p))


def test_a_missing_trace_file_is_a_trace_error(tmp_path, capsys):
    data = tiny_config_dict(workload={"arrival_pattern": "trace", "trace_path": "gone.csv"})
    path = write_config(tmp_path, data)
    # relative paths are resolved against the config's folder
    assert cli_error(path, capsys) == f"simkit: error: trace file not found: {tmp_path}/gone.csv"


# ------------------------------------------------------------------ simulation errors, CLI
def test_absurd_hardware_speed_is_a_simulation_error_in_the_cli(tmp_path, capsys):
    data = tiny_config_dict(hardware={"compute_flops": 1e-12})
    line = cli_error(write_config(tmp_path, data), capsys)
    assert "simulation.sample_interval_secs" in line and "a step of" in line


def test_the_installed_cli_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = write_config(tmp_path, text=BASE_TOML.replace("block_size = 4", "block_size = -2"))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "simkit.cli", "run", str(path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == (f"simkit: error: {path}: [scheduler] block_size = -2: must be an "
                           "integer >= 1 and <= 4096\n")
    assert proc.stdout == ""
