"""Plain-MuJoCo environment of the 3-joint torque-controlled arm (no ROS).

Dynamics: M(q) ddq + c(q, dq) + g(q) = tau_applied - d dq (+ joint-limit and contact forces),
with tau_applied = clip(tau_cmd, -ARM_TAU_LIMIT, ARM_TAU_LIMIT) done by the actuators'
``ctrlrange`` like a real drive. Position limits are hard stops in the model; velocity limits
are not enforced by the plant (that is the controller's and the safety filter's job) but
reported in the ground truth.

Ground truth (``ground_truth()``, also the data of ``/sim/ground_truth``), float64 layout
``GROUND_TRUTH_FIELDS``:

    [0..2] margin_joint{1,2,3}  rad, min(q_i - lower_i, upper_i - q_i) (negative = beyond the limit)
    [3]    max_tau_ratio        max_i |tau_cmd_i| / tau_limit_i of the last command (> 1 = clipped)
    [4]    collision            1.0 if a link touches the floor
    [5]    max_dq_ratio         max_i |dq_i| / dq_limit_i (> 1 = velocity limit exceeded)
    [6]    goal_error           rad, max_i |q_i - q_goal_i| (nan without a goal)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from lnn_control.sim import models as M

__all__ = ["GROUND_TRUTH_FIELDS", "ArmObservation", "ArmEnv", "joint_margins"]

GROUND_TRUTH_FIELDS: tuple[str, ...] = (
    "margin_joint1",
    "margin_joint2",
    "margin_joint3",
    "max_tau_ratio",
    "collision",
    "max_dq_ratio",
    "goal_error",
)


def joint_margins(q: np.ndarray) -> np.ndarray:
    """Position-limit margins (3,) in rad: min(q - ARM_Q_LOWER, ARM_Q_UPPER - q) per joint."""
    q = np.asarray(q, dtype=float)
    return np.minimum(q - M.ARM_Q_LOWER, M.ARM_Q_UPPER - q)


@dataclass
class ArmObservation:
    """Joint state as ``/joint_states`` reports it.

    time: s of sim time; position: (3,) rad; velocity: (3,) rad/s; effort: (3,) N m actually
    applied (after the actuator clip).
    """

    time: float
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class ArmEnv:
    """The arm stepped by joint torque commands.

    Args:
        noise_std: std of Gaussian noise on reported position (rad) and velocity (rad/s).
        seed: seeds the noise generator and ``reset`` without its own seed.
    """

    def __init__(self, noise_std: float = 0.0, seed: int | None = None):
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)
        self.model = mujoco.MjModel.from_xml_string(M.arm_mjcf())
        self.data = mujoco.MjData(self.model)
        self._floor = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
        self._rng = np.random.default_rng(seed)
        self.goal: np.ndarray | None = None
        self.command = np.zeros(3)
        self.reset()

    @property
    def dt(self) -> float:
        """Physics step (s)."""
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        """Sim time (s) since the last reset."""
        return float(self.data.time)

    @property
    def q(self) -> np.ndarray:
        """Joint positions (3,) in rad (copy)."""
        return self.data.qpos[:3].copy()

    @property
    def dq(self) -> np.ndarray:
        """Joint velocities (3,) in rad/s (copy)."""
        return self.data.qvel[:3].copy()

    def sample_configuration(self, rng: np.random.Generator, margin: float = 0.3) -> np.ndarray:
        """A random configuration (3,), ``margin`` rad inside the limits, links off the floor."""
        for _ in range(10_000):
            q = rng.uniform(M.ARM_Q_LOWER + margin, M.ARM_Q_UPPER - margin)
            if self.min_link_height(q) > 0.1:
                return q
        raise RuntimeError("no collision-free configuration found")

    def sample_reachable_goal(
        self, rng: np.random.Generator, q_from: np.ndarray, margin: float = 0.3
    ) -> np.ndarray:
        """A random goal (3,) whose straight joint-space path from ``q_from`` keeps the links off the floor.

        The experts move along (close to) that straight line, so such goals are collision-free to reach.
        """
        for _ in range(10_000):
            q = self.sample_configuration(rng, margin)
            path = q_from + np.linspace(0.0, 1.0, 50)[:, None] * (q - q_from)
            if min(self.min_link_height(p) for p in path) > 0.1:
                return q
        raise RuntimeError(f"no goal reachable in a straight line from {q_from} found")

    def min_link_height(self, q: np.ndarray) -> float:
        """Lowest z (m) of the elbow and tool points at configuration ``q`` (3,), by forward kinematics."""
        l1, l2, l3 = M.ARM_LINK_LENGTHS
        # joint2/3 rotate about +y: a positive angle tips the link's +x axis downwards (-z).
        z_elbow = 0.05 + l1 - l2 * math.sin(q[1])
        z_tool = z_elbow - l3 * math.sin(q[1] + q[2])
        return float(min(z_elbow, z_tool))

    def reset(
        self, seed: int | None = None, q0: np.ndarray | None = None, goal: np.ndarray | None = None
    ) -> ArmObservation:
        """Start a new episode at rest at sim time 0.

        Args:
            seed: reseeds the generator; a random configuration is drawn when ``q0`` is None.
            q0: (3,) initial joint positions (rad), inside the limits.
            goal: (3,) goal joint positions (rad) used for ``goal_error``; None keeps no goal.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        q0 = self.sample_configuration(self._rng) if q0 is None else np.asarray(q0, dtype=float)
        if q0.shape != (3,) or not np.all(np.isfinite(q0)):
            raise ValueError(f"q0 must be 3 finite joint angles (rad), got {q0!r}")
        if np.any(joint_margins(q0) < 0):
            raise ValueError(f"q0 {q0} is outside the joint limits {M.ARM_Q_LOWER}..{M.ARM_Q_UPPER}")
        self.set_goal(goal)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:3] = q0
        self.command = np.zeros(3)
        mujoco.mj_forward(self.model, self.data)
        return self.observation()

    def set_goal(self, goal: np.ndarray | None) -> None:
        """Set (or clear with None) the goal configuration (3,) in rad."""
        if goal is None:
            self.goal = None
            return
        g = np.asarray(goal, dtype=float).reshape(-1)
        if g.shape != (3,) or not np.all(np.isfinite(g)):
            raise ValueError(f"goal must be 3 finite joint angles (rad), got {goal!r}")
        self.goal = g

    def step(self, command: np.ndarray, dt: float) -> ArmObservation:
        """Hold torque ``command`` (3,) in N m for ``dt`` seconds (rounded to physics steps).

        The actuators clip to the torque limits; non-finite commands raise ``ValueError``.
        """
        tau = np.asarray(command, dtype=float).reshape(-1)
        if tau.shape != (3,) or not np.all(np.isfinite(tau)):
            raise ValueError(f"command must be 3 finite torques (N m), got {command!r}")
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        self.command = tau.copy()
        self.data.ctrl[:3] = tau
        for _ in range(max(1, round(dt / self.dt))):
            mujoco.mj_step(self.model, self.data)
        return self.observation()

    def observation(self) -> ArmObservation:
        """Joint state now (noise on position and velocity when enabled)."""
        q, dq = self.q, self.dq
        if self.noise_std > 0:
            q = q + self._rng.normal(0, self.noise_std, 3)
            dq = dq + self._rng.normal(0, self.noise_std, 3)
        effort = self.data.actuator_force[:3].copy()
        return ArmObservation(time=self.time, position=q, velocity=dq, effort=effort)

    def in_contact(self) -> bool:
        """True when a link touches the floor."""
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            if self._floor in (c.geom1, c.geom2):
                return True
        return False

    def ground_truth(self) -> np.ndarray:
        """Array (7,) with the layout ``GROUND_TRUTH_FIELDS`` (see the module docstring)."""
        q, dq = self.q, self.dq
        tau_ratio = float(np.max(np.abs(self.command) / M.ARM_TAU_LIMIT))
        dq_ratio = float(np.max(np.abs(dq) / M.ARM_DQ_LIMIT))
        err = float(np.max(np.abs(q - self.goal))) if self.goal is not None else math.nan
        return np.array([*joint_margins(q), tau_ratio, 1.0 if self.in_contact() else 0.0, dq_ratio, err])

    def goal_reached(self) -> bool:
        """True when all |q - q_goal| < ARM_GOAL_Q_TOLERANCE and all |dq| < ARM_GOAL_DQ_TOLERANCE."""
        if self.goal is None:
            return False
        return bool(
            np.all(np.abs(self.q - self.goal) < M.ARM_GOAL_Q_TOLERANCE)
            and np.all(np.abs(self.dq) < M.ARM_GOAL_DQ_TOLERANCE)
        )

    def mass_matrix(self, q: np.ndarray | None = None) -> np.ndarray:
        """Joint-space inertia M(q) (3, 3) in kg m^2 (armature included) at ``q`` (default: now)."""
        d = self.data if q is None else self._scratch(q, np.zeros(3))
        m = np.zeros((self.model.nv, self.model.nv))
        mujoco.mj_fullM(self.model, d, m)
        return m

    def _scratch(self, q: np.ndarray, dq: np.ndarray) -> mujoco.MjData:
        d = mujoco.MjData(self.model)
        d.qpos[:3] = q
        d.qvel[:3] = dq
        mujoco.mj_forward(self.model, d)
        return d
