"""The safety filter's two QPs on the rows in a :class:`~barriernet.filter_rows.QPRows`.

:class:`NominalQP`: ``min 1/2 (u - u_nom)' W (u - u_nom)  s.t.  G u <= h, lower <= u <= upper``.
:class:`RelaxedQP`: the same in z = (u, s) with a slack s_i >= 0 on every row (``G u - s <= h``)
under the L1 penalty ``sum_i w_i s_i`` (+ 1e-6 w_i s_i^2 / penalty for strict convexity),
w_i = penalty * B^r for a row of the r-th lowest priority level (B = 1000, lower beyond four
levels so that the largest weight stays <= 1e9 penalty); see ``barriernet.safety_filter``.

With ``solver="daqp"`` DAQP is called directly on the preallocated data, each solve capped at
:data:`ITER_CAP` iterations (hit: status ``iteration_cap``, the filter falls back). A kernel
whose G is constant (``RowKernel.constant_G``) lets both QPs keep one DAQP workspace, set up
once (per call only the linear term and the bounds change, cold-started, so the answer does
not depend on earlier calls); other solvers go through :func:`barriernet.qp.solve_qp`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from barriernet import compiled
from barriernet.filter_rows import INF, VERIFY_TOL, QPRows
from barriernet.qp import solve_qp

__all__ = ["ITER_CAP", "NominalQP", "RelaxedQP"]

ITER_CAP = 200  # DAQP iterations per solve (beyond: fallback; these QPs need < 2 (n + m))
_DAQP_STATUS = {1: "optimal", 2: "optimal", -1: "infeasible", -4: "iteration_cap"}  # exit flags
_SLACK_REG = 1e-6  # quadratic weight on slack (keeps the relaxed QP strictly convex)
_LEVEL_RATIO = 1e3  # slack weight ratio between consecutive priority levels
_MAX_WEIGHT_SPAN = 1e9  # the largest slack weight over the smallest, at most
_isfinite = math.isfinite
_CHECK_FAILED = "relaxed solution failed the independent constraint check"


def _daqp_model(
    H: np.ndarray, f: np.ndarray, A: np.ndarray, bu: np.ndarray, bl: np.ndarray, sense: np.ndarray
) -> Any:
    """A DAQP workspace with the filter's settings, or None when setup fails."""
    import daqp

    md = daqp.Model()
    if md.setup(H, f, A, bu, bl, sense)[0] < 0:
        return None
    md.settings = {"primal_tol": 1e-10, "iter_limit": ITER_CAP}
    return md


