"""barriernet.barriers: known values, CBF / HOCBF rows against finite differences of h along
trajectories, laser-scan point selection, registry, configuration errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from barriernet.barriers import (
    BARRIERS,
    NO_POINT,
    Barrier,
    InputError,
    StateBarrier,
    make_barrier,
    register_barrier,
)
from barriernet.dynamics import ControlAffine, DiffDrive, DoubleIntegrator, PlanarArm, Unicycle

HALF = {"type": "half_space", "name": "wall", "normal": [1.0, 0.0], "offset": 1.0, "gains": [1.0]}
CIRCLE = {"type": "circle_obstacle", "name": "pillar", "center": [1.0, 0.5], "radius": 0.3, "gains": [1.0]}
ELLIPSE = {
    "type": "ellipse_obstacle",
    "name": "ell",
    "center": [-0.5, 0.2],
    "axes": [0.4, 0.2],
    "angle": 0.6,
    "gains": [1.0],
}
SUPER2 = {
    "type": "superellipsoid_obstacle",
    "name": "se",
    "center": [0.3, -0.4],
    "axes": [0.3, 0.5],
    "gains": [1.0],
}
SUPER3 = {
    "type": "superellipsoid_obstacle",
    "name": "se3",
    "center": [0.3, -0.4, 0.2],
    "axes": [0.3, 0.5, 0.4],
    "exponent": 4,
    "gains": [1.0],
}


def bound(cfg: dict[str, Any], dyn: ControlAffine) -> Barrier:
    """Barrier with the right number of gains for the dynamics' relative degree."""
    b = make_barrier(cfg)
    try:
        b.bind(dyn)
    except ValueError:
        b = make_barrier({**cfg, "gains": [1.0, 1.0]})
        b.bind(dyn)
    return b


