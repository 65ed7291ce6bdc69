"""Camera pipeline speed: the lane camera and the camera policy's step, numpy runtime vs torch.

Rows (ratios measured in this run, one thread):
- lane camera: one 64x48 rgb8 frame (``mj_multiRay`` over the track meshes + shading) against
  the camera period at 20 Hz (50 ms): the sim must leave most of the period free.
- conv head (64x48 rgb8 -> 32 features): ``ConvHeadRuntime`` (numpy im2col) against the torch
  ``ConvHead`` forward of the same weights, float32 and float64; the outputs are checked equal
  first (1e-10 in float64, 1e-5 relative in float32).
- whole control step (conv head + 19-neuron CfC / LTC NCP, one frame, recurrent state kept):
  ``VisionStepper.step`` against ``VisionPolicy.forward`` on (1, 1) sequences with ``hx``.
- the shipped ``models/lane.npz`` (grey 64x48 frame + speed, the flat observation the node
  builds): ``load_stepper`` (torch-free, what lnn_controller runs) against ``load_policy``'s torch
  forward, float64, outputs checked equal (1e-9) over an expert episode first.

``python -m bench.bench_vision [--quick]``
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from bench.common import row, time_calls
from lnn_control.nn.vision import VisionPolicy
from lnn_control.sim.lane import CAMERA_RATE, LaneEnv, LaneExpert

__all__ = ["run"]


def _frames(n: int) -> np.ndarray:
    env = LaneEnv(1)
    env.reset(seed=0)
    expert = LaneExpert(env.track)
    return np.stack([env.step(expert.command(env.pose), 1 / CAMERA_RATE).image for _ in range(n)])


def _policy_rows(policy: VisionPolicy, ndt: Any, tol: float, img: np.ndarray, n: int) -> list[dict[str, Any]]:
    """Rows for one policy: its conv head (CfC policies only: the head is the same) and its step."""
    name = "float32" if ndt is np.float32 else "float64"
    cell = policy.policy.cell
    stepper = policy.runtime(ndt)
    x = torch.as_tensor(img[None, None])
    with torch.no_grad():
        feats = policy.features(x)[0, 0].numpy()
    err = float(np.abs(stepper.head(img) - feats).max())
    if err > tol * max(1.0, float(np.abs(feats).max())):
        raise AssertionError(f"numpy conv head differs from torch ({name}): {err}")
    rows = []
    if cell == "cfc":
        with torch.no_grad():
            ref = time_calls(lambda: policy.features(x), n)
        rows.append(
            row(
                "vision",
                f"conv head 64x48 -> 32 features, {name} (numpy im2col)",
                time_calls(lambda: stepper.head(img), n),
                ref,
                "torch ConvHead forward",
                ">= 1x",
                1.0,
            )
        )
    h = torch.zeros(1, policy.state_size, dtype=policy.head.map_weight.dtype)

    def torch_step() -> None:
        nonlocal h
        with torch.no_grad():
            _, h = policy(x, 0.05, h)

    rows.append(
        row(
            "vision",
            f"camera policy step (conv head + {cell.upper()} NCP 19), {name}",
            time_calls(lambda: stepper.step(img, 0.05), n),
            time_calls(torch_step, n),
            "torch VisionPolicy forward, T=1",
            ">= 1x",
            1.0,
        )
    )
    return rows


def _model_rows(n: int) -> list[dict[str, Any]]:
    from lnn_control.config import REPO, config_path
    from lnn_control.runtime.model_file import load_policy, load_stepper
    from lnn_control.sim.rollout import ClosedLoop

    path = REPO / "models" / "lane.npz"
    if not path.is_file():
        return []
    stepper, policy = load_stepper(path), load_policy(path).double()
    ep = ClosedLoop("lane", config_path("lane"), safety_filter=True).run(None, 50500, max_time=5.0).episode
    with torch.no_grad():
        y, _ = policy(torch.as_tensor(ep.obs[None]), torch.as_tensor(ep.dt[None]))
    ys = np.array([stepper.step(o, d) for o, d in zip(ep.obs, ep.dt)])
    err = float(np.abs(ys - y[0].numpy()).max())
    if err > 1e-9 * max(1.0, float(np.abs(ys).max())):
        raise AssertionError(f"models/lane.npz: torch-free step differs from torch by {err}")
    o = ep.obs[len(ep.obs) // 2]
    x = torch.as_tensor(o[None, None])
    h = torch.zeros(1, policy.state_size, dtype=torch.float64)

    def torch_step() -> None:
        nonlocal h
        with torch.no_grad():
            _, h = policy(x, 0.05, h)

    return [
        row(
            "vision",
            "models/lane.npz step (grey 64x48 + speed -> conv -> CfC NCP 19), float64",
            time_calls(lambda: stepper.step(o, 0.05), n),
            time_calls(torch_step, n),
            "torch load_policy forward, T=1",
            ">= 1x",
            1.0,
            notes=f"max |torch-free - torch| over a 5 s expert episode: {err:.1e}",
        )
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    n = 200 if quick else 1000
    rows = []

    env = LaneEnv(1)
    env.reset(seed=0)
    rows.append(
        row(
            "vision",
            "lane camera 64x48 rgb8 frame (mj_multiRay)",
            time_calls(env.image, n),
            np.full(n, 1 / CAMERA_RATE),
            f"camera period ({1000 / CAMERA_RATE:.0f} ms)",
            ">= 5x",
            5.0,
        )
    )

    frames = _frames(8)
    torch.manual_seed(0)
    for tdt, ndt, tol in ((torch.float32, np.float32, 1e-5), (torch.float64, np.float64, 1e-10)):
        for cell in ("cfc", "ltc"):
            rows += _policy_rows(VisionPolicy(cell=cell, n_outputs=1).to(tdt).eval(), ndt, tol, frames[0], n)
    rows += _model_rows(n)
    failed = [r["name"] for r in rows if r["passed"] is False]
    if failed:
        raise AssertionError(f"vision benchmarks below target: {failed}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    rows = run(p.parse_args().quick)
    print(f"{'benchmark':62s} {'ours med':>10s} {'ref med':>10s} {'ratio':>8s}  target")
    for r in rows:
        print(
            f"{r['name']:62s} {r['ours_median_s'] * 1e6:8.1f}us {r['ref_median_s'] * 1e6:8.1f}us "
            f"{r['speedup']:7.1f}x  {r['target']} vs {r['ref_name']}"
        )


if __name__ == "__main__":
    main()
