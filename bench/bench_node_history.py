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
    from geometry_msgs.msg import Twist
    from lnn_control.msg import SafetyStatus
    from nav_msgs.msg import Odometry
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Float64MultiArray

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
    ctx = Context()
    rclpy.init(context=ctx, args=args)
    node = node_mod.LnnController(context=ctx)
    reader = rclpy.create_node("bench_reader", context=ctx)
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for cls, topic in (
        (Twist, "/cmd_vel"),
        (Float64MultiArray, "/lnn_controller/nominal_command"),
        (SafetyStatus, "/lnn_controller/safety_status"),
    ):
        reader.create_subscription(cls, topic, lambda m: None, rel)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        outputs = [node._pubs[k] for k in ("command", "nominal", "status")]
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and min(p.get_subscription_count() for p in outputs) < 1:
            time.sleep(0.01)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=DEFAULT_BEFORE, help="the earlier commit (default: issue 15's main)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--json", type=pathlib.Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lnn_before_") as tmp:
        before = pathlib.Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
            check=True, capture_output=True,
        )  # fmt: skip
        try:
            names = ("before", "now (raw trigger)", "now (message path)")
            runs: dict[str, list[np.ndarray]] = {n: [] for n in names}
            for _ in range(args.rounds):
                runs["before"].append(_run_probe(before, args.steps, raw=False))
                runs["now (raw trigger)"].append(_run_probe(ROOT, args.steps, raw=True))
                runs["now (message path)"].append(_run_probe(ROOT, args.steps, raw=False))
        finally:
            rm = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)]
            subprocess.run(rm, check=False)
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