class NominalQP:
    """The filter's QP for a nominal command; ``f`` (n,) = -W u_nom after :meth:`solve`."""

    def __init__(self, qp: QPRows, solver: str, constant_G: bool) -> None:
        self.qp = qp
        self.solver_name = solver
        lo, hi, w = qp.lower, qp.upper, qp.weights
        self.fast = solver == "daqp"
        if self.fast:
            import daqp

            self._daqp_solve = daqp.solve
        self.H = np.diag(w)
        self._negw = None if (w == 1.0).all() else -w
        self.f = np.zeros(qp.n_controls)
        self._G, self._h, self._bu, self._bl, self._sense = qp.G, qp.h, qp.bu, qp.bl, qp.sense
        # absurd nominal commands are clipped to [lower - 1e6 w, upper + 1e6 w] (w = 1 + width)
        self._ubig = hi + 1e6 * (1.0 + hi - lo)
        self._lbig = lo - 1e6 * (1.0 + hi - lo)
        self._big = float(np.abs(np.concatenate([self._ubig, self._lbig])).min())
        # |u_i| > _big implies u_i - upper_i or lower_i - u_i > _big_gap
        self._big_gap = self._big - float(np.abs(np.concatenate([lo, hi])).max())
        self._model: Any = None
        if self.fast and constant_G:
            self._model = _daqp_model(self.H, self.f, self._G, self._bu, self._bl, self._sense)

    def linear_term(self, u_nom: np.ndarray, ul: list[float], box_excess: float = math.inf) -> np.ndarray:
        """``f`` = -W u_nom (u_nom clipped far outside the box when absurd), as :meth:`solve` sets it."""
        u_q = u_nom
        # keep the QP data finite for absurd nominal commands
        if not box_excess <= self._big_gap and max(map(abs, ul)) > self._big:
            u_q = np.clip(u_nom, self._lbig, self._ubig)
        f = self.f
        if self._negw is None:
            np.negative(u_q, out=f)
        else:
            np.multiply(self._negw, u_q, out=f)
        return f

    def solve(
        self, u_nom: np.ndarray, ul: list[float], box_excess: float = math.inf
    ) -> tuple[np.ndarray, str]:
        """(u, status) for the nominal command ``u_nom`` (``ul`` = its list form).

        ``box_excess``: an upper bound on max(u_nom - upper, lower - u_nom) when known (the
        shortcut's residual); below ``_big_gap`` no |u_nom| can exceed ``_big``."""
        f = self.linear_term(u_nom, ul, box_excess)
        md = self._model
        if md is not None and md.update(f=f, bupper=self._bu, sense=self._sense) == 0:
            sol, _fv, flag, _info = md.solve()
            return sol, _DAQP_STATUS.get(flag, "error")
        if self.fast:
            sol, _fv, flag, _info = self._daqp_solve(
                self.H, f, self._G, self._bu, self._bl, self._sense, primal_tol=1e-10, iter_limit=ITER_CAP
            )
            return sol, _DAQP_STATUS.get(flag, "error")
        qp = self.qp
        r = solve_qp(self.H, f, self._G, self._h, qp.lower, qp.upper, solver=self.solver_name)
        return (r.x if r.x is not None else np.full(qp.n_controls, np.nan)), r.status


