"""Managed (lifecycle) ROS 2 node: liquid policy in, BarrierNet safety filter between, safe command out.

One control step (per message on ``trigger_topic``, or per tick at ``rate_hz``)::

    latest sensor messages --ObservationMap--> o (n_inputs,), x (n_state,), env, dt from stamps
      --PolicyStepper.step(o, dt)--> [u_nom (n_controls,), gains (n_gains,)]
      --SafetyFilter.filter(x, u_nom, gains, env)--> u, FilterReport
      --verify: status ok, finite, inside the control box; else SafetyFilter.fallback--> command topic

Anything wrong (stale sensor, NaN/Inf or wrong-sized message, out-of-order stamp, failed solve,
policy error) publishes the filter's fallback command instead and says why in ``~/safety_status``
and ``/diagnostics``; a counter per cause is kept. The node never publishes an unverified
command: if even the fallback fails, nothing is published and the status says so.

Parameters: see docs/ros_interface.md. ``observation.*`` is read-only (reconfigure to change);
``safety_filter.*`` is tunable live: a set builds a new filter first, is rejected with the
filter's reason if that fails, and the new filter replaces the old one between two steps.

Run: ``ros2 run lnn_control lnn_controller --ros-args --params-file config/diff_drive.yaml
-p model_file:=policy.npz`` or ``python -m lnn_control.ros.controller_node --ros-args ...``.
"""

from __future__ import annotations

