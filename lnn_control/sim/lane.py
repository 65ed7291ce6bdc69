"""The ``lane`` robot: a disc-shaped differential-drive vehicle on closed, seeded tracks with a
forward camera (no ROS).

Track (:func:`make_track`): a closed centreline ``r(phi) = R0 (1 + sum_k a_k cos(k phi + b_k))``
resampled every ``TRACK_DS`` metres of arc length, driven clockwise or counter-clockwise, so a lap
has left and right curves (every track has some curvature of each sign); the half-width varies
along the lap, ``w(s) = w0 + w1 sin(2 pi m s / L + c)``. Seeds below ``HELD_OUT_SEED_START`` are
training tracks, the others held out (:func:`track_split`). A seed is re-drawn internally until
the layout is drivable (minimum radius of curvature >= 2 w_max, a right and a left curve).
``make_track(seed, family="hard")`` draws from a second family used only for evaluation
(:data:`TRACK_FAMILIES`: smaller base radius, larger shape harmonics, narrower road).

Scene: grass floor, the road as thin grey boxes, white edge lines and a dashed yellow centre line
as thin coloured boxes (static geoms of the world body). The vehicle is a kinematic unicycle,
x = (px, py, theta), u = (v m/s, omega rad/s), clipped to ``LANE_V_LIMIT`` / ``LANE_OMEGA_LIMIT``
and integrated exactly (constant command = circular arc); MuJoCo holds the scene and casts the
camera's rays.

Camera (:meth:`LaneEnv.image`): ``CAMERA_WIDTH x CAMERA_HEIGHT`` rays from ``CAMERA_POS`` (robot
frame), pitched ``CAMERA_PITCH`` down, horizontal field of view ``CAMERA_HFOV``, cast with one
``mujoco.mj_multiRay`` call (~1 ms here; MuJoCo's EGL renderer costs 110-130 ms per frame on
this machine). A pixel is the hit geom's colour times a lighting factor that falls with distance
(fog), times an optional per-episode brightness; misses are sky. rgb8 (H, W, 3) uint8, or mono8.

Lighting/texture shift (``LaneEnv(lighting=True)``, an evaluation condition never used in
training): each reset draws from the episode's generator a new appearance (:class:`Lighting`):
surface colours (asphalt grey 0.2-0.5 with a tint, grass from green to dry, edge lines off-white,
the centre line from yellow to white), a ground texture in world coordinates (two sinusoidal
gratings and a tile pattern, up to +-45 % on grass and road), shadow bands across the ground whose
orientation follows a drawn sun azimuth (0.45-0.75 of the light inside a band), and a global gain
(0.6-1.4), contrast (0.6-1.3 about mid-grey) and colour cast (0.85-1.15 per channel).
``lighting=strength`` in (0, 1] scales every drawn change towards the training appearance
(:meth:`Lighting.scaled`: colours, gain, contrast, cast, texture amplitudes and shadow depth
interpolated; 1.0 = ``True`` = the full shift).

Ground truth (``ground_truth()``), float64 layout ``LANE_GROUND_TRUTH_FIELDS``:

    [0] lane_margin  m, smallest distance from the footprint disc to an edge line (negative
                     when the footprint crosses an edge)
    [1] off_lane     1.0 if lane_margin < 0
    [2] progress     m of centreline arc length driven since reset (negative when backwards)
    [3] x, [4] y     m, world frame;  [5] theta  rad, in (-pi, pi]
    [6] lap          progress / track length (1.0 = one lap driven)

Episodes (:func:`episode_track_seed`): episode seeds below ``HELD_OUT_EPISODE_SEED`` (100000)
drive the training tracks (track seed = episode seed mod ``HELD_OUT_SEED_START``), episode seeds
from 100000 on drive held-out tracks (track seed ``HELD_OUT_SEED_START + seed - 100000``), so a
held-out evaluation never sees a training layout.

Map (:func:`lane_map`): the track's two edge lines as one flat float64 array, the payload of the
``/lane/map`` message (std_msgs/Float64MultiArray) that the ``lane_boundary`` barrier reads
through ``env_key`` (on a real car: the localisation's lane map and the pose from localisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from barriernet.lane import EdgeLine

__all__ = [
    "CAMERA_HEIGHT",
    "CAMERA_WIDTH",
    "HELD_OUT_EPISODE_SEED",
    "HELD_OUT_SEED_START",
    "LANE_GROUND_TRUTH_FIELDS",
    "LANE_OMEGA_LIMIT",
    "LANE_RADIUS",
    "LANE_V_LIMIT",
    "LaneEnv",
    "LaneExpert",
    "LaneObservation",
    "Lighting",
    "TRACK_FAMILIES",
    "Track",
    "episode_track_seed",
    "lane_map",
    "make_track",
    "track_split",
]

LANE_RADIUS: float = 0.12  # m, footprint disc
LANE_V_LIMIT: float = 0.8  # m/s
LANE_OMEGA_LIMIT: float = 3.0  # rad/s
LANE_SPEED: float = 0.5  # m/s, the expert's cruise speed
CAMERA_WIDTH: int = 64
CAMERA_HEIGHT: int = 48
CAMERA_POS: tuple[float, float, float] = (0.08, 0.0, 0.30)  # m, robot frame
CAMERA_PITCH: float = 0.55  # rad below the horizon
CAMERA_HFOV: float = 1.75  # rad (~100 deg)
CAMERA_RATE: float = 20.0  # Hz
TRACK_DS: float = 0.05  # m between centreline samples
HELD_OUT_SEED_START: int = 1000
HELD_OUT_EPISODE_SEED: int = 100_000
LANE_GROUND_TRUTH_FIELDS: tuple[str, ...] = ("lane_margin", "off_lane", "progress", "x", "y", "theta", "lap")

_GRASS = (0.25, 0.55, 0.2)
_ROAD = (0.35, 0.35, 0.38)
_EDGE = (0.95, 0.95, 0.95)
_CENTRE = (0.95, 0.8, 0.1)
_SKY = np.array([0.55, 0.7, 0.95])
_LINE_HALF_WIDTH = 0.02  # m
_FOG = 6.0  # m, light falls as exp(-distance / _FOG)
_CHUNK = 40  # track segments per mesh piece


def track_split(seed: int) -> str:
    """``"train"`` for seeds below ``HELD_OUT_SEED_START``, else ``"held_out"``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return "train" if seed < HELD_OUT_SEED_START else "held_out"


