"""The safety filter's numba-compiled helpers (numba optional: each getter returns None without it).

- :func:`nearest_rows`: the ``laser_scan`` barrier's per-call work. From the scan points, the
  barrier's point p (and velocity for order 2) it writes the rows of the ``max_points`` nearest
  finite points, nearest first (ties: the lower index first), as the numpy path of
  :class:`barriernet.barriers.LaserScan` does: h_i = |s_i - p| - R_i, -dh/dp = (s_i - p) /
  |s_i - p| and, with a velocity, the curvature term (|v|^2 - (grad . v)^2) / |s_i - p|. It
  returns False (nothing written) when fewer than ``max_points`` points are finite; the
  numpy path then handles the missing returns.
- :func:`relaxed_check`: the independent check of the relaxed QP's answer
  (:meth:`barriernet.filter_qp.RelaxedQP.command`), the same comparisons in the same order.
- :func:`residuals`: ``A u - b`` over the box and barrier rows (``u`` clipped into the box
  first for the check of a solver's answer), with the finiteness of their sum and their
  largest value: :meth:`barriernet.filter_kernels.RowKernel.rows` and ``verify``.

Each getter is None with ``LNN_CONTROL_NO_JIT`` set; the first use in a process compiles
(about 1 s each) or loads numba's on-disk cache.
"""

from __future__ import annotations

import functools
import os
from typing import Any

__all__ = ["nearest_rows", "relaxed_check", "residuals"]


@functools.lru_cache(maxsize=1)
def _njit() -> Any:
    """numba's ``njit`` with this module's options, or None (numba missing or switched off)."""
    if os.environ.get("LNN_CONTROL_NO_JIT"):
        return None
    try:
        from numba import njit
    except ImportError:
        return None
    return njit(cache=True, nogil=True)


@functools.lru_cache(maxsize=1)
def nearest_rows() -> Any:
    """The compiled nearest-rows function (module docstring), or None."""
    import math

    jit = _njit()
    if jit is None:
        return None

    @jit
    def nearest(pts, px, py, vx, vy, with_v, R, hv, ngrad, curv, sel_d, sel_i):  # type: ignore[no-untyped-def]  # pragma: no cover
        m = hv.shape[0]
        count = 0  # sel_d[:count] ascending: the nearest finite points so far (ties keep the earlier)
        for i in range(pts.shape[0]):
            d = math.hypot(pts[i, 0] - px, pts[i, 1] - py)
            if not d < math.inf:  # nan, inf: no return
                continue
            if count == m and not d < sel_d[m - 1]:
                continue
            k = count if count < m else m - 1
            while k > 0 and d < sel_d[k - 1]:
                sel_d[k] = sel_d[k - 1]
                sel_i[k] = sel_i[k - 1]
                k -= 1
            sel_d[k] = d
            sel_i[k] = i
            if count < m:
                count += 1
        if count < m:
            return False
        vv = vx * vx + vy * vy
        for r in range(m):
            i = sel_i[r]
            d = sel_d[r]
            gx = (pts[i, 0] - px) / d
            gy = (pts[i, 1] - py) / d
            ngrad[r, 0] = gx
            ngrad[r, 1] = gy
            hv[r] = d - R[r]
            if with_v:
                gv = gx * vx + gy * vy
                curv[r] = (vv - gv * gv) / d
        return True

    return nearest


@functools.lru_cache(maxsize=1)
def relaxed_check() -> Any:
    """The compiled check of a relaxed answer, or None.

    ``check(z, G, h, lo, hi, prio, tol_scale, u, res, viol) -> (ok, total_slack)``: u = the
    first n entries of z clipped into [lo, hi]; res = G u - h; the rows above the highest
    priority level whose slack z[n + i] exceeds tol_i = tol_scale (1 + |h_i|) must hold
    (res_i <= tol_i), the others report viol_i = res_i where it exceeds tol_i; ok is False
    when a hard row fails or u, res are not finite."""
    import math

    jit = _njit()
    if jit is None:
        return None

    @jit
    def check(z, G, h, lo, hi, prio, tol_scale, u, res, viol):  # type: ignore[no-untyped-def]  # pragma: no cover
        n = u.shape[0]
        m = h.shape[0]
        have_top = False
        top = 0
        for i in range(m):  # the highest level with slack beyond the check's tolerance
            if z[n + i] > tol_scale * (1.0 + abs(h[i])) and (not have_top or prio[i] > top):
                top = prio[i]
                have_top = True
        su = 0.0
        for j in range(n):
            v = z[j]
            u[j] = lo[j] if v < lo[j] else (hi[j] if v > hi[j] else v)
            su += u[j]
        sr = 0.0
        for i in range(m):
            g = 0.0
            for j in range(n):
                g += G[i, j] * u[j]
            res[i] = g - h[i]
            sr += res[i]
        ok = math.isfinite(su + sr)
        total = 0.0
        for i in range(m):
            viol[i] = 0.0
            if res[i] > tol_scale * (1.0 + abs(h[i])):
                if not have_top or prio[i] > top:
                    ok = False  # a hard row violated
                else:
                    viol[i] = res[i]
                    total += res[i]
        return ok, total

    return check


@functools.lru_cache(maxsize=1)
def residuals() -> Any:
    """The compiled residuals, or None.

    ``residuals(v, lo, hi, clip, A, b, u, res) -> (finite, largest)``: u = v, clipped into
    [lo, hi] when ``clip`` (nan stays nan); res = A u - b; ``finite``: their sum (in order, as
    Python's ``sum``) is finite; ``largest``: max(res)."""
    import math

    jit = _njit()
    if jit is None:
        return None

    @jit
    def residuals(v, lo, hi, clip, A, b, u, res):  # type: ignore[no-untyped-def]  # pragma: no cover
        n = u.shape[0]
        for j in range(n):
            x = v[j]
            if clip:
                if x > hi[j]:
                    x = hi[j]
                if x < lo[j]:
                    x = lo[j]
            u[j] = x
        total = 0.0
        largest = -math.inf
        for i in range(A.shape[0]):
            g = 0.0
            for j in range(n):
                g += A[i, j] * u[j]
            r = g - b[i]
            res[i] = r
            total += r
            if r > largest:
                largest = r
        return math.isfinite(total), largest

    return residuals
