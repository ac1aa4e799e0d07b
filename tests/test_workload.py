"""Tests of simkit.workload: arrival processes, length sampling, trace readers, prefix hashes.

Expected values come from the distributions' definitions (means, cv², medians, cdf values) or
from hand arithmetic on the timestamps written below, never from the code's own output.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from simkit.config import LengthDist, WorkloadConfig
from simkit.errors import ConfigError, TraceError
from simkit.workload import RequestPlan, build_workload, read_trace, sample_lengths

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"


def plan(block_size: int = 16, **kw: object) -> RequestPlan:
    return build_workload(WorkloadConfig(**kw), block_size=block_size)  # type: ignore[arg-type]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------- arrivals
def test_poisson_rate_and_exponential_gaps() -> None:
    p = plan(arrival_pattern="poisson", arrival_rate=50.0, num_requests=200_000)
    t = p.arrival_times
    assert t is not None and len(t) == 200_000
    gaps = np.diff(np.concatenate(([0.0], t)))  # first arrival comes after one gap
    assert t[0] > 0 and np.all(gaps >= 0)
    assert len(t) / t[-1] == pytest.approx(50.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)  # exponential: cv = 1
    # memoryless: P(gap > mean) = e^-1
    assert np.mean(gaps > 1 / 50) == pytest.approx(math.exp(-1), abs=0.005)


@pytest.mark.parametrize("shape", [0.25, 4.0])
def test_gamma_cv2_is_one_over_shape(shape: float) -> None:
    p = plan(arrival_pattern="gamma", arrival_rate=20.0, burstiness=shape, num_requests=200_000)
    gaps = np.diff(np.concatenate(([0.0], p.arrival_times)))
    assert gaps.mean() == pytest.approx(1 / 20, rel=0.03)
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(1 / shape, rel=0.05)


@pytest.mark.parametrize("pattern", ["uniform", "fixed_rate"])
def test_uniform_exact_spacing(pattern: str) -> None:
    p = plan(arrival_pattern=pattern, arrival_rate=4.0, num_requests=6)
    np.testing.assert_allclose(p.arrival_times, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5], rtol=1e-15)


def test_burst_groups_share_an_instant() -> None:
    p = plan(arrival_pattern="burst", arrival_rate=10.0, burst_size=5, num_requests=23)
    instants, sizes = np.unique(p.arrival_times, return_counts=True)
    assert sizes.tolist() == [5, 5, 5, 5, 3]
    assert instants[0] > 0


def test_burst_keeps_mean_rate() -> None:
    p = plan(arrival_pattern="burst", arrival_rate=10.0, burst_size=8, num_requests=400_000)
    t = p.arrival_times
    assert len(t) / t[-1] == pytest.approx(10.0, rel=0.03)
    group_gaps = np.diff(np.unique(t))
    assert group_gaps.mean() == pytest.approx(8 / 10, rel=0.03)


def test_batched_all_at_zero() -> None:
    p = plan(arrival_pattern="batched", num_requests=7)
    assert p.arrival_times.tolist() == [0.0] * 7


def test_duration_cuts_arrivals() -> None:
    p = plan(arrival_pattern="poisson", arrival_rate=100.0, num_requests=1_000_000,
             duration_secs=5.0)
    assert p.arrival_times.max() < 5.0
    assert abs(len(p) - 500) < 4 * math.sqrt(500)
    assert p.stop_sending_at == 5.0


def test_duration_without_num_requests_generates_until_duration() -> None:
    p = plan(arrival_pattern="poisson", arrival_rate=100.0, duration_secs=50.0)
    assert p.arrival_times.max() < 50.0
    assert abs(len(p) - 5000) < 4 * math.sqrt(5000)
    assert len(p.num_prompt_tokens) == len(p.max_tokens) == len(p.priorities) == len(p)
    # fixed rate: arrivals at i/3 for i = 1..29 (30/3 = 10 is not < 10)
    assert len(plan(arrival_pattern="uniform", arrival_rate=3.0, duration_secs=10.0)) == 29
    # gamma and burst are chunked too
    g = plan(arrival_pattern="gamma", arrival_rate=100.0, burstiness=0.2, duration_secs=20.0)
    assert g.arrival_times.max() < 20.0 and np.all(np.diff(g.arrival_times) >= 0)
    b = plan(arrival_pattern="burst", arrival_rate=100.0, burst_size=10, duration_secs=20.0)
    assert b.arrival_times.max() < 20.0 and abs(len(b) - 2000) < 4 * math.sqrt(200) * 10


def test_absurd_duration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="duration_secs"):
        plan(arrival_pattern="poisson", arrival_rate=1e6, duration_secs=100.0)


def test_duration_with_no_arrival_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no request arrives"):
        plan(arrival_pattern="uniform", arrival_rate=1.0, duration_secs=0.5)


# ------------------------------------------------------------------------------ closed loop
def test_closed_loop_plan_fields() -> None:
    p = plan(arrival_pattern="closed_loop", num_concurrent_users=4, num_requests=10,
             think_time_secs=0.5, input_len_dist=LengthDist(type="fixed", value=100),
             output_len_dist=LengthDist(type="fixed", value=20))
    assert p.arrival_times is None and p.block_hashes is None
    assert len(p) == 10 and p.num_users == 4
    assert p.user_start_times.tolist() == [0.0] * 4
    assert p.think_time_secs == 0.5 and p.stop_sending_at is None
    assert p.num_prompt_tokens.tolist() == [100] * 10 and p.max_tokens.tolist() == [20] * 10


def test_closed_loop_jitter_and_duration() -> None:
    p = plan(arrival_pattern="closed_loop", num_concurrent_users=50, num_requests=100,
             closed_loop_jitter_secs=2.0)
    s = p.user_start_times
    assert s.shape == (50,) and np.all((s >= 0) & (s <= 2.0)) and len(np.unique(s)) == 50
    d = plan(arrival_pattern="closed_loop", num_concurrent_users=3, duration_secs=60.0)
    assert len(d) == 3 * 1000 and d.stop_sending_at == 60.0
    capped = plan(arrival_pattern="closed_loop", num_concurrent_users=2000, duration_secs=1.0,
                  input_len_dist=LengthDist(type="fixed", value=10),
                  output_len_dist=LengthDist(type="fixed", value=10))
    assert len(capped) == 1_000_000


# ---------------------------------------------------------------------------------- lengths
def test_lognormal_median_is_e_to_mu() -> None:
    x = sample_lengths(LengthDist(type="lognormal", mean=6.9, std_dev=0.7), 100_000, rng())
    assert x.dtype == np.int64
    assert np.median(x) == pytest.approx(math.exp(6.9), rel=0.02)  # 992.3


def test_uniform_lengths_inclusive() -> None:
    x = sample_lengths(LengthDist(type="uniform", min=3, max=7), 50_000, rng())
    assert x.min() == 3 and x.max() == 7
    counts = np.bincount(x, minlength=8)[3:]
    np.testing.assert_allclose(counts / len(x), [0.2] * 5, atol=0.01)


def test_clamping_and_truncation() -> None:
    # normal(0, 5): everything below 2 becomes 1 (clamped or truncated): P = Φ(0.4) = 0.6554
    x = sample_lengths(LengthDist(type="normal", mean=0, std_dev=5), 100_000, rng())
    assert x.min() == 1
    assert np.mean(x == 1) == pytest.approx(0.5 * (1 + math.erf(0.4 / math.sqrt(2))), abs=0.005)
    # truncation toward zero: 10.7 -> 10
    y = sample_lengths(LengthDist(type="normal", mean=10.7, std_dev=0), 5, rng())
    assert y.tolist() == [10] * 5
    # upper clamp: e^50 ≈ 5e21 -> 1e9
    z = sample_lengths(LengthDist(type="lognormal", mean=50, std_dev=0), 3, rng())
    assert z.tolist() == [10**9] * 3


def test_fixed_lengths() -> None:
    assert sample_lengths(LengthDist(type="fixed", value=128), 4, rng()).tolist() == [128] * 4


def test_empirical_lengths(tmp_path: Path) -> None:
    lines = write(tmp_path / "lens.txt", "5\n9\n\n12\n")
    x = sample_lengths(LengthDist(type="empirical", path=str(lines)), 3000, rng())
    assert set(x.tolist()) == {5, 9, 12}
    table = write(tmp_path / "lens.csv", "name,len\na,5\nb,9\n")
    y = sample_lengths(LengthDist(type="empirical", path=str(table)), 1000, rng())
    assert set(y.tolist()) == {5, 9}


def test_empirical_errors_name_the_file(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.txt", "")
    with pytest.raises(TraceError, match=r"empty\.txt"):
        sample_lengths(LengthDist(type="empirical", path=str(empty)), 3, rng())
    with pytest.raises(TraceError, match=r"nope\.txt"):
        sample_lengths(LengthDist(type="empirical", path=str(tmp_path / "nope.txt")), 3, rng())
    bad = write(tmp_path / "bad.txt", "5\nabc\n7\n")
    with pytest.raises(TraceError, match=r"bad.txt.*line 2"):
        sample_lengths(LengthDist(type="empirical", path=str(bad)), 3, rng())


def test_priorities() -> None:
    p = plan(arrival_pattern="batched", num_requests=30_000, num_priority_levels=3)
    assert set(p.priorities.tolist()) == {0, 1, 2}
    np.testing.assert_allclose(np.bincount(p.priorities) / 30_000, [1 / 3] * 3, atol=0.015)
    assert plan(arrival_pattern="batched", num_requests=5).priorities.tolist() == [0] * 5


# ------------------------------------------------------------------------------ determinism
def _same(a: RequestPlan, b: RequestPlan) -> bool:
    return (np.array_equal(a.arrival_times, b.arrival_times)
            and np.array_equal(a.num_prompt_tokens, b.num_prompt_tokens)
            and np.array_equal(a.max_tokens, b.max_tokens)
            and np.array_equal(a.priorities, b.priorities))


def test_same_seed_same_plan_different_seed_different() -> None:
    kw = dict(arrival_pattern="poisson", arrival_rate=5.0, num_requests=1000,
              num_priority_levels=4)
    assert _same(plan(seed=7, **kw), plan(seed=7, **kw))
    other = plan(seed=8, **kw)
    assert not np.array_equal(plan(seed=7, **kw).arrival_times, other.arrival_times)
    assert not np.array_equal(plan(seed=7, **kw).num_prompt_tokens, other.num_prompt_tokens)


def test_arrival_rate_does_not_change_lengths() -> None:
    kw = dict(arrival_pattern="poisson", num_requests=1000, num_priority_levels=3, seed=3)
    slow, fast = plan(arrival_rate=1.0, **kw), plan(arrival_rate=2.0, **kw)
    assert np.array_equal(slow.num_prompt_tokens, fast.num_prompt_tokens)
    assert np.array_equal(slow.max_tokens, fast.max_tokens)
    assert np.array_equal(slow.priorities, fast.priorities)
    # the same exponential draws, scaled by the mean gap 1/rate
    np.testing.assert_allclose(fast.arrival_times, slow.arrival_times / 2, rtol=1e-12)
    # and the pattern does not change them either
    assert np.array_equal(plan(arrival_pattern="batched", num_requests=1000,
                               seed=3).num_prompt_tokens, slow.num_prompt_tokens)


def test_plan_arrays_are_read_only() -> None:
    p = plan(arrival_pattern="uniform", arrival_rate=1.0, num_requests=3)
    with pytest.raises(ValueError):
        p.num_prompt_tokens[0] = 5


# ------------------------------------------------------------------------------ Azure trace
AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:16:01.0000001,879,0
"""


