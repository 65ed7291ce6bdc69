"""Soak of the node at 1 kHz across processes: the core of ``scripts/soak.py`` (the one-hour run,
``make soak``) and, as :func:`run`, ``make bench``'s 5-minute variant (issue 15).

The node runs as its own process (``config/diff_drive.yaml``, a seeded CfC-NCP(19) policy,
TwistStamped output carrying the trigger stamp, as ``bench/bench_ros.py`` runs it); this process
is ``bench.bench_ros``'s 1 kHz driver (odometry at 1 kHz, scans at 20 Hz, goal at 1 Hz, never
bursting to catch up) and takes the commands back. Per minute: p50 / p99 sensor-publish ->
command-receipt latency, loss (odometry messages without a command back), backlog (median of
the minute's last tenth minus its first tenth), the node's VmRSS / VmHWM (``/proc/<pid>/status``)
and its own counters from ``/diagnostics``. At the end: RSS growth after the first (warm-up)
minute (target < 1 MiB), total loss (target < 1 %), latency growth (median of the last minute
minus that of the first minute after warm-up).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from bench.bench_ros import CONFIG, _backlog, _Driver, _make_model, _ros_env, _rss_kb

__all__ = ["HEADER", "LOSS_LIMIT", "RSS_GROWTH_LIMIT_KB", "line", "run", "soak"]

RSS_GROWTH_LIMIT_KB = 1024
LOSS_LIMIT = 0.01


def _minute(d: _Driver, k: int, seconds: float, pid: int) -> tuple[dict[str, Any], int, np.ndarray]:
    d.reset()
    d.diag = {}
    k = d.stream("odom", seconds, k, scans=True)
    lat, lost = d.latencies()
    d.spin_until(lambda: bool(d.diag), 2.0)
    rss, hwm = _rss_kb(pid)
    sent = len(d.sent)
    return (
        {
            "sent": sent,
            "received": int(lat.size),
            "lost": int(lost),
            "loss": lost / max(1, sent),
            "p50_s": float(np.median(lat)) if lat.size else None,
            "p99_s": float(np.percentile(lat, 99)) if lat.size else None,
            "backlog_s": _backlog(lat) if lat.size else None,
            "rss_kb": rss,
            "hwm_kb": hwm,
            "node_fallbacks": d.diag.get("fallbacks"),
            "node_received_odom": d.diag.get("received /odom"),
            "node_latency_p99_us": d.diag.get("latency_p99_us"),
        },
        k,
        lat,
    )


def soak(
    minutes: float,
    workdir: pathlib.Path,
    minute_s: float = 60.0,
    raw_trigger: bool = True,
    rt_priority: int = 0,
    keep_latencies: bool = False,
) -> dict[str, Any]:
    """Run the soak for ``minutes`` (the first one is warm-up); returns the summary.
    ``keep_latencies``: the summary's ``latencies_s`` holds every period's latencies, warm-up
    first (arrays, not JSON: :func:`run` pops them; a one-hour soak would carry 3.5 million).
    ``rt_priority`` > 0: the node (``chrt -f``) and this driver run under SCHED_FIFO at that
    priority, as a deployed 1 kHz controller would; PermissionError where it is not allowed."""
    env = _ros_env()
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "cfc_ncp19.npz"
    _make_model(model)
    log = workdir / "controller.log"
    args = [
        sys.executable, "-m", "lnn_control.ros.controller_node", "--ros-args", "--params-file", str(CONFIG),
        "-p", f"model_file:={model}", "-p", "sensor_timeout:=0.5", "-p", "diagnostics_rate:=2.0",
        "-p", "observation.command.type:=geometry_msgs/msg/TwistStamped",
        "-p", "observation.command.fields:=[twist.linear.x, twist.angular.z]",
        "-p", f"raw_trigger:={'true' if raw_trigger else 'false'}",
    ]  # fmt: skip
    if rt_priority > 0:  # before any thread exists: rclpy's and DDS's threads inherit it
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
        args = ["chrt", "-f", str(rt_priority), *args]
    with open(log, "wb") as out:  # a file, not a pipe nobody reads for an hour
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    d = _Driver()
    rows: list[dict[str, Any]] = []
    kept: list[np.ndarray] = []
    t0 = time.monotonic()
    try:
        d.bring_up()
        k = 0
        n = max(2, int(round(minutes * 60.0 / minute_s)))
        for i in range(n):
            row, k, lat = _minute(d, k, minute_s, proc.pid)
            if keep_latencies:
                kept.append(lat)
            row["minute"] = i + 1
            rows.append(row)
            print(line(row), flush=True)
            if proc.poll() is not None:
                raise RuntimeError(f"lnn_controller exited with {proc.returncode}")
    finally:
        d.close()
        alive = proc.poll() is None
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    measured = rows[1:]  # minute 1 is warm-up
    sent = sum(r["sent"] for r in measured)
    lost = sum(r["lost"] for r in measured)
    growth_kb = measured[-1]["rss_kb"] - rows[0]["rss_kb"]
    p50 = [r["p50_s"] for r in measured if r["p50_s"] is not None]
    latency_growth = p50[-1] - p50[0] if len(p50) >= 2 else None
    summary = {
        "minutes": len(rows),
        "minute_s": minute_s,
        "raw_trigger": raw_trigger,
        "rt_priority": rt_priority,
        "load_average_end": list(os.getloadavg()),
        "wall_s": time.monotonic() - t0,
        "per_minute": rows,
        "messages_sent_after_warmup": sent,
        "lost_after_warmup": lost,
        "loss": lost / max(1, sent),
        "loss_ok": lost / max(1, sent) < LOSS_LIMIT,
        "rss_growth_after_warmup_kb": growth_kb,
        "rss_ok": growth_kb < RSS_GROWTH_LIMIT_KB,
        "p50_growth_s": latency_growth,
        "worst_minute_p99_s": max((r["p99_s"] for r in measured if r["p99_s"] is not None), default=None),
        "worst_minute_backlog_s": max(
            (r["backlog_s"] for r in measured if r["backlog_s"] is not None), default=None
        ),
        "node_alive_at_end": alive,
        "node_log_tail": log.read_text(errors="replace")[-2000:],
    }
    if keep_latencies:
        summary["latencies_s"] = kept
    return summary


#: the per-minute table's head (markdown), whose rows :func:`line` writes
HEADER = (
    "| minute | sent | loss | p50 ms | p99 ms | backlog ms | RSS MiB | node fallbacks |\n"
    "|---|---|---|---|---|---|---|---|"
)


def line(r: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1e3:.2f}"

    return (
        f"| {r['minute']} | {r['sent']} | {r['loss']:.2%} | {ms(r['p50_s'])} | {ms(r['p99_s'])} | "
        f"{ms(r['backlog_s'])} | {r['rss_kb'] / 1024:.1f} | {r['node_fallbacks']} |"
    )


def run(quick: bool) -> list[dict[str, Any]]:
    """``make bench``'s soak: 5 one-minute periods (quick: 3 of 15 s, the CI smoke), the first
    warm-up, default scheduler. Row: every command latency after warm-up against the warm-up
    period's, same run (a ratio below 1 means latency grew over the soak); passed = loss < 1 %,
    RSS growth < 1 MiB, node alive. The one-hour run is ``make soak`` (``scripts/soak.py``)."""
    from bench.common import row

    minutes, minute_s = (0.75, 15.0) if quick else (5.0, 60.0)
    with tempfile.TemporaryDirectory(prefix="lnn_bench_soak_") as tmp:
        s = soak(minutes, pathlib.Path(tmp), minute_s, keep_latencies=True)
    periods = s.pop("latencies_s")
    lat = np.concatenate(periods[1:])
    if lat.size == 0 or periods[0].size == 0:
        raise RuntimeError(f"soak: no command came back ({s['messages_sent_after_warmup']} sent)")
    per = s["per_minute"]
    p99s = ", ".join("-" if r["p99_s"] is None else f"{r['p99_s'] * 1e3:.2f}" for r in per[1:])
    r = row(
        "ros",
        f"soak at 1 kHz across processes, {len(per) - 1} x {minute_s:g} s after {minute_s:g} s warm-up: "
        "sensor publish -> command received",
        lat,
        periods[0],
        "the warm-up period",
        "loss < 1 %, RSS growth < 1 MiB, node alive",
        notes=(
            f"{s['messages_sent_after_warmup']} sent, loss {s['loss']:.3%}, RSS growth "
            f"{s['rss_growth_after_warmup_kb']} kB, worst backlog "
            f"{(s['worst_minute_backlog_s'] or 0.0) * 1e3:.2f} ms, per-period p99 [{p99s}] ms, node "
            f"{'alive' if s['node_alive_at_end'] else 'DEAD'}, load at end {s['load_average_end'][0]:.2f}"
        ),
    )
    r["passed"] = bool(s["loss_ok"] and s["rss_ok"] and s["node_alive_at_end"])
    r["loss"], r["rss_growth_kb"] = s["loss"], s["rss_growth_after_warmup_kb"]
    return [r]
