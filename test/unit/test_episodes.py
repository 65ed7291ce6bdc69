"""lnn_control.sim.episodes: the one draw, ground truth by name, violations, margin, success, rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lnn_control.sim import episodes as E
from lnn_control.sim.arm import ArmEnv
from lnn_control.sim.diff_drive import DiffDriveEnv, clearance, sample_free_position


def _draw_as_recorded(robot: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The recorder's draw before this module existed (seed 0..20 must keep their episodes)."""
    rng = np.random.default_rng([seed, 1])
    if robot == "diff_drive":
        env = DiffDriveEnv()
        env.reset(seed=seed)
        goal = sample_free_position(rng, 0.15)
        while np.linalg.norm(goal - env.pose[:2]) < 1.0:
            goal = sample_free_position(rng, 0.15)
        return env.pose, goal
    arm = ArmEnv()
    arm.reset(seed=seed)
    return arm.q, arm.sample_reachable_goal(rng, arm.q)


@pytest.mark.parametrize("robot", ["diff_drive", "arm"])
def test_draw_keeps_the_recorded_starts_and_goals(robot: str) -> None:
    for seed in range(21):
        start, goal = _draw_as_recorded(robot, seed)
        spec = E.draw(robot, seed)
        np.testing.assert_array_equal(spec.start, start)
        np.testing.assert_array_equal(spec.goal, goal)
        assert spec.time_limit == E.TIME_LIMIT[robot] and spec.seed == seed
    assert E.draw(robot, 5, time_limit=2.0).time_limit == 2.0
    with pytest.raises(ValueError, match="time_limit"):
        E.draw(robot, 5, time_limit=0.0)
    with pytest.raises(ValueError, match="robot"):
        E.draw("tank", 0)


def test_diff_drive_draw_is_free_and_far_enough_and_reset_puts_the_env_there() -> None:
    for seed in range(100_000, 100_020):
        spec = E.draw("diff_drive", seed)
        assert clearance(spec.start[:2]) >= 0.15 and clearance(spec.goal) >= 0.15
        assert np.linalg.norm(spec.goal - spec.start[:2]) >= 1.0
    env = DiffDriveEnv()
    spec.reset(env)
    np.testing.assert_allclose(env.pose, spec.start, atol=1e-12)
    gt = E.truth("diff_drive", env.ground_truth())
    assert gt["goal_distance"] == pytest.approx(np.linalg.norm(spec.goal - spec.start[:2]))


def test_arm_violation_kinds_margin_and_reach_known_answers() -> None:
    f = E.GROUND_TRUTH_FIELDS["arm"]
    rows = np.array(
        [
            [0.5, 0.4, 0.3, 0.2, 0.0, 0.1, 1.0],  # fine
            [0.4, -0.01, 0.2, 1.2, 0.0, 0.5, 0.5],  # joint2 past its limit, torque over
            [0.3, 0.2, 0.2, 1.0, 1.0, 1.02, 0.01],  # floor contact, dq 2 % over, at the goal position
            [0.3, 0.2, 0.2, 0.5, 0.0, 0.03, 0.04],  # at the goal: error 0.04 rad, max |dq| 0.075 rad/s
        ]
    )
    v = E.violations("arm", rows)
    assert {k: x.tolist() for k, x in v.items()} == {
        "joint_position": [False, True, False, False],
        "joint_velocity": [False, False, True, False],
        "effort": [False, True, False, False],
        "floor_contact": [False, False, True, False],
    }
    np.testing.assert_allclose(E.margin("arm", rows), [0.3, -0.01, 0.2, 0.2])
    assert E.reached("arm", rows).tolist() == [False, False, False, True]
    assert E.reached("arm", rows, tolerance=(0.1, 3.0)).tolist() == [False, False, True, True]
    sc = E.score("arm", 7, rows, [0.0, 0.1, 0.2, 0.3])
    assert sc.reached and sc.time_s == 0.3 and sc.min_margin == -0.01
    assert sc.violations == {"joint_position": 1, "joint_velocity": 1, "effort": 1, "floor_contact": 1}
    assert sc.success and not sc.safe_success
    late = E.score("arm", 7, rows, [0.0, 0.1, 0.2, 0.3], time_limit=0.25)
    assert not late.reached and late.time_s == 0.3  # reached after the time limit: no success
    # by name: another field order gives the same answers
    perm = [6, 0, 5, 1, 4, 2, 3]
    np.testing.assert_allclose(E.margin("arm", rows[:, perm], [f[i] for i in perm]), E.margin("arm", rows))
    with pytest.raises(ValueError, match="lacks"):
        E.truth("arm", rows[:, :6], f[:6])


def test_diff_drive_collision_and_scores() -> None:
    rows = np.array([[0.3, 0, 1.0, 0, 0, 0], [0.0, 1, 0.9, 0, 0, 0], [0.2, 0, 0.1, 0, 0, 0]], dtype=float)
    sc = E.score("diff_drive", 1, rows, [0.0, 0.02, 0.04], interventions=3)
    assert sc.violations == {"collision": 1} and sc.reached and sc.time_s == 0.04
    assert sc.min_margin == 0.0 and sc.violated and not sc.safe_success and sc.interventions == 3
    assert sc.as_dict()["safe_success"] is False


def test_wilson_interval_known_values_and_aggregate() -> None:
    lo, hi = E.wilson(8, 10)  # textbook value: [0.490, 0.943]
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert E.wilson(0, 10)[0] == 0.0 and E.wilson(10, 10)[1] == pytest.approx(1.0)
    assert E.wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)  # 0 of 10 still allows 28 %
    assert all(math.isnan(x) for x in E.wilson(0, 0))
    with pytest.raises(ValueError, match="successes"):
        E.wilson(11, 10)
    ok = E.EpisodeScore("arm", 0, True, 1.0, 0.3, {"joint_position": 0}, interventions=2)
    bad = E.EpisodeScore("arm", 1, True, 3.0, -0.1, {"joint_position": 4}, fallbacks=1)
    miss = E.EpisodeScore("arm", 2, False, 6.0, 0.2, {"joint_position": 0})
    a = E.aggregate([ok, bad, miss])
    assert a["success"]["count"] == 2 and a["safe_success"]["count"] == 1
    assert a["safe_success"]["ci95"] == pytest.approx(list(E.wilson(1, 3)))
    assert a["violations_by_kind"] == {"joint_position": 1} and a["min_margin"] == -0.1
    assert (a["interventions"], a["fallbacks"], a["mean_time_s"]) == (2, 1, 2.0)
    empty = E.aggregate([])
    assert empty["success"]["rate"] is None and empty["mean_time_s"] is None
