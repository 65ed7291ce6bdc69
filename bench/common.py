"""Shared timing helpers and the result-row format every benchmark module returns.

Each ``bench/bench_<area>.py`` exposes ``run(quick: bool) -> list[dict]``; each dict is a
row made by :func:`row`. ``bench/run.py`` collects them into results.md / results.json.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["row", "summarize", "time_calls"]


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 20) -> np.ndarray:
    """Call ``fn`` ``warmup`` times untimed, then ``n`` times; return each call's seconds."""
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        clock = time.perf_counter
        for i in range(n):
            t0 = clock()
            fn()
            out[i] = clock() - t0
    finally:
        if gc_was:
            gc.enable()
    return out


def summarize(times: np.ndarray) -> dict[str, float]:
    """Median and 99th percentile of a vector of seconds."""
    return {"median_s": float(np.median(times)), "p99_s": float(np.percentile(times, 99))}


def row(
    group: str,
    name: str,
    ours: np.ndarray,
    ref: np.ndarray | None = None,
    ref_name: str = "",
    target: str = "",
    min_speedup: float | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """One result row: our timing, the reference timed in the same run, and their ratio.

    ``speedup`` = reference median / our median (> 1 means we are faster). ``passed`` is
    ``speedup >= min_speedup`` when a target ratio is given, else None.
    """
    o = summarize(ours)
    r: dict[str, Any] = {
        "group": group,
        "name": name,
        "ours_median_s": o["median_s"],
        "ours_p99_s": o["p99_s"],
        "ref_name": ref_name,
        "ref_median_s": None,
        "ref_p99_s": None,
        "speedup": None,
        "target": target,
        "passed": None,
        "notes": notes,
    }
    if ref is not None:
        s = summarize(ref)
        r["ref_median_s"], r["ref_p99_s"] = s["median_s"], s["p99_s"]
        r["speedup"] = s["median_s"] / o["median_s"]
        if min_speedup is not None:
            r["passed"] = bool(r["speedup"] >= min_speedup)
    return r
