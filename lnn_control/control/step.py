"""One control step, without ROS: latest messages -> policy -> safety filter -> verified command.

The controller node, the in-process rollout, evaluation, the demo replay and training with the
filter in the loop all run this object, so each measures the same step::

    receive(topic, msg, now): stamp checks, then ObservationMap.update
    step(now, stamp):
        o (n_inputs,), x (n_state,), env <- ObservationMap; dt from trigger stamps (or `now`)
        y = stepper.step(o, min(dt, max_dt))   -> u_nom = y[:n_controls], gains = y[n_controls:]
        u, report = safety_filter.filter(x, u_nom, gains, env)
        verify u: n_controls finite values inside [lower - 1e-9, upper + 1e-9], status
        optimal/relaxed unless the filter used its fallback; else safety_filter.fallback

Anything wrong (stale or never-seen topic, NaN/Inf or wrong-sized message, out-of-order stamp,
policy error, failed solve, unverified output) gives the filter's fallback command with the
reason; a counter per cause is kept in :attr:`ControlStep.counters`. If even the fallback fails
verification the command is None: nothing verified exists to send.

All times are float seconds on the caller's clock (node time, sim time). Not thread-safe except
:meth:`ControlStep.replace_filter`, which may be called from another thread (it is swapped in at
the start of the next step).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lnn_control.control.observation import ObservationError, ObservationMap, stamp_seconds

__all__ = ["COUNTERS", "ControlStep", "StepOutput", "StepSettings", "gain_mismatch"]

#: Counters kept per cause (the node publishes them in /diagnostics; params_* are the node's).
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

_BOX_TOL = 1e-9


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """Timing settings of a :class:`ControlStep` (the node's parameters of the same names).

    Attributes:
        sensor_timeout: s without a message on an input topic before the fallback is sent.
        default_dt: s, the cell's step for the first step (no previous stamp).
        max_dt: s, cap on the cell's dt (pauses must not blow up the cell).
        timeout_exempt_topics: topics checked only for a first message (e.g. goals sent once).
        dt_topic: the trigger topic in message mode (an equal stamp there is out of order);
            "" in timer mode.
    """

    sensor_timeout: float = 0.5
    default_dt: float = 0.02
    max_dt: float = 0.2
    timeout_exempt_topics: tuple[str, ...] = ()
    dt_topic: str = ""

    def __post_init__(self) -> None:
        for name in ("sensor_timeout", "default_dt", "max_dt"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0.0):
                raise ValueError(f"StepSettings.{name} must be a finite number of seconds > 0, got {v!r}")
        object.__setattr__(self, "timeout_exempt_topics", tuple(str(t) for t in self.timeout_exempt_topics))

    @classmethod
    def from_params(cls, params: Mapping[str, Any], dt_topic: str = "") -> StepSettings:
        """From the node's parameters (``read_robot_config``); missing keys keep the defaults."""
        d = cls()
        exempt = params.get("timeout_exempt_topics") or ()
        return cls(
            sensor_timeout=float(params.get("sensor_timeout", d.sensor_timeout)),
            default_dt=float(params.get("default_dt", d.default_dt)),
            max_dt=float(params.get("max_dt", d.max_dt)),
            timeout_exempt_topics=tuple(str(t) for t in exempt),
            dt_topic=str(dt_topic),
        )


@dataclasses.dataclass(slots=True)
class StepOutput:
    """What one step (or a fallback) gives.

    Attributes:
        command: (n_controls,) the verified command to send; None: nothing verified, send nothing.
        nominal: (n_controls,) the policy's command before the filter; None when it did not run.
        report: the barriernet ``FilterReport`` of the filter or of its fallback; None when the
            fallback failed.
        status: None for a filtered command; else why the fallback was sent as a SafetyStatus
            status ("invalid_input", "stale_input", "solver_error", "inactive", ...).
        reason: why a fallback was sent (None for a filtered command).
    """

    command: np.ndarray | None
    nominal: np.ndarray | None
    report: Any
    status: str | None
    reason: str | None

    @property
    def fallback(self) -> bool:
        """True when this is a fallback (ours, or the filter's own, e.g. an infeasible QP)."""
        if self.status is not None or self.reason is not None:
            return True
        return bool(getattr(self.report, "fallback_used", False))


def gain_mismatch(stepper: Any, safety_filter: Any) -> str | None:
    """Why a BarrierNet policy's gain outputs cannot go to ``safety_filter`` (None when they can,
    or when the policy has none): they are passed as a vector, so the names must be the filter's,
    in order."""
    n_gains = int(getattr(stepper, "n_gains", 0) or 0)
    if n_gains == 0:
        return None
    have, want = list(getattr(stepper, "gain_names", [])), list(safety_filter.gain_names)
    if have != want:
        return f"policy gain outputs {have} are not the safety filter's class-K gains {want} (in order)"
    return None


class ControlStep:
    """The per-message control logic of the controller node, ROS-free.

    Args:
        observation: the :class:`ObservationMap` (messages -> o, x, env, command fields).
        stepper: a PolicyStepper-like object: ``step(o (n_inputs,), dt) -> (n_outputs,)``,
            ``reset()``, optional ``n_inputs``, ``n_gains``, ``gain_names``.
        safety_filter: a :class:`barriernet.SafetyFilter` with ``n_controls`` equal to the
            number of command fields; its ``lower``/``upper`` box is checked again here.
        settings: timing (:class:`StepSettings`); replace it with ``step.settings = ...``.
        command_names: names of the command channels (default: the filter's control names).
        counters: a dict to count into (default: a new one with every key of :data:`COUNTERS`).
        logger: where warnings / errors go (anything with ``warning`` and ``error``, e.g. an
            rclpy logger; default the ``logging`` logger of this module).

    Raises:
        ValueError: the policy's inputs, outputs or gains, or the filter's controls, do not fit
            the observation mapping; the message says which and how to fix it.
    """

    def __init__(
        self,
        observation: ObservationMap,
        stepper: Any,
        safety_filter: Any,
        settings: StepSettings = StepSettings(),
        command_names: Sequence[str] | None = None,
        *,
        counters: dict[str, int] | None = None,
        logger: Any = None,
    ) -> None:
        obs = observation
        n_in = getattr(stepper, "n_inputs", None)
        if n_in is not None and int(n_in) != obs.n_inputs:
            raise ValueError(
                f"the policy takes {n_in} inputs but the observation mapping gives {obs.n_inputs} "
                f"({obs.names}); train the policy on this mapping or fix observation.features"
            )
        self.settings = settings
        # dry step: proves the policy runs and gives at least one output per command channel
        y = np.asarray(stepper.step(np.zeros(obs.n_inputs), self._default_dt))
        stepper.reset()
        n_ctl = len(obs.command_fields)
        if y.ndim != 1 or y.size < n_ctl:
            raise ValueError(
                f"the policy gives {y.size} outputs, fewer than the {n_ctl} command fields "
                f"{obs.command_fields}; fix observation.command.fields or the policy's outputs"
            )
        problem = gain_mismatch(stepper, safety_filter)
        if problem is not None:
            raise ValueError(f"{problem}; list the filter's barriers in the policy's training order")
        n_box = int(safety_filter.n_controls)
        if n_box != n_ctl:
            raise ValueError(
                f"safety_filter.controls has {n_box} controls, the command {n_ctl} fields "
                f"{obs.command_fields}"
            )
        self.observation = obs
        self.counters: dict[str, int] = counters if counters is not None else dict.fromkeys(COUNTERS, 0)
        for k in COUNTERS:
            self.counters.setdefault(k, 0)
        self.last_reason = ""  # the last fallback's reason (ours or the filter's own)
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._stepper = stepper
        self._n = n_ctl
        self._filter: Any = None
        self._names: tuple[str, ...] = ()
        self._lo: list[float] = []
        self._hi: list[float] = []
        self._set_filter(safety_filter, command_names)
        self._lock = threading.Lock()  # guards the pending-filter swap
        self._pending: tuple[Any, Sequence[str] | None] | None = None
        self._last_rx: dict[str, float] = {}
        self._last_stamp: dict[str, float] = {}
        self._last_step = 0.0
        self._activated_at = 0.0
        self._t_prev: float | None = None
        self._x_good: np.ndarray | None = None
        self._fault: str | None = None  # one-shot input fault found on receipt (out-of-order stamp)

    @classmethod
    def from_files(
        cls,
        config: str | Path,
        model: str | Path,
        *,
        filter_enabled: bool = True,
        dt_topic: str | None = None,
    ) -> ControlStep:
        """From a robot YAML (``config/<robot>.yaml``: observation, safety_filter, timing) and a
        policy ``.npz``. ``filter_enabled=False`` drops every barrier (only the actuator box
        stays, as ``make demo FILTER=off``). ``dt_topic`` default: the trigger topic in message
        mode (``trigger_topic``, else ``observation.stamp_topic``), "" in timer mode."""
        from barriernet.safety_filter import SafetyFilter
        from lnn_control.config import load_filter_config, load_observation_config, read_robot_config
        from lnn_control.runtime.model_file import load_stepper

        params = read_robot_config(config)
        obs = load_observation_config(config)
        cfg = load_filter_config(config)
        if not filter_enabled:
            cfg["barriers"] = []
        if dt_topic is None:
            message = str(params.get("control_mode", "message")) == "message"
            dt_topic = (str(params.get("trigger_topic") or "") or obs.stamp_topic) if message else ""
        stepper = load_stepper(model)
        try:
            settings = StepSettings.from_params(params, dt_topic)
            return cls(obs, stepper, SafetyFilter.from_config(cfg), settings)
        except ValueError as e:
            raise ValueError(f"{config} with model {model}: {e}") from None

    # ------------------------------------------------------------------ settings and filter
    @property
    def settings(self) -> StepSettings:
        """Timing settings; assigning a new :class:`StepSettings` takes effect at the next call."""
        return self._settings

    @settings.setter
    def settings(self, value: StepSettings) -> None:
        if not isinstance(value, StepSettings):
            raise ValueError(f"settings: expected a StepSettings, got {type(value).__name__}")
        self._settings = value
        # plain attributes: read on every message
        self._timeout = float(value.sensor_timeout)
        self._default_dt = float(value.default_dt)
        self._max_dt = float(value.max_dt)
        self._exempt = frozenset(value.timeout_exempt_topics)
        self._dt_topic = value.dt_topic

    @property
    def safety_filter(self) -> Any:
        """The filter the steps use now (a replacement shows here after the next step)."""
        return self._filter

    @property
    def command_names(self) -> tuple[str, ...]:
        """Names of the command channels (n_controls)."""
        return self._names

    @property
    def n_controls(self) -> int:
        return self._n

    @property
    def stepper(self) -> Any:
        return self._stepper

    def _set_filter(self, safety_filter: Any, command_names: Sequence[str] | None) -> None:
        names = list(command_names) if command_names is not None else list(safety_filter.control_names)
        self._filter = safety_filter
        if len(names) == self._n:
            self._names = tuple(str(n) for n in names)
        elif not self._names:
            self._names = tuple(f"u{i}" for i in range(self._n))
        # the box as plain floats, once per filter (checked on every command)
        self._lo = np.asarray(safety_filter.lower, dtype=np.float64).reshape(-1).tolist()
        self._hi = np.asarray(safety_filter.upper, dtype=np.float64).reshape(-1).tolist()

    def replace_filter(self, safety_filter: Any, command_names: Sequence[str] | None = None) -> None:
        """Use ``safety_filter`` from the next step on (thread-safe; never inside a step).

        Raises:
            ValueError: its controls or class-K gains do not fit (the current filter stays).
        """
        problem = gain_mismatch(self._stepper, safety_filter)
        if problem is not None:
            raise ValueError(problem)
        n_new = int(safety_filter.n_controls)
        if n_new != self._n:
            raise ValueError(
                f"{n_new} controls, but the command has {self._n} fields ({self.observation.command_fields})"
            )
        with self._lock:
            self._pending = (safety_filter, command_names)

    # ------------------------------------------------------------------ messages
    def reset(self, now: float) -> None:
        """Start (activation): the policy's initial state, stamps and faults forgotten; ``now``
        starts the "no message since activation" clock."""
        self._stepper.reset()
        self._t_prev = None
        self._last_step = now
        self._last_rx = {}
        self._last_stamp = {}
        self._fault = None
        self._activated_at = now

    def receive(self, topic: str, msg: Any, now: float) -> float | None:
        """Store ``msg`` unless its stamp goes back in time (then drop it and flag the fault for
        the next step). Returns the message's stamp in s (None when it has none).

        A zero stamp means "unstamped" (e.g. a goal sent from a tool) and is not checked. On the
        trigger topic (``settings.dt_topic``) an equal stamp is out of order too (it would give
        dt = 0). A topic whose last good message is older than ``sensor_timeout`` accepts a
        backwards stamp as a new time base (a restarted simulator or bag): the cell restarts
        from its initial state.
        """
        st = stamp_seconds(msg)
        if st is not None and st > 0.0:
            prev = self._last_stamp.get(topic)
            if prev is not None and (st < prev or (st == prev and topic == self._dt_topic)):
                seen = self._last_rx.get(topic, now)
                if now - seen <= self._timeout:
                    self.counters["out_of_order"] += 1
                    self._fault = (
                        f"out_of_order: {topic} stamp {st:.6f} s is not after the previous {prev:.6f} s "
                        "(message dropped)"
                    )
                    return st
                self._log.warning(f"{topic}: stamps restarted at {st:.6f} s; resetting the policy")
                self._last_stamp.clear()
                self._t_prev = None
                self._stepper.reset()
            self._last_stamp[topic] = st
        self.observation.update(topic, msg)
        self._last_rx[topic] = now
        return st

    def stale_reason(self, now: float) -> str | None:
        """Why the inputs are stale at ``now`` (a topic not seen since :meth:`reset` for longer
        than ``sensor_timeout``, or a non-exempt topic silent that long); None when fresh."""
        rx = self._last_rx
        timeout = self._timeout
        obs = self.observation
        # every step: all topics seen and even the oldest fresh -> nothing to name (exempt or not)
        if len(rx) == len(obs.topic_types) and now - min(rx.values()) <= timeout:
            return None
        for topic in obs.topics:
            seen = rx.get(topic)
            if seen is None:
                if now - self._activated_at > timeout:
                    return f"no message on {topic} since activation ({now - self._activated_at:.3f} s)"
            elif now - seen > timeout and topic not in self._exempt:
                return f"{topic} stale: {now - seen:.3f} s > sensor_timeout {timeout:.3f} s"
        return None

    # ------------------------------------------------------------------ steps
    def step(self, now: float, stamp: float | None = None) -> StepOutput | None:
        """One control step at time ``now`` (s).

        ``stamp``: the trigger message's stamp (s) in message mode (the cell's dt is the
        difference of stamps; a zero or None stamp uses ``now``); None in timer mode.

        Returns None only while some topic has not been seen yet (inside ``sensor_timeout`` of
        :meth:`reset`); else the filtered command or the fallback, with the reason.
        """
        try:
            return self._step(now, stamp)
        except Exception as e:  # a bug must not take the robot's controller down: fall back, say why
            self.counters["policy_error"] += 1
            self._log.error(f"control step raised {type(e).__name__}: {e}")
            return self.fallback(f"internal error {type(e).__name__}: {e}", "solver_error")

    def _step(self, now: float, stamp: float | None) -> StepOutput | None:
        obs, stepper, counters = self.observation, self._stepper, self.counters
        if self._pending is not None:
            with self._lock:  # live parameter change: swap between steps
                pending, self._pending = self._pending, None
            if pending is not None:
                self._set_filter(*pending)
        counters["steps"] += 1
        self._last_step = now
        fault, self._fault = self._fault, None
        if fault is not None:
            return self.fallback(fault, "invalid_input")
        stale = self.stale_reason(now)
        if stale is not None:
            counters["stale"] += 1
            return self.fallback(stale, "stale_input")
        if not obs.ready():
            return None  # not every topic seen yet, still inside sensor_timeout of activation
        try:
            o = obs.observation()
            x = obs.state()
            env = obs.env(copy=False) or None
        except ObservationError as e:
            counters[e.kind if e.kind in counters else "bad_message"] += 1
            return self.fallback(f"{e.kind}: {e}", "invalid_input")
        t = stamp if stamp is not None and stamp > 0.0 else now
        if self._t_prev is not None and t <= self._t_prev:  # clock went back (sim reset)
            self._log.warning("clock went backwards; resetting the policy")
            stepper.reset()
            self._t_prev = None
        dt = ObservationMap.dt(self._t_prev, t, self._default_dt)
        self._t_prev = t
        self._x_good = x
        try:
            y = np.asarray(stepper.step(o, min(dt, self._max_dt)), dtype=np.float64)
        except ValueError as e:
            counters["policy_error"] += 1
            stepper.reset()
            return self.fallback(f"policy: {e}", "invalid_input")
        n = self._n
        u_nom = y[:n]
        gains = y[n:] if y.size > n else None
        try:
            u, report = self._filter.filter(x, u_nom, gains=gains, env=env)
            u = np.asarray(u, dtype=np.float64).reshape(-1)
        except Exception as e:  # the solver must never crash the caller
            counters["solver_error"] += 1
            return self.fallback(f"filter raised {type(e).__name__}: {e}", "solver_error", u_nom)
        problem = self._verify(u, report)
        if problem is not None:
            counters["unverified"] += 1
            return self.fallback(problem, str(report.status), u_nom)
        if report.fallback_used:  # the filter itself chose its fallback (e.g. infeasible QP)
            counters["fallbacks"] += 1
            if str(report.status) == "solver_error":
                counters["solver_error"] += 1
            self.last_reason = str(report.fallback_reason)
        if report.intervened:
            counters["interventions"] += 1
        counters["commands"] += 1
        return StepOutput(u, u_nom, report, None, None)

    def _verify(self, u: np.ndarray, report: Any) -> str | None:
        """Independent last check before a command leaves (plain floats: a few controls)."""
        if u.size != self._n:
            return f"filter returned {u.size} controls, expected {self._n}"
        vals = u.tolist()
        if not all(map(math.isfinite, vals)):
            return "filter returned a non-finite command"
        if not report.fallback_used and str(report.status) not in ("optimal", "relaxed"):
            return f"filter status {report.status} without fallback"
        if any(not (lo - _BOX_TOL <= v <= hi + _BOX_TOL) for v, lo, hi in zip(vals, self._lo, self._hi)):
            return f"command {vals} outside the control box"
        return None

    def watchdog(self, now: float) -> StepOutput | None:
        """The fallback when no step ran within ``sensor_timeout`` of ``now`` (a stale trigger
        in message mode: the step itself cannot notice); else None."""
        if now - self._last_step <= self._timeout:
            return None
        self.counters["stale"] += 1
        return self.fallback(self.stale_reason(now) or "no control step within sensor_timeout", "stale_input")

    def fallback(self, reason: str, status: str, nominal: np.ndarray | None = None) -> StepOutput:
        """The filter's fallback command, verified like any command (e.g. on deactivation:
        ``fallback("deactivated", "inactive")``). Its ``command`` is None when even the fallback
        fails verification (the reason then says why)."""
        self.counters["fallbacks"] += 1
        self.last_reason = reason
        # The fallback is computed at the freshest valid state: the state topics may be fine when
        # another input (goal, scan) is the bad one, and a stale pose would give e.g. gravity
        # compensation for another configuration. Else the last good state, else (never seen) zeros.
        try:
            x = self.observation.state()
        except Exception:
            x = self._x_good if self._x_good is not None else np.zeros(self.observation.n_state)
            reason = f"{reason} (fallback at the {'last good' if self._x_good is not None else 'zero'} state)"
            self.last_reason = reason
        try:
            u, report = self._filter.fallback(x, reason)
            u = np.asarray(u, dtype=np.float64).reshape(-1)
            if u.size != self._n or not np.all(np.isfinite(u)):
                raise ValueError(f"fallback command {u.tolist()} is not {self._n} finite values")
            vals = u.tolist()
            if any(not (lo - _BOX_TOL <= v <= hi + _BOX_TOL) for v, lo, hi in zip(vals, self._lo, self._hi)):
                raise ValueError(f"fallback command {vals} is outside the control box")
        except Exception as e:  # nothing verified to send: send nothing, say so
            self.counters["fallback_failed"] += 1
            self.last_reason = f"{reason}; fallback failed: {e}"
            self._log.error(f"no command sent: {self.last_reason}")
            return StepOutput(None, nominal, None, status, self.last_reason)
        self.counters["commands"] += 1
        return StepOutput(u, nominal, report, status, reason)
