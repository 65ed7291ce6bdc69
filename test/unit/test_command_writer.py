"""CommandWriter / SafetyStatusBytes: the node's command and status as serialised bytes from a
verified template equal the messages filled the ordinary way, every write is complete and
independent of the previous one."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lnn_control.msg")
serialization = pytest.importorskip("rclpy.serialization")
builtin_interfaces = pytest.importorskip("builtin_interfaces.msg")

from lnn_control.control.observation import ObservationMap  # noqa: E402
from lnn_control.ros import conversions as rc  # noqa: E402

TYPES = [
    ("geometry_msgs/msg/Twist", ["linear.x", "angular.z"]),
    ("geometry_msgs/msg/TwistStamped", ["twist.linear.x", "twist.angular.z"]),
    ("geometry_msgs/msg/WrenchStamped", ["wrench.force.x", "wrench.force.y", "wrench.torque.z"]),
    ("std_msgs/msg/Float64MultiArray", ["data[0]", "data[1]", "data[2]"]),
]


def _obs(type_name: str, fields: list[str]) -> ObservationMap:
    feature = {"name": "x", "topic": "/o", "type": "nav_msgs/msg/Odometry", "field": "pose.pose.position.x"}
    command = {"topic": "/cmd", "type": type_name, "fields": fields}
    return ObservationMap({"features": [feature], "command": command})


@pytest.mark.parametrize(("type_name", "fields"), TYPES)
def test_serialised_command_equals_the_filled_message(type_name: str, fields: list[str]) -> None:
    obs = _obs(type_name, fields)
    cls = rc.message_class(type_name)
    w = rc.CommandWriter(cls, obs)
    rng = np.random.default_rng(3)
    previous: list[tuple[bytes, bytes]] = []
    for k in range(20):
        frame = "base_link" if k < 10 else "odom_long_frame_name"  # a new frame: a new layout
        u = rng.uniform(-5, 5, len(fields))
        if k == 5:
            u[0] = -0.0
        sec, nanosec = int(rng.integers(0, 2**31 - 1)), int(rng.integers(0, 10**9))
        stamp = builtin_interfaces.Time(sec=sec, nanosec=nanosec)
        data = w.write(u.tolist(), stamp, frame)
        assert w.serialised and isinstance(data, bytes)
        want = rc.command_message(cls, obs, u, stamp, frame)
        assert len(data) == len(serialization.serialize_message(want))  # bytes may differ in padding
        got = serialization.deserialize_message(data, cls)
        assert got == want
        np.testing.assert_array_equal(obs.command_from_message(got), u)
        previous.append((data, bytes(data)))
    # each write is a new object: an earlier command is never changed by a later write
    assert all(a == b for a, b in previous)
    assert len({id(a) for a, _ in previous}) == len(previous)


def test_unverified_layout_falls_back_to_the_message_object() -> None:
    type_name, fields = TYPES[1]
    obs = _obs(type_name, fields)

    class NoLayout(rc.CommandWriter):
        def _learn(self, frame_id):  # type: ignore[no-untyped-def]
            return None  # e.g. a big-endian serialiser or a field that is not one float64

    cls = rc.message_class(type_name)
    w = NoLayout(cls, obs)
    stamp = builtin_interfaces.Time(sec=7, nanosec=9)
    msg = w.write([0.25, -1.5], stamp, "base_link")
    assert not w.serialised and isinstance(msg, cls)
    assert msg == rc.command_message(cls, obs, np.array([0.25, -1.5]), stamp, "base_link")


def test_diff_at_finds_the_changed_field() -> None:
    base = bytes(16)
    changed = bytearray(base)
    changed[4:12] = rc._F64.pack(2.0)  # 2.0 = 00 00 00 00 00 00 00 40: only the last byte differs
    assert rc._diff_at(base, bytes(changed), rc._F64.pack(2.0)) == 4
    assert rc._diff_at(base, base, rc._F64.pack(2.0)) is None
    assert rc._diff_at(base, bytes(15), rc._F64.pack(2.0)) is None


def test_safety_status_bytes_equal_the_writers_messages() -> None:
    """Filtered reports go out as bytes equal (field by field, NaN rows too) to
    SafetyStatusWriter's message; fallbacks, overrides and missing reports as message objects."""
    import pathlib

    from lnn_control.msg import SafetyStatus

    from barriernet.safety_filter import SafetyFilter
    from lnn_control.config import load_filter_config

    root = pathlib.Path(__file__).resolve().parents[2]
    filt = SafetyFilter.from_config(load_filter_config(root / "config" / "diff_drive.yaml"))
    rng = np.random.default_rng(11)
    w = rc.SafetyStatusBytes()
    kinds: set[tuple[bool, int, bool]] = set()
    for k in range(80):
        x = np.array([*rng.uniform(-2.9, 2.9, 2), rng.uniform(-np.pi, np.pi)])
        pts = x[:2] + rng.uniform(-1.0, 1.0, (int(rng.integers(0, 30)), 2))
        u_nom = rng.uniform(-1.0, 1.0, 2) * [0.6, 2.0]
        if k % 9 == 4:
            u, report = filt.fallback(x, "test fallback")
        else:
            u, report = filt.filter(x, u_nom, env={"scan_points": pts})
        over: tuple[str | None, str | None] = ("stale_input", "stale /odom") if k % 13 == 7 else (None, None)
        frame = "base_link" if k < 40 else "odom"
        stamp = builtin_interfaces.Time(sec=100 + k, nanosec=1000 * k)
        args = (report, u_nom, u, ["v", "omega"], stamp, frame, *over)
        got = w.write(*args)
        want = rc.safety_status_message(*args)
        plain = over == (None, None) and not report.fallback_used
        assert w.serialised == plain and isinstance(got, bytes) == plain
        msg = serialization.deserialize_message(got, SafetyStatus) if plain else got
        assert rc._same_message(msg, want), f"step {k}"
        kinds.add((plain, int(msg.solver_status), bool(msg.intervened)))
    assert len(kinds) >= 4  # bytes and objects, optimal / relaxed or fallback, with and without intervention


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_array_writer_serialised_equals_its_message(n: int) -> None:
    std_msgs = pytest.importorskip("std_msgs.msg")
    w = rc.ArrayWriter("nominal")
    rng = np.random.default_rng(n)
    sent = []
    for _ in range(10):
        v = rng.uniform(-3, 3, n)
        data = w.write_serialised(v)
        assert isinstance(data, bytes)
        got = serialization.deserialize_message(data, std_msgs.Float64MultiArray)
        assert rc._same_message(got, rc.ArrayWriter("nominal").write(v))
        sent.append((data, bytes(data), v))
    for data, copy, v in sent:  # later writes never change an earlier message
        assert data == copy
        got = serialization.deserialize_message(data, std_msgs.Float64MultiArray)
        np.testing.assert_array_equal(np.asarray(got.data), v)
