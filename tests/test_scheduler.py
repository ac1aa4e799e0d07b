"""The scheduling step (spec 2.2-2.4): policies' admission order and preemption victims,
limits, preemption-free admission and prefix-cache statistics, on 1-s-step scenarios.
"""

from __future__ import annotations

import pytest
from _tiny import col, plan, run, tiny_config

import simkit

# Four requests, all at t=0 (ties break by arrival order = id):
#   id  prompt  max_tokens  priority  prompt+max
#   0   3       2           0         5
#   1   1       4           2         5
#   2   2       1           1         3
#   3   4       3           0         7
PROMPTS = [3, 1, 2, 4]
OUTPUTS = [2, 4, 1, 3]
PRIORITIES = [0, 2, 1, 0]
ADMISSION_ORDER = {
    "fcfs": [0, 1, 2, 3],  # arrival order
    "priority": [0, 3, 2, 1],  # lowest (priority, arrival)
    "sjf": [2, 0, 3, 1],  # fewest max_tokens
    "sof": [2, 0, 3, 1],
    "lof": [1, 3, 0, 2],  # most max_tokens
    "sif": [1, 2, 0, 3],  # shortest prompt
    "lif": [3, 0, 2, 1],  # longest prompt
    "stf": [2, 0, 1, 3],  # smallest prompt + max_tokens; 0 and 1 tie -> arrival
    "ltf": [3, 0, 1, 2],  # largest; 0 and 1 tie -> arrival
}


@pytest.mark.parametrize("policy", sorted(ADMISSION_ORDER))
def test_admission_order(policy: str) -> None:
    # max_num_seqs = 1: one request runs to completion before the next is admitted, so the
    # order of first scheduling is the admission order.
    cfg = tiny_config(policy=policy, max_num_seqs=1)
    result = run(cfg, plan(PROMPTS, OUTPUTS, priorities=PRIORITIES))
    order = result.requests.sort_values("first_scheduled_time")["request_id"].tolist()
    assert order == ADMISSION_ORDER[policy]
    # one request at a time: each step is one request's prefill or decode step, and each
    # request takes max_tokens steps -> the k-th admitted starts at the sum of the earlier ones
    starts = col(result, "first_scheduled_time")
    t = 0.0
    for rid in ADMISSION_ORDER[policy]:
        assert starts[rid] == t
        t += OUTPUTS[rid]


# Victim scenario, 7 blocks of 4 tokens, budget 16:
#   A: prompt 4, 6 outputs, t=0     [0,1] prefill (1 block); [1,2] position 5 (2 blocks)
#   B: prompt 9, 4 outputs, t=1.5   admitted at [2,3] (3 blocks)
#   C: prompt 5, 8 outputs, t=1.5   admitted at [2,3] (2 blocks)  -> free 0 from t=2
# A is first in running order and needs its 3rd block at [5,6] (position 9), before B or C
# need one, so the victim is chosen among all three (none is scheduled yet). At t=5:
#   remaining output: A 1, B 1, C 5;  prompt: A 4, B 9, C 5;
#   remaining total (prompt + max - computed): A 2, B 2, C 6;  priority: A 0, B 5, C 1.
# After that single preemption there is room for everyone: exactly one preemption per run.
VICTIM = {
    "fcfs": 2,  # last in running order (B, C admitted in arrival order)
    "priority": 1,  # highest (priority, arrival)
    "sjf": 2, "sof": 2, "lof": 2,  # most remaining output
    "sif": 1, "lif": 1,  # longest prompt
    "stf": 2, "ltf": 2,  # most remaining total
}


@pytest.mark.parametrize("policy", sorted(VICTIM))
def test_preemption_victim(policy: str) -> None:
    cfg = tiny_config(num_blocks=7, max_num_batched_tokens=16, policy=policy)
    result = run(cfg, plan([4, 9, 5], [6, 4, 8], [0, 1.5, 1.5], priorities=[0, 5, 1]))
    expected = [0, 0, 0]
    expected[VICTIM[policy]] = 1
    assert col(result, "num_preemptions") == expected
    assert result.summary.counts["preemptions"] == 1
    assert col(result, "num_output_tokens") == [6, 4, 8]
    assert col(result, "finish_time")[0] == 6.0  # A is never delayed


def test_custom_policy_object() -> None:
    # A user's policy: admit the longest max_tokens first (like lof).
    lof = simkit.Policy("mine", lambda r: (-r.max_tokens, r.arrival_time, r.id),
                        lambda r: (r.max_tokens - r.num_output_tokens, r.arrival_time, r.id))
    cfg = tiny_config(max_num_seqs=1)
    result = simkit.simulate(cfg, plan=plan(PROMPTS, OUTPUTS, priorities=PRIORITIES),
                             policy=lof, mode="exact")
    order = result.requests.sort_values("first_scheduled_time")["request_id"].tolist()
    assert order == ADMISSION_ORDER["lof"]


