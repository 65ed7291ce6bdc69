"""Run-time BarrierNet safety filter: nominal command in, verified safe command (or fallback) out.

Each call solves

    min_u  1/2 (u - u_nom)' W (u - u_nom)
    s.t.   G(x) u <= h(x)       (one CBF / HOCBF row per barrier row, barriernet.barriers)
           lower <= u <= upper  (the controls box; never relaxed)

with W = diag(``controls.weights``) (default I), and checks the answer independently before
returning it. The steps and what each failure gives:

1. ``x``, ``u_nom``, ``gains`` not finite (or gains <= 0), an unusable ``env`` entry
   -> fallback, status ``invalid_input``. Wrong shapes raise ``ValueError`` naming the argument.
   A finite but huge ``u_nom`` is clipped to ``[lower - 1e6 w, upper + 1e6 w]``
   (w = 1 + box width) so that the QP data stay finite; the output is unaffected in practice.
2. Fast path: if ``u_nom`` already satisfies the box and every row exactly, it is returned
   unchanged (no solver call).
3. QP (``solver``, default DAQP called directly with preallocated data).
   Infeasible with ``slack.enabled``: ONE relaxed QP in (u, s), a slack s_i >= 0 on every
   row (``G u - s <= h``) under the L1 penalty ``sum_i w_i s_i`` (+ 1e-6 w_i s_i^2 /
   ``slack.penalty`` for strict convexity), w_i = ``slack.penalty`` * B^r for a row of the r-th
   lowest ``priority`` level (B = 1000; lower beyond four levels, so that the largest weight
   stays <= 1e9 ``slack.penalty``). A unit of slack on a higher level costs B times one on
   the level below, so higher levels are relaxed only where the lower ones cannot absorb it
   (an exact penalty holds a row whenever its weight exceeds the row's multiplier; with B =
   1000 this held on every seeded case of the tests, which compare with the former
   sequential method, one QP per level: same hard rows, no more slack on the top relaxed
   level, the same command when one level suffices). The rows above the highest level left
   with slack are this call's hard rows and are checked as such. Status ``relaxed``; the
   report gives each row's slack (its violation at the returned command). One solve of fixed
   size, capped at ``_ITER_CAP`` DAQP iterations like every solve here: a solve that hits the
   cap falls back (``solver_error``), so no path's time is unbounded.
   Infeasible without slack -> fallback, status ``infeasible``; solver failure -> fallback,
   status ``solver_error``.
4. Independent check of every output: the solver's command is clipped into the box (so the
   bounds hold exactly), then every hard row is checked at the clipped command,
   ``G u <= h + 1e-9 (1 + |h|)`` (nan fails); relaxed rows report their violation as slack.
   A failed check -> fallback, status ``solver_error``.

Speed (numpy's fixed cost per call, ~0.5-1 us, dominates at these sizes, so each path keeps
the number of numpy calls small; the tests check every path against the generic blocks):

- rows affine in the state with a constant G (half-space and joint-limit barriers on a
  double integrator) are precomputed when the filter is built: ``[h; h(x)] = M x + c`` is one
  matvec per call, G is written once, and DAQP keeps one workspace (``daqp.Model``; per call
  only the linear term and the bounds change, cold-started, so the answer does not depend
  on earlier calls);
- small problems of the built-in point models (planar, half-space / disc / speed rows) take
  a plain-float path;
- everything else is written into preallocated arrays (consecutive obstacle barriers as one
  vectorised block; scan points as complex numbers) and DAQP is called directly on them.

Fallbacks (``fallback.type``): ``zero``; ``brake`` (the dynamics' braking command, e.g.
unicycle a = -k v); ``constant`` (``value``, must lie in the box); ``gravity_compensation``
(manipulator bias torque - ``damping`` dq). Every fallback is clipped to the box and checked
finite (else the box point nearest zero).

Class-K gains: from the YAML (``gains`` per barrier) or per call (``filter(..., gains=)``),
a vector ordered as :attr:`SafetyFilter.gain_names` (barrier order; ``<name>.k`` for
relative degree 1, ``<name>.p1``, ``<name>.p2`` for relative degree 2), all > 0: a
BarrierNet policy's ``gain_names`` should list exactly these. A mapping ``{gain name: value}``
sets some of them (the others keep their YAML values).
"""

from __future__ import annotations

import copy
import math
import operator
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from barriernet.barriers import (
    ActuatorBox,
    Barrier,
    CircleObstacle,
    HalfSpace,
    InputError,
    JointPositionLimits,
    JointVelocityLimits,
    PointGroup,
    SpeedLimit,
    _PointBarrier,
    make_barrier,
)
from barriernet.dynamics import ControlAffine, DiffDrive, DoubleIntegrator, Unicycle, make_dynamics
from barriernet.qp import SOLVERS, solve_qp

__all__ = ["FilterReport", "SafetyFilter", "STATUSES", "FALLBACKS", "KERNELS"]

#: FilterReport.status values (SafetyStatus.msg constants, lower case).
STATUSES = ("optimal", "relaxed", "infeasible", "invalid_input", "stale_input", "solver_error")
#: fallback.type values.
FALLBACKS = ("zero", "brake", "constant", "gravity_compensation")

_clock = time.perf_counter
_cos, _sin, _sqrt = math.cos, math.sin, math.sqrt
_mul = operator.mul
_isfinite = math.isfinite
_dot, _minimum, _maximum, _asarray = np.dot, np.minimum, np.maximum, np.asarray
_VERIFY_TOL = 1e-9  # relative to 1 + |bound|
_ACTIVE_TOL = 1e-7
_SLACK_REG = 1e-6  # quadratic weight on slack (keeps the relaxed QP strictly convex)
_INF = 1e30  # DAQP's infinity
_LEVEL_RATIO = 1e3  # slack weight ratio between consecutive priority levels
_MAX_WEIGHT_SPAN = 1e9  # the largest slack weight over the smallest, at most
_ITER_CAP = 200  # DAQP iterations per solve (beyond: fallback; these QPs need < 2 (n + m))
_DAQP_STATUS = {1: "optimal", 2: "optimal", -1: "infeasible", -4: "iteration_cap"}  # exit flags
_TOP_KEYS = ("dynamics", "controls", "barriers", "slack", "fallback", "solver", "kernel")
#: ``kernel=`` values: how the CBF rows are computed per call (every kernel gives the rows of
#: ``generic``; the tests compare them). ``auto``: ``affine`` where the rows allow it, else
#: ``scalar``, else ``generic``.
KERNELS = {
    "auto": "the fastest kernel the rows allow",
    "affine": "rows affine in the state with a constant G (half-space / joint-limit rows on a "
    "double integrator): [h; h(x)] = M x + c, one matvec, a DAQP workspace set up once",
    "scalar": "plain floats for point models (diff_drive, unicycle, double_integrator) with <= 32 "
    "half_space / circle_obstacle / speed_limit rows",
    "generic": "the barrier blocks, vectorised (any dynamics and barrier, scan rows included)",
}


