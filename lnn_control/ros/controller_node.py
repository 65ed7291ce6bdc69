"""Managed (lifecycle) ROS 2 node: liquid policy in, BarrierNet safety filter between, safe command out.

The control logic is :class:`~lnn_control.control.step.ControlStep` (ROS-free; the rollout,
evaluation and training with the filter run the same object). One step per message on
``trigger_topic`` (or per tick at ``rate_hz``)::

    sensor callback --ControlStep.receive(topic, msg, now)--> stamp checks, latest messages
    trigger / tick  --ControlStep.step(now, stamp)--> StepOutput (verified command or fallback)
      --> command topic (CDR bytes), ~/nominal_command, ~/safety_status; counters in /diagnostics

This node does only the ROS part: lifecycle, parameters, subscriptions and QoS, the clock,
publishing, diagnostics. Anything wrong (stale sensor, NaN/Inf or wrong-sized message,
out-of-order stamp, failed solve, policy error) publishes the filter's fallback command and says
why; if even the fallback fails, nothing is published and the status says so.

Parameters: see docs/ros_interface.md. ``observation.*`` is read-only (reconfigure to change);
``safety_filter.*`` is tunable live: a set builds a new filter first, is rejected with the
filter's reason if that fails, and the new filter replaces the old one between two steps.

Run: ``ros2 run lnn_control lnn_controller --ros-args --params-file config/diff_drive.yaml
-p model_file:=policy.npz`` or ``python -m lnn_control.ros.controller_node --ros-args ...``.
"""

from __future__ import annotations

import faulthandler
import gc
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Float64MultiArray

from lnn_control.config import expand_filter_config
from lnn_control.control.observation import ObservationMap
from lnn_control.control.step import COUNTERS, ControlStep, StepOutput, StepSettings
from lnn_control.msg import SafetyStatus
from lnn_control.ros import conversions as rc
from lnn_control.ros import raw_inputs
from lnn_control.ros.controller_params import CHOICES, NODE_PARAMS, declare_parameters, parameter_tree
from lnn_control.ros.spinner import InputFirstSpinner, stop_on_signals

__all__ = ["LnnController", "InputFirstSpinner", "main", "COUNTERS"]

# parameters that ControlStep reads on every message (StepSettings)
_STEP_PARAMS = {"sensor_timeout", "default_dt", "max_dt", "timeout_exempt_topics"}

_LATENCY_WINDOW = 4096