def test_max_num_seqs_caps_the_running_set() -> None:
    # 3 requests of prompt 1, 2 outputs; max_num_seqs 2: the third starts when two finish.
    result = run(tiny_config(max_num_seqs=2), plan([1, 1, 1], [2, 2, 2]))
    assert col(result, "first_scheduled_time") == [0.0, 0.0, 2.0]
    assert col(result, "finish_time") == [2.0, 2.0, 4.0]


def test_token_budget_is_shared_in_running_order() -> None:
    # Budget 8: A (prompt 6) takes 6, B (prompt 6) gets the 2 left, then 4 more next step.
    result = run(tiny_config(), plan([6, 6], [1, 1]))
    assert col(result, "finish_time") == [1.0, 2.0]


def test_fcfs_head_of_line_blocks_without_chunking() -> None:
    # Chunking off, budget 8: A decodes (1 token); B (prompt 8) doesn't fit the 7 left and,
    # under FCFS, C (prompt 2) behind it waits too. Under sif, C (shorter) goes first anyway.
    p = plan([4, 8, 2], [3, 1, 1], [0, 0.5, 0.5])
    fcfs = run(tiny_config(enable_chunked_prefill=False), p)
    # [1,2], [2,3]: A decodes, B can't fit, C blocked behind B; A done at 3.
    # [3,4]: B 8 tokens; budget 0 -> C waits; [4,5]: C.
    assert col(fcfs, "finish_time") == [3.0, 4.0, 5.0]
    sif = run(tiny_config(enable_chunked_prefill=False, policy="sif"), p)
    # [1,2]: A decode + C (2 tokens, sif order puts it first) -> C done at 2; B waits for
    # a full budget of 8: [3,4] after A finishes at 3.
    assert col(sif, "finish_time") == [3.0, 4.0, 2.0]


def test_preemption_free_admission_never_preempts() -> None:
    # 4 blocks; three requests of prompt 4 + 5 outputs need 2 blocks each at full length.
    # Preemption-free: only two are admitted ([0,1]), they finish at 5, the third runs
    # [5,6] .. [9,10]. Without it all three start and someone is preempted.
    p = plan([4, 4, 4], [5, 5, 5])
    free = run(tiny_config(num_blocks=4, max_num_batched_tokens=16,
                           enable_preemption_free=True), p)
    assert free.summary.counts["preemptions"] == 0
    assert col(free, "finish_time") == [5.0, 5.0, 10.0]
    greedy = run(tiny_config(num_blocks=4, max_num_batched_tokens=16), p)
    assert greedy.summary.counts["preemptions"] >= 1


def test_prefix_hit_rate_counts_each_request_once() -> None:
    # Chunking off, budget 12. A: prompt 9 (hashes 1, 2), done at 1. At 1.5: C (prompt 10, no
    # hashes, 3 outputs) then B (prompt 12, hashes 1, 2, 3). [1.5,2.5]: C takes 10, B's
    # 12 - 8 cached = 4 tokens don't fit the 2 left (FCFS waits). [2.5,3.5]: B admitted.
    # Hit rate = hit tokens / prompt tokens of the requests that looked up = 8 / (9 + 10 + 12),
    # however many steps B had to wait.
    cfg = tiny_config(max_num_batched_tokens=12, enable_chunked_prefill=False,
                      enable_prefix_caching=True)
    p = plan([9, 10, 12], [1, 3, 1], [0, 1.5, 1.5], hashes=[(1, 2), (), (1, 2, 3)])
    result = run(cfg, p)
    assert col(result, "finish_time") == [1.0, 4.5, 3.5]
    assert col(result, "num_cached_tokens") == [0, 0, 8]
    assert result.summary.prefix_cache["hit_tokens"] == 8
    assert result.summary.prefix_cache["hit_rate"] == pytest.approx(8 / 31)


def test_preempted_request_keeps_its_outputs() -> None:
    # The defect-2 scenario: B is preempted with 5 tokens and still ends with exactly 8.
    result = run(tiny_config(num_blocks=4), plan([4, 4, 4], [8, 8, 1], [0, 0, 0.5]))
    assert col(result, "num_output_tokens") == [8, 8, 1]
    # B's TPOT spans its recompute: (12 - 1) / 7 s
    assert col(result, "tpot_ms")[1] == pytest.approx(11 / 7 * 1e3)
