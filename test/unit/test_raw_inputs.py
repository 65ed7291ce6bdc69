"""Raw trigger input (lnn_control/ros/raw_inputs.py): serialised bytes read by the fixed layout
give the same fields, bit for bit, as rclpy's deserialiser; bytes off the layout give None (the
node then deserialises them with rclpy)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")

from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState

from lnn_control.ros import raw_inputs as ri

SPECIAL = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308]


def _special(msg: object, rng: np.random.Generator) -> None:
    """Put special floats (NaN, inf, -0.0, subnormal, max) into some float fields."""
    if isinstance(msg, Odometry):
        p = msg.pose.pose
        p.position.x, p.orientation.w = (SPECIAL[int(i)] for i in rng.integers(0, len(SPECIAL), 2))
        msg.twist.twist.angular.z = SPECIAL[int(rng.integers(0, len(SPECIAL)))]
        cov = msg.pose.covariance.copy()
        cov[int(rng.integers(0, 36))] = SPECIAL[int(rng.integers(0, len(SPECIAL)))]
        msg.pose.covariance = cov
    elif isinstance(msg, JointState) and len(msg.position):
        pos = list(msg.position)
        pos[0] = SPECIAL[int(rng.integers(0, len(SPECIAL)))]
        msg.position = pos


@pytest.mark.parametrize("cls, reader", [(Odometry, ri.read_odometry), (JointState, ri.read_joint_state)])
def test_raw_view_equals_rclpy_on_seeded_random_messages(cls: type, reader: Any) -> None:
    rng = np.random.default_rng(1500)
    for i in range(400):
        msg = ri._random_message(cls, rng)
        if i % 3 == 0:
            _special(msg, rng)
        if i % 7 == 0:  # non-ASCII text (UTF-8 of several bytes per character)
            msg.header.frame_id = "odom_ü_" + "λ" * int(rng.integers(0, 4))
        data = serialize_message(msg)
        view = reader(data)
        assert view is not None, (i, data.hex())
        back: Any = deserialize_message(data, cls)
        assert ri.same_fields(view, back), i
        # float64 exact against the values that were sent, too
        if cls is Odometry:
            sent = [msg.pose.pose.position.x, msg.twist.twist.angular.z, *msg.pose.covariance]
            got = [view.pose.pose.position.x, view.twist.twist.angular.z, *view.pose.covariance]
        else:
            sent = [*msg.position, *msg.velocity, *msg.effort]
            got = [*view.position, *view.velocity, *view.effort]
            assert list(view.name) == list(msg.name)
        assert struct.pack(f"<{len(sent)}d", *sent) == struct.pack(f"<{len(got)}d", *got)
        assert (view.header.stamp.sec, view.header.stamp.nanosec) == (
            msg.header.stamp.sec,
            msg.header.stamp.nanosec,
        )


def test_same_fields_sees_a_difference() -> None:
    """The comparison the node's verification relies on can fail (negative control)."""
    rng = np.random.default_rng(3)
    msg = ri._random_message(Odometry, rng)
    data = bytearray(serialize_message(msg))
    view = ri.read_odometry(bytes(data))
    assert view is not None and ri.same_fields(view, msg)
    other = deserialize_message(bytes(data), Odometry)
    other.pose.pose.position.x = np.nextafter(other.pose.pose.position.x, np.inf)
    assert not ri.same_fields(view, other)
    other = deserialize_message(bytes(data), Odometry)
    cov = other.twist.covariance.copy()
    cov[35] = -cov[35] if cov[35] != 0 else 1.0
    other.twist.covariance = cov
    assert not ri.same_fields(view, other)
    other = deserialize_message(bytes(data), Odometry)
    other.child_frame_id += "x"
    assert not ri.same_fields(view, other)


def test_readers_are_verified_for_both_types() -> None:
    assert ri.raw_reader("nav_msgs/msg/Odometry", Odometry) is ri.read_odometry
    assert ri.raw_reader("sensor_msgs/msg/JointState", JointState) is ri.read_joint_state
    from sensor_msgs.msg import LaserScan

    assert ri.raw_reader("sensor_msgs/msg/LaserScan", LaserScan) is None  # no fixed layout here


@pytest.mark.parametrize("cls, reader", [(Odometry, ri.read_odometry), (JointState, ri.read_joint_state)])
def test_bytes_off_the_layout_give_none(cls: type, reader: Any) -> None:
    rng = np.random.default_rng(7)
    msg = ri._random_message(cls, rng)
    msg.header.frame_id, msg.header.stamp.sec = "odom", 12
    if cls is JointState:
        msg.name, msg.position, msg.velocity, msg.effort = ["a", "b"], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]
    data = serialize_message(msg)
    read = reader
    assert read(data) is not None
    for n in range(len(data) - 1):  # every truncation
        assert read(data[:n]) is None, n
    assert read(data + bytes(32)) is None  # trailing bytes beyond any padding
    assert read(b"\x00\x00" + data[2:]) is None  # big-endian encapsulation
    bad = bytearray(data)
    struct.pack_into("<I", bad, 12, 0xFFFFFFF0)  # frame_id length past the end
    assert read(bytes(bad)) is None
    bad = bytearray(data)
    bad[12 + 4 + 4] = 0xFF  # frame_id's NUL overwritten ("odom" + NUL at 16..20)
    assert read(bytes(bad)) is None
    bad = bytearray(data)
    bad[17] = 0  # an embedded NUL ("o\0om"): rclpy would stop there
    assert read(bytes(bad)) is None
    bad = bytearray(data)
    bad[16] = 0xC3  # not UTF-8
    bad[17] = 0x28
    assert read(bytes(bad)) is None