def episode_track_seed(seed: int) -> int:
    """The track of episode ``seed`` (module docstring): training tracks below
    ``HELD_OUT_EPISODE_SEED``, held-out tracks from it on."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    seed = int(seed)
    if seed < HELD_OUT_EPISODE_SEED:
        return seed % HELD_OUT_SEED_START
    return HELD_OUT_SEED_START + seed - HELD_OUT_EPISODE_SEED


@dataclass(frozen=True)
class Track:
    """A closed track sampled every ~``TRACK_DS`` m (N samples, the last joins the first).

    centre: (N, 2) centreline points (m), in driving order; tangent, normal: (N, 2) unit vectors
    (normal = tangent turned left); s: (N,) arc length at each sample (m); length: lap length (m);
    half_width: (N,) road half-width (m); curvature: (N,) signed (1/m, > 0 turning left);
    left, right: (N, 2) edge lines (centre +- half_width normal); seed: the seed it came from;
    family: the layout family it was drawn from (:data:`TRACK_FAMILIES`).
    """

    seed: int
    centre: np.ndarray
    tangent: np.ndarray
    normal: np.ndarray
    s: np.ndarray
    length: float
    half_width: np.ndarray
    curvature: np.ndarray
    family: str = "standard"

    @property
    def left(self) -> np.ndarray:
        return self.centre + self.half_width[:, None] * self.normal

    @property
    def right(self) -> np.ndarray:
        return self.centre - self.half_width[:, None] * self.normal

    def project(self, xy: np.ndarray) -> tuple[float, float, int]:
        """Frenet coordinates of ``xy`` (2,): arc length s (m), signed lateral offset d (m, > 0 left
        of the centreline) and the index of the segment it projects onto."""
        a = self.centre
        b = np.roll(a, -1, axis=0)
        ab = b - a
        t = np.clip(np.einsum("ij,ij->i", xy - a, ab) / np.einsum("ij,ij->i", ab, ab), 0.0, 1.0)
        q = a + t[:, None] * ab
        d2 = np.einsum("ij,ij->i", xy - q, xy - q)
        i = int(np.argmin(d2))
        seg = math.hypot(ab[i, 0], ab[i, 1])
        cross = ab[i, 0] * (xy[1] - a[i, 1]) - ab[i, 1] * (xy[0] - a[i, 0])
        return float(self.s[i] + t[i] * seg), math.copysign(math.sqrt(d2[i]), cross), i

    def barrier_config(self, robot_radius: float = LANE_RADIUS, **extra: object) -> dict[str, object]:
        """The ``lane_boundary`` barrier's config (barriernet.lane) for this track's edge lines."""
        return {
            "type": "lane_boundary",
            "left": self.left.tolist(),
            "right": self.right.tolist(),
            "robot_radius": float(robot_radius),
            **extra,
        }


def lane_map(track: Track) -> np.ndarray:
    """The track's map as one flat array (4 N,): [left (N, 2) row-major, right (N, 2) row-major]."""
    return np.concatenate([track.left.reshape(-1), track.right.reshape(-1)]).astype(np.float64)


