"""lnn_controller in this process over real DDS: output types, stamps -> dt, bad input, timer mode, sim time.

Each test builds the node from ``config/diff_drive.yaml`` with parameter overrides in its own rclpy
Context, drives it through the lifecycle with ``trigger_*`` and talks to it over real topics
from a second node in the same context (one single-threaded executor spins both).
"""

from __future__ import annotations

import math
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("barriernet.safety_filter")

import ros_rig  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped, WrenchStamped  # noqa: E402
from lnn_control.msg import SafetyStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import LaserScan  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from lnn_control.config import load_observation_config  # noqa: E402
from lnn_control.ros.controller_node import LnnController  # noqa: E402
from lnn_control.runtime.model_file import load_stepper  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "diff_drive.yaml"


def stamp(msg: Any, t: float) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))


class Rig:
    """The node under test plus a test node (publishers of sensors, subscribers of every output)."""

    def __init__(self, model: pathlib.Path, command_type: type = TwistStamped, **params: Any) -> None:
        self.ctx = Context()
        args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_file:={model}"]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        rclpy.init(context=self.ctx, args=args)
        self.node = LnnController(context=self.ctx)
        self.t = rclpy.create_node("rig", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.ex.add_node(self.t)
        rel = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.cmds: list[Any] = []
        self.status: list[SafetyStatus] = []
        self.nominal: list[list[float]] = []
        topic = "/cmd_vel"
        self.t.create_subscription(command_type, topic, self.cmds.append, rel)
        self.t.create_subscription(SafetyStatus, "/lnn_controller/safety_status", self.status.append, rel)
        self.t.create_subscription(
            Float64MultiArray,
            "/lnn_controller/nominal_command",
            lambda m: self.nominal.append(list(m.data)),
            rel,
        )
        sensor = qos_profile_sensor_data
        self.pub = {
            "odom": self.t.create_publisher(Odometry, "/odom", sensor),
            "scan": self.t.create_publisher(LaserScan, "/scan", sensor),
            "goal": self.t.create_publisher(PoseStamped, "/goal_pose", sensor),
            "clock": self.t.create_publisher(Clock, "/clock", QoSProfile(depth=10)),
        }

    def up(self) -> None:
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS, self.node.last_reason
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert self.spin_until(lambda: self.pub["odom"].get_subscription_count() > 0, 5.0)
        assert self.spin_until(lambda: self.node._pubs["status"].get_subscription_count() > 0, 5.0)

    def spin_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        return ros_rig.spin_until(lambda: self.ex.spin_once(timeout_sec=0.005), cond, timeout)

    def sensors(self, t: float, beams: int = 72, v: float = 0.2) -> tuple[Any, Any, Any]:
        o = Odometry()
        stamp(o, t)
        o.pose.pose.position.x, o.pose.pose.position.y = -1.0, 0.5
        o.pose.pose.orientation.w = 1.0
        o.twist.twist.linear.x = v
        s = LaserScan()
        stamp(s, t)
        s.angle_min, s.angle_increment = 0.0, 2 * math.pi / beams
        s.range_min, s.range_max = 0.05, 4.0
        s.ranges = [1.5 + 0.5 * math.sin(3 * i / beams) for i in range(beams)]
        g = PoseStamped()
        g.pose.position.x, g.pose.position.y = 2.0, 1.5
        return o, s, g

    def send(self, t: float, wait_for: int | None = None, goal: bool = True, **kw: Any) -> None:
        """Publish goal, scan, then odometry (the trigger) stamped ``t``; wait for ``wait_for`` statuses."""
        o, s, g = self.sensors(t, **kw)
        if goal:
            self.pub["goal"].publish(g)
        self.pub["scan"].publish(s)
        self.spin_until(lambda: False, 0.003)  # let the scan in before its odometry
        self.pub["odom"].publish(o)
        if wait_for is not None:
            assert self.spin_until(lambda: len(self.status) >= wait_for, 3.0), "no SafetyStatus"

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        self.t.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def rig(model: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    kw = getattr(request, "param", {})
    r = Rig(model, **kw)
    try:
        yield r
    finally:
        r.close()


_STAMPED = {
    "command_type": TwistStamped,
    "observation.command.type": "geometry_msgs/msg/TwistStamped",
    "observation.command.fields": "[twist.linear.x, twist.angular.z]",
}


@pytest.mark.parametrize("rig", [_STAMPED], indirect=True)
def test_twist_stamped_carries_trigger_stamp_and_cell_dt_comes_from_stamps(
    rig: Rig, model: pathlib.Path
) -> None:
    rig.up()
    stamps = 100.0 + np.cumsum([0.02, 0.005, 0.05, 0.013, 0.2, 0.001, 0.03])  # irregular steps
    for i, t in enumerate(stamps):
        rig.send(float(t), wait_for=i + 1)
    assert rig.spin_until(lambda: len(rig.cmds) == len(stamps) and len(rig.nominal) == len(stamps), 3.0)
    got = [c.header.stamp.sec + 1e-9 * c.header.stamp.nanosec for c in rig.cmds]
    np.testing.assert_allclose(got, stamps, atol=1e-9)
    assert all(not s.fallback_used for s in rig.status)
    for c, s in zip(rig.cmds, rig.status):
        assert [c.twist.linear.x, c.twist.angular.z] == list(s.safe_command)
        assert c.header.frame_id == "base_link"
    # the same model stepped here with the stamp differences (default_dt first) gives the nominal commands
    obs = load_observation_config(CONFIG)
    ref = load_stepper(model)
    dts = np.diff(stamps, prepend=stamps[0] - 0.02)
    for t, dt, nominal in zip(stamps, dts, rig.nominal):
        o, s, g = rig.sensors(float(t))
        for topic, m in (("/goal_pose", g), ("/scan", s), ("/odom", o)):
            obs.update(topic, m)
        np.testing.assert_allclose(
            nominal, ref.step(obs.observation(), float(dt))[:2], rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize(
    "rig",
    [
        {
            "command_type": WrenchStamped,
            "observation.command.type": "geometry_msgs/msg/WrenchStamped",
            "observation.command.fields": "[wrench.force.x, wrench.torque.z]",
        }
    ],
    indirect=True,
)
def test_wrench_stamped_output(rig: Rig) -> None:
    rig.up()
    for i in range(3):
        rig.send(50.0 + 0.02 * i, wait_for=i + 1)
    assert rig.spin_until(lambda: len(rig.cmds) == 3, 3.0)
    for c, s in zip(rig.cmds, rig.status):
        assert [c.wrench.force.x, c.wrench.torque.z] == list(s.safe_command)
        assert c.wrench.force.y == 0.0 and c.wrench.torque.x == 0.0


def test_bad_command_fields_fail_configure_with_reason(model: pathlib.Path) -> None:
    r = Rig(model, Twist, **{"observation.command.fields": "[linear.x, angular.nope]"})
    try:
        assert r.node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "observation.command.fields" in r.node.last_reason and "angular.nope" in r.node.last_reason
    finally:
        r.close()


@pytest.mark.parametrize("rig", [_STAMPED], indirect=True)
def test_wrong_size_out_of_order_and_recovery(rig: Rig) -> None:
    rig.up()
    rig.send(10.0, wait_for=1)
    assert not rig.status[-1].fallback_used
    # a 4-beam scan cannot fill 8 sectors: wrong_size, zero command
    rig.send(10.02, wait_for=2, beams=4)
    st = rig.status[-1]
    assert st.fallback_used and st.fallback_reason.startswith("wrong_size")
    assert st.solver_status == SafetyStatus.STATUS_INVALID_INPUT and list(st.safe_command) == [0.0, 0.0]
    assert rig.node.counters["wrong_size"] == 1
    rig.send(10.04, wait_for=3)
    assert not rig.status[-1].fallback_used
    # odometry older than the last one: dropped, one fallback saying so, then normal again
    rig.send(10.03, wait_for=4)
    st = rig.status[-1]
    assert st.fallback_used and "out_of_order" in st.fallback_reason and "/odom" in st.fallback_reason
    assert rig.node.counters["out_of_order"] >= 1
    rig.send(10.06, wait_for=5)
    assert not rig.status[-1].fallback_used
    # a duplicate trigger stamp (dt = 0) is out of order too
    rig.send(10.06, wait_for=6)
    assert "out_of_order" in rig.status[-1].fallback_reason
    # never an unverified command: every command equals the status's safe command, inside the box
    for c, s in zip(rig.cmds, rig.status):
        assert [c.twist.linear.x, c.twist.angular.z] == list(s.safe_command)
        assert abs(c.twist.linear.x) <= 0.6 and abs(c.twist.angular.z) <= 2.0


@pytest.mark.parametrize("rig", [{**_STAMPED, "control_mode": "timer", "rate_hz": 1000.0}], indirect=True)
def test_timer_mode_steps_at_rate_on_the_node_clock(rig: Rig) -> None:
    rig.up()
    assert rig.node._timers[0].timer_period_ns == 1_000_000
    t = 20.0
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # sensors at ~100 Hz, control at 1 kHz
        t += 0.01
        rig.send(t)
        rig.spin_until(lambda: False, 0.007)
    # this process also runs the test node that takes every output; the rate a node process
    # reaches on its own is measured in bench/bench_ros.py
    n = rig.node.counters["steps"]
    assert n >= 50, f"only {n} timer steps in 1 s at 1 kHz"
    assert n > 5 * rig.node.received["/odom"] / 4, "timer steps must outnumber the trigger messages"
    ok = [s for s in rig.status if not s.fallback_used]
    assert len(ok) >= 0.9 * len(rig.status), [s.fallback_reason for s in rig.status if s.fallback_used][:3]
    # timer outputs are stamped with the node clock, not a sensor stamp
    assert all(c.header.stamp.sec > 1_000_000 for c in rig.cmds[-10:])


@pytest.mark.parametrize("rig", [{**_STAMPED, "use_sim_time": True, "sensor_timeout": 0.2}], indirect=True)
def test_use_sim_time_staleness_follows_the_sim_clock(rig: Rig) -> None:
    def clock(t: float) -> None:
        c = Clock()
        c.clock.sec, c.clock.nanosec = int(t), int(round((t % 1) * 1e9))
        rig.pub["clock"].publish(c)

    assert rig.spin_until(lambda: rig.pub["clock"].get_subscription_count() > 0, 5.0)
    clock(5.0)
    assert rig.spin_until(lambda: abs(rig.node._now() - 5.0) < 1e-9, 3.0)
    rig.up()
    for i in range(3):
        clock(5.0 + 0.02 * i)
        rig.send(5.0 + 0.02 * i, wait_for=i + 1)
    assert not rig.status[-1].fallback_used
    # sensors stop; the sim clock is frozen: half a second of wall time is no staleness
    n = len(rig.status)
    rig.spin_until(lambda: False, 0.5)
    assert len(rig.status) == n
    # the sim clock moves past the timeout: the watchdog (a sim-time timer) falls back
    for i in range(1, 8):
        clock(5.04 + 0.05 * i)
        rig.spin_until(lambda: False, 0.02)
    assert rig.spin_until(lambda: len(rig.status) > n, 2.0)
    st = rig.status[-1]
    assert st.solver_status == SafetyStatus.STATUS_STALE_INPUT and st.fallback_used


@pytest.mark.parametrize("rig", [_STAMPED], indirect=True)
def test_goal_sent_once_is_not_stale_but_sensors_are(rig: Rig) -> None:
    rig.up()
    rig.send(30.0, wait_for=1)
    t = 30.0
    end = time.monotonic() + 0.6  # > sensor_timeout 0.25 s without a new goal
    while time.monotonic() < end:
        t += 0.02
        rig.send(t, goal=False)
        rig.spin_until(lambda: False, 0.015)
    assert rig.spin_until(lambda: len(rig.status) > 5, 2.0)
    assert not any(s.fallback_used for s in rig.status), [
        s.fallback_reason for s in rig.status if s.fallback_used
    ]


@pytest.mark.parametrize("rig", [_STAMPED], indirect=True)
def test_live_filter_sets_are_atomic_and_checked_against_the_command(rig: Rig) -> None:
    rig.up()
    rig.send(40.0, wait_for=1)
    before = rig.node.control_step.safety_filter
    # three controls for a two-field command: rejected as a whole, nothing changes
    res = rig.node.set_parameters_atomically(
        [
            Parameter("safety_filter.controls.names", value=["v", "omega", "x"]),
            Parameter("safety_filter.controls.lower", value=[-0.6, -2.0, -1.0]),
            Parameter("safety_filter.controls.upper", value=[0.6, 2.0, 1.0]),
        ]
    )
    assert not res.successful and "safety_filter rejected" in res.reason and "3" in res.reason
    assert list(rig.node.get_parameter("safety_filter.controls.upper").value) == [0.6, 2.0]
    assert rig.node.counters["params_rejected"] == 1
    # both bounds in one set: one new filter, swapped in at the next step, not inside the set
    res = rig.node.set_parameters_atomically(
        [
            Parameter("safety_filter.controls.lower", value=[-0.05, -0.1]),
            Parameter("safety_filter.controls.upper", value=[0.05, 0.1]),
        ]
    )
    assert res.successful, res.reason
    core = rig.node.control_step
    assert core is not None
    assert core.safety_filter is before, "the filter must change between steps, not inside the set"
    rig.send(40.02, wait_for=2)
    assert rig.node.control_step.safety_filter is not before
    c = rig.cmds[-1].twist
    assert abs(c.linear.x) <= 0.05 + 1e-9 and abs(c.angular.z) <= 0.1 + 1e-9


def test_arm_effort_commands_and_gravity_compensation_fallback(tmp_path: pathlib.Path) -> None:
    """config/arm.yaml: JointState in, Float64MultiArray torques out (ros2_control effort
    controllers), manipulator filter; bad joint states give the gravity-compensation fallback."""
    import torch
    from ncps.torch import CfC
    from ncps.wirings import AutoNCP
    from sensor_msgs.msg import JointState

    from lnn_control.nn.policy import from_ncps
    from lnn_control.runtime.model_file import save_policy

    torch.manual_seed(1)
    model = tmp_path / "arm.npz"
    save_policy(model, from_ncps(CfC(9, AutoNCP(19, 3, seed=1), batch_first=True)))
    ctx = Context()
    cfg = ROOT / "config" / "arm.yaml"
    rclpy.init(
        context=ctx,
        args=[
            "--ros-args",
            "--params-file",
            str(cfg),
            "-p",
            f"model_file:={model}",
            "-p",
            "sensor_timeout:=1.0",
        ],
    )
    node = LnnController(context=ctx)
    t = rclpy.create_node("arm_rig", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(t)
    rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    cmds: list[list[float]] = []
    status: list[SafetyStatus] = []
    t.create_subscription(
        Float64MultiArray, "/effort_controller/commands", lambda m: cmds.append(list(m.data)), rel
    )
    t.create_subscription(SafetyStatus, "/lnn_controller/safety_status", status.append, rel)
    pub_js = t.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    pub_goal = t.create_publisher(JointState, "/goal_joints", qos_profile_sensor_data)

    def spin_until(cond: Callable[[], bool], timeout: float) -> bool:
        return ros_rig.spin_until(lambda: ex.spin_once(timeout_sec=0.005), cond, timeout)

    def send(ts: float, q: list[float], n: int) -> None:
        g = JointState(position=[0.5, 0.2, -0.3])
        pub_goal.publish(g)
        spin_until(lambda: False, 0.003)
        js = JointState(name=["joint1", "joint2", "joint3"], position=q, velocity=[0.1, -0.2, 0.0])
        stamp(js, ts)
        pub_js.publish(js)
        assert spin_until(lambda: len(status) >= n, 3.0), "no SafetyStatus"

    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_reason
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert spin_until(lambda: pub_js.get_subscription_count() > 0, 5.0)
        assert spin_until(lambda: node._pubs["status"].get_subscription_count() > 0, 5.0)
        q = [0.2, 0.6, -0.4]
        for i in range(3):
            send(7.0 + 0.002 * i, q, i + 1)
        assert spin_until(lambda: len(cmds) == 3, 3.0)
        lim = np.array([20.0, 14.0, 6.0])
        for c, s in zip(cmds, status):
            assert len(c) == 3 and np.all(np.abs(c) <= lim + 1e-9)
            assert c == list(s.safe_command) and list(s.command_names) == ["tau1", "tau2", "tau3"]
            assert not s.fallback_used
        # a NaN joint position: gravity compensation (+ damping) at the last good state, in the box
        send(7.01, [0.2, float("nan"), -0.4], 4)
        s = status[-1]
        assert s.fallback_used and s.fallback_reason.startswith("non_finite")
        x_good = np.array([*q, 0.1, -0.2, 0.0])
        expected, _ = node.control_step.safety_filter.fallback(x_good, "check")
        np.testing.assert_allclose(cmds[-1], expected, rtol=1e-12, atol=1e-12)
        assert abs(cmds[-1][1]) > 0.1, "gravity compensation of joint 2 at q2 = 0.6 rad is not zero"
        # two positions for three joint names: wrong_size
        send(7.02, [0.2, 0.6], 5)
        assert status[-1].fallback_reason.startswith("wrong_size")
        assert node.counters["wrong_size"] == 1 and node.counters["non_finite"] == 1
        # a NaN goal with fresh, valid joint states: the fallback is computed at the fresh state,
        # not at a stale one (gravity compensation for another pose is not a safe command)
        n_cmds = len(cmds)
        pub_goal.publish(JointState(position=[0.5, float("nan"), -0.3]))
        spin_until(lambda: False, 0.003)
        q_new = [-0.3, -0.9, 0.7]
        js = JointState(name=["joint1", "joint2", "joint3"], position=q_new, velocity=[0.0, 0.3, -0.1])
        stamp(js, 7.03)
        pub_js.publish(js)
        assert spin_until(lambda: len(status) >= 6 and len(cmds) > n_cmds, 3.0), "no command / status"
        assert status[-1].fallback_used and status[-1].fallback_reason.startswith("non_finite")
        x_new = np.array([*q_new, 0.0, 0.3, -0.1])
        expected_new, _ = node.control_step.safety_filter.fallback(x_new, "check")
        np.testing.assert_allclose(cmds[-1], expected_new, rtol=1e-12, atol=1e-12)
        assert np.abs(expected_new - expected).max() > 0.1  # the two poses need different torques
    finally:
        ex.shutdown()
        node.destroy_node()
        t.destroy_node()
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("rig", [_STAMPED], indirect=True)
def test_barriers_switched_off_and_on_live(rig: Rig) -> None:
    rig.up()
    rig.send(60.0, wait_for=1)
    rows = list(rig.status[-1].constraint_names)
    assert any(n.startswith("wall_xp") for n in rows) and any(n.startswith("scan") for n in rows)
    res = rig.node.set_parameters([Parameter("safety_filter.wall_xp.enabled", value=False)])[0]
    assert res.successful, res.reason
    rig.send(60.02, wait_for=2)
    rows_off = list(rig.status[-1].constraint_names)
    assert not any(n.startswith("wall_xp") for n in rows_off) and len(rows_off) < len(rows)
    # a margin out of its declared range is refused before the callback; a bad type likewise
    assert not rig.node.set_parameters([Parameter("safety_filter.scan.margin", value=50.0)])[0].successful
    assert not rig.node.set_parameters([Parameter("safety_filter.scan.margin", value="wide")])[0].successful
    assert rig.node.set_parameters([Parameter("safety_filter.wall_xp.enabled", value=True)])[0].successful
    rig.send(60.04, wait_for=3)
    assert list(rig.status[-1].constraint_names) == rows
