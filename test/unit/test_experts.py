"""Expert controllers reach seeded random goals in the pure environments without a safety violation."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from lnn_control.sim import models as M
from lnn_control.sim.arm import ArmEnv
from lnn_control.sim.diff_drive import DiffDriveEnv, clearance, sample_free_position
from lnn_control.sim.experts import ArmExpert, DiffDriveExpert

CONFIG_DD = pathlib.Path(__file__).resolve().parents[2] / "config" / "diff_drive.yaml"


def test_diff_drive_expert_reaches_random_goals_without_collision() -> None:
    expert = DiffDriveExpert()
    env = DiffDriveEnv()
    rng = np.random.default_rng(11)
    for episode in range(12):
        env.reset(seed=1000 + episode)
        goal = sample_free_position(rng, 0.15)
        while np.linalg.norm(goal - env.pose[:2]) < 1.5:
            goal = sample_free_position(rng, 0.15)
        env.set_goal(goal)
        min_clear = np.inf
        while env.time < 40.0 and not env.goal_reached():
            u = expert(env.pose, goal)
            assert abs(u[0]) <= M.DIFF_DRIVE_V_LIMIT and abs(u[1]) <= M.DIFF_DRIVE_OMEGA_LIMIT
            env.step(u, 0.02)
            gt = env.ground_truth()
            assert gt[1] == 0.0, f"episode {episode}: collision at {env.pose}"
            min_clear = min(min_clear, gt[0])
        assert env.goal_reached(), f"episode {episode}: goal {goal} not reached, at {env.pose}"
        assert min_clear > 0.05


def test_diff_drive_expert_goes_around_an_obstacle_in_the_way() -> None:
    # Start and goal on opposite sides of obstacle 2 at (0.1, -1.2): the straight line is blocked.
    expert = DiffDriveExpert()
    env = DiffDriveEnv()
    env.reset(start=np.array([0.1, -2.4, np.pi / 2]), goal=np.array([0.1, -0.3]))
    ys = []
    while env.time < 30 and not env.goal_reached():
        env.step(expert(env.pose, env.goal), 0.02)
        ys.append(env.pose[:2].copy())
        assert clearance(env.pose[:2]) > 0
    assert env.goal_reached()
    path = np.array(ys)
    assert np.max(np.abs(path[:, 0] - 0.1)) > 0.4 + 0.2  # it had to leave the straight line


def test_arm_expert_reaches_random_goals_within_limits() -> None:
    env = ArmEnv()
    expert = ArmExpert(env.model)
    rng = np.random.default_rng(7)
    for episode in range(12):
        env.reset(seed=2000 + episode)
        goal = env.sample_reachable_goal(rng, env.q)
        env.set_goal(goal)
        while env.time < 6.0 and not env.goal_reached():
            tau = expert(env.q, env.dq, goal)
            assert np.all(np.abs(tau) <= M.ARM_TAU_LIMIT + 1e-12)
            env.step(tau, 0.01)
            gt = env.ground_truth()
            assert np.all(gt[:3] > 0), f"episode {episode}: joint limit violated at {env.q}"
            assert gt[3] <= 1.0 and gt[4] == 0.0 and gt[5] < 1.0
        assert env.goal_reached(), f"episode {episode}: {env.q} vs goal {goal}"


def test_arm_expert_uses_the_model_inverse_dynamics() -> None:
    # At rest on the goal the command is exactly the gravity torque from MuJoCo.
    env = ArmEnv()
    expert = ArmExpert(env.model)
    q = np.array([0.2, 0.5, -0.4])
    env.reset(q0=q)
    np.testing.assert_allclose(expert(q, np.zeros(3), q), env.data.qfrc_bias[:3], atol=1e-12)


def test_expert_construction_errors() -> None:
    with pytest.raises(ValueError, match="v_max"):
        DiffDriveExpert(v_max=1.0)
    with pytest.raises(ValueError, match="resolution"):
        DiffDriveExpert(resolution=1.0)
    with pytest.raises(ValueError, match="dq_max"):
        ArmExpert(ArmEnv().model, dq_max=3.0)
    with pytest.raises(ValueError, match="model"):
        ArmExpert(DiffDriveEnv().model)
    with pytest.raises(ValueError, match="goal"):
        DiffDriveExpert().set_goal(np.array([np.nan, 0.0]))


def test_diff_drive_expert_leaves_the_safety_filter_almost_nothing_to_do() -> None:
    # The speed cap mirrors the filter's scan/wall rate limit, so through config/diff_drive.yaml's
    # filter (ClosedLoop, the deployed step) the expert's commands nearly always pass unchanged
    # (the filter only adds a little reverse speed when a start pivots next to an obstacle).
    from lnn_control.sim.rollout import ClosedLoop

    loop = ClosedLoop("diff_drive", CONFIG_DD, safety_filter=True)
    steps = interventions = 0
    for seed in range(700, 706):
        r = loop.run(None, seed, hold=0.0)
        assert r.reached and not r.collided, f"episode {seed}"
        assert r.min_margin > 0.1
        steps += len(r.episode.dt)
        interventions += r.interventions
    assert interventions < 0.02 * steps, f"the filter changed {interventions} of {steps} commands"


def test_diff_drive_expert_commits_to_the_side_it_faces_at_a_tie() -> None:
    # Obstacle 0 at (0.9, 0.3) lies straight between the robot and the goal: both ways round cost
    # about the same, so the heading decides (a policy sees which side of its front the obstacle is).
    expert = DiffDriveExpert()
    goal = np.array([2.0, 0.3])
    for th in (0.1, 0.3):
        assert expert(np.array([0.0, 0.3, th]), goal)[1] > 1.0
        assert expert(np.array([0.0, 0.3, -th - 0.05]), goal)[1] < -1.0
    # off the tie the map decides, whatever the heading
    for th in (-0.3, 0.3):
        assert (
            expert(np.array([0.0, 0.5, th]), goal)[1] > 0 or expert(np.array([0.0, 0.5, th]), goal)[0] > 0.1
        )


def test_diff_drive_expert_backs_out_of_the_filter_band() -> None:
    # Started 0.05 m from obstacle 0, facing it: it turns away before driving (no forward push
    # into the obstacle) and then reaches a goal on the far side without touching it.
    expert = DiffDriveExpert()
    env = DiffDriveEnv()
    start = np.array([0.9 - 0.35 - 0.2 - 0.05, 0.3, 0.0])
    goal = np.array([2.2, 0.3])
    env.reset(start=start, goal=goal)
    v0, w0 = expert(env.pose, goal)
    assert v0 < 0.05 and abs(w0) > 1.0
    while env.time < 30 and not env.goal_reached():
        env.step(expert(env.pose, goal), 0.02)
        assert clearance(env.pose[:2]) > 0.03
    assert env.goal_reached()
