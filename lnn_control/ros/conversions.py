"""ROS message <-> numpy conversions for the controller node (imports message types; not pure).

Builds the command message from a command vector (through the observation map's field paths),
the unfiltered ``~/nominal_command``, ``lnn_control/SafetyStatus`` from a filter report and
``diagnostic_msgs/DiagnosticArray`` from the node's counters.

The node's hot path refills one message of each kind per step (:class:`ArrayWriter`,
:class:`SafetyStatusWriter`): rclpy serialises a message inside ``publish``, so reusing it is
safe, and building a nested message costs tens of microseconds in Python.
"""

from __future__ import annotations

import array
import importlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from lnn_control.control.observation import ObservationMap
from lnn_control.msg import SafetyStatus

__all__ = [
    "COMMAND_TYPES",
    "STATUS_CODES",
    "f64",
    "message_class",
    "command_message",
    "CommandWriter",
    "array_message",
    "ArrayWriter",
    "safety_status_message",
    "SafetyStatusWriter",
    "SafetyStatusBytes",
    "diagnostics_message",
]

#: Command message types the node can publish (ros2_control forward controllers, mobile bases,
#: force control).
COMMAND_TYPES = (
    "std_msgs/msg/Float64MultiArray",
    "geometry_msgs/msg/Twist",
    "geometry_msgs/msg/TwistStamped",
    "geometry_msgs/msg/WrenchStamped",
)

#: FilterReport.status string -> SafetyStatus.solver_status constant.
STATUS_CODES: dict[str, int] = {
    "optimal": SafetyStatus.STATUS_OPTIMAL,
    "relaxed": SafetyStatus.STATUS_RELAXED,
    "infeasible": SafetyStatus.STATUS_INFEASIBLE,
    "invalid_input": SafetyStatus.STATUS_INVALID_INPUT,
    "stale_input": SafetyStatus.STATUS_STALE_INPUT,
    "solver_error": SafetyStatus.STATUS_SOLVER_ERROR,
    "inactive": SafetyStatus.STATUS_INACTIVE,
}


def message_class(type_name: str) -> type:
    """Message class from ``pkg/msg/Type`` (or ``pkg/Type``); ``ValueError`` naming the type if absent."""
    parts = type_name.split("/")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1] != "msg"):
        raise ValueError(f"message type {type_name!r}: write it as pkg/msg/Type")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[-1])  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as e:
        raise ValueError(f"message type {type_name!r} is not installed ({e})") from e


def as_time(stamp: Any) -> Time:
    """``stamp`` as a ``builtin_interfaces/Time`` (a raw trigger's view carries a plain one with
    the same ``sec`` / ``nanosec``: message setters take only the real type)."""
    if stamp is None:
        return Time()
    if isinstance(stamp, Time):
        return stamp
    return Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec))


def _set_stamp(msg: Any, stamp: Any, frame_id: str) -> None:
    if hasattr(msg, "header"):
        msg.header.stamp = as_time(stamp)
        msg.header.frame_id = frame_id


def command_message(cls: Any, obs: ObservationMap, u: np.ndarray, stamp: Any, frame_id: str) -> Any:
    """Command message holding ``u`` (n_controls,) at ``obs.command_fields``: a new one of class
    ``cls``, or ``cls`` itself refilled when it is a message instance."""
    msg = obs.fill_command(cls() if isinstance(cls, type) else cls, u)
    _set_stamp(msg, stamp, frame_id)
    return msg


_F64 = struct.Struct("<d")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_CDR_LE = b"\x00\x01"  # encapsulation header of little-endian plain CDR


def _diff_at(a: bytes, b: bytes, want: bytes) -> int | None:
    """The one offset where ``b`` holds ``want`` and ``a`` does not (None if none or several).

    ``a`` and ``b`` are two serialisations differing in one probed field; rclpy's serialiser may
    leave alignment padding uninitialised, so other bytes can differ too and are ignored."""
    if len(a) != len(b) or not want:
        return None
    n = len(want)
    found = [i for i in range(len(b) - n + 1) if b[i : i + n] == want and a[i : i + n] != want]
    return found[0] if len(found) == 1 else None


