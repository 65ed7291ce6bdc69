"""Lane-boundary barrier: the footprint of a vehicle stays between two edge lines of a known track.

Each edge is a closed polyline (a known map, e.g. ``lnn_control.sim.lane.Track.left/right``,
in driving order, so the road lies right of ``left`` and left of ``right``). One row per edge:

    h_e(p) = sd_e(p) - (robot_radius + margin + inflation)     (m)

with sd_e the signed distance from the dynamics' point p to the edge polyline (> 0 on the road
side; the nearest point q of the nearest segment). So for a disc footprint of ``robot_radius``
centred at p, h_e is exactly the clearance left between the footprint and edge e. Derivatives:

    dh/dp = s (p - q) / |p - q|                               (s = +1 road side, -1 beyond)
    v' Hess(h) v = s (|v|^2 - (g.v)^2) / |p - q|  when q is a vertex (g the unit gradient),
                   0 when q is inside a segment (the distance to a line is affine),

which the point machinery turns into rows for either point order (``diff_drive``: the look-ahead
point, relative degree 1, ``inflation`` = look-ahead distance, so h >= 0 keeps the body inside
too; ``unicycle``: the centre, HOCBF of relative degree 2).

Config (``type: lane_boundary``): the map as ``left``, ``right``: lists of [x, y] (m), at least 3
points each, or ``file``: a JSON file holding both, or ``env_key``: the name of a filter ``env``
entry that carries the map at run time (a flat array [left (N, 2), right (N, 2)], e.g. the
``/lane/map`` topic through the ``float_array`` extractor; the lines are rebuilt only when the
map changes; a missing or malformed map raises ``InputError``, so the filter falls back);
``robot_radius`` (m, default 0). Speed and steering limits belong in the controls box
(``controls.lower/upper``).

The barrier needs the vehicle's pose in the map frame: in the simulator that is odometry (the
map and odometry share the world frame); on a real car the lane pose must come from
localisation (map-relative pose, e.g. lane-marking or lidar localisation), since odometry
drifts and the barrier trusts the pose it is given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from barriernet.barriers import BARRIERS, InputError, _num, _PointBarrier, register_barrier

__all__ = ["EdgeLine", "LaneBoundary"]


class EdgeLine:
    """A closed polyline (N, 2) with a road side: ``road_side`` = +1 when the road lies to the
    left of the polyline's direction, -1 when it lies to the right.

    Besides the exact signed distance it keeps, per vertex, the curvature of the smooth line
    the polyline samples (turning angle / mean adjacent segment length), signed > 0 where the
    road lies on the concave side; :meth:`nearest` interpolates it along the nearest segment.
    """

    def __init__(self, points: Any, road_side: int, where: str = "edge") -> None:
        try:
            a = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a list of [x, y] points, got {points!r:.60}") from None
        if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 3 or not np.isfinite(a).all():
            raise ValueError(f"{where}: expected >= 3 finite [x, y] points, got shape {a.shape}")
        if road_side not in (1, -1):
            raise ValueError(f"{where}: road_side must be +1 or -1, got {road_side!r}")
        self.points = a
        self.road_side = road_side
        self._a = a
        self._ab = np.roll(a, -1, axis=0) - a
        self._ab2 = np.einsum("ij,ij->i", self._ab, self._ab)
        if not (self._ab2 > 0).all():
            raise ValueError(f"{where}: consecutive points must differ (a zero-length segment)")
        seg = np.sqrt(self._ab2)
        self._tangent = self._ab / seg[:, None]
        prev = np.roll(self._ab, 1, axis=0)
        turn = np.arctan2(
            prev[:, 0] * self._ab[:, 1] - prev[:, 1] * self._ab[:, 0], np.einsum("ij,ij->i", prev, self._ab)
        )  # at vertex i, > 0 turning left
        self._kv = road_side * turn / (0.5 * (seg + np.roll(seg, 1)))

    def nearest(self, p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
        """For p (2,): signed distance (m, > 0 on the road side), the nearest point q (2,), the
        unit tangent (2,) of its segment and the road-side curvature (1/m) interpolated there."""
        ap = p - self._a
        t = np.einsum("ij,ij->i", ap, self._ab) / self._ab2
        np.clip(t, 0.0, 1.0, out=t)
        dq = ap - t[:, None] * self._ab
        d2 = np.einsum("ij,ij->i", dq, dq)
        i = int(d2.argmin())
        ab = self._ab[i]
        cross = ab[0] * ap[i, 1] - ab[1] * ap[i, 0]
        side = 1.0 if cross * self.road_side >= 0 else -1.0
        ti = float(t[i])
        j = (i + 1) % len(self._a)
        kappa = (1.0 - ti) * float(self._kv[i]) + ti * float(self._kv[j])
        return side * math.sqrt(float(d2[i])), self._a[i] + ti * ab, self._tangent[i], kappa

    def signed_distance(self, p: np.ndarray) -> float:
        """Signed distance (m) from p (2,) to the polyline, > 0 on the road side."""
        return self.nearest(p)[0]


class LaneBoundary(_PointBarrier):
    """Two rows, ``[left, right]``: the clearance between the footprint and each edge line (m).

    See the module docstring for h, its derivatives and the config keys.
    """

    type_name = "lane_boundary"
    keys = ("left", "right", "file", "env_key", "robot_radius")
    mergeable = False

    def __init__(self, cfg: Mapping[str, Any], where: str) -> None:
        super().__init__(cfg, where)
        self.R0 = _num(cfg, "robot_radius", where, 0.0) + self.margin
        self.n_rows = 2
        self.env_key: str | None = None
        self._map: np.ndarray | None = None
        if "env_key" in cfg:
            if "file" in cfg or "left" in cfg or "right" in cfg:
                raise ValueError(f"{where}: give the map as 'env_key' or as 'left'/'right'/'file', not both")
            if not isinstance(cfg["env_key"], str) or not cfg["env_key"]:
                raise ValueError(f"{where}.env_key: expected a non-empty string, got {cfg['env_key']!r}")
            self.env_key = cfg["env_key"]
            self.edges: tuple[EdgeLine, EdgeLine] | None = None
            return
        if "file" in cfg:
            if "left" in cfg or "right" in cfg:
                raise ValueError(f"{where}: give either 'file' or 'left' and 'right', not both")
            path = Path(str(cfg["file"]))
            try:
                data = json.loads(path.read_text())
                left, right = data["left"], data["right"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{where}.file: {path} must be JSON with 'left' and 'right' ({err})"
                ) from None
        elif "left" in cfg and "right" in cfg:
            left, right = cfg["left"], cfg["right"]
        else:
            raise ValueError(f"{where}: give 'left' and 'right' edge lines ([[x, y], ...]) or 'file'")
        self.edges = _edges(left, right, where)

    @property
    def row_names(self) -> list[str]:
        return [f"{self.name}.left", f"{self.name}.right"]

    def _bind_dim(self) -> None:
        if self.dim != 2:
            raise ValueError(
                f"{self.where}: lane_boundary needs planar dynamics, the position is {self.dim}-D"
            )
        self.R = self.R0 + self.inflation

    def _env_edges(self, env: Any) -> tuple[EdgeLine, EdgeLine]:
        key = self.env_key
        m = None if env is None else env.get(key)
        if m is None:
            raise InputError(f"env[{key!r}] missing: the {self.name} barrier needs the lane map")
        if m is self._map and self.edges is not None:
            return self.edges
        a = np.asarray(m, dtype=np.float64).reshape(-1)
        if self._map is not None and self.edges is not None and np.array_equal(a, self._map):
            self._map = m if isinstance(m, np.ndarray) else a
            return self.edges
        if a.size < 12 or a.size % 4:
            raise InputError(
                f"env[{key!r}]: a lane map has 4 N values ([left (N, 2), right (N, 2)]), got {a.size}"
            )
        n = a.size // 2
        try:
            edges = _edges(a[:n].reshape(-1, 2), a[n:].reshape(-1, 2), f"env[{key!r}]")
        except ValueError as e:
            raise InputError(str(e)) from None
        self.edges, self._map = edges, (m if isinstance(m, np.ndarray) else a)
        return edges

    def phi(self, p, v, env) -> None:  # type: ignore[no-untyped-def]
        edges = self.edges if self.env_key is None else self._env_edges(env)
        assert edges is not None
        for k, e in enumerate(edges):
            sd, q, tangent, kappa = e.nearest(p)
            dist = abs(sd)
            if dist > 1e-12:
                self.ngrad[k] = (q - p) / sd  # -dh/dp = -sign(sd) (p - q) / |p - q|
            else:  # on the line: the normal towards the road
                self.ngrad[k] = e.road_side * np.array([tangent[1], -tangent[0]])
            self.hv[k] = sd - self.R
            if v is not None:
                # smooth edge of road-side curvature kappa: Hess(sd) = -kappa / (1 - kappa sd) t t'
                tv = float(tangent @ v)
                self.curv[k] = -kappa * tv * tv / max(1.0 - kappa * sd, 0.05)


def _edges(left: Any, right: Any, where: str) -> tuple[EdgeLine, EdgeLine]:
    """The two edge lines, checked to face each other (each one's first point on the other's road side)."""
    edges = (EdgeLine(left, -1, f"{where}.left"), EdgeLine(right, 1, f"{where}.right"))
    for edge, other, name in ((edges[0], edges[1], "left"), (edges[1], edges[0], "right")):
        if edge.signed_distance(other.points[0]) <= 0:
            raise ValueError(
                f"{where}.{name}: the road is not on the expected side of this edge; give both "
                "lines in driving order with 'left' left of the driver"
            )
    return edges


if LaneBoundary.type_name not in BARRIERS:
    register_barrier(LaneBoundary.type_name, LaneBoundary)
