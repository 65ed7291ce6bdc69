"""The ``laser_scan`` barrier's per-call work as one numba-compiled call (numba optional).

:func:`nearest_rows` takes the scan points, the barrier's point p (and velocity for order 2)
and writes the rows of the ``max_points`` nearest finite points, nearest first (ties: the
lower index first), as the numpy path of :class:`barriernet.barriers.LaserScan` does:
h_i = |s_i - p| - R_i, -dh/dp = (s_i - p) / |s_i - p| and, with a velocity, the curvature
term (|v|^2 - (grad . v)^2) / |s_i - p|. It returns False (nothing written) when fewer than
``max_points`` points are finite; the caller's numpy path then handles the missing returns.

``compiled()`` is None without numba or with ``LNN_CONTROL_NO_JIT`` set; the first call in a
process compiles (about 1 s) or loads numba's on-disk cache.
"""

from __future__ import annotations

import functools
import os
from typing import Any

__all__ = ["compiled"]


@functools.lru_cache(maxsize=1)
def compiled() -> Any:
    """The compiled :func:`nearest_rows`, or None (numba missing or switched off)."""
    if os.environ.get("LNN_CONTROL_NO_JIT"):
        return None
    try:
        import math

        from numba import njit
    except ImportError:
        return None

    @njit(cache=True, nogil=True)
    def nearest_rows(pts, px, py, vx, vy, with_v, R, hv, ngrad, curv, sel_d, sel_i):  # type: ignore[no-untyped-def]  # pragma: no cover
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

    return nearest_rows
