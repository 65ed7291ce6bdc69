"""barriernet.dynamics: exact models, point / joint kinematics against finite differences,
MuJoCo manipulator against MuJoCo's own forward dynamics and an analytic arm, registry, errors."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from barriernet.dynamics import (
    DYNAMICS,
    CallableDynamics,
    ControlAffine,
    DiffDrive,
    DoubleIntegrator,
    Kinematics,
    MujocoManipulator,
    PlanarArm,
    Unicycle,
    make_dynamics,
    register_dynamics,
)


def rk4(dyn: ControlAffine, x: np.ndarray, u: np.ndarray, t: float, steps: int = 20) -> np.ndarray:
    """x(t) under constant u (t may be negative: backwards)."""
    dt = t / steps
    for _ in range(steps):
        k1 = dyn.xdot(x, u)
        k2 = dyn.xdot(x + 0.5 * dt * k1, u)
        k3 = dyn.xdot(x + 0.5 * dt * k2, u)
        k4 = dyn.xdot(x + dt * k3, u)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def point(dyn: ControlAffine, x: np.ndarray) -> np.ndarray:
    return dyn.kinematics(x, dyn.new_kinematics()).p.copy()


def test_unicycle_known_answer() -> None:
    dyn = Unicycle()
    x = np.array([1.0, 2.0, math.pi / 2, 0.5])
    np.testing.assert_allclose(dyn.xdot(x, [0.3, -1.0]), [0.0, 0.5, 0.3, -1.0], atol=1e-15)
    np.testing.assert_allclose(dyn.brake(x), [0.0, -1.0])  # brake_gain 2 * v 0.5


def test_diff_drive_known_answer_and_lookahead() -> None:
    dyn = DiffDrive(lookahead=0.1)
    x = np.array([1.0, -1.0, 0.0])
    np.testing.assert_allclose(dyn.xdot(x, [0.5, 2.0]), [0.5, 0.0, 2.0])
    k = dyn.kinematics(x, dyn.new_kinematics())
    np.testing.assert_allclose(k.p, [1.1, -1.0])
    np.testing.assert_allclose(k.J, [[1.0, 0.0], [0.0, 0.1]])  # omega moves the look-ahead point sideways
    assert dyn.point_inflation == 0.1 and k.point_order == 1


@pytest.mark.parametrize("dim", [2, 3])
def test_double_integrator_known_answer(dim: int) -> None:
    dyn = DoubleIntegrator(dim=dim)
    x = np.arange(2 * dim, dtype=float)
    u = np.ones(dim) * 3
    np.testing.assert_allclose(dyn.xdot(x, u), np.concatenate([x[dim:], u]))
    k = dyn.kinematics(x, dyn.new_kinematics())
    np.testing.assert_allclose(k.q, x[:dim])
    np.testing.assert_allclose(k.qddB, np.eye(dim))


@pytest.mark.parametrize(
    "dyn", [Unicycle(), DiffDrive(lookahead=0.07), DoubleIntegrator(2), DoubleIntegrator(3)]
)
def test_point_kinematics_match_finite_differences(dyn: ControlAffine) -> None:
    """p' (order 1: c + J u; order 2: v) and p'' (order 2: a0 + B u) from trajectories."""
    rng = np.random.default_rng(1)
    e = 1e-3
    for _ in range(20):
        x = rng.uniform(-2, 2, dyn.n_state)
        u = rng.uniform(-2, 2, dyn.n_controls)
        k = dyn.kinematics(x, dyn.new_kinematics())
        pp, p0, pm = point(dyn, rk4(dyn, x, u, e)), point(dyn, x), point(dyn, rk4(dyn, x, u, -e))
        pdot = (pp - pm) / (2 * e)
        if k.point_order == 1:
            np.testing.assert_allclose(pdot, k.c + k.J @ u, atol=1e-6)
        else:
            np.testing.assert_allclose(pdot, k.v, atol=1e-6)
            np.testing.assert_allclose((pp - 2 * p0 + pm) / e**2, k.a0 + k.B @ u, atol=1e-4)


def arm_data(dyn: MujocoManipulator) -> tuple[mujoco.MjModel, mujoco.MjData]:
    return dyn.model, mujoco.MjData(dyn.model)


def test_mujoco_arm_matches_mujoco_forward() -> None:
    """q'' = qdd0 + qddB tau equals MuJoCo's own forward dynamics (away from limits and contacts)."""
    dyn = make_dynamics({"type": "manipulator", "robot": "arm"})
    assert isinstance(dyn, MujocoManipulator) and dyn.n_joints == 3
    m, d = arm_data(dyn)
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(30):
        q = rng.uniform([-2.0, -0.3, -0.5], [2.0, 0.3, 0.5])
        dq = rng.uniform(-2, 2, 3)
        tau = rng.uniform(-5, 5, 3)
        d.qpos[:], d.qvel[:], d.ctrl[:] = q, dq, tau
        mujoco.mj_forward(m, d)
        if d.ncon or d.nefc:
            continue  # contact or limit force: not part of the filter's model
        k = dyn.kinematics(np.concatenate([q, dq]), dyn.new_kinematics())
        np.testing.assert_allclose(k.qdd0 + k.qddB @ tau, d.qacc, rtol=1e-9, atol=1e-9)
        # and the generic f, g agree with the kinematics record
        x = np.concatenate([q, dq])
        np.testing.assert_allclose(dyn.f(x)[3:] + dyn.g(x)[3:] @ tau, d.qacc, rtol=1e-9, atol=1e-9)
        checked += 1
    assert checked >= 20


