"""ROS message <-> numpy conversions for the controller node (imports message types; not pure).

Builds the command message from a command vector (through the observation map's field paths),
the unfiltered ``~/nominal_command``, ``lnn_control/SafetyStatus`` from a filter report and
``diagnostic_msgs/DiagnosticArray`` from the node's counters.
"""

from __future__ import annotations

import array
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from lnn_control.msg import SafetyStatus
from lnn_control.observation import ObservationMap

__all__ = [
    "COMMAND_TYPES",
    "STATUS_CODES",
    "f64",
    "message_class",
    "command_message",
    "array_message",
    "safety_status_message",
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


def _set_stamp(msg: Any, stamp: Any, frame_id: str) -> None:
    if hasattr(msg, "header"):
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id


def command_message(cls: Any, obs: ObservationMap, u: np.ndarray, stamp: Any, frame_id: str) -> Any:
    """Command message holding ``u`` (n_controls,) at ``obs.command_fields``: a new one of class
    ``cls``, or ``cls`` itself refilled when it is a message instance."""
    msg = obs.fill_command(cls() if isinstance(cls, type) else cls, u)
    _set_stamp(msg, stamp, frame_id)
    return msg


def f64(values: Any) -> array.array:  # type: ignore[type-arg]
    """``array.array('d')`` of ``values``: message float64[] setters take it without per-element
    checks (lists are checked value by value, tens of microseconds for a SafetyStatus)."""
    a = array.array("d")
    a.frombytes(np.ascontiguousarray(values, dtype=np.float64).reshape(-1).tobytes())
    return a


def array_message(values: np.ndarray, label: str = "") -> Float64MultiArray:
    """``std_msgs/Float64MultiArray`` with one labelled dimension (``~/nominal_command``)."""
    msg = Float64MultiArray()
    msg.data = f64(values)
    n = len(msg.data)
    msg.layout.dim = [MultiArrayDimension(label=label, size=n, stride=n)]
    return msg


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
    """``SafetyStatus`` from a ``FilterReport`` (or None when no filter ran).

    Args:
        report: FilterReport or None; ``status`` / ``reason`` override its status and
            fallback reason (e.g. ``stale_input`` found by the watchdog).
        nominal, safe: (n_controls,) commands in actuator units; None leaves the array empty.
    """
    m = SafetyStatus()
    _set_stamp(m, stamp, frame_id)
    if nominal is not None:
        m.nominal_command = f64(nominal)
    if safe is not None:
        m.safe_command = f64(safe)
    m.command_names = [str(n) for n in command_names]
    if report is not None:
        m.constraint_names = [str(n) for n in report.constraint_names]
        m.barrier_values = f64(report.barrier_values)
        m.active = np.asarray(report.active, dtype=bool).reshape(-1).tolist()
        m.slack = f64(report.slack)
        m.total_slack = float(report.total_slack)
        m.solver_name = str(report.solver_name)
        m.solve_time = float(report.solve_time)
        m.fallback_used = bool(report.fallback_used)
        m.fallback_reason = str(report.fallback_reason or "")
        m.intervened = bool(report.intervened)
    st = status if status is not None else (str(report.status) if report is not None else "inactive")
    m.solver_status = STATUS_CODES.get(st, SafetyStatus.STATUS_SOLVER_ERROR)
    if reason is not None:
        m.fallback_used = True
        m.fallback_reason = reason
    return m


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
