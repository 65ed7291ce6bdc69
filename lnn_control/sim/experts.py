"""Expert controllers that generate demonstrations for the two built-in robots (pure numpy/mujoco).

diff_drive (``DiffDriveExpert``): go-to-goal with obstacle avoidance using the known map.
A cost-to-go field to the goal is computed once per goal by Dijkstra on an 8-connected grid
(``resolution`` m) whose cells are free when the robot disc keeps ``inflation`` m clearance
from every obstacle and wall. Each step the robot pursues a look-ahead point found by
descending the field ``lookahead`` m from its cell (pure pursuit):

    e = wrap(atan2(p_y - y, p_x - x) - theta),  omega = clip(k_omega e),
    v = v_max * max(cos e, 0)^2 * min(1, dist_goal / slow_radius),

and a clearance guard scales v down linearly when the clearance (m) to the map falls below
``guard`` while the heading points towards the nearest surface. Since the field has no local
minima, the robot reaches any goal connected to its start through free space.
The default clearance (0.20 m) keeps the expert's paths outside the band where
``config/diff_drive.yaml``'s safety filter acts (disc clearance 0.05 m plus the rate limit its
class-K gain puts on approaching a surface): with 0.12 m the expert itself, filtered as deployed,
stalled against obstacles in half of the episodes, and policies cloned from it learned those paths.

arm (``ArmExpert``): computed-torque reaching in joint space with a velocity-limited reference,

    dq_ref = clip(kp / kd (q_goal - q), +-dq_max),  ddq_ref = kd (dq_ref - dq),
    tau = M(q) ddq_ref + c(q, dq) + g(q) + d dq,   clipped to the torque limits,

with M(q) and the bias c + g from the same MJCF through MuJoCo. A straight joint-space path
between configurations inside the box limits stays inside them, and the velocity reference
keeps |dq| under ``dq_max`` < ARM_DQ_LIMIT.

arm (``ArmPDExpert``, what the demonstrations use): joint-space PD with gravity compensation
and constant diagonal gains (globally asymptotically stable for a manipulator; Takegaki & Arimoto
1981), with the same velocity-limited reference,

    dq_ref = clip(Kp / Kd (q_goal - q), +-dq_max),  tau = Kd (dq_ref - dq) + g(q) + d dq,

clipped to the torque limits. Its command is a simple function of the state (linear in the
error and the velocity plus the smooth gravity torque g(q)), which a small network can imitate
precisely; the computed-torque expert multiplies the error by M(q) and adds Coriolis terms, so a
torque error that a network makes easily becomes a large joint-3 position error there.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from lnn_control.sim import models as M
from lnn_control.sim.diff_drive import clearance

__all__ = ["DiffDriveExpert", "DiffDriveLocalExpert", "ArmExpert", "ArmPDExpert"]


def _wrap(a: float) -> float:
    return math.atan2(math.sin(a), math.cos(a))


class DiffDriveExpert:
    """Grid cost-to-go + pure pursuit go-to-goal controller for the diff-drive robot.

    Args:
        resolution: grid cell size (m).
        inflation: clearance (m) of the robot disc that free cells keep from obstacles/walls.
        lookahead: pursuit distance (m) along the descent path.
        v_max: cruise speed (m/s), at most DIFF_DRIVE_V_LIMIT.
        k_omega: heading gain (1/s).
        guard: clearance (m) below which forward speed towards a surface is reduced.
    """

    def __init__(
        self,
        resolution: float = 0.05,
        inflation: float = 0.20,
        lookahead: float = 0.35,
        v_max: float = 0.5,
        k_omega: float = 3.0,
        guard: float = 0.10,
    ):
        if not 0.01 <= resolution <= 0.2:
            raise ValueError(f"resolution must be in [0.01, 0.2] m, got {resolution}")
        if not 0 < v_max <= M.DIFF_DRIVE_V_LIMIT:
            raise ValueError(f"v_max must be in (0, {M.DIFF_DRIVE_V_LIMIT}] m/s, got {v_max}")
        if inflation < 0 or lookahead <= 0 or k_omega <= 0 or guard < 0:
            raise ValueError("inflation and guard must be >= 0, lookahead and k_omega > 0")
        self.resolution = resolution
        self.inflation = inflation
        self.lookahead = lookahead
        self.v_max = v_max
        self.k_omega = k_omega
        self.guard = guard
        h = M.ROOM_HALF_SIZE
        self._n = int(round(2 * h / resolution))
        c = (np.arange(self._n) + 0.5) * resolution - h
        self._xs = c
        gx, gy = np.meshgrid(c, c, indexing="ij")
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
        self._clear = np.array([clearance(p) for p in pts]).reshape(self._n, self._n)
        self._free = self._clear >= inflation
        self._graph = self._build_graph()
        self._goal: np.ndarray | None = None
        self._cost = np.full((self._n, self._n), np.inf)

    def _build_graph(self) -> coo_matrix:
        n = self._n
        idx = np.arange(n * n).reshape(n, n)
        rows, cols, w = [], [], []
        for di, dj in ((1, 0), (0, 1), (1, 1), (1, -1)):
            j0, j1 = max(0, -dj), n - max(0, dj)
            a = idx[0 : n - di, j0:j1]
            b = idx[di:n, j0 + dj : j1 + dj]
            fa = self._free.ravel()[a.ravel()]
            fb = self._free.ravel()[b.ravel()]
            ok = fa & fb
            rows.append(a.ravel()[ok])
            cols.append(b.ravel()[ok])
            w.append(np.full(int(ok.sum()), math.hypot(di, dj) * self.resolution))
        r, c_, ww = np.concatenate(rows), np.concatenate(cols), np.concatenate(w)
        return coo_matrix((ww, (r, c_)), shape=(n * n, n * n)).tocsr()

    def _cell(self, xy: np.ndarray) -> tuple[int, int]:
        i = int(np.clip((xy[0] + M.ROOM_HALF_SIZE) / self.resolution, 0, self._n - 1))
        j = int(np.clip((xy[1] + M.ROOM_HALF_SIZE) / self.resolution, 0, self._n - 1))
        return i, j

    def _nearest_free(self, xy: np.ndarray, reachable: bool = False) -> tuple[int, int]:
        i, j = self._cell(xy)
        ok = np.isfinite(self._cost) if reachable else self._free
        if ok[i, j]:
            return i, j
        ii, jj = np.nonzero(ok)
        if ii.size == 0:
            raise ValueError("no free cell in the map")
        k = int(np.argmin((ii - i) ** 2 + (jj - j) ** 2))
        return int(ii[k]), int(jj[k])

    def set_goal(self, goal: np.ndarray) -> None:
        """Compute the cost-to-go field (m) to ``goal`` (2,) m; called by ``__call__`` on a new goal."""
        g = np.asarray(goal, dtype=float).reshape(-1)[:2]
        if g.shape != (2,) or not np.all(np.isfinite(g)):
            raise ValueError(f"goal must be 2 finite numbers (x, y), got {goal!r}")
        gi, gj = self._nearest_free(g)
        dist = dijkstra(self._graph, directed=False, indices=gi * self._n + gj)
        self._cost = np.asarray(dist).reshape(self._n, self._n)
        self._goal = g

    def _lookahead_point(self, xy: np.ndarray) -> np.ndarray:
        i, j = self._nearest_free(xy, reachable=True)
        steps = max(1, int(round(self.lookahead / self.resolution)))
        for _ in range(steps):
            best = (self._cost[i, j], i, j)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if 0 <= a < self._n and 0 <= b < self._n and self._cost[a, b] < best[0]:
                        best = (self._cost[a, b], a, b)
            if best[1] == i and best[2] == j:
                break
            i, j = best[1], best[2]
        return np.array([self._xs[i], self._xs[j]])

    def __call__(self, pose: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Command (2,) = (v m/s, omega rad/s) for ``pose`` (3,) = x, y (m), theta (rad), ``goal`` (2,) m."""
        pose = np.asarray(pose, dtype=float)
        goal = np.asarray(goal, dtype=float).reshape(-1)[:2]
        if self._goal is None or not np.allclose(goal, self._goal):
            self.set_goal(goal)
        xy, th = pose[:2], float(pose[2])
        d_goal = float(np.linalg.norm(goal - xy))
        if d_goal < M.GOAL_TOLERANCE * 0.5:
            return np.zeros(2)
        target = goal if d_goal < self.lookahead else self._lookahead_point(xy)
        e = _wrap(math.atan2(target[1] - xy[1], target[0] - xy[0]) - th)
        omega = float(np.clip(self.k_omega * e, -M.DIFF_DRIVE_OMEGA_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT))
        v = self.v_max * max(math.cos(e), 0.0) ** 2 * min(1.0, d_goal / 0.5)
        v = max(v, 0.0)
        c = clearance(xy)
        if c < self.guard:
            # Only slow down when the motion shrinks the clearance (finite difference along the heading).
            ahead = xy + 0.01 * np.array([math.cos(th), math.sin(th)])
            if clearance(ahead) < c:
                v *= max(c, 0.0) / self.guard
        return np.array([v, omega])


