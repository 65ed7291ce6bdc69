"""Worst overshoot past the arm's velocity limits when a filtered torque is held for 1-3 control periods.

The sampled-data check behind ``dq_limits.margin`` in ``config/arm.yaml``. Seeded states
(q inside the position HOCBF's margin-shrunk limits and in its safe set h' + p1 h >= 0, every
|dq_i| at 70-100 % of the margin-shrunk velocity limit), a random nominal torque in the box
filtered by the arm's ``SafetyFilter``, then the MuJoCo plant (``ArmEnv``) run with that torque
held for ``--holds`` periods of 10 ms. Prints, per hold, max_i |dq_i| - limit (rad/s; > 0 is a
violation) and how far any q got past the HOCBF's margin-shrunk limit (rad). States whose
links touch the floor within the hold are left out (that is a collision, not this barrier's
concern).

``.venv/bin/python scripts/arm_velocity_margin.py [--samples 20000] [--margin 0.0 0.1]``
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import mujoco
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from barriernet.safety_filter import SafetyFilter  # noqa: E402
from lnn_control.config import load_filter_config  # noqa: E402
from lnn_control.sim import models as M  # noqa: E402
from lnn_control.sim.arm import ArmEnv  # noqa: E402

PERIOD = 0.01  # s, the arm's control period (100 Hz joint states)


def overshoot(
    margin: float, gain: float, samples: int, holds: int, seed: int
) -> tuple[np.ndarray, float, int]:
    """(worst |dq| - limit after each hold (holds,), worst q past the shrunk limit, states used)."""
    cfg = load_filter_config(REPO / "config" / "arm.yaml")
    q_margin, p1 = 0.05, 2.0
    for b in cfg["barriers"]:
        if b["name"] == "dq_limits":
            b["margin"], b["gains"] = margin, [gain]
        if b["name"] == "q_limits":
            q_margin, p1 = float(b["margin"]), float(b["gains"][0])
    sf = SafetyFilter.from_config(cfg)
    env = ArmEnv()
    m, d = env.model, env.data
    steps = round(PERIOD / m.opt.timestep)
    rng = np.random.default_rng(seed)
    worst_dq = np.full(holds, -np.inf)
    worst_q, used = -np.inf, 0
    lo, hi = M.ARM_Q_LOWER + q_margin, M.ARM_Q_UPPER - q_margin
    for _ in range(samples):
        q = rng.uniform(lo, hi)
        dq = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.7, 1.0, 3) * (M.ARM_DQ_LIMIT - margin)
        if np.any(dq + p1 * (q - lo) < 0) or np.any(-dq + p1 * (hi - q) < 0):
            continue  # outside the position HOCBF's safe set: it promises nothing there
        u, rep = sf.filter(np.r_[q, dq], rng.uniform(-M.ARM_TAU_LIMIT, M.ARM_TAU_LIMIT))
        if rep.status != "optimal":
            continue
        mujoco.mj_resetData(m, d)
        d.qpos[:3], d.qvel[:3], d.ctrl[:3] = q, dq, u
        mujoco.mj_forward(m, d)
        peak_dq, peak_q, hit = -np.inf, -np.inf, False
        per_hold = np.full(holds, -np.inf)
        for k in range(holds):
            for _ in range(steps):
                mujoco.mj_step(m, d)
                hit |= d.ncon > 0
                peak_dq = max(peak_dq, float(np.max(np.abs(d.qvel[:3]) - M.ARM_DQ_LIMIT)))
                peak_q = max(peak_q, float(np.max(np.maximum(lo - d.qpos[:3], d.qpos[:3] - hi))))
            per_hold[k] = peak_dq
        if hit:
            continue
        used += 1
        worst_dq = np.maximum(worst_dq, per_hold)
        worst_q = max(worst_q, peak_q)
    return worst_dq, worst_q, used


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--margin", type=float, nargs="+", default=[0.0, 0.1], help="dq_limits.margin (rad/s)")
    p.add_argument("--gain", type=float, default=5.0, help="dq_limits class-K gain (1/s)")
    p.add_argument("--holds", type=int, default=3, help="periods of 10 ms the torque is held")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.samples < 1 or a.holds < 1:
        p.error("--samples and --holds must be >= 1")
    for margin in a.margin:
        w, wq, used = overshoot(margin, a.gain, a.samples, a.holds, a.seed)
        per = ", ".join(f"{10 * (k + 1)} ms {v:+.4f}" for k, v in enumerate(w))
        print(
            f"margin {margin} rad/s, gain {a.gain}: max |dq| - limit (rad/s) after a hold of {per}; "
            f"max q past the HOCBF's shrunk limit {wq:+.4f} rad ({used} states)"
        )


if __name__ == "__main__":
    main()
