"""Closed-loop rollouts of a policy on the built-in simulator, and DAgger data aggregation (no ROS).

Behaviour cloning trains on states the expert visits; the policy's own small errors take it to
states the expert never saw, and errors compound (Ross et al., "A reduction of imitation learning
to no-regret online learning", AISTATS 2011). DAgger fixes this by rolling the *policy* out,
letting the expert label every state it visits, adding those (observation, expert command)
sequences to the data and training again:

    D_0 = expert demonstrations;  pi_0 = BC(D_0)
    for i = 1..N:  D_i = D_{i-1} + {(o_t, expert(s_t)) : s_t visited by pi_{i-1}};  pi_i = BC(D_i)

Rollouts run in process: :class:`ClosedLoop` steps the plain MuJoCo environment
(``lnn_control.sim``) at the simulator node's publish rate, builds the very messages the node
would receive (``lnn_control.sim.topics`` dicts), maps them with the robot's
:class:`~lnn_control.control.observation.ObservationMap` (the node's mapping, from the same YAML) and steps
a :class:`~lnn_control.runtime.stepper.PolicyStepper`, so the observations match the node's exactly.
Starts and goals are drawn as :mod:`lnn_control.learn.record` draws them, from a seed per episode.

With ``safety_filter=True`` every applied command first goes through the config's
:class:`barriernet.SafetyFilter` (its state and ``env`` from the same mapping, as the node feeds
it), so rollouts visit the states the deployed, filtered policy visits and DAgger's expert labels
those. Episodes record the filter state and ``env`` per step whenever the config maps them, so
they also serve end-to-end BarrierNet training (``lnn-control train --barriernet``).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lnn_control.config import load_filter_config, load_observation_config
from lnn_control.control.observation import ObservationMap
from lnn_control.learn.training import Episode
from lnn_control.sim import models as M
from lnn_control.sim import topics as T
from lnn_control.sim.arm import ArmEnv
from lnn_control.sim.diff_drive import DiffDriveEnv, sample_free_position
from lnn_control.sim.experts import ArmPDExpert, DiffDriveExpert
from lnn_control.sim.models import ARM_JOINT_NAMES, ROBOTS

__all__ = ["RolloutResult", "ClosedLoop", "success_rate", "dagger", "relabel_goals"]

_NS = 1_000_000_000


@dataclasses.dataclass
class RolloutResult:
    """One closed-loop episode.

    reached: goal reached; collided: a tick had the collision flag set; time_s: sim time until
    the goal was reached (or the episode ended); min_margin: smallest clearance (m, diff_drive)
    or joint-limit margin (rad, arm); episode: observations the policy saw with the expert's
    command at each step as target (for DAgger), with the filter state and env per step when the
    config maps them; start, goal: the episode's draw; interventions, fallbacks: steps where the
    safety filter (``ClosedLoop(safety_filter=True)``) changed the command / used its fallback.
    """

    seed: int
    reached: bool
    collided: bool
    time_s: float
    min_margin: float
    episode: Episode
    start: np.ndarray
    goal: np.ndarray
    interventions: int = 0
    fallbacks: int = 0


class ClosedLoop:
    """A built-in robot in its plain environment, its expert, and the node's observation mapping.

    Args:
        robot: ``diff_drive`` or ``arm``.
        config: the robot's config YAML (``config/<robot>.yaml``) whose ``observation:`` section
            maps messages to the policy input.
        rate: control rate (Hz), default the simulator node's publish rate.
        noise_std: sensor noise std (m, rad, rad/s).
        safety_filter: pass every applied command through the config's ``safety_filter``
            (:class:`barriernet.SafetyFilter`), as the node does; ValueError if the config has none
            or it is invalid.
    """

    def __init__(
        self,
        robot: str,
        config: str | pathlib.Path,
        rate: float | None = None,
        noise_std: float = 0.0,
        safety_filter: bool = False,
    ) -> None:
        if robot not in ROBOTS:
            raise ValueError(f"robot must be one of {ROBOTS}, got {robot!r}")
        self.robot = robot
        self.config = pathlib.Path(config)
        self.rate = T.PUBLISH_RATE[robot] if rate is None else float(rate)
        if not 1.0 <= self.rate <= 1000.0:
            raise ValueError(f"rate must be in [1, 1000] Hz, got {rate}")
        self.noise_std = float(noise_std)
        probe = self.observation_map()
        self.input_names = probe.names
        self.n_inputs = probe.n_inputs
        self.n_commands = len(probe.command_fields)
        self.records_state = probe.n_state > 0
        self.safety_filter: Any = None
        if safety_filter:
            from barriernet.safety_filter import SafetyFilter

            self.safety_filter = SafetyFilter.from_config(load_filter_config(self.config))
            if self.safety_filter.n_controls != self.n_commands:
                raise ValueError(
                    f"safety_filter: {self.safety_filter.n_controls} controls, the command has "
                    f"{self.n_commands} fields"
                )
            if self.safety_filter.n_state != probe.n_state:
                raise ValueError(
                    f"safety_filter: state of {self.safety_filter.n_state} values, the observation maps "
                    f"{probe.n_state} (observation.state)"
                )
        if robot == "diff_drive":
            self.dd_env = DiffDriveEnv(noise_std, noise_std)
            self.dd_expert = DiffDriveExpert()
        else:
            self.arm_env = ArmEnv(noise_std)
            self.arm_expert = ArmPDExpert(self.arm_env.model)

    def observation_map(self) -> ObservationMap:
        """A fresh mapping (no messages seen) from the config YAML."""
        return load_observation_config(self.config)

    def default_max_time(self) -> float:
        """Episode time limit (s) of :mod:`lnn_control.learn.record`: 40 (base) / 6 (arm)."""
        return 40.0 if self.robot == "diff_drive" else 6.0

    def draw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(start, goal) of episode ``seed``, drawn as :mod:`lnn_control.learn.record` draws them."""
        rng = np.random.default_rng([seed, 1])
        if self.robot == "diff_drive":
            env = self.dd_env
            env.reset(seed=seed)
            start = env.pose.copy()
            goal = sample_free_position(rng, 0.15)
            while np.linalg.norm(goal - start[:2]) < 1.0:
                goal = sample_free_position(rng, 0.15)
            return start, goal
        arm = self.arm_env
        arm.reset(seed=seed)
        q0 = arm.q
        return q0, arm.sample_reachable_goal(rng, q0)

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
    ) -> RolloutResult:
        """One episode driven by ``policy`` (a PolicyStepper; None = the expert), labelled by the expert.

        Args:
            policy: object with ``step(obs, dt) -> outputs`` and ``reset()``; the first
                ``n_commands`` outputs are applied; learned class-K gains after them (a BarrierNet
                policy) go to the safety filter when one is in the loop.
            seed: episode seed (start and goal as in :mod:`lnn_control.learn.record`, sensor noise).
            max_time: time limit (s), default :meth:`default_max_time`.
            hold: time (s) run on after the goal is reached (the policy must stay there).
            stop_after_collision: end the episode this long (s) after the first collision.
            start, goal: override the seeded draw.
            beta: probability of applying the expert's command instead of the policy's at each
                step (DAgger's mixture policy; 0 = the policy alone). Seeded by ``seed``.
            action_noise: std, as a fraction of each command's limit, of a slowly varying (AR(1),
                0.3 s correlation) disturbance added to the applied command (not to the label):
                with ``policy=None`` this records how the expert recovers from drift (DART,
                Laskey et al. 2017). Seeded by ``seed``.
        """
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {action_noise}")
        mix = np.random.default_rng([seed, 2])
        limits = (
            np.array([M.DIFF_DRIVE_V_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT])
            if self.robot == "diff_drive"
            else np.asarray(M.ARM_TAU_LIMIT, dtype=float)
        )
        a = math.exp(-1.0 / (0.3 * self.rate))
        disturbance = np.zeros(len(limits))
        s0, g0 = self.draw(seed)
        start = s0 if start is None else np.asarray(start, dtype=float)
        goal = g0 if goal is None else np.asarray(goal, dtype=float)
        max_time = self.default_max_time() if max_time is None else float(max_time)
        dt = 1.0 / self.rate
        om = self.observation_map()
        if policy is not None:
            policy.reset()
        obs_rows: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        states: list[np.ndarray] = []
        envs: list[dict[str, np.ndarray]] = []
        filt = self.safety_filter
        gains: np.ndarray | None = None
        interventions = fallbacks = 0
        worst, collided = math.inf, False
        t_reached: float | None = None
        t_collided: float | None = None
        step_env: Callable[[np.ndarray], None]
        if self.robot == "diff_drive":
            env = self.dd_env
            ob = env.reset(seed=seed, start=start, goal=goal)
            om.update(T.GOAL_TOPIC["diff_drive"][0], T.pose_stamped(goal[0], goal[1], 0), 0)

            def sense(t_ns: int) -> np.ndarray:
                om.update("/odom", T.odometry(ob, t_ns), t_ns)
                om.update("/scan", T.laser_scan(ob, t_ns, dt), t_ns)
                return self.dd_expert(ob.pose, goal)

            def step_env(u: np.ndarray) -> None:
                nonlocal ob
                ob = env.step(u, dt)

            def margin() -> tuple[float, bool]:
                gt = env.ground_truth()
                return float(gt[0]), bool(gt[1] > 0.5)

            reached: Callable[[], bool] = env.goal_reached
        else:
            arm = self.arm_env
            ob_a = arm.reset(seed=seed, q0=start, goal=goal)
            goal_msg = {
                "header": T.header(0, "base_link"),
                "name": list(ARM_JOINT_NAMES),
                "position": [float(g) for g in goal],
                "velocity": [],
                "effort": [],
            }
            om.update(T.GOAL_TOPIC["arm"][0], goal_msg, 0)

            def sense(t_ns: int) -> np.ndarray:
                om.update("/joint_states", T.joint_state(ob_a, t_ns), t_ns)
                return self.arm_expert(ob_a.position, ob_a.velocity, goal)

            def step_env(u: np.ndarray) -> None:
                nonlocal ob_a
                ob_a = arm.step(u, dt)

            def margin() -> tuple[float, bool]:
                gt = arm.ground_truth()
                return float(gt[:3].min()), bool(gt[4] > 0.5 or gt[:3].min() < 0)

            reached = arm.goal_reached
        k = 0
        while True:
            t = k * dt
            t_ns = round(t * _NS)
            u_exp = sense(t_ns)
            o = om.observation()
            obs_rows.append(o)
            targets.append(np.asarray(u_exp, dtype=float))
            if self.records_state:
                states.append(np.array(om.state(), dtype=np.float64))  # plans may reuse buffers
                envs.append({k: np.array(a) for k, a in om.env().items()})
            m, bad = margin()
            worst = min(worst, m)
            if bad and t_collided is None:
                collided, t_collided = True, t
            if t_reached is None and reached():
                t_reached = t
            if (
                (t_reached is not None and t - t_reached >= hold)
                or t >= max_time
                or (t_collided is not None and t - t_collided >= stop_after_collision)
            ):
                break
            if policy is None:
                u = u_exp
            else:
                y = np.asarray(policy.step(o, dt), dtype=float)  # stepped every tick: its state stays true
                u = u_exp if beta > 0 and mix.random() < beta else y[: self.n_commands]
                if filt is not None and y.size == self.n_commands + filt.n_gains > self.n_commands:
                    gains = y[self.n_commands :]  # a BarrierNet policy's class-K gains, as the node uses them
            if action_noise > 0:
                disturbance = a * disturbance + math.sqrt(1 - a * a) * mix.normal(size=len(limits))
                u = np.asarray(u, dtype=float) + action_noise * limits * disturbance
            if filt is not None:  # as deployed: the filter sees whatever command would be sent
                u, rep = filt.filter(states[-1], u, gains=gains, env=envs[-1])
                interventions += bool(rep.intervened)
                fallbacks += bool(rep.fallback_used)
            step_env(u)
            k += 1
        n = len(obs_rows)
        ep = Episode(
            np.stack(obs_rows),
            np.full(n, dt),
            np.stack(targets),
            source=f"{self.robot} seed {seed}",
            state=np.stack(states) if states else None,
            env=envs if states else None,
        )
        return RolloutResult(
            seed=seed,
            reached=t_reached is not None,
            collided=collided,
            time_s=float(t_reached if t_reached is not None else k * dt),
            min_margin=float(worst),
            episode=ep,
            start=np.asarray(start, dtype=float),
            goal=np.asarray(goal, dtype=float),
            interventions=interventions,
            fallbacks=fallbacks,
        )