class DiffDriveLocalExpert:
    """Go-to-goal from what the policy observes: the goal in the body frame and the scan's sector minima.

    ``DiffDriveExpert`` plans on the global map, so its choice (which side of an obstacle) depends on
    things the policy never sees; this one decides from the policy's own inputs only. Sector j
    (``sectors`` of them, the ``scan_sectors`` extractor's split of a 360 deg scan whose first beam
    points along the robot's x axis) covers body angles [2 pi j / n, 2 pi (j + 1) / n). The
    clearance of a direction a is the smallest minimum among the sectors that overlap
    [a - half_width, a + half_width]; a direction is free when that clearance is at least
    min(goal distance, ``look``) + ``body``. The expert heads for the free direction closest to the
    goal's (none free: the direction of largest clearance):

        omega = clip(k_omega e),  v = v_max cos(e)_+^2 min(1, d_goal / 0.5) clip((c_front - 0.3) / 0.4, 0, 1)

    with e the chosen direction and c_front the clearance straight ahead. Memoryless, so it can stall
    where two directions tie; on 12 seeded episodes (``ClosedLoop`` seeds 500-511, 30 s) it reached
    7 goals, with 1 collision (a sector's minimum hides where in the sector an obstacle is).

    Args:
        sectors: number of scan sectors in the observation.
        look: m, how far ahead a direction must be free (less when the goal is nearer).
        half_width: rad, half the angular width checked around a direction.
        v_max: m/s; k_omega: 1/s heading gain; body: m, the robot radius added to the clearance.
    """

    def __init__(
        self,
        sectors: int = 8,
        look: float = 0.9,
        half_width: float = math.radians(30.0),
        v_max: float = 0.5,
        k_omega: float = 3.0,
        body: float = M.DIFF_DRIVE_RADIUS,
    ):
        if sectors < 1:
            raise ValueError(f"sectors must be >= 1, got {sectors}")
        if not 0 < v_max <= M.DIFF_DRIVE_V_LIMIT:
            raise ValueError(f"v_max must be in (0, {M.DIFF_DRIVE_V_LIMIT}] m/s, got {v_max}")
        if look <= 0 or half_width < 0 or k_omega <= 0 or body < 0:
            raise ValueError("look and k_omega must be > 0, half_width and body >= 0")
        self.sectors, self.look, self.half_width = int(sectors), float(look), float(half_width)
        self.v_max, self.k_omega, self.body = float(v_max), float(k_omega), float(body)
        width = 2.0 * math.pi / self.sectors
        self._centres = (np.arange(self.sectors) + 0.5) * width
        self._reach = width / 2.0 + self.half_width
        self._candidates = np.linspace(-math.pi, math.pi, 73)[:-1]  # every 5 deg

    def clearances(self, sectors: np.ndarray, angles: np.ndarray) -> np.ndarray:
        """Clearance (m) along each body-frame direction in ``angles`` (K,) from sector minima (n,)."""
        d = np.abs(np.angle(np.exp(1j * (self._centres[None, :] - np.asarray(angles, float)[:, None]))))
        masked = np.where(d < self._reach, np.asarray(sectors, float)[None, :], np.inf)
        return masked.min(axis=1)

    def __call__(self, goal_body: np.ndarray, sectors: np.ndarray) -> np.ndarray:
        """Command (2,) = (v m/s, omega rad/s) from ``goal_body`` (2,) m and scan sector minima (n,) m."""
        g = np.asarray(goal_body, dtype=float).reshape(-1)
        s = np.asarray(sectors, dtype=float).reshape(-1)
        if g.shape != (2,) or not np.all(np.isfinite(g)):
            raise ValueError(f"goal_body must be 2 finite numbers (m), got {goal_body!r}")
        if s.shape != (self.sectors,) or np.any(np.isnan(s)):
            raise ValueError(f"sectors must be {self.sectors} ranges (m), got {sectors!r}")
        d_goal = float(np.hypot(g[0], g[1]))
        if d_goal < M.GOAL_TOLERANCE * 0.5:
            return np.zeros(2)
        goal_angle = math.atan2(g[1], g[0])
        clear = self.clearances(s, self._candidates)
        free = clear >= min(d_goal, self.look) + self.body
        if free.any():
            off = np.abs(np.angle(np.exp(1j * (self._candidates - goal_angle))))
            e = float(self._candidates[np.flatnonzero(free)[np.argmin(off[free])]])
        else:
            e = float(self._candidates[np.argmax(clear)])
        omega = float(np.clip(self.k_omega * e, -M.DIFF_DRIVE_OMEGA_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT))
        front = float(self.clearances(s, np.zeros(1))[0])
        v = self.v_max * max(math.cos(e), 0.0) ** 2 * min(1.0, d_goal / 0.5)
        v *= float(np.clip((front - 0.3) / 0.4, 0.0, 1.0))
        return np.array([v, omega])


