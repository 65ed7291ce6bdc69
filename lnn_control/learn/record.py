"""Expert demonstrations as rosbag2 MCAP bags, on the topics the simulator node publishes.

``python -m lnn_control.learn.record --robot diff_drive --episodes N --out DIR --seed S``

Each episode is one bag directory ``DIR/<robot>_ep<NNN>/`` (``metadata.yaml`` +
``<robot>_ep<NNN>_0.mcap``). The pure environment is stepped at the sim's publish rate
(``topics.PUBLISH_RATE``: 50 Hz base, 100 Hz arm). At each tick t (sim time, from 0 per
episode) the bag gets, all stamped and logged at t: the sensor topics of ``topics.TOPICS``
(``/odom`` + ``/scan`` or ``/joint_states``, ``/sim/ground_truth``, ``/clock``), then the
expert's command (``DiffDriveExpert`` / ``ArmPDExpert``) on the command topic (``/cmd_vel`` Twist or
``/effort_controller/commands``),
which is held until the next tick. The goal (``/goal_pose`` or ``/goal_joints``) is written at
t = 0 and then once per second. An episode ends ``hold`` s after the goal is reached, or at
the time limit. Starts and goals are ``lnn_control.sim.episodes.draw(robot, seed + episode index)``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass

import numpy as np

from lnn_control.learn.bags import BagWriter
from lnn_control.sim import episodes as E
from lnn_control.sim import topics as T
from lnn_control.sim.diff_drive import DiffDriveEnv
from lnn_control.sim.experts import ArmPDExpert, DiffDriveExpert
from lnn_control.sim.models import ROBOTS

__all__ = ["EpisodeResult", "record_episode", "record", "main"]

_NS = 1_000_000_000


@dataclass
class EpisodeResult:
    """Outcome of one recorded episode: bag path, duration (s) and its
    :class:`~lnn_control.sim.episodes.EpisodeScore` (reached, violations, margin)."""

    path: pathlib.Path
    duration: float
    score: E.EpisodeScore

    @property
    def reached(self) -> bool:
        return self.score.reached

    @property
    def min_clearance(self) -> float:
        """Minimum ground-truth margin: clearance m (diff_drive), joint-limit margin rad (arm)."""
        return self.score.min_margin

    @property
    def collisions(self) -> int:
        """Violation ticks of every kind (``episodes.VIOLATION_KINDS``)."""
        return sum(self.score.violations.values())


def record_episode(
    robot: str,
    path: str | pathlib.Path,
    seed: int,
    max_time: float | None = None,
    hold: float = 0.5,
    noise_std: float = 0.0,
    rate: float | None = None,
    expert: DiffDriveExpert | None = None,
) -> EpisodeResult:
    """Run one expert episode of ``robot`` (``episodes.draw(robot, seed)``) into a bag.

    Args:
        robot: ``"diff_drive"`` or ``"arm"``.
        path: bag directory to create.
        seed: episode seed (start, goal and sensor noise).
        max_time: episode time limit (s); default ``episodes.TIME_LIMIT``.
        hold: time (s) recorded after the goal is reached.
        noise_std: sensor noise std (m, rad, rad/s), 0 for none.
        rate: publish / control rate (Hz), default ``topics.PUBLISH_RATE[robot]``.
        expert: diff_drive only: the :class:`DiffDriveExpert` to record (default: its defaults).
    """
    if robot not in ROBOTS:
        raise ValueError(f"robot must be one of {ROBOTS}, got {robot!r}")
    if robot == "lane":  # camera frames in bags: not yet; its expert episodes come from the simulator
        raise ValueError(
            "robot lane: no bag recorder for the camera yet; train with `lnn-control train --config "
            "config/lane.yaml --model conv_ncp --noise-episodes N` (simulator expert episodes)"
        )
    rate = T.PUBLISH_RATE[robot] if rate is None else float(rate)
    if not 1.0 <= rate <= 1000.0:
        raise ValueError(f"rate must be in [1, 1000] Hz, got {rate}")
    if expert is not None and (robot != "diff_drive" or not isinstance(expert, DiffDriveExpert)):
        raise ValueError("expert: a DiffDriveExpert, for the diff_drive robot only")
    spec = E.draw(robot, seed, max_time)
    goal = spec.goal
    dt = 1.0 / rate
    cmd_topic, cmd_type = T.COMMAND_TOPIC[robot]
    goal_topic, goal_type = T.GOAL_TOPIC[robot]
    gt_label = ",".join(E.GROUND_TRUTH_FIELDS[robot])
    env = E.make_env(robot, noise_std)
    obs = spec.reset(env)
    if isinstance(env, DiffDriveEnv):
        expert_dd = DiffDriveExpert() if expert is None else expert
    else:
        expert_arm = ArmPDExpert(env.model)
    gts: list[np.ndarray] = []
    ts: list[float] = []
    t_reached: float | None = None
    k = 0
    next_goal_t = 0.0
    with BagWriter(path) as bag:
        while True:
            t = k * dt
            t_ns = round(t * _NS)
            if t >= next_goal_t - 1e-9:
                bag.write(goal_topic, goal_type, E.goal_message(robot, goal, t_ns), t_ns)
                next_goal_t += 1.0
            gt = env.ground_truth()
            bag.write("/clock", "rosgraph_msgs/msg/Clock", T.clock(t_ns), t_ns)
            if isinstance(env, DiffDriveEnv):
                bag.write("/odom", "nav_msgs/msg/Odometry", T.odometry(obs, t_ns), t_ns)
                bag.write("/scan", "sensor_msgs/msg/LaserScan", T.laser_scan(obs, t_ns, dt), t_ns)
                u = expert_dd(obs.pose, goal)
                bag.write(cmd_topic, cmd_type, T.twist(u[0], u[1]), t_ns)
            else:
                bag.write("/joint_states", "sensor_msgs/msg/JointState", T.joint_state(obs, t_ns), t_ns)
                u = expert_arm(obs.position, obs.velocity, goal)
                bag.write(cmd_topic, cmd_type, T.float64_array(u), t_ns)
            bag.write(
                "/sim/ground_truth",
                "std_msgs/msg/Float64MultiArray",
                T.float64_array(gt, label=gt_label),
                t_ns,
            )
            gts.append(gt)
            ts.append(t)
            if t_reached is None and bool(E.reached(robot, gt)):
                t_reached = t
            if E.episode_over(t, spec.time_limit, t_reached, hold):
                break
            obs = env.step(u, dt)
            k += 1
    score = E.score(robot, seed, np.stack(gts), ts, time_limit=spec.time_limit)
    return EpisodeResult(path=pathlib.Path(path), duration=k * dt, score=score)


def record(
    robot: str, episodes: int, out: str | pathlib.Path, seed: int = 0, noise_std: float = 0.0
) -> list[EpisodeResult]:
    """Record ``episodes`` episodes into ``out/<robot>_ep<NNN>/`` with seeds ``seed``, ``seed + 1``, ..."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [
        record_episode(robot, out / f"{robot}_ep{i:03d}", seed + i, noise_std=noise_std)
        for i in range(episodes)
    ]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints one line per episode and returns non-zero if an episode failed."""
    p = argparse.ArgumentParser(prog="python -m lnn_control.learn.record", description=__doc__.split("\n")[0])
    p.add_argument("--robot", choices=ROBOTS, required=True)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", required=True, help="output directory (one bag directory per episode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0, help="sensor noise std (m, rad, rad/s)")
    a = p.parse_args(argv)
    results = record(a.robot, a.episodes, a.out, a.seed, a.noise)
    bad = 0
    for r in results:
        bad += not r.score.safe_success
        print(
            f"{r.path.name}: reached={r.reached} time={r.duration:.2f}s "
            f"min_margin={r.min_clearance:.3f} violations={r.score.violations}"
        )
    print(f"{len(results) - bad}/{len(results)} episodes reached the goal without collision")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
