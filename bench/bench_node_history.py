"""The node's in-process step now vs at an earlier commit of this repository (issue 15 item 6).

``python -m bench.bench_node_history [--before fe54820] [--rounds 3] [--steps 3000]``

``--before`` defaults to fe54820, the main on which issue 15 was filed ("the node's in-process
step is ~250 us"). That commit is checked out into a temporary ``git worktree`` of this
repository (this project's own history; nothing is fetched) and the same probe runs in both
trees, in alternating subprocesses (``--rounds`` each, so load drift hits both alike):

- the probe builds each tree's ``LnnController`` as its ``bench.bench_ros`` does (its
  ``config/diff_drive.yaml``, a seeded CfC-NCP(19) model from its ``_make_model``, a matched
  reader of each output in the process), then feeds the SAME serialised ``nav_msgs/Odometry``
  bytes (a new 72-beam scan every 5th step, outside the timing) and times serialised bytes in
  -> command published (``node._t_command``): the earlier tree through rclpy's deserialisation
  + its callback (what its subscription did), this tree through the subscription callback of
  the raw trigger (the bytes a ``raw=True`` subscription hands over), and this tree's message
  path too (``raw_trigger`` off: rclpy deserialisation + the callback), garbage collector off.
- The earlier tree imports its own ``lnn_control`` (``sys.path[0]``); only the generated
  ``lnn_control.msg`` comes from the installed package (msg/ is unchanged since fe54820).

Prints one row per tree (median / p99 over all rounds) and the ratios now / before; strict
JSON with ``--json``. Needs the repository's history (a fresh clone has it).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = "fe54820"


def node_with_readers(node_cls: Any, args: list[str]) -> tuple[Any, Any, Any]:
    """(context, node, reader): an ``LnnController`` made with ``args`` in a context of its own,
    configured and activated, and a reader node matched to each of its three outputs (never
    spun: messages wait in their queues), so every publish serialises and delivers for real
    without a reader process. The caller destroys both nodes and shuts the context down."""
    import time

    import rclpy
    from geometry_msgs.msg import Twist
    from lnn_control.msg import SafetyStatus
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray

    ctx = Context()
    rclpy.init(context=ctx, args=args)
    node = node_cls(context=ctx)
    reader = rclpy.create_node("bench_reader", context=ctx)
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for cls, topic in (
        (Twist, "/cmd_vel"),
        (Float64MultiArray, "/lnn_controller/nominal_command"),
        (SafetyStatus, "/lnn_controller/safety_status"),
    ):
        reader.create_subscription(cls, topic, lambda m: None, rel)
    reason = getattr(node, "last_reason", None)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, reason
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    outputs = [node._pubs[k] for k in ("command", "nominal", "status")]
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and min(p.get_subscription_count() for p in outputs) < 1:
        time.sleep(0.01)
    return ctx, node, reader


def _probe(tree: pathlib.Path, steps: int, raw: bool) -> list[float]:
    """Runs inside a subprocess with ``tree`` first on sys.path: seconds per step."""
    import gc
    import importlib
    import time

    sys.path.insert(0, str(tree))
    import lnn_control

    installed = [p for p in sys.path[1:] if (pathlib.Path(p) / "lnn_control" / "msg").is_dir()]
    if installed and not (tree / "lnn_control" / "msg").is_dir():
        lnn_control.__path__.append(str(pathlib.Path(installed[0]) / "lnn_control"))
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message, serialize_message

    br = importlib.import_module("bench.bench_ros")
    new_layout = (tree / "lnn_control" / "ros" / "controller_node.py").is_file()
    node_mod = importlib.import_module(
        "lnn_control.ros.controller_node" if new_layout else "lnn_control.controller_node"
    )
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="lnn_hist_"))
    model = tmp / "m.npz"
    br._make_model(model)
    args = ["--ros-args", "--params-file", str(br.CONFIG), "-p", f"model_file:={model}"]
    args += ["-p", "sensor_timeout:=10.0"]
    if not raw and (tree / "lnn_control" / "ros" / "raw_inputs.py").is_file():
        args += ["-p", "raw_trigger:=false"]
    ctx, node, reader = node_with_readers(node_mod.LnnController, args)
    try:
        sensors = br._Sensors()
        cb = node.callbacks
        cb["/goal_pose"](sensors.goal)
        warm = 300
        data = [serialize_message(sensors.odom(1 + i)) for i in range(warm + steps)]
        scans = {i: sensors.scan(1 + i) for i in range(0, len(data), 5)}
        on_odom = cb["/odom"]
        clock = time.perf_counter
        taken_raw = raw and getattr(node, "raw_trigger", False)
        if raw and not taken_raw:
            raise RuntimeError(f"{tree}: the trigger is not taken raw")
        out = []
        commands0 = node.counters["commands"]
        gc.disable()
        for i, d in enumerate(data):
            if i in scans:
                cb["/scan"](scans[i])
            t0 = clock()
            on_odom(d if taken_raw else deserialize_message(d, Odometry))
            if i >= warm:
                out.append(node._t_command - t0)
        gc.enable()
        if node.counters["commands"] - commands0 != len(data) or node.counters["fallbacks"]:
            raise RuntimeError(f"{tree}: {node.counters}")
        return out
    finally:
        reader.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def _run_probe(tree: pathlib.Path, steps: int, raw: bool) -> np.ndarray:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import bench_node_history as b; "
        "print('RESULT', json.dumps(b._probe(__import__('pathlib').Path(sys.argv[2]), int(sys.argv[3]), "
        "sys.argv[4] == 'raw')))"
    )
    cmd = [sys.executable, "-c", code, str(ROOT / "bench"), str(tree), str(steps), "raw" if raw else "msg"]
    p = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"probe in {tree} failed ({p.returncode}): {p.stderr[-2000:]}")
    return np.array(json.loads(lines[-1][7:]))


def _has_commit(rev: str) -> bool:
    r = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True, check=False
    )
    return r.returncode == 0


def measure(before_rev: str, rounds: int, steps: int) -> dict[str, list[np.ndarray]]:
    """Per tree ("before", "now (raw trigger)", "now (message path)"): each round's step times."""
    import os

    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))  # the probes' own domain
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    names = ("before", "now (raw trigger)", "now (message path)")
    runs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="lnn_before_") as tmp:
        before = pathlib.Path(tmp) / "tree"
        add = ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), before_rev]
        subprocess.run(add, check=True, capture_output=True)
        try:
            for _ in range(rounds):
                runs["before"].append(_run_probe(before, steps, raw=False))
                runs["now (raw trigger)"].append(_run_probe(ROOT, steps, raw=True))
                runs["now (message path)"].append(_run_probe(ROOT, steps, raw=False))
        finally:
            rm = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)]
            subprocess.run(rm, check=False, capture_output=True)
    return runs


