"""Soak run: lnn_controller at 1 kHz across processes for a long time (default one hour).

``.venv/bin/python scripts/soak.py [--minutes 60] [--rt PRIO] [--raw-trigger on|off]
[--out out/soak/summary.json]`` (``make soak``; ``make soak SOAK_MINUTES=5`` for the short
variant). ``--rt PRIO``: the node and the driver under SCHED_FIFO (what a deployed 1 kHz
controller asks for; other work on the machine then cannot delay them); ``--raw-trigger off``:
the node's message-object path, for an A/B.

The node runs as its own process (``config/diff_drive.yaml``, a seeded CfC-NCP(19) policy,
TwistStamped output carrying the trigger stamp, as ``bench/bench_ros.py`` runs it); this process
is ``bench.bench_ros``'s 1 kHz driver (odometry at 1 kHz, scans at 20 Hz, goal at 1 Hz, never
bursting to catch up) and takes the commands back. Per minute: p50 / p99 sensor-publish ->
command-receipt latency, loss (odometry messages without a command back), backlog (median of
the minute's last tenth minus its first tenth), the node's VmRSS / VmHWM (``/proc/<pid>/status``)
and its own counters from ``/diagnostics``. At the end: RSS growth after the first (warm-up)
minute (target < 1 MiB), total loss (target < 1 %), latency growth (median of the last minute
minus that of the first minute after warm-up). Strict JSON (``lnn_control.strict_json``) and a
table.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_ros import CONFIG, _backlog, _Driver, _make_model, _ros_env, _rss_kb  # noqa: E402

__all__ = ["soak", "main"]

RSS_GROWTH_LIMIT_KB = 1024
LOSS_LIMIT = 0.01


def _minute(d: _Driver, k: int, seconds: float, pid: int) -> tuple[dict[str, Any], int]:
    d.reset()
    d.diag = {}
    k = d.stream("odom", seconds, k, scans=True)
    lat, lost = d.latencies()
    d.spin_until(lambda: bool(d.diag), 2.0)
    rss, hwm = _rss_kb(pid)
    sent = len(d.sent)
    return {
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
    }, k


def soak(
    minutes: float,
    workdir: pathlib.Path,
    minute_s: float = 60.0,
    raw_trigger: bool = True,
    rt_priority: int = 0,
) -> dict[str, Any]:
    """Run the soak for ``minutes`` (the first one is warm-up); returns the summary.
    ``rt_priority`` > 0: the node (``chrt -f``) and this driver run under SCHED_FIFO at that
    priority, as a deployed 1 kHz controller would; PermissionError where it is not allowed."""
    from lifecycle_msgs.msg import Transition

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
    t0 = time.monotonic()
    try:
        if d.wait_ready() != "unconfigured":
            raise RuntimeError("lnn_controller did not start unconfigured")
        d.transition(Transition.TRANSITION_CONFIGURE)
        d.transition(Transition.TRANSITION_ACTIVATE)
        if not d.spin_until(lambda: d.pubs["odom"].get_subscription_count() > 0, 10.0):
            raise RuntimeError("controller did not subscribe to /odom")
        k = 0
        n = max(2, int(round(minutes * 60.0 / minute_s)))
        for i in range(n):
            row, k = _minute(d, k, minute_s, proc.pid)
            row["minute"] = i + 1
            rows.append(row)
            print(_line(row), flush=True)
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
    return summary


def _line(r: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1e3:.2f}"

    return (
        f"| {r['minute']} | {r['sent']} | {r['loss']:.2%} | {ms(r['p50_s'])} | {ms(r['p99_s'])} | "
        f"{ms(r['backlog_s'])} | {r['rss_kb'] / 1024:.1f} | {r['node_fallbacks']} |"
    )


def main(argv: list[str] | None = None) -> int:
    from lnn_control import strict_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="duration; the first minute is warm-up")
    ap.add_argument("--minute-s", type=float, default=60.0, help="length of one reported period, s")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "soak" / "summary.json")
    ap.add_argument(
        "--raw-trigger", choices=("on", "off"), default="on", help="the node's raw_trigger parameter (A/B)"
    )
    ap.add_argument(
        "--rt", type=int, default=0, metavar="PRIO",
        help="run the node and the driver under SCHED_FIFO at this priority (0: the default scheduler)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    print("| minute | sent | loss | p50 ms | p99 ms | backlog ms | RSS MiB | node fallbacks |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="lnn_soak_") as tmp:
        s = soak(args.minutes, pathlib.Path(tmp), args.minute_s, args.raw_trigger == "on", args.rt)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strict_json.write(args.out, s)
    print(
        strict_json.dumps({k: v for k, v in s.items() if k not in ("per_minute", "node_log_tail")}, indent=1)
    )
    ok = s["loss_ok"] and s["rss_ok"] and s["node_alive_at_end"]
    print(
        f"RSS growth after warm-up {s['rss_growth_after_warmup_kb']} kB (target < {RSS_GROWTH_LIMIT_KB}), "
        f"loss {s['loss']:.3%} (target < {LOSS_LIMIT:.0%}); summary in {args.out}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
