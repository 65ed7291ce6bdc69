"""arm model and environment: documented limits in the MJCF, torque clipping, dynamics, ground truth."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from lnn_control.sim import models as M
from lnn_control.sim.arm import ArmEnv, joint_margins


def test_mjcf_limits_are_the_documented_numbers() -> None:
    m = mujoco.MjModel.from_xml_string(M.arm_mjcf())
    assert m.nq == m.nv == m.nu == 3
    np.testing.assert_allclose(m.jnt_range, [[-2.6, 2.6], [-1.9, 1.9], [-2.3, 2.3]])
    np.testing.assert_allclose(m.actuator_ctrlrange, [[-20, 20], [-14, 14], [-6, 6]])
    np.testing.assert_array_equal(M.ARM_DQ_LIMIT, [2.5, 2.5, 2.5])
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, i) for i in range(3)]
    assert names == list(M.ARM_JOINT_NAMES)
    np.testing.assert_allclose(m.jnt_axis, [[0, 0, 1], [0, 1, 0], [0, 1, 0]])
    link3 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "link3")
    link2 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "link2")
    assert m.body_pos[link2][2] == pytest.approx(0.40) and m.body_pos[link3][0] == pytest.approx(0.35)
    tool = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tool")
    assert m.site_pos[tool][0] == pytest.approx(0.25)


def test_forward_kinematics_reference() -> None:
    env = ArmEnv()
    tool = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, "tool")
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.uniform(M.ARM_Q_LOWER, M.ARM_Q_UPPER)
        env.reset(q0=q)
        l1, l2, l3 = M.ARM_LINK_LENGTHS
        r = l2 * math.cos(q[1]) + l3 * math.cos(q[1] + q[2])
        z = 0.05 + l1 - l2 * math.sin(q[1]) - l3 * math.sin(q[1] + q[2])
        np.testing.assert_allclose(
            env.data.site_xpos[tool], [r * math.cos(q[0]), r * math.sin(q[0]), z], atol=1e-12
        )
        assert env.min_link_height(q) <= z + 1e-12


def test_torques_are_clipped_at_the_actuator() -> None:
    env = ArmEnv()
    env.reset(q0=np.zeros(3))
    obs = env.step([100.0, -100.0, 3.0], 0.002)
    np.testing.assert_allclose(obs.effort, [20.0, -14.0, 3.0])
    gt = env.ground_truth()
    assert gt[3] == pytest.approx(100.0 / 14.0)  # the command, not the clipped torque, is reported


def test_gravity_compensation_holds_still_and_mass_matrix_is_spd() -> None:
    env = ArmEnv()
    q0 = np.array([0.3, 0.4, -0.5])
    env.reset(q0=q0)
    tau_g = env.data.qfrc_bias[:3].copy()
    assert tau_g[0] == pytest.approx(0.0, abs=1e-12) and tau_g[1] < 0  # links ahead of joint2 pull down
    for _ in range(100):
        env.step(tau_g, 0.01)
    np.testing.assert_allclose(env.q, q0, atol=1e-6)
    mm = env.mass_matrix()
    np.testing.assert_allclose(mm, mm.T, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(mm) > 0)
    # Zero torque: the arm falls (joint2 angle increases = tips downwards).
    env.reset(q0=q0)
    env.step(np.zeros(3), 0.1)
    assert env.q[1] > q0[1] + 0.01


def test_joint_limits_are_hard_stops_and_margins() -> None:
    np.testing.assert_allclose(joint_margins(np.array([2.5, 0.0, -2.0])), [0.1, 1.9, 0.3])
    env = ArmEnv()
    env.reset(q0=np.array([2.4, 0.0, 0.0]))
    for _ in range(100):
        env.step([20.0, 0.0, 0.0], 0.01)
    assert env.q[0] < 2.6 + 0.05  # soft constraint, a little penetration at full torque
    assert env.ground_truth()[0] < 0.05


def test_goal_reached_and_ground_truth_layout() -> None:
    env = ArmEnv()
    env.reset(q0=np.array([0.1, 0.2, 0.3]), goal=np.array([0.12, 0.2, 0.3]))
    assert env.goal_reached()
    gt = env.ground_truth()
    assert gt.shape == (7,) and gt[4] == 0.0 and gt[6] == pytest.approx(0.02)
    env.set_goal(np.array([0.5, 0.2, 0.3]))
    assert not env.goal_reached()


def test_floor_collision_flag() -> None:
    env = ArmEnv()
    env.reset(q0=np.array([0.0, 1.5, 0.5]))  # tool below the floor plane: contact
    assert env.min_link_height(env.q) < 0
    assert env.ground_truth()[4] == 1.0


def test_bad_input_names_the_argument() -> None:
    env = ArmEnv()
    with pytest.raises(ValueError, match="command"):
        env.step([1.0, 2.0], 0.01)
    with pytest.raises(ValueError, match="command"):
        env.step([1.0, np.nan, 0.0], 0.01)
    with pytest.raises(ValueError, match="dt"):
        env.step([0.0, 0.0, 0.0], -1.0)
    with pytest.raises(ValueError, match="q0"):
        env.reset(q0=np.array([3.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="goal"):
        env.set_goal(np.zeros(2))
    with pytest.raises(ValueError, match="noise_std"):
        ArmEnv(noise_std=-0.1)