class RelaxedQP:
    """The one relaxed QP in z = (u, s) (module docstring) and the check of its answer.

    Data: H = diag(W, 1e-6 w / penalty), f = (-W u_nom, w), rows [G, -I] z <= h, bounds
    lower <= u <= upper, s >= 0."""

    def __init__(self, qp: QPRows, penalty: float, solver: str, constant_G: bool) -> None:
        n, m = qp.n_controls, qp.n_rows
        lo, hi = qp.lower, qp.upper
        self.qp, self.n, self.solver_name = qp, n, solver
        self.fast = solver == "daqp"
        self.rows_change = not constant_G
        nz = n + m
        levels = sorted(set(qp.priorities.tolist()))
        ratio = _LEVEL_RATIO
        if len(levels) > 1:
            ratio = min(ratio, _MAX_WEIGHT_SPAN ** (1.0 / (len(levels) - 1)))
        rank = np.searchsorted(np.asarray(levels, dtype=np.int64), qp.priorities)
        weight = penalty * ratio ** rank.astype(np.float64)
        self.H = np.zeros((nz, nz))
        self.H[:n, :n] = np.diag(qp.weights)
        # s's weighted like s (1e-6 at the lowest level): -w / reg stays 1e10 for every row (DAQP's
        # dual works with H^-1 f; 1e-6 against a 1e10 weight lost the solution to rounding)
        self.H[n:, n:] = np.diag(_SLACK_REG * weight / penalty)
        self.f = np.zeros(nz)
        self.f[n:] = weight
        self.A = np.zeros((m, nz))
        self.A[:, n:] = -np.eye(m)
        self.bu = np.concatenate([hi, np.full(m, INF), np.zeros(m)])
        self.bl = np.concatenate([lo, np.zeros(m), np.full(m, -INF)])
        self.h = self.bu[nz:]
        self.sense = np.zeros(nz + m, dtype=np.int32)
        self.lo = np.concatenate([lo, np.zeros(m)])  # for solvers other than DAQP
        self.hi = np.concatenate([hi, np.full(m, np.inf)])
        self.lo_l, self.hi_l, self.prio_l = lo.tolist(), hi.tolist(), qp.priorities.tolist()
        self._model: Any = None
        # the check in one compiled call where numba runs (barriernet.compiled), else plain floats
        self._check = compiled.relaxed_check()
        self._u_b, self._res_b, self._viol_b = np.zeros(n), np.zeros(m), np.zeros(m)
        if self._check is not None:  # compile (or load) now, not in the first relaxed call
            self._check(np.zeros(nz), qp.G, self.h, lo, hi, qp.priorities, VERIFY_TOL,
                        self._u_b, self._res_b, self._viol_b)  # fmt: skip

    def solve(self, f: np.ndarray) -> tuple[np.ndarray | None, str]:
        """The relaxed QP at the current rows and the nominal QP's linear term ``f``: (z, status)."""
        n, qp = self.n, self.qp
        self.f[:n] = f
        self.h[:] = qp.h
        if self.fast:
            md = self._model
            if md is None:  # one workspace; rows that change per call are updated in place
                np.copyto(self.A[:, :n], qp.G)
                md = _daqp_model(self.H, self.f, self.A, self.bu, self.bl, self.sense)
                if md is None:
                    return None, "error"
                self._model = md
            elif self.rows_change:
                np.copyto(self.A[:, :n], qp.G)
                if md.update(A=self.A, f=self.f, bupper=self.bu, sense=self.sense) != 0:
                    return None, "error"
            elif md.update(f=self.f, bupper=self.bu, sense=self.sense) != 0:
                return None, "error"
            z, _fv, flag, _info = md.solve()
            if flag == 1 or flag == 2:
                return z, "optimal"
            return None, ("iteration_cap" if flag == -4 else ("infeasible" if flag == -1 else "error"))
        np.copyto(self.A[:, :n], qp.G)
        r = solve_qp(self.H, self.f, self.A, qp.h, self.lo, self.hi, solver=self.solver_name)
        return r.x, r.status

    def command(self, f: np.ndarray) -> tuple[np.ndarray, list[float], np.ndarray, np.ndarray, float] | str:
        """Solve and check: ``(u, u as a list, per-row violation, G u - h, total violation)`` or
        the reason it failed.

        The rows above the highest priority level left with slack are hard and must hold at
        the clipped u; the others report their violation."""
        n = self.n
        z, status = self.solve(f)
        if z is None:
            return "relaxed QP hit the iteration cap" if status == "iteration_cap" else "relaxed QP failed"
        chk = self._check
        if chk is not None:
            qp = self.qp
            ok, total = chk(z, qp.G, self.h, qp.lower, qp.upper, qp.priorities, VERIFY_TOL,
                            self._u_b, self._res_b, self._viol_b)  # fmt: skip
            if not ok:
                return _CHECK_FAILED
            u = self._u_b.copy()
            return u, u.tolist(), self._viol_b.copy(), self._res_b.copy(), total
        # plain floats (m is small): the same comparisons in the same order
        zl = z.tolist()
        hl = self.qp.h.tolist()
        tol = [VERIFY_TOL * (1.0 + abs(b)) for b in hl]
        top = None  # the highest level with slack beyond the check's tolerance
        for s_i, t_i, p_i in zip(zl[n:], tol, self.prio_l):
            if s_i > t_i and (top is None or p_i > top):
                top = p_i
        ul = [a if v < a else (b if v > b else v) for a, v, b in zip(self.lo_l, zl[:n], self.hi_l)]
        u = np.array(ul)
        res = [g - b for g, b in zip((self.qp.G @ u).tolist(), hl)]
        viol = [0.0] * len(hl)
        ok = _isfinite(sum(ul) + sum(res))
        for i, (r_i, t_i, p_i) in enumerate(zip(res, tol, self.prio_l)):
            if r_i > t_i:
                if top is None or p_i > top:
                    ok = False  # a hard row violated
                else:
                    viol[i] = r_i
        if not ok:
            return _CHECK_FAILED
        return u, ul, np.array(viol), np.array(res), sum(viol)