def success_rate(results: Sequence[RolloutResult]) -> dict[str, float]:
    """Share of episodes that reached the goal without collision, reached at all, and collided."""
    n = max(1, len(results))
    return {
        "episodes": len(results),
        "success": sum(r.reached and not r.collided for r in results) / n,
        "reached": sum(r.reached for r in results) / n,
        "collided": sum(r.collided for r in results) / n,
    }


def dagger(
    loop: ClosedLoop,
    demos: Sequence[Episode],
    train: Callable[[Sequence[Episode], Any | None], Any],
    rounds: int,
    episodes_per_round: int,
    seed: int,
    eval_seeds: Sequence[int] = (),
    beta: float = 0.5,
    log: Callable[[str], None] = print,
) -> tuple[Any, list[dict[str, Any]]]:
    """DAgger: train on ``demos``, then ``rounds`` times roll the policy out, relabel, aggregate, retrain.

    Args:
        loop: the robot's :class:`ClosedLoop`.
        demos: expert demonstrations (round 0 data).
        train: ``train(episodes, previous_policy_or_None) -> LiquidPolicy`` (warm start when given).
        rounds, episodes_per_round: DAgger rounds and policy rollouts added per round.
        seed: rollout seeds are ``seed + 1000 * round + i``.
        eval_seeds: closed-loop evaluation episodes after each round; the policy with the best
            success rate (ties: the later round) is returned.
        beta: round r (1, 2, ...) rolls out the mixture that applies the expert's command with
            probability ``beta ** r`` (Ross et al.'s decaying mixture), so early rounds stay near
            the expert's states.
    Returns:
        (best policy, history: one dict per round with data size and closed-loop rates).
    """
    if rounds < 0 or episodes_per_round < 1:
        raise ValueError(
            f"rounds must be >= 0 and episodes_per_round >= 1, got {rounds}, {episodes_per_round}"
        )
    data = list(demos)
    policy = train(data, None)
    history: list[dict[str, Any]] = []
    best: tuple[float, Any] = (-1.0, policy)
    for r in range(rounds + 1):
        stats: dict[str, Any] = {
            "round": r,
            "data_episodes": len(data),
            "data_steps": int(sum(len(e.dt) for e in data)),
        }
        if eval_seeds:
            ev = [loop.run(policy.runtime(), s) for s in eval_seeds]
            stats.update(success_rate(ev))
            if stats["success"] >= best[0]:
                best = (stats["success"], policy)
        history.append(stats)
        log(f"dagger round {r}: {stats}")
        if r == rounds:
            break
        stepper = policy.runtime()
        b = beta ** (r + 1)
        new = [
            loop.run(stepper, seed + 1000 * (r + 1) + i, beta=b).episode for i in range(episodes_per_round)
        ]
        data += new
        policy = train(data, policy)
    return (best[1] if eval_seeds else policy), history


