"""The controller node's parameters: each declared once with a description and a range.

``NODE_PARAMS`` lists the node's own settings; ``observation.*`` (read-only) and
``safety_filter.*`` (live-tunable, validated by building the filter) are declared from the
params file, since their names depend on the robot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

__all__ = ["CHOICES", "NODE_PARAMS", "declare_parameters", "parameter_tree"]


def _descriptor(
    text: str,
    lo: float | None = None,
    hi: float | None = None,
    read_only: bool = False,
    integer: bool = False,
    choices: tuple[str, ...] = (),
) -> ParameterDescriptor:
    d = ParameterDescriptor(description=text, read_only=read_only)
    if choices:
        d.additional_constraints = "one of: " + ", ".join(choices)
    if lo is not None and hi is not None:
        if integer:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


# name: (default, description, low, high); scalars only, every one with a range where numeric.
# Node settings other than sensor_timeout / max_dt / default_dt / frame_id / status_every_n (read every step)
# take effect at the next configure (model_file, control_mode, trigger_topic) or activate
# (rate_hz, diagnostics_rate); safety_filter.* is live.
NODE_PARAMS: dict[str, tuple[Any, str, float | None, float | None]] = {
    "robot": ("", "Robot name (informational; config/<robot>.yaml)", None, None),
    "model_file": (
        "",
        "Policy .npz (save_policy); checked when set, used from the next configure",
        None,
        None,
    ),
    "control_mode": (
        "message",
        "'message': one step per trigger_topic message; 'timer': steps at rate_hz (read on configure)",
        None,
        None,
    ),
    "trigger_topic": (
        "",
        "Input topic whose messages trigger a step (message mode; default: observation.stamp_topic; "
        "read on configure)",
        None,
        None,
    ),
    "rate_hz": (100.0, "Control rate in timer mode, Hz (read on activate)", 1.0, 1000.0),
    "sensor_timeout": (
        0.25,
        "Seconds without a message on any input topic before the fallback is sent",
        0.001,
        10.0,
    ),
    "timeout_exempt_topics": (
        Parameter.Type.STRING_ARRAY,
        "Input topics checked only for a first message, not against sensor_timeout (goals sent once)",
        None,
        None,
    ),
    "input_queue_depth": (
        1,
        "Sensor subscriptions keep the last N messages (best effort). 1: a step always uses the newest "
        "message and a node that falls behind skips stale ones instead of working through a backlog "
        "(read on configure)",
        1,
        100,
    ),
    "raw_trigger": (
        True,
        "Take the trigger message as serialised bytes where its layout is fixed and verified (Odometry, "
        "JointState; rclpy's message conversion skipped, rclpy's own decoding the fallback for any message "
        "the layout cannot read); false: rclpy message objects only (read on configure)",
        None,
        None,
    ),
    "default_dt": (0.02, "Liquid-cell step (s) for the first message, before two stamps exist", 1e-5, 1.0),
    "max_dt": (
        0.5,
        "Stamp gaps longer than this (s) are clamped (pauses must not blow up the cell)",
        1e-4,
        60.0,
    ),
    "diagnostics_rate": (1.0, "/diagnostics publish rate, Hz (read on activate)", 0.1, 50.0),
    "frame_id": ("base_link", "frame_id of stamped outputs", None, None),
    "status_every_n": (
        1,
        "Publish ~/nominal_command and ~/safety_status with every n-th filtered command (1: every "
        "one); fallback commands always get theirs. Larger n lightens the step at high rates",
        1,
        1000,
    ),
    "executor": (
        "inputs",
        "'inputs' (default: InputFirstSpinner, the node takes its input messages itself from one wait "
        "set and leaves services, timers and the rest to a single-threaded executor), 'single' "
        "(SingleThreadedExecutor alone) or 'multi' (MultiThreadedExecutor; with rclpy's Python executor "
        "it starved sensor callbacks in tests here); read-only, read at start-up",
        None,
        None,
    ),
}

#: String parameters with a closed set of values (checked on every set, reason given).
CHOICES: dict[str, tuple[str, ...]] = {
    "control_mode": ("message", "timer"),
    "executor": ("inputs", "single", "multi"),
}
READ_ONLY = {"executor"}

# Live-tunable safety_filter leaf names with a range (others are validated by building the filter).
FILTER_RANGES: dict[str, tuple[float, float]] = {
    "margin": (0.0, 10.0),
    "radius": (0.0, 100.0),
    "offset": (-1e4, 1e4),
    "penalty": (0.0, 1e12),
    "max_points": (1, 100000),
}


def declare_parameters(node: Node) -> None:
    """Declare the node's settings and the ``observation.*`` / ``safety_filter.*`` entries of
    its params file; ValueError names a string setting outside its choices."""
    for name, (default, text, lo, hi) in NODE_PARAMS.items():
        integer = isinstance(default, int) and not isinstance(default, bool)
        d = _descriptor(text, lo, hi, name in READ_ONLY, integer, CHOICES.get(name, ()))
        node.declare_parameter(name, default, d)
    for name, allowed in CHOICES.items():
        if node.get_parameter(name).value not in allowed:
            raise ValueError(f"parameter {name}={node.get_parameter(name).value!r}: use one of {allowed}")
    # the tree's names come from the overrides (rclpy keeps them in ``_parameter_overrides`` in
    # Humble through Kilted)
    overrides: Mapping[str, Parameter] = getattr(node, "_parameter_overrides", {})
    for name, p in sorted(overrides.items()):
        if name.startswith("observation."):
            d = _descriptor(
                f"Observation mapping entry (read-only; see docs/ros_interface.md): {name}",
                read_only=True,
            )
        elif name.startswith("safety_filter."):
            leaf = name.rsplit(".", 1)[-1]
            lo, hi = FILTER_RANGES.get(leaf, (None, None))
            is_int = p.type_ == Parameter.Type.INTEGER
            is_num = p.type_ in (Parameter.Type.DOUBLE, Parameter.Type.INTEGER)
            d = _descriptor(
                f"Safety filter setting {name} (live-tunable; validated by building the filter)",
                lo if is_num else None,
                hi if is_num else None,
                integer=is_int,
            )
            d.dynamic_typing = False
        else:
            continue
        node.declare_parameter(name, p.value, d)


def parameter_tree(node: Node, prefix: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Nested dict of the node's parameters under ``prefix.`` (with ``changes`` applied)."""
    flat = {k: v.value for k, v in node.get_parameters_by_prefix(prefix).items()}
    for k, v in (changes or {}).items():
        if k.startswith(prefix + "."):
            flat[k[len(prefix) + 1 :]] = v
    out: dict[str, Any] = {}
    for k, v in flat.items():
        cur = out
        parts = k.split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v
    return out