#: layout families of :func:`make_track`: base radius (m), the shape harmonics' largest amplitudes
#: (k = 2, 3, 4), the mean half-width range (m) and the smallest |curvature| (1/m) of each sign
TRACK_FAMILIES: dict[str, dict[str, tuple[float, ...]]] = {
    "standard": {"r0": (2.2, 3.2), "amp": (0.22, 0.12, 0.06), "w0": (0.32, 0.42), "kmin": (0.15,)},
    "hard": {"r0": (1.5, 2.1), "amp": (0.26, 0.16, 0.09), "w0": (0.25, 0.29), "kmin": (0.5,)},
}


def _candidate(rng: np.random.Generator, fam: dict[str, tuple[float, ...]]) -> tuple[np.ndarray, np.ndarray]:
    r0 = rng.uniform(fam["r0"][0], fam["r0"][1])
    k = np.arange(2, 5)
    amp = rng.uniform(0.0, 1.0, 3) * np.array(fam["amp"])
    ph = rng.uniform(0, 2 * math.pi, 3)
    phi = np.linspace(0, 2 * math.pi, 4000, endpoint=False)
    r = r0 * (1 + (amp[:, None] * np.cos(k[:, None] * phi + ph[:, None])).sum(0))
    pts = np.stack([r * np.cos(phi), r * np.sin(phi)], 1)
    if rng.uniform() < 0.5:
        pts = pts[::-1]  # clockwise: curve signs flip
    w0, w1 = rng.uniform(fam["w0"][0], fam["w0"][1]), rng.uniform(0.0, 0.07)
    return pts, np.array([w0, w1, rng.integers(1, 4), rng.uniform(0, 2 * math.pi)])


def make_track(seed: int, family: str = "standard") -> Track:
    """The track of ``seed`` (deterministic; see the module docstring).

    ``family``: ``"standard"`` (the training and held-out layouts) or ``"hard"`` (an evaluation
    family never used in training: base radius 1.5-2.1 m instead of 2.2-3.2, larger shape
    harmonics, so tighter and more varied curves, at least |kappa| 0.5 1/m each way, and a
    narrower road, mean half-width 0.25-0.29 m instead of 0.32-0.42; the same drivability rule).
    The same seed gives unrelated layouts in the two families."""
    track_split(seed)
    if family not in TRACK_FAMILIES:
        raise ValueError(f"family must be one of {sorted(TRACK_FAMILIES)}, got {family!r}")
    fam = TRACK_FAMILIES[family]
    rng = np.random.default_rng(seed if family == "standard" else [seed, 17])
    for _ in range(200):
        dense, (w0, w1, m, c) = _candidate(rng, fam)
        seg = np.linalg.norm(np.roll(dense, -1, 0) - dense, axis=1)
        sd = np.concatenate([[0.0], np.cumsum(seg)])
        length = float(sd[-1])
        n = int(round(length / TRACK_DS))
        s = np.arange(n) * (length / n)
        closed = np.vstack([dense, dense[:1]])
        centre = np.stack([np.interp(s, sd, closed[:, 0]), np.interp(s, sd, closed[:, 1])], 1)
        nxt, prv = np.roll(centre, -1, 0), np.roll(centre, 1, 0)
        tangent = nxt - prv
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
        heading = np.unwrap(np.arctan2(tangent[:, 1], tangent[:, 0]))
        dh = np.diff(np.concatenate([heading, heading[:1] + (heading[-1] - heading[0]) * n / (n - 1)]))
        dh = (np.roll(dh, 1) + dh) / 2
        curvature = np.angle(np.exp(1j * dh)) / (length / n)
        hw = w0 + w1 * np.sin(2 * math.pi * m * s / length + c)
        if (
            np.abs(curvature).max() * 2.0 * hw.max() <= 1.0
            and curvature.min() < -fam["kmin"][0]
            and curvature.max() > fam["kmin"][0]
        ):
            return Track(int(seed), centre, tangent, normal, s, length, hw, curvature, family)
    raise RuntimeError(f"no drivable {family} track found for seed {seed}")  # pragma: no cover