def _slices(om: ObservationMap) -> dict[str, slice]:
    """Where each arm quantity sits in the observation: ``q``, ``dq`` (joint states), ``goal``."""
    out: dict[str, slice] = {}
    i = 0
    for f in om.features:
        n = int(f.size or 0)
        if f.topic == T.GOAL_TOPIC["arm"][0]:
            out["goal"] = slice(i, i + n)
        elif f.extractor == "joints":
            out["dq" if f.args.get("quantity") == "velocity" else "q"] = slice(i, i + n)
        i += n
    return out


def relabel_goals(loop: ClosedLoop, episodes: Sequence[Episode], copies: int, seed: int) -> list[Episode]:
    """Goal relabelling (arm): each episode again ``copies`` times with a new random goal in the
    observation and the expert's command for that goal as the label.

    A few dozen demonstrations hold only a few dozen goals, and a network fed q and q_goal
    side by side learns those goals rather than the command as a function of the error; the expert
    labels any (state, goal) pair, so this multiplies the goals seen at no simulation cost.
    """
    if loop.robot != "arm":
        raise ValueError("relabel_goals needs the arm: the diff_drive goal feature depends on the pose")
    sl = _slices(loop.observation_map())
    if set(sl) != {"q", "dq", "goal"}:
        raise ValueError(
            f"observation must hold joint positions, velocities and the goal, found {sorted(sl)}"
        )
    rng = np.random.default_rng([seed, 3])
    out: list[Episode] = []
    for e in episodes:
        for _ in range(copies):
            goal = loop.arm_env.sample_configuration(rng)
            obs = e.obs.copy()
            obs[:, sl["goal"]] = goal
            tgt = np.stack([loop.arm_expert(o[sl["q"]], o[sl["dq"]], goal) for o in obs])
            out.append(Episode(obs, e.dt.copy(), tgt, source=f"{e.source} relabelled"))
    return out
