"""Simulator speed: how much faster than real time the plain environments step, and the scan ray caster.

Rows (ratios measured in this run):
- diff_drive / arm ``step`` of one publish period (20 ms / 10 ms of sim time, 2 ms physics steps,
  observation and ground truth included) against that period of wall time: speedup = the
  real-time factor the sim can sustain on one core (target >= 5, so demos and recording run
  faster than real time).
- 72-beam LaserScan: one ``mj_multiRay`` call (ours) against 72 ``mj_ray`` calls in a Python loop.
- expert controllers against the control period (they must leave room inside it).

``python -m bench.bench_sim [--quick]``
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import mujoco
import numpy as np
import torch

from bench.common import row, time_calls
from lnn_control.sim import models as M
from lnn_control.sim.arm import ArmEnv
from lnn_control.sim.diff_drive import DiffDriveEnv
from lnn_control.sim.experts import ArmExpert, DiffDriveExpert

__all__ = ["run"]


def _per_beam_scan(env: DiffDriveEnv) -> np.ndarray:
    x, y, th = env.data.qpos[:3]
    pnt = np.array([x, y, M.SCAN_HEIGHT])
    geom = np.zeros(1, dtype=np.int32)
    body = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "base_link")
    out = np.empty(M.SCAN_BEAMS)
    for k in range(M.SCAN_BEAMS):
        a = th + 2 * math.pi * k / M.SCAN_BEAMS
        d = mujoco.mj_ray(
            env.model, env.data, pnt, np.array([math.cos(a), math.sin(a), 0.0]), None, 1, body, geom
        )
        out[k] = d if geom[0] >= 0 and d <= M.SCAN_RANGE_MAX else np.inf
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    n = 200 if quick else 2000
    rows = []

    dd = DiffDriveEnv()
    dd.reset(start=np.array([-2.0, 2.0, 0.0]))
    k = [0]

    def dd_step() -> None:
        k[0] += 1
        dd.step([0.3, 1.0 if (k[0] // 50) % 2 else -1.0], 0.02)
        dd.ground_truth()

    t = time_calls(dd_step, n)
    rows.append(
        row(
            "sim",
            "diff_drive step 20 ms (10 physics steps + scan + gt)",
            t,
            np.full(n, 0.02),
            "real time (20 ms)",
            ">= 5x real time",
            5.0,
        )
    )

    a = ArmEnv()
    a.reset(q0=np.array([0.0, 0.3, 0.2]))
    tau_g = a.data.qfrc_bias[:3].copy()

    def arm_step() -> None:
        a.step(tau_g, 0.01)
        a.ground_truth()

    t = time_calls(arm_step, n)
    rows.append(
        row(
            "sim",
            "arm step 10 ms (5 physics steps + gt)",
            t,
            np.full(n, 0.01),
            "real time (10 ms)",
            ">= 5x real time",
            5.0,
        )
    )

    dd.reset(start=np.array([0.0, 0.0, 0.3]))
    ours, ref = dd.scan(), _per_beam_scan(dd)
    if not np.array_equal(np.isinf(ours), np.isinf(ref)) or not np.allclose(
        ours[np.isfinite(ours)], ref[np.isfinite(ref)]
    ):
        raise AssertionError("mj_multiRay scan and per-beam mj_ray scan disagree")
    rows.append(
        row(
            "sim",
            "72-beam scan: mj_multiRay",
            time_calls(dd.scan, n),
            time_calls(lambda: _per_beam_scan(dd), n),
            "72 x mj_ray in Python",
            ">= 1x",
            1.0,
        )
    )

    expert = DiffDriveExpert()
    goal = np.array([2.0, -2.0])
    expert.set_goal(goal)
    pose = np.array([-2.0, 2.0, 0.0])
    rows.append(
        row(
            "sim",
            "diff_drive expert call",
            time_calls(lambda: expert(pose, goal), n),
            np.full(n, 0.02),
            "control period (20 ms)",
            ">= 10x",
            10.0,
        )
    )
    arm_expert = ArmExpert(a.model)
    q, dq, qg = np.array([0.1, 0.2, 0.3]), np.zeros(3), np.array([0.5, -0.2, 0.1])
    rows.append(
        row(
            "sim",
            "arm computed-torque expert call",
            time_calls(lambda: arm_expert(q, dq, qg), n),
            np.full(n, 0.01),
            "control period (10 ms)",
            ">= 10x",
            10.0,
        )
    )
    failed = [r["name"] for r in rows if r["passed"] is False]
    if failed:
        raise AssertionError(f"simulator benchmarks below target: {failed}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    rows = run(p.parse_args().quick)
    print(f"{'benchmark':58s} {'ours med':>10s} {'ref med':>10s} {'ratio':>8s}  target")
    for r in rows:
        print(
            f"{r['name']:58s} {r['ours_median_s'] * 1e6:8.1f}us {r['ref_median_s'] * 1e6:8.1f}us "
            f"{r['speedup']:7.1f}x  {r['target']} vs {r['ref_name']}"
        )


if __name__ == "__main__":
    main()