class FilterReport:
    """What one filter call did; fields mirror ``lnn_control/SafetyStatus.msg``.

    constraint_names: one per QP row; barrier_values (m,) h(x) per row (clearance in m for
    obstacle barriers; 1e30 for scan rows without a point; nan when unknown); active (m,)
    bool: row tight at the output (residual within 1e-7); slack (m,): violation allowed on
    each row; total_slack: their sum; status: one of :data:`STATUSES`; solver_name;
    solve_time (s, the whole filter call); fallback_used / fallback_reason; intervened: the
    output differs from ``u_nom`` beyond ``numpy.allclose`` tolerances (1e-8 + 1e-5 |u_nom|).
    """

    __slots__ = (
        "constraint_names",
        "barrier_values",
        "_active",
        "_residual",
        "slack",
        "total_slack",
        "status",
        "solver_name",
        "solve_time",
        "fallback_used",
        "fallback_reason",
        "intervened",
    )

    def __init__(
        self,
        constraint_names: tuple[str, ...],
        barrier_values: np.ndarray,
        active: np.ndarray | None,
        slack: np.ndarray,
        total_slack: float,
        status: str,
        solver_name: str,
        solve_time: float,
        fallback_used: bool,
        fallback_reason: str,
        intervened: bool,
        residual: np.ndarray | None = None,
    ) -> None:
        self.constraint_names = constraint_names
        self.barrier_values = barrier_values
        self._active = active  # None: computed on first access from ``residual`` (G u - h)
        self._residual = residual
        self.slack = slack
        self.total_slack = total_slack
        self.status = status
        self.solver_name = solver_name
        self.solve_time = solve_time
        self.fallback_used = fallback_used
        self.fallback_reason = fallback_reason
        self.intervened = intervened

    @property
    def active(self) -> np.ndarray:
        """(m,) bool: rows tight at the output."""
        if self._active is None:
            res = self._residual if self._residual is not None else np.full(len(self.constraint_names), -1.0)
            self._active = res >= -_ACTIVE_TOL
        return self._active

    def __repr__(self) -> str:
        return (
            f"FilterReport(status={self.status!r}, intervened={self.intervened}, "
            f"fallback_used={self.fallback_used}, fallback_reason={self.fallback_reason!r}, "
            f"total_slack={self.total_slack:g}, rows={len(self.constraint_names)}, "
            f"min_barrier={np.min(self.barrier_values, initial=np.inf):g}, "
            f"solver={self.solver_name}, solve_time={self.solve_time * 1e6:.1f} us)"
        )