def _same_message(got: Any, want: Any) -> bool:
    """Field-by-field equality, NaN equal to NaN in float arrays (barrier rows without a point)."""
    for name in want.get_fields_and_field_types():
        x, y = getattr(got, name), getattr(want, name)
        if hasattr(y, "get_fields_and_field_types"):
            if not _same_message(x, y):
                return False
        elif hasattr(y, "typecode") or isinstance(y, np.ndarray):
            if not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True):
                return False
        elif x != y:
            return False
    return True


_Layout = tuple[bytearray, list[int], int, int]  # template, field offsets, stamp sec / nanosec offsets


class CommandWriter:
    """The command message for one step, as the serialised bytes ``publish`` sends.

    A command is a few float64 fields plus, for stamped types, the header; everything else in
    the message is constant. So the message is serialised once (per ``frame_id``) with rclpy's
    own serialiser, the byte offsets of the stamp and of each command field are found by
    serialising probe values, and the whole layout is checked: bytes patched with random values,
    read back by rclpy's deserialiser, must equal a message filled the ordinary way (field by
    field: the serialiser may leave alignment padding uninitialised), else the writer keeps using
    the message object. :meth:`write` then packs the values into a copy of the template: no Python
    message is filled, and rclpy skips its conversion (``publish`` takes bytes in Humble through
    Kilted). Every call writes every command field and the stamp, into a fresh ``bytes`` object,
    so a command can never go out half-filled or carry a previous step's values.

    Args:
        cls: the command message class; obs: the observation map (its command field paths).
    """

    def __init__(self, cls: Any, obs: ObservationMap) -> None:
        self.cls, self.obs = cls, obs
        self.msg = cls()  # the object path (layout not verified), refilled by command_message
        self._has_header = hasattr(self.msg, "header")
        self._layouts: dict[str, _Layout | None] = {}
        self.serialised = False  # whether the last write used the verified byte layout

    def _message(self, vals: Sequence[float], sec: int, nanosec: int, frame_id: str) -> Any:
        msg = self.cls()
        self.obs.fill_command(msg, np.asarray(vals, dtype=np.float64))
        if self._has_header:
            msg.header.stamp = Time(sec=sec, nanosec=nanosec)
            msg.header.frame_id = frame_id
        return msg

    def _fill(self, vals: Sequence[float], sec: int, nanosec: int, frame_id: str) -> bytes:
        return serialize_message(self._message(vals, sec, nanosec, frame_id))  # type: ignore[no-any-return]

    def _learn(self, frame_id: str) -> _Layout | None:
        n = len(self.obs.command_fields)
        zeros = [0.0] * n
        base = self._fill(zeros, 0, 0, frame_id)
        if base[:2] != _CDR_LE:
            return None
        offsets: list[int] = []
        for i in range(n):
            probe = zeros.copy()
            probe[i] = 1.2345678901234567 + i
            off = _diff_at(base, self._fill(probe, 0, 0, frame_id), _F64.pack(probe[i]))
            if off is None:
                return None
            offsets.append(off)
        sec_off = ns_off = -1
        if self._has_header:
            a = _diff_at(base, self._fill(zeros, 0x1234567, 0, frame_id), _I32.pack(0x1234567))
            b = _diff_at(base, self._fill(zeros, 0, 0x7654321, frame_id), _U32.pack(0x7654321))
            if a is None or b is None:
                return None
            sec_off, ns_off = a, b
        layout = (bytearray(base), offsets, sec_off, ns_off)
        rng = np.random.default_rng(0)
        for _ in range(3):  # the whole layout, checked against rclpy's serialiser
            vals = rng.uniform(-10.0, 10.0, n).tolist()
            sec, nsec = int(rng.integers(0, 2**31 - 1)), int(rng.integers(0, 10**9))
            packed = self._pack(layout, vals, sec, nsec)
            if not _same_message(
                deserialize_message(packed, self.cls), self._message(vals, sec, nsec, frame_id)
            ):
                return None
        return layout

    @staticmethod
    def _pack(layout: _Layout, vals: Sequence[float], sec: int, nsec: int) -> bytes:
        buf, offsets, sec_off, ns_off = layout
        pack = _F64.pack_into
        for off, v in zip(offsets, vals):
            pack(buf, off, v)
        if sec_off >= 0:
            _I32.pack_into(buf, sec_off, sec)
            _U32.pack_into(buf, ns_off, nsec)
        return bytes(buf)

    def write(self, vals: Sequence[float], stamp: Any, frame_id: str) -> Any:
        """``vals`` (n_controls floats) and ``stamp`` (builtin_interfaces/Time) as the message to
        publish: serialised bytes when the layout is verified, else the refilled message object."""
        if frame_id not in self._layouts:
            self._layouts[frame_id] = self._learn(frame_id)
        layout = self._layouts[frame_id]
        if layout is not None and len(vals) == len(layout[1]):
            self.serialised = True
            return self._pack(layout, vals, int(stamp.sec), int(stamp.nanosec))
        self.serialised = False
        return command_message(self.msg, self.obs, np.asarray(vals, dtype=np.float64), stamp, frame_id)


