"""Control-affine dynamics ``x' = f(x) + g(x) u`` as small objects the safety filter consumes.

Every model gives ``f(x)`` (n_state,) and ``g(x)`` (n_state, n_controls), float64, SI units.
Barriers do not differentiate through ``f`` and ``g`` generically (too slow for a run-time
filter); instead a model fills a :class:`Kinematics` record once per filter call with the
quantities barrier families need:

- *point* quantities for obstacle / workspace barriers on a position ``p`` (d = 2 or 3):
  order 1 (``p' = c + J u``, e.g. the diff-drive look-ahead point) or order 2
  (``p' = v``, ``p'' = a0 + B u``, e.g. unicycle, double integrator);
- *joint* quantities for joint-limit barriers of mechanical systems: ``q``, ``dq`` and
  ``q'' = qdd0 + qddB u``.

Models by name from :data:`DYNAMICS` (``unicycle``, ``diff_drive``, ``double_integrator``,
``manipulator``, ``planar_arm``); :func:`register_dynamics` adds a user class (a subclass of
:class:`ControlAffine`, e.g. one built on :class:`CallableDynamics` with numpy or torch f and g)
without touching the filter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "DYNAMICS",
    "CallableDynamics",
    "ControlAffine",
    "DiffDrive",
    "DoubleIntegrator",
    "Kinematics",
    "Manipulator",
    "MujocoManipulator",
    "PlanarArm",
    "Unicycle",
    "make_dynamics",
    "register_dynamics",
]


class Kinematics:
    """Per-call quantities a model exposes to barriers (arrays are reused between calls).

    Attributes:
        point_order: 0 (no point), 1 (``p' = c + J u``) or 2 (``p' = v``, ``p'' = a0 + B u``).
        drift_zero: True when c (order 1) or a0 (order 2) is identically zero (a model that
            fills them sets it False).
        p: (d,) position of the constrained point, m.
        c, J: order 1: drift (d,) and input map (d, n_controls) of ``p'``.
        v, a0, B: order 2: velocity (d,), acceleration drift (d,) and input map (d, n_controls).
        has_joints: whether q, dq, qdd0, qddB are set.
        q, dq: (k,) joint positions (rad or m) and velocities.
        qdd0, qddB: ``q'' = qdd0 + qddB u``: (k,) and (k, n_controls).
    """

    __slots__ = (
        "point_order",
        "drift_zero",
        "p",
        "c",
        "J",
        "v",
        "a0",
        "B",
        "has_joints",
        "q",
        "dq",
        "qdd0",
        "qddB",
    )

    def __init__(self, d: int, n_controls: int, point_order: int, n_joints: int) -> None:
        self.point_order = point_order
        self.drift_zero = True  # c == 0 (order 1) / a0 == 0 (order 2): lets barriers skip a term
        self.p = np.zeros(d)
        self.c = np.zeros(d)
        self.J = np.zeros((d, n_controls))
        self.v = np.zeros(d)
        self.a0 = np.zeros(d)
        self.B = np.zeros((d, n_controls))
        self.has_joints = n_joints > 0
        self.q = np.zeros(n_joints)
        self.dq = np.zeros(n_joints)
        self.qdd0 = np.zeros(n_joints)
        self.qddB = np.zeros((n_joints, n_controls))


class ControlAffine:
    """Base class: ``x' = f(x) + g(x) u``.

    Subclasses set ``n_state``, ``n_controls``, ``state_names`` and implement ``f`` and ``g``;
    optionally ``point_dim`` / ``point_order`` and ``_fill_point`` (obstacle barriers),
    ``n_joints`` and ``_fill_joints`` (joint-limit barriers), and ``brake`` / ``bias``
    (fallbacks). ``point_inflation`` (m) is how much farther than the body centre the
    constrained point may be from an obstacle (the diff-drive look-ahead distance).
    """

    n_state: int = 0
    n_controls: int = 0
    state_names: tuple[str, ...] = ()
    point_dim: int = 0
    point_order: int = 0
    point_inflation: float = 0.0
    n_joints: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ControlAffine:
        """Build from the ``dynamics:`` mapping without its ``type`` key."""
        return cls(**dict(cfg))

    def f(self, x: np.ndarray) -> np.ndarray:
        """Drift (n_state,)."""
        raise NotImplementedError

    def g(self, x: np.ndarray) -> np.ndarray:
        """Input map (n_state, n_controls)."""
        raise NotImplementedError

    def xdot(self, x: np.ndarray, u: Any) -> np.ndarray:
        """``f(x) + g(x) u`` (n_state,)."""
        return self.f(x) + self.g(x) @ np.asarray(u, dtype=np.float64)

    def new_kinematics(self) -> Kinematics:
        """A preallocated :class:`Kinematics` record for :meth:`kinematics`."""
        return Kinematics(self.point_dim, self.n_controls, self.point_order, self.n_joints)

    def kinematics(self, x: np.ndarray, out: Kinematics) -> Kinematics:
        """Fill ``out`` at state ``x`` (n_state,) finite; returns ``out``."""
        if self.point_order:
            self._fill_point(x, out)
        if self.n_joints:
            self._fill_joints(x, out)
        return out

    def _fill_point(self, x: np.ndarray, out: Kinematics) -> None:
        raise NotImplementedError

    def _fill_joints(self, x: np.ndarray, out: Kinematics) -> None:
        raise NotImplementedError

    def brake(self, x: np.ndarray) -> np.ndarray:
        """A command that slows the system down (before clipping to the box); zero by default."""
        return np.zeros(self.n_controls)

    def bias(self, x: np.ndarray) -> np.ndarray:
        """Joint torques that hold the current motion (gravity + Coriolis), manipulators only."""
        raise ValueError(
            f"{type(self).__name__} has no bias forces (gravity_compensation needs a manipulator)"
        )


def _check_pos(name: str, value: float, allow_zero: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(
            f"dynamics.{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}"
        )
    return v


class Unicycle(ControlAffine):
    """Unicycle with speed state (BarrierNet's 2-D robot): x = (px, py, theta, v), u = (omega, a).

    px' = v cos(theta), py' = v sin(theta), theta' = omega, v' = a. The position is relative
    degree 2 (point order 2): p'' = a (cos, sin) + v omega (-sin, cos).
    ``brake_gain`` (1/s): the brake fallback commands a = -brake_gain v, omega = 0.
    """

    n_state, n_controls = 4, 2
    state_names = ("px", "py", "theta", "v")
    point_dim, point_order = 2, 2

    def __init__(self, brake_gain: float = 2.0) -> None:
        self.brake_gain = _check_pos("brake_gain", brake_gain)

    def f(self, x: np.ndarray) -> np.ndarray:
        return np.array([x[3] * math.cos(x[2]), x[3] * math.sin(x[2]), 0.0, 0.0])

    def g(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((4, 2))
        out[2, 0] = out[3, 1] = 1.0
        return out

    def _fill_point(self, x: np.ndarray, out: Kinematics) -> None:
        px, py, th, v = x.tolist()
        c, s = math.cos(th), math.sin(th)
        out.p[0], out.p[1] = px, py
        out.v[0], out.v[1] = v * c, v * s
        B = out.B
        B[0, 0], B[1, 0], B[0, 1], B[1, 1] = -v * s, v * c, c, s

    def brake(self, x: np.ndarray) -> np.ndarray:
        return np.array([0.0, -self.brake_gain * float(x[3])])


class DiffDrive(ControlAffine):
    """Kinematic differential drive: x = (px, py, theta), u = (v, omega).

    The centre's velocity does not depend on omega, so a distance barrier on the centre has
    relative degree 1 in v only and cannot steer. Obstacle barriers therefore act on the
    look-ahead point ``p = (px + l cos, py + l sin)`` (l = ``lookahead``, m), whose velocity
    ``p' = J(theta) u`` with ``J = [[cos, -l sin], [sin, l cos]]`` is invertible for l > 0.
    Since |p - centre| = l, barriers inflate their clearance by l (``point_inflation``), so
    h(p) >= 0 implies the body-centre clearance >= 0.
    """

    n_state, n_controls = 3, 2
    state_names = ("px", "py", "theta")
    point_dim, point_order = 2, 1

    def __init__(self, lookahead: float = 0.05) -> None:
        self.lookahead = _check_pos("lookahead", lookahead)
        self.point_inflation = self.lookahead

    def f(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(3)

    def g(self, x: np.ndarray) -> np.ndarray:
        c, s = math.cos(x[2]), math.sin(x[2])
        return np.array([[c, 0.0], [s, 0.0], [0.0, 1.0]])

    def _fill_point(self, x: np.ndarray, out: Kinematics) -> None:
        px, py, th = x.tolist()
        c, s = math.cos(th), math.sin(th)
        l = self.lookahead
        out.p[0], out.p[1] = px + l * c, py + l * s
        J = out.J
        J[0, 0], J[0, 1], J[1, 0], J[1, 1] = c, -l * s, s, l * c


class DoubleIntegrator(ControlAffine):
    """Double integrator in ``dim`` dimensions (1..64; 2 or 3 for a robot in space):
    x = (p, v), u = a (m/s^2).

    Also a mechanical system for joint-limit barriers (q = p, dq = v, q'' = u).
    ``brake_gain`` (1/s): brake fallback a = -brake_gain v.
    """

    point_order = 2

    def __init__(self, dim: int = 2, brake_gain: float = 2.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= 64:
            raise ValueError(f"dynamics.dim must be an integer in 1..64 (2 or 3 for a robot), got {dim!r}")
        self.dim = int(dim)
        self.n_state, self.n_controls = 2 * self.dim, self.dim
        axes = "xyz" if self.dim <= 3 else [str(i) for i in range(self.dim)]
        self.state_names = tuple(f"p{a}" for a in axes[: self.dim]) + tuple(f"v{a}" for a in axes[: self.dim])
        self.point_dim = self.n_joints = self.dim
        self.brake_gain = _check_pos("brake_gain", brake_gain)
        self._g = np.vstack([np.zeros((self.dim, self.dim)), np.eye(self.dim)])

    def f(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x[self.dim :], np.zeros(self.dim)])

    def g(self, x: np.ndarray) -> np.ndarray:
        return self._g.copy()

    def new_kinematics(self) -> Kinematics:
        k = super().new_kinematics()
        k.B[:] = np.eye(self.dim)
        k.qddB[:] = np.eye(self.dim)
        return k

    def _fill_point(self, x: np.ndarray, out: Kinematics) -> None:
        d = self.dim
        out.p, out.v = x[:d], x[d:]  # views of the caller's state, read during this call only

    def _fill_joints(self, x: np.ndarray, out: Kinematics) -> None:
        out.q, out.dq = out.p, out.v  # same numbers: share the arrays (filled by _fill_point)

    def brake(self, x: np.ndarray) -> np.ndarray:
        return -self.brake_gain * np.asarray(x[self.dim :], dtype=np.float64)


class Manipulator(ControlAffine):
    """Joint-space manipulator ``M(q) q'' + b(q, dq) = tau``: x = (q, dq), u = tau (N m).

    ``b`` holds Coriolis, gravity and (minus) passive forces such as joint damping.
    Give ``mass_matrix(q) -> (k, k)`` and ``bias(q, dq) -> (k,)`` callables (numpy or torch:
    anything with ``numpy()`` or array conversion), or subclass and override :meth:`_mb`.
    ``damping`` (N m s/rad) is the joint damping the gravity-compensation fallback adds.
    """

    def __init__(
        self,
        n_joints: int,
        mass_matrix: Callable[[np.ndarray], Any] | None = None,
        bias: Callable[[np.ndarray, np.ndarray], Any] | None = None,
        damping: float = 1.0,
    ) -> None:
        if int(n_joints) < 1:
            raise ValueError(f"dynamics.n_joints must be >= 1, got {n_joints!r}")
        self.n_joints = int(n_joints)
        self.n_state, self.n_controls = 2 * self.n_joints, self.n_joints
        self.state_names = tuple(f"q{i + 1}" for i in range(self.n_joints)) + tuple(
            f"dq{i + 1}" for i in range(self.n_joints)
        )
        self._mass, self._bias = mass_matrix, bias
        self.damping = _check_pos("damping", damping, allow_zero=True)
        self._eye = np.eye(self.n_joints)

    def _mb(self, q: np.ndarray, dq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M (k, k), b (k,)) at (q, dq)."""
        if self._mass is None or self._bias is None:
            raise ValueError("Manipulator needs mass_matrix and bias callables (or a subclass)")
        return _as_array(self._mass(q), (self.n_joints, self.n_joints), "mass_matrix"), _as_array(
            self._bias(q, dq), (self.n_joints,), "bias"
        )

    def _accel(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(qdd0 (k,), Minv (k, k)): q'' = qdd0 + Minv tau."""
        k = self.n_joints
        M, b = self._mb(x[:k], x[k:])
        Minv = np.linalg.inv(M)
        return -(Minv @ b), Minv

    def f(self, x: np.ndarray) -> np.ndarray:
        qdd0, _ = self._accel(np.asarray(x, dtype=np.float64))
        return np.concatenate([x[self.n_joints :], qdd0])

    def g(self, x: np.ndarray) -> np.ndarray:
        _, Minv = self._accel(np.asarray(x, dtype=np.float64))
        return np.vstack([np.zeros((self.n_joints, self.n_joints)), Minv])

    def _fill_joints(self, x: np.ndarray, out: Kinematics) -> None:
        k = self.n_joints
        out.q[:] = x[:k]
        out.dq[:] = x[k:]
        qdd0, Minv = self._accel(x)
        out.qdd0[:] = qdd0
        out.qddB[:] = Minv

    def bias(self, x: np.ndarray) -> np.ndarray:
        k = self.n_joints
        return self._mb(np.asarray(x[:k], dtype=np.float64), np.asarray(x[k:], dtype=np.float64))[1]

    def brake(self, x: np.ndarray) -> np.ndarray:
        return -self.damping * np.asarray(x[self.n_joints :], dtype=np.float64)


def _as_array(v: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if hasattr(v, "detach"):  # torch tensor
        v = v.detach().cpu().numpy()
    a = np.asarray(v, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{what} returned shape {a.shape}, expected {shape}")
    return a


class MujocoManipulator(Manipulator):
    """Manipulator whose M(q) and bias come from a MuJoCo model (every hinge/slide joint a control).

    Exactly one of ``robot`` (a built-in robot name, e.g. ``arm``: ``lnn_control.sim.models``),
    ``mjcf`` (MJCF text) or ``model_path`` (file). Bias = qfrc_bias - qfrc_passive (Coriolis,
    gravity, joint damping); M includes armature. Joint-limit and contact forces are left out:
    they only act at the limits the barriers keep the arm away from.

    ``point`` (optional) names a point for workspace barriers (``half_space``, obstacles):
    ``{site: name}`` (the site's origin) or ``{body: name}`` (the body frame's origin), in the
    world frame (d = 3, order 2). With J (3, k) its translational Jacobian,
    ``p' = v = J dq`` and ``p'' = a0 + B tau`` with ``a0 = J qdd0 + Jdot dq``, ``B = J M^-1``.
    """

    def __init__(
        self,
        robot: str | None = None,
        mjcf: str | None = None,
        model_path: str | None = None,
        damping: float = 1.0,
        point: Mapping[str, Any] | None = None,
    ) -> None:
        import mujoco

        given = [k for k, v in (("robot", robot), ("mjcf", mjcf), ("model_path", model_path)) if v]
        if len(given) != 1:
            raise ValueError(
                f"dynamics (manipulator): give exactly one of robot, mjcf, model_path; got {given}"
            )
        if robot:
            from lnn_control.sim.models import mjcf_for  # lazy: only this branch needs the sim package

            try:
                text = mjcf_for(str(robot))
            except ValueError as e:
                raise ValueError(f"dynamics.robot: {e}") from None
            model = mujoco.MjModel.from_xml_string(text)
        elif mjcf:
            model = mujoco.MjModel.from_xml_string(str(mjcf))
        else:
            try:
                model = mujoco.MjModel.from_xml_path(str(model_path))
            except Exception as e:
                raise ValueError(f"dynamics.model_path: cannot load {model_path!r}: {e}") from None
        if model.nq != model.nv or model.nv < 1:
            raise ValueError(
                f"dynamics: MuJoCo model must have only hinge/slide joints (nq == nv >= 1), "
                f"got nq={model.nq}, nv={model.nv}"
            )
        super().__init__(model.nv, damping=damping)
        self._mj = mujoco
        self.model, self.data = model, mujoco.MjData(model)
        k = model.nv
        self._rhs = np.zeros((k + 1, k))  # rows: e_1..e_k, -bias (solveM works row-wise)
        self._rhs[:k] = np.eye(k)
        self._sol = np.zeros((k + 1, k))
        self._bias_buf = np.zeros(k)
        # views into MjData's buffers (allocated once with it): no attribute lookup per call
        self._qpos, self._qvel, self._qfrc_passive = self.data.qpos, self.data.qvel, self.data.qfrc_passive
        self._rhs_bias, self._sol_bias, self._sol_minv = self._rhs[k], self._sol[k], self._sol[:k]
        self.point_name = ""
        if point is not None:
            self._init_point(point)

    def _init_point(self, point: Mapping[str, Any]) -> None:
        mj, m = self._mj, self.model
        if not isinstance(point, Mapping) or len(point) != 1 or next(iter(point)) not in ("site", "body"):
            raise ValueError(
                f"dynamics.point: expected {{site: name}} or {{body: name}} (one key), got {point!r}"
            )
        kind, name = next(iter(point.items()))
        obj, n_obj = (mj.mjtObj.mjOBJ_SITE, m.nsite) if kind == "site" else (mj.mjtObj.mjOBJ_BODY, m.nbody)
        idx = mj.mj_name2id(m, obj, str(name)) if isinstance(name, str) and name else -1
        if idx < 0:
            names = [mj.mj_id2name(m, obj, i) for i in range(n_obj)]
            raise ValueError(
                f"dynamics.point.{kind}: no {kind} named {name!r} in the model; "
                f"its {kind}s: {[n for n in names if n]}"
            )
        self.point_dim, self.point_order = 3, 2
        self.point_name = f"{kind}:{name}"
        d = self.data
        # views into MjData (world position of the point) and the body the point moves with
        self._pos = d.site_xpos[idx] if kind == "site" else d.xpos[idx]
        self._pbody = int(m.site_bodyid[idx]) if kind == "site" else idx
        # [J; Jdot] in one buffer: one product with dq gives v and Jdot dq
        self._jj = np.zeros((6, m.nv))
        self._jacp, self._jacdot = self._jj[:3], self._jj[3:]
        self._jj_dq = np.zeros(6)
        # J [Minv | qdd0]: _sol holds Minv (symmetric) in rows 0..k-1 and qdd0 in row k
        self._jsol = np.zeros((3, m.nv + 1))
        self._jsol_B, self._jsol_a = self._jsol[:, : m.nv], self._jsol[:, m.nv]
        self._solT = self._sol.T

    def kinematics(self, x: np.ndarray, out: Kinematics) -> Kinematics:
        """Fill ``out`` at state ``x`` = (q, dq): joints, then the point (one MuJoCo pass for both)."""
        self._fill_joints(x, out)
        if self.point_order:
            self._fill_point(x, out)
        return out

    def _fill_point(self, x: np.ndarray, out: Kinematics) -> None:
        """Point terms; needs :meth:`_fill_joints` run at the same ``x`` just before (MjData, qdd0, qddB)."""
        mj, m, d = self._mj, self.model, self.data
        J, Jd = self._jacp, self._jacdot
        mj.mj_jac(m, d, J, None, self._pos, self._pbody)  # needs mj_kinematics + mj_comPos
        mj.mj_jacDot(m, d, Jd, None, self._pos, self._pbody)  # needs mj_comVel (cdof_dot)
        out.p[:] = self._pos
        np.dot(self._jj, out.dq, out=self._jj_dq)  # (v, Jdot dq)
        np.dot(J, self._solT, out=self._jsol)  # (J Minv, J qdd0), as _fill_joints left _sol
        out.v[:] = self._jj_dq[:3]
        np.add(self._jsol_a, self._jj_dq[3:], out=out.a0)
        out.B[:] = self._jsol_B
        out.drift_zero = False

    def _compute(self, q: np.ndarray, dq: np.ndarray, need_m: bool) -> None:
        mj, m, d = self._mj, self.model, self.data
        self._qpos[:] = q
        self._qvel[:] = dq
        mj.mj_kinematics(m, d)
        mj.mj_comPos(m, d)
        if need_m:
            mj.mj_crb(m, d)
            mj.mj_factorM(m, d)
        mj.mj_comVel(m, d)
        mj.mj_passive(m, d)
        mj.mj_rne(m, d, 0, self._bias_buf)
        self._bias_buf -= self._qfrc_passive

    def _mb(self, q: np.ndarray, dq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._compute(q, dq, True)
        M = np.zeros((self.n_joints, self.n_joints))
        self._mj.mj_fullM(self.model, self.data, M)
        return M, self._bias_buf.copy()

    def _accel(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.n_joints
        self._compute(x[:k], x[k:], True)
        self._rhs[k] = -self._bias_buf
        self._mj.mj_solveM(self.model, self.data, self._sol, self._rhs)
        return self._sol[k].copy(), self._sol[:k].T.copy()  # Minv is symmetric; .T for clarity

    def _fill_joints(self, x: np.ndarray, out: Kinematics) -> None:
        k = self.n_joints
        out.q[:] = x[:k]
        out.dq[:] = x[k:]
        self._compute(out.q, out.dq, True)
        np.negative(self._bias_buf, out=self._rhs_bias)
        self._mj.mj_solveM(self.model, self.data, self._sol, self._rhs)
        out.qdd0[:] = self._sol_bias
        out.qddB[:] = self._sol_minv

    def bias(self, x: np.ndarray) -> np.ndarray:
        k = self.n_joints
        self._compute(np.asarray(x[:k], dtype=np.float64), np.asarray(x[k:], dtype=np.float64), False)
        return self._bias_buf.copy()


class PlanarArm(Manipulator):
    """Analytic planar 2-link arm in a vertical plane, point masses at the link tips.

    x = (q1, q2, dq1, dq2), u = (tau1, tau2); q1 from the horizontal, q2 relative to link 1;
    ``link_lengths`` (m), ``masses`` (kg), ``gravity`` (m/s^2), ``joint_damping`` (N m s/rad)
    in the plant; ``damping`` as in :class:`Manipulator` (fallback).
    """

    def __init__(
        self,
        link_lengths: tuple[float, float] = (0.4, 0.3),
        masses: tuple[float, float] = (1.0, 0.5),
        gravity: float = 9.81,
        joint_damping: float = 0.0,
        damping: float = 1.0,
    ) -> None:
        super().__init__(2, damping=damping)
        if len(link_lengths) != 2 or len(masses) != 2:
            raise ValueError("dynamics.link_lengths and dynamics.masses need 2 values each")
        self.l1, self.l2 = (_check_pos("link_lengths", v) for v in link_lengths)
        self.m1, self.m2 = (_check_pos("masses", v) for v in masses)
        self.grav = _check_pos("gravity", gravity, allow_zero=True)
        self.joint_damping = _check_pos("joint_damping", joint_damping, allow_zero=True)

    def _mb(self, q: np.ndarray, dq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        l1, l2, m1, m2, gr = self.l1, self.l2, self.m1, self.m2, self.grav
        c2, s2 = math.cos(q[1]), math.sin(q[1])
        m11 = m1 * l1**2 + m2 * (l1**2 + 2 * l1 * l2 * c2 + l2**2)
        m12 = m2 * (l1 * l2 * c2 + l2**2)
        M = np.array([[m11, m12], [m12, m2 * l2**2]])
        h = m2 * l1 * l2 * s2
        cor = np.array([-h * (2 * dq[0] * dq[1] + dq[1] ** 2), h * dq[0] ** 2])
        c1, c12 = math.cos(q[0]), math.cos(q[0] + q[1])
        grav = np.array([(m1 + m2) * gr * l1 * c1 + m2 * gr * l2 * c12, m2 * gr * l2 * c12])
        return M, cor + grav + self.joint_damping * np.asarray(dq, dtype=np.float64)


class CallableDynamics(ControlAffine):
    """User dynamics from callables: ``f(x) -> (n_state,)``, ``g(x) -> (n_state, n_controls)``.

    The callables may use numpy or torch (tensors are converted). Joint-limit barriers work
    when ``joint_positions`` / ``joint_velocities`` (state index lists) are given and
    ``q' = dq`` holds; ``q''`` is then read from f and g of the velocity rows.
    """

    def __init__(
        self,
        f: Callable[[np.ndarray], Any],
        g: Callable[[np.ndarray], Any],
        n_state: int,
        n_controls: int,
        joint_positions: list[int] | None = None,
        joint_velocities: list[int] | None = None,
    ) -> None:
        self.n_state, self.n_controls = int(n_state), int(n_controls)
        self._f, self._g = f, g
        self.state_names = tuple(f"x{i}" for i in range(self.n_state))
        if (joint_positions is None) != (joint_velocities is None):
            raise ValueError("dynamics: give both joint_positions and joint_velocities, or neither")
        self._qi = np.asarray(joint_positions or [], dtype=np.intp)
        self._vi = np.asarray(joint_velocities or [], dtype=np.intp)
        if self._qi.size != self._vi.size:
            raise ValueError("dynamics.joint_positions and joint_velocities must have the same length")
        self.n_joints = int(self._qi.size)

    def f(self, x: np.ndarray) -> np.ndarray:
        return _as_array(self._f(x), (self.n_state,), "f")

    def g(self, x: np.ndarray) -> np.ndarray:
        return _as_array(self._g(x), (self.n_state, self.n_controls), "g")

    def _fill_joints(self, x: np.ndarray, out: Kinematics) -> None:
        out.q[:] = x[self._qi]
        out.dq[:] = x[self._vi]
        out.qdd0[:] = self.f(x)[self._vi]
        out.qddB[:] = self.g(x)[self._vi]


#: Dynamics classes by config ``type``.
DYNAMICS: dict[str, type[ControlAffine]] = {}


def register_dynamics(name: str, cls: type[ControlAffine]) -> None:
    """Make ``cls`` (a :class:`ControlAffine` subclass) available as ``dynamics: {type: name}``."""
    if not (isinstance(cls, type) and issubclass(cls, ControlAffine)):
        raise ValueError(f"register_dynamics: cls must be a ControlAffine subclass, got {cls!r}")
    if name in DYNAMICS:
        raise ValueError(f"dynamics type {name!r} already registered")
    DYNAMICS[name] = cls


class _ManipulatorFactory(Manipulator):
    """``type: manipulator``: MuJoCo-backed when robot/mjcf/model_path is given."""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ControlAffine:
        return MujocoManipulator(**dict(cfg))


for _n, _c in (
    ("unicycle", Unicycle),
    ("diff_drive", DiffDrive),
    ("double_integrator", DoubleIntegrator),
    ("manipulator", _ManipulatorFactory),
    ("planar_arm", PlanarArm),
):
    register_dynamics(_n, _c)


def make_dynamics(cfg: Mapping[str, Any]) -> ControlAffine:
    """Dynamics from the ``dynamics:`` mapping ``{type: name, ...parameters}``."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"dynamics: expected a mapping with 'type' (one of {sorted(DYNAMICS)}), got {cfg!r}")
    params = {k: v for k, v in cfg.items() if k != "type"}
    name = cfg["type"]
    if name not in DYNAMICS:
        raise ValueError(f"dynamics.type {name!r} unknown; choose one of {sorted(DYNAMICS)}")
    try:
        return DYNAMICS[name].from_config(params)
    except TypeError as e:  # unexpected / missing keyword
        raise ValueError(f"dynamics ({name}): {e}") from None