def rows(
    b: Barrier, dyn: ControlAffine, x: np.ndarray, ks: float, kp: float, env: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kin = dyn.kinematics(x, dyn.new_kinematics())
    m = b.n_rows
    G, h, hv = np.zeros((m, dyn.n_controls)), np.zeros(m), np.zeros(m)
    b.fill(x, kin, np.full(m, ks), np.full(m, kp), env, G, h, hv)
    return G, h, hv


def values(b: Barrier, dyn: ControlAffine, x: np.ndarray, env: Any = None) -> np.ndarray:
    return rows(b, dyn, x, 1.0, 1.0, env)[2]


def rk4(dyn: ControlAffine, x: np.ndarray, u: np.ndarray, t: float, steps: int = 10) -> np.ndarray:
    dt = t / steps
    for _ in range(steps):
        k1 = dyn.xdot(x, u)
        k2 = dyn.xdot(x + 0.5 * dt * k1, u)
        k3 = dyn.xdot(x + 0.5 * dt * k2, u)
        k4 = dyn.xdot(x + dt * k3, u)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


CASES: list[tuple[dict[str, Any], ControlAffine]] = [
    (HALF, DiffDrive()),
    (CIRCLE, DiffDrive()),
    (ELLIPSE, DiffDrive()),
    (SUPER2, DiffDrive()),
    (HALF, Unicycle()),
    (CIRCLE, Unicycle()),
    (ELLIPSE, Unicycle()),
    (SUPER2, Unicycle()),
    (CIRCLE, DoubleIntegrator(2)),
    (SUPER3, DoubleIntegrator(3)),
    ({**HALF, "normal": [0.0, 1.0, 1.0]}, DoubleIntegrator(3)),
    ({"type": "speed_limit", "name": "sp", "max": 1.5, "gains": [1.0]}, Unicycle()),
    ({"type": "speed_limit", "name": "sp", "max": 1.5, "gains": [1.0]}, DoubleIntegrator(2)),
    (
        {"type": "joint_position_limits", "lower": [-1.0, -1.5], "upper": [1.2, 1.0], "gains": [1, 1]},
        PlanarArm(),
    ),
    (
        {"type": "joint_velocity_limits", "lower": [-2.0, -2.0], "upper": [2.0, 2.5], "gains": [1]},
        PlanarArm(),
    ),
    (
        {"type": "joint_position_limits", "lower": [-3, -3], "upper": [3, 3], "gains": [1, 1]},
        DoubleIntegrator(2),
    ),
]


@pytest.mark.parametrize("cfg,dyn", CASES, ids=[f"{c['type']}-{type(d).__name__}" for c, d in CASES])
def test_rows_match_derivatives_along_trajectories(cfg: dict[str, Any], dyn: ControlAffine) -> None:
    """Degree 1: row(k=0) is h' = -G u + h. Degree 2: row(ks=kp=0) is h'', row(ks=1) - row(0) = h',
    row(kp=1) - row(0) = h; all checked against finite differences of h(x(t)) under constant u."""
    b = bound(cfg, dyn)
    rng = np.random.default_rng(5)
    e = 1e-4
    for _ in range(10):
        x = rng.uniform(-1.0, 1.0, dyn.n_state)
        u = rng.uniform(-1.0, 1.0, dyn.n_controls)
        G0, h0, hv = rows(b, dyn, x, 0.0, 0.0)
        G0, h0 = G0 / b.row_scale, h0 / b.row_scale
        hp, hm = values(b, dyn, rk4(dyn, x, u, e)), values(b, dyn, rk4(dyn, x, u, -e))
        hdot = (hp - hm) / (2 * e)
        if b.relative_degree == 1:
            np.testing.assert_allclose(-G0 @ u + h0, hdot, rtol=1e-5, atol=1e-6)
            G1, h1, _ = rows(b, dyn, x, 2.0, 0.0)
            np.testing.assert_allclose(h1 / b.row_scale - h0, 2.0 * hv, rtol=1e-12, atol=1e-12)
        else:
            hddot = (hp - 2 * hv + hm) / e**2
            np.testing.assert_allclose(-G0 @ u + h0, hddot, rtol=1e-4, atol=1e-4)
            _, hs, _ = rows(b, dyn, x, 1.0, 0.0)
            np.testing.assert_allclose(hs - h0, hdot, rtol=1e-5, atol=1e-6)
            _, hk, _ = rows(b, dyn, x, 0.0, 1.0)
            np.testing.assert_allclose(hk - h0, hv, rtol=1e-12, atol=1e-12)


def test_known_values() -> None:
    dd = DiffDrive(lookahead=0.05)
    x = np.array([0.2, 0.5, 0.0])  # look-ahead point (0.25, 0.5)
    wall = bound({**HALF, "margin": 0.1, "radius": 0.2}, dd)
    assert values(wall, dd, x)[0] == pytest.approx(1.0 - 0.25 - 0.2 - 0.1 - 0.05)
    # normal is normalised with its offset: 2x <= 2 is x <= 1
    wall2 = bound({**HALF, "normal": [2.0, 0.0], "offset": 2.0}, dd)
    assert values(wall2, dd, x)[0] == pytest.approx(1.0 - 0.25 - 0.05)
    circ = bound({**CIRCLE, "robot_radius": 0.2, "margin": 0.05}, dd)
    assert values(circ, dd, x)[0] == pytest.approx(0.75 - 0.3 - 0.2 - 0.05 - 0.05)
    di = DoubleIntegrator(2)
    # super-ellipsoid: h = 0 on its surface, h = -1 at its centre
    se = bound(SUPER2, di)
    assert values(se, di, np.array([0.6, -0.4, 0.0, 0.0]))[0] == pytest.approx(0.0, abs=1e-12)
    assert values(se, di, np.array([0.3, -0.4, 0.0, 0.0]))[0] == pytest.approx(-1.0)
    ell = bound(ELLIPSE, di)  # rotated ellipse: the end of its major axis is on the surface
    tip = np.array([-0.5 + 0.4 * math.cos(0.6), 0.2 + 0.4 * math.sin(0.6), 0.0, 0.0])
    assert values(ell, di, tip)[0] == pytest.approx(0.0, abs=1e-12)
    jl = bound(
        {"type": "joint_position_limits", "lower": [-1, -2], "upper": [1, 2], "margin": 0.1, "gains": [1, 1]},
        di,
    )
    np.testing.assert_allclose(values(jl, di, np.array([0.5, 0.0, 0.0, 0.0])), [1.4, 1.9, 0.4, 1.9])
    assert jl.row_names == ["joint_position_limits.lower[0]", "joint_position_limits.lower[1]",
                            "joint_position_limits.upper[0]", "joint_position_limits.upper[1]"]  # fmt: skip
    sp = bound({"type": "speed_limit", "max": 2.0, "gains": [1.0]}, di)
    assert values(sp, di, np.array([0.0, 0.0, 1.0, 1.0]))[0] == pytest.approx(2.0)


def test_laser_scan_picks_nearest_points_and_ignores_no_returns() -> None:
    dd = DiffDrive(lookahead=0.05)
    scan = bound({"type": "laser_scan", "name": "scan", "radius": 0.2, "margin": 0.05, "max_points": 4,
                  "gains": [1.0]}, dd)  # fmt: skip
    rng = np.random.default_rng(6)
    pts = rng.uniform(-3, 3, (50, 2))
    pts[3] = [np.nan, np.inf]
    x = np.array([0.1, -0.2, 0.3])
    G, h, hv = rows(scan, dd, x, 1.0, 0.0, {"scan_points": pts})
    p = x[:2] + 0.05 * np.array([math.cos(0.3), math.sin(0.3)])
    finite = pts[np.isfinite(pts).all(axis=1)]
    d = np.sort(np.linalg.norm(finite - p, axis=1))[:4]
    np.testing.assert_allclose(np.sort(hv), d - 0.3, atol=1e-12)
    assert scan.row_names == ["scan[0]", "scan[1]", "scan[2]", "scan[3]"]
    # fewer points than rows: spare rows are inert (0 u <= huge) and say so
    G, h, hv = rows(scan, dd, x, 1.0, 0.0, {"scan_points": pts[:2]})
    assert (G[2:] == 0).all() and (hv[2:] == NO_POINT).all() and (h[2:] >= 1e29).all()
    G, h, hv = rows(scan, dd, x, 1.0, 0.0, {"scan_points": np.zeros((0, 2))})
    assert (G == 0).all()
    with pytest.raises(InputError, match="scan_points"):
        rows(scan, dd, x, 1.0, 0.0, None)
    with pytest.raises(InputError, match=r"\(N, 2\)"):
        rows(scan, dd, x, 1.0, 0.0, {"scan_points": np.zeros((5, 3))})


def test_user_state_barrier_via_registry() -> None:
    class Band(StateBarrier):
        """|x0| <= 1 as h = 1 - x0^2 (relative degree 1 for a double integrator's velocity)."""

        type_name = "test_band"
        keys = ("index",)

        def __init__(self, cfg: Any, where: str) -> None:
            super().__init__(cfg, where)
            self.i = int(cfg.get("index", 0))

        def value(self, x: np.ndarray) -> float:
            return 1.0 - x[self.i] ** 2

        def gradient(self, x: np.ndarray) -> np.ndarray:
            g = np.zeros_like(x)
            g[self.i] = -2 * x[self.i]
            return g

    if "test_band" not in BARRIERS:
        register_barrier("test_band", Band)
    di = DoubleIntegrator(2)
    b = bound({"type": "test_band", "index": 2, "gains": [3.0]}, di)
    x = np.array([0.0, 0.0, 0.5, 0.0])
    G, h, hv = rows(b, di, x, 3.0, 0.0)
    # h' = -2 v0 a0: row -(-1) a0 <= 3 * 0.75
    np.testing.assert_allclose(G, [[1.0, 0.0]])
    assert h[0] == pytest.approx(2.25) and hv[0] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="already registered"):
        register_barrier("test_band", Band)
    with pytest.raises(ValueError, match="Barrier subclass"):
        register_barrier("nope", int)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cfg,dyn,match",
    [
        ({"type": "teleport"}, DiffDrive(), "type 'teleport' unknown"),
        ({"name": "x"}, DiffDrive(), "'type'"),
        ({**HALF, "margin": -0.1}, DiffDrive(), "margin"),
        ({**HALF, "gains": [0.0]}, DiffDrive(), "gains.*> 0"),
        ({**HALF, "gains": [1.0, 1.0]}, DiffDrive(), "relative degree 1 needs 1 gain"),
        ({**HALF, "gains": [1.0]}, Unicycle(), "relative degree 2 needs 2 gain"),
        ({k: v for k, v in HALF.items() if k != "gains"}, DiffDrive(), "give 1 class-K gain"),
        ({**HALF, "normal": [0.0, 0.0]}, DiffDrive(), "nonzero"),
        ({**HALF, "normal": [1.0, 0.0, 0.0]}, DiffDrive(), "position is 2-D"),
        ({**HALF, "colour": "red"}, DiffDrive(), "unknown key"),
        ({k: v for k, v in CIRCLE.items() if k != "radius"}, DiffDrive(), "missing 'radius'"),
        ({**CIRCLE, "center": [1.0, "a"]}, DiffDrive(), "list of numbers"),
        ({**SUPER2, "exponent": 1.5}, DiffDrive(), "exponent"),
        ({**SUPER2, "axes": [0.3, -0.1]}, DiffDrive(), "axes"),
        ({**SUPER3, "angle": 0.3}, DoubleIntegrator(3), "2-D only"),
        ({**ELLIPSE, "exponent": 4}, DiffDrive(), "unknown key"),
        ({"type": "laser_scan", "max_points": 0, "gains": [1.0]}, DiffDrive(), "max_points"),
        ({"type": "laser_scan", "gains": [1.0]}, DoubleIntegrator(3), "2-D"),
        ({"type": "speed_limit", "max": 1.0, "gains": [1.0]}, DiffDrive(), "controls box"),
        (
            {"type": "joint_position_limits", "lower": [0], "upper": [1], "gains": [1, 1]},
            DiffDrive(),
            "mechanical",
        ),
        (
            {"type": "joint_position_limits", "lower": [1, 0], "upper": [0, 1], "gains": [1, 1]},
            PlanarArm(),
            "lower",
        ),
        (
            {"type": "joint_velocity_limits", "lower": [-1], "upper": [1], "gains": [1]},
            PlanarArm(),
            "2 joints",
        ),
        ({**CIRCLE, "priority": 0.5}, DiffDrive(), "priority"),
    ],
)
def test_configuration_errors_name_the_problem(cfg: dict[str, Any], dyn: ControlAffine, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_barrier(cfg, "safety_filter.b").bind(dyn)


def test_merged_barriers_equal_separate_ones() -> None:
    """Consecutive same-type barriers are evaluated as one block: same rows as one by one."""
    from barriernet.barriers import PointGroup

    uni = Unicycle()
    cfgs = [
        {**CIRCLE, "name": f"c{i}", "center": c, "gains": [1.0, 2.0]}
        for i, c in enumerate([[1.0, 0.5], [-0.7, 1.1], [0.1, -1.2]])
    ]
    bs = [bound(c, uni) for c in cfgs]
    merged = bs[0].merge(bs[1:])
    assert merged.n_rows == 3 and merged.row_names == ["c0", "c1", "c2"]
    x = np.array([0.2, 0.1, 0.4, 0.7])
    kin = uni.kinematics(x, uni.new_kinematics())
    hv = np.zeros(3)
    grp = PointGroup([merged], hv)  # type: ignore[list-item]
    G, h = np.zeros((3, 2)), np.zeros(3)
    grp.fill(x, kin, np.full(3, 3.0), np.full(3, 2.0), None, G, h, hv)
    for i, b in enumerate(bs):
        Gi, hi, hvi = rows(b, uni, x, 3.0, 2.0)
        np.testing.assert_allclose(G[i], Gi[0], atol=1e-14)
        np.testing.assert_allclose(h[i], hi[0], atol=1e-14)
        np.testing.assert_allclose(hv[i], hvi[0], atol=1e-14)