def f64(values: Any) -> array.array:  # type: ignore[type-arg]
    """``array.array('d')`` of ``values``: message float64[] setters take it without per-element
    checks (lists are checked value by value, tens of microseconds for a SafetyStatus)."""
    a = array.array("d")
    a.frombytes(np.ascontiguousarray(values, dtype=np.float64).reshape(-1).tobytes())
    return a


def array_message(values: np.ndarray, label: str = "") -> Float64MultiArray:
    """``std_msgs/Float64MultiArray`` with one labelled dimension (``~/nominal_command``)."""
    return ArrayWriter(label).write(values)


class ArrayWriter:
    """One ``Float64MultiArray`` (one labelled dimension) refilled by :meth:`write`; the layout is
    rebuilt only when the length changes."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.msg = Float64MultiArray()
        self._n = -1
        self._layouts: dict[int, tuple[bytearray, int] | None] = {}  # length -> verified template

    def write(self, values: np.ndarray) -> Float64MultiArray:
        msg = self.msg
        msg.data = f64(values)
        n = len(msg.data)
        if n != self._n:
            msg.layout.dim = [MultiArrayDimension(label=self.label, size=n, stride=n)]
            self._n = n
        return msg

    def write_serialised(self, values: np.ndarray) -> Any:
        """:meth:`write` as the serialised bytes ``publish`` sends, from a template verified per
        length (values packed at the offset of ``data[0]``, read back and compared field by field
        with :meth:`write`'s message); the message object when the layout cannot be verified."""
        v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        layouts = self._layouts
        if v.size not in layouts:
            layouts[v.size] = self._learn(v.size)
        lay = layouts[v.size]
        if lay is None:
            return self.write(v)
        buf, off = lay
        buf[off : off + 8 * v.size] = v.tobytes()
        return bytes(buf)

    def _learn(self, n: int) -> tuple[bytearray, int] | None:
        def message(vals: np.ndarray) -> Float64MultiArray:
            return ArrayWriter(self.label).write(vals)

        base = serialize_message(message(np.zeros(n)))
        if n == 0 or base[:2] != _CDR_LE:
            return None
        probe = np.zeros(n)
        probe[0] = 1.2345678901234567
        off = _diff_at(base, serialize_message(message(probe)), _F64.pack(probe[0]))
        if off is None:
            return None
        lay = (bytearray(base), off)
        rng = np.random.default_rng(0)
        for _ in range(3):
            vals = rng.uniform(-10.0, 10.0, n)
            buf = lay[0]
            buf[off : off + 8 * n] = vals.tobytes()
            if not _same_message(deserialize_message(bytes(buf), Float64MultiArray), message(vals)):
                return None
        return lay


def safety_status_message(
    report: Any,
    nominal: np.ndarray | None,
    safe: np.ndarray | None,
    command_names: Sequence[str],
    stamp: Any,
    frame_id: str,
    status: str | None = None,
    reason: str | None = None,
) -> SafetyStatus:
    """A new ``SafetyStatus`` from a ``FilterReport`` (or None when no filter ran).

    Args:
        report: FilterReport or None; ``status`` / ``reason`` override its status and
            fallback reason (e.g. ``stale_input`` found by the watchdog).
        nominal, safe: (n_controls,) commands in actuator units; None leaves the array empty.
    """
    return SafetyStatusWriter().write(report, nominal, safe, command_names, stamp, frame_id, status, reason)


class SafetyStatusWriter:
    """One ``SafetyStatus`` refilled by :meth:`write` (arguments as :func:`safety_status_message`).

    Every field is written on every call, so the message equals a freshly built one; the name
    lists are rebuilt only when their source changes (the filter hands out the same tuple of
    constraint names on every call).
    """

    def __init__(self) -> None:
        self.msg = SafetyStatus()
        self._frame: str | None = None
        self._cmd_src: tuple[str, ...] | None = None
        self._con_src: Any = None

    def write(
        self,
        report: Any,
        nominal: np.ndarray | None,
        safe: np.ndarray | None,
        command_names: Sequence[str],
        stamp: Any,
        frame_id: str,
        status: str | None = None,
        reason: str | None = None,
    ) -> SafetyStatus:
        m = self.msg
        m.header.stamp = as_time(stamp)
        if frame_id != self._frame:
            m.header.frame_id = self._frame = frame_id
        m.nominal_command = f64(nominal) if nominal is not None else array.array("d")
        m.safe_command = f64(safe) if safe is not None else array.array("d")
        names = tuple(command_names)
        if names != self._cmd_src:
            m.command_names = [str(n) for n in names]
            self._cmd_src = names
        if report is not None:
            cn = report.constraint_names
            if cn is not self._con_src and tuple(cn) != self._con_src:
                m.constraint_names = [str(n) for n in cn]
                self._con_src = tuple(cn)
            m.barrier_values = f64(report.barrier_values)
            act = report.active
            if isinstance(act, np.ndarray) and act.dtype == np.bool_ and act.ndim == 1:
                m.active = act.tolist()
            else:
                m.active = np.asarray(act, dtype=bool).reshape(-1).tolist()
            m.slack = f64(report.slack)
            m.total_slack = float(report.total_slack)
            m.solver_name = str(report.solver_name)
            m.solve_time = float(report.solve_time)
            m.fallback_used = bool(report.fallback_used)
            m.fallback_reason = str(report.fallback_reason or "")
            m.intervened = bool(report.intervened)
        else:
            if self._con_src != ():
                m.constraint_names = []
                self._con_src = ()
            m.barrier_values = array.array("d")
            m.active = []
            m.slack = array.array("d")
            m.total_slack = 0.0
            m.solver_name = ""
            m.solve_time = 0.0
            m.fallback_used = False
            m.fallback_reason = ""
            m.intervened = False
        st = status if status is not None else (str(report.status) if report is not None else "inactive")
        m.solver_status = STATUS_CODES.get(st, SafetyStatus.STATUS_SOLVER_ERROR)
        if reason is not None:
            m.fallback_used = True
            m.fallback_reason = reason
        return m


class _ProbeReport:
    """A FilterReport stand-in for learning the SafetyStatus byte layout (plain attributes)."""

    def __init__(self, base: Any, m: int) -> None:
        self.constraint_names = base.constraint_names
        self.barrier_values = np.zeros(m)
        self.active = np.zeros(m, dtype=bool)
        self.slack = np.zeros(m)
        self.total_slack = 0.0
        self.solver_name = base.solver_name
        self.solve_time = 0.0
        self.fallback_used = False
        self.fallback_reason = base.fallback_reason
        self.intervened = False
        self.status = "optimal"


# SafetyStatus fields patched in place: (name, kind) with kind "d" float64, "b" bool / uint8,
# "D" a float64 array, "B" a bool array
_STATUS_FIELDS = (
    ("nominal", "D"),
    ("safe", "D"),
    ("barrier_values", "D"),
    ("active", "B"),
    ("slack", "D"),
    ("total_slack", "d"),
    ("solve_time", "d"),
    ("solver_status", "b"),
    ("intervened", "b"),
)  # fallback_used stays the template's False: this path never carries a fallback


class SafetyStatusBytes:
    """``SafetyStatus`` as the serialised bytes ``publish`` sends, for filtered commands.

    For a given filter the message layout is fixed on the filtered path (same constraint names,
    row count, solver name, empty fallback reason, frame, command names): only numbers change.
    The first report of a layout is serialised with rclpy's serialiser, the offsets of the stamp
    and of every number are found by probing, and the layout is checked: bytes patched with random
    values, read back by rclpy's deserialiser, must equal :class:`SafetyStatusWriter`'s message
    for them field by field (NaN rows included); otherwise (and
    for every fallback, override or missing report: rare, with free-text reasons) :meth:`write`
    returns :class:`SafetyStatusWriter`'s message object. Each write fills every number into a
    fresh ``bytes`` object. Arguments as :func:`safety_status_message`.
    """

    def __init__(self) -> None:
        self.objects = SafetyStatusWriter()
        self._layouts: dict[tuple[Any, ...], Any] = {}
        self.serialised = False

    def write(
        self,
        report: Any,
        nominal: np.ndarray | None,
        safe: np.ndarray | None,
        command_names: Sequence[str],
        stamp: Any,
        frame_id: str,
        status: str | None = None,
        reason: str | None = None,
    ) -> Any:
        if (
            report is None
            or status is not None
            or reason is not None
            or report.fallback_used
            or report.fallback_reason
            or nominal is None
            or safe is None
        ):
            self.serialised = False
            return self.objects.write(report, nominal, safe, command_names, stamp, frame_id, status, reason)
        bv = np.ascontiguousarray(report.barrier_values, dtype=np.float64).reshape(-1)
        m = bv.size
        key = (
            frame_id,
            tuple(command_names),
            tuple(report.constraint_names),
            str(report.solver_name),
            np.size(nominal),
            np.size(safe),
            m,
        )
        layout = self._layouts.get(key, False)
        if layout is False:
            layout = self._layouts[key] = self._learn(
                report, len(nominal), len(safe), m, command_names, frame_id
            )
        act = np.asarray(report.active, dtype=bool).reshape(-1)
        sl = np.ascontiguousarray(report.slack, dtype=np.float64).reshape(-1)
        if layout is None or act.size != m or sl.size != m:
            self.serialised = False
            return self.objects.write(report, nominal, safe, command_names, stamp, frame_id, status, reason)
        st = STATUS_CODES.get(str(report.status), SafetyStatus.STATUS_SOLVER_ERROR)
        values = {
            "nominal": np.ascontiguousarray(nominal, dtype=np.float64).reshape(-1),
            "safe": np.ascontiguousarray(safe, dtype=np.float64).reshape(-1),
            "barrier_values": bv,
            "active": act,
            "slack": sl,
            "total_slack": float(report.total_slack),
            "solve_time": float(report.solve_time),
            "solver_status": int(st),
            "intervened": int(bool(report.intervened)),
        }
        self.serialised = True
        return self._pack(layout, values, int(stamp.sec), int(stamp.nanosec))

    @staticmethod
    def _pack(layout: Any, values: Mapping[str, Any], sec: int, nsec: int) -> bytes:
        buf, offsets, sec_off, ns_off = layout
        for name, kind in _STATUS_FIELDS:
            off = offsets[name]
            v = values[name]
            if kind == "D" or kind == "B":
                b = v.tobytes() if kind == "D" else v.astype(np.uint8).tobytes()
                buf[off : off + len(b)] = b
            elif kind == "d":
                _F64.pack_into(buf, off, v)
            else:
                buf[off] = v
        _I32.pack_into(buf, sec_off, sec)
        _U32.pack_into(buf, ns_off, nsec)
        return bytes(buf)

    def _learn(
        self, base: Any, n_nom: int, n_safe: int, m: int, names: Sequence[str], frame_id: str
    ) -> tuple[bytearray, dict[str, int], int, int] | None:
        def message(vals: Mapping[str, Any], sec: int, nsec: int) -> Any:
            rep = _ProbeReport(base, m)
            for k in ("barrier_values", "active", "slack", "total_slack", "solve_time", "intervened"):
                setattr(rep, k, vals[k])
            rep.status = {int(c): s for s, c in STATUS_CODES.items()}.get(
                int(vals["solver_status"]), "optimal"
            )
            return SafetyStatusWriter().write(
                rep, vals["nominal"], vals["safe"], names, Time(sec=sec, nanosec=nsec), frame_id
            )

        def serial(vals: Mapping[str, Any], sec: int, nsec: int) -> bytes:
            return serialize_message(message(vals, sec, nsec))  # type: ignore[no-any-return]

        zero: dict[str, Any] = {
            "nominal": np.zeros(n_nom),
            "safe": np.zeros(n_safe),
            "barrier_values": np.zeros(m),
            "active": np.zeros(m, dtype=bool),
            "slack": np.zeros(m),
            "total_slack": 0.0,
            "solve_time": 0.0,
            "solver_status": int(SafetyStatus.STATUS_OPTIMAL),
            "intervened": False,
        }
        base_bytes = serial(zero, 0, 0)
        if base_bytes[:2] != _CDR_LE:
            return None
        offsets: dict[str, int] = {}
        for name, kind in _STATUS_FIELDS:
            probe = dict(zero)
            if kind == "D":
                if not zero[name].size:
                    offsets[name] = 0
                    continue
                arr = np.zeros(zero[name].size)
                arr[0] = 1.2345678901234567
                probe[name], want = arr, _F64.pack(arr[0])
            elif kind == "B":
                if not zero[name].size:
                    offsets[name] = 0
                    continue
                arr_b = np.zeros(zero[name].size, dtype=bool)
                arr_b[0] = True
                probe[name], want = arr_b, b"\x01"
            elif kind == "d":
                probe[name], want = 1.2345678901234567, _F64.pack(1.2345678901234567)
            else:
                code = int(SafetyStatus.STATUS_RELAXED) if name == "solver_status" else 1
                probe[name] = code if name == "solver_status" else True
                want = bytes([code])
            off = _diff_at(base_bytes, serial(probe, 0, 0), want)
            if off is None:
                return None
            offsets[name] = off
        a = _diff_at(base_bytes, serial(zero, 0x1234567, 0), _I32.pack(0x1234567))
        b = _diff_at(base_bytes, serial(zero, 0, 0x7654321), _U32.pack(0x7654321))
        if a is None or b is None:
            return None
        layout = (bytearray(base_bytes), offsets, a, b)
        rng = np.random.default_rng(0)
        codes = [int(SafetyStatus.STATUS_OPTIMAL), int(SafetyStatus.STATUS_RELAXED)]
        for _ in range(4):
            vals: dict[str, Any] = {
                "nominal": rng.uniform(-5, 5, n_nom),
                "safe": rng.uniform(-5, 5, n_safe),
                "barrier_values": np.where(rng.random(m) < 0.2, np.nan, rng.uniform(-1, 1e3, m)),
                "active": rng.random(m) < 0.5,
                "slack": rng.uniform(0, 1, m),
                "total_slack": float(rng.uniform(0, 5)),
                "solve_time": float(rng.uniform(0, 1e-3)),
                "solver_status": codes[int(rng.integers(0, 2))],
                "intervened": bool(rng.random() < 0.5),
            }
            sec, nsec = int(rng.integers(0, 2**31 - 1)), int(rng.integers(0, 10**9))
            packed = self._pack(layout, {**vals, "intervened": int(vals["intervened"])}, sec, nsec)
            if not _same_message(deserialize_message(packed, SafetyStatus), message(vals, sec, nsec)):
                return None
        return layout


def diagnostics_message(
    name: str, hardware_id: str, level: int | bytes, message: str, values: Mapping[str, Any], stamp: Any
) -> DiagnosticArray:
    """One-status ``DiagnosticArray``; ``level`` is DiagnosticStatus.OK / WARN / ERROR (or 0 / 1 / 2)."""
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    st = DiagnosticStatus(
        level=level if isinstance(level, bytes) else bytes([level]),
        name=name,
        message=message,
        hardware_id=hardware_id,
    )
    st.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    arr.status = [st]
    return arr
