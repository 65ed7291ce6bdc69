"""lnn_controller takes its trigger raw (serialised bytes read by a verified layout): the same
commands as the message-object path, bytes off the layout go through rclpy's deserialiser (the
checked fallback), undecodable bytes are dropped without a crash; and over real DDS the raw
subscription is what the node's spinner takes."""

from __future__ import annotations

import math
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("barriernet.safety_filter")

import ros_rig  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from lnn_control.msg import SafetyStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import LaserScan  # noqa: E402

from lnn_control.ros.controller_node import LnnController  # noqa: E402
from lnn_control.ros.spinner import InputFirstSpinner  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "diff_drive.yaml"


def _scan(k: int) -> LaserScan:
    s = LaserScan()
    s.header.stamp.sec, s.header.stamp.nanosec = 100, k * 1_000_000
    s.angle_min, s.angle_increment = 0.0, 2 * math.pi / 72
    s.range_min, s.range_max = 0.05, 4.0
    s.ranges = [1.2 + 0.6 * math.sin(5 * i / 72 + 0.1 * k) for i in range(72)]
    return s


def _odom(k: int) -> Odometry:
    o = Odometry()
    o.header.stamp.sec, o.header.stamp.nanosec = 100, k * 1_000_000 + 500_000
    o.header.frame_id, o.child_frame_id = "odom", "base_link"
    o.pose.pose.position.x, o.pose.pose.position.y = -1.0 + 0.003 * k, 0.4 - 0.002 * k
    o.pose.pose.orientation.z, o.pose.pose.orientation.w = math.sin(0.05 * k), math.cos(0.05 * k)
    o.twist.twist.linear.x, o.twist.twist.angular.z = 0.1 + 0.01 * k, -0.2
    return o


class Rig:
    """The node, its callbacks called directly, and a reader collecting the commands."""

    def __init__(self, model: pathlib.Path, *extra: str) -> None:
        self.ctx = Context()
        args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_file:={model}"]
        rclpy.init(context=self.ctx, args=[*args, "-p", "sensor_timeout:=10.0", *extra])
        self.node = LnnController(context=self.ctx)
        self.reader = rclpy.create_node("reader", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.reader)
        self.cmds: list[Twist] = []
        rel = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.reader.create_subscription(Twist, "/cmd_vel", self.cmds.append, rel)
        self.status: list[SafetyStatus] = []
        self.reader.create_subscription(
            SafetyStatus, "/lnn_controller/safety_status", self.status.append, rel
        )
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS, self.node.last_reason
        self.activate()

    def activate(self) -> None:
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        pub = self.node._pubs["command"]
        assert self.spin_until(lambda: pub.get_subscription_count() > 0, 10.0)
        goal = PoseStamped()
        goal.pose.position.x, goal.pose.position.y = 2.0, 1.5
        self.node.callbacks["/goal_pose"](goal)

    def spin_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        return ros_rig.spin_until(lambda: self.ex.spin_once(timeout_sec=0.005), cond, timeout)

    def run(self, trigger: Callable[[int], Any], n: int) -> list[tuple[float, float]]:
        """n steps (a scan before every 3rd), the trigger built by ``trigger(k)``; the commands."""
        start = len(self.cmds)
        for k in range(n):
            if k % 3 == 0:
                self.node.callbacks["/scan"](_scan(k))
            self.node.callbacks["/odom"](trigger(k))
        assert self.spin_until(lambda: len(self.cmds) >= start + n, 5.0), len(self.cmds) - start
        return [(c.linear.x, c.angular.z) for c in self.cmds[start:]]

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        self.reader.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def rig(model: pathlib.Path) -> Iterator[Rig]:
    r = Rig(model)
    try:
        yield r
    finally:
        r.close()


def _restart(rig: Rig) -> None:
    """Deactivate and activate: the policy's state and the stamps start over."""
    assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    rig.spin_until(lambda: False, 0.05)
    rig.cmds.clear()
    rig.activate()


def test_raw_trigger_gives_the_commands_of_the_message_path(rig: Rig) -> None:
    node = rig.node
    assert node.raw_trigger  # diff_drive's trigger is nav_msgs/Odometry: verified layout
    want = rig.run(_odom, 40)
    assert node.raw_counts == {"parsed": 0, "fallback": 0, "undecodable": 0}
    assert node.counters["fallbacks"] == 0
    _restart(rig)
    fallbacks = node.counters["fallbacks"]  # the deactivation's own
    got = rig.run(lambda k: serialize_message(_odom(k)), 40)
    assert node.raw_counts["parsed"] == 40 and node.raw_counts["fallback"] == 0
    assert got == want  # float64 exact
    assert node.counters["fallbacks"] == fallbacks


def test_raw_trigger_off_subscribes_message_objects_with_the_same_commands(model: pathlib.Path) -> None:
    """``raw_trigger: false``: the trigger subscription hands over rclpy message objects (no raw
    reader), and the commands are those of the raw path for the same messages."""
    raw = Rig(model)
    try:
        assert raw.node.raw_trigger
        want = raw.run(lambda k: serialize_message(_odom(k)), 30)
        assert raw.node.raw_counts["parsed"] == 30
    finally:
        raw.close()
    off = Rig(model, "-p", "raw_trigger:=false")
    try:
        node = off.node
        assert node.raw_trigger is False
        trigger = [s for s in node.input_subscriptions if s.topic_name == "/odom"]
        assert len(trigger) == 1 and trigger[0].raw is False
        assert off.run(_odom, 30) == want  # float64 exact
        assert node.raw_counts == {"parsed": 0, "fallback": 0, "undecodable": 0}
        assert node.counters["fallbacks"] == 0
    finally:
        off.close()


