"""MuJoCo manipulator's constrained point (``dynamics.point``) and the arm's floor barrier.

p, v, a0 + B u against finite differences of MuJoCo site positions and MuJoCo's forward dynamics;
name errors; the filter with config/arm.yaml keeps the tool off the floor in the real MuJoCo arm
under a nominal command that pushes it down.
"""

from __future__ import annotations

import pathlib

import mujoco
import numpy as np
import pytest

from barriernet.dynamics import MujocoManipulator, make_dynamics
from barriernet.safety_filter import SafetyFilter
from lnn_control.config import load_filter_config
from lnn_control.sim.arm import ArmEnv
from lnn_control.sim.models import ARM_Q_LOWER, ARM_Q_UPPER

ROOT = pathlib.Path(__file__).resolve().parents[2]


def arm_filter_config() -> dict:
    return load_filter_config(ROOT / "config" / "arm.yaml")


@pytest.mark.parametrize("point", [{"site": "tool"}, {"body": "link3"}])
def test_point_matches_finite_differences_of_mujoco(point: dict) -> None:
    """p = position, v = dp/dt, a0 + B u = d2p/dt2 along the trajectory MuJoCo's forward dynamics gives."""
    dyn = make_dynamics({"type": "manipulator", "robot": "arm", "point": point})
    assert isinstance(dyn, MujocoManipulator) and dyn.point_dim == 3 and dyn.point_order == 2
    m = dyn.model
    m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT)  # the filter's model has no contacts
    d = mujoco.MjData(m)
    kind, name = next(iter(point.items()))
    dp = mujoco.MjData(m)  # positions on their own data: d keeps the state under test
    if kind == "site":
        idx = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, name)
        body = int(m.site_bodyid[idx])
    else:
        idx = body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)

    def pos(q: np.ndarray) -> np.ndarray:
        dp.qpos[:] = q
        mujoco.mj_kinematics(m, dp)
        return (dp.site_xpos if kind == "site" else dp.xpos)[idx].copy()

    rng = np.random.default_rng(11)
    kin = dyn.new_kinematics()
    e = 1e-4
    for _ in range(25):
        q = rng.uniform(ARM_Q_LOWER + 0.1, ARM_Q_UPPER - 0.1)
        dq = rng.uniform(-2.5, 2.5, 3)
        tau = rng.uniform(-6.0, 6.0, 3)
        x = np.concatenate([q, dq])
        dyn.kinematics(x, kin)
        assert not kin.drift_zero
        # MuJoCo's own acceleration under tau (inside the limits, no contacts: no constraint force)
        d.qpos[:], d.qvel[:], d.ctrl[:] = q, dq, tau
        mujoco.mj_forward(m, d)
        assert d.nefc == 0
        qdd = d.qacc.copy()
        np.testing.assert_allclose(kin.qdd0 + kin.qddB @ tau, qdd, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(kin.p, pos(q), atol=1e-14)
        # q(t) = q + t dq + t^2/2 qdd has q' = dq, q'' = qdd at t = 0: p'' there is what a0 + B tau predicts
        pp, pm = pos(q + e * dq + 0.5 * e * e * qdd), pos(q - e * dq + 0.5 * e * e * qdd)
        p0 = pos(q)
        ev = 1e-6  # first derivative: a smaller step (truncation ~ ev^2 |p'''|)
        vp, vm = pos(q + ev * dq + 0.5 * ev * ev * qdd), pos(q - ev * dq + 0.5 * ev * ev * qdd)
        np.testing.assert_allclose((vp - vm) / (2 * ev), kin.v, atol=1e-8)
        np.testing.assert_allclose((pp - 2 * p0 + pm) / e**2, kin.a0 + kin.B @ tau, rtol=1e-5, atol=1e-5)
        # B alone: p'' is linear in tau, its change is J (qacc(tau2) - qacc(tau)) (exact)
        tau2 = tau + np.array([1.0, -0.5, 0.25])
        d.qpos[:], d.qvel[:], d.ctrl[:] = q, dq, tau2
        mujoco.mj_forward(m, d)
        jac = np.zeros((3, 3))
        mujoco.mj_jac(m, d, jac, None, kin.p, body)
        np.testing.assert_allclose(kin.B @ (tau2 - tau), jac @ (d.qacc - qdd), atol=1e-9)


def test_point_default_none_and_joint_terms_unchanged() -> None:
    plain = make_dynamics({"type": "manipulator", "robot": "arm"})
    pointed = make_dynamics({"type": "manipulator", "robot": "arm", "point": {"site": "tool"}})
    assert plain.point_order == 0 and plain.point_dim == 0
    x = np.array([0.3, 0.5, -0.4, 0.2, 0.1, -0.3])
    a, b = plain.kinematics(x, plain.new_kinematics()), pointed.kinematics(x, pointed.new_kinematics())
    np.testing.assert_array_equal(a.qdd0, b.qdd0)
    np.testing.assert_array_equal(a.qddB, b.qddB)


@pytest.mark.parametrize(
    ("point", "match"),
    [
        ({"site": "gripper"}, r"dynamics\.point\.site: no site named 'gripper'.*tool"),
        ({"body": "link9"}, r"dynamics\.point\.body: no body named 'link9'.*link3"),
        ({"frame": "tool"}, r"dynamics\.point: expected"),
        ({"site": "tool", "body": "link3"}, r"dynamics\.point: expected"),
        ("tool", r"dynamics\.point: expected"),
        ({"site": ""}, r"dynamics\.point\.site"),
    ],
)
def test_point_errors_name_the_key(point: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_dynamics({"type": "manipulator", "robot": "arm", "point": point})


def test_half_space_on_manipulator_point_builds_rows() -> None:
    """The floor row is the HOCBF of h = z - 0.05: G = -e_z' B, h = a0_z + (p1 + p2) v_z + p1 p2 h."""
    f = SafetyFilter.from_config(arm_filter_config())
    assert "floor" in f.constraint_names
    x = np.array([0.2, 1.2, 0.6, 0.1, 0.8, 0.5])
    G, h, hv = f.constraints(x)
    i = f.constraint_names.index("floor")
    kin = f.dynamics.kinematics(x, f.dynamics.new_kinematics())
    z = kin.p[2]
    assert hv[i] == pytest.approx(z - 0.05, abs=1e-12)
    np.testing.assert_allclose(G[i], -kin.B[2], atol=1e-12)
    assert h[i] == pytest.approx(kin.a0[2] + 4.0 * kin.v[2] + 4.0 * (z - 0.05), abs=1e-9)


def test_filter_keeps_tool_off_floor_in_mujoco_closed_loop() -> None:
    """Real MuJoCo arm at 100 Hz; the nominal torque drives the tool into the floor; filter on/off."""
    cfg = arm_filter_config()

    def run(filtered: bool) -> tuple[float, bool, int]:
        f = SafetyFilter.from_config(cfg)
        env = ArmEnv()
        env.reset(q0=np.array([0.4, 0.5, 0.3]))
        tool = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, "tool")
        zmin, touched, fallbacks = np.inf, False, 0
        for _ in range(300):
            q, dq = env.q, env.dq
            # push joint2 and joint3 downwards (positive pitch tips the links down), damped
            u_nom = np.array([2.0 - 2.0 * dq[0], 12.0 - 1.0 * dq[1], 5.0 - 0.5 * dq[2]])
            u = u_nom
            if filtered:
                u, rep = f.filter(np.concatenate([q, dq]), u_nom)
                fallbacks += rep.fallback_used
                assert np.all(u <= f.upper + 1e-12) and np.all(u >= f.lower - 1e-12)
            env.step(u, 0.01)
            zmin = min(zmin, float(env.data.site_xpos[tool][2]))
            touched |= env.in_contact()
            assert np.all(env.q >= ARM_Q_LOWER) and np.all(env.q <= ARM_Q_UPPER)
        return zmin, touched, fallbacks

    z_off, touched_off, _ = run(False)
    assert touched_off and z_off < 0.035  # the nominal command really drives link3 into the floor
    z_on, touched_on, fallbacks = run(True)
    assert not touched_on and fallbacks == 0
    assert z_on > 0.03 + 0.015  # radius + most of the 0.02 m margin
    assert z_on < 0.08  # and it is pushed right down to the barrier: the filter did the work


def test_point_barrier_without_point_says_how_to_add_one() -> None:
    cfg = dict(arm_filter_config())
    cfg["dynamics"] = {"type": "manipulator", "robot": "arm"}
    with pytest.raises(ValueError, match=r"floor.*dynamics\.point"):
        SafetyFilter.from_config(cfg)
