"""Closed-loop episodes in process: the MuJoCo environment on one side, the deployed control step
on the other (no ROS).

:class:`ClosedLoop` is the one rollout: training (DAgger, ``--filter-in-loop``, ``--barriernet``
data), ``lnn-control evaluate``, ``compare`` and ``inspect`` all run it. Per episode:

* the sim side steps the plain environment (:func:`lnn_control.sim.episodes.make_env`) from the
  seeded draw (:func:`lnn_control.sim.episodes.draw`) at the simulator node's publish rate
  (``topics.PUBLISH_RATE``), builds the messages the node would publish
  (:mod:`lnn_control.sim.topics` dicts, stamped with sim time) and delivers them, sensors first
  and the trigger topic last (as the node's spinner takes them);
* the policy side is a :class:`lnn_control.control.step.ControlStep`, the controller node's own
  per-message logic (observation mapping, stamps and dt, policy, safety filter, verification,
  fallback): ``receive`` for every delivered message, ``step`` on the trigger, ``watchdog`` on a
  tick without a trigger. A step without a verified command (None) holds the last command, as a
  real actuator does, and is counted (``held``);
* the episode is scored by :func:`lnn_control.sim.episodes.score` from the ground truth.

Conditions are data (:class:`Condition`), seeded per episode: sensor noise, dropped messages
(each sensor message lost with a probability: a lost trigger means no step that period), a random
control period (the publish period times U(period_scale), rounded to physics steps; stamps carry
the true time, so the cell gets the true dt) and the safety filter on or off (off = every barrier
dropped, only the actuator box stays, as ``make demo FILTER=off``).

Every step also records the observation and the expert's command for that state (DAgger labels);
with ``record_filter=True`` also the filter's state and ``env`` (BarrierNet training).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lnn_control.config import load_filter_config, load_observation_config, read_robot_config
from lnn_control.control.observation import ObservationMap
from lnn_control.control.step import ControlStep, StepSettings
from lnn_control.learn.training import Episode
from lnn_control.sim import episodes as E
from lnn_control.sim import models as M
from lnn_control.sim import topics as T
from lnn_control.sim.diff_drive import DiffDriveEnv
from lnn_control.sim.experts import ArmPDExpert, DiffDriveExpert
from lnn_control.sim.lane import LaneEnv, LaneExpert, episode_track_seed
from lnn_control.sim.models import ROBOTS

__all__ = ["CONDITIONS", "ClosedLoop", "Condition", "RolloutResult", "condition"]

_NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Condition:
    """How an episode is perturbed (all seeded by the episode seed).

    Attributes:
        noise_std: Gaussian sensor noise std (m, rad, rad/s) on every sensor.
        drop_prob: probability in [0, 1) that one sensor message is lost.
        period_scale: (low, high): each control period is the publish period times U(low, high),
            rounded to physics steps; (1, 1) = the nominal rate.
        filter: the config's safety filter (True) or only its actuator box (False).
        mirror: diff_drive: the controller lives in the room reflected in the x axis (y -> -y):
            odometry, scan (beam k <-> beam -k), goal and the turn rate are reflected between the
            simulator and the control step, so every controller-side input is that of a room whose
            obstacles sit at (x, -y): a layout never seen in training. Ground truth and scoring stay
            in the simulator's room.
        payload: arm: kg added at the tool (on link3, its centre of mass moved towards the tool).
        damping_scale: arm: factor on every joint's viscous damping (friction).
    """

    noise_std: float = 0.0
    drop_prob: float = 0.0
    period_scale: tuple[float, float] = (1.0, 1.0)
    filter: bool = True
    mirror: bool = False
    payload: float = 0.0
    damping_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"Condition.noise_std must be >= 0, got {self.noise_std}")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"Condition.drop_prob must be in [0, 1), got {self.drop_prob}")
        lo, hi = self.period_scale
        if not 0 < lo <= hi:
            raise ValueError(f"Condition.period_scale must be 0 < low <= high, got {self.period_scale}")
        if not (math.isfinite(self.payload) and self.payload >= 0):
            raise ValueError(f"Condition.payload must be >= 0 kg, got {self.payload}")
        if not (math.isfinite(self.damping_scale) and self.damping_scale > 0):
            raise ValueError(f"Condition.damping_scale must be > 0, got {self.damping_scale}")


#: named conditions (sensor noise per robot as in ``compare``)
CONDITIONS: tuple[str, ...] = (
    "clean",
    "noise",
    "drop",
    "irregular",
    "noise_low",
    "noise_high",
    "irregular_wide",
    "ood",
)
_NOISE = {"diff_drive": 0.03, "arm": 0.02, "lane": 0.02}
#: (low, high) sensor noise std beside ``_NOISE`` (the study's three levels)
_NOISE_LEVELS = {"diff_drive": (0.01, 0.1), "arm": (0.005, 0.05), "lane": (0.01, 0.05)}
#: arm out-of-distribution dynamics: payload (kg at the tool), joint damping factor
ARM_OOD_PAYLOAD, ARM_OOD_DAMPING = 0.1, 2.0
_LANE_ENVS = 16  # lane: environments kept per ClosedLoop, one per track (MJCF compiled once)


def condition(name: str, robot: str, filter: bool = True) -> Condition:
    """The named condition of :data:`CONDITIONS` for ``robot``: clean; noise (sensor noise 0.03
    diff_drive / 0.02 arm / 0.02 lane: odometry, and 10 grey levels on each camera pixel); drop
    (30 % of sensor messages lost); irregular (period x U(0.5, 2)); noise_low / noise_high (0.01 /
    0.1 diff_drive, 0.005 / 0.05 arm, 0.01 / 0.05 lane); irregular_wide (period x U(0.2, 5));
    ood: diff_drive the mirrored room (``Condition.mirror``), arm a 0.1 kg payload and 2x joint
    damping."""
    if robot not in ROBOTS:
        raise ValueError(f"robot must be one of {ROBOTS}, got {robot!r}")
    if name == "clean":
        return Condition(filter=filter)
    if name == "noise":
        return Condition(noise_std=_NOISE[robot], filter=filter)
    if name == "drop":
        return Condition(drop_prob=0.3, filter=filter)
    if name == "irregular":
        return Condition(period_scale=(0.5, 2.0), filter=filter)
    if name == "noise_low":
        return Condition(noise_std=_NOISE_LEVELS[robot][0], filter=filter)
    if name == "noise_high":
        return Condition(noise_std=_NOISE_LEVELS[robot][1], filter=filter)
    if name == "irregular_wide":
        return Condition(period_scale=(0.2, 5.0), filter=filter)
    if name == "ood":
        if robot == "diff_drive":
            return Condition(mirror=True, filter=filter)
        if robot == "arm":
            return Condition(payload=ARM_OOD_PAYLOAD, damping_scale=ARM_OOD_DAMPING, filter=filter)
        raise ValueError("condition 'ood': lane's held-out tracks (seeds >= 100000) are its unseen layouts")
    raise ValueError(f"condition {name!r}: use one of {CONDITIONS}")


@dataclasses.dataclass
class RolloutResult:
    """One closed-loop episode.

    score: the episode's :class:`~lnn_control.sim.episodes.EpisodeScore`; episode: observations
    the policy saw with the expert's command at each step as target (DAgger), with the filter
    state and env per step when asked (``record_filter``); start, goal: the draw; ground_truth
    (T, n) and t (T,): every tick's ground truth and sim time (s).
    """

    seed: int
    score: E.EpisodeScore
    episode: Episode
    start: np.ndarray
    goal: np.ndarray
    ground_truth: np.ndarray
    t: np.ndarray

    @property
    def reached(self) -> bool:
        return self.score.reached

    @property
    def collided(self) -> bool:
        """Any violation tick (any kind of ``episodes.VIOLATION_KINDS``)."""
        return self.score.violated

    @property
    def time_s(self) -> float:
        return self.score.time_s

    @property
    def min_margin(self) -> float:
        return self.score.min_margin

    @property
    def interventions(self) -> int:
        return self.score.interventions

    @property
    def fallbacks(self) -> int:
        return self.score.fallbacks


class _Actor:
    """The policy side handed to ControlStep: the policy (or the expert), DAgger's expert mixture,
    DART's action disturbance, and the gain outputs only when the filter takes gains."""

    def __init__(
        self,
        policy: Any | None,
        n_commands: int,
        gains: bool,
        rng_seed: Sequence[int],
        beta: float,
        action_noise: float,
        limits: np.ndarray,
        a: float,
    ) -> None:
        self.policy, self.n, self.beta, self.action_noise = policy, n_commands, beta, action_noise
        self.limits, self.a, self.rng_seed = limits, a, list(rng_seed)
        self.n_inputs = getattr(policy, "n_inputs", None)
        use_gains = gains and policy is not None and int(getattr(policy, "n_gains", 0) or 0) > 0
        self.n_gains = int(policy.n_gains) if use_gains else 0  # type: ignore[union-attr]
        self.gain_names = list(policy.gain_names) if use_gains else []  # type: ignore[union-attr]
        self.expert_command = np.zeros(n_commands)  # set by the loop before each step
        self.reset()

    def reset(self) -> None:
        if self.policy is not None:
            self.policy.reset()
        self.rng = np.random.default_rng(self.rng_seed)
        self.disturbance = np.zeros(self.n)

    def step(self, obs: np.ndarray, dt: float) -> np.ndarray:
        u_exp = self.expert_command
        if self.policy is None:
            y = u_exp.copy()
        else:
            y = np.asarray(self.policy.step(obs, dt), dtype=float)  # stepped every step: its state stays true
            y = y[: self.n + self.n_gains].copy()
            if self.beta > 0 and self.rng.random() < self.beta:
                y[: self.n] = u_exp
        if self.action_noise > 0:
            a = self.a
            self.disturbance = a * self.disturbance + math.sqrt(1 - a * a) * self.rng.normal(size=self.n)
            y[: self.n] = y[: self.n] + self.action_noise * self.limits * self.disturbance
        return y