def _bytes_publisher(pub: Any) -> Callable[[Any], None]:
    """``pub.publish`` for the serialised bytes the step's writers make, without rclpy's per-call
    wrappers (the lifecycle decorator, the type checks and the handle context: ~2 of a ~5 us
    publish here); the lifecycle state still gates it (``is_activated``), message objects go
    through ``pub.publish``. The node destroys its publishers only under its publish lock, the
    lock every publish holds, so the handle cannot go away during one."""
    raw = getattr(getattr(pub, "handle", None), "publish_raw", None)
    if raw is None or not isinstance(getattr(type(pub), "is_activated", None), property):
        return pub.publish  # type: ignore[no-any-return]  # an rclpy without these: its own path
    slow = pub.publish

    def publish(data: Any) -> None:
        if type(data) is not bytes:
            slow(data)
        elif pub.is_activated:
            raw(data)

    return publish


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
        declare_parameters(self)
        self._p: dict[str, Any] = {n: self._initial(n) for n in NODE_PARAMS}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)  # kept across reconfigures
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.received: dict[str, int] = {}  # messages taken per input topic (starvation check)
        # seconds per step: message in -> command published, and -> every output published
        self.latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self.step_times: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._t_command = 0.0
        self._core: ControlStep | None = None
        self._reason = ""  # configure failure (the core keeps the fallback reasons)
        self._active = False
        self._pubs: dict[str, Any] = {}
        self._publish: dict[str, Callable[[Any], None]] = {}  # the step's three outputs (_bytes_publisher)
        self._subs: list[Any] = []
        self._timers: list[Any] = []
        self.callbacks: dict[str, Any] = {}  # topic -> subscription callback (benchmarks call it directly)
        # trigger messages taken raw: read by the layout / deserialised by rclpy (the fallback) /
        # dropped (rclpy could not read them either); raw_trigger: whether the trigger is raw now
        self.raw_counts: dict[str, int] = {"parsed": 0, "fallback": 0, "undecodable": 0}
        self.raw_trigger = False
        self._control_group = MutuallyExclusiveCallbackGroup()  # inference: never starves sensors
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._mode = "message"
        self._dt_topic = ""
        self._in_fallback = False
        self._failed_now = False
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

    @property
    def control_step(self) -> ControlStep | None:
        """The :class:`ControlStep` built on configure (None while unconfigured)."""
        return self._core

    @property
    def last_reason(self) -> str:
        """Why the last fallback was sent (or why configure failed)."""
        core = self._core
        return core.last_reason if core is not None else self._reason

    # ---------------------------------------------------------------- parameters
    def _tree(self, prefix: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Nested dict of the parameters under ``prefix.`` (with ``changes`` applied)."""
        return parameter_tree(self, prefix, changes)

    def _build_filter(self, changes: Mapping[str, Any] | None = None) -> Any:
        """The SafetyFilter from the safety_filter parameters (with ``changes`` applied)."""
        from barriernet.safety_filter import SafetyFilter

        return SafetyFilter.from_config(expand_filter_config(self._tree("safety_filter", changes)))

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a set (one ``ros2 param set`` or an atomic batch); the reason says what is wrong.

        A ``safety_filter.*`` change builds the complete new filter here, so a bad value is
        rejected before anything changes; the new filter is swapped in at the start of the
        next control step (never in the middle of one).
        """
        changes = {p.name: p.value for p in params}
        for name, allowed in CHOICES.items():
            if name in changes and changes[name] not in allowed:
                return self._reject(f"{name} must be one of {allowed}, got {changes[name]!r}")
        core = self._core
        if "model_file" in changes:
            problem = self._model_problem(str(changes["model_file"]), changes)
            if problem is not None:
                return self._reject(f"model_file rejected: {problem}")
        if any(k.startswith("safety_filter.") for k in changes):
            try:
                new_filter = self._build_filter(changes)
                if core is not None:
                    core.replace_filter(new_filter)  # checked now, swapped in at the next step
            except Exception as e:  # any failure to build means the set is rejected, with the reason
                return self._reject(f"safety_filter rejected: {e}")
        for k, v in changes.items():
            if k in self._p:
                self._p[k] = v
        if core is not None and not _STEP_PARAMS.isdisjoint(changes):
            core.settings = StepSettings.from_params(self._p, self._dt_topic)
        self.counters["params_accepted"] += 1
        return SetParametersResult(successful=True)

    def _model_problem(self, path: str, changes: Mapping[str, Any]) -> str | None:
        """Why ``path`` cannot be this node's policy (None when it can): loaded and checked against
        the observation mapping and the safety filter as configure would, so a broken file is
        refused when it is set and the running model stays. A good file is used at the next
        configure."""
        if not path:
            return "empty path: set it to a policy .npz (save_policy)"
        from lnn_control.runtime.model_file import load_stepper

        try:
            stepper = load_stepper(path)
            core = self._core
            filt = core.safety_filter if core is not None else self._build_filter(changes)
            ControlStep(ObservationMap(self._tree("observation")), stepper, filt)
        except Exception as e:  # any reason the file cannot run here
            return f"{path}: {e}"
        return None

    def _reject(self, reason: str) -> SetParametersResult:
        self.counters["params_rejected"] += 1
        self.get_logger().warning(f"parameter set rejected: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    def _initial(self, name: str) -> Any:
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # declared by type only, not set (e.g. no exempt topics)
            return None

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as e:  # report the reason and stay unconfigured
            self.get_logger().error(f"configure failed: {e}")
            self._release()
            self._reason = f"configure failed: {e}"
            return TransitionCallbackReturn.FAILURE
        core = self._core
        assert core is not None
        # everything built so far (modules, the model, the filter, the compiled step) lives as
        # long as the node: out of the collector's scans, so that a full collection during a
        # control step walks only what the steps themselves allocate (tens of thousands of
        # objects with numba loaded: ~30 ms a full collection before, ~1 ms after)
        gc.collect()
        gc.freeze()
        self.get_logger().info(
            f"configured: {core.observation.n_inputs} inputs, {core.n_controls} controls, "
            f"{self._mode} mode, command on {self._pubs['command'].topic_name}, "
            f"policy kernel {core.stepper.kernel}"
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
        model_file = str(self._p["model_file"])
        if not model_file:
            raise ValueError("parameter model_file is empty: set it to a policy .npz (save_policy)")
        from lnn_control.runtime.model_file import load_stepper

        stepper = load_stepper(model_file)
        filt = self._build_filter()
        mode = str(self._p["control_mode"])
        trigger = str(self._p["trigger_topic"]) or obs.stamp_topic
        if mode == "message" and trigger not in obs.topic_types:
            raise ValueError(f"trigger_topic {trigger!r} is not an input topic; use one of {obs.topics}")
        # message mode: the cell's dt is the difference of trigger stamps (trigger = stamp_topic
        # by default, as in training); timer mode: the difference of tick times on the node clock
        self._dt_topic = trigger if mode == "message" else ""
        settings = StepSettings.from_params(self._p, self._dt_topic)
        try:
            core = ControlStep(obs, stepper, filt, settings, counters=self.counters, logger=self.get_logger())
        except ValueError as e:
            raise ValueError(f"model {model_file}: {e}") from None
        # the command as serialised bytes from a verified template (CommandWriter): rclpy's
        # conversion of a nested message costs more than packing two floats; layout learnt now
        self._cmd_writer = rc.CommandWriter(cmd_cls, obs)
        self._cmd_writer.write([0.0] * len(obs.command_fields), Time(), str(self._p["frame_id"]))
        self._mode = mode
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "command": self.create_lifecycle_publisher(cmd_cls, obs.command_topic, reliable),
            "nominal": self.create_lifecycle_publisher(Float64MultiArray, "~/nominal_command", reliable),
            "status": self.create_lifecycle_publisher(SafetyStatus, "~/safety_status", reliable),
            "diagnostics": self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", reliable),
        }
        self._publish = {k: _bytes_publisher(self._pubs[k]) for k in ("command", "nominal", "status")}
        self.received = dict.fromkeys(obs.topics, 0)
        sensor_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=int(self._p["input_queue_depth"]),
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
        self._core = core
        self.raw_trigger = False
        # the trigger subscribed last: InputFirstSpinner takes ready sensors before it
        for topic, type_name in sorted(obs.topic_types.items(), key=lambda kv: kv[0] == trigger):
            is_trigger = mode == "message" and topic == trigger
            cls = rc.message_class(type_name)
            # the trigger taken raw (serialised bytes) where its layout is fixed and verified
            # (lnn_control/ros/raw_inputs.py): rclpy's message conversion skipped on every step
            reader = None
            if is_trigger and bool(self._p["raw_trigger"]):
                parts = type_name.split("/")
                reader = raw_inputs.raw_reader(f"{parts[0]}/msg/{parts[-1]}", cls)
                self.raw_trigger = reader is not None
            cb = self._make_callback(core, topic, is_trigger, reader, cls)
            self.callbacks[topic] = cb
            self._subs.append(
                self.create_subscription(
                    cls,
                    topic,
                    cb,
                    sensor_qos,
                    callback_group=self._control_group if is_trigger else self._sensor_group,
                    raw=reader is not None,
                )
            )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._core is not None
        self._core.reset(self._now())
        self._in_fallback = False
        self._skip_status = 0
        if self._mode == "timer":
            self._timers.append(
                self.create_timer(1.0 / float(self._p["rate_hz"]), self._on_timer, self._control_group)
            )
        timeout = float(self._p["sensor_timeout"])
        self._timers.append(
            self.create_timer(max(timeout / 2.0, 0.001), self._on_watchdog, self._control_group)
        )
        self._timers.append(
            self.create_timer(1.0 / float(self._p["diagnostics_rate"]), self._publish_diagnostics)
        )
        ret = super().on_activate(state)
        self._active = True
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._destroy_timers()
        self._send_fallback("deactivated")  # publishers still enabled here
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active:
            self._active = False
            self._destroy_timers()
            if self._send_fallback("shutdown"):
                # the process may exit right after: let the reliable readers acknowledge it
                self._pubs["command"].wait_for_all_acked(Duration(seconds=1.0))
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
        with self._publish_lock:  # no publish in flight (see _bytes_publisher)
            for p in self._pubs.values():
                self.destroy_lifecycle_publisher(p)
            self._subs, self._pubs, self._publish, self.callbacks = [], {}, {}, {}
        if self._core is not None:
            self._reason = self._core.last_reason
        self._core = None

    # ---------------------------------------------------------------- control
    def _now(self) -> float:
        """Node (ROS) time in seconds: sim time with ``use_sim_time``, else the system clock, read
        directly (what the ROS clock reads then) without building an rclpy ``Time`` per message."""
        ts = self._clock_source
        if ts is not None and ts.ros_time_is_active is False:
            return time.time_ns() * 1e-9
        return self.get_clock().now().nanoseconds * 1e-9

    def _make_callback(
        self,
        core: ControlStep,
        topic: str,
        is_trigger: bool,
        reader: Callable[[bytes], Any] | None = None,
        cls: Any = None,
    ) -> Callable[[Any], None]:
        """The subscription callback. With ``reader`` (a raw subscription) it takes serialised
        bytes: the reader's view when the bytes are its layout, else rclpy's deserialisation
        (the checked fallback; bytes rclpy cannot read either are dropped and counted). Message
        objects are taken as they are (tests and benchmarks call the callback directly)."""
        received = self.received
        now_of = self._now
        raw_counts = self.raw_counts
        log = self.get_logger()

        def on_message(msg: Any) -> None:
            t0 = time.perf_counter()
            received[topic] += 1
            if reader is not None and type(msg) is bytes:
                data = msg
                msg = reader(data)
                if msg is None:
                    raw_counts["fallback"] += 1
                    try:
                        msg = deserialize_message(data, cls)
                    except Exception as e:  # not a message of this type at all: drop it, say why
                        raw_counts["undecodable"] += 1
                        log.warning(f"{topic}: dropped a message rclpy cannot deserialise ({e})")
                        return
                else:
                    raw_counts["parsed"] += 1
            now = now_of()
            st = core.receive(topic, msg, now)
            if is_trigger and self._active:
                out = core.step(now, st)
                # outputs carry the trigger's stamp: the sensor time the command answers
                if out is not None and self._send(out, getattr(getattr(msg, "header", None), "stamp", None)):
                    self.step_times.append(time.perf_counter() - t0)
                    self.latencies.append(self._t_command - t0)

        return on_message

    def _on_timer(self) -> None:
        t0 = time.perf_counter()
        core = self._core
        if self._active and core is not None:
            out = core.step(self._now())
            if out is not None and self._send(out):
                self.step_times.append(time.perf_counter() - t0)
                self.latencies.append(self._t_command - t0)

    def _on_watchdog(self) -> None:
        """Stale trigger (no steps) in message mode: the step itself cannot notice, so say it here."""
        core = self._core
        if self._active and core is not None:
            out = core.watchdog(self._now())
            if out is not None:
                self._send(out)

    def _send_fallback(self, reason: str) -> bool:
        core = self._core
        return core is not None and self._send(core.fallback(reason, "inactive"))

    def _send(self, out: StepOutput, stamp: Any = None) -> bool:
        """Publish a step's outputs (command first); True when a command went out."""
        core = self._core
        if not self._publish or core is None:
            return False
        frame = self._p["frame_id"]
        u = out.command
        if u is None:  # not even the fallback verified: only the status says why
            self._failed_now = True
            with self._publish_lock:  # (the writers reuse their messages)
                if self._publish:  # publishers released meanwhile: nothing to send on
                    self._publish["status"](
                        self._status.write(
                            None,
                            out.nominal,
                            None,
                            core.command_names,
                            self.get_clock().now().to_msg(),
                            frame,
                            out.status,
                            out.reason,
                        )
                    )
            return False
        if stamp is None:
            stamp = self.get_clock().now().to_msg()
        # the reused messages (executor: multi, deactivate), and command before telemetry
        with self._publish_lock:
            publish = self._publish
            if not publish:  # publishers released meanwhile
                return False
            publish["command"](self._cmd_writer.write(u.tolist(), stamp, frame))
            self._t_command = time.perf_counter()
            fallback = out.reason is not None or bool(out.report.fallback_used)
            changed = fallback or self._in_fallback  # a fallback, or the first command after one
            self._in_fallback = fallback
            self._failed_now = False
            if not changed and self._skip_status > 0:
                self._skip_status -= 1
                return True  # decimated telemetry (status_every_n): this filtered command goes out alone
            self._skip_status = int(self._p["status_every_n"]) - 1
            if out.nominal is not None:
                publish["nominal"](self._nominal.write_serialised(out.nominal))
            publish["status"](
                self._status.write(
                    out.report, out.nominal, u, core.command_names, stamp, frame, out.status, out.reason
                )
            )
        return True

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
        reason = self.last_reason
        if self._failed_now:
            level, message = DiagnosticStatus.ERROR, reason
        elif self._in_fallback:
            level, message = DiagnosticStatus.WARN, f"fallback: {reason}"
        else:
            level, message = DiagnosticStatus.OK, "filtered commands"
        values: dict[str, Any] = dict(self.counters)
        values["latency_median_us"] = f"{lat['median_s'] * 1e6:.1f}"
        values["latency_p99_us"] = f"{lat['p99_s'] * 1e6:.1f}"
        step = self.latency_summary("step")
        values["step_median_us"] = f"{step['median_s'] * 1e6:.1f}"
        values["step_p99_us"] = f"{step['p99_s'] * 1e6:.1f}"
        values["last_fallback_reason"] = reason
        values["control_mode"] = self._mode
        for topic, n in self.received.items():
            values[f"received {topic}"] = n
        if self.raw_trigger:  # trigger bytes: read by the layout / via rclpy (fallback) / dropped
            values["raw_trigger"] = ", ".join(f"{k} {v}" for k, v in self.raw_counts.items())
        msg = rc.diagnostics_message(
            f"{self.get_name()}: safety filter",
            str(self._p["robot"]),
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


def main(args: list[str] | None = None) -> int:
    """Entry point of ``lnn_controller``: spin until SIGINT / SIGTERM (one or several), then leave
    through the lifecycle (an active node publishes its fallback command once) and exit 0."""
    # our own handlers: rclpy's would close the context before the fallback could go out, and
    # Python's would raise KeyboardInterrupt wherever the second signal of `ros2 launch` lands
    stop = stop_on_signals()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every stack to stderr
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = None
    try:
        node = LnnController()
        kind = str(node.get_parameter("executor").value)
        executor = MultiThreadedExecutor(num_threads=3) if kind == "multi" else SingleThreadedExecutor()
        executor.add_node(node)
        spin: Callable[..., None] = executor.spin_once
        if kind == "inputs":
            ctl = node
            spin = InputFirstSpinner(
                ctl, executor, lambda: ctl.input_subscriptions, lambda: ctl.control_timers
            ).spin_once
        while rclpy.ok() and not stop.is_set():
            spin(timeout_sec=0.1)  # bounded wait: a signal is seen within 0.1 s
    except ExternalShutdownException:
        pass
    finally:
        # the clean exit is bounded: should DDS teardown hang, dump every thread's stack to stderr
        # and leave with status 1 after 10 s (launch would SIGKILL it without telling why)
        faulthandler.dump_traceback_later(10.0, exit=True)
        if node is not None:
            node.stop()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