def _strip_meshes(
    name: str, centre: np.ndarray, normal: np.ndarray, half_w: np.ndarray, dashed: bool = False
) -> list[tuple[str, str]]:
    """Flat triangle-strip meshes along a closed polyline, one quad per segment (``dashed``
    keeps every other quad), cut into pieces of ``_CHUNK`` segments: ``mj_multiRay`` culls a
    piece by its bounding sphere, so far pieces cost little (one box per segment: ~33 ms a
    frame; one mesh per marking: ~4 ms). Returns (mesh name, <mesh> element) pairs."""
    n = len(centre)
    out = []
    for k, i0 in enumerate(range(0, n, _CHUNK)):
        idx = np.arange(i0, min(i0 + _CHUNK, n) + 1) % n
        m = len(idx)
        verts = np.concatenate(
            [centre[idx] + half_w[idx, None] * normal[idx], centre[idx] - half_w[idx, None] * normal[idx]]
        )
        faces = []
        for i in range(m - 1):
            if dashed and (idx[i] % 2):
                continue
            faces += [i, m + i, i + 1, i + 1, m + i, m + i + 1]
        if not faces:
            continue
        v = " ".join(f"{a:.5f}" for a in np.hstack([verts, np.zeros((2 * m, 1))]).reshape(-1))
        mname = f"{name}{k}"
        out.append(
            (mname, f'<mesh name="{mname}" vertex="{v}" face="{" ".join(map(str, faces))}" inertia="shell"/>')
        )
    return out


def distractor_boxes(track: Track, n: int, seed: int) -> list[tuple[float, float, float, tuple[float, ...]]]:
    """``n`` seeded distractor objects off the road: (x, y, half size m, rgb) of boxes standing on
    the grass at least 0.4 m outside both edge lines, within 2.5 m of the centreline (in view)."""
    rng = np.random.default_rng([seed, 7])
    edges = (EdgeLine(track.left, -1), EdgeLine(track.right, 1))
    out: list[tuple[float, float, float, tuple[float, ...]]] = []
    while len(out) < n:
        i = int(rng.integers(len(track.s)))
        side = rng.choice([-1.0, 1.0])
        d = side * (track.half_width[i] + rng.uniform(0.5, 2.5))
        xy = track.centre[i] + d * track.normal[i]
        sd = [e.signed_distance(xy) for e in edges]  # > 0 on the road side of each line
        if min(sd) > -0.4 or min(map(abs, sd)) < 0.4:  # on or near the road (also another part of the lap)
            continue
        rgb = tuple(float(c) for c in rng.uniform(0.1, 1.0, 3))
        out.append((float(xy[0]), float(xy[1]), float(rng.uniform(0.06, 0.15)), rgb))
    return out


def lane_mjcf(track: Track, distractors: Sequence[tuple[float, float, float, tuple[float, ...]]] = ()) -> str:
    """MJCF of the track scene (grass, road, edge and centre lines as flat meshes), optional
    distractor boxes (``distractor<k>`` geoms, :func:`distractor_boxes`) and the vehicle body
    ``base_link`` (a mocap body: the vehicle is kinematic)."""
    ext = float(np.abs(track.centre).max()) + 5.0
    lw = np.full(len(track.s), _LINE_HALF_WIDTH)
    nr = track.normal
    meshes, geoms = [], []
    for name, pts, hw, z, rgb, dashed in (
        ("road", track.centre, track.half_width + _LINE_HALF_WIDTH, 0.001, _ROAD, False),
        ("left", track.left, lw, 0.002, _EDGE, False),
        ("right", track.right, lw, 0.002, _EDGE, False),
        ("centre", track.centre, lw, 0.002, _CENTRE, True),
    ):
        for mname, mesh in _strip_meshes(name, pts, nr, hw, dashed):
            meshes.append(mesh)
            geoms.append(
                f'<geom name="{mname}" type="mesh" mesh="{mname}" pos="0 0 {z}" '
                f'rgba="{rgb[0]} {rgb[1]} {rgb[2]} 1" contype="0" conaffinity="0"/>'
            )
    for k, (x, y, h, col) in enumerate(distractors):
        geoms.append(
            f'<geom name="distractor{k}" type="box" size="{h} {h} {h}" pos="{x} {y} {h}" '
            f'rgba="{col[0]} {col[1]} {col[2]} 1" contype="0" conaffinity="0"/>'
        )
    g = _GRASS
    return f"""
<mujoco model="lane_track_{track.seed}">
  <compiler angle="radian"/>
  <asset>
    {chr(10).join(meshes)}
  </asset>
  <worldbody>
    <geom name="floor" type="plane" size="{ext} {ext} 0.1" rgba="{g[0]} {g[1]} {g[2]} 1"
          contype="0" conaffinity="0"/>
    {chr(10).join(geoms)}
    <body name="base_link" mocap="true" pos="0 0 0.05">
      <geom name="chassis" type="cylinder" size="{LANE_RADIUS} 0.04" rgba="0.2 0.4 0.8 1"
            contype="0" conaffinity="0"/>
    </body>
  </worldbody>
</mujoco>
"""


