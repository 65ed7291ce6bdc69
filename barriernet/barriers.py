"""Control barrier functions ``h(x) >= 0`` and their CBF / HOCBF constraint rows.

A barrier fills rows ``G u <= h`` of the safety filter's QP (``n_controls`` columns):

- relative degree 1, class-K gain k > 0:
  ``Lf h + Lg h u + k h >= 0``  ->  ``G = -Lg h``, ``h_row = Lf h + k h``;
- relative degree 2 (HOCBF, psi1 = h' + p1 h, p1, p2 > 0):
  ``Lf^2 h + Lg Lf h u + (p1 + p2) h' + p1 p2 h >= 0``.

Barrier families (config ``type``, registry :data:`BARRIERS`):

- on the dynamics' point ``p`` (:class:`barriernet.dynamics.Kinematics`; relative degree =
  the point's order: 1 for diff_drive's look-ahead point, 2 for unicycle / double
  integrator): ``half_space``, ``circle_obstacle`` (disc / ball), ``ellipse_obstacle``,
  ``superellipsoid_obstacle``, ``laser_scan`` (nearest ``max_points`` of
  ``env["scan_points"]``, one row each); ``speed_limit`` (|p'| <= max, relative degree 1);
- on joints of mechanical systems: ``joint_position_limits`` (HOCBF, relative degree 2),
  ``joint_velocity_limits`` (relative degree 1);
- ``actuator_box``: no rows; it tightens the control box.

Clearances are in metres: ``h = distance - (obstacle radius + robot_radius + margin +
point_inflation)`` for discs / scan points, so a reported barrier value is the clearance left.
Users add a barrier with :func:`register_barrier` (subclass :class:`Barrier`, or
:class:`StateBarrier` for a relative-degree-1 ``h(x)`` with its gradient).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from barriernet import compiled
from barriernet.dynamics import ControlAffine, Kinematics

__all__ = [
    "BARRIERS",
    "ActuatorBox",
    "Barrier",
    "CircleObstacle",
    "EllipseObstacle",
    "HalfSpace",
    "InputError",
    "JointPositionLimits",
    "JointVelocityLimits",
    "LaserScan",
    "NO_POINT",
    "PointGroup",
    "SpeedLimit",
    "StateBarrier",
    "SuperellipsoidObstacle",
    "make_barrier",
    "register_barrier",
]

_COMMON_KEYS = ("type", "name", "gains", "margin", "priority")
_isfinite = math.isfinite


class InputError(ValueError):
    """Bad run-time input to a barrier (e.g. a missing ``env`` entry): the filter falls back."""


def _vec(cfg: Mapping[str, Any], key: str, where: str, size: int | None = None) -> np.ndarray:
    if key not in cfg:
        raise ValueError(f"{where}: missing '{key}'")
    try:
        a = np.asarray(cfg[key], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}.{key}: expected a list of numbers, got {cfg[key]!r}") from None
    if size is not None and a.size != size:
        raise ValueError(f"{where}.{key}: expected {size} values, got {a.size}")
    if not np.isfinite(a).all():
        raise ValueError(f"{where}.{key}: values must be finite, got {a.tolist()}")
    return a


def _num(
    cfg: Mapping[str, Any], key: str, where: str, default: float | None = None, lo: float = 0.0
) -> float:
    if key not in cfg:
        if default is None:
            raise ValueError(f"{where}: missing '{key}'")
        return default
    try:
        v = float(cfg[key])
    except (TypeError, ValueError):
        raise ValueError(f"{where}.{key}: expected a number, got {cfg[key]!r}") from None
    if not math.isfinite(v) or v < lo:
        raise ValueError(f"{where}.{key}: must be a finite number >= {lo}, got {cfg[key]!r}")
    return v


class Barrier:
    """Base class of a barrier with ``n_rows`` QP rows.

    Attributes set from the config: ``name``, ``margin`` (>= 0, units of h),
    ``priority`` (int; rows of lower priority are relaxed first), ``gains`` (class-K gains,
    one per relative degree, > 0). ``bind`` sets ``relative_degree`` and checks the
    dynamics; ``fill`` writes the rows.
    """

    type_name: ClassVar[str] = ""
    #: the rows are this positive multiple of the CBF condition (same constraint, other scale)
    row_scale: ClassVar[float] = 1.0
    #: config keys besides the common ones (type, name, gains, margin, priority)
    keys: ClassVar[tuple[str, ...]] = ()
    #: consecutive barriers of this class may be evaluated as one vectorised block
    mergeable: ClassVar[bool] = False

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        unknown = set(cfg) - set(_COMMON_KEYS) - set(self.keys)
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {sorted(unknown)} for type {self.type_name!r}; "
                f"allowed: {sorted(set(_COMMON_KEYS[1:]) | set(self.keys))}"
            )
        self.where = where
        self.name = str(cfg.get("name", self.type_name))
        self.margin = _num(cfg, "margin", where, 0.0)
        pr = cfg.get("priority", 0)
        if isinstance(pr, bool) or not isinstance(pr, (int, np.integer, float)) or pr != int(pr):
            raise ValueError(f"{where}.priority: expected an integer, got {pr!r}")
        self.priority = int(pr)
        self.gains = _vec(cfg, "gains", where) if "gains" in cfg else None
        if self.gains is not None and not (self.gains > 0).all():
            raise ValueError(f"{where}.gains: class-K gains must be > 0, got {self.gains.tolist()}")
        self.relative_degree = 1
        self.n_rows = 1
        self.box: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def row_names(self) -> list[str]:
        """One name per row (the barrier's name when it has one row)."""
        if self.n_rows == 1:
            return [self.name]
        return [f"{self.name}[{i}]" for i in range(self.n_rows)]

    @property
    def gain_names(self) -> list[str]:
        """Names of this barrier's class-K gains: ``name.k`` (degree 1) or ``name.p1``, ``name.p2``."""
        if self.relative_degree == 1:
            return [f"{self.name}.k"]
        return [f"{self.name}.p{i + 1}" for i in range(self.relative_degree)]

    def bind(self, dyn: ControlAffine) -> None:
        """Check against the dynamics, set ``relative_degree`` and ``n_rows``; raise ValueError."""
        self._check_gains()

    def _check_gains(self) -> None:
        if self.gains is None:
            raise ValueError(
                f"{self.where}.gains: give {self.relative_degree} class-K gain(s) "
                f"({', '.join(self.gain_names)}), e.g. gains: {[1.0] * self.relative_degree}"
            )
        if self.gains.size != self.relative_degree:
            raise ValueError(
                f"{self.where}.gains: relative degree {self.relative_degree} needs "
                f"{self.relative_degree} gain(s) ({', '.join(self.gain_names)}), got {self.gains.tolist()}"
            )

    def fill(
        self,
        x: np.ndarray,
        kin: Kinematics,
        ks: np.ndarray,
        kp: np.ndarray,
        env: Mapping[str, Any] | None,
        G: np.ndarray,
        h: np.ndarray,
        hv: np.ndarray,
    ) -> None:
        """Write this barrier's rows at state ``x``.

        Args:
            x: (n_state,) finite state; kin: its :class:`Kinematics`.
            ks, kp: (n_rows,) per-row gains: ks = k (relative degree 1) or p1 + p2 (degree 2),
                kp = p1 p2 (degree 2; unused for degree 1).
            env: run-time environment (e.g. ``scan_points``); raise :class:`InputError` if unusable.
            G: (n_rows, n_controls), h: (n_rows,): rows ``G u <= h`` (written in place).
            hv: (n_rows,) barrier values h(x) for the report (written in place).
        """
        raise NotImplementedError

    def merge(self, others: list[Barrier]) -> Barrier:
        """One barrier evaluating ``[self] + others`` (same class) as one block."""
        raise NotImplementedError


class _PointBarrier(Barrier):
    """Barrier ``h(p)`` on the dynamics' point.

    Subclasses write, for their rows, h (``hv``), ``ngrad`` = -dh/dp (d per row) and, for
    point order 2, ``curv`` = v' Hess(h) v into the views given by :meth:`attach`;
    :class:`PointGroup` turns them into rows for all point barriers at once.
    """

    mergeable = True
    _row_arrays: ClassVar[tuple[str, ...]] = ()

    def bind(self, dyn: ControlAffine) -> None:
        if dyn.point_order not in (1, 2):
            raise ValueError(
                f"{self.where}: type {self.type_name!r} needs dynamics with a position "
                f"(unicycle, diff_drive, double_integrator, or manipulator with dynamics.point: "
                f"{{site: name}}), not {type(dyn).__name__} without one"
            )
        self.dim = dyn.point_dim
        self.order = dyn.point_order
        self.inflation = dyn.point_inflation
        self.relative_degree = self.order
        self._bind_dim()
        self._check_gains()

    def _bind_dim(self) -> None:
        pass

    def attach(self, hv: np.ndarray, ngrad: np.ndarray, curv: np.ndarray) -> None:
        """Give the barrier its output views (n_rows,), (n_rows, d), (n_rows,); once, at build."""
        self.hv, self.ngrad, self.curv = hv, ngrad, curv

    def phi(self, p: np.ndarray, v: np.ndarray | None, env: Mapping[str, Any] | None) -> None:
        """Write h, -dh/dp and (v given) v' Hess(h) v at point p (d,) into the attached views."""
        raise NotImplementedError

    def fill(self, x, kin, ks, kp, env, G, h, hv) -> None:  # type: ignore[no-untyped-def]
        grp = getattr(self, "_solo", None)
        if grp is None:
            grp = self._solo = PointGroup([self], np.zeros(self.n_rows))
        grp.fill(x, kin, ks, kp, env, G, h, hv)
        hv[:] = grp.hv

    def merge(self, others: list[Barrier]) -> Barrier:
        out = copy.copy(self)
        allb = [self, *others]
        for a in self._row_arrays:
            setattr(out, a, np.concatenate([getattr(b, a) for b in allb], axis=0))
        out.n_rows = sum(b.n_rows for b in allb)
        out._names = [n for b in allb for n in b.row_names]  # type: ignore[attr-defined]
        out._after_merge()
        return out

    def _after_merge(self) -> None:
        pass

    @property
    def row_names(self) -> list[str]:
        names = getattr(self, "_names", None)
        return list(names) if names is not None else Barrier.row_names.fget(self)  # type: ignore[attr-defined]


class PointGroup:
    """Rows of consecutive point barriers, evaluated together (one matmul for all rows).

    Order 1 (p' = c + J u):   G = ngrad J,   h = ks hv - ngrad c.
    Order 2 (p' = v, p'' = a0 + B u):
        h'' = curv - ngrad (a0 + B u),  h' = -ngrad v
        ->  G = ngrad B,  h = curv - ngrad a0 - ks ngrad v + kp hv.
    ``hv`` (m,) is the filter's barrier-value view for these rows (members write into it).
    """

    def __init__(self, members: list[_PointBarrier], hv: np.ndarray) -> None:
        self.members = members
        m = sum(b.n_rows for b in members)
        d = members[0].dim
        self.order = members[0].order
        self.hv = hv
        self.ngrad = np.zeros((m, d))
        self.curv = np.zeros(m)
        self._hd = np.zeros(m)
        self._curved = any(not isinstance(b, HalfSpace) for b in members)  # else v'Hess v = 0
        r = 0
        self._phis = []
        for b in members:
            b.attach(hv[r : r + b.n_rows], self.ngrad[r : r + b.n_rows], self.curv[r : r + b.n_rows])
            self._phis.append(b.phi)
            r += b.n_rows

    def fill(self, x, kin, ks, kp, env, G, h, hv) -> None:  # type: ignore[no-untyped-def]
        ng = self.ngrad
        if self.order == 1:
            for phi in self._phis:
                phi(kin.p, None, env)
            np.dot(ng, kin.J, out=G)
            np.multiply(ks, self.hv, out=h)
            if not kin.drift_zero:
                h -= ng @ kin.c
        else:
            for phi in self._phis:
                phi(kin.p, kin.v, env)
            np.dot(ng, kin.B, out=G)
            hd = self._hd
            np.dot(ng, kin.v, out=hd)
            hd *= ks
            np.multiply(kp, self.hv, out=h)
            if self._curved:
                h += self.curv
            h -= hd
            if not kin.drift_zero:
                h -= ng @ kin.a0


class HalfSpace(_PointBarrier):
    """Workspace limit ``n . p <= offset``: h = offset - n.p - radius - margin - inflation (m).

    ``normal`` is normalised (offset scaled with it). Linear: no curvature term.
    """

    type_name = "half_space"
    keys = ("normal", "offset", "radius")
    _row_arrays = ("N", "off")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        super().__init__(cfg, where)
        n = _vec(cfg, "normal", where)
        norm = float(np.linalg.norm(n))
        if norm == 0.0:
            raise ValueError(f"{where}.normal: expected a nonzero vector, got {n.tolist()}")
        off = _num(cfg, "offset", where, lo=-math.inf) / norm
        self.N = (n / norm)[None, :]
        self.off = np.array([off - _num(cfg, "radius", where, 0.0) - self.margin])

    def _bind_dim(self) -> None:
        if self.N.shape[1] != self.dim:
            raise ValueError(f"{self.where}.normal: the dynamics' position is {self.dim}-D")
        self.off = self.off - self.inflation

    def attach(self, hv: np.ndarray, ngrad: np.ndarray, curv: np.ndarray) -> None:
        super().attach(hv, ngrad, curv)
        ngrad[:] = self.N  # -dh/dp = n, constant; curvature 0
        curv[:] = 0.0
        self._Np = np.zeros(self.n_rows)

    def phi(self, p, v, env) -> None:  # type: ignore[no-untyped-def]
        np.dot(self.N, p, out=self._Np)
        np.subtract(self.off, self._Np, out=self.hv)


class CircleObstacle(_PointBarrier):
    """Disc (2-D) / ball (3-D) obstacle (m):
    h = |p - center| - (radius + robot_radius + margin + inflation)."""

    type_name = "circle_obstacle"
    keys = ("center", "radius", "robot_radius")
    _row_arrays = ("C", "R")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        super().__init__(cfg, where)
        self.C = _vec(cfg, "center", where)[None, :]
        self.R = np.array([_num(cfg, "radius", where) + _num(cfg, "robot_radius", where, 0.0) + self.margin])

    def _bind_dim(self) -> None:
        if self.C.shape[1] != self.dim:
            raise ValueError(f"{self.where}.center: the dynamics' position is {self.dim}-D")
        self.R = self.R + self.inflation

    def attach(self, hv: np.ndarray, ngrad: np.ndarray, curv: np.ndarray) -> None:
        super().attach(hv, ngrad, curv)
        self._disc = _Disc(self.n_rows, self.dim)

    def phi(self, p, v, env) -> None:  # type: ignore[no-untyped-def]
        self._disc.eval(p, v, self.C, self.R, self.hv, self.ngrad, self.curv)


class _Disc:
    """Distance barriers to m centres, with preallocated work arrays."""

    def __init__(self, m: int, d: int) -> None:
        self.D = np.zeros((m, d))
        self.dist = np.zeros(m)
        self.dist2 = self.dist[:, None]
        self.gv = np.zeros(m)

    def eval(self, p, v, C, R, hv, ngrad, curv) -> None:  # type: ignore[no-untyped-def]
        D, dist = self.D, self.dist
        np.subtract(C, p, out=D)  # C - p = |p - C| * (-dh/dp)
        np.einsum("ij,ij->i", D, D, out=dist)
        np.sqrt(dist, out=dist)
        np.divide(D, self.dist2, out=ngrad)  # dist = 0 (centre inside the obstacle) gives nan: fallback
        np.subtract(dist, R, out=hv)
        if v is not None:  # v' Hess v = (|v|^2 - (grad.v)^2) / dist
            gv = self.gv
            np.matmul(ngrad, v, out=gv)
            np.multiply(gv, gv, out=gv)
            np.subtract(float(v @ v), gv, out=curv)
            np.divide(curv, dist, out=curv)


class SuperellipsoidObstacle(_PointBarrier):
    """Super-ellipsoid obstacle h = sum_i |z_i / a_i|^n - 1 (dimensionless), n = ``exponent`` >= 2.

    z = R(angle)' (p - center) (``angle`` in rad, 2-D only), a = ``axes`` + robot_radius +
    margin + inflation: inflating each semi-axis by the robot's radius contains the
    Minkowski sum for ellipses (n = 2) and boxes (n -> inf).
    """

    type_name = "superellipsoid_obstacle"
    keys: ClassVar[tuple[str, ...]] = ("center", "axes", "exponent", "angle", "robot_radius")
    _row_arrays = ("C", "A", "E", "cs")
    default_exponent = 4.0

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        super().__init__(cfg, where)
        self.C = _vec(cfg, "center", where)[None, :]
        d = self.C.shape[1]
        ax = _vec(cfg, "axes", where, d)
        if not (ax > 0).all():
            raise ValueError(f"{where}.axes: semi-axes must be > 0, got {ax.tolist()}")
        self.A = (ax + _num(cfg, "robot_radius", where, 0.0) + self.margin)[None, :]
        e = _num(cfg, "exponent", where, self.default_exponent)
        if e < 2:
            raise ValueError(f"{where}.exponent: must be >= 2 (smooth, convex), got {e}")
        self.E = np.array([[e]])
        ang = _num(cfg, "angle", where, 0.0, lo=-math.inf)
        if ang != 0.0 and d != 2:
            raise ValueError(f"{where}.angle: rotation is supported in 2-D only")
        self.cs = np.array([[math.cos(ang), math.sin(ang)]])

    def _bind_dim(self) -> None:
        if self.C.shape[1] != self.dim:
            raise ValueError(f"{self.where}.center: the dynamics' position is {self.dim}-D")
        self.A = self.A + self.inflation

    def _rot(self, w: np.ndarray, inverse: bool) -> np.ndarray:
        if self.dim != 2:
            return w
        c, s = self.cs[:, 0], self.cs[:, 1]
        if inverse:  # world -> local: R' w
            return np.stack([c * w[:, 0] + s * w[:, 1], -s * w[:, 0] + c * w[:, 1]], axis=1)
        return np.stack([c * w[:, 0] - s * w[:, 1], s * w[:, 0] + c * w[:, 1]], axis=1)

    def phi(self, p, v, env) -> None:  # type: ignore[no-untyped-def]
        z = self._rot(p - self.C, True) / self.A
        az = np.abs(z)
        e = self.E
        pw = az ** (e - 2.0)  # |z|^(n-2)
        self.hv[:] = (pw * az * az).sum(axis=1) - 1.0
        grad_l = e * pw * z / self.A  # d/dz_i |z_i|^n = n |z_i|^(n-2) z_i
        self.ngrad[:] = -self._rot(grad_l, False)
        if v is not None:
            vl = self._rot(np.broadcast_to(v, grad_l.shape), True)
            hess_l = e * (e - 1.0) * pw / (self.A * self.A)
            self.curv[:] = (hess_l * vl * vl).sum(axis=1)


class EllipseObstacle(SuperellipsoidObstacle):
    """Ellipse (2-D) / ellipsoid obstacle: a super-ellipsoid with exponent 2 (``exponent`` not allowed)."""

    type_name = "ellipse_obstacle"
    keys: ClassVar[tuple[str, ...]] = ("center", "axes", "angle", "robot_radius")
    default_exponent = 2.0


#: Barrier value reported for scan rows without a point (and their h row bound).
NO_POINT = 1e30


class LaserScan(_PointBarrier):
    """Range-sensor obstacles: the ``max_points`` scan points nearest the point p, one row each.

    h_i = |p - s_i| - (radius + margin + inflation) (m), s_i from ``env[env_key]`` (N, 2)
    world-frame points (``env_key`` default ``scan_points``). Non-finite points (no return)
    are ignored; with fewer than ``max_points`` points the spare rows read ``0 u <= 1e30``
    and report barrier value :data:`NO_POINT` (1e30). A missing or malformed entry raises
    :class:`InputError` (the filter falls back).
    """

    type_name = "laser_scan"
    keys = ("radius", "max_points", "env_key")
    mergeable = False

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        super().__init__(cfg, where)
        self.R0 = _num(cfg, "radius", where, 0.0) + self.margin
        mp = cfg.get("max_points", 16)
        if isinstance(mp, bool) or not isinstance(mp, (int, np.integer)) or not 1 <= mp <= 4096:
            raise ValueError(f"{where}.max_points: expected an integer in 1..4096, got {mp!r}")
        self.n_rows = int(mp)
        self.env_key = str(cfg.get("env_key", "scan_points"))

    def _bind_dim(self) -> None:
        if self.dim != 2:
            raise ValueError(f"{self.where}: laser_scan needs 2-D positions, the dynamics' are {self.dim}-D")
        self.R = np.full(self.n_rows, self.R0 + self.inflation)

    def attach(self, hv: np.ndarray, ngrad: np.ndarray, curv: np.ndarray) -> None:
        super().attach(hv, ngrad, curv)
        self._discs = [_Disc(n, 2) for n in range(self.n_rows + 1)]
        self._gv = np.zeros(self.n_rows)
        # -dh/dp rows as complex numbers (the same memory): one division writes both columns
        self._ngrad_c = ngrad.view(np.complex128).reshape(-1) if ngrad.flags.c_contiguous else None
        # the nearest rows in one compiled call where numba runs (barriernet.compiled), else numpy
        self._jit = compiled.nearest_rows() if self._ngrad_c is not None else None
        self._sel_d, self._sel_i = np.zeros(self.n_rows), np.zeros(self.n_rows, dtype=np.int64)
        if self._jit is not None:  # compile (or load) now, on scratch arrays, not in the first call
            m = self.n_rows
            self._jit(np.ones((m + 1, 2)), 0.0, 0.0, 0.0, 0.0, False, np.zeros(m), np.zeros(m),
                      np.zeros((m, 2)), np.zeros(m), np.zeros(m), np.zeros(m, dtype=np.int64))  # fmt: skip

    def phi(self, p, v, env) -> None:  # type: ignore[no-untyped-def]
        pts = None if env is None else env.get(self.env_key)
        if pts is None:
            raise InputError(f"env[{self.env_key!r}] missing: the {self.name} barrier needs (N, 2) points")
        pts = np.asarray(pts, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise InputError(f"env[{self.env_key!r}]: expected an (N, 2) array, got shape {pts.shape}")
        n, m = pts.shape[0], self.n_rows
        if n > m and self._ngrad_c is not None:
            # the m nearest finite points, nearest first (ties: lower index first)
            if not pts.flags.c_contiguous:
                pts = np.ascontiguousarray(pts)
            jit = self._jit
            if jit is not None:
                vx, vy = (0.0, 0.0) if v is None else (float(v[0]), float(v[1]))
                args = (self.R, self.hv, self.ngrad, self.curv, self._sel_d, self._sel_i)
                if jit(pts, float(p[0]), float(p[1]), vx, vy, v is not None, *args):
                    return
            # in the complex plane: z = s - p, |z| by hypot; no-return points (nan / inf) sort
            # after every finite distance, so if the m selected distances are finite they are
            # the m nearest finite points
            z = pts.view(np.complex128).reshape(-1)
            z = z - complex(p[0], p[1])
            dist_all = np.abs(z)
            idx = dist_all.argpartition(m - 1)[:m]  # the method: no dispatch layer on the hot path
            dist = dist_all[idx]
            if _isfinite(dist[m - 1]):  # the m-th smallest, the largest selected (nan sorts last)
                order = np.lexsort((idx, dist))  # nearest first, ties by index (as the compiled call)
                idx, dist = idx[order], dist[order]
                np.divide(z[idx], dist, out=self._ngrad_c)  # (s - p) / |s - p| = -dh/dp
                np.subtract(dist, self.R, out=self.hv)
                if v is not None:
                    self._curvature(v, dist)
                return
        ok = np.isfinite(pts).all(axis=1)
        if not ok.all():
            pts = pts[ok]
            n = pts.shape[0]
        if n <= m:
            if n < m:
                self.hv[n:] = NO_POINT
                self.ngrad[n:] = 0.0
                self.curv[n:] = 0.0
            if n:
                self._discs[n].eval(p, v, pts, self.R[:n], self.hv[:n], self.ngrad[:n], self.curv[:n])
            return
        d = pts - p
        d2 = np.einsum("ij,ij->i", d, d)
        idx = d2.argpartition(m - 1)[:m]
        dist = np.sqrt(d2[idx])
        np.divide(d[idx], dist[:, None], out=self.ngrad)
        np.subtract(dist, self.R, out=self.hv)
        if v is not None:
            self._curvature(v, dist)

    def _curvature(self, v: np.ndarray, dist: np.ndarray) -> None:
        """v' Hess(h) v = (|v|^2 - (grad.v)^2) / dist, for point order 2."""
        gv = self._gv
        np.dot(self.ngrad, v, out=gv)
        np.multiply(gv, gv, out=gv)
        np.subtract(float(v @ v), gv, out=self.curv)
        np.divide(self.curv, dist, out=self.curv)


class SpeedLimit(Barrier):
    """|p'| <= max (m/s): h = (max - margin)^2 - |v|^2 (m^2/s^2), relative degree 1 (point order 2)."""

    type_name = "speed_limit"
    keys = ("max",)
    row_scale = 0.5

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        super().__init__(cfg, where)
        vmax = _num(cfg, "max", where) - self.margin
        if vmax <= 0:
            raise ValueError(f"{where}: max - margin must be > 0")
        self.v2 = vmax * vmax

    def bind(self, dyn: ControlAffine) -> None:
        if dyn.point_order != 2:
            raise ValueError(
                f"{self.where}: speed_limit needs a velocity state (unicycle, double_integrator); "
                f"for {type(dyn).__name__} bound the speed with the controls box"
            )
        self._check_gains()

    def fill(self, x, kin, ks, kp, env, G, h, hv) -> None:  # type: ignore[no-untyped-def]
        v = kin.v
        hval = self.v2 - float(v @ v)
        # h' = -2 v . (a0 + B u) >= -k h, halved:  v'B u <= k h / 2 - v.a0
        np.matmul(v, kin.B, out=G[0])
        h[0] = 0.5 * float(ks[0]) * hval
        if not kin.drift_zero:
            h[0] -= float(v @ kin.a0)
        hv[0] = hval


class _JointBarrier(Barrier):
    """Lower and upper limits per joint: rows [lower_0..k-1, upper_0..k-1]."""

    keys = ("lower", "upper", "joints")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        super().__init__(cfg, where)
        self.lo = _vec(cfg, "lower", where)
        self.hi = _vec(cfg, "upper", where, self.lo.size)
        if not (self.lo + 2 * self.margin < self.hi).all():
            raise ValueError(
                f"{where}: need lower + 2 margin < upper for every joint, got lower={self.lo.tolist()}, "
                f"upper={self.hi.tolist()}, margin={self.margin}"
            )
        j = cfg.get("joints")
        self.joints = None if j is None else np.asarray(j, dtype=np.intp).reshape(-1)
        self.n_rows = 2 * self.lo.size

    @property
    def row_names(self) -> list[str]:
        idx = self.joints if self.joints is not None else range(self.lo.size)
        return [f"{self.name}.lower[{i}]" for i in idx] + [f"{self.name}.upper[{i}]" for i in idx]

    def bind(self, dyn: ControlAffine) -> None:
        if dyn.n_joints == 0:
            raise ValueError(
                f"{self.where}: {self.type_name} needs a mechanical system (manipulator, double_integrator)"
            )
        if self.joints is None:
            if self.lo.size != dyn.n_joints:
                raise ValueError(
                    f"{self.where}.lower: {dyn.n_joints} joints, got {self.lo.size} limits "
                    "(or give 'joints: [indices]')"
                )
            self.joints = np.arange(dyn.n_joints)
        elif (
            self.joints.size != self.lo.size or not ((self.joints >= 0) & (self.joints < dyn.n_joints)).all()
        ):
            raise ValueError(f"{self.where}.joints: {self.lo.size} indices in 0..{dyn.n_joints - 1} expected")
        self.idx2 = np.concatenate([self.joints, self.joints])
        self.sign = np.concatenate([np.ones(self.lo.size), -np.ones(self.lo.size)])
        # h = sign (q - bound) - margin = sign q - (sign bound + margin)
        self.shift = self.sign * np.concatenate([self.lo, self.hi]) + self.margin
        # rows as products with the signed selection S (n_rows, n_joints), entries 0 / +-1:
        # S q = sign q[idx2] exactly, one matvec instead of an index, a product and a copy
        S = np.zeros((self.n_rows, dyn.n_joints))
        S[np.arange(self.n_rows), self.idx2] = self.sign
        self._S, self._negS = S, -S
        self._t1, self._t2 = np.zeros(self.n_rows), np.zeros(self.n_rows)
        self.relative_degree = self._degree
        self._check_gains()

    _degree = 1


class JointPositionLimits(_JointBarrier):
    """HOCBF (relative degree 2) on joint positions: h = q - (lower + margin), (upper - margin) - q."""

    type_name = "joint_position_limits"
    _degree = 2

    def fill(self, x, kin, ks, kp, env, G, h, hv) -> None:  # type: ignore[no-untyped-def]
        S, t1, t2 = self._S, self._t1, self._t2
        np.dot(S, kin.q, out=hv)  # h = s q - shift
        hv -= self.shift
        np.dot(S, kin.dq, out=t1)  # h' = s dq
        t1 *= ks
        # h'' = s (qdd0 + B u) >= -(p1 + p2) h' - p1 p2 h
        np.dot(self._negS, kin.qddB, out=G)
        np.dot(S, kin.qdd0, out=h)
        h += t1
        np.multiply(kp, hv, out=t2)
        h += t2


class JointVelocityLimits(_JointBarrier):
    """CBF (relative degree 1) on joint velocities: h = dq - (lower + margin), (upper - margin) - dq."""

    type_name = "joint_velocity_limits"
    _degree = 1

    def fill(self, x, kin, ks, kp, env, G, h, hv) -> None:  # type: ignore[no-untyped-def]
        S, t1 = self._S, self._t1
        np.dot(S, kin.dq, out=hv)  # h = s dq - shift
        hv -= self.shift
        np.dot(self._negS, kin.qddB, out=G)
        np.dot(S, kin.qdd0, out=h)
        np.multiply(ks, hv, out=t1)
        h += t1


class ActuatorBox(Barrier):
    """Extra box ``lower <= u <= upper`` intersected with the controls box (no QP rows, never relaxed)."""

    type_name = "actuator_box"
    keys = ("lower", "upper")

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        super().__init__(cfg, where)
        lo = _vec(cfg, "lower", where)
        hi = _vec(cfg, "upper", where, lo.size)
        if not (lo <= hi).all():
            raise ValueError(f"{where}: lower must be <= upper, got {lo.tolist()} / {hi.tolist()}")
        self.box = (lo, hi)
        self.n_rows = 0

    @property
    def gain_names(self) -> list[str]:
        return []

    def bind(self, dyn: ControlAffine) -> None:
        if self.box is not None and self.box[0].size != dyn.n_controls:
            raise ValueError(f"{self.where}.lower: {dyn.n_controls} controls, got {self.box[0].size}")

    def fill(self, x, kin, ks, kp, env, G, h, hv) -> None:  # type: ignore[no-untyped-def]
        return None


class StateBarrier(Barrier):
    """User barrier of relative degree 1 on the full state: subclass and define ``value(x)`` and
    ``gradient(x)`` ((n_state,)); the rows use the dynamics' f and g:
    ``-(dh/dx g) u <= dh/dx f + k h``."""

    def bind(self, dyn: ControlAffine) -> None:
        self._dyn = dyn
        self._check_gains()

    def value(self, x: np.ndarray) -> float:
        raise NotImplementedError

    def gradient(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fill(self, x, kin, ks, kp, env, G, h, hv) -> None:  # type: ignore[no-untyped-def]
        hval = float(self.value(x))
        dh = np.asarray(self.gradient(x), dtype=np.float64)
        G[0] = -(dh @ self._dyn.g(x))
        h[0] = float(dh @ self._dyn.f(x)) + ks[0] * hval
        hv[0] = hval


#: Barrier classes by config ``type``.
BARRIERS: dict[str, type[Barrier]] = {}


def register_barrier(name: str, cls: type[Barrier]) -> None:
    """Make ``cls`` (a :class:`Barrier` subclass taking ``(cfg, where)``) available as ``type: name``."""
    if not (isinstance(cls, type) and issubclass(cls, Barrier)):
        raise ValueError(f"register_barrier: cls must be a Barrier subclass, got {cls!r}")
    if name in BARRIERS:
        raise ValueError(f"barrier type {name!r} already registered")
    BARRIERS[name] = cls


for _c in (
    HalfSpace,
    CircleObstacle,
    EllipseObstacle,
    SuperellipsoidObstacle,
    LaserScan,
    SpeedLimit,
    JointPositionLimits,
    JointVelocityLimits,
    ActuatorBox,
):
    register_barrier(_c.type_name, _c)


def make_barrier(cfg: Mapping[str, Any], where: str = "barrier") -> Barrier:
    """Barrier from one config mapping ``{type, name, gains, margin, priority, ...}``."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"{where}: expected a mapping with 'type' (one of {sorted(BARRIERS)}), got {cfg!r}")
    t = cfg["type"]
    if t not in BARRIERS:
        raise ValueError(f"{where}.type {t!r} unknown; choose one of {sorted(BARRIERS)}")
    return BARRIERS[t](cfg, where)
