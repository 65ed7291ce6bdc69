"""Fault injection against lnn_controller over real DDS: message fuzzing and a CPU hog.

``.venv/bin/python scripts/faults.py [--messages 100000] [--robots diff_drive arm] [--hog]
[--seed 0] [--out out/faults/summary.json]`` (``make faults``).

The node runs as its own process (``python -m lnn_control.ros.controller_node`` with
``config/<robot>.yaml`` and ``models/<robot>.npz``); this process is the rest of the robot.

Fuzzing (lock-step, seeded): valid sensor messages come from a closed-loop MuJoCo trajectory
(``lnn_control.sim`` envs stepped with the commands the node sends back, messages built by
``lnn_control.sim.topics``); between stretches of them, bursts of 1-3 bad messages of the kinds
in ``BAD_KINDS`` go out on every input topic (NaN / inf / huge fields, wrong array sizes, empty,
short and all-inf scans, zero ``angle_increment``, zero quaternion, stamps far in the past /
future / backwards / equal, wrong ``frame_id``, unknown joint names). Every message on the
trigger topic is answered by one ``~/safety_status`` with the trigger's stamp, so each step is
matched to the message that caused it. Checked for every command and status received:
finite, right size, inside the config's ``safety_filter.controls`` box, and statuses marked
filtered carry solver status optimal / relaxed; commands pair one to one with the statuses'
``safe_command``. Kinds marked ``fallback`` must give a fallback at the step after the bad
message (the one after that counts as late); kinds marked ``stamp`` may defer it by one step
(a future stamp is accepted, the good stamps after it are then out of order) and recover only
after ``sensor_timeout`` of wall time (the node then accepts the new time base). A stamp out of
order on a topic the campaign left silent for longer than ``sensor_timeout`` (before a stamp
going back, after a future one; measured between publishes) is the node's new-time-base rule,
counted as ``new_time_base_after_silence``, not as a missed fallback. Future stamps in a row on
one topic are in order among themselves: their fallback is due at the message after the last of
them (2026-12-03: in a 100k run that named its misses, every "missed" future stamp was the
first of such a pair).
Kinds marked
``any`` are data the node may use (wrong frame_id, zero quaternion, huge finite values, NaN in
fields the mapping does not read); the summary says what the node did with each.

CPU hog (``--hog``): simulator + controller in closed loop; two ``while True: pass`` processes
for 10 s: every command still verified, and what ``/diagnostics`` and the fallbacks said.

Output: strict JSON (``lnn_control.strict_json``) and a table. test/ros/test_faults.py runs
the small variant of the same code (it loads this file), which is why the rig, the message
table and both campaigns stay in one module longer than the usual ~600 lines.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

__all__ = [
    "BAD_KINDS",
    "Fuzzer",
    "ROBOTS",
    "Rig",
    "cpu_hog",
    "fuzz",
    "node_log_problems",
    "ros_env",
    "start_controller",
    "start_sim",
    "stop",
    "Trajectory",
]


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """Topics and limits of one built-in robot (from its config file)."""

    trigger: str  # observation.stamp_topic: one step per message
    inputs: dict[str, str]  # topic -> message type
    goal: str  # goal topic (timeout-exempt)
    command: tuple[str, str]  # (topic, type)
    period: float  # sensor period of the simulator, s
    sensor_timeout: float  # config value, s


ROBOTS: dict[str, RobotSpec] = {
    "diff_drive": RobotSpec(
        "/odom",
        {
            "/odom": "nav_msgs/msg/Odometry",
            "/scan": "sensor_msgs/msg/LaserScan",
            "/goal_pose": "geometry_msgs/msg/PoseStamped",
        },
        "/goal_pose",
        ("/cmd_vel", "geometry_msgs/msg/Twist"),
        0.02,
        0.25,
    ),
    "arm": RobotSpec(
        "/joint_states",
        {"/joint_states": "sensor_msgs/msg/JointState", "/goal_joints": "sensor_msgs/msg/JointState"},
        "/goal_joints",
        ("/effort_controller/commands", "std_msgs/msg/Float64MultiArray"),
        0.01,
        0.05,
    ),
}


def ros_env() -> dict[str, str]:
    """Loopback discovery in a domain of this run's own, logs in a temp dir (before rclpy.init)."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="lnn_faults_roslog_"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _msg_class(type_name: str) -> type:
    import importlib

    pkg, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)  # type: ignore[no-any-return]


def _spawn(args: list[str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, *args], cwd=log.parent, env=ros_env(), stdout=out, stderr=subprocess.STDOUT
        )


