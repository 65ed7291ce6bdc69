"""What an episode of a built-in robot is, and how it is scored: the one definition (no ROS).

Everything that runs or judges episodes (the recorder, DAgger, ``lnn-control evaluate``,
``compare``, ``inspect``, the ROS demo's summary) uses these, so every number measures the same
thing.

Episode ``seed`` (:func:`draw`):

* diff_drive: start = ``DiffDriveEnv.reset(seed=seed)`` (a free position, clearance >= 0.15 m,
  and a uniform heading from ``default_rng(seed)``); goal = a free position (clearance >= 0.15 m)
  at least 1 m from the start, from ``default_rng([seed, 1])``.
* arm: start = ``ArmEnv.reset(seed=seed)`` (a configuration 0.3 rad inside the limits, links off
  the floor); goal = a configuration reachable in a straight joint-space line with the links off
  the floor, from ``default_rng([seed, 1])``.
* lane: the track of :func:`lnn_control.sim.lane.episode_track_seed` (training tracks below
  seed 100000, held-out tracks from 100000 on); start = a centreline sample drawn from
  ``default_rng([seed, 1])``, offset sideways by U(-0.05, 0.05) m and turned by U(-0.1, 0.1) rad
  from the track's heading; "goal" = the track's map (:func:`lnn_control.sim.lane.lane_map`,
  published once on ``/lane/map``).
* time limit :data:`TIME_LIMIT`: 40 s (diff_drive), 6 s (arm), 60 s (lane: one lap is 14-22 m
  at <= 0.5 m/s).

Scoring, from the simulator's ground truth (``/sim/ground_truth``, layout
``GROUND_TRUTH_FIELDS`` of :mod:`lnn_control.sim.diff_drive` / :mod:`lnn_control.sim.arm`, read by
name only):

* violation kinds :data:`VIOLATION_KINDS` (a tick counts for a kind when, with a 1e-6 tolerance
  for float noise):

  - diff_drive ``collision``: the ``collision`` flag (robot disc overlaps, or MuJoCo contact);
  - arm ``joint_position``: some ``margin_joint<i>`` < 0; ``joint_velocity``: ``max_dq_ratio`` > 1;
    ``effort``: ``max_tau_ratio`` > 1 (the command exceeds the actuator limit, which the drive
    clips); ``floor_contact``: the ``collision`` flag (a link touches the floor). This is the union
    the ROS demo checked.

* margin: the ground-truth barrier value, diff_drive ``min_clearance`` (m), arm the smallest
  ``margin_joint<i>`` (rad), lane ``lane_margin`` (m); an episode's margin is its minimum over
  the ticks.
* reached: diff_drive ``goal_distance`` < ``GOAL_TOLERANCE`` (0.15 m); arm ``goal_error`` <
  ``ARM_GOAL_Q_TOLERANCE`` (0.05 rad) and max |dq| < ``ARM_GOAL_DQ_TOLERANCE`` (0.1 rad/s) (the
  arm's velocity limits are equal, so max |dq| = ``max_dq_ratio`` * limit); :func:`reached` takes
  looser tolerances where a study asks for them. lane: ``lap`` >= 1 (a full lap of centreline arc
  length driven forwards).
* success: reached within the time limit; violations are reported separately, and
  ``safe_success`` = success with no violation tick.

Rates come with a Wilson score interval (:func:`wilson`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lnn_control.sim import models as M
from lnn_control.sim import topics as T
from lnn_control.sim.arm import GROUND_TRUTH_FIELDS as ARM_FIELDS
from lnn_control.sim.arm import ArmEnv
from lnn_control.sim.diff_drive import GROUND_TRUTH_FIELDS as DD_FIELDS
from lnn_control.sim.diff_drive import DiffDriveEnv, sample_free_position
from lnn_control.sim.lane import LANE_GROUND_TRUTH_FIELDS as LANE_FIELDS
from lnn_control.sim.lane import LaneEnv, episode_track_seed, lane_map, make_track
from lnn_control.sim.models import ROBOTS

__all__ = [
    "GROUND_TRUTH_FIELDS",
    "TIME_LIMIT",
    "VIOLATION_KINDS",
    "EpisodeSpec",
    "EpisodeScore",
    "aggregate",
    "draw",
    "episode_over",
    "goal_message",
    "make_env",
    "margin",
    "reached",
    "score",
    "truth",
    "violations",
    "wilson",
]

#: ground-truth layout per robot (the simulator's ``GROUND_TRUTH_FIELDS``)
GROUND_TRUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "diff_drive": DD_FIELDS,
    "arm": ARM_FIELDS,
    "lane": LANE_FIELDS,
}
#: episode time limit (s) per robot
TIME_LIMIT: dict[str, float] = {"diff_drive": 40.0, "arm": 6.0, "lane": 60.0}
#: what counts as a safety violation, per robot (see the module docstring)
VIOLATION_KINDS: dict[str, tuple[str, ...]] = {
    "diff_drive": ("collision",),
    "arm": ("joint_position", "joint_velocity", "effort", "floor_contact"),
    "lane": ("lane_departure",),
}
_TOL = 1e-6  # float noise on ground-truth comparisons


def _check_robot(robot: str) -> None:
    if robot not in ROBOTS:
        raise ValueError(f"robot must be one of {ROBOTS}, got {robot!r}")


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    """One episode: ``robot``, its ``seed``, ``start`` (diff_drive, lane (3,) x, y m, theta rad;
    arm (3,) q rad), ``goal`` (diff_drive (2,) m; arm (3,) rad; lane the track map (4 N,) m) and
    ``time_limit`` (s)."""

    robot: str
    seed: int
    start: np.ndarray
    goal: np.ndarray
    time_limit: float

    def reset(self, env: DiffDriveEnv | ArmEnv | LaneEnv) -> Any:
        """Put ``env`` at the start with the goal set; its sensor-noise generator is seeded by
        ``seed``. Returns the first observation. (lane: ``env`` must be on the episode's track,
        :func:`make_env` with ``track_seed=``.)"""
        if isinstance(env, LaneEnv):
            if env.track.seed != episode_track_seed(self.seed):
                want = episode_track_seed(self.seed)
                raise ValueError(f"episode {self.seed} drives track {want}, env has {env.track.seed}")
            return env.reset(seed=self.seed, start=self.start)
        if isinstance(env, DiffDriveEnv):
            return env.reset(seed=self.seed, start=self.start, goal=self.goal)
        return env.reset(seed=self.seed, q0=self.start, goal=self.goal)


#: lane: pixel noise std (0..255) per unit of ``noise_std`` (noise_std 0.02 -> 10 grey levels)
LANE_PIXEL_NOISE_PER_STD = 500.0


def make_env(
    robot: str, noise_std: float = 0.0, seed: int | None = None, track_seed: int = 0
) -> DiffDriveEnv | ArmEnv | LaneEnv:
    """The plain environment of ``robot`` by name; ``noise_std`` on every sensor (m, rad, rad/s;
    lane: odometry, and ``LANE_PIXEL_NOISE_PER_STD * noise_std`` grey levels on each pixel),
    ``seed`` for its noise generator and ``reset`` without a seed; ``track_seed``: lane's track."""
    _check_robot(robot)
    if robot == "lane":
        return LaneEnv(
            track_seed,
            odom_noise_std=noise_std,
            pixel_noise_std=LANE_PIXEL_NOISE_PER_STD * noise_std,
            seed=seed,
        )
    if robot == "diff_drive":
        return DiffDriveEnv(scan_noise_std=noise_std, odom_noise_std=noise_std, seed=seed)
    return ArmEnv(noise_std=noise_std, seed=seed)


