"""Closed-loop demo: simulator node + controller node as separate processes over ROS 2 topics.

``python -m lnn_control.ros.demo --filter on|off --out out/demo`` (what ``make demo`` runs).

Per robot, on its own ``ROS_DOMAIN_ID``:

1. ``python -m lnn_control.ros.sim_node`` (``mujoco_sim``, sim-time stamps) and
   ``python -m lnn_control.ros.controller_node`` (``lnn_controller``, ``--params-file
   config/<robot>.yaml -p model_file:=models/<robot>.npz``) start as two processes. With
   ``--filter off`` every barrier of the safety filter is disabled through its
   ``safety_filter.<name>.enabled`` parameter, so only the actuator box (what the drives clip
   anyway) is left: the policy's own commands reach the robot.
2. Each episode: the controller is deactivated and activated again (its liquid state starts
   from zero), the goal is published until the controller runs its policy rather than its
   fallback (its fallback holds the state it last saw, and the node counts only a goal received
   after activation), then the simulator gets a seeded start (``initial_state`` parameter +
   ``~/reset``; the arm is never left without a command) and this process watches
   ``/sim/ground_truth``, the sensor topics, ``~/safety_status``, ``~/nominal_command`` and the
   command topic until the goal is reached or time runs out; the figures count from the reset.
   The simulator runs in real time (``--real-time-factor``), not in lock-step with the
   controller: a late control step means the last command is held longer, as on a robot.
   Starts, goals and the time limit are :func:`lnn_control.sim.episodes.draw` of ``--seed + i``
   (as every in-process rollout and the recorder draw them).
3. Afterwards the policy's hidden state is reconstructed by replaying the watched observations
   through a :class:`~lnn_control.runtime.stepper.PolicyStepper` (its outputs are checked against the
   node's ``~/nominal_command``).

lane (camera lane keeping): the "goal" is the track map, which the simulator publishes itself on
``/lane/map`` (this process publishes nothing to it); the simulator starts with ``seed`` one below
the first episode's, so its i-th reset drives episode ``100000 + --seed + i``'s track (a held-out
track) from the drawn start; an episode ends after one lap (``episodes.reached``); it runs at
real time or faster (its 20 Hz loop is light).

Episodes are scored by :mod:`lnn_control.sim.episodes` (goal reached, violations by kind,
ground-truth margin), the definitions ``lnn-control evaluate`` uses.
Prints a table (goal reached, time, minimum barrier = ground-truth clearance / joint margin,
max |command| / limit, filter interventions, fallbacks, control latency p50 / p99), writes
``summary.json`` and PNGs under ``--out``, and exits 1 on any safety violation with the filter on.
Latency is measured by this third process: receipt of ``~/safety_status`` (published right after
the command, stamped with the trigger message's stamp) minus receipt of that trigger message.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lnn_control import strict_json
from lnn_control.config import REPO
from lnn_control.ros.service_calls import call_service, wait_lifecycle_ready

__all__ = ["ROBOTS", "summarize", "missing_pieces", "run_robot", "main"]

ROBOTS = ("diff_drive", "arm", "lane")
#: episodes per robot in ``make demo`` (a lane episode is a ~35 s lap in real time)
DEFAULT_EPISODES = {"diff_drive": 3, "arm": 3, "lane": 2}
_NS = 1_000_000_000


def missing_pieces(robot: str, repo: pathlib.Path = REPO, models: pathlib.Path | None = None) -> list[str]:
    """What the closed-loop demo of ``robot`` still lacks in this checkout (empty when runnable)."""
    import importlib.util

    out = []
    for mod in (
        "lnn_control.ros.sim_node",
        "lnn_control.ros.controller_node",
        "lnn_control.runtime.model_file",
        "barriernet.safety_filter",
    ):
        if importlib.util.find_spec(mod) is None:
            out.append(f"module {mod}")
    if not (repo / "config" / f"{robot}.yaml").is_file():
        out.append(f"config/{robot}.yaml")
    if not ((models or repo / "models") / f"{robot}.npz").is_file():
        out.append(f"models/{robot}.npz (scripts/train_demo_policies.sh)")
    return out


def summarize(
    robot: str,
    ground_truth: np.ndarray,
    fields: Sequence[str],
    statuses: Sequence[dict[str, Any]],
    latencies: Sequence[float],
    reached: bool,
    duration: float,
    commands: np.ndarray | None = None,
    limits: Any = None,
) -> dict[str, Any]:
    """Episode figures from the watched topics.

    Args:
        robot: ``diff_drive`` or ``arm``.
        ground_truth: (T, n_fields) rows of ``/sim/ground_truth`` (layout ``fields``).
        statuses: ``~/safety_status`` messages as dicts (``barrier_values``, ``intervened``,
            ``fallback_used``).
        latencies: seconds from a sensor message to the command answering it.
        reached: goal reached; duration: s of sim time until reached or timeout.
        commands: (K, n) commands sent; limits: (n,) their magnitude limits, for the effort ratio
            (without them the arm's ``max_tau_ratio`` ground-truth column is used).

    ``violations`` (ticks with any violation), ``violations_by`` (ticks per kind) and
    ``min_barrier`` (ground-truth margin) are :mod:`lnn_control.sim.episodes`'s;
    ``min_filter_barrier`` is the smallest barrier value the filter reported.
    """
    from lnn_control.sim import episodes as E

    gt = np.asarray(ground_truth, dtype=np.float64).reshape(-1, len(fields))
    col = E.truth(robot, gt, fields)
    kinds = E.violations(robot, gt, fields)
    bad = np.zeros(len(gt), dtype=bool)
    for v in kinds.values():
        bad |= v
    truth = E.margin(robot, gt, fields)
    barrier = [
        float(np.nanmin(s["barrier_values"])) for s in statuses if np.isfinite(s["barrier_values"]).any()
    ]
    effort: float = math.nan
    if commands is not None and limits is not None and np.size(commands):
        effort = float(np.max(np.abs(np.asarray(commands, dtype=float)) / np.asarray(limits, dtype=float)))
    elif "max_tau_ratio" in col and col["max_tau_ratio"].size:
        effort = float(col["max_tau_ratio"].max())
    lat = np.asarray(latencies, dtype=np.float64)
    return {
        "reached": bool(reached),
        "time_s": float(duration),
        "violations": int(bad.sum()),
        "violations_by": {k: int(v.sum()) for k, v in kinds.items()},  # ticks per kind
        "min_barrier": float(truth.min()) if truth.size else math.nan,
        "min_filter_barrier": float(min(barrier)) if barrier else math.nan,
        "max_effort_ratio": effort,
        # arm: the largest max_i |dq_i| / limit_i of any tick (ground truth; > 1 is a violation)
        "max_dq_ratio": float(col["max_dq_ratio"].max()) if "max_dq_ratio" in col and len(gt) else math.nan,
        "interventions": int(sum(bool(s["intervened"]) for s in statuses)),
        "fallbacks": int(sum(bool(s["fallback_used"]) for s in statuses)),
        "fallback_reasons": _reasons(statuses),
        "latency_p50_ms": float(np.percentile(lat, 50) * 1e3) if lat.size else math.nan,
        "latency_p99_ms": float(np.percentile(lat, 99) * 1e3) if lat.size else math.nan,
    }


def _reasons(statuses: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many fallback statuses gave each reason (the filter's or the node's own words)."""
    fell_back = (st for st in statuses if st["fallback_used"])
    return dict(Counter(str(st.get("fallback_reason") or "(no reason given)") for st in fell_back))


@dataclass
class EpisodeLog:
    """What the watcher saw during one episode (arrays built at the end)."""

    start: list[float]
    goal: list[float]
    gt: list[list[float]] = field(default_factory=list)
    gt_t: list[float] = field(default_factory=list)  # sim time (s) of the latest sensor stamp
    statuses: list[dict[str, Any]] = field(default_factory=list)
    status_t: list[float] = field(default_factory=list)
    commands: list[list[float]] = field(default_factory=list)
    nominal: list[list[float]] = field(default_factory=list)
    obs: list[np.ndarray] = field(default_factory=list)  # policy observations at trigger messages
    obs_t: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    replay_statuses: list[dict[str, Any]] = field(default_factory=list)  # from the activation
    replay_status_t: list[float] = field(default_factory=list)
    reached: bool = False
    duration: float = 0.0
    controller_ready: bool = True  # the controller ran its policy (not its fallback) at the reset
    warmup_steps: int = 0  # controller steps between its activation and the reset (old pose, new goal)

    def trim_before(self, t: float, n_statuses: int = 0, n_commands: int = 0, n_latencies: int = 0) -> None:
        """Drop ground truth, statuses and commands from before the episode's reset at sim time ``t``.

        ``n_statuses`` / ``n_commands`` / ``n_latencies``: how many there were when the reset was
        requested; those go, and so do later statuses stamped before ``t`` (in flight, with one
        command each). Statuses are not dropped by stamp alone: one that the node's watchdog sends
        carries node (wall) time, not sim time.
        Observations stay: replaying the policy needs them from the controller's activation.
        """
        k = next((i for i, x in enumerate(self.gt_t) if x >= t), len(self.gt_t))
        self.gt, self.gt_t = self.gt[k:], self.gt_t[k:]
        j = min(n_statuses, len(self.status_t))
        while j < len(self.status_t) and self.status_t[j] < t:
            j += 1
        self.replay_statuses = list(self.statuses)
        self.warmup_steps = j
        self.replay_status_t = list(self.status_t)
        self.statuses, self.status_t = self.statuses[j:], self.status_t[j:]
        in_flight = j - min(n_statuses, j)
        self.commands = self.commands[min(n_commands + in_flight, len(self.commands)) :]
        self.latencies = self.latencies[min(n_latencies, len(self.latencies)) :]


def _stamp_s(stamp: Any) -> float:
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def _status_dict(msg: Any) -> dict[str, Any]:
    return {
        "barrier_values": list(msg.barrier_values),
        "constraint_names": list(msg.constraint_names),
        "intervened": bool(msg.intervened),
        "fallback_used": bool(msg.fallback_used),
        "fallback_reason": str(msg.fallback_reason),
        "nominal": list(msg.nominal_command),
        "safe": list(msg.safe_command),
        "solver_status": int(msg.solver_status),
    }


class _Watcher:
    """In-process ROS node: the controller's lifecycle client, the sim's parameter / reset client, watcher."""

    def __init__(self, robot: str, domain_id: int, config: pathlib.Path) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from lnn_control.config import load_observation_config
        from lnn_control.ros.conversions import message_class

        self.robot = robot
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = Node("lnn_demo", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.obs_map = load_observation_config(config)
        self.log: EpisodeLog | None = None
        self.active = False
        self._sensor_rx: dict[float, float] = {}  # trigger stamp (s) -> receipt time (perf_counter)
        self.latest_sim_t = 0.0
        self.trigger = self.obs_map.stamp_topic
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        from std_msgs.msg import Float64MultiArray

        from lnn_control.msg import SafetyStatus

        n = self.node
        for topic, type_name in self.obs_map.topic_types.items():
            n.create_subscription(message_class(type_name), topic, self._sensor_cb(topic), reliable)
        n.create_subscription(Float64MultiArray, "/sim/ground_truth", self._on_gt, reliable)
        n.create_subscription(SafetyStatus, "/lnn_controller/safety_status", self._on_status, reliable)
        n.create_subscription(
            Float64MultiArray, "/lnn_controller/nominal_command", self._on_nominal, reliable
        )
        cmd_cls = message_class(self.obs_map.command_type)
        n.create_subscription(cmd_cls, self.obs_map.command_topic, self._on_command, reliable)
        from lnn_control.sim.topics import GOAL_TOPIC

        goal_topic = GOAL_TOPIC[robot][0]
        self.goal_topic = goal_topic
        self.goal_pub: Any = n.create_publisher(
            message_class(self.obs_map.topic_types[goal_topic]), goal_topic, reliable
        )
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        self.change_state: Any = n.create_client(ChangeState, "/lnn_controller/change_state")
        self.get_state: Any = n.create_client(GetState, "/lnn_controller/get_state")
        self.set_params: Any = n.create_client(SetParameters, "/mujoco_sim/set_parameters")
        self.reset_sim: Any = n.create_client(Trigger, "/mujoco_sim/reset")
        self.gt_fields: list[str] = []
        self.last_gt: list[float] = []
        self.ok_streak = 0  # consecutive ~/safety_status messages without a fallback

    # ---- callbacks ----------------------------------------------------------------------
    def _sensor_cb(self, topic: str) -> Any:
        def cb(msg: Any) -> None:
            self.obs_map.update(topic, msg)
            if topic != self.trigger or not hasattr(msg, "header"):
                return
            t = _stamp_s(msg.header.stamp)
            self.latest_sim_t = t
            if self.active and self.log is not None:
                self._sensor_rx[t] = time.perf_counter()
                if len(self._sensor_rx) > 4096:
                    self._sensor_rx.pop(next(iter(self._sensor_rx)))
                try:
                    o = self.obs_map.observation()
                except ValueError:
                    return
                self.log.obs.append(o)
                self.log.obs_t.append(t)

        return cb

    def _on_gt(self, msg: Any) -> None:
        if not self.gt_fields and msg.layout.dim:
            self.gt_fields = msg.layout.dim[0].label.split(",")
        self.last_gt = list(msg.data)
        if self.active and self.log is not None:
            self.log.gt.append(list(msg.data))
            self.log.gt_t.append(self.latest_sim_t)

    def _on_status(self, msg: Any) -> None:
        self.ok_streak = 0 if msg.fallback_used else self.ok_streak + 1
        if not (self.active and self.log is not None):
            return
        t = _stamp_s(msg.header.stamp)
        self.log.statuses.append(_status_dict(msg))
        self.log.status_t.append(t)
        # published right after the command, stamped with the trigger's stamp
        t_rx = self._sensor_rx.pop(t, None)
        if t_rx is not None:
            self.log.latencies.append(time.perf_counter() - t_rx)

    def _on_nominal(self, msg: Any) -> None:
        if self.active and self.log is not None:
            self.log.nominal.append(list(msg.data))

    def _on_command(self, msg: Any) -> None:
        if not (self.active and self.log is not None):
            return
        self.log.commands.append(list(self.obs_map.command_from_message(msg)))

    # ---- helpers --------------------------------------------------------------------------
    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    def _spin_once(self) -> None:
        self.executor.spin_once(timeout_sec=0.01)

    def call(self, client: Any, request: Any, timeout: float = 20.0) -> Any:
        return call_service(client, request, self._spin_once, timeout)

    def wait_ready(self, timeout: float = 90.0) -> str:
        """Ask the controller for its lifecycle state until it answers; returns the state's label
        (the first, non-idempotent transition is only sent after that: see ``service_calls``)."""
        return wait_lifecycle_ready(self.get_state, self._spin_once, timeout)

    def transition(self, label: str) -> None:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {
            "configure": Transition.TRANSITION_CONFIGURE,
            "activate": Transition.TRANSITION_ACTIVATE,
            "deactivate": Transition.TRANSITION_DEACTIVATE,
        }
        req = ChangeState.Request()
        req.transition.id = ids[label]
        res = self.call(self.change_state, req, timeout=60.0 if label == "configure" else 20.0)
        if not res.success:
            raise RuntimeError(f"lnn_controller refused to {label}; see its log")

    def reset_episode(self, start: Any) -> float:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        req = SetParameters.Request()
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=list(start))
        req.parameters = [Parameter(name="initial_state", value=value)]
        res = self.call(self.set_params, req)
        if not res.results[0].successful:
            raise RuntimeError(f"mujoco_sim rejected initial_state {start}: {res.results[0].reason}")
        r = self.call(self.reset_sim, Trigger.Request())
        if not r.success:
            raise RuntimeError(f"mujoco_sim reset failed: {r.message}")
        import re

        m = re.search(r"at sim time ([0-9.]+) s", str(r.message))  # mujoco_sim says when it reset
        return float(m.group(1)) if m else self.latest_sim_t

    def wait_controlling(self, goal: Any, timeout: float, streak: int = 10) -> bool:
        """Publish ``goal`` every 0.05 s until the controller runs its policy (not its fallback).

        True once ``streak`` consecutive ``~/safety_status`` messages report no fallback and (arm)
        the simulator applies a command (ground-truth ``max_tau_ratio`` > 0: it hears the
        controller); False after ``timeout`` s of wall time. The node counts a goal only when it
        arrives after its activation, and right after start-up the processes may not have found
        each other yet: until then it sends its fallback, computed for a state it last saw
        (the previous episode's) or none, which is no command for the robot's new start.
        """
        self.ok_streak = 0
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.publish_goal(goal)
            self.spin_for(0.05)
            heard = True
            if self.robot == "arm" and "max_tau_ratio" in self.gt_fields and self.last_gt:
                heard = self.last_gt[self.gt_fields.index("max_tau_ratio")] > 0.0
            if self.ok_streak >= streak and heard:
                return True
        return False

    def publish_goal(self, goal: Any) -> None:
        from lnn_control.ros.sim_node import fill_message
        from lnn_control.sim import topics as T
        from lnn_control.sim.models import ARM_JOINT_NAMES

        if self.robot == "lane":  # the map is the simulator's (it publishes it once a second)
            return
        t_ns = round(self.latest_sim_t * _NS)
        cls = self.goal_pub.msg_type
        if self.robot == "diff_drive":
            fields = T.pose_stamped(goal[0], goal[1], t_ns)
        else:
            fields = {
                "header": T.header(t_ns, "base_link"),
                "name": list(ARM_JOINT_NAMES),
                "position": [float(g) for g in goal],
            }
        self.goal_pub.publish(fill_message(cls(), fields))

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def _command_limits(robot: str) -> np.ndarray:
    from lnn_control.sim import models as M

    if robot == "diff_drive":
        return np.array([M.DIFF_DRIVE_V_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT])
    if robot == "lane":
        from lnn_control.sim.lane import LANE_OMEGA_LIMIT, LANE_V_LIMIT

        return np.array([LANE_V_LIMIT, LANE_OMEGA_LIMIT])
    return np.asarray(M.ARM_TAU_LIMIT, dtype=float)


def _start_processes(
    robot: str,
    domain_id: int,
    filter_on: bool,
    out: pathlib.Path,
    rtf: float,
    model: pathlib.Path,
    seed: int = 0,
) -> list[subprocess.Popen[bytes]]:
    config = REPO / "config" / f"{robot}.yaml"
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    sim_cmd = [
        sys.executable,
        "-m",
        "lnn_control.ros.sim_node",
        "--ros-args",
        "-p",
        f"robot:={robot}",
        "-p",
        "use_sim_time:=true",
        "-p",
        f"real_time_factor:={rtf}",
    ]
    if robot == "lane":  # reset i (1, 2, ...) draws episode seed - 1 + i: the demo's episode i - 1
        sim_cmd += ["-p", f"seed:={max(0, seed - 1)}"]
    ctl_cmd = [
        sys.executable,
        "-m",
        "lnn_control.ros.controller_node",
        "--ros-args",
        "--params-file",
        str(config),
        "-p",
        f"model_file:={model}",
    ]
    if not filter_on:
        from lnn_control.config import read_robot_config

        params = read_robot_config(config)
        names = params.get("safety_filter", {}).get("barriers", [])
        for name in names:
            if isinstance(name, str):
                ctl_cmd += ["-p", f"safety_filter.{name}.enabled:=false"]
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, cmd in (("mujoco_sim", sim_cmd), ("lnn_controller", ctl_cmd)):
        f = open(logs / f"{robot}_{name}.log", "wb")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT))
    return procs


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def _replay_hidden(model: pathlib.Path, log: EpisodeLog, default_dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states (K, state) and outputs (K, n) of a fresh stepper over the watched observations."""
    from lnn_control.runtime.model_file import load_stepper

    stepper = load_stepper(model)
    states, outs = [], []
    t_prev = None
    # the node's first step is the first status it published (its state was reset on activate)
    all_t = log.replay_status_t or log.status_t
    first = min(all_t) if all_t else -math.inf  # min: a watchdog status carries wall time
    sts = log.replay_statuses or log.statuses
    if (
        sts and sts[0]["fallback_used"]
    ):  # lane: fallbacks until the map arrives; the policy's first step is after them
        lead = [t for st, t in zip(sts, all_t) if not st["fallback_used"]]
        first = lead[0] if lead else math.inf
    for o, t in zip(log.obs, log.obs_t):
        if t < first:
            continue
        dt = default_dt if t_prev is None or t <= t_prev else t - t_prev
        t_prev = t
        outs.append(np.asarray(stepper.step(o, dt), dtype=float))
        states.append(stepper.state)
    if not states:
        return np.zeros((0, 0)), np.zeros((0, 0))
    return np.stack(states), np.stack(outs)


def run_robot(
    robot: str,
    filter_on: bool,
    episodes: int,
    seed: int,
    out: pathlib.Path,
    max_time: float | None = None,
    domain_id: int | None = None,
    rtf: float = 1.0,
    models: pathlib.Path = REPO / "models",
    log: Any = print,
) -> dict[str, Any]:
    """Run ``episodes`` closed-loop episodes of ``robot`` over ROS 2; returns its summary (and plots)."""
    from lnn_control.sim import episodes as E

    config = REPO / "config" / f"{robot}.yaml"
    model = (models / f"{robot}.npz").resolve()
    if domain_id is None:  # the caller's domain (tests pick one per run), else one from our pid
        domain_id = int(os.environ.get("ROS_DOMAIN_ID") or 1 + os.getpid() % 100)
    procs = _start_processes(robot, domain_id, filter_on, out, rtf, model, seed)
    w: _Watcher | None = None
    logs: list[EpisodeLog] = []
    try:
        w = _Watcher(robot, domain_id, config)
        w.wait_ready()
        w.transition("configure")
        for i in range(episodes):
            spec = E.draw(robot, seed + i, max_time)
            start, goal, limit = spec.start, spec.goal, spec.time_limit
            ep = EpisodeLog(start=[float(v) for v in start], goal=[float(v) for v in goal])
            if i > 0:
                w.transition("deactivate")
            w.log, w._sensor_rx = ep, {}
            w.active = True
            # Activate first, then reset the sim: the robot is never left uncontrolled (an arm
            # without torque falls onto its limits within ~0.2 s); the figures count from the reset.
            # The reset waits until the controller runs its policy on the new goal: its fallback,
            # sent until then, holds the state it last saw, not the new start.
            w.transition("activate")
            ep.controller_ready = w.wait_controlling(goal, timeout=30.0)
            if not ep.controller_ready:
                log(f"  {robot} episode {i}: controller still on its fallback after 30 s; starting anyway")
            before = len(ep.statuses), len(ep.commands), len(ep.latencies)
            t_reset = w.reset_episode(start)
            w.spin_for(0.05)
            ep.trim_before(t_reset + 1e-6, *before)
            t0: float | None = None
            last_goal = time.monotonic()
            wall_end = time.monotonic() + limit / rtf * 3 + 10  # a loaded machine runs the sim slower
            while time.monotonic() < wall_end:
                w.spin_for(0.02)
                if t0 is None and ep.obs_t:
                    t0 = ep.obs_t[0]
                sim_t = (w.latest_sim_t - t0) if t0 is not None else 0.0
                if time.monotonic() - last_goal > 1.0:
                    w.publish_goal(goal)
                    last_goal = time.monotonic()
                if ep.gt and w.gt_fields and bool(E.reached(robot, ep.gt[-1], w.gt_fields)):
                    ep.reached, ep.duration = True, sim_t
                    break
                if sim_t >= limit:
                    ep.duration = sim_t
                    break
            else:
                ep.duration = (w.latest_sim_t - t0) if t0 is not None else 0.0
            w.active = False
            logs.append(ep)
            log(
                f"  {robot} episode {i}: reached={ep.reached} time={ep.duration:.1f}s "
                f"steps={len(ep.statuses)}"
            )
        w.transition("deactivate")
        fields = list(w.gt_fields)
    finally:
        if w is not None:
            w.close()
        _stop(procs)
    return _report(robot, filter_on, logs, fields, model, out)


def _report(
    robot: str,
    filter_on: bool,
    logs: list[EpisodeLog],
    fields: list[str],
    model: pathlib.Path,
    out: pathlib.Path,
) -> dict[str, Any]:
    from lnn_control.config import read_robot_config

    limits = _command_limits(robot)
    default_dt = float(read_robot_config(REPO / "config" / f"{robot}.yaml").get("default_dt", 0.02))
    per_ep = []
    hidden = []
    for ep in logs:
        s = summarize(
            robot,
            np.asarray(ep.gt, dtype=float).reshape(-1, len(fields)),
            fields,
            ep.statuses,
            ep.latencies,
            ep.reached,
            ep.duration,
            np.asarray(ep.commands, dtype=float),
            limits,
        )
        h, y = _replay_hidden(model, ep, default_dt)
        hidden.append(h)
        # compare up to the first fallback (after it the node skipped or reset policy steps)
        prefix: list[Any] = []
        seen = {id(x) for x in ep.replay_statuses}
        for st in ep.replay_statuses + [x for x in ep.statuses if id(x) not in seen]:
            if st["fallback_used"] or not st["nominal"]:
                if not prefix:
                    continue  # leading fallbacks (lane: no map yet): the policy did not step
                break
            prefix.append(st["nominal"])
        nom = np.asarray(prefix, dtype=float) if prefix else np.zeros((0, y.shape[1] if y.ndim == 2 else 1))
        k = min(len(nom), len(y))
        # replay vs node: equal unless a best-effort sensor message was missed by one side
        s["replay_max_abs_diff"] = float(np.abs(nom[:k] - y[:k, : nom.shape[1]]).max()) if k else math.nan
        s["start"], s["goal"] = ep.start, ep.goal
        s["controller_ready"] = ep.controller_ready
        s["warmup_steps"] = ep.warmup_steps
        per_ep.append(s)
    lat = np.concatenate([np.asarray(ep.latencies) for ep in logs]) if logs else np.zeros(0)
    reached_t = [s["time_s"] for s in per_ep if s["reached"]]
    summary = {
        "robot": robot,
        "filter": "on" if filter_on else "off",
        "episodes": len(per_ep),
        "goals_reached": sum(s["reached"] for s in per_ep),
        "mean_time_s": float(np.mean(reached_t)) if reached_t else math.nan,
        "violations": sum(s["violations"] for s in per_ep),
        "min_barrier": min((s["min_barrier"] for s in per_ep), default=math.nan),
        "min_filter_barrier": min((s["min_filter_barrier"] for s in per_ep), default=math.nan),
        "max_effort_ratio": max((s["max_effort_ratio"] for s in per_ep), default=math.nan),
        "max_dq_ratio": max((s["max_dq_ratio"] for s in per_ep), default=math.nan),
        "interventions": sum(s["interventions"] for s in per_ep),
        "fallbacks": sum(s["fallbacks"] for s in per_ep),
        "fallback_reasons": dict(sum((Counter(s["fallback_reasons"]) for s in per_ep), Counter())),
        "steps": sum(len(ep.statuses) for ep in logs),
        "latency_p50_ms": float(np.percentile(lat, 50) * 1e3) if lat.size else math.nan,
        "latency_p99_ms": float(np.percentile(lat, 99) * 1e3) if lat.size else math.nan,
        "per_episode": per_ep,
    }
    summary["plots"] = _plots(robot, logs, fields, hidden, out)
    return summary


def _plots(
    robot: str,
    logs: list[EpisodeLog],
    fields: list[str],
    hidden: list[np.ndarray],
    out: pathlib.Path,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lnn_control.sim import episodes as E
    from lnn_control.sim import models as M

    paths = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # 1. trajectory
    fig, ax = plt.subplots(figsize=(6, 5.5) if robot in ("diff_drive", "lane") else (8, 4.5), dpi=110)
    if robot == "lane":
        ix, iy = fields.index("x"), fields.index("y")
        for i, ep in enumerate(logs):
            c = colours[i % len(colours)]
            edges = np.asarray(ep.goal, dtype=float).reshape(2, -1, 2)  # the map: left, right
            for e in edges:
                ax.plot(*np.vstack([e, e[:1]]).T, color=c, lw=0.8, alpha=0.6)
            gt = np.asarray(ep.gt, dtype=float).reshape(-1, len(fields))
            ax.plot(gt[:, ix], gt[:, iy], color=c, lw=1.5, label=f"episode {i}")
            ax.plot(*ep.start[:2], "o", color=c)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
    elif robot == "diff_drive":
        h = M.ROOM_HALF_SIZE
        ax.add_patch(plt.Rectangle((-h, -h), 2 * h, 2 * h, fill=False, lw=2, color="k"))
        for cx, cy, r in M.OBSTACLES:
            ax.add_patch(plt.Circle((cx, cy), r, color="0.5"))
        ix, iy = fields.index("x"), fields.index("y")
        for i, ep in enumerate(logs):
            gt = np.asarray(ep.gt, dtype=float).reshape(-1, len(fields))
            c = colours[i % len(colours)]
            ax.plot(gt[:, ix], gt[:, iy], color=c, lw=1.5, label=f"episode {i}")
            ax.plot(*ep.start[:2], "o", color=c)
            ax.add_patch(plt.Circle((ep.goal[0], ep.goal[1]), M.GOAL_TOLERANCE, fill=False, color=c, lw=1.5))
            ax.plot(*ep.goal[:2], "x", color=c)
        ax.set_aspect("equal")
        ax.set_xlim(-h - 0.2, h + 0.2)
        ax.set_ylim(-h - 0.2, h + 0.2)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
    else:
        for i, ep in enumerate(logs):
            gt = np.asarray(ep.gt, dtype=float).reshape(-1, len(fields))
            t = np.asarray(ep.gt_t) - (ep.gt_t[0] if ep.gt_t else 0.0)
            for j in range(3):
                q = np.minimum(E.truth(robot, gt, fields)[f"margin_joint{j + 1}"], 99)
                ax.plot(
                    t,
                    q,
                    color=colours[j],
                    lw=1.2,
                    alpha=0.5 + 0.5 * (i == 0),
                    label=f"joint{j + 1}" if i == 0 else None,
                )
            ax.plot(
                t,
                gt[:, fields.index("goal_error")],
                color="k",
                lw=1,
                ls="--",
                label="goal error" if i == 0 else None,
            )
        ax.axhline(0.0, color="r", lw=1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("joint-limit margin / goal error (rad)")
    ax.legend(fontsize=7)
    ax.set_title(f"{robot}: closed-loop trajectories")
    fig.tight_layout()
    p = out / f"{robot}_trajectory.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p.name)
    # 2. barrier values over time
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for i, ep in enumerate(logs):
        gt = np.asarray(ep.gt, dtype=float).reshape(-1, len(fields))
        t = np.asarray(ep.gt_t) - (ep.gt_t[0] if ep.gt_t else 0.0)
        b = E.margin(robot, gt, fields)
        ax.plot(t, b, color=colours[i % len(colours)], lw=1.2, label=f"episode {i} (ground truth)")
        fb = [min(s["barrier_values"]) if s["barrier_values"] else np.nan for s in ep.statuses]
        ts = np.asarray(ep.status_t) - (ep.status_t[0] if ep.status_t else 0.0)
        if np.isfinite(fb).any():
            ax.plot(
                ts, fb, color=colours[i % len(colours)], lw=0.8, ls=":", label=f"episode {i} (filter min h)"
            )
    ax.axhline(0.0, color="r", lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("clearance (m)" if robot in ("diff_drive", "lane") else "min joint margin (rad)")
    ax.set_title(f"{robot}: barrier values")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out / f"{robot}_barriers.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p.name)
    # 3. nominal vs safe commands (first episode)
    names = ["v (m/s)", "omega (rad/s)"] if robot in ("diff_drive", "lane") else ["tau1", "tau2", "tau3"]
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.8 * len(names) + 0.6), dpi=110, sharex=True)
    if logs:
        ep = logs[0]
        ts = np.asarray(ep.status_t) - (ep.status_t[0] if ep.status_t else 0.0)
        nom = np.array(
            [s["nominal"] if len(s["nominal"]) == len(names) else [np.nan] * len(names) for s in ep.statuses]
        )
        safe = np.array(
            [s["safe"] if len(s["safe"]) == len(names) else [np.nan] * len(names) for s in ep.statuses]
        )
        for j, ax in enumerate(np.atleast_1d(axes)):
            if len(nom):
                ax.plot(ts, nom[:, j], lw=1.0, label="nominal (policy)")
                ax.plot(ts, safe[:, j], lw=1.0, ls="--", label="safe (sent)")
            ax.set_ylabel(names[j])
            ax.grid(True, alpha=0.3)
        np.atleast_1d(axes)[0].legend(fontsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("time (s)")
    fig.suptitle(f"{robot}: nominal vs filtered commands (episode 0)")
    fig.tight_layout()
    p = out / f"{robot}_commands.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p.name)
    # 4. neuron activity (first episode)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    if hidden and hidden[0].size:
        h0 = hidden[0]
        ts = np.asarray(logs[0].obs_t) - logs[0].obs_t[0]
        im = ax.imshow(
            h0.T,
            aspect="auto",
            cmap="coolwarm",
            extent=(0.0, float(ts[-1]) if ts.size else 1.0, h0.shape[1], 0),
        )
        fig.colorbar(im, ax=ax, label="state")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("neuron")
    ax.set_title(f"{robot}: liquid-network hidden state (episode 0, replayed)")
    fig.tight_layout()
    p = out / f"{robot}_neurons.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p.name)
    return paths


def _fmt(v: Any, spec: str) -> str:
    return "nan" if isinstance(v, float) and not math.isfinite(v) else format(v, spec)


def table(summaries: Sequence[dict[str, Any]]) -> str:
    """The printed results table (one row per robot)."""
    head = (
        "| robot | filter | goals | mean time (s) | violations | min barrier | max effort/limit "
        "| interventions | fallbacks | latency p50 / p99 (ms) |"
    )
    rows = [head, "|" + "---|" * 10]
    for s in summaries:
        rows.append(
            f"| {s['robot']} | {s['filter']} | {s['goals_reached']}/{s['episodes']} | "
            f"{_fmt(s['mean_time_s'], '.1f')} | {s['violations']} | {_fmt(s['min_barrier'], '.3f')} | "
            f"{_fmt(s['max_effort_ratio'], '.2f')} | {s['interventions']}/{s['steps']} | {s['fallbacks']} | "
            f"{_fmt(s['latency_p50_ms'], '.2f')} / {_fmt(s['latency_p99_ms'], '.2f')} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the demo: 1 on a safety violation with the filter on, 2 when pieces are missing, else 0."""
    p = argparse.ArgumentParser(prog="python -m lnn_control.ros.demo", description=__doc__.split("\n")[0])
    p.add_argument("--filter", choices=("on", "off"), default="on")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/demo"))
    p.add_argument(
        "--episodes", type=int, default=None, help=f"episodes per robot (default {DEFAULT_EPISODES})"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--robots", nargs="+", choices=ROBOTS, default=list(ROBOTS))
    p.add_argument(
        "--max-time",
        type=float,
        default=None,
        help="episode limit (s of sim time; default lnn_control.sim.episodes.TIME_LIMIT)",
    )
    p.add_argument(
        "--real-time-factor",
        type=float,
        default=0.5,
        help="sim seconds per wall second (0.5: a loaded 2-core machine keeps the 100 Hz arm loop on time)",
    )
    p.add_argument("--models", type=pathlib.Path, default=REPO / "models", help="folder of <robot>.npz")
    a = p.parse_args(argv)
    if a.episodes is not None and a.episodes < 1:
        print(f"error: --episodes must be >= 1, got {a.episodes}", file=sys.stderr)
        return 2
    missing = {r: missing_pieces(r, models=a.models) for r in a.robots}
    if any(missing.values()):
        for r, m in missing.items():
            if m:
                print(f"demo: {r} cannot run closed loop; missing: {', '.join(m)}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for r in a.robots:
        n = a.episodes if a.episodes is not None else DEFAULT_EPISODES[r]
        # lane steps at 20 Hz (camera, ~5 ms a control step): real time keeps a lap ~35 s of wall time
        rtf = max(a.real_time_factor, 1.0) if r == "lane" else a.real_time_factor
        seed = a.seed if r != "lane" else 100000 + a.seed  # lane: held-out tracks
        print(f"demo: {r}, filter {a.filter}, {n} episodes")
        summaries.append(
            run_robot(
                r,
                a.filter == "on",
                n,
                seed,
                a.out,
                a.max_time,
                rtf=rtf,
                models=a.models,
            )
        )
    text = table(summaries)
    print(text)
    for s in summaries:
        for r, n in Counter(s["fallback_reasons"]).most_common():
            print(f"{s['robot']}: {n} fallback(s): {r}")
    strict_json.write(
        a.out / "summary.json", {"filter": a.filter, "robots": {s["robot"]: s for s in summaries}}
    )
    print(f"wrote {a.out / 'summary.json'} and plots under {a.out}")
    violations = sum(s["violations"] for s in summaries)
    if a.filter == "on" and violations:
        print(f"demo: {violations} safety violations with the filter on", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
