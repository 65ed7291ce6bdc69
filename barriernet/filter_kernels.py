"""Row kernels of the safety filter: how the CBF rows ``G u <= h`` and h(x) are computed per call.

Every kernel gives the rows of ``generic`` (the tests compare them); they differ only in
speed. One interface, :class:`RowKernel`:

- ``supports(qp) -> str | None``: None when the kernel can compute these rows, else why not;
- ``rows(x, u_nom, ul, gains, env) -> excess``: the rows at ``x`` written into the
  :class:`~barriernet.filter_rows.QPRows` buffers, and max(A u_nom - b) over the box and the
  rows (<= 0: ``u_nom`` is safe as it is, and ``nominal`` holds copies of h(x) and
  G u_nom - h (m,) for its report; inf: unknown; nan: the rows are not finite);
- ``verify(sol, ul)``: the independent check of a QP answer: ``(u, G u - h, intervened)``
  with u clipped into the box, or None when a row fails.

The base class does the last three on the numpy buffers, so ``generic`` and ``affine`` only
write the rows (``fill``); ``scalar`` keeps its rows in plain floats and overrides them.
:data:`KERNELS` maps each name (``SafetyFilter(kernel=)``, YAML ``kernel``) to its class;
``auto`` takes the first in that order whose ``supports`` says yes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from barriernet import compiled
from barriernet.barriers import (
    CircleObstacle,
    HalfSpace,
    JointPositionLimits,
    JointVelocityLimits,
    SpeedLimit,
)
from barriernet.dynamics import DiffDrive, DoubleIntegrator, Unicycle
from barriernet.filter_report import differs
from barriernet.filter_rows import VERIFY_TOL, QPRows

__all__ = [
    "KERNELS",
    "AffineRows",
    "GenericRows",
    "RowKernel",
    "RowsUndefined",
    "ScalarRows",
    "choose_kernel",
]

_isfinite = math.isfinite
_mul = operator.mul
_cos, _sin, _sqrt = math.cos, math.sin, math.sqrt
_dot, _minimum, _maximum = np.dot, np.minimum, np.maximum


class RowsUndefined(ArithmeticError):
    """The rows have no value at this state (e.g. a point at a disc's centre): the filter falls back."""


class RowKernel:
    """One way to compute the rows per call (module docstring); the base works on ``qp``'s buffers."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: G is written once when the kernel is built (the QP workspaces keep it)
    constant_G: ClassVar[bool] = False

    @classmethod
    def supports(cls, qp: QPRows) -> str | None:
        """None when this kernel computes ``qp``'s rows, else the reason it cannot."""
        return None

    def __init__(self, qp: QPRows) -> None:
        self.qp = qp
        #: (h(x), G u_nom - h) when :meth:`rows` last found ``u_nom`` safe (a tuple: no call per use)
        self.nominal: tuple[np.ndarray, np.ndarray] = (qp.hv.copy(), qp.res_rows.copy())
        self.A, self.b, self.res, self.hv = qp.A, qp.b, qp.res, qp.hv
        self.res_rows, self.lower, self.upper = qp.res_rows, qp.lower, qp.upper
        # A u - b in one compiled call where numba runs (barriernet.compiled), else numpy
        self._resid = compiled.residuals()
        self._u = np.zeros(qp.n_controls)
        if self._resid is not None:  # compile (or load) now, not in the first call
            self._resid(np.zeros(qp.n_controls), self.lower, self.upper, True, self.A, self.b, self._u,
                        np.zeros(self.res.size))  # fmt: skip

    def fill(self, x: np.ndarray, gains: np.ndarray | None, env: Mapping[str, Any] | None) -> None:
        """G, h, h(x) at ``x`` into the buffers (gains: None for the YAML gains, else (n_gains,) > 0)."""
        raise NotImplementedError

    def rows(
        self,
        x: np.ndarray,
        u_nom: np.ndarray,
        ul: list[float],
        gains: np.ndarray | None,
        env: Mapping[str, Any] | None,
    ) -> float:
        """The rows at ``x`` (``ul``: ``u_nom`` as a list) and the excess max(A u_nom - b)."""
        self.fill(x, gains, env)
        finite, excess = self._residuals(u_nom, False)
        if finite:
            if excess <= 0.0:
                self.nominal = (self.hv.copy(), self.res_rows.copy())
            return excess
        if _isfinite(float(self.A.sum()) + float(self.b.sum())):
            return math.inf
        return math.nan

    def row_infeasible_in_box(self) -> bool:
        """True only when some row of the last :meth:`rows` cannot hold anywhere in the box:
        min over the box of G_i u exceeds h_i by more than the independent check's tolerance
        (so the QP is infeasible for certain). False means unknown (the QP decides)."""
        return False

    def verify(self, sol: np.ndarray, ul: list[float]) -> tuple[np.ndarray, np.ndarray, bool] | None:
        """``sol`` clipped into the box (exact bounds), every row checked at the clipped u."""
        finite, largest = self._residuals(sol, True)
        if not (finite and largest <= VERIFY_TOL) and not self.qp.rows_hold(self.res):
            return None
        u = self._u.copy()
        return u, self.res_rows.copy(), differs(u.tolist(), ul)

    def _residuals(self, v: np.ndarray, clip: bool) -> tuple[bool, float]:
        """``res`` = A u - b at u = ``v``, clipped into the box first when ``clip`` (u then in
        ``_u``): (their sum is finite, their largest). One compiled call where numba runs and
        ``v`` has its one compiled layout, else numpy."""
        res, resid = self.res, self._resid
        if resid is not None and v.flags.c_contiguous and v.dtype == np.float64:
            return resid(v, self.lower, self.upper, clip, self.A, self.b, self._u, res)  # type: ignore[no-any-return]
        u = v
        if clip:
            u = _minimum(v, self.upper, out=self._u)
            _maximum(u, self.lower, out=u)
        _dot(self.A, u, out=res)
        res -= self.b
        rl = res.tolist()
        finite = _isfinite(sum(rl))
        return finite, (max(rl) if finite else math.nan)


class GenericRows(RowKernel):
    name = "generic"
    description = "the barrier blocks, vectorised (any dynamics and barrier, scan rows included)"

    def fill(self, x: np.ndarray, gains: np.ndarray | None, env: Mapping[str, Any] | None) -> None:
        self.qp.fill(x, gains, env)


class AffineRows(RowKernel):
    """Rows affine in the state with a constant G: half-space and joint-limit barriers on a
    double integrator (p'' = u, no drift). Per row

        G u <= a(x) + ks b(x) + kp c(x),   G constant, a, b, c and h(x) affine in x,

    so ``[h; h(x)] = M x + c`` is one matvec per call. M and c come from the generic blocks
    themselves (evaluated at x = 0 and at the unit states, exact for affine maps up to
    rounding) and must reproduce them at seeded random states, else ``supports`` says no.
    """

    name = "affine"
    description = (
        "rows affine in the state with a constant G (half-space / joint-limit rows on a double "
        "integrator): [h; h(x)] = M x + c, one matvec, a DAQP workspace set up once"
    )
    constant_G = True
    KINDS = (HalfSpace, JointPositionLimits, JointVelocityLimits)

    @classmethod
    def supports(cls, qp: QPRows) -> str | None:
        if type(qp.dynamics) is not DoubleIntegrator or not qp.rows:
            return "needs double_integrator dynamics and at least one row"
        if not all(type(b) in cls.KINDS for b in qp.rows):
            return "needs half_space / joint_position_limits / joint_velocity_limits rows only"
        return None if cls._fit(qp) is not None else "the rows are not affine in the state"

    @staticmethod
    def _fit(qp: QPRows) -> tuple[np.ndarray, ...] | None:
        """(G, M4, c4, M, c): rows a, b, c, h(x) stacked (4m,) = M4 x + c4 and, with the
        default gains folded in, [h; h(x)] = M x + c; None if the rows are not affine."""
        ns, m, K = qp.n_state, qp.n_rows, qp.K_default
        zero, one = np.zeros(m), np.ones(m)
        pieces = []  # per state (0, e_1, ..., e_ns): a, b, c, h(x) stacked (4m,)
        G0 = None
        for j in range(ns + 1):
            xj = np.zeros(ns)
            if j:
                xj[j - 1] = 1.0
            G, ha, hv = qp.evaluate(xj, zero, zero)
            _, hb, _ = qp.evaluate(xj, one, zero)
            _, hc, _ = qp.evaluate(xj, zero, one)
            if G0 is None:
                G0 = G
            elif not np.array_equal(G, G0):
                return None
            pieces.append(np.concatenate([ha, hb - ha, hc - ha, hv]))
        assert G0 is not None
        c4 = pieces[0]
        M4 = np.column_stack([p - c4 for p in pieces[1:]]) if ns else np.zeros((4 * m, 0))
        Ma, Mb, Mc, Mv = M4[:m], M4[m : 2 * m], M4[2 * m : 3 * m], M4[3 * m :]
        ca, cb, cc, cv = c4[:m], c4[m : 2 * m], c4[2 * m : 3 * m], c4[3 * m :]
        M = np.ascontiguousarray(np.vstack([Ma + K[0][:, None] * Mb + K[1][:, None] * Mc, Mv]))
        c = np.concatenate([ca + K[0] * cb + K[1] * cc, cv])
        rng = np.random.default_rng(0)  # the affine maps must reproduce the generic rows
        for scale in (0.1, 1.0, 10.0):
            x = rng.standard_normal(ns) * scale
            _, h, hv = qp.evaluate(x, K[0], K[1])
            want = np.concatenate([h, hv])
            got = M @ x + c
            if not (np.abs(got - want) <= 1e-9 * (1.0 + np.abs(want))).all():
                return None
        return G0, M4, c4, M, c

    def __init__(self, qp: QPRows) -> None:
        super().__init__(qp)
        fit = self._fit(qp)
        if fit is None:
            raise ValueError(
                "kernel: 'affine' needs rows affine in the state; use kernel 'auto' or 'generic'"
            )
        G, self.M4, self.c4, self.M, self.c = fit  # M4, c4: rows a, b, c, h(x) (4m, n_state), (4m,)
        qp.G[:] = G  # constant: written once, never refilled per call
        m = self.m = qp.n_rows
        self.hhv, self.h, self.K_call = qp.hhv, qp.h, qp.K_call
        self._y, self._t = np.zeros(4 * m), np.zeros(m)

    def fill(self, x: np.ndarray, gains: np.ndarray | None, env: Mapping[str, Any] | None) -> None:
        if gains is None:
            hhv = self.hhv
            _dot(self.M, x, out=hhv)
            hhv += self.c
            return
        # h = a + ks b + kp c and h(x) for the per-row gains of ``gains``
        m, y, t, h, K = self.m, self._y, self._t, self.h, self.K_call
        self.qp.set_row_gains(gains, K)
        _dot(self.M4, x, out=y)
        y += self.c4
        np.multiply(K[0], y[m : 2 * m], out=h)
        h += y[:m]
        np.multiply(K[1], y[2 * m : 3 * m], out=t)
        h += t
        self.hv[:] = y[3 * m :]


class ScalarRows(RowKernel):
    """Plain floats for small problems of the built-in point models (diff_drive, unicycle,
    double integrator) with half-space, disc and speed rows: no numpy call until the QP
    (numpy's fixed cost, ~0.5-1 us a call, dominates a filter call of this size). The rows
    are those of ``generic`` (the tests compare them); the buffers are written only when the QP runs.
    """

    name = "scalar"
    description = (
        "plain floats for point models (diff_drive, unicycle, double_integrator) with <= 32 "
        "half_space / circle_obstacle / speed_limit rows"
    )
    MAX_ROWS = 32
    _KIND = {DiffDrive: 0, Unicycle: 1, DoubleIntegrator: 2}

    @classmethod
    def supports(cls, qp: QPRows) -> str | None:
        dyn, rows, m = qp.dynamics, qp.rows, qp.n_rows
        if type(dyn) not in cls._KIND or not rows:
            return "needs diff_drive / unicycle / double_integrator dynamics and at least one row"
        # plain floats win over numpy's fixed per-call cost in the plane, and for few
        # coordinates x rows beyond it (measured: bench_filter, scalar vs vectorised)
        if m > cls.MAX_ROWS or (dyn.point_dim != 2 and dyn.point_dim * m > 16):
            return f"{m} rows of {dyn.point_dim} coordinates are faster vectorised"
        if not all(type(b) in (HalfSpace, CircleObstacle, SpeedLimit) for b in rows):
            return "needs half_space / circle_obstacle / speed_limit rows only"
        return None

    def __init__(self, qp: QPRows) -> None:
        super().__init__(qp)
        dyn = qp.dynamics
        self.kind = self._KIND[type(dyn)]
        self.d = dyn.point_dim
        self.look = float(getattr(dyn, "lookahead", 0.0))
        self.spec: list[tuple[int, list[float], float]] = []
        for b in qp.rows:
            if isinstance(b, HalfSpace):
                self.spec.append((0, b.N[0].tolist(), float(b.off[0])))
            elif isinstance(b, CircleObstacle):
                self.spec.append((1, b.C[0].tolist(), float(b.R[0])))
            else:
                self.spec.append((2, [], float(b.v2)))  # type: ignore[attr-defined]
        self.ks_default, self.kp_default = qp.K_default[0].tolist(), qp.K_default[1].tolist()
        self.gidx = list(zip(qp.gidx[0].tolist(), qp.gidx[1].tolist(), qp.rel2.tolist()))
        self.lo, self.hi = qp.lower.tolist(), qp.upper.tolist()
        self.n = qp.n_controls
        self.Gflat, self.hhv = qp.Gflat, qp.hhv
        self._gf: list[float] = []  # G (row-major), h and G u_nom - h of this call (verify, certificate)
        self._hh: list[float] = []
        self._rl: list[float] = []

    def rows(
        self,
        x: np.ndarray,
        u_nom: np.ndarray,
        ul: list[float],
        gains: np.ndarray | None,
        env: Mapping[str, Any] | None,
    ) -> float:
        if gains is None:
            ks, kp = self.ks_default, self.kp_default
        else:  # per-row (ks, kp) as QPRows.set_row_gains, in plain floats
            gl = gains.tolist()
            ks = [gl[i] + r * gl[j] for i, j, r in self.gidx]
            kp = [gl[i] * gl[j] for i, j, _r in self.gidx]
        try:
            hv, gf, hh, res = self._rows(x.tolist(), ul, ks, kp)
        except ZeroDivisionError:  # the point exactly at a disc's centre: no gradient
            raise RowsUndefined("barrier gradient undefined at this state (point at a disc centre)") from None
        excess = math.inf
        if _isfinite(sum(res)):
            if (not res or max(res) <= 0.0) and all(a <= v <= b for a, v, b in zip(self.lo, ul, self.hi)):
                self.nominal = (np.array(hv), np.array(res))
                return 0.0
        elif not _isfinite(sum(gf) + sum(hh)):
            excess = math.nan
        self._gf, self._hh, self._rl = gf, hh, res
        self.Gflat[:] = gf
        self.hhv[:] = hh + hv
        return excess

    def _rows(
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

    def row_infeasible_in_box(self) -> bool:
        lo, hi, n, gf, hh = self.lo, self.hi, self.n, self._gf, self._hh
        for r, rr in enumerate(self._rl):
            if not rr > 0.0:  # holds at u_nom (inside the box or not): not box-infeasible alone
                continue
            hr = hh[r]
            low = 0.0  # min over the box of G_r u, coordinate by coordinate
            for j in range(n):
                g = gf[r * n + j]
                low += g * lo[j] if g > 0.0 else g * hi[j]
            if low - hr > VERIFY_TOL * (1.0 + abs(hr)):  # nan compares False: unknown
                return True
        return False

    def verify(self, sol: np.ndarray, ul: list[float]) -> tuple[np.ndarray, np.ndarray, bool] | None:
        lo, hi, n, gf, hh = self.lo, self.hi, self.n, self._gf, self._hh
        ulist = [a if v < a else (b if v > b else v) for a, v, b in zip(lo, sol.tolist(), hi)]
        if n == 2:
            u0, u1 = ulist
            rl = [gf[i] * u0 + gf[i + 1] * u1 - hr for i, hr in zip(range(0, len(gf), 2), hh)]
        else:
            rl = [sum(map(_mul, gf[i : i + n], ulist)) - hr for i, hr in zip(range(0, len(gf), n), hh)]
        u = np.array(ulist)
        if not (_isfinite(sum(rl)) and max(rl) <= VERIFY_TOL) and not self.qp.rows_hold_at(u):
            return None
        return u, np.array(rl), differs(ulist, ul)


#: ``kernel=`` names -> classes, in the order ``auto`` tries them (``generic`` takes any rows).
KERNELS: dict[str, type[RowKernel]] = {"affine": AffineRows, "scalar": ScalarRows, "generic": GenericRows}


def choose_kernel(name: str, qp: QPRows) -> RowKernel:
    """The kernel ``name`` (``auto`` or a key of :data:`KERNELS`) built on ``qp``; ValueError
    naming the argument when the name is unknown or the rows do not allow that kernel."""
    if name == "auto":
        for cls in KERNELS.values():
            if cls.supports(qp) is None:
                return cls(qp)
    if name not in KERNELS:
        raise ValueError(f"kernel: {name!r} unknown; choose one of {['auto', *KERNELS]}")
    cls = KERNELS[name]
    why = cls.supports(qp)
    if why is not None:
        raise ValueError(f"kernel: {name!r} is for {cls.description} ({why}); use kernel 'auto' or 'generic'")
    return cls(qp)