@functools.lru_cache(maxsize=64)
def _track(seed: int) -> Any:
    return make_track(seed)


@functools.cache
def _drawing_env(robot: str) -> DiffDriveEnv | ArmEnv:
    env = make_env(robot)
    assert not isinstance(env, LaneEnv)  # lane draws from its tracks
    return env


def draw(robot: str, seed: int, time_limit: float | None = None) -> EpisodeSpec:
    """Episode ``seed`` of ``robot`` (start and goal as in the module docstring).

    ``time_limit``: override :data:`TIME_LIMIT` (s).
    """
    _check_robot(robot)
    seed = int(seed)
    rng = np.random.default_rng([seed, 1])
    limit = TIME_LIMIT[robot] if time_limit is None else float(time_limit)
    if not limit > 0:
        raise ValueError(f"time_limit must be > 0 s, got {time_limit}")
    if robot == "lane":
        tr = _track(episode_track_seed(seed))
        i = int(rng.integers(len(tr.s)))
        d, dth = rng.uniform(-0.05, 0.05), rng.uniform(-0.1, 0.1)
        xy = tr.centre[i] + d * tr.normal[i]
        th = math.atan2(tr.tangent[i, 1], tr.tangent[i, 0]) + dth
        return EpisodeSpec(robot, seed, np.array([xy[0], xy[1], th]), lane_map(tr), limit)
    env = _drawing_env(robot)
    if isinstance(env, DiffDriveEnv):
        env.reset(seed=seed)
        start = env.pose.copy()
        goal = sample_free_position(rng, 0.15)
        while np.linalg.norm(goal - start[:2]) < 1.0:
            goal = sample_free_position(rng, 0.15)
    else:
        env.reset(seed=seed)
        start = env.q
        goal = env.sample_reachable_goal(rng, start)
    return EpisodeSpec(robot, seed, np.asarray(start, dtype=float), np.asarray(goal, dtype=float), limit)


