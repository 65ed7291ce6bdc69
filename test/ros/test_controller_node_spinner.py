"""InputFirstSpinner (``executor: inputs``, the node's default spin): input messages taken straight
from the wait set, while lifecycle / parameter services, the watchdog and diagnostics timers still
run through the executor. Real rclpy and DDS in one process; the node is spun only by the spinner."""

from __future__ import annotations

import functools
import math
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("barriernet.safety_filter")

import ros_rig  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from lnn_control.msg import SafetyStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import LaserScan  # noqa: E402

from lnn_control.ros.controller_node import InputFirstSpinner, LnnController  # noqa: E402
from lnn_control.ros.service_calls import wait_lifecycle_ready  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "diff_drive.yaml"


class Rig:
    """lnn_controller spun by InputFirstSpinner; a peer node (own executor, same thread) that
    publishes sensors, calls the node's services and reads every output."""

    def __init__(self, model: pathlib.Path) -> None:
        self.ctx = Context()
        args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_file:={model}"]
        for k, v in (
            ("observation.command.type", "geometry_msgs/msg/TwistStamped"),
            ("observation.command.fields", "[twist.linear.x, twist.angular.z]"),
            ("diagnostics_rate", "20.0"),
            ("sensor_timeout", "0.3"),
        ):
            args += ["-p", f"{k}:={v}"]
        rclpy.init(context=self.ctx, args=args)
        self.node = LnnController(context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        n = self.node
        self.spinner = InputFirstSpinner(n, self.ex, lambda: n.input_subscriptions, lambda: n.control_timers)
        self.peer = rclpy.create_node("peer", context=self.ctx)
        self.peer_ex = SingleThreadedExecutor(context=self.ctx)
        self.peer_ex.add_node(self.peer)
        rel = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.cmds: list[TwistStamped] = []
        self.status: list[SafetyStatus] = []
        self.diag: list[DiagnosticArray] = []
        self.peer.create_subscription(TwistStamped, "/cmd_vel", self.cmds.append, rel)
        self.peer.create_subscription(SafetyStatus, "/lnn_controller/safety_status", self.status.append, rel)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self.diag.append, rel)
        sensor = qos_profile_sensor_data
        self.pub_odom = self.peer.create_publisher(Odometry, "/odom", sensor)
        self.pub_scan = self.peer.create_publisher(LaserScan, "/scan", sensor)
        self.pub_goal = self.peer.create_publisher(PoseStamped, "/goal_pose", sensor)

    def spin_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        return ros_rig.spin_until(self._spin_both, cond, timeout)

    def _spin_both(self) -> None:
        self.spinner.spin_once(timeout_sec=0.002)
        self.peer_ex.spin_once(timeout_sec=0.0)

    def call(self, srv: Any, name: str, req: Any) -> Any:
        cli = self.peer.create_client(srv, name)
        assert self.spin_until(cli.service_is_ready, 10.0), f"{name} not available"
        fut = cli.call_async(req)
        assert self.spin_until(fut.done, 10.0), f"no reply from {name} (services go through the drain)"
        return fut.result()

    def transition(self, tid: int) -> None:
        if tid == Transition.TRANSITION_CONFIGURE:  # a request right after discovery can be lost
            wait_lifecycle_ready(
                self.peer.create_client(GetState, "/lnn_controller/get_state"), self._spin_both, 10.0
            )
        req = ChangeState.Request(transition=Transition(id=tid))
        assert self.call(ChangeState, "/lnn_controller/change_state", req).success

    def scan(self, k: int) -> LaserScan:
        s = LaserScan()
        s.header.stamp.sec, s.header.stamp.nanosec = 100, k * 1_000_000
        s.angle_min, s.angle_increment = 0.0, 2 * math.pi / 72
        s.range_min, s.range_max = 0.05, 4.0
        s.ranges = [1.5 + 0.5 * math.sin(3 * i / 72) for i in range(72)]
        return s

    def odom(self, k: int) -> Odometry:
        o = Odometry()
        o.header.stamp.sec, o.header.stamp.nanosec = 100, k * 1_000_000
        o.pose.pose.position.x, o.pose.pose.position.y = -1.0 + 0.001 * k, 0.5
        o.pose.pose.orientation.w = 1.0
        o.twist.twist.linear.x = 0.2
        return o

    def close(self) -> None:
        self.ex.shutdown()
        self.peer_ex.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def rig(model: pathlib.Path) -> Any:
    r = Rig(model)
    try:
        yield r
    finally:
        r.close()


