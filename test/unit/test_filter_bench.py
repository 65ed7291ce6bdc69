"""bench/bench_filter.py: issue 4's two verdicts (absolute and scaled by the DAQP-direct median
of the same run) and the rows it hands to bench/run.py."""

from __future__ import annotations

import pytest

from bench.bench_filter import (
    PATH_P99_FACTOR,
    PATHS,
    _box_filter,
    _compare,
    interruptions,
    make_filter_problems,
    paths,
    verdicts,
)
from bench.run import validate_rows


@pytest.mark.parametrize(
    ("median", "p99", "daqp", "absolute", "scaled"),
    [
        (15e-6, 40e-6, 3.5e-6, "met", "met"),
        (15e-6, 40e-6, 2.0e-6, "met", "missed"),  # fast machine: 7.5x DAQP is too slow
        (25e-6, 60e-6, 5.0e-6, "missed", "met"),  # slow machine: 5x / 12x DAQP is fine
        (25e-6, 80e-6, 5.0e-6, "missed", "missed"),  # p99 16x DAQP
        (20e-6, 50e-6, 3.5e-6, "met", "met"),  # the limits themselves
    ],
)
def test_verdicts(median: float, p99: float, daqp: float, absolute: str, scaled: str) -> None:
    v = verdicts(median, p99, daqp)
    assert (v["verdict_absolute"], v["verdict_scaled"]) == (absolute, scaled)
    assert v["median_over_daqp"] == pytest.approx(median / daqp)
    assert v["machine_vs_anchor"] == pytest.approx(daqp / 3.5e-6)
    assert ("MISSED" in v["text"]) == (absolute == "missed" or scaled == "missed")


def test_compare_rows_carry_both_verdicts_and_pass_the_runner_check() -> None:
    filt = _box_filter(3, 4, seed=1)
    probs = make_filter_problems(filt, 4, seed=2)
    rows = _compare("g", "n=3 m=4", filt, probs, 20, ("quadprog", "DAQP direct"), n_target=40)
    validate_rows(rows, "bench_filter")
    daqp = [r for r in rows if r["ref_name"] == "DAQP direct"]
    assert len(daqp) == 1 and daqp[0]["n_calls"] == 40
    assert daqp[0]["verdict_absolute"] in ("met", "missed") and daqp[0]["verdict_scaled"] in ("met", "missed")
    assert "absolute:" in daqp[0]["notes"] and "scaled" in daqp[0]["notes"]
    assert all(r["passed"] is None for r in rows)  # pass/miss only on the cvxpy ratio rows


def test_paths_rows_time_every_filter_path_against_the_optimal_median() -> None:
    """Issue 15's table: one row per path, each sampled call taking its path (checked inside
    ``path_problems``), p99 over the optimal path's median and its verdict."""
    rows = paths(100, k=4, blocks=2)
    validate_rows(rows, "bench_filter")
    assert [r["name"] for r in rows] == list(PATHS)
    opt = rows[0]["ours_median_s"]
    for r in rows:
        assert r["p99_over_optimal_median"] == r["ours_p99_s"] / opt
        assert r["passed"] == (r["p99_over_optimal_median"] <= PATH_P99_FACTOR)
        assert r["n_calls"] == 100
        # the tail beyond p99 and the machine's load are reported with every row
        assert r["ours_median_s"] <= r["ours_p99_s"] <= r["p999_s"] <= r["max_s"]
        assert isinstance(r["gc_collections"], int) and r["gc_collections"] >= 0
        assert "load average" in r["notes"] and len(r["machine"]["before"]["load"]) == 3
        # the machine floor: constant work timed in the same blocks, its p99 at or above its median
        assert 0 < r["floor_median_s"] <= r["floor_p99_s"]
        assert r["floor_p99_over_median"] == r["floor_p99_s"] / r["floor_median_s"]
        assert "machine floor" in r["notes"]
        # the CPU's gaps measured in the same run, and the share of this path's calls they hit
        gaps = r["machine"]["interruptions"]
        assert gaps["per_s"] >= 0 and gaps["median_s"] <= gaps["p99_s"]
        assert r["hit_share"] == min(1.0, gaps["per_s"] * r["ours_median_s"])
        assert "gaps/s" in r["notes"]


def test_interruptions_sees_the_time_another_thread_takes() -> None:
    """The gap probe counts the time its loop does not run: a second Python thread spinning
    beside it takes the interpreter for one switch interval (5 ms) at a time, so the probe sees
    gaps of about that length, several per 0.2 s; alone, it sees none that long."""
    import sys
    import threading
    import time

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        time.sleep(0.02)
        busy = interruptions(seconds=0.2, threshold_s=1e-3)
    finally:
        stop.set()
        th.join()
    switch = sys.getswitchinterval()
    assert busy["per_s"] >= 5  # at least one gap in 0.2 s
    assert 0.5 * switch <= busy["median_s"] <= 20 * switch
    alone = interruptions(seconds=0.2, threshold_s=0.5)  # nothing stops the loop for 0.5 s
    assert alone["per_s"] == 0 and alone["median_s"] == 0.0