def run(quick: bool) -> list[dict[str, Any]]:
    """``make bench`` rows: the step now (raw trigger; message path) against ``DEFAULT_BEFORE``.
    Without that commit in this clone (a shallow one): this tree's two paths only, said so."""
    from bench.common import row

    rounds, steps = (1, 300) if quick else (3, 3000)
    if not _has_commit(DEFAULT_BEFORE):
        raw, msg = _run_probe(ROOT, steps, raw=True), _run_probe(ROOT, steps, raw=False)
        note = f"{DEFAULT_BEFORE} is not in this clone (shallow?): this tree's message path as the reference"
        return [row("ros", "node step in-process (raw trigger)", raw, msg, "message path", notes=note)]
    runs = measure(DEFAULT_BEFORE, rounds, steps)
    b = np.concatenate(runs["before"])
    out = []
    for name in ("now (raw trigger)", "now (message path)"):
        t = np.concatenate(runs[name])
        us_now = [round(float(np.median(x)) * 1e6, 1) for x in runs[name]]
        us_before = [round(float(np.median(x)) * 1e6, 1) for x in runs["before"]]
        r = row(
            "ros",
            f"node step in-process {name}: serialised /odom -> command published",
            t,
            b,
            f"the node at {DEFAULT_BEFORE} (issue 15's main)",
            "median <= 1/2 of the node at issue 15's main" if "raw" in name else "",
            notes=(
                f"{rounds} alternating round(s) of {steps} steps per tree in subprocesses (git worktree "
                f"of {DEFAULT_BEFORE}); round medians now {us_now} us, before {us_before} us"
            ),
        )
        if "raw" in name:
            r["passed"] = bool(np.median(t) <= 0.5 * np.median(b))
        out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=DEFAULT_BEFORE, help="the earlier commit (default: issue 15's main)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--json", type=pathlib.Path, default=None)
    args = ap.parse_args(argv)
    runs = measure(args.before, args.rounds, args.steps)
    res: dict[str, Any] = {"before_commit": args.before, "rounds": args.rounds, "steps": args.steps}
    b = np.concatenate(runs["before"])
    head = "node step in-process, serialised /odom -> command published"
    print(f"| {head} | median us | p99 us | vs {args.before} |")
    print("|---|---|---|---|")
    for name, parts in runs.items():
        t = np.concatenate(parts)
        med, p99 = float(np.median(t)), float(np.percentile(t, 99))
        res[name] = {
            "median_s": med,
            "p99_s": p99,
            "median_ratio": med / float(np.median(b)),
            "p99_ratio": p99 / float(np.percentile(b, 99)),
            "round_medians_s": [float(np.median(x)) for x in parts],
        }
        print(
            f"| {name} | {med * 1e6:.1f} | {p99 * 1e6:.1f} | "
            f"{res[name]['median_ratio']:.2f}x / {res[name]['p99_ratio']:.2f}x |"
        )
    if args.json:
        from lnn_control import strict_json

        strict_json.write(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