class ArmExpert:
    """Computed-torque joint-space reaching controller for the arm.

    Args:
        model: the arm's MjModel (``ArmEnv.model``), used for M(q) and the bias forces.
        kp: position gain (1/s^2); kd: velocity gain (1/s).
        dq_max: (scalar or (3,)) reference speed cap (rad/s), below ARM_DQ_LIMIT.
    """

    def __init__(self, model: mujoco.MjModel, kp: float = 25.0, kd: float = 10.0, dq_max: float = 1.5):
        if model.nv != 3 or model.nu != 3:
            raise ValueError(f"model must be the 3-joint arm (nv = nu = 3), got nv={model.nv}, nu={model.nu}")
        if kp <= 0 or kd <= 0:
            raise ValueError(f"kp and kd must be > 0, got {kp}, {kd}")
        cap = np.broadcast_to(np.asarray(dq_max, dtype=float), (3,))
        if np.any(cap <= 0) or np.any(cap >= M.ARM_DQ_LIMIT):
            raise ValueError(f"dq_max must be in (0, {M.ARM_DQ_LIMIT}) rad/s, got {dq_max}")
        self.model = model
        self.data = mujoco.MjData(model)
        self.kp, self.kd, self.dq_max = kp, kd, cap.copy()

    def __call__(self, q: np.ndarray, dq: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Torque command (3,) N m for joint state ``q`` (3,) rad, ``dq`` (3,) rad/s, ``goal`` (3,) rad."""
        q, dq, goal = (np.asarray(a, dtype=float).reshape(3) for a in (q, dq, goal))
        d = self.data
        d.qpos[:3] = q
        d.qvel[:3] = dq
        mujoco.mj_forward(self.model, d)
        m = np.zeros((3, 3))
        mujoco.mj_fullM(self.model, d, m)
        dq_ref = np.clip(self.kp / self.kd * (goal - q), -self.dq_max, self.dq_max)
        ddq_ref = self.kd * (dq_ref - dq)
        tau = m @ ddq_ref + d.qfrc_bias[:3] + M.ARM_JOINT_DAMPING * dq
        return np.clip(tau, -M.ARM_TAU_LIMIT, M.ARM_TAU_LIMIT)


class ArmPDExpert:
    """Joint-space PD + gravity compensation reaching controller for the arm (see the module docstring).

    Args:
        model: the arm's MjModel (``ArmEnv.model``), used for the gravity torque g(q).
        kp: (3,) position gains (N m / rad); kd: (3,) velocity gains (N m s / rad); both > 0.
            The defaults are about critically damped over the arm's inertia range at 100 Hz.
        dq_max: (scalar or (3,)) reference speed cap (rad/s), below ARM_DQ_LIMIT.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        kp: tuple[float, float, float] = (6.0, 30.0, 8.0),
        kd: tuple[float, float, float] = (1.2, 6.0, 1.0),
        dq_max: float = 1.5,
    ):
        if model.nv != 3 or model.nu != 3:
            raise ValueError(f"model must be the 3-joint arm (nv = nu = 3), got nv={model.nv}, nu={model.nu}")
        kp_a, kd_a = np.asarray(kp, dtype=float).reshape(-1), np.asarray(kd, dtype=float).reshape(-1)
        if kp_a.shape != (3,) or kd_a.shape != (3,) or np.any(kp_a <= 0) or np.any(kd_a <= 0):
            raise ValueError(f"kp and kd must be 3 positive gains each, got {kp}, {kd}")
        cap = np.broadcast_to(np.asarray(dq_max, dtype=float), (3,))
        if np.any(cap <= 0) or np.any(cap >= M.ARM_DQ_LIMIT):
            raise ValueError(f"dq_max must be in (0, {M.ARM_DQ_LIMIT}) rad/s, got {dq_max}")
        self.model = model
        self.data = mujoco.MjData(model)
        self.kp, self.kd, self.dq_max = kp_a, kd_a, cap.copy()

    def gravity(self, q: np.ndarray) -> np.ndarray:
        """Gravity torque g(q) (3,) in N m: the bias force at rest."""
        d = self.data
        d.qpos[:3] = q
        d.qvel[:3] = 0.0
        mujoco.mj_forward(self.model, d)
        return d.qfrc_bias[:3].copy()

    def __call__(self, q: np.ndarray, dq: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Torque command (3,) N m for joint state ``q`` (3,) rad, ``dq`` (3,) rad/s, ``goal`` (3,) rad."""
        q, dq, goal = (np.asarray(a, dtype=float).reshape(3) for a in (q, dq, goal))
        dq_ref = np.clip(self.kp / self.kd * (goal - q), -self.dq_max, self.dq_max)
        tau = self.kd * (dq_ref - dq) + self.gravity(q) + M.ARM_JOINT_DAMPING * dq
        return np.clip(tau, -M.ARM_TAU_LIMIT, M.ARM_TAU_LIMIT)