class ClosedLoop:
    """A built-in robot, its expert and its controller config, run in closed loop.

    Args:
        robot: ``diff_drive`` or ``arm``.
        config: the robot's config YAML (observation mapping, safety filter, node timing).
        rate: sensor publish rate (Hz), default the simulator node's.
        noise_std: sensor noise std (m, rad, rad/s) of the default condition.
        safety_filter: the default condition's filter: the config's (True) or its box only.
        condition: the default :class:`Condition` (overrides ``noise_std`` and ``safety_filter``).
        record_filter: default of :meth:`run`'s ``record_filter`` (BarrierNet training data).
    """

    def __init__(
        self,
        robot: str,
        config: str | pathlib.Path,
        rate: float | None = None,
        noise_std: float = 0.0,
        safety_filter: bool = False,
        condition: Condition | None = None,
        record_filter: bool = False,
    ) -> None:
        if robot not in ROBOTS:
            raise ValueError(f"robot must be one of {ROBOTS}, got {robot!r}")
        self.robot = robot
        self.config = pathlib.Path(config)
        self.rate = T.PUBLISH_RATE[robot] if rate is None else float(rate)
        if not 1.0 <= self.rate <= 1000.0:
            raise ValueError(f"rate must be in [1, 1000] Hz, got {rate}")
        self.condition = condition or Condition(noise_std=noise_std, filter=bool(safety_filter))
        self.record_filter = bool(record_filter)
        probe = self.observation_map()
        self.input_names = probe.names
        self.n_inputs = probe.n_inputs
        self.n_commands = len(probe.command_fields)
        params = read_robot_config(self.config)
        message = str(params.get("control_mode", "message")) == "message"
        self.trigger = (str(params.get("trigger_topic") or "") or probe.stamp_topic) if message else ""
        self.settings = StepSettings.from_params(params, self.trigger)
        self._filters: dict[bool, Any] = {}
        self.safety_filter = self.filter(True) if self.condition.filter else None
        self.env: Any = E.make_env(robot)
        self._lane_envs: dict[int, Any] = {}
        self.expert: Any
        if robot == "lane":  # one env and expert per track, chosen per episode
            from lnn_control.sim.lane import LANE_OMEGA_LIMIT, LANE_V_LIMIT

            self._lane_envs[self.env.track.seed] = self.env  # type: ignore[union-attr]
            self.expert = LaneExpert(self.env.track)  # type: ignore[union-attr]
            self.limits = np.array([LANE_V_LIMIT, LANE_OMEGA_LIMIT])
        else:
            self.expert = DiffDriveExpert() if robot == "diff_drive" else ArmPDExpert(self.env.model)
            self.limits = (
                np.array([M.DIFF_DRIVE_V_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT])
                if robot == "diff_drive"
                else np.asarray(M.ARM_TAU_LIMIT, dtype=float)
            )

    def observation_map(self) -> ObservationMap:
        """A fresh mapping (no messages seen) from the config YAML."""
        return load_observation_config(self.config)

    def filter(self, enabled: bool) -> Any:
        """The config's :class:`barriernet.SafetyFilter`; ``enabled=False``: its actuator box only."""
        if enabled not in self._filters:
            from barriernet.safety_filter import SafetyFilter

            cfg = load_filter_config(self.config)
            if not enabled:
                cfg["barriers"] = []
            self._filters[enabled] = SafetyFilter.from_config(cfg)
        return self._filters[enabled]

    def draw(self, seed: int) -> E.EpisodeSpec:
        """Episode ``seed`` (:func:`lnn_control.sim.episodes.draw`)."""
        return E.draw(self.robot, seed)

    def _use_track(self, seed: int) -> None:
        """lane: the env and expert of episode ``seed``'s track."""
        ts = episode_track_seed(seed)
        env: Any = self._lane_envs.get(ts)
        if env is None:
            if len(self._lane_envs) >= _LANE_ENVS:
                self._lane_envs.pop(next(iter(self._lane_envs)))
            env = self._lane_envs[ts] = E.make_env("lane", track_seed=ts)
        if env is not self.env or self.expert.track is not env.track:
            self.env = env
            self.expert = LaneExpert(env.track)

    def _messages(self, ob: Any, t_ns: int) -> list[tuple[str, dict[str, Any]]]:
        """The sensor messages of one tick, trigger last."""
        if isinstance(self.env, LaneEnv):
            msgs = [("/odom", T.odometry(ob, t_ns)), ("/camera/image_raw", T.image(ob.image, t_ns))]
        elif isinstance(self.env, DiffDriveEnv):
            msgs = [("/odom", T.odometry(ob, t_ns)), ("/scan", T.laser_scan(ob, t_ns, 1.0 / self.rate))]
        else:
            msgs = [("/joint_states", T.joint_state(ob, t_ns))]
        return sorted(msgs, key=lambda m: m[0] == self.trigger)

    def _expert(self, ob: Any, goal: np.ndarray) -> np.ndarray:
        if isinstance(self.env, LaneEnv):  # privileged: the true pose, not the noisy odometry
            return np.asarray(self.expert.command(self.env.pose), dtype=float)
        if isinstance(self.env, DiffDriveEnv):
            return np.asarray(self.expert(ob.pose, goal), dtype=float)
        return np.asarray(self.expert(ob.position, ob.velocity, goal), dtype=float)

    def run(
        self,
        policy: Any | None,
        seed: int,
        max_time: float | None = None,
        hold: float = 0.5,
        stop_after_collision: float = 1.0,
        start: np.ndarray | None = None,
        goal: np.ndarray | None = None,
        beta: float = 0.0,
        action_noise: float = 0.0,
        condition: Condition | None = None,
        record_filter: bool | None = None,
        reach_tolerance: tuple[float, float] | None = None,
        stall_time: float | None = None,
        controller: Any | None = None,
    ) -> RolloutResult:
        """One episode driven by ``policy`` through the ControlStep, labelled by the expert.

        Args:
            policy: PolicyStepper-like (``step(obs, dt)``, ``reset()``; class-K gain outputs after
                the commands go to the filter when it takes them); None = the expert.
            seed: episode seed (draw, sensor noise, condition and mixture draws).
            max_time: time limit (s), default ``episodes.TIME_LIMIT``.
            hold: time (s) run on after the goal is reached (the policy must stay there).
            stop_after_collision: end the episode this long (s) after the first violation.
            start, goal: override the seeded draw.
            beta: probability of sending the expert's command instead of the policy's at each
                step (DAgger's mixture; 0 = the policy alone).
            action_noise: std, as a fraction of each command's limit, of a slowly varying (AR(1),
                0.3 s correlation) disturbance added to the command before the filter (not to the
                label): with ``policy=None`` this records how the expert recovers from drift
                (DART, Laskey et al. 2017).
            condition: this episode's :class:`Condition` (default the loop's).
            record_filter: record the filter state and env per step in the episode (default the
                loop's ``record_filter``).
            reach_tolerance: goal tolerance instead of the simulator's (``episodes.reached``).
            stall_time: diff_drive: end (unreached) when the robot moved < 5 cm in this many s.
            controller: run the same episode against a controller elsewhere (e.g. a real
                ``lnn_controller`` node over DDS: test/ros/test_node_rollout_equivalence.py) instead
                of the in-process ControlStep. It needs ControlStep's ``reset(now)``,
                ``receive(topic, msg, now)``, ``step(now, stamp) -> StepOutput | None`` and
                ``watchdog(now)``, called exactly as here (sim time in s, message dicts of
                :mod:`lnn_control.sim.topics`). Policy and filter are then the controller's:
                ``policy`` must be None, ``beta`` and ``action_noise`` 0, ``condition.filter`` is not
                applied here; the rows (DAgger data) come from a local ObservationMap fed the same
                messages.
        """
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {action_noise}")
        if controller is not None and (policy is not None or beta > 0 or action_noise > 0):
            raise ValueError(
                "controller: the policy runs in the controller; pass policy=None, beta=0 and "
                "action_noise=0 with it"
            )
        cond = self.condition if condition is None else condition
        record_filter = self.record_filter if record_filter is None else record_filter
        spec = E.draw(self.robot, seed, max_time)
        start = spec.start if start is None else np.asarray(start, dtype=float)
        goal = spec.goal if goal is None else np.asarray(goal, dtype=float)
        spec = dataclasses.replace(spec, start=start, goal=goal)
        dt0 = 1.0 / self.rate
        if self.robot == "lane":
            self._use_track(seed)
        env = self.env
        if isinstance(env, LaneEnv):
            env.odom_noise_std = cond.noise_std
            env.pixel_noise_std = E.LANE_PIXEL_NOISE_PER_STD * cond.noise_std
        elif isinstance(env, DiffDriveEnv):
            env.scan_noise_std = env.odom_noise_std = cond.noise_std
        else:
            env.noise_std = cond.noise_std
        if cond.mirror and (isinstance(env, LaneEnv) or not isinstance(env, DiffDriveEnv)):
            raise ValueError("Condition.mirror is a diff_drive condition")
        if (cond.payload or cond.damping_scale != 1.0) and self.robot != "arm":
            raise ValueError("Condition.payload / damping_scale are arm conditions")
        if self.robot == "arm":
            _arm_dynamics(env, cond.payload, cond.damping_scale)
        flip = np.array([1.0, -1.0]) if cond.mirror else None  # (v, omega): omega reflected
        ob = spec.reset(env)
        filt = self.filter(cond.filter)
        actor = _Actor(
            policy,
            self.n_commands,
            filt.n_gains > 0,
            [seed, 2],
            beta,
            action_noise,
            self.limits,
            math.exp(-1.0 / (0.3 * self.rate)),
        )
        step: Any
        if controller is None:
            step = ControlStep(self.observation_map(), actor, filt, self.settings)
            om, mirror = step.observation, None
        else:  # the controller's own map is out of reach: rows from a copy fed the same messages
            step = controller
            om = mirror = self.observation_map()
        step.reset(0.0)
        goal_topic = T.GOAL_TOPIC[self.robot][0]
        goal_msg = E.goal_message(self.robot, goal if flip is None else goal * np.array([1.0, -1.0]), 0)
        step.receive(goal_topic, goal_msg, 0.0)
        if mirror is not None:
            mirror.update(goal_topic, goal_msg)
        rng = np.random.default_rng([seed, 4])
        irregular = cond.period_scale != (1.0, 1.0)
        obs_rows: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        row_t: list[float] = []
        states: list[np.ndarray] = []
        envs: list[dict[str, np.ndarray]] = []
        gts: list[np.ndarray] = []
        ts: list[float] = []
        interventions = fallbacks = held = 0
        command = np.zeros(self.n_commands)
        t_reached: float | None = None
        t_bad: float | None = None
        anchor = (0.0, env.ground_truth())
        t, k = 0.0, 0
        while True:
            gt = env.ground_truth()
            gts.append(gt)
            ts.append(t)
            if t_bad is None and any(bool(v) for v in E.violations(self.robot, gt).values()):
                t_bad = t
            if t_reached is None and bool(E.reached(self.robot, gt, tolerance=reach_tolerance)):
                t_reached = t
            t_ns = round(t * _NS)
            triggered = False
            stamp: float | None = None
            for topic, msg in self._messages(ob if flip is None else _mirrored(ob), t_ns):
                if cond.drop_prob > 0 and rng.random() < cond.drop_prob:
                    continue
                st = step.receive(topic, msg, t)
                if mirror is not None:
                    mirror.update(topic, msg)
                if topic == self.trigger:  # as the node: dt from the trigger's stamp as received
                    triggered, stamp = True, st
                triggered = triggered or not self.trigger
            u_exp = self._expert(ob, goal)
            if flip is not None:  # the label in the controller's (reflected) room
                u_exp = u_exp * flip
            if triggered and om.ready():
                obs_rows.append(om.observation())
                targets.append(u_exp)
                row_t.append(t)
                if record_filter:
                    states.append(np.array(om.state(), dtype=np.float64))
                    envs.append({k: np.array(a) for k, a in om.env().items()})
            if E.episode_over(t, spec.time_limit, t_reached, hold) or (
                t_bad is not None and t - t_bad >= stop_after_collision
            ):
                break
            if stall_time is not None and isinstance(env, DiffDriveEnv) and t - anchor[0] >= stall_time:
                xy = E.truth(self.robot, gt)
                xy0 = E.truth(self.robot, anchor[1])
                if math.hypot(xy["x"] - xy0["x"], xy["y"] - xy0["y"]) < 0.05:
                    break
                anchor = (t, gt)
            actor.expert_command = u_exp
            out = step.step(t, stamp) if triggered else step.watchdog(t)
            if out is None or out.command is None:
                held += 1
            else:
                command = out.command
                interventions += bool(getattr(out.report, "intervened", False))
                fallbacks += out.fallback
            applied = command if flip is None else command * flip
            if irregular:
                period = max(1, round(dt0 * rng.uniform(*cond.period_scale) / env.dt)) * env.dt
                ob = env.step(applied, period)
                t += period
            else:  # k * dt0: the recorder's tick times, exactly
                ob = env.step(applied, dt0)
                k += 1
                t = k * dt0
        if not obs_rows:
            raise RuntimeError(f"episode {seed}: no control step ran (every trigger message was lost)")
        rt = np.asarray(row_t)
        dts = np.diff(rt) if len(rt) > 1 else np.full(1, dt0)
        dts = np.concatenate([dts[:1], dts]) if len(rt) > 1 else dts
        ep = Episode(
            np.stack(obs_rows),
            dts,
            np.stack(targets),
            source=f"{self.robot} seed {seed}",
            state=np.stack(states) if states else None,
            env=envs if states else None,
        )
        gt_arr = np.stack(gts)
        t_arr = np.asarray(ts)
        sc = E.score(
            self.robot,
            seed,
            gt_arr,
            t_arr,
            time_limit=spec.time_limit,
            tolerance=reach_tolerance,
            interventions=interventions,
            fallbacks=fallbacks,
            held=held,
        )
        return RolloutResult(seed, sc, ep, np.asarray(start, float), np.asarray(goal, float), gt_arr, t_arr)