def test_mujoco_bias_is_qfrc_bias_minus_passive() -> None:
    dyn = MujocoManipulator(robot="arm")
    m, d = arm_data(dyn)
    q, dq = np.array([0.3, 0.5, -0.4]), np.array([0.2, -0.1, 0.3])
    d.qpos[:], d.qvel[:] = q, dq
    mujoco.mj_forward(m, d)
    np.testing.assert_allclose(dyn.bias(np.concatenate([q, dq])), d.qfrc_bias - d.qfrc_passive, atol=1e-12)


def planar_mjcf(l1: float, l2: float, m1: float, m2: float) -> str:
    """Two-link planar arm in the x-z plane with (nearly) point masses at the link tips."""
    return f"""
<mujoco>
  <option gravity="0 0 -9.81"/>
  <worldbody>
    <body>
      <inertial pos="0 0 0" mass="1e-9" diaginertia="1e-12 1e-12 1e-12"/>
      <joint name="j1" type="hinge" axis="0 -1 0"/>
      <body pos="{l1} 0 0">
        <inertial pos="0 0 0" mass="{m1}" diaginertia="1e-12 1e-12 1e-12"/>
        <joint name="j2" type="hinge" axis="0 -1 0"/>
        <body pos="{l2} 0 0">
          <inertial pos="0 0 0" mass="{m2}" diaginertia="1e-12 1e-12 1e-12"/>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>"""


def test_analytic_planar_arm_matches_mujoco() -> None:
    """Reference test: closed-form M(q) and bias against MuJoCo on the same arm."""
    arm = PlanarArm(link_lengths=(0.4, 0.3), masses=(1.0, 0.5))
    mj = MujocoManipulator(mjcf=planar_mjcf(0.4, 0.3, 1.0, 0.5))
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.uniform(-2, 2, 4)
        Ma, ba = arm._mb(x[:2], x[2:])
        Mm, bm = mj._mb(x[:2], x[2:])
        np.testing.assert_allclose(Ma, Mm, atol=1e-9)
        np.testing.assert_allclose(ba, bm, atol=1e-9)
        np.testing.assert_allclose(arm.f(x), mj.f(x), atol=1e-8)
        np.testing.assert_allclose(arm.g(x), mj.g(x), atol=1e-8)


def test_manipulator_joint_kinematics_fd() -> None:
    arm = PlanarArm(joint_damping=0.1)
    rng = np.random.default_rng(4)
    x, u = rng.uniform(-1, 1, 4), rng.uniform(-1, 1, 2)
    k = arm.kinematics(x, arm.new_kinematics())
    e = 1e-4
    dqdt = (rk4(arm, x, u, e)[2:] - rk4(arm, x, u, -e)[2:]) / (2 * e)
    np.testing.assert_allclose(dqdt, k.qdd0 + k.qddB @ u, rtol=1e-6, atol=1e-7)


def test_callable_dynamics_numpy_and_torch() -> None:
    torch = pytest.importorskip("torch")

    def f(x: np.ndarray) -> object:
        return torch.tensor([x[1], 0.0], dtype=torch.float64)

    dyn = CallableDynamics(f, lambda x: [[0.0], [1.0]], 2, 1, joint_positions=[0], joint_velocities=[1])
    np.testing.assert_allclose(dyn.xdot(np.array([1.0, 2.0]), [3.0]), [2.0, 3.0])
    k = dyn.kinematics(np.array([1.0, 2.0]), dyn.new_kinematics())
    assert k.q.tolist() == [1.0] and k.dq.tolist() == [2.0] and k.qddB.tolist() == [[1.0]]
    bad = CallableDynamics(lambda x: np.zeros(3), lambda x: np.zeros((2, 1)), 2, 1)
    with pytest.raises(ValueError, match="f returned shape"):
        bad.f(np.zeros(2))


def test_registry_user_class_and_errors() -> None:
    class Scalar(ControlAffine):
        n_state, n_controls = 1, 1

        def __init__(self, a: float = -1.0) -> None:
            self.a = a

        def f(self, x: np.ndarray) -> np.ndarray:
            return self.a * x

        def g(self, x: np.ndarray) -> np.ndarray:
            return np.ones((1, 1))

    name = "test_scalar_dynamics"
    if name not in DYNAMICS:
        register_dynamics(name, Scalar)
    dyn = make_dynamics({"type": name, "a": -2.0})
    assert isinstance(dyn, Scalar) and dyn.a == -2.0
    with pytest.raises(ValueError, match="already registered"):
        register_dynamics(name, Scalar)
    with pytest.raises(ValueError, match="ControlAffine subclass"):
        register_dynamics("x", dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dynamics.type 'warp' unknown"):
        make_dynamics({"type": "warp"})
    with pytest.raises(ValueError, match="'type'"):
        make_dynamics({"lookahead": 0.1})
    with pytest.raises(ValueError, match="lookahead"):
        make_dynamics({"type": "diff_drive", "lookahead": 0.0})
    with pytest.raises(ValueError, match="dim"):
        make_dynamics({"type": "double_integrator", "dim": 0})
    with pytest.raises(ValueError, match="diff_drive.*speed"):
        make_dynamics({"type": "diff_drive", "speed": 1})
    with pytest.raises(ValueError, match="exactly one of robot"):
        make_dynamics({"type": "manipulator"})
    with pytest.raises(ValueError, match="dynamics.robot"):
        make_dynamics({"type": "manipulator", "robot": "crane"})
    with pytest.raises(ValueError, match="bias forces"):
        Unicycle().bias(np.zeros(4))


def test_kinematics_record_is_reused() -> None:
    dyn = Unicycle()
    rec = dyn.new_kinematics()
    assert isinstance(rec, Kinematics)
    out = dyn.kinematics(np.array([0.0, 0.0, 0.0, 1.0]), rec)
    assert out is rec and rec.v.tolist() == [1.0, 0.0]