@dataclass(frozen=True)
class Lighting:
    """One episode's appearance under the lighting/texture shift (module docstring).

    colours: (4, 3) rgb of grass, road, edge lines, centre line; sky: sky scale; gain, contrast,
    cast (3,): global photometric change; gratings: (2, 4) rows (kx, ky 1/m, phase, amplitude);
    tiles: (size m, amplitude); shadow: (kx, ky 1/m, phase, threshold in (-1, 1), depth): light
    times ``depth`` where sin(k . xy + phase) > threshold; sun_azimuth: rad (the bands run across
    it).
    """

    colours: np.ndarray
    sky: float
    gain: float
    contrast: float
    cast: np.ndarray
    gratings: np.ndarray
    tiles: tuple[float, float]
    shadow: tuple[float, float, float, float, float]
    sun_azimuth: float

    def scaled(self, strength: float) -> Lighting:
        """This shift ``strength`` of the way from the training appearance (0: none, 1: itself)."""
        import dataclasses

        k = float(strength)
        base = np.array([_GRASS, _ROAD, _EDGE, _CENTRE])
        kx, ky, ph, thr, depth = self.shadow
        g = self.gratings.copy()
        g[:, 3] *= k
        return dataclasses.replace(
            self,
            colours=base + k * (self.colours - base),
            sky=1 + k * (self.sky - 1),
            gain=1 + k * (self.gain - 1),
            contrast=1 + k * (self.contrast - 1),
            cast=1 + k * (self.cast - 1),
            gratings=g,
            tiles=(self.tiles[0], k * self.tiles[1]),
            shadow=(kx, ky, ph, thr, 1 - k * (1 - depth)),
        )

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Lighting:
        """A seeded appearance (ranges in the module docstring)."""
        asphalt = rng.uniform(0.2, 0.5)
        road = np.clip(asphalt + rng.uniform(-0.04, 0.04, 3), 0, 1)
        dry = rng.uniform()
        grass = (1 - dry) * np.array(_GRASS) + dry * np.array([0.55, 0.5, 0.28])
        edge = np.clip(rng.uniform(0.75, 1.0) + np.array([0.0, 0.0, -rng.uniform(0, 0.2)]), 0, 1)
        white = rng.uniform()
        centre = (1 - white) * np.array(_CENTRE) + white * np.array(_EDGE)
        g = np.empty((2, 4))
        for i in range(2):
            ang, k = rng.uniform(0, 2 * math.pi), rng.uniform(2.0, 12.0)
            ph, amp = rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.15)
            g[i] = (k * math.cos(ang), k * math.sin(ang), ph, amp)
        sun = rng.uniform(0, 2 * math.pi)
        ks = rng.uniform(1.0, 4.0)
        shadow = (ks * math.cos(sun), ks * math.sin(sun), rng.uniform(0, 2 * math.pi), rng.uniform(-0.2, 0.6),
                  rng.uniform(0.45, 0.75))  # fmt: skip
        return cls(
            colours=np.stack([grass, road, edge, centre]),
            sky=float(rng.uniform(0.7, 1.1)),
            gain=float(rng.uniform(0.6, 1.4)),
            contrast=float(rng.uniform(0.6, 1.3)),
            cast=rng.uniform(0.85, 1.15, 3),
            gratings=g,
            tiles=(float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.0, 0.15))),
            shadow=tuple(float(v) for v in shadow),  # type: ignore[arg-type]
            sun_azimuth=float(sun),
        )


@dataclass
class LaneObservation:
    """Sensor readings: time (s), pose (3,) odometry x, y (m), theta (rad); twist (2,) v (m/s),
    omega (rad/s); image (H, W, 3) rgb8 or (H, W) mono8 uint8."""

    time: float
    pose: np.ndarray
    twist: np.ndarray
    image: np.ndarray