def _mirrored(ob: Any) -> Any:
    """A diff_drive observation in the room reflected in the x axis: pose (x, -y, -theta), twist
    (v, -omega), beam k reads what beam -k sees (beam k is at angle k * 2 pi / SCAN_BEAMS)."""
    x, y, th = (float(v) for v in ob.pose)
    scan = np.asarray(ob.scan)
    return dataclasses.replace(
        ob,
        pose=np.array([x, -y, -th]),
        twist=np.array([float(ob.twist[0]), -float(ob.twist[1])]),
        scan=scan[(-np.arange(scan.shape[0])) % scan.shape[0]],
    )


_ARM_NOMINAL: dict[int, tuple[float, np.ndarray, np.ndarray, np.ndarray]] = {}


def _arm_dynamics(env: Any, payload: float, damping_scale: float) -> None:
    """Set the arm env's model to ``payload`` kg at the tool (a point mass at the end of link3:
    link3's mass, centre of mass and inertia updated) and ``damping_scale`` x the joint damping;
    (0, 1) restores the MJCF's values."""
    import mujoco

    m = env.model
    b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "link3")
    key = id(m)
    if key not in _ARM_NOMINAL:
        _ARM_NOMINAL[key] = (
            float(m.body_mass[b]),
            m.body_ipos[b].copy(),
            m.body_inertia[b].copy(),
            m.dof_damping.copy(),
        )
    mass, ipos, inertia, damping = _ARM_NOMINAL[key]
    tool = np.array([M.ARM_LINK_LENGTHS[2], 0.0, 0.0])
    total = mass + payload
    com = (mass * ipos + payload * tool) / total
    # parallel axis: both masses lie on the link's axis, so the shift adds to the two principal
    # moments about axes across the link (the two largest of a capsule)
    perp = mass * float(np.sum((ipos - com) ** 2)) + payload * float(np.sum((tool - com) ** 2))
    extra = np.full(3, perp)
    extra[int(np.argmin(inertia))] = 0.0
    m.body_mass[b] = total
    m.body_ipos[b] = com
    m.body_inertia[b] = inertia + extra
    m.dof_damping[:] = damping * damping_scale
