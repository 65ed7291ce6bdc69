"""lnn_controller's step as the benchmark drives it (subscription callbacks called in this process,
outputs read back over real DDS): reused output messages, telemetry decimation (status_every_n)."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Iterator
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
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import LaserScan  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from lnn_control.ros.controller_node import LnnController  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "diff_drive.yaml"


class Direct:
    """The node with its callbacks called directly, and a reader node collecting every output."""

    def __init__(self, model: pathlib.Path, **params: Any) -> None:
        self.ctx = Context()
        args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_file:={model}"]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        rclpy.init(context=self.ctx, args=args)
        self.node = LnnController(context=self.ctx)
        self.reader = rclpy.create_node("reader", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.reader)  # the node itself is not spun: its callbacks are called below
        rel = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.cmds: list[Twist] = []
        self.status: list[SafetyStatus] = []
        self.nominal: list[list[float]] = []
        self.reader.create_subscription(Twist, "/cmd_vel", self.cmds.append, rel)
        sub = self.reader.create_subscription
        sub(SafetyStatus, "/lnn_controller/safety_status", self.status.append, rel)
        nominal = self.nominal
        sub(Float64MultiArray, "/lnn_controller/nominal_command", lambda m: nominal.append(list(m.data)), rel)
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS, self.node.last_reason
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        pubs = [self.node._pubs[k] for k in ("command", "nominal", "status")]
        assert self.spin_until(lambda: min(p.get_subscription_count() for p in pubs) > 0, 10.0)
        self.k = 0
        goal = PoseStamped()
        goal.pose.position.x, goal.pose.position.y = 2.0, 1.5
        self.node.callbacks["/goal_pose"](goal)
        self.node.callbacks["/scan"](self.scan())

    def spin_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        return ros_rig.spin_until(lambda: self.ex.spin_once(timeout_sec=0.005), cond, timeout)

    def scan(self) -> LaserScan:
        s = LaserScan()
        s.header.stamp.sec, s.header.stamp.nanosec = 100 + self.k // 100, (self.k % 100) * 10_000_000
        s.angle_min, s.angle_increment = 0.0, 2 * math.pi / 72
        s.range_min, s.range_max = 0.05, 4.0
        s.ranges = [1.5 + 0.5 * math.sin(3 * i / 72) for i in range(72)]
        return s

    def step(self, v: float = 0.2) -> Odometry:
        """One odometry message (the trigger), 10 ms after the previous one."""
        self.k += 1
        o = Odometry()
        o.header.stamp.sec, o.header.stamp.nanosec = 100 + self.k // 100, (self.k % 100) * 10_000_000
        o.pose.pose.position.x, o.pose.pose.position.y = -1.0 + 0.001 * self.k, 0.5
        o.pose.pose.orientation.w = 1.0
        o.twist.twist.linear.x = v
        self.node.callbacks["/odom"](o)
        return o

    def collect(self, n_cmds: int, n_status: int) -> None:
        ok = self.spin_until(lambda: len(self.cmds) >= n_cmds and len(self.status) >= n_status, 5.0)
        self.spin_until(lambda: False, 0.05)  # anything extra arrives too (and fails the counts)
        assert ok, f"got {len(self.cmds)} commands / {len(self.status)} statuses"

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        self.reader.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def direct(model: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[Direct]:
    d = Direct(model, **getattr(request, "param", {}))
    try:
        yield d
    finally:
        d.close()


def test_every_command_has_its_status_with_the_trigger_stamp(direct: Direct) -> None:
    odoms = [direct.step(v=0.1 + 0.01 * i) for i in range(15)]
    direct.collect(15, 15)
    assert len(direct.cmds) == len(direct.status) == len(direct.nominal) == 15
    for o, cmd, st, nom in zip(odoms, direct.cmds, direct.status, direct.nominal):
        assert st.header.stamp == o.header.stamp and st.header.frame_id == "base_link"
        assert list(st.safe_command) == [cmd.linear.x, cmd.angular.z]
        assert list(st.nominal_command) == nom and list(st.command_names) == ["v", "omega"]
        assert len(st.constraint_names) == len(st.barrier_values) == len(st.active) == 20
        assert st.solver_status == SafetyStatus.STATUS_OPTIMAL and not st.fallback_used
        assert -0.6 <= cmd.linear.x <= 0.6 and -2.0 <= cmd.angular.z <= 2.0
    # the policy's outputs change from step to step: a reused message must not repeat an old one
    assert len({tuple(n) for n in direct.nominal}) == 15


@pytest.mark.parametrize("direct", [{"status_every_n": 4}], indirect=True)
def test_status_every_n_decimates_filtered_steps_but_never_fallbacks(direct: Direct) -> None:
    for _ in range(9):
        direct.step()
    direct.collect(9, 3)  # commands 1, 5, 9 carry telemetry
    assert (len(direct.cmds), len(direct.status), len(direct.nominal)) == (9, 3, 3)
    direct.step(v=float("nan"))  # bad odometry: the fallback, always reported
    direct.collect(10, 4)
    fb = direct.status[-1]
    assert fb.fallback_used and fb.solver_status == SafetyStatus.STATUS_INVALID_INPUT
    assert "non_finite" in fb.fallback_reason and list(fb.safe_command) == [0.0, 0.0]
    direct.step()  # the first filtered command after a fallback is reported at once
    direct.collect(11, 5)
    assert not direct.status[-1].fallback_used
    for _ in range(3):
        direct.step()
    direct.collect(14, 5)
    assert len(direct.status) == 5  # three filtered commands without telemetry
    direct.step()
    direct.collect(15, 6)
    # live change back to every command
    res = direct.node.set_parameters([Parameter("status_every_n", Parameter.Type.INTEGER, 1)])
    assert res[0].successful
    for _ in range(3):
        direct.step()
    direct.collect(18, 9)
    assert (len(direct.cmds), len(direct.status)) == (18, 9)
    bad = direct.node.set_parameters([Parameter("status_every_n", Parameter.Type.INTEGER, 0)])
    assert not bad[0].successful  # outside 1..1000: rejected by the declared range
    np.testing.assert_array_equal(
        [c.linear.x for c in direct.cmds[-3:]], [s.safe_command[0] for s in direct.status[-3:]]
    )


@pytest.mark.parametrize("direct", [{}, {"use_sim_time": "true"}], indirect=True)
def test_node_time_is_the_ros_clock(direct: Direct) -> None:
    """The step reads the system clock directly unless sim time drives the ROS clock."""
    node = direct.node
    clock_now = node.get_clock().now().nanoseconds * 1e-9
    if node.get_parameter("use_sim_time").value:
        assert clock_now == 0.0 and node._now() == 0.0  # no /clock yet: sim time stands at zero
        node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, False)])
        clock_now = node.get_clock().now().nanoseconds * 1e-9
    assert abs(node._now() - clock_now) < 0.05 and clock_now > 1e9
    node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, True)])  # live switch
    assert node._now() == node.get_clock().now().nanoseconds * 1e-9 == 0.0
