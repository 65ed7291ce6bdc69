"""The trigger input taken raw: serialised CDR bytes -> a light message view, no rclpy conversion.

rclpy builds a Python message object for every message it hands to a callback; for a
``nav_msgs/Odometry`` that costs ~90 us (two 36-element covariance arrays, five nested
messages), more than the rest of the controller's step. Where the layout of the trigger message
is fixed, the node subscribes with ``raw=True`` (rclpy hands over the serialised bytes, Humble
through Kilted) and reads the fields here with one ``struct`` call:

- ``nav_msgs/msg/Odometry``: header, child_frame_id, then 85 float64 (pose, its covariance,
  twist, its covariance) at a fixed place after the two strings;
- ``sensor_msgs/msg/JointState``: header, names, position / velocity / effort (any sizes; every
  length is checked against the buffer).

A reader returns a *view*: plain objects with the message's field names (``header.stamp.sec``,
``pose.pose.position.x``, ``position[i]``...), float64 values bit for bit those of rclpy's
deserialiser, covariance as numpy arrays and sequences as ``array.array('d')`` as rclpy gives
them. The views carry every field of the message, so any ``field:`` path of an observation
mapping reads the same value from either.

Checked twice: :func:`raw_reader` verifies a reader against rclpy's own serialiser and
deserialiser on seeded random messages before the node uses it (else the node subscribes
normally); and per message the reader returns None unless the bytes are exactly the layout
(little-endian plain CDR encapsulation, string lengths inside the buffer and NUL-terminated,
UTF-8 without embedded NULs, the total length exact up to the few bytes of final padding that
rclpy's serialiser may leave and its deserialiser ignores), in which case the node deserialises
them with rclpy and takes the ordinary message path.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["RAW_TYPES", "read_odometry", "read_joint_state", "raw_reader", "same_fields"]

_HDR = struct.Struct("<iII")  # stamp.sec, stamp.nanosec, frame_id length (with its NUL)
_TIME = struct.Struct("<iI")
_U32 = struct.Struct("<I")
# Odometry after the strings: pose (3 + 4), its covariance (36), twist (3 + 3), its covariance (36)
_POSE7, _TWIST6 = struct.Struct("<7d"), struct.Struct("<6d")
_LE = b"\x00\x01"  # plain CDR, little endian (the encapsulation's first two bytes)
_LITTLE = sys.byteorder == "little"
_f64 = np.float64


class Time:
    __slots__ = ("sec", "nanosec")

    def __init__(self, sec: int, nanosec: int) -> None:
        self.sec, self.nanosec = sec, nanosec


class Header:
    __slots__ = ("stamp", "frame_id")

    def __init__(self, stamp: Time, frame_id: str) -> None:
        self.stamp, self.frame_id = stamp, frame_id


class Vector3:
    __slots__ = ("x", "y", "z")

    def __init__(self, x: float, y: float, z: float) -> None:
        self.x, self.y, self.z = x, y, z


class Quaternion:
    __slots__ = ("x", "y", "z", "w")

    def __init__(self, x: float, y: float, z: float, w: float) -> None:
        self.x, self.y, self.z, self.w = x, y, z, w


class Pose:
    __slots__ = ("position", "orientation")

    def __init__(self, position: Vector3, orientation: Quaternion) -> None:
        self.position, self.orientation = position, orientation


class _Covariance:
    """A 6x6 covariance read from the bytes on first access (most steps never read it)."""

    __slots__ = ("_data", "_at", "_cov")

    def __init__(self, data: bytes, at: int) -> None:
        self._data, self._at = data, at
        self._cov: np.ndarray | None = None

    @property
    def covariance(self) -> np.ndarray:
        cov = self._cov
        if cov is None:
            cov = self._cov = np.frombuffer(self._data, dtype="<f8", count=36, offset=self._at).astype(_f64)
        return cov


class PoseWithCovariance(_Covariance):
    __slots__ = ("pose",)

    def __init__(self, pose: Pose, data: bytes, at: int) -> None:
        super().__init__(data, at)
        self.pose = pose


class Twist:
    __slots__ = ("linear", "angular")

    def __init__(self, linear: Vector3, angular: Vector3) -> None:
        self.linear, self.angular = linear, angular


class TwistWithCovariance(_Covariance):
    __slots__ = ("twist",)

    def __init__(self, twist: Twist, data: bytes, at: int) -> None:
        super().__init__(data, at)
        self.twist = twist


class Odometry:
    """View of a ``nav_msgs/msg/Odometry`` (the same field names and values)."""

    __slots__ = ("header", "child_frame_id", "pose", "twist")

    def __init__(
        self, header: Header, child: str, pose: PoseWithCovariance, twist: TwistWithCovariance
    ) -> None:
        self.header, self.child_frame_id, self.pose, self.twist = header, child, pose, twist


class JointState:
    """View of a ``sensor_msgs/msg/JointState`` (the same field names and values)."""

    __slots__ = ("header", "name", "position", "velocity", "effort")

    def __init__(self, header: Header, name: list[str], position: Any, velocity: Any, effort: Any) -> None:
        self.header, self.name = header, name
        self.position, self.velocity, self.effort = position, velocity, effort


def _string(data: bytes, o: int, n: int) -> tuple[str, int] | None:
    """The CDR string at offset ``o`` (absolute, 4-aligned past the encapsulation): (text, end)."""
    if o + 4 > n:
        return None
    (ln,) = _U32.unpack_from(data, o)
    e = o + 4 + ln
    if ln < 1 or e > n or data[e - 1] != 0:
        return None
    raw = data[o + 4 : e - 1]
    if b"\x00" in raw:  # rclpy stops at the first NUL: leave such strings to it
        return None
    try:
        return raw.decode(), e
    except UnicodeDecodeError:
        return None


def _header(data: bytes, n: int) -> tuple[Header, int] | None:
    if n < 16 or data[:2] != _LE:
        return None
    sec, nsec, _ = _HDR.unpack_from(data, 4)
    s = _string(data, 12, n)
    if s is None:
        return None
    return Header(Time(sec, nsec), s[0]), s[1]


# the last Odometry's strings as bytes (both lengths and texts), the texts, and where the doubles
# start: a stream repeats its frame ids, so the next message is checked against these bytes
_ODOM_LAST: tuple[bytes, str, str, int] = (b"\xff", "", "", 0)  # matches no message


def read_odometry(data: bytes) -> Odometry | None:
    """View of serialised ``nav_msgs/msg/Odometry`` bytes, or None when they are not the layout."""
    global _ODOM_LAST
    n = len(data)
    strings, frame, child, start = _ODOM_LAST
    if data.startswith(_LE) and data.startswith(strings, 12) and 0 <= n - start - 680 < 8:
        sec, nsec = _TIME.unpack_from(data, 4)  # the same strings as the last message: same layout
        header = Header(Time(sec, nsec), frame)
    else:
        h = _header(data, n)
        if h is None:
            return None
        header, o = h
        c = _string(data, (o + 3) & ~3, n)  # offsets past the 4-byte encapsulation: 4-aligned = aligned
        if c is None:
            return None
        start = 4 + ((c[1] - 4 + 7) & ~7)  # the doubles, 8-aligned relative to the payload
        if not 0 <= n - start - 680 < 8:
            return None
        child = c[0]
        _ODOM_LAST = (data[12 : c[1]], header.frame_id, child, start)
    px, py, pz, qx, qy, qz, qw = _POSE7.unpack_from(data, start)
    lx, ly, lz, ax, ay, az = _TWIST6.unpack_from(data, start + 344)
    return Odometry(
        header,
        child,
        PoseWithCovariance(Pose(Vector3(px, py, pz), Quaternion(qx, qy, qz, qw)), data, start + 56),
        TwistWithCovariance(Twist(Vector3(lx, ly, lz), Vector3(ax, ay, az)), data, start + 392),
    )


def _doubles(data: bytes, o: int, n: int) -> tuple[array.array, int] | None:  # type: ignore[type-arg]
    o = (o + 3) & ~3
    if o + 4 > n:
        return None
    (k,) = _U32.unpack_from(data, o)
    o += 4
    if k:  # the data 8-aligned (an empty sequence has no padding, as rclpy's deserialiser reads it)
        o = 4 + ((o - 4 + 7) & ~7)
    e = o + 8 * k
    if e > n:
        return None
    a = array.array("d")
    a.frombytes(data[o:e])
    return a, e


def read_joint_state(data: bytes) -> JointState | None:
    """View of serialised ``sensor_msgs/msg/JointState`` bytes, or None when they are not the layout."""
    n = len(data)
    h = _header(data, n)
    if h is None:
        return None
    header, o = h
    o = (o + 3) & ~3
    if o + 4 > n:
        return None
    (k,) = _U32.unpack_from(data, o)
    o += 4
    if k > n:  # each name takes >= 5 bytes: a corrupt count fails here, not after k reads
        return None
    names: list[str] = []
    for _ in range(k):
        s = _string(data, (o + 3) & ~3, n)
        if s is None:
            return None
        names.append(s[0])
        o = s[1]
    seqs = []
    for _ in range(3):
        d = _doubles(data, o, n)
        if d is None:
            return None
        seqs.append(d[0])
        o = d[1]
    if not 0 <= n - o < 24:  # rclpy's buffer may end with the padding an empty sequence would take
        return None
    return JointState(header, names, seqs[0], seqs[1], seqs[2])


#: message type name -> reader of its serialised bytes
RAW_TYPES: dict[str, Callable[[bytes], Any]] = {
    "nav_msgs/msg/Odometry": read_odometry,
    "sensor_msgs/msg/JointState": read_joint_state,
}


def same_fields(view: Any, msg: Any) -> bool:
    """Every field of the rclpy message ``msg`` equal in ``view``: floats bit for bit (NaN and
    -0.0 included), arrays element for element and of the same kind, strings and ints equal."""
    for name in msg.get_fields_and_field_types():
        y = getattr(msg, name)
        try:
            x = getattr(view, name)
        except AttributeError:
            return False
        if hasattr(y, "get_fields_and_field_types"):
            if not same_fields(x, y):
                return False
        elif isinstance(y, np.ndarray) or hasattr(y, "typecode"):
            if type(x) is not type(y):
                return False
            if np.asarray(x, dtype=_f64).tobytes() != np.asarray(y, dtype=_f64).tobytes():
                return False
        elif isinstance(y, float):
            if type(x) is not float or struct.pack("<d", x) != struct.pack("<d", y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _random_message(cls: Any, rng: np.random.Generator) -> Any:
    """A seeded message of ``cls`` with random values in every float, stamp and string field."""
    alphabet = "abcdefghij_/0123456789"

    def text() -> str:
        return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(0, 12))))

    def fill(m: Any) -> None:
        for name, typ in m.get_fields_and_field_types().items():
            cur = getattr(m, name)
            if hasattr(cur, "get_fields_and_field_types"):
                fill(cur)
            elif typ == "double":
                setattr(m, name, float(rng.normal() * 10.0 ** rng.integers(-3, 4)))
            elif typ == "int32":
                setattr(m, name, int(rng.integers(-(2**31), 2**31 - 1)))
            elif typ == "uint32":
                setattr(m, name, int(rng.integers(0, 2**32 - 1)))
            elif typ == "string":
                setattr(m, name, text())
            elif typ.startswith("double["):  # fixed-size arrays (covariance)
                setattr(m, name, rng.normal(size=len(cur)))
            elif typ == "sequence<double>":
                setattr(m, name, rng.normal(size=int(rng.integers(0, 5))).tolist())
            elif typ == "sequence<string>":
                setattr(m, name, [text() for _ in range(int(rng.integers(0, 5)))])

    msg = cls()
    fill(msg)
    return msg


def raw_reader(type_name: str, cls: Any, checks: int = 64) -> Callable[[bytes], Any] | None:
    """The reader for ``type_name`` when it exists and agrees with rclpy, else None.

    ``checks`` seeded random messages (every float, stamp and string field random, sequences of
    0-4 elements, special values among the floats) are serialised by rclpy and read back both
    ways; one difference disables the raw path for the type."""
    reader = RAW_TYPES.get(type_name)
    if reader is None or not _LITTLE:
        return None
    from rclpy.serialization import deserialize_message, serialize_message

    rng = np.random.default_rng(15)
    for i in range(checks):
        msg = _random_message(cls, rng)
        if i % 8 == 7 and hasattr(msg, "pose"):
            msg.pose.pose.position.x = [float("nan"), float("inf"), -0.0, 5e-324][(i // 8) % 4]
        data = serialize_message(msg)
        view = reader(data)
        if view is None or not same_fields(view, deserialize_message(data, cls)):
            return None
    return reader
