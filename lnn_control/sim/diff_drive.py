"""Plain-MuJoCo environment of the diff-drive robot in the room (no ROS).

The robot is a kinematic unicycle: for a command (v, omega) the joint velocities are set to

    x_dot = v cos(theta),  y_dot = v sin(theta),  theta_dot = omega

before every physics step, so MuJoCo integrates the pose and still resolves contacts
(a robot driven into a wall is pushed back, it does not pass through). Commands are clipped
to |v| <= DIFF_DRIVE_V_LIMIT, |omega| <= DIFF_DRIVE_OMEGA_LIMIT like a base controller would.

Ground truth (``ground_truth()``, also the data of ``/sim/ground_truth``), float64 layout
``GROUND_TRUTH_FIELDS``:

    [0] min_clearance  m, distance from the robot disc's edge to the nearest obstacle or wall
                       (negative when overlapping)
    [1] collision      1.0 if min_clearance <= 0 or MuJoCo reports a contact with the robot
    [2] goal_distance  m, distance from the robot centre to the goal (nan without a goal)
    [3] x, [4] y       m, world frame;  [5] theta  rad, in (-pi, pi]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from lnn_control.sim import models as M

__all__ = [
    "GROUND_TRUTH_FIELDS",
    "DiffDriveObservation",
    "DiffDriveEnv",
    "clearance",
    "sample_free_position",
]

GROUND_TRUTH_FIELDS: tuple[str, ...] = ("min_clearance", "collision", "goal_distance", "x", "y", "theta")


def clearance(xy: np.ndarray, radius: float = M.DIFF_DRIVE_RADIUS) -> float:
    """Signed distance (m) from a disc of ``radius`` centred at ``xy`` (2,) to the nearest obstacle or wall.

    clearance = min( min_i ||xy - c_i|| - r_i - radius,  min_walls (ROOM_HALF_SIZE - |xy_k|) - radius )
    """
    xy = np.asarray(xy, dtype=float)
    d_obs = np.linalg.norm(M.OBSTACLES[:, :2] - xy, axis=1) - M.OBSTACLES[:, 2]
    d_wall = M.ROOM_HALF_SIZE - np.abs(xy)
    return float(min(d_obs.min(), d_wall.min()) - radius)


def sample_free_position(rng: np.random.Generator, min_clearance: float = 0.15) -> np.ndarray:
    """A uniformly random position (2,) whose robot disc keeps ``min_clearance`` (m) from everything."""
    for _ in range(10_000):
        xy = rng.uniform(-M.ROOM_HALF_SIZE, M.ROOM_HALF_SIZE, size=2)
        if clearance(xy) >= min_clearance:
            return xy
    raise RuntimeError(f"no free position with min_clearance={min_clearance} m found")


@dataclass
class DiffDriveObservation:
    """What the robot's sensors report (noise included when enabled).

    time: s of sim time; pose: (3,) x, y (m), theta (rad) from odometry; twist: (2,) v (m/s),
    omega (rad/s) in base_link; scan: (SCAN_BEAMS,) ranges (m), beam k at angle
    k * 2 pi / SCAN_BEAMS in base_link, ``inf`` where nothing is within SCAN_RANGE_MAX.
    """

    time: float
    pose: np.ndarray
    twist: np.ndarray
    scan: np.ndarray


class DiffDriveEnv:
    """The diff-drive robot in the room, stepped by (v, omega) commands.

    Args:
        scan_noise_std: std (m) of Gaussian noise added to each valid range.
        odom_noise_std: std of Gaussian noise added to odometry pose (m, m, rad) and twist.
        seed: seeds the noise generator and ``reset`` without its own seed.
    """

    def __init__(self, scan_noise_std: float = 0.0, odom_noise_std: float = 0.0, seed: int | None = None):
        if scan_noise_std < 0 or odom_noise_std < 0:
            raise ValueError(
                f"scan_noise_std and odom_noise_std must be >= 0, got {scan_noise_std}, {odom_noise_std}"
            )
        self.scan_noise_std = float(scan_noise_std)
        self.odom_noise_std = float(odom_noise_std)
        self.model = mujoco.MjModel.from_xml_string(M.diff_drive_mjcf())
        self.data = mujoco.MjData(self.model)
        self._body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "base_link")
        self._chassis = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "chassis")
        self._floor = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
        self._beam_angles = np.arange(M.SCAN_BEAMS) * (2 * math.pi / M.SCAN_BEAMS)
        self._ray_geom = np.zeros(M.SCAN_BEAMS, dtype=np.int32)
        self._ray_dist = np.zeros(M.SCAN_BEAMS)
        self._rng = np.random.default_rng(seed)
        self.goal: np.ndarray | None = None
        self.command = np.zeros(2)
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
    def pose(self) -> np.ndarray:
        """True pose (3,): x, y (m), theta (rad) wrapped to (-pi, pi]."""
        x, y, th = self.data.qpos[:3]
        return np.array([x, y, math.atan2(math.sin(th), math.cos(th))])

    def reset(
        self,
        seed: int | None = None,
        start: np.ndarray | None = None,
        goal: np.ndarray | None = None,
    ) -> DiffDriveObservation:
        """Start a new episode at sim time 0.

        Args:
            seed: reseeds the generator; a random free start (and heading) is drawn when
                ``start`` is None.
            start: (3,) x, y (m), theta (rad); must not overlap an obstacle or wall.
            goal: (2,) goal position (m) used for ``goal_distance``; None keeps no goal.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if start is None:
            xy = sample_free_position(self._rng)
            start = np.array([xy[0], xy[1], self._rng.uniform(-math.pi, math.pi)])
        start = np.asarray(start, dtype=float)
        if start.shape != (3,) or not np.all(np.isfinite(start)):
            raise ValueError(f"start must be 3 finite numbers (x, y, theta), got {start!r}")
        if clearance(start[:2]) < 0:
            raise ValueError(f"start {start[:2]} overlaps an obstacle or wall; pick a free position")
        self.set_goal(goal)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:3] = start
        self.command = np.zeros(2)
        mujoco.mj_forward(self.model, self.data)
        return self.observation()

    def set_goal(self, goal: np.ndarray | None) -> None:
        """Set (or clear with None) the goal position (2,) in metres."""
        if goal is None:
            self.goal = None
            return
        g = np.asarray(goal, dtype=float).reshape(-1)[:2]
        if g.shape != (2,) or not np.all(np.isfinite(g)):
            raise ValueError(f"goal must be 2 finite numbers (x, y), got {goal!r}")
        self.goal = g

    def step(self, command: np.ndarray, dt: float) -> DiffDriveObservation:
        """Hold ``command`` = (v m/s, omega rad/s) for ``dt`` seconds (rounded to physics steps).

        Non-finite commands raise ``ValueError``; out-of-range ones are clipped to the limits.
        """
        u = np.asarray(command, dtype=float).reshape(-1)
        if u.shape != (2,) or not np.all(np.isfinite(u)):
            raise ValueError(f"command must be 2 finite numbers (v, omega), got {command!r}")
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        v = float(np.clip(u[0], -M.DIFF_DRIVE_V_LIMIT, M.DIFF_DRIVE_V_LIMIT))
        w = float(np.clip(u[1], -M.DIFF_DRIVE_OMEGA_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT))
        self.command = np.array([v, w])
        for _ in range(max(1, round(dt / self.dt))):
            th = self.data.qpos[2]
            self.data.qvel[:3] = (v * math.cos(th), v * math.sin(th), w)
            mujoco.mj_step(self.model, self.data)
        return self.observation()

    def scan(self) -> np.ndarray:
        """Noise-free ranges (SCAN_BEAMS,) in m from the scanner at the robot centre; inf = no return."""
        x, y, th = self.data.qpos[:3]
        ang = th + self._beam_angles
        vec = np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], axis=1).reshape(-1)
        mujoco.mj_multiRay(
            self.model,
            self.data,
            np.array([x, y, M.SCAN_HEIGHT]),
            vec,
            None,
            1,
            self._body,
            self._ray_geom,
            self._ray_dist,
            None,
            M.SCAN_BEAMS,
            M.SCAN_RANGE_MAX,
        )
        r = self._ray_dist.copy()
        r[(self._ray_geom < 0) | (r > M.SCAN_RANGE_MAX)] = np.inf
        return r

    def observation(self) -> DiffDriveObservation:
        """Sensor readings now (with noise when enabled)."""
        pose = self.pose
        qv = self.data.qvel[:3]
        th = pose[2]
        twist = np.array([math.cos(th) * qv[0] + math.sin(th) * qv[1], qv[2]])
        scan = self.scan()
        if self.odom_noise_std > 0:
            pose = pose + self._rng.normal(0, self.odom_noise_std, 3)
            twist = twist + self._rng.normal(0, self.odom_noise_std, 2)
        if self.scan_noise_std > 0:
            ok = np.isfinite(scan)
            scan[ok] = np.clip(
                scan[ok] + self._rng.normal(0, self.scan_noise_std, int(ok.sum())),
                M.SCAN_RANGE_MIN,
                M.SCAN_RANGE_MAX,
            )
        scan[scan < M.SCAN_RANGE_MIN] = M.SCAN_RANGE_MIN
        return DiffDriveObservation(time=self.time, pose=pose, twist=twist, scan=scan)

    def in_contact(self) -> bool:
        """True when MuJoCo has a contact between the robot chassis and anything but the floor."""
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            pair = (c.geom1, c.geom2)
            if self._chassis in pair and self._floor not in pair:
                return True
        return False

    def ground_truth(self) -> np.ndarray:
        """Array (6,) with the layout ``GROUND_TRUTH_FIELDS`` (see the module docstring)."""
        pose = self.pose
        c = clearance(pose[:2])
        collision = 1.0 if (c <= 0.0 or self.in_contact()) else 0.0
        gd = float(np.linalg.norm(pose[:2] - self.goal)) if self.goal is not None else math.nan
        return np.array([c, collision, gd, pose[0], pose[1], pose[2]])

    def goal_reached(self) -> bool:
        """True when a goal is set and the centre is within GOAL_TOLERANCE of it."""
        return self.goal is not None and float(np.linalg.norm(self.pose[:2] - self.goal)) < M.GOAL_TOLERANCE