def test_azure_small_trace(tmp_path: Path) -> None:
    df = read_trace(write(tmp_path / "t.csv", AZURE))
    assert list(df.columns) == ["arrival_time", "input_tokens", "output_tokens"]
    # 50.9951690 - 46.6805900 = 4.3145790; 61.0000001 - 46.6805900 = 14.3194101
    np.testing.assert_allclose(df["arrival_time"], [0.0, 4.314579, 14.3194101], atol=1e-9)
    assert df["input_tokens"].tolist() == [374, 396, 879]
    assert df["output_tokens"].tolist() == [44, 109, 1]  # 0 generated tokens replayed as 1
    half = read_trace(tmp_path / "t.csv", time_scale=2.0, limit=2)
    np.testing.assert_allclose(half["arrival_time"], [0.0, 4.314579 / 2], atol=1e-9)


def test_real_azure_conv_trace() -> None:
    path = TRACES / "azure_llm_2023_conv.csv"
    if not path.exists():
        pytest.skip("data/traces not present")
    start = time.perf_counter()
    df = read_trace(path)
    assert time.perf_counter() - start < 0.5
    assert len(df) == 19_366  # `wc -l`: 19,366 newlines = header + 19,365 rows + unterminated row
    # rows 1-3: 18:15:46.6805900, 18:15:50.9951690, 18:15:51.2224670
    np.testing.assert_allclose(df["arrival_time"][:3], [0.0, 4.314579, 4.541877], atol=1e-9)
    # last row 19:14:08.4025270: 58 min 21.7219370 s after the first
    assert df["arrival_time"].iloc[-1] == pytest.approx(58 * 60 + 21.721937, abs=1e-9)
    assert df["input_tokens"][:3].tolist() == [374, 396, 879]
    assert df["output_tokens"][:3].tolist() == [44, 109, 55]