def test_spinner_steps_once_per_message_and_serves_services_and_timers(rig: Rig) -> None:
    # lifecycle services answered through the spinner's executor drain
    rig.transition(Transition.TRANSITION_CONFIGURE)
    rig.transition(Transition.TRANSITION_ACTIVATE)
    subs = rig.node.input_subscriptions
    assert subs[-1].topic_name == "/odom", "the trigger is taken last when several inputs are ready"
    assert rig.spin_until(lambda: rig.pub_odom.get_subscription_count() > 0, 10.0)
    assert rig.spin_until(lambda: len(rig.cmds) > 0, 2.0)  # first: a fallback (nothing seen yet)
    rig.pub_goal.publish(PoseStamped())
    rig.pub_scan.publish(rig.scan(0))
    assert rig.spin_until(lambda: rig.node.received.get("/scan", 0) >= 1, 5.0)
    rig.pub_odom.publish(rig.odom(1))  # the first step: from here on odometry drives every command

    def answered(k: int) -> bool:
        return any(c.header.stamp.sec == 100 and c.header.stamp.nanosec == k * 1_000_000 for c in rig.cmds)

    assert rig.spin_until(lambda: answered(1), 5.0)
    rig.cmds.clear()
    taken0, steps0 = rig.spinner.taken, rig.node.counters["steps"]
    cmds0, fb0 = rig.node.counters["commands"], rig.node.counters["fallbacks"]
    n = 30
    for k in range(2, 2 + n):  # one odometry message at a time, each answered before the next
        rig.pub_odom.publish(rig.odom(k))
        assert rig.spin_until(functools.partial(answered, k), 5.0), f"no command for odometry message {k}"
    rig.spin_until(lambda: False, 0.1)  # anything extra would arrive now (and fail the count)
    stamps = [c.header.stamp.nanosec // 1_000_000 for c in rig.cmds]
    assert stamps == list(range(2, 2 + n)), "exactly one command per odometry message, in order"
    assert rig.node.counters["steps"] - steps0 == n
    assert rig.node.counters["commands"] - cmds0 == n
    assert rig.node.counters["fallbacks"] == fb0, rig.node.last_reason
    assert rig.spinner.taken - taken0 >= n // 2, "input messages are taken by the spinner itself"
    assert all(math.isfinite(c.twist.linear.x) and abs(c.twist.linear.x) <= 0.5 + 1e-9 for c in rig.cmds)

    # a parameter service set while streaming, and the diagnostics timer
    req = SetParameters.Request(parameters=[Parameter("status_every_n", value=3).to_parameter_msg()])
    assert rig.call(SetParameters, "/lnn_controller/set_parameters", req).results[0].successful
    assert rig.node.get_parameter("status_every_n").value == 3
    rig.diag.clear()
    assert rig.spin_until(lambda: len(rig.diag) >= 2, 3.0), "diagnostics timer runs under the spinner"

    # the watchdog timer: no more odometry -> a stale-input fallback within sensor_timeout
    rig.cmds.clear()
    rig.status.clear()
    assert rig.spin_until(
        lambda: any(s.solver_status == SafetyStatus.STATUS_STALE_INPUT for s in rig.status), 3.0
    )
    assert rig.spin_until(lambda: len(rig.cmds) > 0, 2.0)
    assert all(c.twist.linear.x == 0.0 and c.twist.angular.z == 0.0 for c in rig.cmds)
    assert rig.spinner.drains > 0
    assert rig.spinner.timer_calls > 0, "the node's timers are called by the spinner itself"


def test_spinner_rejects_a_bad_service_period(rig: Rig) -> None:
    with pytest.raises(ValueError, match="service_period"):
        InputFirstSpinner(rig.node, rig.ex, lambda: [], service_period=0.0)


def test_latency_summary_matches_numpy(rig: Rig) -> None:
    """The diagnostics' median / p99 (one partition, interpolated by hand) equal numpy's."""
    import numpy as np

    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 100, 101, 4096):
        v = rng.exponential(1e-4, n)
        rig.node.latencies.clear()
        rig.node.latencies.extend(v.tolist())
        got = rig.node.latency_summary()
        assert got["n"] == n
        assert got["median_s"] == pytest.approx(float(np.median(v)), rel=1e-12, abs=0.0)
        assert got["p99_s"] == pytest.approx(float(np.percentile(v, 99)), rel=1e-12, abs=0.0)
