"""lane_boundary barrier: values equal the footprint's clearance to the edge lines, its rows match
exact derivatives on a circular road, and in closed loop the safety filter keeps a vehicle driven
by bad commands inside the lane."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from barriernet import DiffDrive, DoubleIntegrator, SafetyFilter, Unicycle
from barriernet.barriers import BARRIERS
from barriernet.lane import LaneBoundary
from lnn_control.sim.lane import LANE_RADIUS, LaneEnv, LaneExpert, make_track


def _dense_distance(edge: np.ndarray, p: np.ndarray) -> float:
    """Oracle: distance from p to the closed polyline, by 1 mm point sampling of every segment."""
    nxt = np.roll(edge, -1, 0)
    t = np.linspace(0.0, 1.0, 60)[None, :, None]
    pts = (edge[:, None, :] * (1 - t) + nxt[:, None, :] * t).reshape(-1, 2)
    return float(np.sqrt(((pts - p) ** 2).sum(1)).min())


def _circle(radius: float, n: int = 2000) -> list[list[float]]:
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1).tolist()


def test_registered_for_yaml() -> None:
    assert BARRIERS["lane_boundary"] is LaneBoundary
    cfg = {
        "dynamics": {"type": "diff_drive", "lookahead": 0.1},
        "controls": {"names": ["v", "omega"], "lower": [0.0, -3.0], "upper": [0.8, 3.0]},
        "barriers": [make_track(0).barrier_config(name="lane", gains=[2.0])],
    }
    f = SafetyFilter.from_config(cfg)
    assert f.constraint_names == ("lane.left", "lane.right")


def test_value_is_the_footprint_clearance_to_each_edge() -> None:
    tr = make_track(4)
    f = SafetyFilter(
        Unicycle(), [LaneBoundary(tr.barrier_config(gains=[1.0, 1.0]), "lane")], [-1, -1], [1, 1]
    )
    env = LaneEnv(tr)
    rng = np.random.default_rng(0)
    for _ in range(30):
        i = int(rng.integers(len(tr.s)))
        d = rng.uniform(-1.0, 1.0) * (tr.half_width[i] - 0.05)
        p = tr.centre[i] + d * tr.normal[i]
        hv = f.barrier_values(np.array([p[0], p[1], rng.uniform(-3, 3), 0.3]))
        want = [_dense_distance(tr.left, p) - LANE_RADIUS, _dense_distance(tr.right, p) - LANE_RADIUS]
        np.testing.assert_allclose(hv, want, atol=1e-5)
        env.reset(start=np.array([p[0], p[1], 0.0]))
        assert env.lane_margin() == pytest.approx(min(hv), abs=1e-12)
    # beyond the left edge the left row is negative by the overshoot
    p = tr.centre[7] + (tr.half_width[7] + 0.03) * tr.normal[7]
    hv = f.barrier_values(np.array([p[0], p[1], 0.0, 0.0]))
    assert hv[0] == pytest.approx(-0.03 - LANE_RADIUS, abs=1e-3) and hv[1] > 0


def test_diff_drive_rows_are_the_cbf_of_the_lookahead_point() -> None:
    tr = make_track(1)
    look, k = 0.1, 2.5
    f = SafetyFilter(
        DiffDrive(lookahead=look), [LaneBoundary(tr.barrier_config(gains=[k]), "lane")], [0, -3], [0.8, 3]
    )
    rng = np.random.default_rng(1)
    for _ in range(10):
        i = int(rng.integers(len(tr.s)))
        c = tr.centre[i] + rng.uniform(-0.15, 0.15) * tr.normal[i]
        x = np.array([c[0], c[1], rng.uniform(-math.pi, math.pi)])
        G, h, hv = f.constraints(x)
        p = x[:2] + look * np.array([math.cos(x[2]), math.sin(x[2])])
        want = [_dense_distance(tr.left, p), _dense_distance(tr.right, p)]
        np.testing.assert_allclose(hv, np.array(want) - LANE_RADIUS - look, atol=1e-5)
        np.testing.assert_allclose(h, k * hv, rtol=1e-12)
        # G = -dh/dx g(x): central differences of h(x) along each input direction
        for j, u in enumerate(np.eye(2)):
            eps = 1e-6
            xd = DiffDrive(lookahead=look).xdot(x, u)
            dh = (f.barrier_values(x + eps * xd) - f.barrier_values(x - eps * xd)) / (2 * eps)
            np.testing.assert_allclose(G[:, j], -dh, atol=1e-6)


def test_unicycle_hocbf_terms_exact_on_a_circular_road() -> None:
    """Ring road between radius 1.0 (left, inner: driving counter-clockwise) and 1.6 (right):
    h_left = |p| - 1 - r, h_right = 1.6 - |p| - r, Lf^2 h = +-(|v|^2 - (v.p/|p|)^2) / |p|."""
    r = 0.1
    cfg = {"left": _circle(1.0), "right": _circle(1.6), "robot_radius": r, "gains": [1.0, 1.0]}
    f = SafetyFilter(Unicycle(), [LaneBoundary(cfg, "ring")], [-3, -2], [3, 2])
    rng = np.random.default_rng(2)
    for _ in range(20):
        rad, ang, th, v = (
            rng.uniform(1.15, 1.45),
            rng.uniform(0, 2 * math.pi),
            rng.uniform(-3, 3),
            rng.uniform(0.1, 1),
        )
        p = rad * np.array([math.cos(ang), math.sin(ang)])
        x = np.array([p[0], p[1], th, v])
        G, a, b, c = f.row_terms(x)
        np.testing.assert_allclose(c, [rad - 1.0 - r, 1.6 - rad - r], atol=1e-5)
        vel = v * np.array([math.cos(th), math.sin(th)])
        radial = float(vel @ p) / rad
        # a 2000-gon's segment normals are within pi / 2000 rad of the radial direction
        np.testing.assert_allclose(b, [radial, -radial], atol=2e-3)  # h' = grad h . p'
        tang2 = float(vel @ vel) - radial**2
        np.testing.assert_allclose(a, [tang2 / rad, -tang2 / rad], atol=2e-3)
        # LgLf h: d/du of h'' = grad h . B u, B = [[-v sin, cos], [v cos, sin]]
        B = np.array([[-v * math.sin(th), math.cos(th)], [v * math.cos(th), math.sin(th)]])
        n = p / rad
        np.testing.assert_allclose(G, -np.stack([n @ B, -n @ B]), atol=2e-3)


def _closed_loop(seed: int, mode: str, nominal: str, steps: int = 500) -> tuple[float, float]:
    """Min footprint clearance (m) and progress (m) of a run with a bad nominal command."""
    env = LaneEnv(seed)
    env.reset(seed=seed)
    expert = LaneExpert(env.track)
    turn = 1.5 if seed % 2 else -1.5
    filt = None
    if mode == "diff_drive":
        filt = SafetyFilter(
            DiffDrive(lookahead=0.1),
            [LaneBoundary(env.track.barrier_config(gains=[3.0]), "lane")],
            [0.0, -3.0],
            [0.8, 3.0],
        )
    elif mode == "unicycle":
        filt = SafetyFilter(
            Unicycle(),
            [LaneBoundary(env.track.barrier_config(gains=[2.0, 2.0], margin=0.02), "lane")],
            [-3.0, -2.0],
            [3.0, 2.0],
            fallback="brake",
        )
    v = 0.0
    worst = math.inf
    for _ in range(steps):
        u = np.array([0.5, turn]) if nominal == "turn" else expert.command(env.pose) + [0.0, 0.8 * turn]
        if mode == "diff_drive":
            assert filt is not None
            u, rep = filt.filter(env.pose, u)
            assert rep.status == "optimal"
        elif mode == "unicycle":
            assert filt is not None
            out, rep = filt.filter(np.r_[env.pose, v], [u[1], 2.0 * (u[0] - v)])
            assert rep.status == "optimal"
            v += out[1] * 0.05
            u = np.array([v, out[0]])
        env.step(u, 0.05, render=False)
        worst = min(worst, env.lane_margin())
    return worst, env.progress


@pytest.mark.parametrize("seed", [0, 3, 1001])
@pytest.mark.parametrize("nominal", ["turn", "biased_expert"])
def test_filter_keeps_the_footprint_in_the_lane(seed: int, nominal: str) -> None:
    unsafe, _ = _closed_loop(seed, "none", nominal)
    assert unsafe < -0.1  # the bad command leaves the road without the filter
    for mode in ("diff_drive", "unicycle"):
        worst, progress = _closed_loop(seed, mode, nominal)
        assert worst > 0.0, mode
        if nominal == "biased_expert" and mode == "unicycle":
            assert progress > 5.0  # still drives along the lane while the filter holds it in


def test_config_errors_name_the_fix(tmp_path: Path) -> None:
    tr = make_track(0)
    with pytest.raises(ValueError, match="give 'left' and 'right'"):
        LaneBoundary({"type": "lane_boundary", "gains": [1.0]}, "lane")
    with pytest.raises(ValueError, match="driving order"):
        LaneBoundary({"left": tr.right.tolist(), "right": tr.left.tolist(), "gains": [1.0]}, "lane")
    with pytest.raises(ValueError, match=r"lane\.left.*>= 3"):
        LaneBoundary({"left": [[0, 0], [1, 0]], "right": tr.right.tolist()}, "lane")
    with pytest.raises(ValueError, match="planar"):
        SafetyFilter(
            DoubleIntegrator(dim=3), [LaneBoundary(tr.barrier_config(gains=[1, 1]), "l")], [-1] * 3, [1] * 3
        )
    path = tmp_path / "track.json"
    path.write_text(json.dumps({"left": tr.left.tolist(), "right": tr.right.tolist()}))
    b = LaneBoundary({"file": str(path), "gains": [1.0]}, "lane")
    f = SafetyFilter(DiffDrive(), [b], [0, -1], [1, 1])
    assert np.isfinite(f.barrier_values(np.array([*tr.centre[0], 0.0]))).all()
    with pytest.raises(ValueError, match="either 'file'"):
        LaneBoundary({"file": str(path), "left": tr.left.tolist(), "gains": [1.0]}, "lane")
    with pytest.raises(ValueError, match="must be JSON"):
        LaneBoundary({"file": str(tmp_path / "missing.json"), "gains": [1.0]}, "lane")