def _camera_rays(width: int, height: int) -> np.ndarray:
    """Unit ray directions (H*W, 3) in the robot frame, row-major from the image's top-left."""
    f = (width / 2) / math.tan(CAMERA_HFOV / 2)
    u = (np.arange(width) + 0.5 - width / 2) / f
    v = (np.arange(height) + 0.5 - height / 2) / f
    uu, vv = np.meshgrid(u, v)
    # camera frame: x forward, y left, z up; image u to the right = -y, v down = -z
    d = np.stack([np.ones_like(uu), -uu, -vv], -1).reshape(-1, 3)
    c, s = math.cos(CAMERA_PITCH), math.sin(CAMERA_PITCH)
    pitch = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # rotate x down by the pitch
    d = d @ pitch.T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


class LaneEnv:
    """The lane vehicle on the track of ``track_seed``, stepped by (v, omega) commands.

    Args:
        track_seed: which track (:func:`make_track`); a :class:`Track` is accepted too.
        mono: images as mono8 (H, W) instead of rgb8 (H, W, 3).
        brightness_range: per-reset brightness factor drawn uniformly from this (lo, hi).
        pixel_noise_std: std of Gaussian noise on each pixel (0..255 scale).
        odom_noise_std: std of noise on odometry pose (m, m, rad) and twist.
        seed: seeds the noise / brightness generator.
        distractors: number of seeded distractor boxes on the grass off the road
            (:func:`distractor_boxes`, drawn from ``seed`` or 0).
        lighting: the lighting/texture shift (module docstring): a new :class:`Lighting` drawn at
            every reset (``self.lighting``; None when off); a number in [0, 1]: its strength
            (True = 1, False = 0 = off).
    """

    def __init__(
        self,
        track_seed: int | Track = 0,
        mono: bool = False,
        brightness_range: tuple[float, float] = (1.0, 1.0),
        pixel_noise_std: float = 0.0,
        odom_noise_std: float = 0.0,
        seed: int | None = None,
        distractors: int = 0,
        lighting: bool | float = False,
    ) -> None:
        if pixel_noise_std < 0 or odom_noise_std < 0:
            raise ValueError(f"noise stds must be >= 0, got {pixel_noise_std}, {odom_noise_std}")
        lo, hi = (float(b) for b in brightness_range)
        if not 0 < lo <= hi:
            raise ValueError(f"brightness_range must satisfy 0 < lo <= hi, got {brightness_range!r}")
        self.track = track_seed if isinstance(track_seed, Track) else make_track(track_seed)
        self.mono = bool(mono)
        self.brightness_range = (lo, hi)
        self.pixel_noise_std = float(pixel_noise_std)
        self.odom_noise_std = float(odom_noise_std)
        boxes = distractor_boxes(self.track, int(distractors), 0 if seed is None else int(seed))
        self.model = mujoco.MjModel.from_xml_string(lane_mjcf(self.track, boxes))
        self.data = mujoco.MjData(self.model)
        self._body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "base_link")
        self._rays = _camera_rays(CAMERA_WIDTH, CAMERA_HEIGHT)
        self._n = len(self._rays)
        self._geom = np.zeros(self._n, dtype=np.int32)
        self._dist = np.zeros(self._n)
        self._base_colour = np.vstack([self.model.geom_rgba[:, :3], _SKY])  # index -1 -> sky
        self._colour = self._base_colour
        labels = []
        for g in range(self.model.ngeom):
            nm = mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_GEOM, g) or ""
            labels.append(
                1 if nm == "floor" else 2 if nm.startswith("road") else 3 if nm.startswith(("left", "right"))
                else 4 if nm.startswith("centre") else 5 if nm.startswith("distractor") else 6
            )  # fmt: skip
        self._geom_labels = np.array([*labels, 0], dtype=np.int8)  # index -1 -> sky
        self._edges = (EdgeLine(self.track.left, -1), EdgeLine(self.track.right, 1))
        self._rng = np.random.default_rng(seed)
        self.dt = 0.005  # s, the time grid irregular control periods are rounded to (motion is exact)
        self.brightness = 1.0
        strength = float(lighting)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"lighting must be a bool or a strength in [0, 1], got {lighting!r}")
        self.shift_lighting = strength
        self.lighting: Lighting | None = None
        self.state = np.zeros(3)
        self.command = np.zeros(2)
        self.time = 0.0
        self.progress = 0.0
        self.reset()

    def reset(self, seed: int | None = None, start: np.ndarray | None = None) -> LaneObservation:
        """New episode at time 0. ``start`` (3,) x, y, theta; default: on the centreline at a
        random sample (``seed`` reseeds), heading along the track."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        tr = self.track
        if start is None:
            i = int(self._rng.integers(len(tr.s)))
            start = np.array([*tr.centre[i], math.atan2(tr.tangent[i, 1], tr.tangent[i, 0])])
        start = np.asarray(start, dtype=float)
        if start.shape != (3,) or not np.all(np.isfinite(start)):
            raise ValueError(f"start must be 3 finite numbers (x, y, theta), got {start!r}")
        self.state = start.copy()
        self.command = np.zeros(2)
        self.time = 0.0
        self.progress = 0.0
        self._s = tr.project(self.state[:2])[0]
        lo, hi = self.brightness_range
        self.brightness = float(self._rng.uniform(lo, hi))
        if self.shift_lighting:  # drawn after the start and brightness: those stay as without it
            self.lighting = Lighting.draw(self._rng).scaled(self.shift_lighting)
            colour = self._base_colour.copy()
            for label in (1, 2, 3, 4):  # grass, road, edge lines, centre line
                colour[self._geom_labels == label] = self.lighting.colours[label - 1]
            colour[-1] = _SKY * self.lighting.sky
            self._colour = colour
        self._sync()
        return self.observation()

    @property
    def pose(self) -> np.ndarray:
        """True pose (3,), theta wrapped to (-pi, pi]."""
        x, y, th = self.state
        return np.array([x, y, math.atan2(math.sin(th), math.cos(th))])

    def _sync(self) -> None:
        x, y, th = self.state
        self.data.mocap_pos[0] = (x, y, 0.05)
        self.data.mocap_quat[0] = (math.cos(th / 2), 0.0, 0.0, math.sin(th / 2))
        mujoco.mj_kinematics(self.model, self.data)

    def step(self, command: np.ndarray, dt: float, render: bool = True) -> LaneObservation:
        """Hold ``command`` = (v m/s, omega rad/s) for ``dt`` s (exact arc); clipped to the limits.
        ``render=False`` skips the camera (the observation's image is then empty, shape (0,))."""
        u = np.asarray(command, dtype=float).reshape(-1)
        if u.shape != (2,) or not np.all(np.isfinite(u)):
            raise ValueError(f"command must be 2 finite numbers (v, omega), got {command!r}")
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        v = float(np.clip(u[0], -LANE_V_LIMIT, LANE_V_LIMIT))
        w = float(np.clip(u[1], -LANE_OMEGA_LIMIT, LANE_OMEGA_LIMIT))
        self.command = np.array([v, w])
        x, y, th = self.state
        if abs(w) < 1e-9:
            x, y = x + v * dt * math.cos(th), y + v * dt * math.sin(th)
        else:
            x += v / w * (math.sin(th + w * dt) - math.sin(th))
            y -= v / w * (math.cos(th + w * dt) - math.cos(th))
        self.state = np.array([x, y, th + w * dt])
        self.time += dt
        s = self.track.project(self.state[:2])[0]
        L = self.track.length
        self.progress += (s - self._s + L / 2) % L - L / 2
        self._s = s
        self._sync()
        return self.observation(render)

    def image(self) -> np.ndarray:
        """Camera frame now: (H, W, 3) rgb8, or (H, W) mono8 (see the module docstring)."""
        x, y, th = self.state
        c, s = math.cos(th), math.sin(th)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        px, py, pz = CAMERA_POS
        pnt = np.array([x + c * px - s * py, y + s * px + c * py, pz])
        vec = (self._rays @ R.T).reshape(-1)
        mujoco.mj_multiRay(
            self.model, self.data, pnt, vec, None, 1, self._body, self._geom, self._dist, None, self._n, 50.0
        )
        light = np.exp(-np.where(self._geom >= 0, self._dist, 0.0) / _FOG) * self.brightness
        rgb = self._colour[self._geom] * np.where(self._geom >= 0, light, self.brightness)[:, None]
        if self.lighting is not None:
            rgb = self._shift(rgb, pnt, vec.reshape(-1, 3))
        img = rgb.reshape(CAMERA_HEIGHT, CAMERA_WIDTH, 3) * 255.0
        if self.pixel_noise_std > 0:
            img = img + self._rng.normal(0.0, self.pixel_noise_std, img.shape)
        if self.mono:
            img = img @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def _shift(self, rgb: np.ndarray, pnt: np.ndarray, vec: np.ndarray) -> np.ndarray:
        """The lighting/texture shift on shaded colours (N, 3) in [0, 1] (module docstring)."""
        lt = self.lighting
        assert lt is not None
        flat = np.isin(self._geom_labels[self._geom], (1, 2, 3, 4))  # the ground and its markings
        xy = pnt[:2] + np.where(flat, self._dist, 0.0)[:, None] * vec[:, :2]  # hit points
        tex = np.ones(len(rgb))
        for kx, ky, ph, amp in lt.gratings:
            tex += amp * np.sin(kx * xy[:, 0] + ky * xy[:, 1] + ph)
        size, amp = lt.tiles
        tex += amp * np.sign(np.sin(math.pi * xy[:, 0] / size) * np.sin(math.pi * xy[:, 1] / size))
        textured = np.isin(self._geom_labels[self._geom], (1, 2))  # grass and road, not the lines
        kx, ky, ph, thr, depth = lt.shadow
        shade = np.where(np.sin(kx * xy[:, 0] + ky * xy[:, 1] + ph) > thr, depth, 1.0)
        f = np.where(textured, tex, 1.0) * np.where(flat, shade, 1.0)
        out = rgb * f[:, None] * lt.gain
        out = 0.5 + lt.contrast * (out - 0.5)
        return np.clip(out * lt.cast, 0.0, 1.0)

    def pixel_labels(self) -> np.ndarray:
        """(H, W) int8 label per pixel of the last :meth:`image`: 0 sky, 1 grass, 2 road,
        3 edge line, 4 centre line, 5 distractor, 6 other (the attention measure's classes)."""
        names = self._geom_labels
        return names[self._geom].reshape(CAMERA_HEIGHT, CAMERA_WIDTH)

    def observation(self, render: bool = True) -> LaneObservation:
        """Sensor readings now (noise included when enabled); ``render=False``: no image."""
        pose = self.pose
        twist = self.command.copy()
        if self.odom_noise_std > 0:
            pose = pose + self._rng.normal(0, self.odom_noise_std, 3)
            twist = twist + self._rng.normal(0, self.odom_noise_std, 2)
        image = self.image() if render else np.zeros(0, dtype=np.uint8)
        return LaneObservation(time=self.time, pose=pose, twist=twist, image=image)

    def lane_margin(self) -> float:
        """Smallest distance (m) from the footprint disc to either edge line; < 0 when crossing."""
        p = self.state[:2]
        return min(e.signed_distance(p) for e in self._edges) - LANE_RADIUS

    def ground_truth(self) -> np.ndarray:
        """Array (7,) with the layout ``LANE_GROUND_TRUTH_FIELDS``."""
        m = self.lane_margin()
        p = self.pose
        lap = self.progress / self.track.length
        return np.array([m, 1.0 if m < 0 else 0.0, self.progress, p[0], p[1], p[2], lap])


class LaneExpert:
    """Pure pursuit on the centreline with the privileged true pose.

    Target: the centreline point ``lookahead`` m of arc length ahead of the projection;
    omega = 2 v sin(alpha) / lookahead (alpha: the target's bearing in the robot frame);
    v = ``speed`` reduced on tight curves ahead (|kappa| v^2 <= ``lateral_accel``).
    """

    def __init__(self, track: Track, speed: float = LANE_SPEED, lookahead: float = 0.45,
                 lateral_accel: float = 1.0) -> None:  # fmt: skip
        if not (0 < speed <= LANE_V_LIMIT and lookahead > 0 and lateral_accel > 0):
            raise ValueError(
                f"need 0 < speed <= {LANE_V_LIMIT}, lookahead > 0, lateral_accel > 0; "
                f"got {speed}, {lookahead}, {lateral_accel}"
            )
        self.track, self.speed, self.lookahead, self.lateral_accel = track, speed, lookahead, lateral_accel

    def command(self, pose: np.ndarray) -> np.ndarray:
        """(v, omega) for the true pose (3,)."""
        tr = self.track
        s, _, _ = tr.project(np.asarray(pose[:2], dtype=float))
        n = len(tr.s)
        i0 = int(round(s / tr.length * n))
        ahead = (i0 + np.arange(int(round(self.lookahead / tr.length * n)) + 1)) % n
        tgt = tr.centre[ahead[-1]]
        kmax = float(np.abs(tr.curvature[ahead]).max())
        v = min(self.speed, math.sqrt(self.lateral_accel / max(kmax, 1e-6)))
        dx, dy = tgt[0] - pose[0], tgt[1] - pose[1]
        alpha = math.atan2(dy, dx) - pose[2]
        w = 2.0 * v * math.sin(alpha) / max(math.hypot(dx, dy), 1e-6)
        return np.array([v, float(np.clip(w, -LANE_OMEGA_LIMIT, LANE_OMEGA_LIMIT))])
