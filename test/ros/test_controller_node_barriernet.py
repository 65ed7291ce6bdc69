"""lnn_controller with a BarrierNet policy: its gain outputs reach the safety filter as its class-K gains.

The node runs in process (its callbacks called directly, real rclpy publishers); a mirror
ObservationMap + PolicyStepper fed the same messages gives the policy's [u_nom, gains] at each
step, and SafetyFilter.filter with those gains must give the published safe command.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("barriernet.safety_filter")

import ros_rig  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from lnn_control.msg import SafetyStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import LaserScan  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from barriernet.safety_filter import SafetyFilter  # noqa: E402
from lnn_control.config import load_filter_config, load_observation_config  # noqa: E402
from lnn_control.ros.controller_node import LnnController  # noqa: E402
from lnn_control.runtime.model_file import load_stepper  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "diff_drive.yaml"


def _model(path: pathlib.Path, gain_names: list[str]) -> pathlib.Path:
    import torch

    from lnn_control.nn.policy import LiquidPolicy
    from lnn_control.nn.wiring import AutoNCP
    from lnn_control.runtime.model_file import save_policy

    torch.manual_seed(0)
    policy = LiquidPolicy(12, "cfc", AutoNCP(19, 7, seed=0), n_gains=5, gain_scale=0.5, gain_names=gain_names)
    policy.set_normalization(np.zeros(12), np.ones(12), np.array([0.5, 0.0]), np.array([0.2, 0.5]))
    save_policy(path, policy.double())
    return path


def _scan(k: int) -> LaserScan:
    s = LaserScan()
    s.header.stamp.sec, s.header.stamp.nanosec = 100 + k // 100, (k % 100) * 10_000_000
    s.angle_min, s.angle_increment = 0.0, 2 * math.pi / 72
    s.range_min, s.range_max = 0.05, 4.0
    s.ranges = [0.45 + 0.3 * abs(math.sin(i / 72 * math.pi)) for i in range(72)]  # an obstacle ahead
    return s


def _odom(k: int) -> Odometry:
    o = Odometry()
    o.header.stamp.sec, o.header.stamp.nanosec = 100 + k // 100, (k % 100) * 10_000_000
    o.pose.pose.position.x, o.pose.pose.position.y = -1.0 + 0.002 * k, 0.5
    o.pose.pose.orientation.w = 1.0
    o.twist.twist.linear.x = 0.3
    return o


class Direct:
    def __init__(self, model: pathlib.Path) -> None:
        self.ctx = Context()
        args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_file:={model}"]
        rclpy.init(context=self.ctx, args=args)
        self.node = LnnController(context=self.ctx)
        self.reader = rclpy.create_node("reader", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.reader)
        rel = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.cmds: list[Twist] = []
        self.status: list[SafetyStatus] = []
        self.nominal: list[list[float]] = []
        sub = self.reader.create_subscription
        sub(Twist, "/cmd_vel", self.cmds.append, rel)
        sub(SafetyStatus, "/lnn_controller/safety_status", self.status.append, rel)
        nominal = self.nominal
        sub(Float64MultiArray, "/lnn_controller/nominal_command", lambda m: nominal.append(list(m.data)), rel)

    def spin_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        return ros_rig.spin_until(lambda: self.ex.spin_once(timeout_sec=0.005), cond, timeout)

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        self.reader.destroy_node()
        rclpy.shutdown(context=self.ctx)


def test_policy_gains_reach_the_filter(tmp_path: pathlib.Path) -> None:
    filt = SafetyFilter.from_config(load_filter_config(CONFIG))
    model = _model(tmp_path / "bn.npz", list(filt.gain_names))
    d = Direct(model)
    try:
        assert d.node.trigger_configure() == TransitionCallbackReturn.SUCCESS, d.node.last_reason
        assert d.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        pubs = [d.node._pubs[k] for k in ("command", "nominal", "status")]
        assert d.spin_until(lambda: min(p.get_subscription_count() for p in pubs) > 0, 10.0)
        mirror, stepper = load_observation_config(CONFIG), load_stepper(model)
        goal = PoseStamped()
        goal.pose.position.x, goal.pose.position.y = 2.0, 0.5
        d.node.callbacks["/goal_pose"](goal)
        mirror.update("/goal_pose", goal)
        expected: list[tuple[np.ndarray, np.ndarray, Any]] = []
        n = 12
        for k in range(1, n + 1):
            scan, odom = _scan(k), _odom(k)
            d.node.callbacks["/scan"](scan)
            mirror.update("/scan", scan)
            mirror.update("/odom", odom)
            d.node.callbacks["/odom"](odom)  # the trigger
            y = stepper.step(mirror.observation(), 0.02 if k == 1 else 0.01)  # default_dt, then stamps
            expected.append((mirror.state(), y, mirror.env()))
        assert d.spin_until(lambda: len(d.cmds) >= n and len(d.status) >= n, 5.0)
        moved = 0
        for (x, y, env), cmd, st, nom in zip(expected, d.cmds, d.status, d.nominal):
            assert np.all(y[2:] > 0) and np.all(y[2:] < 0.5)
            np.testing.assert_allclose(nom, y[:2], atol=1e-9)
            u, rep = filt.filter(x, y[:2], gains=y[2:], env=env)
            assert not rep.fallback_used and str(st.solver_status) != ""
            np.testing.assert_allclose([cmd.linear.x, cmd.angular.z], u, atol=1e-9)
            u_yaml, _ = filt.filter(x, y[:2], env=env)  # the YAML's k = 1: another command
            moved += int(np.abs(u_yaml - u).max() > 1e-6)
        assert moved >= n // 2  # the learned gains (< 0.5) changed the command: they were used
    finally:
        d.close()


def test_gain_names_not_the_filters_fail_configure(tmp_path: pathlib.Path) -> None:
    filt = SafetyFilter.from_config(load_filter_config(CONFIG))
    names = list(filt.gain_names)
    model = _model(tmp_path / "swapped.npz", [names[1], names[0], *names[2:]])
    d = Direct(model)
    try:
        assert d.node.trigger_configure() != TransitionCallbackReturn.SUCCESS
        assert "class-K gains" in d.node.last_reason and names[0] in d.node.last_reason
    finally:
        d.close()
