"""Expert controllers that generate demonstrations for the two built-in robots (pure numpy/mujoco).

diff_drive (``DiffDriveExpert``): go-to-goal with obstacle avoidance on the known map, built so
that a policy which sees only the goal in its body frame and 8 scan sectors can imitate it and
so that the safety filter never has to correct it.

* Field: a cost-to-go C(p) to the goal, once per goal, by Dijkstra on an 8-connected grid
  (``resolution`` m) over the cells whose robot disc keeps ``guard`` m clearance c, each metre
  costing 1 + ``penalty`` ((``inflation`` - c)_+ / ``inflation``)^2: the path keeps away from
  surfaces where it can, and the field is defined (and smooth) close to them too, so the robot
  is never sent to a distant "nearest free cell".
* Direction: among rays every 2.5 deg, ``lookahead`` m long and cut where the disc clearance
  drops below ``guard`` (inside that band: where the ray stops gaining clearance at 0.3-0.9 m
  per m), the world heading psi maximising

      progress(psi) - turn_cost * wrap(psi - theta)^2,   progress = C(p) - min_ray C,

  refined between neighbouring rays. The heading term decides where going round either side
  of an obstacle costs about the same: the robot commits to the side it already faces, a choice
  a policy can read from which front sector sees the obstacle (the old pure-pursuit expert
  chose by the global field there, and its cloned policy averaged left and right and stalled).
* Command: omega = clip(k_omega e), v = v_max cos(e)_+^2 min(1, d_goal / 0.5), e = psi - theta,
  with v capped so that every surface point s (sampled on the obstacles and walls) keeps
  dh/dt >= -``approach_gain`` h, h = |p - s| - (0.2 + 0.05 + 0.05 + ``cap_margin``) at the filter's
  look-ahead point p (:meth:`DiffDriveExpert.speed_cap`): the rate limit of
  ``config/diff_drive.yaml``'s laser-scan barrier (gain 1) with room to spare, so the filter leaves
  the expert's commands unchanged and the policy learns the slow-down itself.

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

__all__ = ["DiffDriveExpert", "DiffDriveLocalExpert", "ArmExpert", "ArmPDExpert"]


def _wrap(a: float) -> float:
    return math.atan2(math.sin(a), math.cos(a))


#: m, the safety filter's look-ahead point ahead of the centre (``diff_drive`` dynamics default)
_FILTER_LOOKAHEAD = 0.05
#: m, the margin of ``config/diff_drive.yaml``'s scan and wall barriers
_FILTER_MARGIN = 0.05
#: inside the guard band a ray must gain clearance at least this fast (m per m; 3x at zero clearance)
_ESCAPE_SLOPE = 0.3


def clearances(pts: np.ndarray, radius: float = M.DIFF_DRIVE_RADIUS) -> np.ndarray:
    """:func:`lnn_control.sim.diff_drive.clearance` of many centres (K, 2) at once (K,) m."""
    p = np.asarray(pts, dtype=float).reshape(-1, 2)
    d_obs = np.linalg.norm(p[:, None, :] - M.OBSTACLES[None, :, :2], axis=2) - M.OBSTACLES[None, :, 2]
    d_wall = M.ROOM_HALF_SIZE - np.abs(p)
    return np.minimum(d_obs.min(axis=1), d_wall.min(axis=1)) - radius


class DiffDriveExpert:
    """Go-to-goal for the diff-drive robot: a soft cost-to-go field on the known map, followed by a
    heading-aware ray search, slowed as the safety filter would slow it (see the module docstring).

    Args:
        resolution: grid cell size (m).
        inflation: clearance (m) of the robot disc below which the field's cost per metre rises.
        lookahead: length (m) of the candidate rays.
        v_max: cruise speed (m/s), at most DIFF_DRIVE_V_LIMIT.
        k_omega: heading gain (1/s).
        guard: clearance (m) a ray must keep (or, inside it, not lose); also the clearance at which
            the filter-aware speed cap reaches zero.
        penalty: weight of the clearance penalty in the field's cost per metre.
        turn_cost: m / rad^2, how much cost-to-go a direction may give up per squared radian it is
            nearer the current heading (commits to one side of an obstacle).
        approach_gain: 1/s, forward speed towards a surface is capped at
            ``approach_gain (clearance - guard) / approach rate`` (the filter's class-K rate limit
            with gain 1, scaled down so the filter stays inactive).
    """

    def __init__(
        self,
        resolution: float = 0.05,
        inflation: float = 0.30,
        lookahead: float = 0.5,
        v_max: float = 0.5,
        k_omega: float = 3.0,
        guard: float = 0.15,
        penalty: float = 10.0,
        turn_cost: float = 0.03,
        approach_gain: float = 0.8,
        cap_margin: float = 0.02,
    ):
        if not 0.01 <= resolution <= 0.2:
            raise ValueError(f"resolution must be in [0.01, 0.2] m, got {resolution}")
        if not 0 < v_max <= M.DIFF_DRIVE_V_LIMIT:
            raise ValueError(f"v_max must be in (0, {M.DIFF_DRIVE_V_LIMIT}] m/s, got {v_max}")
        if inflation < 0 or lookahead <= 0 or k_omega <= 0 or guard < 0:
            raise ValueError("inflation and guard must be >= 0, lookahead and k_omega > 0")
        if penalty < 0 or turn_cost < 0 or approach_gain <= 0 or cap_margin < 0:
            raise ValueError("penalty, turn_cost and cap_margin must be >= 0, approach_gain > 0")
        self.resolution = resolution
        self.inflation = inflation
        self.lookahead = lookahead
        self.v_max = v_max
        self.k_omega = k_omega
        self.guard = guard
        self.penalty = penalty
        self.turn_cost = turn_cost
        self.approach_gain = approach_gain
        self.cap_margin = cap_margin
        h = M.ROOM_HALF_SIZE
        self._n = int(round(2 * h / resolution))
        c = (np.arange(self._n) + 0.5) * resolution - h
        self._xs = c
        gx, gy = np.meshgrid(c, c, indexing="ij")
        self._clear = clearances(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(self._n, self._n)
        self._free = self._clear >= guard
        self._graph = self._build_graph()
        self._goal: np.ndarray | None = None
        self._cost = np.full((self._n, self._n), np.inf)
        self._cost_filled = self._cost
        self._angles = np.linspace(-math.pi, math.pi, 145)[:-1]  # every 2.5 deg
        steps = max(1, int(round(lookahead / resolution)))
        self._s = np.arange(1, steps + 1) * (lookahead / steps)

    def _weight(self, clear: np.ndarray) -> np.ndarray:
        """Cost per metre at clearance ``clear`` (m): 1 + penalty ((inflation - c)_+ / inflation)^2."""
        if self.inflation <= 0:
            return np.ones_like(clear)
        short = np.maximum(self.inflation - clear, 0.0) / self.inflation
        return 1.0 + self.penalty * short * short

    def _build_graph(self) -> coo_matrix:
        n = self._n
        idx = np.arange(n * n).reshape(n, n)
        wcell = self._weight(self._clear).ravel()
        free = self._free.ravel()
        rows, cols, w = [], [], []
        for di, dj in ((1, 0), (0, 1), (1, 1), (1, -1)):
            j0, j1 = max(0, -dj), n - max(0, dj)
            a = idx[0 : n - di, j0:j1].ravel()
            b = idx[di:n, j0 + dj : j1 + dj].ravel()
            ok = free[a] & free[b]
            rows.append(a[ok])
            cols.append(b[ok])
            step = math.hypot(di, dj) * self.resolution
            w.append(step * 0.5 * (wcell[a[ok]] + wcell[b[ok]]))
        r, c_, ww = np.concatenate(rows), np.concatenate(cols), np.concatenate(w)
        return coo_matrix((ww, (r, c_)), shape=(n * n, n * n)).tocsr()

    def _cell(self, xy: np.ndarray) -> tuple[int, int]:
        i = int(np.clip((xy[0] + M.ROOM_HALF_SIZE) / self.resolution, 0, self._n - 1))
        j = int(np.clip((xy[1] + M.ROOM_HALF_SIZE) / self.resolution, 0, self._n - 1))
        return i, j

    def set_goal(self, goal: np.ndarray) -> None:
        """Compute the cost-to-go field (m) to ``goal`` (2,) m; called by ``__call__`` on a new goal."""
        g = np.asarray(goal, dtype=float).reshape(-1)[:2]
        if g.shape != (2,) or not np.all(np.isfinite(g)):
            raise ValueError(f"goal must be 2 finite numbers (x, y), got {goal!r}")
        gi, gj = self._cell(g)
        if not self._free[gi, gj]:
            ii, jj = np.nonzero(self._free)
            k = int(np.argmin((ii - gi) ** 2 + (jj - gj) ** 2))
            gi, gj = int(ii[k]), int(jj[k])
        dist = np.asarray(dijkstra(self._graph, directed=False, indices=gi * self._n + gj))
        cost = dist.reshape(self._n, self._n)
        # the exact distance inside the goal's cell, so the field is smooth down to the goal
        self._cost = cost
        finite = np.isfinite(cost)
        self._cost_filled = np.where(finite, cost, (cost[finite].max() if finite.any() else 0.0) + 10.0)
        self._goal = g

    def cost_to_go(self, pts: np.ndarray) -> np.ndarray:
        """Cost-to-go (m, penalty-weighted) at points (K, 2), bilinear between cell centres."""
        p = np.asarray(pts, dtype=float)
        u = (p[:, 0] + M.ROOM_HALF_SIZE) / self.resolution - 0.5
        w = (p[:, 1] + M.ROOM_HALF_SIZE) / self.resolution - 0.5
        i0 = np.clip(np.floor(u).astype(int), 0, self._n - 2)
        j0 = np.clip(np.floor(w).astype(int), 0, self._n - 2)
        fu = np.clip(u - i0, 0.0, 1.0)
        fw = np.clip(w - j0, 0.0, 1.0)
        c = self._cost_filled
        return (
            c[i0, j0] * (1 - fu) * (1 - fw)
            + c[i0 + 1, j0] * fu * (1 - fw)
            + c[i0, j0 + 1] * (1 - fu) * fw
            + c[i0 + 1, j0 + 1] * fu * fw
        )

    def direction(self, pose: np.ndarray) -> float:
        """World-frame heading (rad) the expert steers to from ``pose`` (3,) (goal set)."""
        xy, th = np.asarray(pose[:2], dtype=float), float(pose[2])
        c_now = float(clearances(xy[None, :])[0])
        # inside the guard band a ray must gain clearance, the steeper the deeper the robot is in it
        slope = _ESCAPE_SLOPE * (1.0 + 2.0 * max(self.guard - c_now, 0.0) / max(self.guard, 1e-9))
        need = np.minimum(self.guard, c_now - 0.005 + slope * self._s)  # (S,)
        dirs = np.stack([np.cos(self._angles), np.sin(self._angles)], axis=1)  # (K, 2)
        pts = xy[None, None, :] + self._s[None, :, None] * dirs[:, None, :]  # (K, S, 2)
        k, s = pts.shape[:2]
        flat = pts.reshape(-1, 2)
        ok = clearances(flat).reshape(k, s) >= need[None, :]
        ok = np.cumprod(ok, axis=1).astype(bool)  # admissible up to the first sample that is not
        cost = self.cost_to_go(flat).reshape(k, s)
        best = np.where(ok, cost, np.inf).min(axis=1)
        c0 = float(self.cost_to_go(xy[None, :])[0])
        progress = c0 - np.minimum(best, c0)  # m of cost-to-go gained along each ray
        turn = np.angle(np.exp(1j * (self._angles - th)))
        score = progress - self.turn_cost * turn * turn
        i = int(np.argmax(score))
        a = float(self._angles[i])
        # parabolic refinement between the neighbouring rays (labels continuous in the pose)
        sl, sr = score[i - 1], score[(i + 1) % k]
        den = sl - 2 * score[i] + sr
        if den < 0:
            a += float(np.clip(0.5 * (sl - sr) / den, -0.5, 0.5)) * (self._angles[1] - self._angles[0])
        return a

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
        if d_goal < self.lookahead and self._line_clear(xy, goal):
            psi = math.atan2(goal[1] - xy[1], goal[0] - xy[0])
        else:
            psi = self.direction(pose)
        e = _wrap(psi - th)
        omega = float(np.clip(self.k_omega * e, -M.DIFF_DRIVE_OMEGA_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT))
        v = self.v_max * max(math.cos(e), 0.0) ** 2 * min(1.0, d_goal / 0.5)
        return np.array([min(v, self.speed_cap(pose, omega)), omega])

    def _line_clear(self, a: np.ndarray, b: np.ndarray) -> bool:
        t = np.linspace(0.0, 1.0, 11)[:, None]
        c_now = float(clearances(a[None, :])[0])
        return bool(np.all(clearances(a[None, :] + t * (b - a)[None, :]) >= min(self.guard, c_now - 0.005)))

    def speed_cap(self, pose: np.ndarray, omega: float = 0.0) -> float:
        """Forward speed (m/s) at which the safety filter's scan rows stay inactive.

        The filter keeps h_i = |p - s_i| - (radius + margin + look-ahead) of every scan point s_i
        from falling faster than gain * h_i, with p the look-ahead point (``_FILTER_LOOKAHEAD``
        ahead of the centre, moving at v along the heading plus omega * l across it). The cap keeps
        every surface point s (sampled on each obstacle and the walls) at
        dh/dt >= -approach_gain * (h - guard + margin + look-ahead), i.e. it holds ``guard`` (m) of
        disc clearance where the filter holds its margin.
        """
        xy, th = np.asarray(pose[:2], dtype=float), float(pose[2])
        hd = np.array([math.cos(th), math.sin(th)])
        p = xy + _FILTER_LOOKAHEAD * hd
        s = np.concatenate([_OBSTACLE_SURFACE, _wall_points(p)])
        d_vec = s - p
        d = np.linalg.norm(d_vec, axis=1)
        n = d_vec / np.maximum(d, 1e-9)[:, None]
        along = n @ hd  # closing speed per unit v
        across = n @ np.array([-hd[1], hd[0]]) * (_FILTER_LOOKAHEAD * omega)  # closing speed from omega
        h = d - (M.DIFF_DRIVE_RADIUS + _FILTER_LOOKAHEAD + _FILTER_MARGIN + self.cap_margin)
        room = self.approach_gain * np.maximum(h, 0.0) - across
        ahead = along > 1e-6
        if not ahead.any():
            return math.inf
        return float(max(np.min(room[ahead] / along[ahead]), 0.0))


def _circle_points(step: float = math.radians(2.5)) -> np.ndarray:
    a = np.arange(0.0, 2 * math.pi, step)
    ring = np.stack([np.cos(a), np.sin(a)], axis=1)
    return np.concatenate([o[:2] + o[2] * ring for o in M.OBSTACLES])


#: points on every obstacle's surface (m, world frame), 2.5 deg apart
_OBSTACLE_SURFACE = _circle_points()


def _wall_points(p: np.ndarray, half: float = 1.5, step: float = 0.05) -> np.ndarray:
    """Points (m) on the four walls' inner faces within ``half`` m of ``p``'s foot point on each."""
    h = M.ROOM_HALF_SIZE
    t = np.arange(-half, half + 1e-9, step)
    out = []
    for k in (0, 1):
        along = np.clip(p[1 - k] + t, -h, h)
        for side in (-h, h):
            pts = np.empty((t.size, 2))
            pts[:, k] = side
            pts[:, 1 - k] = along
            out.append(pts)
    return np.concatenate(out)


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