import math
import operator
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import (
    ConditionReachedException,
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    SingleThreadedExecutor,
    TimeoutException,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Float64MultiArray

from lnn_control.config import expand_filter_config
from lnn_control.control.observation import ObservationError, ObservationMap, stamp_seconds
from lnn_control.msg import SafetyStatus
from lnn_control.ros import conversions as rc

__all__ = ["LnnController", "InputFirstSpinner", "main", "COUNTERS"]

#: Counters kept by the node and published in /diagnostics.
COUNTERS = (
    "steps",
    "commands",
    "fallbacks",
    "stale",
    "non_finite",
    "wrong_size",
    "missing",
    "bad_message",
    "out_of_order",
    "policy_error",
    "solver_error",
    "unverified",
    "fallback_failed",
    "interventions",
    "params_accepted",
    "params_rejected",
)

_LATENCY_WINDOW = 4096


def _desc(
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
_NODE_PARAMS: dict[str, tuple[Any, str, float | None, float | None]] = {
    "robot": ("", "Robot name (informational; config/<robot>.yaml)", None, None),
    "model_file": (
        "",
        "Policy .npz (lnn_control.runtime.model_file.save_policy); read on configure",
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
_CHOICES: dict[str, tuple[str, ...]] = {
    "control_mode": ("message", "timer"),
    "executor": ("inputs", "single", "multi"),
}
_READ_ONLY = {"executor"}

# Live-tunable safety_filter leaf names with a range (others are validated by building the filter).
_FILTER_RANGES: dict[str, tuple[float, float]] = {
    "margin": (0.0, 10.0),
    "radius": (0.0, 100.0),
    "offset": (-1e4, 1e4),
    "penalty": (0.0, 1e12),
    "max_points": (1, 100000),
}


def _gain_mismatch(stepper: Any, filt: Any) -> str | None:
    """Why a BarrierNet policy's gain outputs cannot go to ``filt`` (None when they can, or when
    the policy has none): they are passed as a vector, so the names must be the filter's, in order."""
    n_gains = int(getattr(stepper, "n_gains", 0) or 0)
    if n_gains == 0:
        return None
    have, want = list(getattr(stepper, "gain_names", [])), list(filt.gain_names)
    if have != want:
        return f"policy gain outputs {have} are not the safety filter's class-K gains {want} (in order)"
    return None


class LnnController(LifecycleNode):
    """Lifecycle node running a liquid policy through a BarrierNet safety filter.

    Args:
        node_name: ROS node name (the params file section, ``lnn_controller`` in config/*.yaml).
        **kwargs: passed to ``LifecycleNode`` (e.g. ``context``, ``parameter_overrides``).

    Threading: sensor callbacks only store the message (microseconds); the control step runs in
    its own mutually exclusive callback group (the trigger subscription, or the timer). ``main()``
    spins the node with :class:`InputFirstSpinner` (``executor: inputs``, default): one thread,
    every ready sensor message taken before the trigger, the node's timers called directly,
    services through a single-threaded executor. ``executor: single`` uses rclpy's executor
    alone (every ready sensor message is still taken before the next wait), and with
    ``executor: multi`` a slow step cannot block them either.

    Outputs: the command goes out first (as bytes from :class:`~lnn_control.ros.conversions.
    CommandWriter`, built whole per step), then ``~/nominal_command`` and ``~/safety_status``.
    """

    def __init__(self, node_name: str = "lnn_controller", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        # rclpy's TimeSource (Humble through Kilted): says whether sim time drives the clock
        ts = getattr(self, "_time_source", None)
        self._clock_source: Any = ts if isinstance(getattr(ts, "ros_time_is_active", None), bool) else None
        for name, (default, text, lo, hi) in _NODE_PARAMS.items():
            integer = isinstance(default, int) and not isinstance(default, bool)
            d = _desc(text, lo, hi, name in _READ_ONLY, integer, _CHOICES.get(name, ()))
            self.declare_parameter(name, default, d)
        for name, allowed in _CHOICES.items():
            if self.get_parameter(name).value not in allowed:
                raise ValueError(f"parameter {name}={self.get_parameter(name).value!r}: use one of {allowed}")
        self._declare_tree_parameters()
        self._p: dict[str, Any] = {n: self._initial(n) for n in _NODE_PARAMS}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None
        self._bounds_list: tuple[Any, list[float], list[float]] | None = None  # (box, lower, upper floats)
        self._names: list[str] = []
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.received: dict[str, int] = {}  # messages taken per input topic (starvation check)
        # seconds per step: message in -> command published, and -> every output published
        self.latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self.step_times: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._t_command = 0.0
        self._lock = threading.Lock()  # guards the pending-filter swap
        self._pending_filter: Any = None
        self._filter: Any = None
        self._stepper: Any = None
        self._obs: ObservationMap | None = None
        self._active = False
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._timers: list[Any] = []
        self.callbacks: dict[str, Any] = {}  # topic -> subscription callback (benchmarks call it directly)
        self._control_group = MutuallyExclusiveCallbackGroup()  # inference: never starves sensors
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._mode = "message"
        self._dt_topic = ""
        self._last_rx: dict[str, float] = {}
        self._last_stamp: dict[str, float] = {}
        self._last_step = 0.0
        self._activated_at = 0.0
        self._t_prev: float | None = None
        self._x_good: np.ndarray | None = None
        self._fault: str | None = None  # one-shot input fault found on receipt (out-of-order stamp)
        self._last_reason = ""
        self._in_fallback = False
        self._failed_now = False
        self._n_controls = 0
        self._trigger_stamp: Any = None
        self._rx_now = 0.0
        self._rx_stamp: float | None = None
        self._cmd_cls: Any = None
        self._cmd_msg: Any = None
        self._cmd_writer: Any = None
        self._nominal = rc.ArrayWriter("nominal")  # reused telemetry messages (publish serialises)
        self._status = rc.SafetyStatusBytes()  # filtered steps: serialised bytes (verified layout)
        self._skip_status = 0  # filtered commands to send without telemetry (status_every_n)
        self._publish_lock = threading.Lock()

    @property
    def input_subscriptions(self) -> list[Any]:
        """The input subscriptions, sensors first and the trigger last (empty while unconfigured)."""
        return list(self._subs)

    @property
    def control_timers(self) -> list[Any]:
        """The node's own timers while active (control tick in timer mode, watchdog, diagnostics)."""
        return list(self._timers)

    # ---------------------------------------------------------------- parameters
    def _declare_tree_parameters(self) -> None:
        """Declare every ``observation.*`` / ``safety_filter.*`` entry given in the params file.

        Their names depend on the robot, so they come from the overrides (rclpy keeps them in
        ``_parameter_overrides`` in Humble through Kilted).
        """
        overrides: Mapping[str, Parameter] = getattr(self, "_parameter_overrides", {})
        for name, p in sorted(overrides.items()):
            if name.startswith("observation."):
                d = _desc(
                    f"Observation mapping entry (read-only; see docs/ros_interface.md): {name}",
                    read_only=True,
                )
            elif name.startswith("safety_filter."):
                leaf = name.rsplit(".", 1)[-1]
                lo, hi = _FILTER_RANGES.get(leaf, (None, None))
                is_int = p.type_ == Parameter.Type.INTEGER
                is_num = p.type_ in (Parameter.Type.DOUBLE, Parameter.Type.INTEGER)
                d = _desc(
                    f"Safety filter setting {name} (live-tunable; validated by building the filter)",
                    lo if is_num else None,
                    hi if is_num else None,
                    integer=is_int,
                )
                d.dynamic_typing = False
            else:
                continue
            self.declare_parameter(name, p.value, d)

    def _tree(self, prefix: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Nested dict of the parameters under ``prefix.`` (with ``changes`` applied)."""
        flat = {k: v.value for k, v in self.get_parameters_by_prefix(prefix).items()}
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

    def _build_filter(self, changes: Mapping[str, Any] | None = None) -> tuple[Any, Any, list[str]]:
        """(filter, control box or None, command names) from the safety_filter parameters."""
        from barriernet.safety_filter import SafetyFilter

        cfg = expand_filter_config(self._tree("safety_filter", changes))
        filt = SafetyFilter.from_config(cfg)
        c = cfg.get("controls", {})
        box = None
        if "lower" in c and "upper" in c:
            box = (np.asarray(c["lower"], dtype=float), np.asarray(c["upper"], dtype=float))
        return filt, box, [str(n) for n in c.get("names", [])]

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a set (one ``ros2 param set`` or an atomic batch); the reason says what is wrong.

        A ``safety_filter.*`` change builds the complete new filter here, so a bad value is
        rejected before anything changes; the new filter is swapped in at the start of the
        next control step (never in the middle of one).
        """
        changes = {p.name: p.value for p in params}
        for name, allowed in _CHOICES.items():
            if name in changes and changes[name] not in allowed:
                return self._reject(f"{name} must be one of {allowed}, got {changes[name]!r}")
        if any(k.startswith("safety_filter.") for k in changes):
            try:
                new_filter = self._build_filter(changes)
            except Exception as e:  # any failure to build means the set is rejected, with the reason
                return self._reject(f"safety_filter rejected: {e}")
            box, names = new_filter[1], new_filter[2]
            problem = _gain_mismatch(self._stepper, new_filter[0])
            if problem is not None:
                return self._reject(f"safety_filter rejected: {problem}")
            n_new = len(box[0]) if box is not None else len(names)
            if self._obs is not None and n_new != self._n_controls:
                return self._reject(
                    f"safety_filter rejected: {n_new} controls, but the command has {self._n_controls} "
                    f"fields ({self._obs.command_fields})"
                )
            with self._lock:
                self._pending_filter = new_filter  # swapped in at the start of the next step
        for k, v in changes.items():
            if k in self._p:
                self._p[k] = v
        self.counters["params_accepted"] += 1
        return SetParametersResult(successful=True)

    def _reject(self, reason: str) -> SetParametersResult:
        self.counters["params_rejected"] += 1
        self.get_logger().warning(f"parameter set rejected: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    def _initial(self, name: str) -> Any:
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # declared by type only, not set (e.g. no exempt topics)
            return None

    def _param(self, name: str) -> Any:
        return self._p[name]  # cached: get_parameter costs microseconds per call on the hot path

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as e:  # report the reason and stay unconfigured
            self.get_logger().error(f"configure failed: {e}")
            self._last_reason = f"configure failed: {e}"
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(
            f"configured: {self._obs.n_inputs if self._obs else 0} inputs, {self._n_controls} controls, "
            f"{self._mode} mode, command on {self._pubs['command'].topic_name}"
        )
        return super().on_configure(state)

    def _configure(self) -> None:
        obs = ObservationMap(self._tree("observation"))
        if obs.command_type not in rc.COMMAND_TYPES:
            raise ValueError(f"observation.command.type {obs.command_type!r}: use one of {rc.COMMAND_TYPES}")
        cmd_cls = rc.message_class(obs.command_type)
        try:  # every command field path must exist on the command message type
            rc.command_message(cmd_cls, obs, np.zeros(len(obs.command_fields)), Time(), "")
        except (AttributeError, TypeError, IndexError, KeyError, ValueError) as e:
            raise ValueError(
                f"observation.command.fields {obs.command_fields} do not fit {obs.command_type}: {e}"
            ) from e
        model_file = str(self._param("model_file"))
        if not model_file:
            raise ValueError("parameter model_file is empty: set it to a policy .npz (save_policy)")
        from lnn_control.runtime.model_file import load_stepper

        stepper = load_stepper(model_file)
        n_in = getattr(stepper, "n_inputs", None)
        if n_in is not None and int(n_in) != obs.n_inputs:
            raise ValueError(
                f"model {model_file} takes {n_in} inputs but the observation mapping gives "
                f"{obs.n_inputs} ({obs.names})"
            )
        # dry step: proves the model runs and gives at least one output per command channel
        y = np.asarray(stepper.step(np.zeros(obs.n_inputs), float(self._param("default_dt"))))
        stepper.reset()
        n_ctl = len(obs.command_fields)
        if y.ndim != 1 or y.size < n_ctl:
            raise ValueError(
                f"model {model_file} gives {y.size} outputs, fewer than the {n_ctl} command fields"
            )
        filt, box, names = self._build_filter()
        problem = _gain_mismatch(stepper, filt)
        if problem is not None:
            raise ValueError(f"model {model_file}: {problem}")
        n_box = len(box[0]) if box is not None else n_ctl
        if n_box != n_ctl:
            raise ValueError(
                f"safety_filter.controls has {n_box} controls, the command {n_ctl} fields "
                f"{obs.command_fields}"
            )
        mode = str(self._param("control_mode"))
        trigger = str(self._param("trigger_topic")) or obs.stamp_topic
        if mode == "message" and trigger not in obs.topic_types:
            raise ValueError(f"trigger_topic {trigger!r} is not an input topic; use one of {obs.topics}")
        self._bounds = box
        self._names = names if len(names) == n_ctl else [f"u{i}" for i in range(n_ctl)]
        self._obs, self._stepper, self._filter, self._n_controls = obs, stepper, filt, n_ctl
        self._cmd_cls, self._mode, self._pending_filter = cmd_cls, mode, None
        # the command as serialised bytes from a verified template (CommandWriter): rclpy's
        # conversion of a nested message costs more than packing two floats; layout learnt now
        self._cmd_writer = rc.CommandWriter(cmd_cls, obs)
        self._cmd_writer.write([0.0] * len(obs.command_fields), Time(), self._frame())
        self._cmd_msg = self._cmd_writer.msg
        # message mode: the cell's dt is the difference of trigger stamps (trigger = stamp_topic
        # by default, as in training); timer mode: the difference of tick times on the node clock
        self._dt_topic = trigger if mode == "message" else ""
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "command": self.create_lifecycle_publisher(cmd_cls, obs.command_topic, reliable),
            "nominal": self.create_lifecycle_publisher(Float64MultiArray, "~/nominal_command", reliable),
            "status": self.create_lifecycle_publisher(SafetyStatus, "~/safety_status", reliable),
            "diagnostics": self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", reliable),
        }
        self.received = dict.fromkeys(obs.topics, 0)
        sensor_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=int(self._param("input_queue_depth")),
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
        # the trigger subscribed last: InputFirstSpinner takes ready sensors before it
        for topic, type_name in sorted(obs.topic_types.items(), key=lambda kv: kv[0] == trigger):
            is_trigger = mode == "message" and topic == trigger
            cb = self._make_callback(topic, is_trigger)
            self.callbacks[topic] = cb
            self._subs.append(
                self.create_subscription(
                    rc.message_class(type_name),
                    topic,
                    cb,
                    sensor_qos,
                    callback_group=self._control_group if is_trigger else self._sensor_group,
                )
            )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stepper.reset()
        self._t_prev = None
        now = self._now()
        self._last_step = now
        self._last_rx = {}
        self._last_stamp = {}
        self._fault = None
        self._activated_at = now
        self._in_fallback = False
        self._skip_status = 0
        if self._mode == "timer":
            self._timers.append(
                self.create_timer(1.0 / float(self._param("rate_hz")), self._on_timer, self._control_group)
            )
        timeout = float(self._param("sensor_timeout"))
        self._timers.append(
            self.create_timer(max(timeout / 2.0, 0.001), self._on_watchdog, self._control_group)
        )
        self._timers.append(
            self.create_timer(1.0 / float(self._param("diagnostics_rate")), self._publish_diagnostics)
        )
        ret = super().on_activate(state)
        self._active = True
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._destroy_timers()
        self._publish_fallback("deactivated", "inactive")  # publishers still enabled here
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active:
            self._active = False
            self._destroy_timers()
            self._publish_fallback("shutdown", "inactive")
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _destroy_timers(self) -> None:
        for t in self._timers:
            self.destroy_timer(t)
        self._timers = []

    def _release(self) -> None:
        self._destroy_timers()
        for s in self._subs:
            self.destroy_subscription(s)
        for p in self._pubs.values():
            self.destroy_lifecycle_publisher(p)
        self._subs, self._pubs, self.callbacks = [], {}, {}
        self._stepper = self._filter = self._obs = self._pending_filter = None

    # ---------------------------------------------------------------- control
    def _now(self) -> float:
        """Node (ROS) time in seconds: sim time with ``use_sim_time``, else the system clock, read
        directly (what the ROS clock reads then) without building an rclpy ``Time`` per message."""
        ts = self._clock_source
        if ts is not None and ts.ros_time_is_active is False:
            return time.time_ns() * 1e-9
        return self.get_clock().now().nanoseconds * 1e-9

    def _make_callback(self, topic: str, is_trigger: bool) -> Any:
        def on_message(msg: Any) -> None:
            t0 = time.perf_counter()
            if self._obs is None:
                return
            self._receive(topic, msg)
            if is_trigger and self._active and self._step(msg):
                self.step_times.append(time.perf_counter() - t0)
                self.latencies.append(self._t_command - t0)

        return on_message

    def _receive(self, topic: str, msg: Any) -> None:
        """Store ``msg`` unless its stamp goes back in time (then drop it and flag the fault).

        A zero stamp means "unstamped" (e.g. a goal sent from a tool) and is not checked. On the
        trigger topic an equal stamp is out of order too (it would give dt = 0). A topic whose
        last good message is older than ``sensor_timeout`` accepts a backwards stamp as a new
        time base (a restarted simulator or bag): the cell restarts from its initial state.
        """
        assert self._obs is not None
        self.received[topic] = self.received.get(topic, 0) + 1
        now = self._now()
        st = stamp_seconds(msg)
        self._rx_now, self._rx_stamp = now, st  # the step of a trigger message reuses both
        if st is not None and st > 0.0:
            prev = self._last_stamp.get(topic)
            if prev is not None and (st < prev or (st == prev and topic == self._dt_topic)):
                seen = self._last_rx.get(topic, now)
                if now - seen <= float(self._param("sensor_timeout")):
                    self.counters["out_of_order"] += 1
                    self._fault = (
                        f"out_of_order: {topic} stamp {st:.6f} s is not after the previous {prev:.6f} s "
                        "(message dropped)"
                    )
                    return
                self.get_logger().warning(f"{topic}: stamps restarted at {st:.6f} s; resetting the policy")
                self._last_stamp.clear()
                self._t_prev = None
                if self._stepper is not None:
                    self._stepper.reset()
            self._last_stamp[topic] = st
        self._obs.update(topic, msg)
        self._last_rx[topic] = now

    def _on_timer(self) -> None:
        t0 = time.perf_counter()
        if self._active and self._step(None):
            self.step_times.append(time.perf_counter() - t0)
            self.latencies.append(self._t_command - t0)

    def _on_watchdog(self) -> None:
        """Stale trigger (no steps) in message mode: the step itself cannot notice, so say it here."""
        if not self._active:
            return
        timeout = float(self._param("sensor_timeout"))
        now = self._now()
        if now - self._last_step > timeout:
            self.counters["stale"] += 1
            self._publish_fallback(
                self._stale_reason(now, timeout) or "no control step within sensor_timeout", "stale_input"
            )

    def _stale_reason(self, now: float, timeout: float) -> str | None:
        assert self._obs is not None
        rx = self._last_rx
        # every step: all topics seen and even the oldest fresh -> nothing to name (exempt or not)
        if len(rx) == len(self._obs.topic_types) and now - min(rx.values()) <= timeout:
            return None
        exempt = self._param("timeout_exempt_topics") or ()
        for topic in self._obs.topics:
            seen = self._last_rx.get(topic)
            if seen is None:
                if now - self._activated_at > timeout:
                    return f"no message on {topic} since activation ({now - self._activated_at:.3f} s)"
            elif now - seen > timeout and topic not in exempt:
                return f"{topic} stale: {now - seen:.3f} s > sensor_timeout {timeout:.3f} s"
        return None

    def _step(self, trigger_msg: Any) -> bool:
        """One control step; returns True when a command (filtered or fallback) was published.

        Outputs are stamped with the trigger message's stamp (the sensor time the command
        answers, so latency and causality can be traced); timer / watchdog outputs with node time.
        """
        header = getattr(trigger_msg, "header", None)
        self._trigger_stamp = getattr(header, "stamp", None)
        try:
            return self._step_inner(trigger_msg is not None)
        except Exception as e:  # a bug must not take the robot's controller down: fall back, say why
            self.counters["policy_error"] += 1
            self.get_logger().error(f"control step raised {type(e).__name__}: {e}")
            return self._publish_fallback(f"internal error {type(e).__name__}: {e}", "solver_error")
        finally:
            self._trigger_stamp = None

    def _step_inner(self, triggered: bool) -> bool:
        obs, stepper = self._obs, self._stepper
        if obs is None or stepper is None:
            return False
        with self._lock:
            if self._pending_filter is not None:  # live parameter change: swap between steps
                (self._filter, self._bounds, names), self._pending_filter = self._pending_filter, None
                if len(names) == self._n_controls:
                    self._names = names
        self.counters["steps"] += 1
        now = self._rx_now if triggered else self._now()
        self._last_step = now
        fault, self._fault = self._fault, None
        if fault is not None:
            return self._publish_fallback(fault, "invalid_input")
        timeout = float(self._param("sensor_timeout"))
        stale = self._stale_reason(now, timeout)
        if stale is not None:
            self.counters["stale"] += 1
            return self._publish_fallback(stale, "stale_input")
        if not obs.ready():
            return False  # not every topic seen yet, still inside sensor_timeout of activation
        try:
            o = obs.observation()
            x = obs.state()
            env = obs.env(copy=False) or None
        except ObservationError as e:
            self.counters[e.kind if e.kind in self.counters else "bad_message"] += 1
            return self._publish_fallback(f"{e.kind}: {e}", "invalid_input")
        t = now
        if triggered:
            st = self._rx_stamp
            t = st if st is not None and st > 0.0 else now
        if self._t_prev is not None and t <= self._t_prev:  # node clock went back (sim reset)
            self.get_logger().warning("clock went backwards; resetting the policy")
            stepper.reset()
            self._t_prev = None
        dt = ObservationMap.dt(self._t_prev, t, float(self._param("default_dt")))
        self._t_prev = t
        self._x_good = x
        try:
            y = np.asarray(stepper.step(o, min(dt, float(self._param("max_dt")))), dtype=np.float64)
        except ValueError as e:
            self.counters["policy_error"] += 1
            stepper.reset()
            return self._publish_fallback(f"policy: {e}", "invalid_input")
        u_nom = y[: self._n_controls]
        gains = y[self._n_controls :] if y.size > self._n_controls else None
        try:
            u, report = self._filter.filter(x, u_nom, gains=gains, env=env)
            u = np.asarray(u, dtype=np.float64).reshape(-1)
        except Exception as e:  # the solver must never crash the node
            self.counters["solver_error"] += 1
            return self._publish_fallback(f"filter raised {type(e).__name__}: {e}", "solver_error", u_nom)
        problem = self._verify(u, report)
        if problem is not None:
            self.counters["unverified"] += 1
            return self._publish_fallback(problem, str(report.status), u_nom)
        if report.fallback_used:  # the filter itself chose its fallback (e.g. infeasible QP)
            self.counters["fallbacks"] += 1
            if str(report.status) == "solver_error":
                self.counters["solver_error"] += 1
            self._last_reason = str(report.fallback_reason)
        if report.intervened:
            self.counters["interventions"] += 1
        self._publish(u, u_nom, report, None, None)
        return True

    def _verify(self, u: np.ndarray, report: Any) -> str | None:
        """Independent last check before a command leaves the node (plain floats: a few controls)."""
        if u.size != self._n_controls:
            return f"filter returned {u.size} controls, expected {self._n_controls}"
        vals = u.tolist()
        if not all(map(math.isfinite, vals)):
            return "filter returned a non-finite command"
        if not report.fallback_used and str(report.status) not in ("optimal", "relaxed"):
            return f"filter status {report.status} without fallback"
        b = self._bounds
        if b is None:
            return None
        lists = self._bounds_list
        if lists is None or lists[0] is not b:  # the box as floats, once per filter
            lists = self._bounds_list = (b, b[0].tolist(), b[1].tolist())
        if any(not (lo - 1e-9 <= v <= hi + 1e-9) for v, lo, hi in zip(vals, lists[1], lists[2])):
            return f"command {vals} outside the control box"
        return None

    def _publish_fallback(self, reason: str, status: str, u_nom: np.ndarray | None = None) -> bool:
        self.counters["fallbacks"] += 1
        self._last_reason = reason
        if self._filter is None or self._obs is None:
            return False
        # The fallback is computed at the freshest valid state: the state topics may be fine when
        # another input (goal, scan) is the bad one, and a stale pose would give e.g. gravity
        # compensation for another configuration. Else the last good state, else (never seen) zeros.
        try:
            x = self._obs.state()
        except Exception:
            x = self._x_good if self._x_good is not None else np.zeros(self._obs.n_state)
            reason = f"{reason} (fallback at the {'last good' if self._x_good is not None else 'zero'} state)"
            self._last_reason = reason
        try:
            u, report = self._filter.fallback(x, reason)
            u = np.asarray(u, dtype=np.float64).reshape(-1)
            if u.size != self._n_controls or not np.all(np.isfinite(u)):
                raise ValueError(f"fallback command {u.tolist()} is not {self._n_controls} finite values")
            b = self._bounds
            if b is not None and (np.any(u < b[0] - 1e-9) or np.any(u > b[1] + 1e-9)):
                raise ValueError(f"fallback command {u.tolist()} is outside the control box")
        except Exception as e:  # nothing verified to send: send nothing, say so
            self.counters["fallback_failed"] += 1
            self._failed_now = True
            self._last_reason = f"{reason}; fallback failed: {e}"
            self.get_logger().error(f"no command sent: {self._last_reason}")
            if "status" in self._pubs:
                stamp = self.get_clock().now().to_msg()
                with self._publish_lock:
                    self._pubs["status"].publish(
                        self._status.write(
                            None,
                            u_nom,
                            None,
                            self._command_names(),
                            stamp,
                            self._frame(),
                            status,
                            self._last_reason,
                        )
                    )
            return False
        self._publish(u, u_nom, report, status, reason)
        return True

    def _command_names(self) -> list[str]:
        return self._names

    def _frame(self) -> str:
        return str(self._param("frame_id"))

    def _publish(
        self, u: np.ndarray, u_nom: np.ndarray | None, report: Any, status: str | None, reason: str | None
    ) -> None:
        if not self._pubs or self._obs is None:
            return
        stamp = self._trigger_stamp if self._trigger_stamp is not None else self.get_clock().now().to_msg()
        frame = self._frame()
        pubs = self._pubs
        # the reused messages (executor: multi, deactivate), and command before telemetry
        with self._publish_lock:
            pubs["command"].publish(self._cmd_writer.write(u.tolist(), stamp, frame))
            self._t_command = time.perf_counter()
            self.counters["commands"] += 1
            fallback = reason is not None or bool(report.fallback_used)
            changed = fallback or self._in_fallback  # a fallback, or the first command after one
            self._in_fallback = fallback
            self._failed_now = False
            if not changed and self._skip_status > 0:
                self._skip_status -= 1
                return  # decimated telemetry (status_every_n): this filtered command goes out alone
            self._skip_status = int(self._param("status_every_n")) - 1
            if u_nom is not None:
                pubs["nominal"].publish(self._nominal.write_serialised(u_nom))
            pubs["status"].publish(
                self._status.write(report, u_nom, u, self._command_names(), stamp, frame, status, reason)
            )

    def latency_summary(self, which: str = "command") -> dict[str, float]:
        """Median / p99 seconds over the last steps: message in -> command published
        (``which="command"``) or -> every output (command, nominal, status) published (``"step"``)."""
        data = self.latencies if which == "command" else self.step_times
        if not data:
            return {"median_s": float("nan"), "p99_s": float("nan"), "n": 0}
        # one partition at the four order statistics, then numpy's default (linear) interpolation:
        # np.median + np.percentile cost ~0.8 ms per diagnostics message here, which at 1 kHz
        # input delays the next step
        a = np.fromiter(data, dtype=float, count=len(data))
        n = a.size
        pos = {p: p * (n - 1) for p in (0.5, 0.99)}
        kth = sorted({k for x in pos.values() for k in (int(x), min(int(x) + 1, n - 1))})
        a.partition(kth)

        def q(p: float) -> float:
            lo = int(pos[p])
            hi = min(lo + 1, n - 1)
            return float(a[lo] + (a[hi] - a[lo]) * (pos[p] - lo))

        return {"median_s": q(0.5), "p99_s": q(0.99), "n": n}

    def _publish_diagnostics(self) -> None:
        """One DiagnosticStatus: OK while filtered commands flow, WARN while the fallback is out
        (message = its reason), ERROR when not even the fallback could be sent."""
        if "diagnostics" not in self._pubs:
            return
        lat = self.latency_summary()
        if self._failed_now:
            level, message = DiagnosticStatus.ERROR, self._last_reason
        elif self._in_fallback:
            level, message = DiagnosticStatus.WARN, f"fallback: {self._last_reason}"
        else:
            level, message = DiagnosticStatus.OK, "filtered commands"
        values: dict[str, Any] = dict(self.counters)
        values["latency_median_us"] = f"{lat['median_s'] * 1e6:.1f}"
        values["latency_p99_us"] = f"{lat['p99_s'] * 1e6:.1f}"
        step = self.latency_summary("step")
        values["step_median_us"] = f"{step['median_s'] * 1e6:.1f}"
        values["step_p99_us"] = f"{step['p99_s'] * 1e6:.1f}"
        values["last_fallback_reason"] = self._last_reason
        values["control_mode"] = self._mode
        for topic, n in self.received.items():
            values[f"received {topic}"] = n
        msg = rc.diagnostics_message(
            f"{self.get_name()}: safety filter",
            str(self._param("robot")),
            level,
            message,
            values,
            self.get_clock().now().to_msg(),
        )
        self._pubs["diagnostics"].publish(msg)

    def stop(self) -> None:
        """Leave the lifecycle cleanly before the process exits (an active node sends its fallback)."""
        try:
            if self._state_machine.current_state[1] in ("unconfigured", "inactive", "active"):
                self.trigger_shutdown()
        except Exception as e:  # exiting anyway; say why the goodbye failed
            self.get_logger().error(f"shutdown transition failed: {e}")


class InputFirstSpinner:
    """Spins one node, taking its input messages and running its timers itself; the executor
    serves everything else (services, other subscriptions, guard conditions).

    rclpy's executors rebuild a wait set of every entity of the node (this lifecycle node has
    about 35: 12 parameter and lifecycle services, 16 waitables, timers, subscriptions) and
    dispatch each callback through a task, for every message: 0.6 ms per message on the 2-core
    CI machine, more than a 1 kHz input leaves, so a keep-last-1 input dropped 20-60 % of the
    messages in the benchmark. Here one rcl wait
    set holds the node's subscriptions, timers, services and clients; a ready subscription from
    ``inputs()`` is taken and its callback called directly, a ready timer from ``timers()`` is
    called directly (same callbacks, same thread, so callback groups keep their meaning); when
    anything else is ready (a request, another subscription such as ``/clock``) the executor is
    drained without blocking right after. It is also drained every ``service_period`` seconds
    regardless (guard conditions, waitables and QoS events are not in the wait set). The entity
    lists are re-read after each drain (only executor callbacks, e.g. a lifecycle transition,
    create or destroy entities).

    Uses the rcl wait set, ``take_message`` and ``call_timer`` that rclpy's own
    ``wait_for_message`` and executors use (Humble through Kilted); without them
    :meth:`spin_once` is ``executor.spin_once``.

    Args:
        node: the node (its entities are read from ``node.subscriptions`` etc.).
        executor: a single-threaded executor the node has been added to.
        inputs: the input subscriptions taken directly (message-only callbacks), in the order to
            take them when several are ready (sensors before the trigger: a step sees the newest).
        timers: the timers called directly (callbacks without arguments); default none.
        service_period: seconds between unconditional executor drains (each costs what one
            executor wait costs, ~0.6 ms here, so a message arriving then waits that long; what
            only they serve, QoS event logs and guard conditions, can wait a second).
    """

    def __init__(
        self,
        node: Any,
        executor: Executor,
        inputs: Callable[[], Sequence[Any]],
        timers: Callable[[], Sequence[Any]] | None = None,
        service_period: float = 1.0,
    ) -> None:
        if not service_period > 0.0:
            raise ValueError(f"service_period must be > 0 s, got {service_period}")
        self._node, self._executor, self._inputs = node, executor, inputs
        self._timers: Callable[[], Sequence[Any]] = timers if timers is not None else list
        self.service_period = float(service_period)
        try:
            from rclpy.impl.implementation_singleton import rclpy_implementation

            self._ws_cls: Any = rclpy_implementation.WaitSet
        except (ImportError, AttributeError):
            self._ws_cls = None
        self._ws: Any = None
        self._entities: tuple[list[Any], ...] = ([], [], [], [])
        self._direct: dict[int, Any] = {}  # subscription handle pointer -> subscription
        self._order: list[int] = []
        self._direct_timers: dict[int, Any] = {}
        self._next_drain = 0.0
        self.taken = 0  # messages taken directly (tests, benchmarks)
        self.timer_calls = 0
        self.drains = 0

    def _rebuild(self) -> None:
        n = self._node
        ents = (list(n.subscriptions), list(n.timers), list(n.services), list(n.clients))
        inputs = [s for s in self._inputs() if s in ents[0]]
        timers = [t for t in self._timers() if t in ents[1]]
        same = self._ws is not None and all(
            len(a) == len(b) and all(map(operator.is_, a, b)) for a, b in zip(ents, self._entities)
        )
        if not same:
            subs, tmrs, services, clients = self._entities = ents
            self._ws = self._ws_cls(len(subs), 0, len(tmrs), len(clients), len(services), 0, n.context.handle)
        self._direct = {s.handle.pointer: s for s in inputs}
        self._order = [s.handle.pointer for s in inputs]
        self._direct_timers = {t.handle.pointer: t for t in timers}

    def drain(self, limit: int = 1000) -> int:
        """Run every executor callback ready now (at most ``limit``), without blocking; returns how many."""
        ex = self._executor
        done = 0
        while done < limit:
            try:
                handler, _, _ = ex.wait_for_ready_callbacks(timeout_sec=0.0)
            except (TimeoutException, ShutdownException, ConditionReachedException):
                break
            handler()
            exc = handler.exception()
            if exc is not None:
                raise exc
            done += 1
        self.drains += 1
        self._next_drain = time.monotonic() + self.service_period
        if self._ws_cls is not None:
            self._rebuild()
        return done

    def spin_once(self, timeout_sec: float = 0.1) -> None:
        """Wait up to ``timeout_sec`` (and at most until the next drain) and handle what is ready."""
        if self._ws_cls is None:
            self._executor.spin_once(timeout_sec=timeout_sec)
            return
        now = time.monotonic()
        if self._ws is None or now >= self._next_drain:
            if self.drain():
                return  # callbacks ran: let the caller check for shutdown before waiting
            now = time.monotonic()
        ws = self._ws
        subs, timers, services, clients = self._entities
        ws.clear_entities()
        for s in subs:
            ws.add_subscription(s.handle)
        for t in timers:
            ws.add_timer(t.handle)
        for c in clients:
            ws.add_client(c.handle)
        for v in services:
            ws.add_service(v.handle)
        wait = max(0.0, min(timeout_sec, self._next_drain - now))
        ws.wait(int(wait * 1e9))
        ready = ws.get_ready_entities("subscription")
        ready_t = ws.get_ready_entities("timer")
        others = any(p not in self._direct for p in ready) or any(
            p not in self._direct_timers for p in ready_t
        )
        if ready:
            for ptr in self._order:
                if ptr in ready:
                    sub = self._direct[ptr]
                    got = sub.handle.take_message(sub.msg_type, sub.raw)
                    if got is not None:
                        self.taken += 1
                        sub.callback(got[0])
        for ptr in ready_t:
            tmr = self._direct_timers.get(ptr)
            if tmr is not None and not tmr.is_canceled():
                tmr.handle.call_timer()  # marks the period as served (the executor does the same)
                self.timer_calls += 1
                tmr.callback()
        if others or ws.get_ready_entities("service") or ws.get_ready_entities("client"):
            self.drain()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lnn_controller``: spin until Ctrl-C / SIGTERM, then shut down through the
    lifecycle (an active node publishes its fallback command once before the context closes)."""
    # our own handlers: rclpy's would close the context before the fallback could go out
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    executor = None
    try:
        node = LnnController()
        kind = str(node.get_parameter("executor").value)
        executor = MultiThreadedExecutor(num_threads=3) if kind == "multi" else SingleThreadedExecutor()
        executor.add_node(node)
        spin: Callable[..., None] = executor.spin_once
        if kind == "inputs":
            spin = InputFirstSpinner(
                node, executor, lambda: node.input_subscriptions, lambda: node.control_timers
            ).spin_once
        while rclpy.ok():
            spin(timeout_sec=0.1)  # bounded wait: signals are seen within 0.1 s
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