def test_bytes_off_the_layout_take_the_checked_fallback(rig: Rig) -> None:
    node = rig.node
    want = rig.run(_odom, 12)
    _restart(rig)
    # valid CDR with trailing bytes rclpy ignores but the layout refuses: rclpy's deserialiser,
    # then the ordinary path -> the same commands
    got = rig.run(lambda k: serialize_message(_odom(k)) + bytes(40), 12)
    assert node.raw_counts["fallback"] == 12 and node.raw_counts["parsed"] == 0
    assert got == want
    # bytes rclpy cannot read either: dropped and counted, no command, no crash
    before = len(rig.cmds)
    node.callbacks["/odom"](serialize_message(_odom(12))[:30])
    node.callbacks["/odom"](b"")
    assert node.raw_counts["undecodable"] == 2
    rig.spin_until(lambda: False, 0.1)
    assert len(rig.cmds) == before
    # and the next good message steps again
    node.callbacks["/odom"](serialize_message(_odom(13)))
    assert rig.spin_until(lambda: len(rig.cmds) == before + 1, 5.0)
    assert node.raw_counts["parsed"] == 1


def test_a_bad_raw_trigger_falls_back_with_its_stamp(rig: Rig) -> None:
    """NaN in the raw trigger: the fallback command, and its status carries the trigger's stamp
    (the view's stamp goes into message objects on the fallback path)."""
    node = rig.node
    rig.run(lambda k: serialize_message(_odom(k)), 3)
    bad = _odom(3)
    bad.pose.pose.position.x = float("nan")
    node.callbacks["/odom"](serialize_message(bad))
    assert rig.spin_until(lambda: len(rig.cmds) == 4 and len(rig.status) == 4, 5.0)
    st = rig.status[-1]
    assert st.fallback_used and "non_finite" in st.fallback_reason
    assert (st.header.stamp.sec, st.header.stamp.nanosec) == (bad.header.stamp.sec, bad.header.stamp.nanosec)
    assert (rig.cmds[-1].linear.x, rig.cmds[-1].angular.z) == (0.0, 0.0)
    assert node.raw_counts["parsed"] == 4


def test_raw_trigger_over_dds_through_the_spinner(model: pathlib.Path) -> None:
    """A publisher sending ordinary Odometry messages; the node spun by its InputFirstSpinner takes
    them as bytes and answers each."""
    ctx = Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(CONFIG), "-p", f"model_file:={model}"])
    node = LnnController(context=ctx)
    peer = rclpy.create_node("peer", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(peer)
    cmds: list[Twist] = []
    peer.create_subscription(
        Twist, "/cmd_vel", cmds.append, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    )
    pub_odom = peer.create_publisher(Odometry, "/odom", qos_profile_sensor_data)
    pub_scan = peer.create_publisher(LaserScan, "/scan", qos_profile_sensor_data)
    pub_goal = peer.create_publisher(PoseStamped, "/goal_pose", qos_profile_sensor_data)
    stop = threading.Event()
    node_ex = SingleThreadedExecutor(context=ctx)
    node_ex.add_node(node)  # as main() spins it: executor inputs
    spinner = InputFirstSpinner(node, node_ex, lambda: node.input_subscriptions, lambda: node.control_timers)
    thread = threading.Thread(target=lambda: _spin(spinner, stop), daemon=True)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_reason
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.raw_trigger
        thread.start()
        assert ros_rig.spin_until(
            lambda: ex.spin_once(timeout_sec=0.01), lambda: pub_odom.get_subscription_count() > 0, 10.0
        )
        goal = PoseStamped()
        goal.pose.position.x, goal.pose.position.y = 2.0, 1.5
        k = 0

        def send() -> None:
            nonlocal k
            k += 1
            pub_goal.publish(goal)
            s = _scan(k)
            s.header.stamp = node.get_clock().now().to_msg()
            pub_scan.publish(s)
            o = _odom(k)
            o.header.stamp = node.get_clock().now().to_msg()
            pub_odom.publish(o)

        def got_enough() -> bool:
            send()
            return node.raw_counts["parsed"] >= 10 and len(cmds) >= 10

        assert ros_rig.spin_until(lambda: ex.spin_once(timeout_sec=0.02), got_enough, 20.0), (
            node.raw_counts,
            len(cmds),
        )
        assert node.raw_counts["fallback"] == 0 and node.raw_counts["undecodable"] == 0
        diag: list[Any] = []
        peer.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
        assert ros_rig.spin_until(lambda: ex.spin_once(timeout_sec=0.02), lambda: len(diag) > 0, 10.0)
        kv = {v.key: v.value for v in diag[-1].status[0].values}
        assert kv["raw_trigger"].startswith("parsed ") and "fallback 0, undecodable 0" in kv["raw_trigger"]
    finally:
        stop.set()
        thread.join(timeout=5.0)
        ex.shutdown()
        node_ex.shutdown()
        peer.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def _spin(spinner: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        spinner.spin_once(timeout_sec=0.02)