def test_trace_workload_limits(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", AZURE)
    kw = dict(arrival_pattern="trace", trace_path=str(path))
    assert len(plan(**kw)) == 3
    assert len(plan(trace_limit=2, **kw)) == 2
    assert len(plan(trace_limit=2, num_requests=1, **kw)) == 1
    cut = plan(duration_secs=5.0, **kw)
    assert len(cut) == 2 and cut.stop_sending_at == 5.0
    fast = plan(time_scale=10.0, **kw)
    np.testing.assert_allclose(fast.arrival_times, [0.0, 0.4314579, 1.43194101], atol=1e-9)
    assert fast.block_hashes is None and fast.priorities.tolist() == [0, 0, 0]


# --------------------------------------------------------------------------- plain CSV etc.
def test_plain_csv_with_priority(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv",
                 "arrival_time,input_tokens,output_tokens,priority\n"
                 "2.0,10,5,1\n2.5,20,6,0\n4.0,30,7,2\n")
    df = read_trace(path)
    np.testing.assert_allclose(df["arrival_time"], [0.0, 0.5, 2.0])
    p = plan(arrival_pattern="trace", trace_path=str(path))
    assert p.priorities.tolist() == [1, 0, 2]
    assert p.num_prompt_tokens.tolist() == [10, 20, 30] and p.max_tokens.tolist() == [5, 6, 7]


def test_parquet_trace(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    path = tmp_path / "t.parquet"
    pd.DataFrame({"arrival_time": [1.0, 1.5], "input_tokens": [3, 4],
                  "output_tokens": [5, 6]}).to_parquet(path)
    df = read_trace(path)
    assert df["arrival_time"].tolist() == [0.0, 0.5] and df["input_tokens"].tolist() == [3, 4]


def test_format_detection(tmp_path: Path) -> None:
    az = read_trace(write(tmp_path / "azure.txt", AZURE))
    assert az["input_tokens"].tolist() == [374, 396, 879]
    mc = read_trace(write(tmp_path / "mc.log", json.dumps(
        {"timestamp": 1500, "input_length": 600, "output_length": 3, "hash_ids": [1, 2]}) + "\n"))
    assert mc["hash_ids"].tolist() == [[1, 2]] and mc["arrival_time"].tolist() == [0.0]


# ------------------------------------------------------------------------------ trace errors
@pytest.mark.parametrize(("text", "pattern"), [
    ("arrival_time,input_tokens\n0,5\n", r"output_tokens.*found arrival_time, input_tokens"),
    ("arrival_time,input_tokens,output_tokens\n0,5,5\n2,5,5\n1,5,5\n",
     r"not sorted by arrival_time: row 3 \(line 4\)"),
    ("arrival_time,input_tokens,output_tokens\n0,5,5\n,5,5\n", r"row 2 .*arrival_time.*NaN"),
    ("arrival_time,input_tokens,output_tokens\n0,5,5\n1,,5\n", r"row 2 .*input_tokens"),
    ("arrival_time,input_tokens,output_tokens\nsoon,5,5\n", r"row 1 .*arrival_time = 'soon'"),
    ("arrival_time,input_tokens,output_tokens\n-1,5,5\n", r"row 1 .*negative"),
    ("arrival_time,input_tokens,output_tokens\n0,0,5\n", r"row 1 .*input_tokens = 0.*>= 1"),
    ("arrival_time,input_tokens,output_tokens\n0,5,2.5\n", r"row 1 .*output_tokens = 2.5"),
    ("arrival_time,input_tokens,output_tokens\n", r"no rows"),
    ("", r"empty"),
])
def test_csv_trace_errors(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(TraceError, match=pattern):
        read_trace(write(tmp_path / "bad.csv", text))


def test_azure_errors(tmp_path: Path) -> None:
    unsorted = AZURE.replace("18:16:01.0000001", "18:10:00.0000000")
    with pytest.raises(TraceError, match=r"TIMESTAMP: row 3"):
        read_trace(write(tmp_path / "u.csv", unsorted))
    garbled = AZURE.replace("2023-11-16 18:15:50.9951690", "yesterday")
    with pytest.raises(TraceError, match=r"row 2 \(line 3\): TIMESTAMP = 'yesterday'"):
        read_trace(write(tmp_path / "g.csv", garbled))
    missing = "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n"
    with pytest.raises(TraceError, match=r"GeneratedTokens.*found TIMESTAMP, ContextTokens"):
        read_trace(write(tmp_path / "m.csv", missing))
    with pytest.raises(TraceError, match="not found"):
        read_trace(tmp_path / "absent.csv")


def test_mooncake_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="line 2 is not valid JSON"):
        read_trace(write(tmp_path / "a.jsonl",
                         '{"timestamp": 0, "input_length": 5, "output_length": 1}\n{oops\n'))
    with pytest.raises(TraceError, match=r"output_length.*found timestamp, input_length"):
        read_trace(write(tmp_path / "b.jsonl", '{"timestamp": 0, "input_length": 5}\n'))
    with pytest.raises(TraceError, match=r"row 2 .*timestamp.*NaN"):
        read_trace(write(tmp_path / "c.jsonl",
                         '{"timestamp": 0, "input_length": 5, "output_length": 1}\n'
                         '{"timestamp": null, "input_length": 5, "output_length": 1}\n'))
    with pytest.raises(TraceError, match=r"row 1 .*hash_ids must be a list of integers"):
        read_trace(write(tmp_path / "d.jsonl", '{"timestamp": 0, "input_length": 5, '
                                               '"output_length": 1, "hash_ids": ["x"]}\n'))


def test_bad_read_trace_arguments(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", AZURE)
    with pytest.raises(ConfigError, match="time_scale"):
        read_trace(path, time_scale=0)
    with pytest.raises(ConfigError, match="trace_limit"):
        read_trace(path, limit=0)
    with pytest.raises(ConfigError, match="trace_format"):
        read_trace(path, fmt="xml")  # type: ignore[arg-type]


# --------------------------------------------------------------------- Mooncake prefix hashes
def _mooncake(tmp_path: Path, rows: list[tuple[int, int, list[int]]]) -> Path:
    lines = [json.dumps({"timestamp": ts, "input_length": n, "output_length": 4, "hash_ids": ids})
             for ts, n, ids in rows]
    return write(tmp_path / "mc.jsonl", "\n".join(lines) + "\n")


def test_mooncake_fields(tmp_path: Path) -> None:
    path = _mooncake(tmp_path, [(1000, 1024, [7, 8]), (1250, 1100, [7, 9, 10])])
    df = read_trace(path)
    assert df["arrival_time"].tolist() == [0.0, 0.25]  # ms, relative to the first row
    assert df["input_tokens"].tolist() == [1024, 1100]
    assert df["hash_ids"].tolist() == [[7, 8], [7, 9, 10]]


def test_mooncake_block_hashes_share_the_common_prefix(tmp_path: Path) -> None:
    path = _mooncake(tmp_path, [
        (0, 1024, [7, 8]),       # A: 64 blocks of 16
        (0, 1100, [7, 9, 10]),   # B: shares trace block 0 with A -> 512 / 16 = 32 blocks
        (0, 1024, [7]),          # C: hash_ids too short, its blocks 32.. are its own
        (0, 1024, [7, 8]),       # D: same ids as A
        (0, 20, [7]),            # E: one full block
    ])
    a, b, c, d, e = plan(arrival_pattern="trace", trace_path=str(path)).block_hashes
    assert (len(a), len(b), len(c), len(e)) == (64, 68, 64, 1)  # n // 16
    assert a[:32] == b[:32] == c[:32]
    assert a[32] != b[32] and not set(b[32:]) & set(a) and not set(c[32:]) & (set(a) | set(b))
    assert a == d
    assert e == a[:1]
    assert len(set(a)) == 64  # every block of a prompt has its own hash


def test_mooncake_block_hashes_other_block_sizes(tmp_path: Path) -> None:
    path = _mooncake(tmp_path, [(0, 1024, [7, 8]), (0, 1100, [7, 9, 10])])
    kw = dict(arrival_pattern="trace", trace_path=str(path))
    a, b = plan(block_size=100, **kw).block_hashes
    # blocks 0-4 (tokens 0-499) lie in trace block 0; block 5 (500-599) also touches block 1
    assert (len(a), len(b)) == (10, 11)
    assert a[:5] == b[:5] and a[5] != b[5]
    a, b = plan(block_size=1024, **kw).block_hashes  # one block spanning trace blocks 0 and 1
    assert len(a) == len(b) == 1 and a != b
    a, b = plan(block_size=16, trace_hash_block_tokens=256, **kw).block_hashes
    assert a[:16] == b[:16] and a[16] != b[16]  # 256 / 16 = 16 shared blocks


def test_block_hashes_do_not_depend_on_the_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _mooncake(tmp_path, [(0, 1100, [7, 9, 10])])
    code = ("import sys; from simkit.config import WorkloadConfig; "
            "from simkit.workload import build_workload; "
            f"p = build_workload(WorkloadConfig(arrival_pattern='trace', trace_path={str(path)!r}"
            "), block_size=16); print(hash(p.block_hashes[0]))")
    root = str(Path(__file__).resolve().parents[1])
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=root, env={"PYTHONHASHSEED": seed,
                                                      "PYTHONPATH": root}).stdout
            for seed in ("1", "2")}
    assert len(outs) == 1


def test_real_mooncake_first_requests_share_one_trace_block() -> None:
    path = TRACES / "mooncake_conversation.jsonl"
    if not path.exists():
        pytest.skip("data/traces not present")
    p = plan(arrival_pattern="trace", trace_path=str(path), trace_limit=2)
    a, b = p.block_hashes  # hash_ids [0, 1, 2, ...] and [0, 14, 15, ...]
    assert (len(a), len(b)) == (6758 // 16, 7322 // 16)
    assert a[:32] == b[:32] and a[32] != b[32]
