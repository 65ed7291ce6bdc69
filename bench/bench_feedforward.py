"""The arm policy's model-based feed-forward (lnn_control.runtime.feedforward), per control step.

Groups (batch 1, float64, the built-in arm):

- ``gravity feed-forward``: ``GravityPitchChain`` (the analytic gravity torque from the MJCF's
  masses, what a model file's ``feedforward`` section runs) against MuJoCo computing the same
  torque from the model (``qpos`` set, ``mj_forward``, ``qfrc_bias`` at dq = 0). No target: it
  says whether the analytic form is worth having over calling MuJoCo each step.
- ``deployed step``: ``FeedforwardStepper.step`` (input map + network + feed-forward, the arm's
  deployed policy structure) against the bare network's ``PolicyStepper.step`` on the same
  CfC-NCP(32, 10 motor) residual network: the structure's overhead per step (speedup < 1).

``python -m bench.bench_feedforward [--quick]`` prints the rows.
"""

from __future__ import annotations

import argparse
from typing import Any

import mujoco
import numpy as np

from bench.common import row, time_calls

__all__ = ["run"]


def run(quick: bool = False) -> list[dict[str, Any]]:
    import torch

    from lnn_control.config import load_observation_config
    from lnn_control.learn.recipe import Recipe, structure_for
    from lnn_control.nn.policy import LiquidPolicy
    from lnn_control.nn.wiring import AutoNCP
    from lnn_control.runtime.feedforward import GravityPitchChain, gravity_pitch_chain_config
    from lnn_control.sim import models as M

    n = 2_000 if quick else 20_000
    m = mujoco.MjModel.from_xml_string(M.arm_mjcf())
    d = mujoco.MjData(m)
    ff = GravityPitchChain(gravity_pitch_chain_config(m))
    rng = np.random.default_rng(0)
    obs = np.concatenate([rng.uniform(M.ARM_Q_LOWER, M.ARM_Q_UPPER), rng.normal(size=3), np.zeros(3)])

    def mj_gravity() -> np.ndarray:
        d.qpos[:] = obs[:3]
        d.qvel[:] = 0.0
        mujoco.mj_forward(m, d)
        return d.qfrc_bias.copy()

    if np.abs(ff(obs) - mj_gravity()).max() > 1e-9:
        raise RuntimeError("the analytic gravity differs from MuJoCo's")
    rows = [
        row(
            "gravity feed-forward",
            "GravityPitchChain (analytic, arm)",
            time_calls(lambda: ff(obs), n),
            time_calls(mj_gravity, n),
            "MuJoCo mj_forward qfrc_bias at dq = 0",
            notes="same torque to 1e-9",
        )
    ]
    cfg = Recipe(feedforward="gravity", inputs="goal_error")
    structure = structure_for(cfg, "arm", load_observation_config(_arm_config()))
    assert structure is not None
    torch.manual_seed(0)
    net = LiquidPolicy(6, "cfc", AutoNCP(32, 10, seed=0), proj_size=3).double().eval()
    bare = net.runtime()
    deployed = structure.stepper(net.runtime())
    z = np.concatenate([obs[6:9] - obs[:3], obs[3:6]])
    rows.append(
        row(
            "deployed step",
            "FeedforwardStepper.step (input map + CfC-NCP(32) + gravity)",
            time_calls(lambda: deployed.step(obs, 0.01), n),  # type: ignore[attr-defined]
            time_calls(lambda: bare.step(z, 0.01), n),
            "the network's PolicyStepper.step alone",
            notes="speedup < 1: the structure's overhead per step",
        )
    )
    return rows


def _arm_config() -> Any:
    from lnn_control.config import config_path

    return config_path("arm")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    for r in run(ap.parse_args().quick):
        ref = f"{r['ref_median_s'] * 1e6:.2f} us" if r["ref_median_s"] is not None else "-"
        print(f"{r['group']}: {r['name']}: {r['ours_median_s'] * 1e6:.2f} us vs {r['ref_name']} {ref}")
