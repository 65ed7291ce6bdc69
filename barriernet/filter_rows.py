"""The CBF rows of one safety filter and the preallocated QP data they are written into.

:class:`QPRows` holds, for m rows over n controls,

    A = [-I; I; G]  (2n + m, n),   b = [-lower; upper; h]  (2n + m,),   then h(x) (m,)

so that one matvec ``A u - b`` checks the box and every row, and DAQP reads G = A[2n:] and
its upper bounds b[n:] (the first n are the simple bounds) in place. h(x) follows h in one
buffer, so a kernel that has both in one matvec writes them at once. It also maps the gain
vector (ordered as the barriers' ``gain_names``) to per-row gains (ks, kp) and holds the
generic barrier blocks, evaluated by :mod:`barriernet.filter_kernels`' ``generic`` kernel and
by the filter's inspection methods (``constraints``, ``row_terms``, ``barrier_values``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from barriernet.barriers import Barrier, PointGroup, _PointBarrier
from barriernet.dynamics import ControlAffine

__all__ = ["QPRows", "VERIFY_TOL", "INF"]

VERIFY_TOL = 1e-9  # the independent check's tolerance, relative to 1 + |bound|
INF = 1e30  # DAQP's infinity


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


class QPRows:
    """Rows (bound barriers with ``n_rows > 0``), their gains and the QP buffers of one filter.

    Args:
        dynamics: the filter's :class:`ControlAffine` (the barriers are bound to it).
        rows: the barriers that give rows, in order.
        lower, upper: (n,) the control box (already intersected with any actuator box).
        weights: (n,) > 0, the diagonal of the QP's W.
    """

    def __init__(
        self,
        dynamics: ControlAffine,
        rows: list[Barrier],
        lower: np.ndarray,
        upper: np.ndarray,
        weights: np.ndarray,
    ) -> None:
        self.dynamics = dynamics
        self.rows = rows
        n = self.n_controls = dynamics.n_controls
        self.n_state = dynamics.n_state
        m = self.n_rows = sum(b.n_rows for b in rows)
        self.lower, self.upper, self.weights = lower, upper, weights
        self.constraint_names = tuple(nm for b in rows for nm in b.row_names)
        self.gain_names = tuple(gn for b in rows for gn in b.gain_names)
        self.gain_default = (
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
        self.gidx, self.rel2, self.priorities = gidx, rel2, prio
        self.A = np.zeros((2 * n + m, n))
        self.A[:n] = -np.eye(n)
        self.A[n : 2 * n] = np.eye(n)
        self.bh = np.zeros(2 * n + 2 * m)  # [-lower; upper; h; h(x)]
        self.bh[:n] = -lower
        self.bh[n : 2 * n] = upper
        self.b = self.bh[: 2 * n + m]
        self.G = self.A[2 * n :]
        self.Gflat = self.G.reshape(-1)
        self.h = self.bh[2 * n : 2 * n + m]
        self.hv = self.bh[2 * n + m :]
        self.hhv = self.bh[2 * n :]
        self.bu = self.bh[n : 2 * n + m]
        self.bl = np.concatenate([lower, np.full(m, -INF)])
        self.sense = np.zeros(n + m, dtype=np.int32)
        self.res = np.zeros(2 * n + m)  # A u - b
        self.res_rows = self.res[2 * n :]
        self._tol = np.zeros(2 * n + m)
        # per-row gains: ks = k (degree 1) or p1 + p2 (degree 2), kp = p1 p2
        self.K_default = np.zeros((2, m))
        self.K_call = np.zeros((2, m))
        self._Ka, self._Kb = np.zeros(m), np.zeros(m)
        self.set_row_gains(self.gain_default, self.K_default)
        self.kin = dynamics.new_kinematics()
        self._kinematics = dynamics.kinematics
        # blocks: consecutive point barriers share one PointGroup (one matmul for their rows),
        # inside it consecutive barriers of one class are merged into one vectorised kernel
        blocks: list[tuple[Any, int, int]] = []
        r = i = 0
        while i < len(rows):
            j = i + 1
            if isinstance(rows[i], _PointBarrier):
                while j < len(rows) and isinstance(rows[j], _PointBarrier):
                    j += 1
                nr = sum(b.n_rows for b in rows[i:j])
                blocks.append((PointGroup(_merged(rows[i:j]), self.hv[r : r + nr]), r, r + nr))
            else:
                nr = rows[i].n_rows
                blocks.append((rows[i], r, r + nr))
            r += nr
            i = j
        #: per block (fill, ks, kp, G, h, h(x)), views of the buffers, at the YAML / per-call gains
        self.blocks_default = [self._block_call(b, r0, r1, self.K_default) for b, r0, r1 in blocks]
        self.blocks_call = [self._block_call(b, r0, r1, self.K_call) for b, r0, r1 in blocks]

    def _block_call(self, b: Any, r0: int, r1: int, K: np.ndarray) -> tuple[Any, ...]:
        return (b.fill, K[0, r0:r1], K[1, r0:r1], self.G[r0:r1], self.h[r0:r1], self.hv[r0:r1])

    def set_row_gains(self, gv: np.ndarray, K: np.ndarray) -> None:
        """Per-row (ks, kp) in ``K`` (2, m) from the gain vector ``gv`` (n_gains,)."""
        ka, kb = self._Ka, self._Kb
        np.take(gv, self.gidx[0], out=ka)
        np.take(gv, self.gidx[1], out=kb)
        np.multiply(kb, self.rel2, out=K[0])
        K[0] += ka
        np.multiply(ka, kb, out=K[1])

    def fill(self, x: np.ndarray, gains: np.ndarray | None, env: Mapping[str, Any] | None) -> None:
        """G, h, h(x) at ``x`` from the barrier blocks into the buffers, at the YAML gains
        (``gains`` None) or the gain vector ``gains`` (n_gains,). Raises
        :class:`barriernet.barriers.InputError` for a bad ``env``."""
        blocks = self.blocks_default
        if gains is not None:
            self.set_row_gains(gains, self.K_call)
            blocks = self.blocks_call
        kin = self._kinematics(x, self.kin)
        for fill, ks, kp, G, h, hv in blocks:
            fill(x, kin, ks, kp, env, G, h, hv)

    def evaluate(
        self, x: np.ndarray, ks: np.ndarray, kp: np.ndarray, env: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of (G, h, h(x)) from the barrier blocks at ``x`` with per-row gains ks, kp (m,)."""
        kin = self.dynamics.kinematics(x, self.kin)
        for fill, _ks, _kp, G, h, hv in self.blocks_default:
            sl = self.row_slice(hv)
            fill(x, kin, ks[sl], kp[sl], env, G, h, hv)
        return self.G.copy(), self.h.copy(), self.hv.copy()

    def row_slice(self, view: np.ndarray) -> slice:
        """The rows of ``hv`` that ``view`` covers."""
        r0 = (view.ctypes.data - self.hv.ctypes.data) // self.hv.itemsize
        return slice(r0, r0 + view.shape[0])

    def rows_hold(self, res: np.ndarray) -> bool:
        """Residuals ``res`` = A u - b within 1e-9 (1 + |b|) (nan fails)."""
        tol = self._tol
        np.abs(self.b, out=tol)
        tol += 1.0
        tol *= VERIFY_TOL
        return bool((res <= tol).all())

    def rows_hold_at(self, u: np.ndarray) -> bool:
        """Every row G u - h within 1e-9 (1 + |h|) at ``u`` (nan fails)."""
        return bool((self.G @ u - self.h <= VERIFY_TOL * (1.0 + np.abs(self.h))).all())

    def row_terms(
        self, x: np.ndarray, env: Mapping[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """G and the gain-free a, b, c at a checked ``x`` (see ``SafetyFilter.row_terms``)."""
        m = self.n_rows
        kin = self.dynamics.kinematics(x, self.kin)
        hs = []
        # every fill is affine in (ks, kp): three evaluations give the three coefficients
        for ks, kp in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
            KS, KP = np.full(m, ks), np.full(m, kp)
            for fill, _ks, _kp, G, h, hv in self.blocks_default:
                sl = self.row_slice(hv)
                fill(x, kin, KS[sl], KP[sl], env, G, h, hv)
            hs.append(self.h.copy())
        G = self.G.copy()
        a, b, c = hs[0], hs[1] - hs[0], hs[2] - hs[0]
        free = ~G.any(axis=1) & (a >= 0) & (b >= 0) & (c >= 0)
        a[free], b[free], c[free] = np.inf, 0.0, 0.0
        return G, a, b, c

    def barrier_values(self, x: Any, env: Mapping[str, Any] | None = None) -> np.ndarray:
        """h(x) of every row (m,); nan where it cannot be computed (see ``SafetyFilter.barrier_values``)."""
        out = np.full(self.n_rows, np.nan)
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        if xa.size != self.n_state or not np.isfinite(xa).all():
            return out
        try:
            kin = self.dynamics.kinematics(xa, self.kin)
        except Exception:
            return out
        for fill, ks, kp, G, h, hv in self.blocks_default:
            grp = getattr(fill, "__self__", None)
            if isinstance(grp, PointGroup):  # members one by one: a missing scan leaves walls known
                for b in grp.members:
                    try:
                        b.phi(kin.p, kin.v if grp.order == 2 else None, env)
                    except Exception:
                        b.hv[:] = np.nan
                out[self.row_slice(hv)] = hv
                continue
            try:
                fill(xa, kin, ks, kp, env, G, h, hv)
                out[self.row_slice(hv)] = hv
            except Exception:
                pass
        return out