def start_controller(
    robot: str, log: pathlib.Path, model: pathlib.Path | None = None, **params: Any
) -> subprocess.Popen[bytes]:
    """lnn_controller for ``robot``: its config file, ``models/<robot>.npz`` unless ``model``,
    output to ``log``."""
    model = model or ROOT / "models" / f"{robot}.npz"
    args = [
        "-m",
        "lnn_control.ros.controller_node",
        "--ros-args",
        "--params-file",
        str(ROOT / "config" / f"{robot}.yaml"),
    ]
    args += ["-p", f"model_file:={model}"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    return _spawn(args, log)


def start_sim(robot: str, log: pathlib.Path, **params: Any) -> subprocess.Popen[bytes]:
    """The MuJoCo simulator node (``lnn_control.ros.sim_node``) for ``robot``, output to ``log``."""
    args = ["-m", "lnn_control.ros.sim_node", "--ros-args", "-p", f"robot:={robot}"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    return _spawn(args, log)


def stop(proc: subprocess.Popen[bytes], sig_kill: bool = False) -> int | None:
    """SIGTERM (or SIGKILL) ``proc`` and wait; returns its exit code."""
    if proc.poll() is None:
        proc.kill() if sig_kill else proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def node_log_problems(log: pathlib.Path) -> list[str]:
    """Lines of a node's log that show a crash (a Python traceback or a fatal error)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [ln for ln in text.splitlines() if "Traceback" in ln or "FATAL" in ln or "Segmentation" in ln]


def command_problem(u: list[float], lower: np.ndarray, upper: np.ndarray) -> str | None:
    """Why a command (or a status's safe_command) fails the independent check, or None."""
    if len(u) != lower.size:
        return f"{len(u)} values, expected {lower.size}"
    if not all(map(math.isfinite, u)):
        return f"non-finite {u}"
    if any(not (lo - 1e-9 <= v <= hi + 1e-9) for v, lo, hi in zip(u, lower, upper)):
        return f"{u} outside the box {lower.tolist()}..{upper.tolist()}"
    return None


class Rig:
    """This process's node: publishers on the robot's inputs, checked command / status / diagnostics
    subscribers, lifecycle and parameter clients (its own rclpy Context)."""

    def __init__(self, robot: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from lnn_control.msg import SafetyStatus
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        from lnn_control.config import load_filter_config

        ros_env()
        self.rclpy, self.spec = rclpy, ROBOTS[robot]
        box = load_filter_config(ROOT / "config" / f"{robot}.yaml")["controls"]
        self.lower, self.upper = np.array(box["lower"], float), np.array(box["upper"], float)
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("faults_rig", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        n = self.node
        self.types = {t: _msg_class(tn) for t, tn in self.spec.inputs.items()}
        self.pubs: dict[str, Any] = {
            t: n.create_publisher(c, t, qos_profile_sensor_data) for t, c in self.types.items()
        }
        rel = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.commands: list[tuple[float, list[float]]] = []
        self.statuses: list[tuple[float, Any]] = []
        self.diags: list[tuple[float, int, str, dict[str, str]]] = []
        self.unverified: list[str] = []  # every failed check, with what failed
        self.OPTIMAL = (SafetyStatus.STATUS_OPTIMAL, SafetyStatus.STATUS_RELAXED)
        topic, tname = self.spec.command
        self._values: Callable[[Any], list[float]] = (
            (lambda m: [m.linear.x, m.angular.z]) if tname.endswith("Twist") else (lambda m: list(m.data))
        )
        n.create_subscription(_msg_class(tname), topic, self._on_command, rel)
        n.create_subscription(SafetyStatus, "/lnn_controller/safety_status", self._on_status, rel)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, rel)
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters

        self.clients: dict[str, Any] = {
            "change_state": n.create_client(ChangeState, "/lnn_controller/change_state"),
            "get_state": n.create_client(GetState, "/lnn_controller/get_state"),
            "set_parameters": n.create_client(SetParameters, "/lnn_controller/set_parameters"),
        }

    # ---- receipt and checks
    def _on_command(self, m: Any) -> None:
        u = [float(v) for v in self._values(m)]
        self.commands.append((time.monotonic(), u))
        problem = command_problem(u, self.lower, self.upper)
        if problem:
            self.unverified.append(f"command #{len(self.commands)}: {problem}")

    def _on_status(self, m: Any) -> None:
        self.statuses.append((time.monotonic(), m))
        if len(m.safe_command) == 0:  # no command could be sent (fallback_failed): nothing to check
            return
        problem = command_problem(list(m.safe_command), self.lower, self.upper)
        if not m.fallback_used and m.solver_status not in self.OPTIMAL:
            problem = f"filtered command with solver status {m.solver_status}"
        if m.fallback_used and not m.fallback_reason:
            problem = "fallback without a reason"
        if problem:
            self.unverified.append(f"status #{len(self.statuses)}: {problem}")

    def _on_diag(self, m: Any) -> None:
        for st in m.status:
            if st.name.startswith("lnn_controller"):
                level = st.level[0] if isinstance(st.level, bytes) else int(st.level)
                self.diags.append(
                    (time.monotonic(), level, st.message, {kv.key: kv.value for kv in st.values})
                )

    def pairing_problems(self) -> int:
        """Commands whose values differ from their status's safe_command (pairs in arrival order)."""
        sent = [s for _, s in self.statuses if len(s.safe_command)]
        return sum(
            1
            for (_, u), s in zip(self.commands, sent)
            if not np.allclose(u, list(s.safe_command), atol=1e-12)
        )

    # ---- spinning, services, lifecycle
    def spin_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            self.ex.spin_once(timeout_sec=0.002)
        return cond()

    def _spin_once(self) -> None:
        self.ex.spin_once(timeout_sec=0.002)

    def call(self, name: str, req: Any, timeout: float = 20.0) -> Any:
        from lnn_control.ros.service_calls import call_service

        return call_service(self.clients[name], req, self._spin_once, timeout)

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Ask get_state until the node answers (see ``lnn_control.ros.service_calls``)."""
        from lnn_control.ros.service_calls import wait_lifecycle_ready

        return wait_lifecycle_ready(self.clients["get_state"], self._spin_once, timeout)

    def transition(self, tid: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return bool(self.call("change_state", ChangeState.Request(transition=Transition(id=tid))).success)

    def bring_up(self) -> None:
        """unconfigured -> active, and wait until the node subscribes to every input."""
        from lifecycle_msgs.msg import Transition

        if self.wait_ready() != "unconfigured":
            raise RuntimeError("lnn_controller did not start unconfigured")
        if not (
            self.transition(Transition.TRANSITION_CONFIGURE)
            and self.transition(Transition.TRANSITION_ACTIVATE)
        ):
            raise RuntimeError("lnn_controller did not configure / activate (see its log)")
        if not self.spin_until(lambda: all(p.get_subscription_count() > 0 for p in self.pubs.values()), 20.0):
            raise RuntimeError("lnn_controller did not subscribe to every input")

    def set_parameter(self, name: str, value: Any) -> Any:
        """One SetParameters call; returns its SetParametersResult (successful, reason)."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call("set_parameters", req).results[0]

    def publish(self, topic: str, fields: dict[str, Any]) -> None:
        from lnn_control.ros.sim_node import fill_message

        self.pubs[topic].publish(fill_message(self.types[topic](), fields))

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


# ------------------------------------------------------------------------------ valid messages
class Trajectory:
    """Valid input messages of a closed-loop MuJoCo episode (``lnn_control.sim``), stamped on this
    run's clock (one period per step, never repeating); a new seeded episode at the goal, on
    contact or after 30 s of sim time."""

    def __init__(self, robot: str, seed: int) -> None:
        from lnn_control.sim import make_env

        self.robot, self.spec = robot, ROBOTS[robot]
        self.env: Any = make_env(robot, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.t_ns = 1000 * 10**9
        self.steps = 0
        self.reset()

    def reset(self) -> None:
        self.env.reset(seed=int(self.rng.integers(2**31)))
        if self.robot == "diff_drive":
            from lnn_control.sim.diff_drive import sample_free_position

            self.goal = sample_free_position(self.rng)
        else:
            self.goal = self.env.sample_reachable_goal(self.rng, self.env.q)
        self.env.set_goal(self.goal)
        self.obs = self.env.observation()
        self.steps = 0

    def tick(self) -> int:
        self.t_ns += round(self.spec.period * 1e9)
        return self.t_ns

    def messages(self, t_ns: int) -> dict[str, dict[str, Any]]:
        """The sensor messages of this step (trigger last), as ``lnn_control.sim.topics`` dicts."""
        from lnn_control.sim import topics as T

        if self.robot == "diff_drive":
            return {
                "/scan": T.laser_scan(self.obs, t_ns, self.spec.period),
                "/odom": T.odometry(self.obs, t_ns),
            }
        return {"/joint_states": T.joint_state(self.obs, t_ns)}

    def goal_message(self) -> dict[str, Any]:
        from lnn_control.sim import topics as T
        from lnn_control.sim.models import ARM_JOINT_NAMES

        if self.robot == "diff_drive":
            return T.pose_stamped(
                float(self.goal[0]), float(self.goal[1]), 0
            )  # unstamped, as a tool sends it
        return {
            "header": T.header(0, "base_link"),
            "name": list(ARM_JOINT_NAMES),
            "position": [float(v) for v in self.goal],
        }

    def advance(self, u: list[float]) -> None:
        self.obs = self.env.step(np.asarray(u, dtype=float), self.spec.period)
        self.steps += 1
        if self.env.goal_reached() or self.env.in_contact() or self.steps * self.spec.period >= 30.0:
            self.reset()


# ------------------------------------------------------------------------------ bad messages
def _set(d: dict[str, Any], path: str, value: Any) -> None:
    *head, last = path.split(".")
    for k in head:
        d = d[k]
    d[last] = value


def _nonfinite(rng: np.random.Generator) -> float:
    return float(rng.choice([math.nan, math.inf, -math.inf]))


def _stamp(d: dict[str, Any], t_ns: int) -> None:
    d["header"]["stamp"] = {"sec": t_ns // 10**9, "nanosec": t_ns % 10**9}


def _t(d: dict[str, Any]) -> int:
    return int(d["header"]["stamp"]["sec"]) * 10**9 + int(d["header"]["stamp"]["nanosec"])


# (rng, message to change in place, stamp (ns) of the last message on its topic the node accepted)
Mutator = Callable[[np.random.Generator, dict[str, Any], int], None]


def _field(paths: list[str], value: Callable[[np.random.Generator], Any]) -> Mutator:
    return lambda rng, m, p: _set(m, str(rng.choice(paths)), value(rng))


def _goes_back(kind: str) -> bool:
    """A stamp kind that sets the stamp at or before the previous one (back, equal, past)."""
    return kind.split("_")[-1] in ("back", "equal", "past")


def _stamps(how: str) -> Mutator:
    def mutate(rng: np.random.Generator, m: dict[str, Any], prev: int) -> None:
        t = _t(m)
        new = {
            "back": prev - int(rng.integers(1, 10**9)),  # before the previous message
            "equal": prev,  # the previous message's stamp
            "past": int(rng.integers(1, 10**9)),  # 1970
            "future": t + 10**6 * 10**9,  # 11.6 days ahead
        }[how]
        _stamp(m, max(new, 1))

    return mutate


def _frame(rng: np.random.Generator, m: dict[str, Any], period: int) -> None:
    m["header"]["frame_id"] = str(rng.choice(["map", "", "wrong/frame", "x" * 300]))


def _js_sizes(rng: np.random.Generator, m: dict[str, Any], period: int) -> None:
    k = str(rng.choice(["position", "velocity"]))
    m[k] = (
        []
        if rng.random() < 0.3
        else m[k][: int(rng.integers(0, 3))] + ([] if rng.random() < 0.5 else [0.1, 0.2])
    )
    if len(m[k]) == 3:
        m[k].append(0.0)


def _js_reorder(rng: np.random.Generator, m: dict[str, Any], period: int) -> None:
    perm = rng.permutation(3)
    for k in ("name", "position", "velocity", "effort"):
        m[k] = [m[k][i] for i in perm]


# kind -> (topic, expectation, mutator). Expectations: "fallback" (the step after the message),
# "stamp" (fallback within two steps, recovery after sensor_timeout), "any" (may be used),
# "valid" (a valid message in an unusual form: must NOT cause a fallback).
BadKind = tuple[str, str, Mutator]
_POSE = ["pose.pose.position.x", "pose.pose.position.y", "twist.twist.linear.x", "twist.twist.angular.z"]
_QUAT = ["pose.pose.orientation.z", "pose.pose.orientation.w"]
BAD_KINDS: dict[str, dict[str, BadKind]] = {
    "diff_drive": {
        "odom_nonfinite_pose": ("/odom", "fallback", _field(_POSE, _nonfinite)),
        "odom_nan_quaternion": ("/odom", "fallback", _field(_QUAT, lambda r: math.nan)),
        "odom_inf_quaternion": (
            "/odom",
            "fallback",
            _field(_QUAT, lambda r: float(r.choice([math.inf, -math.inf]))),
        ),
        "odom_zero_quaternion": (
            "/odom",
            "fallback",
            lambda r, m, p: m["pose"]["pose"].update(orientation={"x": 0.0, "y": 0.0, "z": 0.0, "w": 0.0}),
        ),
        "odom_huge": ("/odom", "any", _field(_POSE + _QUAT, lambda r: float(r.choice([1e300, -1e300])))),
        "odom_nan_covariance": ("/odom", "any", lambda r, m, p: _set(m, "pose.covariance", [math.nan] * 36)),
        "odom_wrong_frame": ("/odom", "any", _frame),
        "odom_stamp_back": ("/odom", "fallback", _stamps("back")),
        "odom_stamp_equal": ("/odom", "fallback", _stamps("equal")),
        "odom_stamp_past": ("/odom", "fallback", _stamps("past")),
        "odom_stamp_future": ("/odom", "stamp", _stamps("future")),
        "scan_empty": ("/scan", "fallback", lambda r, m, p: m.update(ranges=[], intensities=[])),
        "scan_short": (
            "/scan",
            "fallback",
            lambda r, m, p: m.update(ranges=m["ranges"][: int(r.integers(1, 8))]),
        ),
        "scan_all_inf": ("/scan", "any", lambda r, m, p: m.update(ranges=[math.inf] * len(m["ranges"]))),
        "scan_nan_ranges": (
            "/scan",
            "any",
            lambda r, m, p: m.update(ranges=[math.nan if r.random() < 0.3 else x for x in m["ranges"]]),
        ),
        "scan_zero_increment": ("/scan", "any", lambda r, m, p: m.update(angle_increment=0.0)),
        "scan_nonfinite_angle": ("/scan", "fallback", _field(["angle_min", "angle_increment"], _nonfinite)),
        "scan_huge": (
            "/scan",
            "any",
            lambda r, m, p: m.update(range_max=3e38, ranges=[3e38] * len(m["ranges"])),
        ),
        "scan_wrong_frame": ("/scan", "any", _frame),
        "scan_stamp_back": ("/scan", "fallback", _stamps("back")),
        "scan_stamp_future": ("/scan", "stamp", _stamps("future")),
        "goal_nonfinite": (
            "/goal_pose",
            "fallback",
            _field(["pose.position.x", "pose.position.y"], _nonfinite),
        ),
        "goal_huge": ("/goal_pose", "any", _field(["pose.position.x", "pose.position.y"], lambda r: 1e300)),
        "goal_wrong_frame": ("/goal_pose", "any", _frame),
    },
    "arm": {
        "js_nonfinite": (
            "/joint_states",
            "fallback",
            lambda r, m, p: m[str(r.choice(["position", "velocity"]))].__setitem__(
                int(r.integers(3)), _nonfinite(r)
            ),
        ),
        "js_wrong_size": ("/joint_states", "fallback", _js_sizes),
        "js_empty": (
            "/joint_states",
            "fallback",
            lambda r, m, p: m.update(name=[], position=[], velocity=[], effort=[]),
        ),
        "js_unknown_joint": (
            "/joint_states",
            "fallback",
            lambda r, m, p: m["name"].__setitem__(int(r.integers(3)), "jointX"),
        ),
        "js_reordered": ("/joint_states", "valid", _js_reorder),
        "js_huge": (
            "/joint_states",
            "any",
            lambda r, m, p: m["velocity"].__setitem__(int(r.integers(3)), float(r.choice([1e300, -1e300]))),
        ),
        "js_nan_effort": ("/joint_states", "any", lambda r, m, p: m.update(effort=[math.nan] * 3)),
        "js_wrong_frame": ("/joint_states", "any", _frame),
        "js_stamp_back": ("/joint_states", "fallback", _stamps("back")),
        "js_stamp_equal": ("/joint_states", "fallback", _stamps("equal")),
        "js_stamp_past": ("/joint_states", "fallback", _stamps("past")),
        "js_stamp_future": ("/joint_states", "stamp", _stamps("future")),
        "goal_nonfinite": (
            "/goal_joints",
            "fallback",
            lambda r, m, p: m["position"].__setitem__(int(r.integers(3)), _nonfinite(r)),
        ),
        "goal_wrong_size": (
            "/goal_joints",
            "fallback",
            lambda r, m, p: m.update(position=m["position"][: int(r.integers(0, 3))]),
        ),
        "goal_huge": (
            "/goal_joints",
            "any",
            lambda r, m, p: m["position"].__setitem__(int(r.integers(3)), 1e300),
        ),
        "goal_unknown_names": ("/goal_joints", "any", lambda r, m, p: m.update(name=["a", "b", "c"])),
    },
}


# ------------------------------------------------------------------------------ fuzzing
def _q(a: list[float], p: float) -> float | None:
    return float(np.percentile(a, p)) if a else None


class Fuzzer:
    """Lock-step driver: each step publishes the other inputs, then the trigger, and waits for the
    ``~/safety_status`` carrying the trigger's stamp."""

    def __init__(self, rig: Rig, traj: Trajectory, seed: int) -> None:
        self.rig, self.traj, self.spec = rig, traj, rig.spec
        self.rng = np.random.default_rng(seed + 1)
        self.kinds = BAD_KINDS[traj.robot]
        self.sent = self.bad = self.steps = self.no_reply = 0
        self.per_kind: dict[str, dict[str, Any]] = {
            k: {
                "expect": e,
                "sent": 0,
                "fallback_at_step": 0,
                "fallback_next_step": 0,
                "no_fallback": 0,
                "late": 0,
                "missed": 0,
                "new_time_base": 0,
            }
            for k, (_, e, _f) in self.kinds.items()
        }
        self.t_fallback: list[float] = []
        self.t_recover: list[float] = []
        self.recover_steps: list[int] = []
        self.slow_recoveries: list[str] = []
        self.not_recovered: list[str] = []
        self.spurious: list[str] = []
        self.accepted: dict[str, int] = {}  # topic -> stamp of its last message the node took as in order
        self._last_pub: dict[str, float] = {}  # topic -> wall time of its last publish
        self.gaps: dict[str, float] = {}  # topic -> wall time before its publish in the last step
        self.missed_examples: list[str] = []
        self._stamp_kind = False
        self.slowest_fallback = ""

    def step(self, bad: tuple[str, dict[str, Any]] | None = None, goal: bool = False) -> tuple[float, Any]:
        """One control step; returns (publish time of the first message, its status or None)."""
        msgs = self.traj.messages(self.traj.tick())
        if bad is not None:  # in place, or before the trigger (dicts keep insertion order)
            msgs = {bad[0]: bad[1], **{t: m for t, m in msgs.items() if t != bad[0]}}
            msgs[self.spec.trigger] = msgs.pop(self.spec.trigger)
        t0 = time.monotonic()
        if goal:
            self.rig.publish(self.spec.goal, self.traj.goal_message())
            self.sent += 1
        for topic, fields in msgs.items():  # trigger last (dict order)
            if bad is not None and topic == self.spec.trigger and bad[0] != topic:
                time.sleep(0.001)  # the bad message is taken before the step it should affect
            self.rig.publish(topic, fields)
            now = time.monotonic()
            self.gaps[topic] = now - self._last_pub.get(topic, now)
            self._last_pub[topic] = now
            self.sent += 1
            if "header" in fields and not (bad is not None and topic == bad[0] and self._stamp_kind):
                self.accepted[topic] = _t(fields)
        self.steps += 1
        key = (
            msgs[self.spec.trigger]["header"]["stamp"]["sec"],
            msgs[self.spec.trigger]["header"]["stamp"]["nanosec"],
        )
        n0, found = len(self.rig.statuses), []

        def answered() -> bool:
            for _, s in self.rig.statuses[n0:]:
                if (s.header.stamp.sec, s.header.stamp.nanosec) == key:
                    found.append(s)
                    return True
            return False

        if not self.rig.spin_until(answered, 2.0):
            self.no_reply += 1
            return t0, None
        return t0, found[0]

    def good_steps(self, n_min: int, deadline_s: float) -> tuple[int, float] | None:
        """Valid steps (goal re-sent first) until a filtered command has come and ``n_min`` steps
        are done; returns (steps to the first filtered command, its receipt time) or None when
        none came within ``deadline_s``."""
        first: tuple[int, float] | None = None
        t_start = time.monotonic()
        i = 0
        while i < n_min or first is None:
            i += 1
            _, st = self.step(goal=(i == 1))
            if st is not None and not st.fallback_used:
                if first is None:
                    first = (i, time.monotonic())
                if self.rig.commands:
                    self.traj.advance(self.rig.commands[-1][1])
            elif first is not None and st is not None:
                self.spurious.append(f"step {self.steps}: {st.fallback_reason[:120]}")
            if first is None and time.monotonic() - t_start > deadline_s:
                return None
        return first

    def burst(self) -> None:
        """1-3 bad messages (one per step), then valid data until filtered commands resume."""
        names = list(self.kinds)
        # stamps from the future cost sensor_timeout of recovery each: drawn a fifth as often
        w = np.array([0.2 if e == "stamp" else 1.0 for _, e, _m in self.kinds.values()])
        burst = [str(self.rng.choice(names, p=w / w.sum())) for _ in range(int(self.rng.integers(1, 4)))]
        outcome: list[bool] = []
        gaps: list[dict[str, float]] = []  # per step of the burst and the next: silence per topic
        t_first: float | None = None
        t_fb: float | None = None
        for kind in burst:
            topic, expect, mutate = self.kinds[kind]
            base = (
                self.traj.goal_message()
                if topic == self.spec.goal
                else self.traj.messages(self.traj.t_ns + round(self.spec.period * 1e9))[topic]
            )
            prev = self.accepted.get(topic, self.traj.t_ns)
            mutate(self.rng, base, prev)
            self._stamp_kind = _goes_back(kind)
            self.bad += 1
            self.per_kind[kind]["sent"] += 1
            t0, st = self.step(bad=(topic, base))
            gaps.append(dict(self.gaps))
            t_first = t0 if t_first is None else t_first
            fb = st is not None and st.fallback_used
            outcome.append(fb)
            if fb and t_fb is None:
                t_fb = time.monotonic()
            if expect == "valid" and fb and all(self.kinds[k][1] == "valid" for k in burst[: len(outcome)]):
                self.spurious.append(f"{kind}: {st.fallback_reason[:120]}")
        # valid data again: its first step also decides for the burst's last message
        t_good = time.monotonic()
        _, st_next = self.step(goal=True)
        gaps.append(dict(self.gaps))
        outcome.append(st_next is not None and st_next.fallback_used)
        if outcome[-1] and t_fb is None:
            t_fb = time.monotonic()
        expects = [self.kinds[k][1] for k in burst]
        for i, kind in enumerate(burst):
            pk = self.per_kind[kind]
            # future stamps in a row on one topic are in order among themselves: time goes back
            # (and the node falls back) at the message after the last of them
            j = i
            while kind.endswith("_future") and j + 1 < len(burst) and burst[j + 1] == kind:
                j += 1
            at = (
                "fallback_at_step"
                if outcome[i]
                else "fallback_next_step"
                if outcome[j + 1]
                else "no_fallback"
            )
            pk[at] += 1
            if expects[i] == "fallback" and at == "fallback_next_step":
                pk["late"] += 1
            if expects[i] in ("fallback", "stamp") and at == "no_fallback":
                # the node's rule: a topic silent for longer than sensor_timeout takes a stamp
                # out of order as a new time base (a restarted simulator or bag), no fallback.
                # The silence that counts: before a stamp going back, after a future one
                topic = self.kinds[kind][0]
                silence = gaps[i].get(topic, 0.0) if _goes_back(kind) else gaps[j + 1].get(topic, 0.0)
                new_base = silence > self.spec.sensor_timeout
                pk["new_time_base" if new_base else "missed"] += 1
                if not new_base:
                    self.missed_examples.append(f"{burst}: message {i} ({kind}), outcomes {outcome}")
        if t_fb is not None and t_first is not None and any(e in ("fallback", "stamp") for e in expects):
            self.t_fallback.append(t_fb - t_first)
            if t_fb - t_first >= max(self.t_fallback):
                self.slowest_fallback = f"{burst}: {(t_fb - t_first) * 1e3:.1f} ms"
        if st_next is not None and not st_next.fallback_used:
            n, t_rec = 1, time.monotonic()
            if self.rig.commands:
                self.traj.advance(self.rig.commands[-1][1])
            self.good_steps(int(self.rng.integers(1, 11)), 0.0)
        else:
            deadline = self.spec.sensor_timeout + 2.0
            first = self.good_steps(int(self.rng.integers(1, 11)), deadline)
            if first is None:
                self.not_recovered.append(f"{burst}: no filtered command {deadline:.1f} s after valid data")
                return
            n, t_rec = first[0] + 1, first[1]
        t_rec -= t_good
        self.t_recover.append(t_rec)
        self.recover_steps.append(n)
        few = 3  # valid steps; a stamp fault waits out sensor_timeout of wall time first
        limit_s = self.spec.sensor_timeout + few * self.spec.period + 0.2
        if ("stamp" not in expects and n > few) or ("stamp" in expects and t_rec > limit_s):
            self.slow_recoveries.append(f"{burst}: {n} valid steps, {t_rec * 1e3:.0f} ms")

    def summary(self) -> dict[str, Any]:
        missed = {k: v["missed"] for k, v in self.per_kind.items() if v["missed"]}
        late = {k: v["late"] for k, v in self.per_kind.items() if v["late"]}
        new_base = {k: v["new_time_base"] for k, v in self.per_kind.items() if v["new_time_base"]}
        return {
            "messages_sent": self.sent,
            "bad_messages": self.bad,
            "steps": self.steps,
            "no_reply_steps": self.no_reply,
            "missed_fallbacks": missed,
            "late_fallbacks": late,
            "new_time_base_after_silence": new_base,
            "missed_examples": self.missed_examples[:20],
            "worst_time_to_fallback_s": max(self.t_fallback, default=None),
            "slowest_fallback_burst": self.slowest_fallback,
            "control_period_s": self.spec.period,
            "fallbacks_later_than_one_period": sum(1 for t in self.t_fallback if t > self.spec.period),
            "bursts_timed": len(self.t_fallback),
            "p99_time_to_fallback_s": _q(self.t_fallback, 99),
            "median_time_to_fallback_s": _q(self.t_fallback, 50),
            "worst_time_to_recover_s": max(self.t_recover, default=None),
            "p99_time_to_recover_s": _q(self.t_recover, 99),
            "worst_steps_to_recover": max(self.recover_steps, default=None),
            "slow_recoveries": self.slow_recoveries[:20],
            "n_slow_recoveries": len(self.slow_recoveries),
            "not_recovered": self.not_recovered[:20],
            "n_not_recovered": len(self.not_recovered),
            "spurious_fallbacks": self.spurious[:20],
            "n_spurious_fallbacks": len(self.spurious),
            "per_kind": self.per_kind,
        }


def fuzz(
    robot: str, n_messages: int, seed: int, workdir: pathlib.Path, budget_s: float = 3600.0, **params: Any
) -> dict[str, Any]:
    """Fuzz one controller process for ``robot`` with at least ``n_messages`` messages (or until
    ``budget_s``); returns the summary (see the module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"controller_{robot}.log"
    t_start = time.monotonic()
    proc = start_controller(robot, log, diagnostics_rate=20.0, **params)
    rig = Rig(robot)
    out: dict[str, Any] = {"robot": robot, "seed": seed}
    try:
        rig.bring_up()
        f = Fuzzer(rig, Trajectory(robot, seed), seed)
        if f.good_steps(5, 10.0) is None:
            raise RuntimeError(f"no filtered command from lnn_controller ({robot}) on valid data")
        while f.sent < n_messages and time.monotonic() - t_start < budget_s:
            f.burst()
        rig.spin_until(
            lambda: len(rig.commands) >= len([s for _, s in rig.statuses if len(s.safe_command)]), 2.0
        )
        out.update(f.summary())
        warn = [d for d in rig.diags if d[1] == 1 and d[2].startswith("fallback")]
        out.update(
            commands_received=len(rig.commands),
            statuses_received=len(rig.statuses),
            fallback_statuses=sum(1 for _, s in rig.statuses if s.fallback_used),
            unverified_commands=len(rig.unverified),
            unverified_examples=rig.unverified[:20],
            command_status_mismatches=rig.pairing_problems(),
            diagnostics_received=len(rig.diags),
            diagnostics_warn_with_reason=len(warn),
            node_counters=rig.diags[-1][3] if rig.diags else {},
        )
    finally:
        rig.close()
        out["node_alive"] = proc.poll() is None
        out["node_exit_code_after_sigterm"] = stop(proc)
        out["crashes"] = int(not out["node_alive"])
        out["node_log_problems"] = node_log_problems(log)[:20]
        out["wall_s"] = time.monotonic() - t_start
    return out


# ------------------------------------------------------------------------------ CPU hog
def cpu_hog(
    workdir: pathlib.Path,
    robot: str = "diff_drive",
    before_s: float = 5.0,
    hog_s: float = 10.0,
    after_s: float = 5.0,
    hogs: int = 2,
) -> dict[str, Any]:
    """Simulator + controller in closed loop; ``hogs`` busy processes for ``hog_s`` seconds.

    Reports the commands received and checked in each phase, the fallbacks and their reasons, and
    what ``/diagnostics`` said (level, latency p99) before, during and after the hog."""
    workdir.mkdir(parents=True, exist_ok=True)
    sim = start_sim(robot, workdir / f"sim_{robot}.log")
    proc = start_controller(robot, workdir / f"controller_{robot}_hog.log", diagnostics_rate=2.0)
    rig = Rig(robot)
    traj = Trajectory(robot, 0)
    out: dict[str, Any] = {"robot": robot, "hog_processes": hogs, "hog_s": hog_s}
    busy: list[subprocess.Popen[bytes]] = []
    try:
        rig.bring_up()
        rig.publish(rig.spec.goal, traj.goal_message())
        if not rig.spin_until(lambda: any(not s.fallback_used for _, s in rig.statuses), 20.0):
            raise RuntimeError("no filtered command in closed loop with the simulator")
        marks = {"start": time.monotonic()}
        rig.spin_until(lambda: False, before_s)
        marks["hog_on"] = time.monotonic()
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
        rig.spin_until(lambda: False, hog_s)
        for b in busy:
            stop(b, sig_kill=True)
        marks["hog_off"] = time.monotonic()
        rig.spin_until(lambda: False, after_s)
        marks["end"] = time.monotonic()
        phases = {"before": ("start", "hog_on"), "during": ("hog_on", "hog_off"), "after": ("hog_off", "end")}
        for name, (m0, m1) in phases.items():
            t0, t1 = marks[m0], marks[m1] + (0.5 if name == "during" else 0.0)  # messages in flight
            st = [s for t, s in rig.statuses if t0 <= t < t1]
            dg = [d for d in rig.diags if t0 <= d[0] < t1]
            reasons: dict[str, int] = {}
            for s in st:
                if s.fallback_used:
                    key = s.fallback_reason.split(":")[0][:60]
                    reasons[key] = reasons.get(key, 0) + 1
            out[name] = {
                "commands": sum(1 for t, _ in rig.commands if t0 <= t < t1),
                "command_rate_hz": sum(1 for t, _ in rig.commands if t0 <= t < t1) / (t1 - t0),
                "fallbacks": sum(1 for s in st if s.fallback_used),
                "fallback_reasons": reasons,
                "diagnostics": {
                    "received": len(dg),
                    "levels": sorted({d[1] for d in dg}),
                    "messages": sorted({d[2][:100] for d in dg})[:5],
                    "latency_p99_us_max": max(
                        (float(d[3].get("latency_p99_us", "nan")) for d in dg), default=None
                    ),
                    "stale_counter_at_end": dg[-1][3].get("stale") if dg else None,
                },
            }
        out["unverified_commands"] = len(rig.unverified)
        out["unverified_examples"] = rig.unverified[:20]
        out["command_status_mismatches"] = rig.pairing_problems()
    finally:
        for b in busy:
            stop(b, sig_kill=True)
        rig.close()
        out["node_alive"] = proc.poll() is None
        out["sim_alive"] = sim.poll() is None
        stop(proc)
        stop(sim)
        out["node_log_problems"] = node_log_problems(workdir / f"controller_{robot}_hog.log")[:20]
    return out


# ------------------------------------------------------------------------------ command line
def _table(results: list[dict[str, Any]]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1e3:.1f}"

    rows = [
        "| robot | messages | bad | crashes | unverified | missed / late fallbacks | new time base after "
        "silence | worst fallback ms | fallback > 1 period | worst recover ms (steps) | not recovered "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['robot']} | {r.get('messages_sent', 0)} | {r.get('bad_messages', 0)} | {r['crashes']} | "
            f"{r.get('unverified_commands', '-')} | {sum(r.get('missed_fallbacks', {}).values())} / "
            f"{sum(r.get('late_fallbacks', {}).values())} | "
            f"{sum(r.get('new_time_base_after_silence', {}).values())} | "
            f"{ms(r.get('worst_time_to_fallback_s'))} | "
            f"{r.get('fallbacks_later_than_one_period', '-')} / {r.get('bursts_timed', '-')} | "
            f"{ms(r.get('worst_time_to_recover_s'))} ({r.get('worst_steps_to_recover')}) | "
            f"{r.get('n_not_recovered', '-')} | {r['wall_s']:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from lnn_control import strict_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--messages", type=int, default=100_000, help="messages per robot config (default 100000)"
    )
    ap.add_argument("--robots", nargs="+", default=list(ROBOTS), choices=list(ROBOTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hog", action="store_true", help="also the 10 s CPU hog beside simulator + controller")
    ap.add_argument("--no-fuzz", action="store_true", help="skip the fuzzing (e.g. --hog alone)")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "faults" / "summary.json")
    args = ap.parse_args(argv)
    work = args.out.parent
    summary: dict[str, Any] = {
        "fuzz": [],
        "cpu_hog": None,
        "seed": args.seed,
        "messages_per_robot": args.messages,
    }
    if not args.no_fuzz:
        for robot in args.robots:
            summary["fuzz"].append(fuzz(robot, args.messages, args.seed, work))
    if args.hog:
        summary["cpu_hog"] = cpu_hog(work)
    strict_json.write(args.out, summary)
    print(strict_json.dumps(summary, indent=1))
    if summary["fuzz"]:
        print(_table(summary["fuzz"]))
    bad = any(r["crashes"] or r["unverified_commands"] or r["node_log_problems"] for r in summary["fuzz"])
    hog = summary["cpu_hog"]
    bad = bad or bool(hog and (hog["unverified_commands"] or not hog["node_alive"]))
    missed = sorted({k for r in summary["fuzz"] for k in r.get("missed_fallbacks", {})})
    print(
        f"summary written to {args.out}; {'PROBLEMS FOUND' if bad else 'no crash, every command verified'}"
        + (f"; bad inputs the node used instead of falling back: {missed}" if missed else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
