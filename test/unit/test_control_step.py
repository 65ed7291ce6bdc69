"""ControlStep without ROS: the node's per-message logic on simulator message dicts, the robot
configs' real observation mappings and safety filters, and the models/ policies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from barriernet.safety_filter import SafetyFilter
from lnn_control.config import config_path, load_filter_config, load_observation_config, model_path
from lnn_control.control import ControlStep, StepSettings
from lnn_control.runtime.model_file import load_stepper
from lnn_control.sim import models as M
from lnn_control.sim import topics as T
from lnn_control.sim.arm import ArmObservation
from lnn_control.sim.diff_drive import DiffDriveObservation

DD = config_path("diff_drive")
ARM = config_path("arm")


def _ns(t: float) -> int:
    return int(round(t * 1e9))


def _odom(t: float, x: float = -1.0, v: float = 0.3) -> dict:
    o = DiffDriveObservation(t, np.array([x, 0.5, 0.1]), np.array([v, 0.0]), np.full(M.SCAN_BEAMS, 2.0))
    return T.odometry(o, _ns(t))


def _scan(t: float) -> dict:
    rng = np.random.default_rng(0)
    ranges = rng.uniform(0.6, 4.0, M.SCAN_BEAMS)
    return T.laser_scan(DiffDriveObservation(t, np.zeros(3), np.zeros(2), ranges), _ns(t), 0.1)


def _dd(**kw: object) -> ControlStep:
    return ControlStep.from_files(DD, model_path("diff_drive"), **kw)  # type: ignore[arg-type]


def _start(core: ControlStep, t: float = 1.0) -> None:
    """Activation at t, a goal and a scan, then the first odometry (the trigger) at t."""
    core.reset(t)
    core.receive("/goal_pose", T.pose_stamped(2.0, 1.5, 0), t)
    core.receive("/scan", _scan(t), t)
    core.receive("/odom", _odom(t), t)


def _feed_step(core: ControlStep, t: float, **odom: float):  # type: ignore[no-untyped-def]
    st = core.receive("/odom", _odom(t, **odom), t)
    return core.step(t, st)


def test_normal_step_is_the_policy_through_the_filter_inside_the_box() -> None:
    core = _dd()
    _start(core)
    out = core.step(1.0, 1.0)
    assert out is not None and not out.fallback and out.status is None and out.reason is None
    filt = core.safety_filter
    assert out.command is not None and out.command.shape == (2,)
    assert np.all(out.command >= filt.lower - 1e-9) and np.all(out.command <= filt.upper + 1e-9)
    # reference: the same policy file, mapping and filter run by hand (first step: default_dt)
    obs = load_observation_config(DD)
    obs.update("/goal_pose", T.pose_stamped(2.0, 1.5, 0))
    obs.update("/scan", _scan(1.0))
    obs.update("/odom", _odom(1.0))
    stepper = load_stepper(model_path("diff_drive"))
    y = stepper.step(obs.observation(), core.settings.default_dt)
    u, report = SafetyFilter.from_config(load_filter_config(DD)).filter(obs.state(), y[:2], env=obs.env())
    assert out.nominal is not None
    np.testing.assert_allclose(out.nominal, y[:2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.command, u, rtol=0, atol=1e-9)
    assert out.report.status == report.status
    assert core.counters["steps"] == 1 and core.counters["commands"] == 1 and core.counters["fallbacks"] == 0
    assert core.command_names == ("v", "omega")


def test_nan_field_gives_the_fallback_with_the_reason() -> None:
    core = _dd()
    _start(core)
    assert core.step(1.0, 1.0) is not None
    out = _feed_step(core, 1.02, v=math.nan)
    assert out is not None and out.fallback and out.status == "invalid_input"
    assert out.reason is not None and out.reason.startswith("non_finite")
    assert out.nominal is None  # the policy did not run
    expected, _ = core.safety_filter.fallback(np.array([-1.0, 0.5, 0.1]), "check")
    np.testing.assert_array_equal(out.command, expected)
    assert core.counters["non_finite"] == 1 and core.counters["fallbacks"] == 1
    assert core.last_reason == out.reason


def test_out_of_order_stamp_is_dropped_and_the_next_step_falls_back() -> None:
    core = _dd()
    _start(core)
    assert not core.step(1.0, 1.0).fallback  # type: ignore[union-attr]
    out = _feed_step(core, 0.98)  # back in time within sensor_timeout
    assert out is not None and out.status == "invalid_input" and "out_of_order" in str(out.reason)
    assert core.counters["out_of_order"] == 1
    # an equal stamp on the trigger topic is out of order too (it would give dt = 0)
    st = core.receive("/odom", _odom(1.0), 1.01)
    assert core.step(1.01, st).status == "invalid_input"  # type: ignore[union-attr]
    out = _feed_step(core, 1.02)
    assert out is not None and not out.fallback  # the fault was one-shot


def test_stale_topic_gives_stale_input() -> None:
    core = _dd()
    _start(core, 1.0)
    timeout = core.settings.sensor_timeout
    assert not core.step(1.0, 1.0).fallback  # type: ignore[union-attr]
    for t in np.arange(1.02, 1.0 + timeout, 0.02):  # no scan after t = 1.0
        out = _feed_step(core, float(t))
        assert out is not None and not out.fallback
    out = _feed_step(core, 1.0 + timeout + 0.05)
    assert out is not None and out.status == "stale_input" and str(out.reason).startswith("/scan stale")
    assert core.counters["stale"] == 1
    # the goal is exempt (sent once): a fresh scan ends the fallback although the goal is old
    core.receive("/scan", _scan(1.4), 1.4)
    out = _feed_step(core, 1.4)
    assert out is not None and not out.fallback


class _FailsOnce:
    """The real policy, but its next step raises ValueError once (fault injection: the real
    stepper only raises on a malformed input, which the mapping never gives)."""

    def __init__(self, stepper: object) -> None:
        self._s = stepper
        self.fail = False
        self.n_inputs = stepper.n_inputs  # type: ignore[attr-defined]

    def step(self, o: np.ndarray, dt: float) -> np.ndarray:
        if self.fail:
            self.fail = False
            raise ValueError("bad input")
        return self._s.step(o, dt)  # type: ignore[attr-defined,no-any-return]

    def reset(self) -> None:
        self._s.reset()  # type: ignore[attr-defined]


def test_policy_value_error_falls_back() -> None:
    stepper = _FailsOnce(load_stepper(model_path("diff_drive")))
    obs = load_observation_config(DD)
    filt = SafetyFilter.from_config(load_filter_config(DD))
    core = ControlStep(obs, stepper, filt, StepSettings(sensor_timeout=0.25, dt_topic="/odom"))
    _start(core)
    assert not core.step(1.0, 1.0).fallback  # type: ignore[union-attr]
    stepper.fail = True
    out = _feed_step(core, 1.02)
    assert out is not None and out.status == "invalid_input" and out.reason == "policy: bad input"
    assert core.counters["policy_error"] == 1
    out = _feed_step(core, 1.04)
    assert out is not None and not out.fallback


def test_not_ready_gives_none_then_stale_after_the_timeout() -> None:
    core = _dd()
    core.reset(0.0)
    core.receive("/odom", _odom(0.01), 0.01)
    assert core.step(0.01, 0.01) is None  # goal and scan not seen yet, inside sensor_timeout
    assert core.counters["commands"] == 0
    out = _feed_step(core, 0.3)
    assert out is not None and out.status == "stale_input" and "since activation" in str(out.reason)


def test_watchdog_falls_back_only_without_steps() -> None:
    core = _dd()
    _start(core)
    core.step(1.0, 1.0)
    timeout = core.settings.sensor_timeout
    assert core.watchdog(1.0 + 0.5 * timeout) is None
    out = core.watchdog(1.0 + timeout + 0.01)
    assert out is not None and out.status == "stale_input" and out.command is not None
    assert core.counters["stale"] == 1


def test_deactivation_fallback() -> None:
    core = _dd()
    _start(core)
    core.step(1.0, 1.0)
    out = core.fallback("deactivated", "inactive")
    assert out.status == "inactive" and out.reason == "deactivated" and out.fallback
    np.testing.assert_array_equal(out.command, np.zeros(2))  # diff_drive: fallback type zero


def test_replace_filter_takes_effect_at_the_next_step() -> None:
    core = _dd()
    _start(core)
    old = core.safety_filter
    cfg = load_filter_config(DD)
    cfg["controls"] = {**cfg["controls"], "lower": [-0.01, -0.02], "upper": [0.01, 0.02]}
    new = SafetyFilter.from_config(cfg)
    core.replace_filter(new)
    assert core.safety_filter is old  # not inside a step
    out = core.step(1.0, 1.0)
    assert core.safety_filter is new
    assert out is not None and out.command is not None
    assert np.all(np.abs(out.command) <= [0.01 + 1e-9, 0.02 + 1e-9])
    arm_filter = SafetyFilter.from_config(load_filter_config(ARM))
    with pytest.raises(ValueError, match="3 controls, but the command has 2 fields"):
        core.replace_filter(arm_filter)
    assert core.safety_filter is new


def test_from_files_without_barriers_only_clips_to_the_box() -> None:
    core = _dd(filter_enabled=False)
    _start(core)
    out = core.step(1.0, 1.0)
    assert out is not None and out.command is not None and out.nominal is not None
    filt = core.safety_filter
    np.testing.assert_allclose(out.command, np.clip(out.nominal, filt.lower, filt.upper), atol=1e-9)
    assert len(out.report.constraint_names) == 0


def test_barriernet_gain_names_must_match_the_filter() -> None:
    core = _dd(filter_enabled=True)
    bnet = load_stepper(model_path("diff_drive_barriernet"))
    cfg = load_filter_config(DD)
    cfg["barriers"] = cfg["barriers"][:2]
    with pytest.raises(ValueError, match="class-K gains"):
        ControlStep(load_observation_config(DD), bnet, SafetyFilter.from_config(cfg))
    ok = ControlStep(load_observation_config(DD), bnet, SafetyFilter.from_config(load_filter_config(DD)))
    with pytest.raises(ValueError, match="class-K gains"):
        ok.replace_filter(SafetyFilter.from_config(cfg))
    assert core.n_controls == 2


def test_wrong_model_for_the_mapping_names_the_fix() -> None:
    with pytest.raises(ValueError, match="inputs but the observation mapping gives 12"):
        ControlStep(
            load_observation_config(DD),
            load_stepper(model_path("arm")),
            SafetyFilter.from_config(load_filter_config(DD)),
        )
    with pytest.raises(ValueError, match="sensor_timeout"):
        StepSettings(sensor_timeout=0.0)


def _joints(t: float, q: list[float]) -> dict:
    o = ArmObservation(t, np.array(q), np.array([0.0, 0.1, -0.1]), np.zeros(3))
    return T.joint_state(o, _ns(t))


def test_arm_fallback_at_the_last_good_state_when_the_state_is_bad() -> None:
    core = ControlStep.from_files(ARM, model_path("arm"))
    goal = {"header": T.header(0, ""), "name": [], "position": [0.3, 0.2, -0.1], "velocity": [], "effort": []}
    core.reset(1.0)
    core.receive("/goal_joints", goal, 1.0)
    q_good = [0.1, 0.4, -0.3]
    st = core.receive("/joint_states", _joints(1.0, q_good), 1.0)
    out = core.step(1.0, st)
    assert out is not None and not out.fallback and out.command is not None
    filt = core.safety_filter
    assert np.all(out.command >= filt.lower - 1e-9) and np.all(out.command <= filt.upper + 1e-9)
    st = core.receive("/joint_states", _joints(1.002, [math.nan, 0.4, -0.3]), 1.002)
    out = core.step(1.002, st)
    assert out is not None and out.status == "invalid_input"
    assert "(fallback at the last good state)" in str(out.reason)
    expected, _ = filt.fallback(np.array([*q_good, 0.0, 0.1, -0.1]), "check")  # gravity compensation
    assert out.command is not None
    np.testing.assert_allclose(out.command, expected, rtol=0, atol=1e-12)
    assert np.any(np.abs(expected) > 1e-3)
