"""lnn_control.sim.rollout: ClosedLoop through the deployed ControlStep under seeded conditions,
and ``lnn-control evaluate`` on the shipped models."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from lnn_control.analysis import evaluate as EV
from lnn_control.sim import episodes as E
from lnn_control.sim.rollout import ClosedLoop, Condition, condition

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"


class _Logged:
    """A policy that sends a fixed command and logs the dt the control step gives it."""

    def __init__(self, u: np.ndarray) -> None:
        self.u = u
        self.dts: list[float] = []

    def reset(self) -> None:
        self.dts = []

    def step(self, obs: np.ndarray, dt: float) -> np.ndarray:
        self.dts.append(dt)
        return self.u


def test_conditions_are_checked_data() -> None:
    assert condition("noise", "arm").noise_std == 0.02 and condition("noise", "diff_drive").noise_std == 0.03
    assert condition("drop", "arm", filter=False) == Condition(drop_prob=0.3, filter=False)
    assert condition("irregular", "arm").period_scale == (0.5, 2.0)
    with pytest.raises(ValueError, match="condition 'rain'"):
        condition("rain", "arm")
    with pytest.raises(ValueError, match="drop_prob"):
        Condition(drop_prob=1.0)
    with pytest.raises(ValueError, match="period_scale"):
        Condition(period_scale=(2.0, 1.0))
    with pytest.raises(ValueError, match="noise_std"):
        Condition(noise_std=-0.1)


def test_irregular_periods_reach_the_cell_as_true_dt() -> None:
    """Control periods drawn in [0.5, 2] x 10 ms on the 2 ms physics grid; the cell gets the stamp
    differences (its first step the node's default_dt), and the same seed gives the same run."""
    loop = ClosedLoop("arm", CONFIG / "arm.yaml", condition=condition("irregular", "arm"))
    pol = _Logged(np.zeros(3))
    res = loop.run(pol, seed=3, max_time=0.5)
    gaps = np.diff(res.t)
    assert gaps.min() >= 0.004 - 1e-12 and gaps.max() <= 0.02 + 1e-12 and np.ptp(gaps) > 0.005
    np.testing.assert_allclose(np.round(gaps / 0.002), gaps / 0.002, atol=1e-9)
    np.testing.assert_allclose(pol.dts[1:], gaps[: len(pol.dts) - 1], rtol=1e-9)
    assert pol.dts[0] == loop.settings.default_dt
    again = loop.run(_Logged(np.zeros(3)), seed=3, max_time=0.5)
    np.testing.assert_array_equal(again.t, res.t)
    np.testing.assert_array_equal(again.ground_truth, res.ground_truth)


def test_dropped_triggers_hold_the_last_command_and_are_counted() -> None:
    """30 % of /joint_states lost: no step in those periods (the command is held), fewer policy
    steps than ticks, and each held period counted."""
    loop = ClosedLoop("arm", CONFIG / "arm.yaml", condition=condition("drop", "arm"))
    pol = _Logged(np.zeros(3))
    res = loop.run(pol, seed=4, max_time=1.0)
    ticks = len(res.t) - 1  # the last tick ends the episode without a step
    assert 0.15 * ticks < res.score.held < 0.45 * ticks
    assert len(pol.dts) + res.score.held == ticks
    assert len(res.episode.dt) < len(res.t)  # rows only where the policy got its trigger
    clean = ClosedLoop("arm", CONFIG / "arm.yaml").run(_Logged(np.zeros(3)), seed=4, max_time=1.0)
    assert clean.score.held == 0 and len(clean.episode.dt) == len(clean.t)


def test_noise_is_seeded_per_episode_and_filter_state_only_when_asked() -> None:
    loop = ClosedLoop("diff_drive", CONFIG / "diff_drive.yaml", condition=condition("noise", "diff_drive"))
    a = loop.run(None, seed=7, max_time=0.5)
    b = loop.run(None, seed=7, max_time=0.5)
    c = loop.run(None, seed=8, max_time=0.5)
    np.testing.assert_array_equal(a.episode.obs, b.episode.obs)
    assert a.episode.obs.shape != c.episode.obs.shape or not np.allclose(a.episode.obs, c.episode.obs)
    assert a.episode.state is None
    d = loop.run(None, seed=7, max_time=0.5, record_filter=True)
    assert d.episode.state is not None and d.episode.state.shape == (len(d.episode.dt), 3)
    assert d.start.tolist() == E.draw("diff_drive", 7).start.tolist()


def test_filter_off_keeps_only_the_actuator_box() -> None:
    """An arm policy asking 2x the torque limits: the box clips it with the filter on or off (never
    an effort violation); the joint-limit barrier acts only with the filter on."""
    big = _Logged(2.0 * np.array([20.0, 14.0, 6.0]))
    off = ClosedLoop("arm", CONFIG / "arm.yaml", condition=Condition(filter=False))
    on = ClosedLoop("arm", CONFIG / "arm.yaml", condition=Condition(filter=True))
    r_off = off.run(big, seed=2, max_time=1.5, stop_after_collision=math.inf)
    r_on = on.run(big, seed=2, max_time=1.5, stop_after_collision=math.inf)
    assert r_off.score.violations["effort"] == 0 and r_on.score.violations["effort"] == 0
    assert r_off.score.violations["joint_position"] + r_off.score.violations["joint_velocity"] > 0
    assert r_on.score.violations["joint_position"] == 0 and r_on.interventions > 0
    assert r_off.interventions == len(r_off.t) - 1  # the box clips every command: counted as such


@pytest.mark.parametrize("robot", ["arm", "diff_drive"])
def test_evaluate_shipped_model_json_is_strict(robot: str, capsys) -> None:
    model = ROOT / "models" / f"{robot}.npz"
    rc = EV.main(
        [str(model), "--robot", robot, "--episodes", "2", "--seed", "100000", "--json", "--no-progress"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    res = json.loads(text, parse_constant=lambda t: pytest.fail(f"{t} in strict JSON"))
    clean = res["conditions"]["clean"]
    assert clean["episodes"] == 2 and len(clean["per_episode"]) == 2
    lo, hi = clean["success"]["ci95"]
    assert 0.0 <= lo <= clean["success"]["rate"] <= hi <= 1.0
    assert set(clean["violations_by_kind"]) == set(E.VIOLATION_KINDS[robot])
    assert res["filter"] == "on" and res["seeds"] == [100000, 100001]
    assert EV.main([str(model), "--robot", robot, "--episodes", "0", "--no-progress"]) == 2
    assert "episodes" in capsys.readouterr().err


def test_evaluate_table_and_missing_model(tmp_path, capsys) -> None:
    res = EV.evaluate(
        ROOT / "models" / "arm.npz", "arm", 1, 100_000, filter=False, conditions=["clean", "drop"]
    )
    text = EV.table(res)
    assert "| clean | 1 |" in text and "| drop | 1 |" in text and "filter off" in text
    assert EV.main([str(tmp_path / "none.npz"), "--robot", "arm"]) == 2
    assert "not found" in capsys.readouterr().err