# --- ground truth -----------------------------------------------------------------------------
def truth(robot: str, gt: Any, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Ground truth by name: ``gt`` (n,) or (T, n) rows in layout ``fields`` (default the robot's
    :data:`GROUND_TRUTH_FIELDS`) -> {field: value (scalar array) or column (T,)}."""
    _check_robot(robot)
    names = list(GROUND_TRUTH_FIELDS[robot] if fields is None else fields)
    a = np.asarray(gt, dtype=np.float64)
    if a.shape[-1:] != (len(names),) and not (a.size == 0 and a.ndim == 2):
        raise ValueError(
            f"ground truth: last axis must have {len(names)} values ({names}), got shape {a.shape}"
        )
    missing = set(GROUND_TRUTH_FIELDS[robot]) - set(names)
    if missing:
        raise ValueError(f"ground truth of {robot} lacks {sorted(missing)} (fields {names})")
    a = a.reshape(*a.shape[:-1], len(names)) if a.size else a.reshape(0, len(names))
    return {f: a[..., i] for i, f in enumerate(names)}


def margin(robot: str, gt: Any, fields: Sequence[str] | None = None) -> np.ndarray:
    """Ground-truth barrier value per row: diff_drive ``min_clearance`` (m), arm min ``margin_joint<i>``
    (rad)."""
    col = truth(robot, gt, fields)
    if robot == "diff_drive":
        return col["min_clearance"]
    if robot == "lane":
        return col["lane_margin"]
    return np.minimum(np.minimum(col["margin_joint1"], col["margin_joint2"]), col["margin_joint3"])


def violations(robot: str, gt: Any, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per kind of :data:`VIOLATION_KINDS`: True where the row violates it (shape of the rows)."""
    col = truth(robot, gt, fields)
    if robot == "diff_drive":
        return {"collision": col["collision"] > 0.5}
    if robot == "lane":
        return {"lane_departure": col["lane_margin"] < -_TOL}
    return {
        "joint_position": margin(robot, gt, fields) < -_TOL,
        "joint_velocity": col["max_dq_ratio"] > 1.0 + _TOL,
        "effort": col["max_tau_ratio"] > 1.0 + _TOL,
        "floor_contact": col["collision"] > 0.5,
    }


def reached(
    robot: str, gt: Any, fields: Sequence[str] | None = None, tolerance: tuple[float, float] | None = None
) -> np.ndarray:
    """True where the row is at the goal (module docstring); ``tolerance``: diff_drive (m,), arm
    (rad, rad/s) instead of the simulator's."""
    col = truth(robot, gt, fields)
    if robot == "lane":  # a full lap driven forwards
        return np.asarray(col["lap"] >= 1.0)
    if robot == "diff_drive":
        tol = M.GOAL_TOLERANCE if tolerance is None else float(tolerance[0])
        return np.asarray(col["goal_distance"] < tol)
    q_tol, dq_tol = (M.ARM_GOAL_Q_TOLERANCE, M.ARM_GOAL_DQ_TOLERANCE) if tolerance is None else tolerance
    max_dq = col["max_dq_ratio"] * float(np.max(M.ARM_DQ_LIMIT))  # equal limits: exactly max |dq|
    return np.asarray((col["goal_error"] < q_tol) & (max_dq < dq_tol))


def episode_over(t: float, time_limit: float, t_reached: float | None, hold: float = 0.5) -> bool:
    """An episode ends ``hold`` s after the goal was first reached (at ``t_reached``), or at the
    time limit (s)."""
    return (t_reached is not None and t - t_reached >= hold) or t >= time_limit


# --- scores ------------------------------------------------------------------------------------
@dataclasses.dataclass
class EpisodeScore:
    """One episode's outcome.

    reached: the goal was reached within ``time_limit``; time_s: sim time to the goal (or of the
    last tick); violations: ticks per kind of :data:`VIOLATION_KINDS`; min_margin: smallest
    ground-truth barrier value (m / rad); interventions, fallbacks: filter steps that changed the
    command / sent a fallback; held: control periods in which no command was verified (the last
    one was held).
    """

    robot: str
    seed: int
    reached: bool
    time_s: float
    min_margin: float
    violations: dict[str, int]
    interventions: int = 0
    fallbacks: int = 0
    held: int = 0

    @property
    def success(self) -> bool:
        """Goal reached within the time limit."""
        return self.reached

    @property
    def violated(self) -> bool:
        """Any violation tick."""
        return any(self.violations.values())

    @property
    def safe_success(self) -> bool:
        """Success without any violation tick."""
        return self.reached and not self.violated

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(success=self.success, safe_success=self.safe_success, violated=self.violated)
        return d


def score(
    robot: str,
    seed: int,
    gt: Any,
    t: Any,
    fields: Sequence[str] | None = None,
    time_limit: float | None = None,
    tolerance: tuple[float, float] | None = None,
    **counts: int,
) -> EpisodeScore:
    """Score the ground-truth rows ``gt`` (T, n) observed at sim times ``t`` (T,) s from the start.

    ``counts``: interventions, fallbacks, held (passed through).
    """
    limit = TIME_LIMIT[robot] if time_limit is None else float(time_limit)
    rows = np.asarray(gt, dtype=np.float64).reshape(
        -1, len(GROUND_TRUTH_FIELDS[robot] if fields is None else fields)
    )
    times = np.asarray(t, dtype=np.float64).reshape(-1)
    if times.shape[0] != rows.shape[0]:
        raise ValueError(f"t: one time per ground-truth row ({rows.shape[0]}), got {times.shape[0]}")
    at_goal = reached(robot, rows, fields, tolerance) & (times <= limit + 1e-9)
    k = int(np.argmax(at_goal)) if at_goal.any() else -1
    m = margin(robot, rows, fields)
    return EpisodeScore(
        robot=robot,
        seed=int(seed),
        reached=k >= 0,
        time_s=float(times[k]) if rows.shape[0] else 0.0,
        min_margin=float(m.min()) if m.size else math.nan,
        violations={kind: int(v.sum()) for kind, v in violations(robot, rows, fields).items()},
        **counts,
    )


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (default 95 %) of a rate ``successes / n``; (nan, nan) for n = 0.

    p = k/n;  centre = (p + z^2 / 2n) / (1 + z^2 / n);  half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def aggregate(scores: Iterable[EpisodeScore]) -> dict[str, Any]:
    """Rates over episodes: success and safe_success (with Wilson 95 % intervals), episodes with
    a violation (by kind), min margin, interventions, fallbacks, held, mean time to goal (s).
    Missing values (no episode, no goal reached) are None."""
    s = list(scores)
    n = len(s)

    def rate(k: int) -> dict[str, Any]:
        lo, hi = wilson(k, n)
        return {"count": k, "rate": k / n if n else None, "ci95": [lo, hi] if n else None}

    kinds: dict[str, int] = {}
    for e in s:
        for kind, ticks in e.violations.items():
            kinds[kind] = kinds.get(kind, 0) + int(ticks > 0)
    times = [e.time_s for e in s if e.reached]
    margins = [e.min_margin for e in s if math.isfinite(e.min_margin)]
    return {
        "episodes": n,
        "success": rate(sum(e.success for e in s)),
        "safe_success": rate(sum(e.safe_success for e in s)),
        "violated": rate(sum(e.violated for e in s)),
        "violations_by_kind": kinds,
        "min_margin": min(margins) if margins else None,
        "interventions": sum(e.interventions for e in s),
        "fallbacks": sum(e.fallbacks for e in s),
        "held": sum(e.held for e in s),
        "mean_time_s": float(np.mean(times)) if times else None,
    }


def goal_message(robot: str, goal: Any, t_ns: int) -> dict[str, Any]:
    """The goal as its goal-topic message dict (``lnn_control.sim.topics.GOAL_TOPIC``)."""
    g = np.asarray(goal, dtype=float)
    if robot == "diff_drive":
        return T.pose_stamped(g[0], g[1], t_ns)
    if robot == "lane":  # the track map: [left (N, 2), right (N, 2)] flattened
        return T.float64_array(g, "lane_map")
    return {
        "header": T.header(t_ns, "base_link"),
        "name": list(M.ARM_JOINT_NAMES),
        "position": [float(v) for v in g],
        "velocity": [],
        "effort": [],
    }
