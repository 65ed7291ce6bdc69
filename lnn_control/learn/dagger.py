"""Closed-loop rollouts of a policy on the built-in simulator, and DAgger data aggregation (no ROS).

Behaviour cloning trains on states the expert visits; the policy's own small errors take it to
states the expert never saw, and errors compound (Ross et al., "A reduction of imitation learning
to no-regret online learning", AISTATS 2011). DAgger fixes this by rolling the *policy* out,
letting the expert label every state it visits, adding those (observation, expert command)
sequences to the data and training again:

    D_0 = expert demonstrations;  pi_0 = BC(D_0)
    for i = 1..N:  D_i = D_{i-1} + {(o_t, expert(s_t)) : s_t visited by pi_{i-1}};  pi_i = BC(D_i)

Rollouts run in process through :class:`lnn_control.sim.rollout.ClosedLoop` (the deployed
control step against the MuJoCo environment, episodes drawn and scored by
:mod:`lnn_control.sim.episodes`); every rollout step is labelled with the expert's command.
With ``ClosedLoop(safety_filter=True)`` the config's safety filter is in the loop, so rollouts
visit the states the deployed, filtered policy visits and DAgger's expert labels those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lnn_control.control.observation import ObservationMap
from lnn_control.learn.training import Episode
from lnn_control.sim import topics as T
from lnn_control.sim.rollout import ClosedLoop, RolloutResult

__all__ = ["success_rate", "dagger", "relabel_goals"]


def success_rate(results: Sequence[RolloutResult]) -> dict[str, float]:
    """Share of episodes that reached the goal without a violation (``safe_success``), reached at
    all, and had a violation (``episodes.VIOLATION_KINDS``)."""
    n = max(1, len(results))
    return {
        "episodes": len(results),
        "success": sum(r.score.safe_success for r in results) / n,
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
    record_filter: bool = False,
    progress: bool = False,
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
        log: one line per round; record_filter: rollouts record the filter state and env per
            step (BarrierNet training data); progress: a tqdm bar over the rounds on stderr.
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
    from tqdm import tqdm

    for r in tqdm(range(rounds + 1), desc="dagger", unit="round", disable=not progress):
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
            loop.run(stepper, seed + 1000 * (r + 1) + i, beta=b, record_filter=record_filter).episode
            for i in range(episodes_per_round)
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
            goal = loop.env.sample_configuration(rng)  # type: ignore[union-attr]
            obs = e.obs.copy()
            obs[:, sl["goal"]] = goal
            tgt = np.stack([loop.expert(o[sl["q"]], o[sl["dq"]], goal) for o in obs])
            out.append(Episode(obs, e.dt.copy(), tgt, source=f"{e.source} relabelled"))
    return out
