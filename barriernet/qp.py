"""Small dense convex QPs: ``min 1/2 u'Pu + q'u  s.t.  G u <= h,  lb <= u <= ub``.

Solvers are chosen by name from :data:`SOLVERS` (``daqp``: the DAQP dense
active-set solver; ``cvxpy``: reference through cvxpy/Clarabel).  Every result
is checked against the constraints here, so a solver's "optimal" is never
trusted blindly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["QPResult", "SOLVERS", "solve_qp", "register_solver"]

_FEAS_TOL = 1e-7


@dataclass
class QPResult:
    """Solution ``x`` (n,) float64 or None, ``status`` in optimal/infeasible/error,
    solver ``iterations`` and wall ``solve_time`` in seconds."""

    x: np.ndarray | None
    status: str
    iterations: int
    solve_time: float


Solver = Callable[..., QPResult]


def _solve_daqp(P, q, G, h, lb, ub) -> QPResult:
    import daqp

    n = q.shape[0]
    # DAQP takes simple bounds as the first n rows of A (A holds only the general rows).
    A = G
    bu = np.concatenate([ub, h])
    bl = np.concatenate([lb, np.full(h.shape[0], -1e30)])
    sense = np.zeros(n + h.shape[0], dtype=np.int32)
    t0 = time.perf_counter()
    x, _f, exitflag, info = daqp.solve(P, q, A, bu, bl, sense)
    dt = time.perf_counter() - t0
    it = int(info.get("iterations", 0)) if isinstance(info, dict) else 0
    if exitflag == 1 or exitflag == 2:
        return QPResult(np.asarray(x, dtype=np.float64), "optimal", it, dt)
    if exitflag == -1:
        return QPResult(None, "infeasible", it, dt)
    return QPResult(None, "error", it, dt)


def _solve_cvxpy(P, q, G, h, lb, ub) -> QPResult:
    import cvxpy as cp

    n = q.shape[0]
    u = cp.Variable(n)
    cons = [G @ u <= h] if G.shape[0] else []
    fin_lb, fin_ub = np.isfinite(lb), np.isfinite(ub)
    if fin_lb.any():
        cons.append(u[fin_lb] >= lb[fin_lb])
    if fin_ub.any():
        cons.append(u[fin_ub] <= ub[fin_ub])
    Ps = 0.5 * (P + P.T)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(u, cp.psd_wrap(Ps)) + q @ u), cons)
    t0 = time.perf_counter()
    try:
        prob.solve(solver=cp.CLARABEL)
    except cp.SolverError:
        return QPResult(None, "error", 0, time.perf_counter() - t0)
    dt = time.perf_counter() - t0
    if prob.status in ("infeasible", "infeasible_inaccurate"):
        return QPResult(None, "infeasible", 0, dt)
    if prob.status not in ("optimal", "optimal_inaccurate") or u.value is None:
        return QPResult(None, "error", 0, dt)
    return QPResult(np.asarray(u.value, dtype=np.float64), "optimal", 0, dt)


SOLVERS: dict[str, Solver] = {"daqp": _solve_daqp, "cvxpy": _solve_cvxpy}


def register_solver(name: str, fn: Solver) -> None:
    """Add solver ``fn(P, q, G, h, lb, ub) -> QPResult`` under ``name``."""
    if name in SOLVERS:
        raise ValueError(f"solver {name!r} already registered")
    SOLVERS[name] = fn


def solve_qp(
    P: np.ndarray,
    q: np.ndarray,
    G: np.ndarray | None,
    h: np.ndarray | None,
    lb: np.ndarray | None = None,
    ub: np.ndarray | None = None,
    solver: str = "daqp",
) -> QPResult:
    """Solve the QP; P (n,n) symmetric PD, q (n,), G (m,n), h (m,), lb/ub (n,) (inf allowed).

    Returns status ``optimal`` only if the solution is finite and satisfies every
    constraint to 1e-7 (scaled); ``infeasible`` when the solver proves it."""
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} unknown; choose one of {sorted(SOLVERS)}")
    P = np.asarray(P, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    n = q.shape[0]
    if P.shape != (n, n):
        raise ValueError(f"P must have shape ({n}, {n}) to match q, got {P.shape}")
    G = np.zeros((0, n)) if G is None else np.asarray(G, dtype=np.float64).reshape(-1, n)
    h = np.zeros(0) if h is None else np.asarray(h, dtype=np.float64).reshape(-1)
    if h.shape[0] != G.shape[0]:
        raise ValueError(f"h must have {G.shape[0]} entries (rows of G), got {h.shape[0]}")
    lb = np.full(n, -np.inf) if lb is None else np.asarray(lb, dtype=np.float64).reshape(n)
    ub = np.full(n, np.inf) if ub is None else np.asarray(ub, dtype=np.float64).reshape(n)
    if not (np.isfinite(P).all() and np.isfinite(q).all() and np.isfinite(G).all()):
        raise ValueError("P, q and G must be finite")
    if np.any(lb > ub):
        return QPResult(None, "infeasible", 0, 0.0)
    lb_s = np.where(np.isfinite(lb), lb, -1e30)
    ub_s = np.where(np.isfinite(ub), ub, 1e30)
    res = SOLVERS[solver](P, q, G, h, lb_s, ub_s)
    if res.status == "optimal":
        x = res.x
        assert x is not None
        scale = 1.0 + np.abs(h).max(initial=0.0)
        ok = (
            np.isfinite(x).all()
            and np.all(x >= lb - _FEAS_TOL * (1 + np.abs(lb_s)))
            and np.all(x <= ub + _FEAS_TOL * (1 + np.abs(ub_s)))
            and np.all(G @ x <= h + _FEAS_TOL * scale)
        )
        if not ok:
            return QPResult(None, "error", res.iterations, res.solve_time)
        res.x = np.clip(x, lb, ub)
    return res