def _floats(v: Any, where: str, size: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a list of numbers, got {v!r}") from None
    if size is not None and a.size != size:
        raise ValueError(f"{where}: expected {size} values, got {a.size}")
    return a


def _differs(u: list[float], u_nom: list[float]) -> bool:
    """Not ``numpy.allclose(u, u_nom)``: some |u - u_nom| > 1e-8 + 1e-5 |u_nom| (nan counts as differing)."""
    for a, b in zip(u, u_nom):
        if not abs(a - b) <= 1e-8 + 1e-5 * abs(b):
            return True
    return False


def _merged(bs: list[Barrier]) -> list[Any]:
    """Consecutive mergeable barriers of one class merged into one (vectorised) barrier."""
    out: list[Any] = []
    i = 0
    while i < len(bs):
        j = i + 1
        if bs[i].mergeable:
            while j < len(bs) and type(bs[j]) is type(bs[i]):
                j += 1
        out.append(bs[i] if j == i + 1 else bs[i].merge(bs[i + 1 : j]))
        i = j
    return out


class _ScalarRows:
    """Plain-float rows for small problems: built-in point models (diff_drive, unicycle, double
    integrator) with half-space, disc and speed barriers only.

    The same rows as the vectorised blocks (the tests compare them), computed without numpy
    calls, whose fixed cost (~0.5-1 us each) dominates a filter call of this size.
    """

    MAX_ROWS = 32

    @staticmethod
    def eligible(dyn: ControlAffine, rows: list[Barrier]) -> bool:
        if type(dyn) not in (DiffDrive, Unicycle, DoubleIntegrator) or not rows:
            return False
        m = sum(b.n_rows for b in rows)
        # plain floats win over numpy's fixed per-call cost in the plane, and for few
        # coordinates x rows beyond it (measured: bench_filter, scalar vs vectorised)
        if m > _ScalarRows.MAX_ROWS or (dyn.point_dim != 2 and dyn.point_dim * m > 16):
            return False
        return all(type(b) in (HalfSpace, CircleObstacle, SpeedLimit) for b in rows)

    def __init__(self, dyn: ControlAffine, rows: list[Barrier]) -> None:
        self.kind = {DiffDrive: 0, Unicycle: 1, DoubleIntegrator: 2}[type(dyn)]
        self.d = dyn.point_dim
        self.look = float(getattr(dyn, "lookahead", 0.0))
        self.spec: list[tuple[int, list[float], float]] = []
        for b in rows:
            if isinstance(b, HalfSpace):
                self.spec.append((0, b.N[0].tolist(), float(b.off[0])))
            elif isinstance(b, CircleObstacle):
                self.spec.append((1, b.C[0].tolist(), float(b.R[0])))
            else:
                self.spec.append((2, [], float(b.v2)))  # type: ignore[attr-defined]

    def rows(
        self, xl: list[float], ul: list[float], ks: list[float], kp: list[float]
    ) -> tuple[list[float], list[float], list[float], list[float]]:
        """(h(x) per row, G row-major flat, h per row, residuals G u_nom - h) at state ``xl``."""
        kind, d = self.kind, self.d
        hv: list[float] = []
        gf: list[float] = []
        hh: list[float] = []
        res: list[float] = []
        if kind == 0:  # diff drive, look-ahead point, order 1: G = ng J, h = k h
            px, py, th = xl
            c, s = _cos(th), _sin(th)
            lk = self.look
            p0, p1 = px + lk * c, py + lk * s
            u0, u1 = ul
            for (code, vec, sc), k in zip(self.spec, ks):
                if code == 0:
                    n0, n1 = vec
                    val = sc - (n0 * p0 + n1 * p1)
                else:
                    d0, d1 = vec[0] - p0, vec[1] - p1
                    dist = _sqrt(d0 * d0 + d1 * d1)
                    n0, n1 = d0 / dist, d1 / dist
                    val = dist - sc
                g0, g1 = n0 * c + n1 * s, lk * (n1 * c - n0 * s)
                hr = k * val
                hv.append(val)
                gf.append(g0)
                gf.append(g1)
                hh.append(hr)
                res.append(g0 * u0 + g1 * u1 - hr)
            return hv, gf, hh, res
        if kind == 1:  # unicycle, order 2: B = [[-V s, c], [V c, s]]
            px, py, th, vel = xl
            c, s = _cos(th), _sin(th)
            v0, v1 = vel * c, vel * s
            u0, u1 = ul
            for (code, vec, sc), k, q in zip(self.spec, ks, kp):
                if code == 2:  # speed: v'B u <= k h / 2
                    val = sc - (v0 * v0 + v1 * v1)
                    g0, g1 = v1 * v0 - v0 * v1, v0 * c + v1 * s  # (-V s v0 + V c v1, c v0 + s v1)
                    hr = 0.5 * k * val
                else:
                    if code == 0:
                        n0, n1 = vec
                        val = sc - (n0 * px + n1 * py)
                        curv = 0.0
                    else:
                        d0, d1 = vec[0] - px, vec[1] - py
                        dist = _sqrt(d0 * d0 + d1 * d1)
                        n0, n1 = d0 / dist, d1 / dist
                        val = dist - sc
                        gv = n0 * v0 + n1 * v1
                        curv = (v0 * v0 + v1 * v1 - gv * gv) / dist
                    g0, g1 = -n0 * v1 + n1 * v0, n0 * c + n1 * s
                    hr = q * val + curv - k * (n0 * v0 + n1 * v1)
                hv.append(val)
                gf.append(g0)
                gf.append(g1)
                hh.append(hr)
                res.append(g0 * u0 + g1 * u1 - hr)
            return hv, gf, hh, res
        if d == 2:  # double integrator in the plane (the common case), written out
            px, py, v0, v1 = xl
            u0, u1 = ul
            vv = v0 * v0 + v1 * v1
            for (code, vec, sc), k, q in zip(self.spec, ks, kp):
                if code == 2:
                    val = sc - vv
                    g0, g1 = v0, v1
                    hr = 0.5 * k * val
                else:
                    if code == 0:
                        g0, g1 = vec
                        val = sc - (g0 * px + g1 * py)
                        curv = 0.0
                    else:
                        d0, d1 = vec[0] - px, vec[1] - py
                        dist = _sqrt(d0 * d0 + d1 * d1)
                        g0, g1 = d0 / dist, d1 / dist
                        val = dist - sc
                        gv = g0 * v0 + g1 * v1
                        curv = (vv - gv * gv) / dist
                    hr = q * val + curv - k * (g0 * v0 + g1 * v1)
                hv.append(val)
                gf.append(g0)
                gf.append(g1)
                hh.append(hr)
                res.append(g0 * u0 + g1 * u1 - hr)
            return hv, gf, hh, res
        p, v = xl[:d], xl[d:]  # double integrator, order 2, B = I
        vv = sum(map(_mul, v, v))
        for (code, vec, sc), k, q in zip(self.spec, ks, kp):
            if code == 2:
                val = sc - vv
                g = v
                hr = 0.5 * k * val
            else:
                if code == 0:
                    g = vec
                    val = sc - sum(map(_mul, vec, p))
                    curv = 0.0
                else:
                    dv = [a - b for a, b in zip(vec, p)]
                    dist = _sqrt(sum(map(_mul, dv, dv)))
                    g = [a / dist for a in dv]
                    val = dist - sc
                    gv = sum(map(_mul, g, v))
                    curv = (vv - gv * gv) / dist
                hr = q * val + curv - k * sum(map(_mul, g, v))
            hv.append(val)
            gf.extend(g)
            hh.append(hr)
            res.append(sum(map(_mul, g, ul)) - hr)
        return hv, gf, hh, res


class _LinearRows:
    """Rows affine in the state with a constant G: half-space and joint-limit barriers on a
    double integrator (p'' = u, no drift). Per row

        G u <= a(x) + ks b(x) + kp c(x),   G constant, a, b, c and h(x) affine in x,

    so ``[h; h(x)] = M x + c`` is one matvec per call instead of a block evaluation per
    barrier group. M and c come from the generic barrier blocks themselves (evaluated when the
    filter is built at x = 0 and at the unit states, exact for affine maps up to rounding), and
    are checked against them at seeded random states; :meth:`build` returns None when the
    blocks are not affine (then the filter keeps the generic path).
    """

    KINDS = (HalfSpace, JointPositionLimits, JointVelocityLimits)

    @staticmethod
    def eligible(dyn: ControlAffine, rows: list[Barrier]) -> bool:
        kinds = _LinearRows.KINDS
        return type(dyn) is DoubleIntegrator and bool(rows) and all(type(b) in kinds for b in rows)

    @staticmethod
    def build(
        evaluate: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
        n_state: int,
        K: np.ndarray,
    ) -> _LinearRows | None:
        """From ``evaluate(x, ks, kp) -> (G, h, h(x))`` (copies; the generic rows) and the
        default per-row gains ``K`` (2, m)."""
        m = K.shape[1]
        zero, one = np.zeros(m), np.ones(m)
        pieces = []  # per state (0, e_1, ..., e_ns): a, b, c, h(x) stacked (4m,)
        G0 = None
        for j in range(n_state + 1):
            xj = np.zeros(n_state)
            if j:
                xj[j - 1] = 1.0
            G, ha, hv = evaluate(xj, zero, zero)
            _, hb, _ = evaluate(xj, one, zero)
            _, hc, _ = evaluate(xj, zero, one)
            if G0 is None:
                G0 = G
            elif not np.array_equal(G, G0):
                return None
            pieces.append(np.concatenate([ha, hb - ha, hc - ha, hv]))
        assert G0 is not None
        c4 = pieces[0]
        M4 = np.column_stack([p - c4 for p in pieces[1:]]) if n_state else np.zeros((4 * m, 0))
        lin = _LinearRows(G0, M4, c4, K)
        rng = np.random.default_rng(0)  # the affine maps must reproduce the generic rows
        for scale in (0.1, 1.0, 10.0):
            x = rng.standard_normal(n_state) * scale
            _, h, hv = evaluate(x, K[0], K[1])
            want = np.concatenate([h, hv])
            got = lin.M @ x + lin.c
            if not (np.abs(got - want) <= 1e-9 * (1.0 + np.abs(want))).all():
                return None
        return lin

    def __init__(self, G: np.ndarray, M4: np.ndarray, c4: np.ndarray, K: np.ndarray) -> None:
        m = G.shape[0]
        self.m = m
        self.G = G
        self.M4, self.c4 = M4, c4  # rows a, b, c, h(x): (4m, n_state), (4m,)
        Ma, Mb, Mc, Mv = M4[:m], M4[m : 2 * m], M4[2 * m : 3 * m], M4[3 * m :]
        ca, cb, cc, cv = c4[:m], c4[m : 2 * m], c4[2 * m : 3 * m], c4[3 * m :]
        # default gains folded in: [h; h(x)] = M x + c
        self.M = np.ascontiguousarray(np.vstack([Ma + K[0][:, None] * Mb + K[1][:, None] * Mc, Mv]))
        self.c = np.concatenate([ca + K[0] * cb + K[1] * cc, cv])
        self._y = np.zeros(4 * m)
        self._t = np.zeros(m)

    def rows_with_gains(self, x: np.ndarray, K: np.ndarray, h: np.ndarray, hv: np.ndarray) -> None:
        """h = a + ks b + kp c and h(x) at ``x`` for per-row gains ``K`` (2, m), written in place."""
        m, y, t = self.m, self._y, self._t
        _dot(self.M4, x, out=y)
        y += self.c4
        np.multiply(K[0], y[m : 2 * m], out=h)
        h += y[:m]
        np.multiply(K[1], y[2 * m : 3 * m], out=t)
        h += t
        hv[:] = y[3 * m :]


def _rebuild_filter(recipe: dict[str, Any]) -> SafetyFilter:
    """A filter from :attr:`SafetyFilter._recipe` (barriers copied again: building binds them)."""
    return SafetyFilter(**{**recipe, "barriers": copy.deepcopy(recipe["barriers"])})


class SafetyFilter:
    """CBF-QP safety filter (see the module docstring for the problem and the failure handling).

    Args:
        dynamics: a :class:`barriernet.dynamics.ControlAffine`.
        barriers: :class:`barriernet.barriers.Barrier` objects (not yet bound).
        lower, upper: (n_controls,) finite control box, lower <= upper.
        names: control names (default u0, u1, ...). weights: (n_controls,) > 0, W's diagonal.
        slack_enabled, slack_penalty: relaxation of infeasible rows (L1 penalty > 0).
        fallback: one of :data:`FALLBACKS`; fallback_value: (n_controls,) for ``constant``;
        fallback_damping: N m s/rad for ``gravity_compensation`` (default: the dynamics' damping).
        solver: a name in :data:`barriernet.qp.SOLVERS` (``daqp`` uses the direct fast path).
        kernel: a name in :data:`KERNELS` (YAML ``kernel``); the one in use is :attr:`kernel`.
            Asking for one the rows do not allow raises ``ValueError``.

    A filter reuses preallocated buffers between calls: use one instance per thread.
    """

    def __init__(
        self,
        dynamics: ControlAffine,
        barriers: list[Barrier],
        lower: Any,
        upper: Any,
        names: list[str] | None = None,
        weights: Any = None,
        slack_enabled: bool = True,
        slack_penalty: float = 1e4,
        fallback: str = "zero",
        fallback_value: Any = None,
        fallback_damping: float | None = None,
        solver: str = "daqp",
        kernel: str = "auto",
    ) -> None:
        if not isinstance(dynamics, ControlAffine):
            raise ValueError(f"dynamics: expected a ControlAffine, got {type(dynamics).__name__}")
        # the recipe for copies (pickle / copy.deepcopy rebuild the filter from it: its buffers
        # are views of one another, which an array-by-array copy would silently separate)
        try:
            unbound: list[Barrier] | None = copy.deepcopy(list(barriers))
        except Exception:  # e.g. a user barrier holding something that does not copy
            unbound = None
        self._recipe = {
            "dynamics": dynamics, "barriers": unbound, "lower": lower, "upper": upper, "names": names,
            "weights": weights, "slack_enabled": slack_enabled, "slack_penalty": slack_penalty,
            "fallback": fallback, "fallback_value": fallback_value, "fallback_damping": fallback_damping,
            "solver": solver, "kernel": kernel,
        }  # fmt: skip
        self.dynamics = dyn = dynamics
        n = self.n_controls = dyn.n_controls
        self.n_state = dyn.n_state
        lo = _floats(lower, "controls.lower", n)
        hi = _floats(upper, "controls.upper", n)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError("controls.lower/upper: the control box must be finite")
        for b in barriers:
            b.bind(dyn)
            if isinstance(b, ActuatorBox) and b.box is not None:
                lo, hi = np.maximum(lo, b.box[0]), np.minimum(hi, b.box[1])
        if not (lo <= hi).all():
            raise ValueError(
                f"controls: lower must be <= upper, got lower={lo.tolist()}, upper={hi.tolist()}"
            )
        self.lower, self.upper = lo, hi
        self.lower.setflags(write=False)
        self.upper.setflags(write=False)
        self.control_names = tuple(str(s) for s in names) if names else tuple(f"u{i}" for i in range(n))
        if len(self.control_names) != n:
            raise ValueError(f"controls.names: {n} controls, got {len(self.control_names)} names")
        w = np.ones(n) if weights is None else _floats(weights, "controls.weights", n)
        if not (np.isfinite(w).all() and (w > 0).all()):
            raise ValueError(f"controls.weights: must be finite and > 0, got {w.tolist()}")
        self.weights = w
        self.slack_enabled = bool(slack_enabled)
        self.slack_penalty = float(slack_penalty)
        if not (math.isfinite(self.slack_penalty) and self.slack_penalty > 0):
            raise ValueError(f"slack.penalty: must be a finite number > 0, got {slack_penalty!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver: {solver!r} unknown; choose one of {sorted(SOLVERS)}")
        self.solver_name = solver
        self._fast = solver == "daqp"
        if self._fast:
            import daqp

            self._daqp_solve = daqp.solve
        self._init_fallback(fallback, fallback_value, fallback_damping)

        # ---- rows, gains, and the preallocated QP data -------------------------------------
        rows = [b for b in barriers if b.n_rows > 0]
        self.barriers = list(barriers)
        m = self.n_rows = sum(b.n_rows for b in rows)
        self.constraint_names = tuple(nm for b in rows for nm in b.row_names)
        self.gain_names = tuple(gn for b in rows for gn in b.gain_names)
        self.n_gains = len(self.gain_names)
        self._gain_default = (
            np.concatenate([b.gains for b in rows if b.gains is not None]) if rows else np.zeros(0)
        )
        gidx = np.zeros((2, m), dtype=np.intp)
        rel2 = np.zeros(m)
        prio = np.zeros(m, dtype=np.int64)
        r = g = 0
        for b in rows:
            gidx[0, r : r + b.n_rows] = g
            gidx[1, r : r + b.n_rows] = g + (1 if b.relative_degree >= 2 else 0)
            rel2[r : r + b.n_rows] = 1.0 if b.relative_degree >= 2 else 0.0
            prio[r : r + b.n_rows] = b.priority
            r, g = r + b.n_rows, g + len(b.gain_names)
        self._gidx, self._rel2 = gidx, rel2
        self.priorities = prio
        # A = [-I; I; G], b = [-lower; upper; h]: one matvec checks the box and every row;
        # DAQP gets G = A[2n:] and bu = b[n:] (its first n entries are the simple bounds).
        # h(x) (``_hv``) follows h in one buffer, so an affine kernel writes both in one matvec.
        self._A = np.zeros((2 * n + m, n))
        self._A[:n] = -np.eye(n)
        self._A[n : 2 * n] = np.eye(n)
        self._bh = np.zeros(2 * n + 2 * m)
        self._bh[:n] = -lo
        self._bh[n : 2 * n] = hi
        self._b = self._bh[: 2 * n + m]
        self._G = self._A[2 * n :]
        self._h = self._bh[2 * n : 2 * n + m]
        self._hv = self._bh[2 * n + m :]
        self._hhv = self._bh[2 * n :]
        self._bu = self._bh[n : 2 * n + m]
        self._bl = np.concatenate([lo, np.full(m, -_INF)])
        self._sense = np.zeros(n + m, dtype=np.int32)
        self._H = np.diag(w)
        self._negw = None if (w == 1.0).all() else -w
        self._f = np.zeros(n)
        self._res = np.zeros(2 * n + m)
        self._res_rows = self._res[2 * n :]
        self._tol = np.zeros(2 * n + m)
        self._ubig = hi + 1e6 * (1.0 + hi - lo)
        self._lbig = lo - 1e6 * (1.0 + hi - lo)
        self._big = float(np.abs(np.concatenate([self._ubig, self._lbig])).min())
        # |u_i| > _big implies u_i - upper_i or lower_i - u_i > _big_gap
        self._big_gap = self._big - float(np.abs(np.concatenate([lo, hi])).max())
        # per-row gains: ks = k (degree 1) or p1 + p2 (degree 2), kp = p1 p2
        self._K_default = np.zeros((2, m))
        self._K_call = np.zeros((2, m))
        self._Ka, self._Kb = np.zeros(m), np.zeros(m)
        self._set_row_gains(self._gain_default, self._K_default)
        self._kin = dyn.new_kinematics()
        self._kinematics = dyn.kinematics
        self._xshape, self._ushape = (self.n_state,), (n,)
        self._zero_slack = np.zeros(m)
        self._zero_slack.setflags(write=False)
        # blocks: consecutive point barriers share one PointGroup (one matmul for their rows),
        # inside it consecutive barriers of one class are merged into one vectorised kernel
        blocks: list[tuple[Any, int, int]] = []
        r = 0
        i = 0
        while i < len(rows):
            j = i + 1
            if isinstance(rows[i], _PointBarrier):
                while j < len(rows) and isinstance(rows[j], _PointBarrier):
                    j += 1
                nr = sum(b.n_rows for b in rows[i:j])
                blocks.append((PointGroup(_merged(rows[i:j]), self._hv[r : r + nr]), r, r + nr))
            else:
                nr = rows[i].n_rows
                blocks.append((rows[i], r, r + nr))
            r += nr
            i = j
        self._blocks_default = [self._block_call(b, r0, r1, self._K_default) for b, r0, r1 in blocks]
        self._blocks_call = [self._block_call(b, r0, r1, self._K_call) for b, r0, r1 in blocks]
        self._levels = sorted(set(prio.tolist()))
        self._init_relaxed(n, m, w, lo, hi)
        if kernel not in KERNELS:
            raise ValueError(f"kernel: {kernel!r} unknown; choose one of {list(KERNELS)}")
        scalar_ok = _ScalarRows.eligible(dyn, rows)
        if kernel == "scalar" and not scalar_ok:
            raise ValueError(f"kernel: 'scalar' is for {KERNELS['scalar']}; use kernel 'auto' or 'generic'")
        self._scalar = _ScalarRows(dyn, rows) if scalar_ok and kernel in ("auto", "scalar") else None
        self._ks_default, self._kp_default = self._K_default[0].tolist(), self._K_default[1].tolist()
        self._lo_l, self._hi_l = lo.tolist(), hi.tolist()
        self._prio_l = prio.tolist()
        self._gidx_l = list(zip(gidx[0].tolist(), gidx[1].tolist(), rel2.tolist()))
        self._Gflat = self._G.reshape(-1)
        self._u_buf = np.zeros(n)
        self._linear = None
        if kernel in ("auto", "affine") and _LinearRows.eligible(dyn, rows):
            self._linear = _LinearRows.build(self._evaluate_rows, self.n_state, self._K_default)
            if self._linear is not None:
                self._G[:] = self._linear.G  # constant: written once, never refilled per call
        if kernel == "affine" and self._linear is None:
            raise ValueError(f"kernel: 'affine' is for {KERNELS['affine']}; use kernel 'auto' or 'generic'")
        #: the row kernel in use (a name in KERNELS other than auto)
        self.kernel = "affine" if self._linear is not None else ("scalar" if self._scalar else "generic")
        self._model: Any = None
        self._setup_model()

    def _setup_model(self) -> None:
        """Constant H and G: a DAQP workspace set up once; per call only f and the bounds change
        (cold start each call: the same answer as daqp.solve, independent of earlier calls)."""
        self._model = None
        if self._fast and self._linear is not None:
            import daqp

            md = daqp.Model()
            if md.setup(self._H, self._f, self._G, self._bu, self._bl, self._sense)[0] >= 0:
                md.settings = {"primal_tol": 1e-10, "iter_limit": _ITER_CAP}
                self._model = md

    def __reduce__(self) -> tuple[Any, ...]:
        """Copies and pickles are new filters built from the same arguments."""
        if self._recipe["barriers"] is None:
            raise TypeError(
                "this SafetyFilter cannot be copied: a barrier could not be copied when it was built"
            )
        return (_rebuild_filter, (self._recipe,))

    def _set_row_gains(self, gv: np.ndarray, K: np.ndarray) -> None:
        """Per-row (ks, kp) in ``K`` (2, m) from the gain vector ``gv`` (n_gains,)."""
        ka, kb = self._Ka, self._Kb
        np.take(gv, self._gidx[0], out=ka)
        np.take(gv, self._gidx[1], out=kb)
        np.multiply(kb, self._rel2, out=K[0])
        K[0] += ka
        np.multiply(ka, kb, out=K[1])

    def _evaluate_rows(
        self, x: np.ndarray, ks: np.ndarray, kp: np.ndarray, env: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of (G, h, h(x)) from the generic barrier blocks at ``x`` with per-row gains."""
        kin = self.dynamics.kinematics(x, self._kin)
        for fill, _ks, _kp, G, h, hv in self._blocks_default:
            sl = self._row_slice(hv)
            fill(x, kin, ks[sl], kp[sl], env, G, h, hv)
        return self._G.copy(), self._h.copy(), self._hv.copy()

    def _block_call(self, b: Any, r0: int, r1: int, K: np.ndarray) -> tuple[Any, ...]:
        return (b.fill, K[0, r0:r1], K[1, r0:r1], self._G[r0:r1], self._h[r0:r1], self._hv[r0:r1])

    # ---- configuration ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SafetyFilter:
        """Build from the ``safety_filter`` schema (docs/ARCHITECTURE.md); ValueError says what to fix."""
        if not isinstance(cfg, Mapping):
            raise ValueError(f"safety_filter: expected a mapping, got {type(cfg).__name__}")
        unknown = set(cfg) - set(_TOP_KEYS)
        if unknown:
            raise ValueError(f"safety_filter: unknown key(s) {sorted(unknown)}; allowed: {list(_TOP_KEYS)}")
        if "dynamics" not in cfg:
            raise ValueError("safety_filter: missing 'dynamics' (e.g. {type: diff_drive})")
        dyn = make_dynamics(cfg["dynamics"])
        c = cfg.get("controls")
        if not isinstance(c, Mapping) or "lower" not in c or "upper" not in c:
            raise ValueError("safety_filter.controls: give {names: [...], lower: [...], upper: [...]}")
        bad = set(c) - {"names", "lower", "upper", "weights"}
        if bad:
            raise ValueError(f"safety_filter.controls: unknown key(s) {sorted(bad)}")
        blist = cfg.get("barriers", [])
        if not isinstance(blist, (list, tuple)):
            raise ValueError("safety_filter.barriers: expected a list of barrier mappings")
        barriers = []
        seen: set[str] = set()
        for i, bc in enumerate(blist):
            where = f"safety_filter.barriers[{i}]"
            if isinstance(bc, Mapping) and "name" in bc:
                where = f"safety_filter.{bc['name']}"
            b = make_barrier(bc, where)
            if b.name in seen:
                raise ValueError(f"{where}: duplicate barrier name {b.name!r}")
            seen.add(b.name)
            barriers.append(b)
        s = cfg.get("slack", {}) or {}
        if not isinstance(s, Mapping) or set(s) - {"enabled", "penalty"}:
            raise ValueError("safety_filter.slack: expected {enabled: bool, penalty: number}")
        f = cfg.get("fallback", {"type": "zero"}) or {"type": "zero"}
        if not isinstance(f, Mapping) or set(f) - {"type", "value", "damping"}:
            raise ValueError("safety_filter.fallback: expected {type: ..., value: [...], damping: ...}")
        return cls(
            dyn,
            barriers,
            c["lower"],
            c["upper"],
            names=list(c["names"]) if c.get("names") is not None else None,
            weights=c.get("weights"),
            slack_enabled=bool(s.get("enabled", True)),
            slack_penalty=float(s.get("penalty", 1e4)),
            fallback=str(f.get("type", "zero")),
            fallback_value=f.get("value"),
            fallback_damping=f.get("damping"),
            solver=str(cfg.get("solver", "daqp")),
            kernel=str(cfg.get("kernel", "auto")),
        )

    def _init_fallback(self, kind: str, value: Any, damping: Any) -> None:
        if kind not in FALLBACKS:
            raise ValueError(
                f"safety_filter.fallback.type: {kind!r} unknown; choose one of {list(FALLBACKS)}"
            )
        self.fallback_type = kind
        self._fb_value = np.clip(np.zeros(self.n_controls), self.lower, self.upper)
        if kind == "constant":
            if value is None:
                raise ValueError("safety_filter.fallback.value: required for type constant")
            v = _floats(value, "safety_filter.fallback.value", self.n_controls)
            if not (np.isfinite(v).all() and (v >= self.lower).all() and (v <= self.upper).all()):
                raise ValueError(f"safety_filter.fallback.value: must be finite and inside the box, got {v}")
            self._fb_value = v
        elif value is not None:
            raise ValueError(f"safety_filter.fallback.value: only for type constant, not {kind}")
        self._fb_damping = None
        if kind == "gravity_compensation":
            try:
                self.dynamics.bias(np.zeros(self.n_state))
            except ValueError as e:
                raise ValueError(f"safety_filter.fallback: {e}") from None
            if damping is not None:
                d = float(damping)
                if not (math.isfinite(d) and d >= 0):
                    raise ValueError(f"safety_filter.fallback.damping: must be >= 0, got {damping!r}")
                self._fb_damping = d
        elif damping is not None:
            raise ValueError("safety_filter.fallback.damping: only for type gravity_compensation")

    # ---- the filter -------------------------------------------------------------------------
    def _solve_nominal(
        self, u_nom: np.ndarray, ul: list[float], box_excess: float = math.inf
    ) -> tuple[np.ndarray, str]:
        """Solve the assembled QP for the nominal command ``u_nom`` (``ul`` = its list form).

        ``box_excess``: an upper bound on max(u_nom - upper, lower - u_nom) when known (the
        fast path's residual); below ``_big_gap`` no |u_nom| can exceed ``_big``."""
        u_q = u_nom
        # keep the QP data finite for absurd nominal commands
        if not box_excess <= self._big_gap and max(map(abs, ul)) > self._big:
            u_q = np.clip(u_nom, self._lbig, self._ubig)
        f = self._f
        if self._negw is None:
            np.negative(u_q, out=f)
        else:
            np.multiply(self._negw, u_q, out=f)
        md = self._model
        if md is not None and md.update(f=f, bupper=self._bu, sense=self._sense) == 0:
            sol, _fv, flag, _info = md.solve()
            status = _DAQP_STATUS.get(flag, "error")
            return sol, status
        if self._fast:
            sol, _fv, flag, _info = self._daqp_solve(
                self._H, f, self._G, self._bu, self._bl, self._sense, primal_tol=1e-10, iter_limit=_ITER_CAP
            )
            status = _DAQP_STATUS.get(flag, "error")
            return sol, status
        r = solve_qp(self._H, f, self._G, self._h, self.lower, self.upper, solver=self.solver_name)
        return (r.x if r.x is not None else np.full(self.n_controls, np.nan)), r.status

    def filter(
        self,
        x: Any,
        u_nom: Any,
        gains: Any = None,
        env: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, FilterReport]:
        """Safe command (n_controls,) and its :class:`FilterReport` for state ``x`` (n_state,).

        Args:
            x: filter state (units of the dynamics' state_names).
            u_nom: (n_controls,) nominal command.
            gains: optional (n_gains,) class-K gains > 0 ordered as :attr:`gain_names` (e.g. a
                BarrierNet policy's gain outputs), or a mapping gain name -> value.
            env: optional run-time data, e.g. ``{"scan_points": (N, 2)}`` world-frame points.
        Raises:
            ValueError: naming the argument whose shape is wrong.
        """
        t0 = _clock()
        x = _asarray(x, dtype=np.float64)
        if x.shape != self._xshape:
            x = self._reshape(x, self.n_state, "x")
        u_nom = _asarray(u_nom, dtype=np.float64)
        if u_nom.shape != self._ushape:
            u_nom = self._reshape(u_nom, self.n_controls, "u_nom")
        ul = u_nom.tolist()
        if not _isfinite(sum(x.tolist()) + sum(ul)):  # nan / inf (or an overflowing sum)
            if not np.isfinite(x).all():
                return self._fallback(x, "x has non-finite values", "invalid_input", u_nom, None, t0)
            if not np.isfinite(u_nom).all():
                return self._fallback(x, "u_nom has non-finite values", "invalid_input", u_nom, None, t0)
        if gains is None:
            lin = self._linear
            if lin is not None:  # affine rows: [h; h(x)] = M x + c, one matvec
                hhv = self._hhv
                _dot(lin.M, x, out=hhv)
                hhv += lin.c
                return self._solve_checked(x, u_nom, ul, t0)
            if self._scalar is not None:
                return self._filter_scalar(x, u_nom, ul, self._ks_default, self._kp_default, t0)
            blocks = self._blocks_default
        else:
            gv = self._gain_vector(gains)
            gl = gv.tolist()
            if not all(0.0 < g < math.inf for g in gl):  # nan fails too
                reason = f"gains must be finite and > 0, got {gl}"
                return self._fallback(x, reason, "invalid_input", u_nom, None, t0)
            if self._scalar is not None:  # per-row (ks, kp) as _set_row_gains, in plain floats
                ks = [gl[i] + r * gl[j] for i, j, r in self._gidx_l]
                kp = [gl[i] * gl[j] for i, j, _r in self._gidx_l]
                return self._filter_scalar(x, u_nom, ul, ks, kp, t0)
            self._set_row_gains(gv, self._K_call)
            if self._linear is not None:
                self._linear.rows_with_gains(x, self._K_call, self._h, self._hv)
                return self._solve_checked(x, u_nom, ul, t0)
            blocks = self._blocks_call
        kin = self._kinematics(x, self._kin)
        try:
            for fill, ks, kp, G, h, hv in blocks:
                fill(x, kin, ks, kp, env, G, h, hv)
        except InputError as e:
            return self._fallback(x, str(e), "invalid_input", u_nom, None, t0)
        return self._solve_checked(x, u_nom, ul, t0)

    def _solve_checked(
        self, x: np.ndarray, u_nom: np.ndarray, ul: list[float], t0: float
    ) -> tuple[np.ndarray, FilterReport]:
        """Steps 2-4 of :meth:`filter` once the rows are in ``_G``, ``_h``, ``_hv``: the fast
        path, the QP, the independent check, the report."""
        # fast path: the nominal command satisfies the box and every row exactly
        res = self._res
        _dot(self._A, u_nom, out=res)
        res -= self._b
        rl = res.tolist()
        excess = math.inf
        if _isfinite(sum(rl)):
            excess = max(rl)
            if excess <= 0.0:
                return u_nom.copy(), FilterReport(
                    self.constraint_names,
                    self._hv.copy(),
                    None,
                    self._zero_slack,
                    0.0,
                    "optimal",
                    self.solver_name,
                    _clock() - t0,
                    False,
                    "",
                    False,
                    self._res_rows.copy(),
                )
        elif not _isfinite(float(self._A.sum()) + float(self._b.sum())):
            reason = "constraint rows are not finite (dynamics or barrier at this state)"
            return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)
        sol, status = self._solve_nominal(u_nom, ul, excess)
        if status == "optimal":
            # independent check: clip into the box (exact bounds), then every row at the clipped u
            u = _minimum(sol, self.upper)
            _maximum(u, self.lower, out=u)
            _dot(self._A, u, out=res)
            res -= self._b
            rl = res.tolist()
            if not (_isfinite(sum(rl)) and max(rl) <= _VERIFY_TOL) and not self._rows_hold(res):
                reason = "solution failed the independent constraint check"
                return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)
            return u, FilterReport(
                self.constraint_names,
                self._hv.copy(),
                None,
                self._zero_slack,
                0.0,
                "optimal",
                self.solver_name,
                _clock() - t0,
                False,
                "",
                _differs(u.tolist(), ul),
                self._res_rows.copy(),
            )
        if status == "infeasible":
            if not self.slack_enabled:
                reason = "CBF constraints infeasible within the control box (slack disabled)"
                return self._fallback(x, reason, "infeasible", u_nom, self._hv.copy(), t0)
            return self._relaxed(x, u_nom, t0)
        reason = f"{self.solver_name} solver failed" + (
            " (iteration cap)" if status == "iteration_cap" else ""
        )
        return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)

    def _filter_scalar(
        self, x: np.ndarray, u_nom: np.ndarray, ul: list[float], ks: list[float], kp: list[float], t0: float
    ) -> tuple[np.ndarray, FilterReport]:
        """:meth:`filter` for problems :class:`_ScalarRows` handles (same steps, plain floats)."""
        assert self._scalar is not None
        try:
            hv, gf, hh, res = self._scalar.rows(x.tolist(), ul, ks, kp)
        except ZeroDivisionError:  # the point exactly at a disc's centre: no gradient
            return self._fallback(x, "barrier gradient undefined at this state (point at a disc centre)",
                                  "solver_error", u_nom, None, t0)  # fmt: skip
        lo, hi = self._lo_l, self._hi_l
        s_res = sum(res)
        if _isfinite(s_res):
            if (not res or max(res) <= 0.0) and all(a <= v <= b for a, v, b in zip(lo, ul, hi)):
                return u_nom.copy(), FilterReport(
                    self.constraint_names,
                    np.array(hv),
                    None,
                    self._zero_slack,
                    0.0,
                    "optimal",
                    self.solver_name,
                    _clock() - t0,
                    False,
                    "",
                    False,
                    np.array(res),
                )
        elif not _isfinite(sum(gf) + sum(hh)):
            self._hv[:] = hv
            reason = "constraint rows are not finite (dynamics or barrier at this state)"
            return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)
        self._Gflat[:] = gf
        self._h[:] = hh
        sol, status = self._solve_nominal(u_nom, ul)
        if status == "optimal":
            # independent check: clip into the box (exact bounds), then every row at the clipped u
            ulist = [a if v < a else (b if v > b else v) for a, v, b in zip(lo, sol.tolist(), hi)]
            n = self.n_controls
            if n == 2:
                u0, u1 = ulist
                rl = [gf[i] * u0 + gf[i + 1] * u1 - hr for i, hr in zip(range(0, len(gf), 2), hh)]
            else:
                rl = [sum(map(_mul, gf[i : i + n], ulist)) - hr for i, hr in zip(range(0, len(gf), n), hh)]
            u = np.array(ulist)
            if not (_isfinite(sum(rl)) and max(rl) <= _VERIFY_TOL) and not self._rows_hold_rows(u):
                reason = "solution failed the independent constraint check"
                return self._fallback(x, reason, "solver_error", u_nom, np.array(hv), t0)
            return u, FilterReport(
                self.constraint_names,
                np.array(hv),
                None,
                self._zero_slack,
                0.0,
                "optimal",
                self.solver_name,
                _clock() - t0,
                False,
                "",
                _differs(ulist, ul),
                np.array(rl),
            )
        self._hv[:] = hv  # for the relaxed / fallback reports
        if status == "infeasible":
            if not self.slack_enabled:
                reason = "CBF constraints infeasible within the control box (slack disabled)"
                return self._fallback(x, reason, "infeasible", u_nom, self._hv.copy(), t0)
            return self._relaxed(x, u_nom, t0)
        reason = f"{self.solver_name} solver failed" + (
            " (iteration cap)" if status == "iteration_cap" else ""
        )
        return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)

    def _rows_hold_rows(self, u: np.ndarray) -> bool:
        """Every row G u - h within 1e-9 (1 + |h|) at the clipped ``u`` (nan fails)."""
        return bool((self._G @ u - self._h <= _VERIFY_TOL * (1.0 + np.abs(self._h))).all())

    def _gain_vector(self, gains: Any) -> np.ndarray:
        """(n_gains,) from an array ordered as :attr:`gain_names`, or a mapping name -> gain
        (names not given keep their YAML value)."""
        if isinstance(gains, Mapping):
            unknown = set(gains) - set(self.gain_names)
            if unknown:
                raise ValueError(f"gains: unknown name(s) {sorted(unknown)}; known: {list(self.gain_names)}")
            gv = self._gain_default.copy()
            for i, name in enumerate(self.gain_names):
                if name in gains:
                    gv[i] = float(gains[name])
            return gv
        gv = np.asarray(gains, dtype=np.float64)
        if gv.shape != (self.n_gains,):
            gv = self._reshape(gv, self.n_gains, "gains")
        return gv

    @staticmethod
    def _reshape(a: np.ndarray, size: int, name: str) -> np.ndarray:
        if a.size != size or (a.ndim > 1 and max(a.shape) != size):
            raise ValueError(f"{name}: expected {size} values (shape ({size},)), got shape {a.shape}")
        return a.reshape(size)

    def _rows_hold(self, res: np.ndarray) -> bool:
        """Residuals ``res`` = A u - b within 1e-9 (1 + |b|) (nan fails)."""
        tol = self._tol
        np.abs(self._b, out=tol)
        tol += 1.0
        tol *= _VERIFY_TOL
        return bool((res <= tol).all())

    def _init_relaxed(self, n: int, m: int, w: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Preallocated data of the relaxed QP in z = (u, s): H = diag(W, 1e-6 I), f = (-W u_nom,
        slack weights), rows [G, -I] z <= h, bounds lower <= u <= upper, s >= 0."""
        nz = n + m
        levels = self._levels
        ratio = _LEVEL_RATIO
        if len(levels) > 1:
            ratio = min(ratio, _MAX_WEIGHT_SPAN ** (1.0 / (len(levels) - 1)))
        rank = np.searchsorted(np.asarray(levels, dtype=np.int64), self.priorities)
        self._slack_weight = self.slack_penalty * ratio ** rank.astype(np.float64)
        self._rH = np.zeros((nz, nz))
        self._rH[:n, :n] = np.diag(w)
        # s's weighted like s (1e-6 at the lowest level): -w / reg stays 1e10 for every row (DAQP's
        # dual works with H^-1 f; 1e-6 against a 1e10 weight lost the solution to rounding)
        self._rH[n:, n:] = np.diag(_SLACK_REG * self._slack_weight / self.slack_penalty)
        self._rf = np.zeros(nz)
        self._rf[n:] = self._slack_weight
        self._rA = np.zeros((m, nz))
        self._rA[:, n:] = -np.eye(m)
        self._rbu = np.concatenate([hi, np.full(m, _INF), np.zeros(m)])
        self._rbl = np.concatenate([lo, np.zeros(m), np.full(m, -_INF)])
        self._rh = self._rbu[nz:]
        self._rsense = np.zeros(nz + m, dtype=np.int32)
        self._rlo = np.concatenate([lo, np.zeros(m)])  # for solvers other than DAQP
        self._rhi = np.concatenate([hi, np.full(m, np.inf)])
        self._rmodel: Any = None

    def _solve_relaxed(self) -> tuple[np.ndarray | None, str]:
        """The relaxed QP at the current rows and linear term ``_f``: (z, status)."""
        n = self.n_controls
        self._rf[:n] = self._f
        self._rh[:] = self._h
        if self._fast:
            md = self._rmodel
            if md is None:  # rows change per call: one workspace, A updated in place
                np.copyto(self._rA[:, :n], self._G)
                import daqp

                md = daqp.Model()
                if md.setup(self._rH, self._rf, self._rA, self._rbu, self._rbl, self._rsense)[0] < 0:
                    return None, "error"
                md.settings = {"primal_tol": 1e-10, "iter_limit": _ITER_CAP}
                self._rmodel = md
                self._rmodel_rows = self._linear is None
            elif self._rmodel_rows:
                np.copyto(self._rA[:, :n], self._G)
                if md.update(A=self._rA, f=self._rf, bupper=self._rbu, sense=self._rsense) != 0:
                    return None, "error"
            elif md.update(f=self._rf, bupper=self._rbu, sense=self._rsense) != 0:
                return None, "error"
            z, _fv, flag, _info = md.solve()
            if flag == 1 or flag == 2:
                return z, "optimal"
            return None, ("iteration_cap" if flag == -4 else ("infeasible" if flag == -1 else "error"))
        np.copyto(self._rA[:, :n], self._G)
        r = solve_qp(self._rH, self._rf, self._rA, self._h, self._rlo, self._rhi, solver=self.solver_name)
        return r.x, r.status

    def _relaxed(self, x: np.ndarray, u_nom: np.ndarray, t0: float) -> tuple[np.ndarray, FilterReport]:
        """One relaxed QP (module docstring, step 3); the rows above the highest priority level
        left with slack are hard and checked as such (plain floats: m is small)."""
        n = self.n_controls
        z, status = self._solve_relaxed()
        if z is None:
            reason = "relaxed QP hit the iteration cap" if status == "iteration_cap" else "relaxed QP failed"
            return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)
        zl = z.tolist()
        hl = self._h.tolist()
        tol = [_VERIFY_TOL * (1.0 + abs(b)) for b in hl]
        top = None  # the highest level with slack beyond the check's tolerance
        for s_i, t_i, p_i in zip(zl[n:], tol, self._prio_l):
            if s_i > t_i and (top is None or p_i > top):
                top = p_i
        ul = [a if v < a else (b if v > b else v) for a, v, b in zip(self._lo_l, zl[:n], self._hi_l)]
        u = np.array(ul)
        res = [g - b for g, b in zip((self._G @ u).tolist(), hl)]
        viol = [0.0] * self.n_rows
        ok = _isfinite(sum(ul) + sum(res))
        for i, (r_i, t_i, p_i) in enumerate(zip(res, tol, self._prio_l)):
            if r_i > t_i:
                if top is None or p_i > top:
                    ok = False  # a hard row violated
                else:
                    viol[i] = r_i
        if not ok:
            reason = "relaxed solution failed the independent constraint check"
            return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)
        return u, FilterReport(
            self.constraint_names,
            self._hv.copy(),
            None,
            np.array(viol),
            sum(viol),
            "relaxed",
            self.solver_name,
            _clock() - t0,
            False,
            "",
            _differs(ul, u_nom.tolist()),
            np.array(res),
        )

    def constraints(
        self, x: Any, gains: Any = None, env: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The QP rows at ``x``: copies of G (m, n_controls), h (m,) (``G u <= h``) and h(x) (m,).

        For inspection and tests; raises ``ValueError`` / :class:`barriernet.barriers.InputError`
        where :meth:`filter` would fall back."""
        x = self._reshape(np.asarray(x, dtype=np.float64), self.n_state, "x")
        if not np.isfinite(x).all():
            raise ValueError("x: non-finite values")
        blocks = self._blocks_default
        if gains is not None:
            gv = self._gain_vector(gains)
            if not (np.isfinite(gv).all() and (gv > 0).all()):
                raise ValueError(f"gains must be finite and > 0, got {gv.tolist()}")
            self._set_row_gains(gv, self._K_call)
            blocks = self._blocks_call
        kin = self.dynamics.kinematics(x, self._kin)
        for fill, ks, kp, G, h, hv in blocks:
            fill(x, kin, ks, kp, env, G, h, hv)
        return self._G.copy(), self._h.copy(), self._hv.copy()

    def row_terms(
        self, x: Any, env: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gain-free pieces of the QP rows at ``x``: G (m, n_controls) and a, b, c (m,) with

            G u <= a + ks b + kp c      (per-row gains ks, kp as :meth:`row_gain_index` maps them)

        Relative degree 1: b = h(x), c = 0 (a holds Lf h); HOCBF rows: b = h'(x), c = h(x)
        (a holds Lf^2 h). For training a BarrierNet policy through a differentiable QP: these
        are data, computed once per sample; only the gains are learned. Rows that constrain
        nothing (scan rows without a point: G = 0 and a, b, c >= 0) come as a = +inf, b = c = 0.
        Raises ``ValueError`` / :class:`barriernet.barriers.InputError` where :meth:`filter`
        would fall back (non-finite ``x``, a missing ``env`` entry)."""
        x = self._reshape(np.asarray(x, dtype=np.float64), self.n_state, "x")
        if not np.isfinite(x).all():
            raise ValueError("x: non-finite values")
        m = self.n_rows
        kin = self.dynamics.kinematics(x, self._kin)
        hs = []
        # every fill is affine in (ks, kp): three evaluations give the three coefficients
        for ks, kp in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
            KS, KP = np.full(m, ks), np.full(m, kp)
            for fill, _ks, _kp, G, h, hv in self._blocks_default:
                sl = self._row_slice(hv)
                fill(x, kin, KS[sl], KP[sl], env, G, h, hv)
            hs.append(self._h.copy())
        G = self._G.copy()
        a, b, c = hs[0], hs[1] - hs[0], hs[2] - hs[0]
        free = ~G.any(axis=1) & (a >= 0) & (b >= 0) & (c >= 0)
        a[free], b[free], c[free] = np.inf, 0.0, 0.0
        return G, a, b, c

    def row_gain_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """How the gain vector g (ordered as :attr:`gain_names`) gives each row's (ks, kp):
        ``(i1, i2, deg2)`` (m,) each, with ks = g[i1] + deg2 g[i2], kp = deg2 g[i1] g[i2]
        (degree 1: ks = k; HOCBF: ks = p1 + p2, kp = p1 p2)."""
        return self._gidx[0].copy(), self._gidx[1].copy(), self._rel2 > 0

    def barrier_values(self, x: Any, env: Mapping[str, Any] | None = None) -> np.ndarray:
        """h(x) of every row (m,) at the default gains; nan where it cannot be computed
        (non-finite x, a barrier whose ``env`` entry is missing)."""
        out = np.full(self.n_rows, np.nan)
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        if xa.size != self.n_state or not np.isfinite(xa).all():
            return out
        try:
            kin = self.dynamics.kinematics(xa, self._kin)
        except Exception:
            return out
        for fill, ks, kp, G, h, hv in self._blocks_default:
            grp = getattr(fill, "__self__", None)
            if isinstance(grp, PointGroup):  # members one by one: a missing scan leaves walls known
                for b in grp.members:
                    try:
                        b.phi(kin.p, kin.v if grp.order == 2 else None, env)
                    except Exception:
                        b.hv[:] = np.nan
                out[self._row_slice(hv)] = hv
                continue
            try:
                fill(xa, kin, ks, kp, env, G, h, hv)
                out[self._row_slice(hv)] = hv
            except Exception:
                pass
        return out

    def _row_slice(self, view: np.ndarray) -> slice:
        """The rows of ``self._hv`` that ``view`` covers."""
        r0 = (view.ctypes.data - self._hv.ctypes.data) // self._hv.itemsize
        return slice(r0, r0 + view.shape[0])

    # ---- fallback ---------------------------------------------------------------------------
    def fallback_command(self, x: Any) -> np.ndarray:
        """The configured fallback command at state ``x``, clipped to the box (finite always)."""
        u = self._fb_value
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        if xa.size == self.n_state and all(map(_isfinite, xa.tolist())):
            try:
                if self.fallback_type == "brake":
                    u = np.asarray(self.dynamics.brake(xa), dtype=np.float64).reshape(-1)
                elif self.fallback_type == "gravity_compensation":
                    u = np.asarray(self.dynamics.bias(xa), dtype=np.float64).reshape(-1)
                    k = self.n_state // 2
                    d = self._fb_damping
                    if d is None:
                        d = float(getattr(self.dynamics, "damping", 0.0))
                    u = u - d * xa[k:]
            except Exception:  # a fallback must never raise: use the default point
                u = self._fb_value
        ul = u.tolist() if u.shape == self._ushape else []
        if len(ul) != self.n_controls or not all(map(_isfinite, ul)):
            ul = [0.0] * self.n_controls
        # clipped into the box (plain floats: numpy's per-call cost dominates at this size)
        return np.array([a if v < a else (b if v > b else v) for a, v, b in zip(self._lo_l, ul, self._hi_l)])

    def fallback(self, x: Any, reason: str, status: str = "invalid_input") -> tuple[np.ndarray, FilterReport]:
        """Fallback command and report for a caller that knows the input is bad (``reason``)."""
        if status not in STATUSES:
            raise ValueError(f"status: {status!r} not one of {STATUSES}")
        return self._fallback(x, str(reason), status, None, None, time.perf_counter())

    def _fallback(
        self,
        x: Any,
        reason: str,
        status: str,
        u_nom: np.ndarray | None,
        hv: np.ndarray | None,
        t0: float,
    ) -> tuple[np.ndarray, FilterReport]:
        u = self.fallback_command(x)
        m = self.n_rows
        if hv is None:
            hv = self.barrier_values(x)
        intervened = True
        if u_nom is not None and u_nom.shape == u.shape:
            nl = u_nom.tolist()
            if all(map(_isfinite, nl)):
                intervened = _differs(u.tolist(), nl)
        return u, FilterReport(
            self.constraint_names,
            hv,
            np.zeros(m, dtype=bool),
            self._zero_slack,
            0.0,
            status,
            self.solver_name,
            time.perf_counter() - t0,
            True,
            reason,
            intervened,
        )

    def __repr__(self) -> str:
        return (
            f"SafetyFilter({type(self.dynamics).__name__}, {self.n_controls} controls, {self.n_rows} rows, "
            f"solver={self.solver_name}, fallback={self.fallback_type})"
        )
