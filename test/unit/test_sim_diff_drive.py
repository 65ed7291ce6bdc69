"""diff_drive model and environment: MJCF constants, scan vs an analytic ray caster, kinematics."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from lnn_control.sim import models as M
from lnn_control.sim.diff_drive import DiffDriveEnv, clearance, sample_free_position


def test_constants_are_the_documented_numbers() -> None:
    assert M.ROOM_HALF_SIZE == 3.0 and M.DIFF_DRIVE_RADIUS == 0.20
    assert (M.DIFF_DRIVE_V_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT) == (0.6, 2.0)
    np.testing.assert_array_equal(
        M.OBSTACLES, [[0.9, 0.3, 0.35], [-0.7, 1.1, 0.30], [0.1, -1.2, 0.40], [-1.2, -0.9, 0.25]]
    )
    assert (M.SCAN_BEAMS, M.SCAN_RANGE_MIN, M.SCAN_RANGE_MAX, M.GOAL_TOLERANCE) == (72, 0.05, 4.0, 0.15)
    with pytest.raises(ValueError):
        M.OBSTACLES[0, 0] = 1.0  # shared constants are read-only


def test_mjcf_geoms_match_constants() -> None:
    m = mujoco.MjModel.from_xml_string(M.diff_drive_mjcf())
    for i, (x, y, r) in enumerate(M.OBSTACLES):
        g = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"obstacle{i}")
        np.testing.assert_allclose(m.geom_pos[g][:2], [x, y])
        assert m.geom_size[g][0] == pytest.approx(r)
    chassis = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "chassis")
    assert m.geom_size[chassis][0] == pytest.approx(M.DIFF_DRIVE_RADIUS)
    wall = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "wall_px")
    assert m.geom_pos[wall][0] - m.geom_size[wall][0] == pytest.approx(M.ROOM_HALF_SIZE)
    assert m.opt.timestep == M.SIM_TIMESTEP


def reference_scan(pose: np.ndarray) -> np.ndarray:
    """Analytic ranges: nearest positive intersection of each beam with the circles and the wall planes."""
    x, y, th = pose
    out = np.full(M.SCAN_BEAMS, np.inf)
    for k in range(M.SCAN_BEAMS):
        a = th + 2 * math.pi * k / M.SCAN_BEAMS
        d = np.array([math.cos(a), math.sin(a)])
        best = np.inf
        for cx, cy, r in M.OBSTACLES:
            f = np.array([x - cx, y - cy])
            b = f @ d
            disc = b * b - (f @ f - r * r)
            if disc >= 0:
                t = -b - math.sqrt(disc)
                if t > 0:
                    best = min(best, t)
        for axis, p in ((0, x), (1, y)):
            if abs(d[axis]) > 1e-12:
                for wall in (M.ROOM_HALF_SIZE, -M.ROOM_HALF_SIZE):
                    t = (wall - p) / d[axis]
                    if t > 0:
                        best = min(best, t)
        out[k] = best if best <= M.SCAN_RANGE_MAX else np.inf
    return out


def test_scan_matches_analytic_ray_casting() -> None:
    rng = np.random.default_rng(3)
    env = DiffDriveEnv()
    for _ in range(10):
        xy = sample_free_position(rng, 0.05)
        pose = np.array([xy[0], xy[1], rng.uniform(-math.pi, math.pi)])
        obs = env.reset(start=pose)
        ref = reference_scan(pose)
        np.testing.assert_array_equal(np.isinf(obs.scan), np.isinf(ref))
        ok = np.isfinite(ref)
        np.testing.assert_allclose(obs.scan[ok], ref[ok], atol=1e-6)
    # A known beam: from the origin along +x the first hit is obstacle 0 at x = 0.9 - sqrt(0.35^2 - 0.3^2).
    obs = env.reset(start=np.zeros(3))
    assert obs.scan[0] == pytest.approx(0.9 - math.sqrt(0.35**2 - 0.3**2), abs=1e-9)
    assert obs.scan[18] == pytest.approx(3.0, abs=1e-9)  # +y wall


def test_unicycle_kinematics_in_free_space() -> None:
    env = DiffDriveEnv()
    env.reset(start=np.array([-2.0, 2.0, 0.0]))
    for _ in range(50):
        env.step([0.4, 0.0], 0.02)
    np.testing.assert_allclose(env.pose, [-2.0 + 0.4 * 1.0, 2.0, 0.0], atol=1e-9)
    obs = env.observation()
    np.testing.assert_allclose(obs.twist, [0.4, 0.0], atol=1e-9)
    env.reset(start=np.array([-2.0, 2.0, 0.0]))
    for _ in range(25):
        env.step([0.0, 1.0], 0.02)
    assert env.pose[2] == pytest.approx(0.5, abs=1e-9)
    np.testing.assert_allclose(env.pose[:2], [-2.0, 2.0], atol=1e-9)
    # Constant (v, omega) traces a circle of radius v / omega (Euler at 2 ms: O(dt) error).
    env.reset(start=np.array([-2.0, 2.0, 0.0]))
    for _ in range(50):
        env.step([0.3, 1.0], 0.02)
    exact = [-2.0 + 0.3 * math.sin(1.0), 2.0 + 0.3 * (1 - math.cos(1.0))]
    np.testing.assert_allclose(env.pose[:2], exact, atol=2e-3)


def test_commands_are_clipped_to_limits() -> None:
    env = DiffDriveEnv()
    env.reset(start=np.array([-2.0, 2.0, 0.0]))
    env.step([5.0, -9.0], 0.1)
    np.testing.assert_allclose(env.command, [M.DIFF_DRIVE_V_LIMIT, -M.DIFF_DRIVE_OMEGA_LIMIT])


def test_ground_truth_clearance_and_collision() -> None:
    env = DiffDriveEnv()
    env.reset(start=np.array([0.0, 0.3, 0.0]), goal=np.array([0.0, 0.0]))
    gt = env.ground_truth()
    assert gt[0] == pytest.approx(0.9 - 0.35 - 0.2)  # straight to obstacle 0's surface
    assert gt[1] == 0.0 and gt[2] == pytest.approx(0.3)
    for _ in range(100):  # drive into the pillar
        env.step([0.5, 0.0], 0.02)
    gt = env.ground_truth()
    assert gt[1] == 1.0 and gt[0] <= 0.0 and env.in_contact()
    # The contact stops the robot: it does not pass through the pillar.
    assert env.pose[0] < 0.9 - 0.35
    assert clearance(np.array([2.9, 0.0])) == pytest.approx(0.1 - 0.2)


def test_goal_reached_and_noise_reproducible() -> None:
    env = DiffDriveEnv()
    env.reset(start=np.array([1.0, 2.0, 0.0]), goal=np.array([1.1, 2.0]))
    assert env.goal_reached()
    a = DiffDriveEnv(scan_noise_std=0.01, odom_noise_std=0.01, seed=5)
    b = DiffDriveEnv(scan_noise_std=0.01, odom_noise_std=0.01, seed=5)
    oa, ob = a.reset(start=np.zeros(3)), b.reset(start=np.zeros(3))
    np.testing.assert_array_equal(oa.scan, ob.scan)
    clean = DiffDriveEnv().reset(start=np.zeros(3))
    ok = np.isfinite(clean.scan)
    diff = oa.scan[ok] - clean.scan[ok]
    assert 0.005 < diff.std() < 0.02


def test_bad_input_names_the_argument() -> None:
    env = DiffDriveEnv()
    with pytest.raises(ValueError, match="command"):
        env.step([float("nan"), 0.0], 0.02)
    with pytest.raises(ValueError, match="command"):
        env.step([0.1], 0.02)
    with pytest.raises(ValueError, match="dt"):
        env.step([0.1, 0.0], 0.0)
    with pytest.raises(ValueError, match="start"):
        env.reset(start=np.array([0.9, 0.3, 0.0]))
    with pytest.raises(ValueError, match="goal"):
        env.set_goal(np.array([np.inf, 0.0]))
    with pytest.raises(ValueError, match="noise"):
        DiffDriveEnv(scan_noise_std=-1.0)
    with pytest.raises(ValueError, match="robot"):
        M.mjcf_for("tank")


def test_make_env_by_name() -> None:
    from lnn_control.sim import ArmEnv, make_env

    env = make_env("diff_drive", noise_std=0.02, seed=1)
    assert isinstance(env, DiffDriveEnv) and env.scan_noise_std == env.odom_noise_std == 0.02
    assert isinstance(make_env("arm"), ArmEnv)
    with pytest.raises(ValueError, match="robot must be one of"):
        make_env("tank")
