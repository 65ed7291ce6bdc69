"""ROS 2 controller node speed: the node's own step, sensor -> command across processes, memory.

Rows (group ``ros``; the policy is a seeded CfC-NCP(19) from ``from_ncps``, 12 inputs, 2
outputs, the filter is ``config/diff_drive.yaml``'s: diff_drive dynamics, 16 scan points + 4
walls, box on (v, omega), DAQP):

- ``node step in-process``: the ``/odom`` subscription callback of a live, active
  ``LnnController`` called with real ``nav_msgs/Odometry`` messages (a new 72-beam scan every
  5th step, as 50 Hz odometry with 10 Hz scans), timed from entry until the command is
  published; the second row until ``~/nominal_command`` and ``~/safety_status`` are too (a reader
  in this process is matched to each). Target p99 <= 200 us. The reference column is ncps's
  CfC-NCP(19) step alone (``no_grad``, what a user would otherwise run for the policy only),
  timed in the same run.
  The notes split our step into policy, filter and the rest.
- ``sensor publish -> command receipt, 1 kHz``: the node as its own process
  (``python -m lnn_control.ros.controller_node --ros-args --params-file config/diff_drive.yaml``,
  TwistStamped output carrying the trigger stamp), this process publishing ``/odom`` at 1 kHz
  (scans at 20 Hz) and timing each command's return. Reference: the bare DDS round trip of an
  rclpy echo node (same QoS: best effort, keep last 1 in, reliable out; same spin, the node's
  default InputFirstSpinner; same rate) in the same run (ANCHORS.md: median 0.3 ms, p99
  0.5-0.65 ms). This process takes the replies through InputFirstSpinner too, and its publisher
  never bursts (messages >= 0.5 ms apart; a late tick moves the schedule). Messages the receiver
  skips (keep last 1 when it falls behind) are counted as lost, not timed. Target p99 <= 1.5 ms
  with no backlog growth (median of the last tenth within 0.2 ms of the first tenth, < 1 % of
  commands lost). The notes give the
  node's resident memory (VmRSS, VmHWM) next to the echo node's and the node's own count of
  scans taken (a starved subscription would show fewer).
- ``timer mode 1 kHz``: the same process reconfigured with ``control_mode: timer``,
  ``rate_hz: 1000``: command inter-arrival times at the receiver (reference: the 1 ms period).
- ``executor: single`` / ``executor: multi``: the message-mode run again on rclpy's executors
  alone (the node's default is ``inputs``, :class:`InputFirstSpinner`) next to the default run:
  latency, loss, and how many odometry and scan messages the node took of those sent (starvation
  shows as fewer); the echo node on the plain executor too, in the notes.

Verdicts (node step and 1 kHz rows): ``passed_abs`` against the absolute target, and
``passed_scaled`` against the target scaled by this machine's speed from the same run: node
step p99 <= (200/194) x ncps's CfC-NCP(19) step median (the anchor's 200 us vs 194 us);
1 kHz p99 <= (1.5/0.65) x the echo node's p99 (the anchor's 1.5 ms vs 0.65 ms), both with the
backlog limit and a loss limit (absolute: < 1 % of commands; scaled: < 1 % beyond the echo
node's own loss in the same run). ``passed`` is the absolute verdict; the notes spell out both.

Run length: full 60 s per cross-process run, quick 3 s.
``python -m bench.bench_ros [--quick] [--in-process]`` (``--in-process``: the node step rows
only); ``--echo`` runs the echo node (a child of this module).
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import row, time_calls

__all__ = ["run"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "diff_drive.yaml"
ECHO_IN, ECHO_OUT = "/bench_echo/odom", "/bench_echo/cmd"
_BASE_SEC = 1000  # sensor stamps: _BASE_SEC + k ms for the k-th message (so replies name their message)


def _ros_env() -> dict[str, str]:
    """Loopback-only discovery in a domain of our own, logs in a temp dir (set before rclpy.init)."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="lnn_bench_roslog_"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _make_model(path: pathlib.Path) -> Any:
    """Seeded CfC-NCP(19) policy file for the diff_drive mapping (12 inputs); returns the ncps module."""
    import torch
    from ncps.torch import CfC
    from ncps.wirings import AutoNCP

    from lnn_control.nn.policy import from_ncps
    from lnn_control.runtime.model_file import save_policy

    torch.manual_seed(0)
    ncps_model = CfC(12, AutoNCP(19, 2, seed=0), batch_first=True).eval()
    save_policy(path, from_ncps(ncps_model))
    return ncps_model


def _stamp(k: int) -> tuple[int, int]:
    return _BASE_SEC + k // 1000, (k % 1000) * 1_000_000


def _index(stamp: Any) -> int:
    return (int(stamp.sec) - _BASE_SEC) * 1000 + int(round(stamp.nanosec / 1e6))


class _Sensors:
    """diff_drive sensor messages: odometry (stamp k), a 72-beam scan, a goal."""

    def __init__(self) -> None:
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import LaserScan

        self.Odometry, self.LaserScan = Odometry, LaserScan
        self.goal = PoseStamped()
        self.goal.header.frame_id = "odom"
        self.goal.pose.position.x, self.goal.pose.position.y = 2.0, 1.5
        self.rng = np.random.default_rng(0)

    def odom(self, k: int) -> Any:
        o = self.Odometry()
        o.header.stamp.sec, o.header.stamp.nanosec = _stamp(k)
        o.header.frame_id = "odom"
        o.pose.pose.position.x = -1.0 + 1e-4 * (k % 1000)
        o.pose.pose.position.y = 0.5
        o.pose.pose.orientation.w = 1.0
        o.twist.twist.linear.x = 0.3
        return o

    def scan(self, k: int) -> Any:
        s = self.LaserScan()
        s.header.stamp.sec, s.header.stamp.nanosec = _stamp(k)
        s.angle_min, s.angle_increment = 0.0, 2 * math.pi / 72
        s.range_min, s.range_max = 0.05, 4.0
        s.ranges = [float(r) for r in self.rng.uniform(0.6, 4.0, 72)]
        return s


# ---------------------------------------------------------------------------------- in-process
def _in_process(quick: bool, model_path: pathlib.Path, ncps_model: Any) -> list[dict[str, Any]]:
    import rclpy
    import torch

    from bench.bench_node_history import node_with_readers
    from lnn_control.ros.controller_node import LnnController

    # the watchdog is not what this row times: a load stall of the shared machine between two
    # calls must not turn a step into a fallback (the watchdog has its own tests); 10 s is the
    # parameter's maximum
    args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_file:={model_path}"]
    ctx, node, reader = node_with_readers(LnnController, [*args, "-p", "sensor_timeout:=10.0"])
    try:
        sensors = _Sensors()
        cb = node.callbacks
        k = [0]
        cb["/goal_pose"](sensors.goal)
        cb["/scan"](sensors.scan(0))

        def step() -> None:
            k[0] += 1
            if k[0] % 5 == 0:
                cb["/scan"](sensors.scan(k[0]))
            cb["/odom"](sensors.odom(k[0]))

        n = 400 if quick else 5000
        before = dict(node.counters)
        node.latencies.clear()
        node.step_times.clear()
        time_calls(step, n, warmup=50)  # the callback times itself (entry -> command / last publish)
        lat = np.fromiter(node.latencies, dtype=float)[-n:]
        whole = np.fromiter(node.step_times, dtype=float)[-n:]
        fallbacks = node.counters["fallbacks"] - before["fallbacks"]
        commands = node.counters["commands"] - before["commands"]
        if commands < n or fallbacks:
            raise RuntimeError(f"node step: {commands} commands, {fallbacks} fallbacks ({node.last_reason})")
        # the step's parts, same inputs
        core = node.control_step
        assert core is not None
        obs = core.observation
        o, x, env = obs.observation(), obs.state(), obs.env()
        stepper, filt = core.stepper, core.safety_filter
        t_pol = time_calls(lambda: stepper.step(o, 0.02), n)
        y = stepper.step(o, 0.02)
        t_fil = time_calls(lambda: filt.filter(x, y[:2], env=env), n)
        torch.set_num_threads(1)
        xt = torch.zeros(1, 1, 12)
        ts = torch.full((1, 1), 0.02)
        h = [None]

        def ncps_step() -> None:
            with torch.no_grad():
                _, h[0] = ncps_model(xt, hx=h[0], timespans=ts)

        t_ncps = time_calls(ncps_step, n)
        med = np.median
        rows_ = [int(len(filt.filter(x, y[:2], env=env)[1].constraint_names))]
        r = row(
            "ros",
            "node step in-process: odom in -> command published, CfC-NCP(19) + filter",
            lat,
            t_ncps,
            "ncps CfC CfC-NCP(19) step",
            "p99 <= 200 us",
            notes=(
                f"policy step {med(t_pol) * 1e6:.1f} us, filter {med(t_fil) * 1e6:.1f} us "
                f"({rows_[0]} rows), rest (receipt, observation, checks, command message + publish) "
                f"{(med(lat) - med(t_pol) - med(t_fil)) * 1e6:.1f} us; ref = ncps's policy step alone "
                f"(the anchor's 194 us); {n} steps with filtered commands, a new 72-beam scan every 5th"
            ),
        )
        # two verdicts: the absolute target, and the target scaled by this machine's speed measured
        # in the same run (the anchor's 200 us budget is 200/194 of ncps's CfC-NCP(19) step there)
        _verdicts(r, 200e-6, (200.0 / 194.0) * float(med(t_ncps)), "(200/194) x ncps step median")
        r2 = row(
            "ros",
            "node step in-process: odom in -> command, nominal and SafetyStatus published",
            whole,
            t_ncps,
            "ncps CfC CfC-NCP(19) step",
            notes="the whole callback: the telemetry (nominal, status) goes out after the command",
        )
        return [r, r2, _raw_vs_object(node, sensors, n)]
    finally:
        reader.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def _raw_vs_object(node: Any, sensors: Any, n: int, blocks: int = 10) -> dict[str, Any]:
    """Issue 15 item 6: the step from the serialised trigger on, both ways, in interleaved blocks.

    Before (the message-object path): rclpy's deserialisation into an ``Odometry`` (what a
    non-raw subscription does before the callback) + the callback, until the command is
    published. After (the node's default, ``raw_trigger``): the callback given the bytes (what a
    ``raw=True`` subscription hands over), read by the verified layout. Same messages, same
    node, a new scan every 5th step; garbage collection off in both, as in ``time_calls``."""
    import gc

    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message, serialize_message

    if not node.raw_trigger:
        raise RuntimeError("node step raw: the trigger is not taken raw (no verified layout)")
    cb = node.callbacks
    k0 = 100_000  # stamps after every message of the earlier rows
    per = max(1, n // blocks)
    data = [serialize_message(sensors.odom(k0 + i)) for i in range(2 * per * blocks + 100)]
    scans = {i: sensors.scan(k0 + i) for i in range(0, len(data), 5)}
    clock = time.perf_counter
    k = [0]

    def one(raw: bool) -> float:
        i = k[0]
        k[0] += 1
        if i in scans:
            cb["/scan"](scans[i])
        t0 = clock()
        if raw:
            cb["/odom"](data[i])
        else:
            cb["/odom"](deserialize_message(data[i], Odometry))
        return node._t_command - t0

    before_counts = dict(node.raw_counts)
    before_cmds = node.counters["commands"]
    t_obj: list[float] = []
    t_raw: list[float] = []
    for _ in range(50):
        one(False)
        one(True)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(blocks):
            t_obj += [one(False) for _ in range(per)]
            t_raw += [one(True) for _ in range(per)]
    finally:
        if gc_was:
            gc.enable()
    parsed = node.raw_counts["parsed"] - before_counts["parsed"]
    if parsed != per * blocks + 50 or node.counters["commands"] - before_cmds != 2 * (per * blocks + 50):
        raise RuntimeError(f"node step raw: {parsed} parsed, {node.raw_counts}, {node.last_reason}")
    a, b = np.array(t_raw), np.array(t_obj)
    r = row(
        "ros",
        "node step in-process from the serialised trigger: raw bytes (layout) vs rclpy message",
        a,
        b,
        "rclpy deserialise + message-object step",
        "median <= 1/2 of the object path",
        notes=(
            f"odom bytes in -> command published; object path = rclpy's Odometry conversion "
            f"(as a non-raw subscription) + the same callback; {len(a)} steps each in {blocks} "
            f"interleaved blocks; load average {' / '.join(f'{v:.2f}' for v in os.getloadavg())}"
        ),
    )
    r["passed"] = bool(np.median(a) <= 0.5 * np.median(b))
    return r


def _verdicts(r: dict[str, Any], limit_s: float, scaled_s: float, how: str) -> None:
    """Add both verdicts on the row's p99: the absolute limit and the limit scaled to this machine
    (``passed`` is the absolute one; the notes and extra fields carry both)."""
    p99 = r["ours_p99_s"]
    r["target_abs_s"], r["target_scaled_s"] = limit_s, scaled_s
    r["passed_abs"], r["passed_scaled"] = bool(p99 <= limit_s), bool(p99 <= scaled_s)
    r["passed"] = r["passed_abs"]
    r["notes"] += (
        f"; verdicts: p99 {p99 * 1e6:.0f} us vs {limit_s * 1e6:.0f} us absolute "
        f"({'met' if r['passed_abs'] else 'missed'}), vs {scaled_s * 1e6:.0f} us scaled = {how} of this "
        f"run ({'met' if r['passed_scaled'] else 'missed'})"
    )


# ---------------------------------------------------------------------------------- echo node
def _echo_main(executor: str = "inputs") -> None:
    """Bare DDS round trip: Odometry in (sensor QoS) -> TwistStamped out (reliable), stamp copied."""
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from nav_msgs.msg import Odometry
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.impl.implementation_singleton import rclpy_implementation
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    RCLError = rclpy_implementation.RCLError
    rclpy.init()
    node = rclpy.create_node("bench_echo")
    pub = node.create_publisher(
        TwistStamped, ECHO_OUT, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )

    def on_odom(m: Any) -> None:
        out = TwistStamped()
        out.header.stamp = m.header.stamp
        out.twist.linear.x = m.twist.twist.linear.x
        pub.publish(out)

    # the controller's input QoS (best effort, keep last 1: input_queue_depth's default)
    sensor = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
    sub = node.create_subscription(Odometry, ECHO_IN, on_odom, sensor)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    # the controller's default spin (InputFirstSpinner), or the plain executor with --executor single
    spin: Callable[..., None] = ex.spin_once
    if executor == "inputs":
        from lnn_control.ros.controller_node import InputFirstSpinner

        spin = InputFirstSpinner(node, ex, lambda: [sub]).spin_once
    try:
        while rclpy.ok():
            spin(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException, RCLError):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# ---------------------------------------------------------------------------------- driver
def _rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            fields[k] = int(v.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


class _Driver:
    """This process's side: 1 kHz sensor publisher, command receiver, lifecycle / parameter client."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from nav_msgs.msg import Odometry
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import LaserScan

        self.rclpy = rclpy
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("bench_driver", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        n, sensor = self.node, qos_profile_sensor_data
        rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {
            "echo": n.create_publisher(Odometry, ECHO_IN, sensor),
            "odom": n.create_publisher(Odometry, "/odom", sensor),
            "scan": n.create_publisher(LaserScan, "/scan", sensor),
            "goal": n.create_publisher(PoseStamped, "/goal_pose", sensor),
        }
        from lifecycle_msgs.srv import ChangeState
        from rcl_interfaces.srv import SetParameters

        self.clients: dict[Any, Any] = {}
        for srv, name in (
            (ChangeState, "/lnn_controller/change_state"),
            (SetParameters, "/lnn_controller/set_parameters"),
        ):
            self.clients[(srv, name)] = self.node.create_client(srv, name)
        self.sent: dict[int, float] = {}
        self.got: dict[int, float] = {}
        self.arrivals: list[float] = []
        self.diag: dict[str, str] = {}
        replies = [
            n.create_subscription(TwistStamped, ECHO_OUT, self._on_reply, rel),
            n.create_subscription(TwistStamped, "/cmd_vel", self._on_reply, rel),
        ]
        from lnn_control.ros.controller_node import InputFirstSpinner

        # replies taken straight from the wait set: rclpy's executor would cost this process
        # ~0.6 ms of CPU per reply at 1 kHz, competing with the node under test for the 2 cores
        self.spin = InputFirstSpinner(self.node, self.ex, lambda: replies).spin_once
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, rel)
        self.sensors = _Sensors()

    def _on_reply(self, m: Any) -> None:
        t = time.perf_counter()
        self.arrivals.append(t)
        k = _index(m.header.stamp)
        if k in self.sent and k not in self.got:
            self.got[k] = t

    def _on_diag(self, m: Any) -> None:
        for st in m.status:
            if st.name.startswith("lnn_controller"):
                self.diag = {kv.key: kv.value for kv in st.values}

    def spin_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            self.spin(timeout_sec=0.01)
        return cond()

    def call(self, srv_type: Any, name: str, req: Any, timeout: float = 30.0) -> Any:
        """Call a service (``lnn_control.ros.service_calls``); clients are made once and kept (a
        reply to a client made just before the call can be lost while the server's reply writer
        is still matching)."""
        from lnn_control.ros.service_calls import call_service

        key = (srv_type, name)
        if key not in self.clients:
            self.clients[key] = self.node.create_client(srv_type, name)
        return call_service(self.clients[key], req, lambda: self.spin(timeout_sec=0.01), timeout)

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Ask ``get_state`` until the node answers (``lnn_control.ros.service_calls``)."""
        from lifecycle_msgs.srv import GetState

        from lnn_control.ros.service_calls import wait_lifecycle_ready

        name = "/lnn_controller/get_state"
        cli = self.clients.setdefault((GetState, name), self.node.create_client(GetState, name))
        return wait_lifecycle_ready(cli, lambda: self.spin(timeout_sec=0.01), timeout)

    def bring_up(self) -> None:
        """unconfigured -> active, and wait until the node subscribes to ``/odom``."""
        from lifecycle_msgs.msg import Transition

        if self.wait_ready() != "unconfigured":
            raise RuntimeError("lnn_controller did not start unconfigured")
        self.transition(Transition.TRANSITION_CONFIGURE)
        self.transition(Transition.TRANSITION_ACTIVATE)
        if not self.spin_until(lambda: self.pubs["odom"].get_subscription_count() > 0, 10.0):
            raise RuntimeError("controller did not subscribe to /odom")

    def transition(self, tid: int) -> None:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        res = self.call(
            ChangeState, "/lnn_controller/change_state", ChangeState.Request(transition=Transition(id=tid))
        )
        if not res.success:
            raise RuntimeError(f"lifecycle transition {tid} failed")

    def set_params(self, values: dict[str, Any]) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        )
        res = self.call(SetParameters, "/lnn_controller/set_parameters", req)
        bad = [r.reason for r in res.results if not r.successful]
        if bad:
            raise RuntimeError(f"parameter set rejected: {bad}")

    def stream(self, topic: str, seconds: float, k0: int, scans: bool, record: bool = True) -> int:
        """Publish odometry on ``topic`` at 1 kHz for ``seconds`` (scans at 20 Hz, goals at 1 Hz when
        ``scans``) from a thread, while this thread takes the replies; returns the next index.

        One message object per topic is reused (``publish`` serialises it at once), so the loop
        costs a stamp write and a publish; it sleeps to the next 1 ms tick and never bursts to
        catch up after falling behind: consecutive messages are >= 0.5 ms apart (a late tick
        moves the schedule; ticks skipped are not sent, so not counted as lost)."""
        pub, period = self.pubs[topic], 1e-3
        odom, scan = self.sensors.odom(k0), self.sensors.scan(k0)
        state = {"k": k0, "done": False}

        def publisher() -> None:
            k = k0
            t_next = time.perf_counter()
            t_end = t_next + seconds
            while t_next < t_end:
                delay = t_next - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                odom.header.stamp.sec, odom.header.stamp.nanosec = _stamp(k)
                if scans and (k == k0 or k % 50 == 0):
                    scan.header.stamp.sec, scan.header.stamp.nanosec = _stamp(k)
                    self.pubs["scan"].publish(scan)
                if scans and (k == k0 or k % 1000 == 0):
                    self.pubs["goal"].publish(self.sensors.goal)
                if record:
                    self.sent[k] = time.perf_counter()
                pub.publish(odom)
                k += 1
                t_next += period
                now = time.perf_counter()
                # late (loaded machine): shift the schedule rather than burst to catch up; two
                # messages < 0.5 ms apart would find a keep-last-1 input still holding the first
                if t_next < now + 0.5 * period:
                    t_next = now + period
            state["k"] = k
            state["done"] = True

        th = threading.Thread(target=publisher, daemon=True)
        th.start()
        while not state["done"]:
            self.spin(timeout_sec=0.01)
        th.join()
        self.spin_until(lambda: False, 0.2)  # collect the last replies
        return int(state["k"])

    def latencies(self) -> tuple[np.ndarray, int]:
        """Seconds from publish to reply, in publish order; and the number lost."""
        ks = sorted(self.sent)
        lat = np.array([self.got[k] - self.sent[k] for k in ks if k in self.got])
        return lat, len(ks) - lat.size

    def reset(self) -> None:
        self.sent, self.got, self.arrivals = {}, {}, []

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


def _backlog(lat: np.ndarray) -> float:
    """Median of the last tenth minus median of the first tenth, s (> 0: latency grew)."""
    m = max(1, lat.size // 10)
    return float(np.median(lat[-m:]) - np.median(lat[:m]))


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _across_processes(quick: bool, model_path: pathlib.Path) -> list[dict[str, Any]]:
    from lifecycle_msgs.msg import Transition

    env = _ros_env()
    seconds = 3.0 if quick else 60.0
    d = _Driver()
    procs: list[subprocess.Popen[str]] = []

    def start(args: list[str]) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(p)
        return p

    try:
        # 1. the bare DDS round trip, spun as the controller spins (executor: inputs, its default)
        def echo_run(executor: str, k: int) -> tuple[np.ndarray, int, tuple[int, int], int]:
            echo = start(["-m", "bench.bench_ros", "--echo", "--executor", executor])
            if not d.spin_until(lambda: d.pubs["echo"].get_subscription_count() > 0, 20.0):
                raise RuntimeError(f"echo node did not come up:\n{_stop(echo)}")
            k = d.stream("echo", 0.5, k, scans=False, record=False)  # warm-up
            d.reset()
            k = d.stream("echo", seconds, k, scans=False)
            lat, lost_ = d.latencies()
            rss_ = _rss_kb(echo.pid)
            _stop(echo)
            if not d.spin_until(lambda: d.pubs["echo"].get_subscription_count() == 0, 10.0):
                raise RuntimeError("echo node did not go away")
            return lat, lost_, rss_, k

        ref, ref_lost, echo_rss, k = echo_run("inputs", 0)

        # 2. the controller node: message mode, TwistStamped out
        def message_mode(executor: str, secs: float, k: int) -> tuple[dict[str, Any], int]:
            node = start(
                [
                    "-m", "lnn_control.ros.controller_node", "--ros-args", "--params-file", str(CONFIG),
                    "-p", f"model_file:={model_path}", "-p", "sensor_timeout:=0.5",
                    "-p", "diagnostics_rate:=2.0",
                    "-p", "observation.command.type:=geometry_msgs/msg/TwistStamped",
                    "-p", "observation.command.fields:=[twist.linear.x, twist.angular.z]",
                    "-p", f"executor:={executor}",
                ]
            )  # fmt: skip
            d.bring_up()
            k = d.stream("odom", 1.0, k, scans=True, record=False)  # warm-up (first scan, goal)
            d.reset()
            d.diag = {}
            k0 = k
            k = d.stream("odom", secs, k, scans=True)
            lat, lost = d.latencies()
            d.diag = {}
            d.spin_until(lambda: bool(d.diag), 2.0)
            out = {
                "lat": lat,
                "lost": lost,
                "sent": len(d.sent),
                "scans_sent": sum(1 for j in range(k0, k) if j % 50 == 0),
                "diag": dict(d.diag),
                "rss": _rss_kb(node.pid),
                "proc": node,
            }
            if lat.size < 10:
                raise RuntimeError(f"only {lat.size} of {out['sent']} commands came back")
            return out, k

        def starvation(res: dict[str, Any]) -> str:
            dg = res["diag"]
            return (
                f"{res['lat'].size}/{res['sent']} commands back; node took {dg.get('received /odom', '?')} "
                f"odometry and {dg.get('received /scan', '?')} scans (run sent {res['sent']} and "
                f"{res['scans_sent']}, plus warm-up)"
            )

        default, k = message_mode("inputs", seconds, k)
        ours, lost, n_sent, diag, rss = (
            default["lat"],
            default["lost"],
            default["sent"],
            default["diag"],
            default["rss"],
        )
        growth = _backlog(ours)
        r = row(
            "ros",
            f"sensor publish -> command receipt, 1 kHz across processes ({seconds:.0f} s)",
            ours,
            ref,
            "DDS round trip (rclpy echo node)",
            "p99 <= 1.5 ms, no backlog",
            notes=(
                f"{ours.size}/{n_sent} commands back ({lost} lost; echo lost {ref_lost}); backlog "
                f"(last - first tenth median) {growth * 1e3:+.3f} ms; node RSS {rss[0] / 1024:.0f} MiB "
                f"(peak {rss[1] / 1024:.0f}) vs echo node {echo_rss[0] / 1024:.0f} MiB; node-side step "
                f"median {diag.get('latency_median_us', '?')} us, p99 {diag.get('latency_p99_us', '?')} us; "
                f"fallbacks {diag.get('fallbacks', '?')} "
                f"(last: {diag.get('last_fallback_reason', '')!r:.80}); {starvation(default)}; "
                "both nodes spun by InputFirstSpinner (executor: inputs)"
            ),
        )
        # scaled: the anchor's 1.5 ms budget is 1.5 / 0.65 = 2.3x its DDS echo p99
        _verdicts(r, 1.5e-3, (1.5 / 0.65) * float(np.percentile(ref, 99)), "(1.5/0.65) x echo p99")
        # loss: < 1 % of the commands (absolute); scaled, < 1 % beyond what the bare echo node lost
        # in the same run (a loaded machine drops messages before any node code runs)
        echo_loss = ref_lost / max(1, ref.size + ref_lost)
        no_backlog = bool(growth <= 0.2e-3)
        loss_abs, loss_scaled = bool(lost <= 0.01 * n_sent), bool(lost <= (0.01 + echo_loss) * n_sent)
        r["no_backlog"], r["loss_ok_abs"], r["loss_ok_scaled"] = no_backlog, loss_abs, loss_scaled
        r["passed_abs"] = r["passed"] = bool(r["passed_abs"] and no_backlog and loss_abs)
        r["passed_scaled"] = bool(r["passed_scaled"] and no_backlog and loss_scaled)
        r["notes"] += (
            f"; backlog {'within' if no_backlog else 'OUTSIDE'} 0.2 ms; loss {lost / max(1, n_sent):.2%} vs "
            f"1 % ({'met' if loss_abs else 'missed'}), vs 1 % + echo's {echo_loss:.2%} "
            f"({'met' if loss_scaled else 'missed'}); final: absolute "
            f"{'PASSED' if r['passed_abs'] else 'FAILED'}, "
            f"scaled {'PASSED' if r['passed_scaled'] else 'FAILED'}"
        )
        r["rss_kb"], r["rss_peak_kb"], r["echo_rss_kb"] = rss[0], rss[1], echo_rss[0]
        r["backlog_s"], r["lost"] = growth, lost
        rows = [r]

        # 3. timer mode at 1 kHz: reconfigure the same process
        d.transition(Transition.TRANSITION_DEACTIVATE)
        d.transition(Transition.TRANSITION_CLEANUP)
        d.set_params({"control_mode": "timer", "rate_hz": 1000.0})
        d.transition(Transition.TRANSITION_CONFIGURE)
        d.transition(Transition.TRANSITION_ACTIVATE)
        k = d.stream("odom", 1.0, k, scans=True, record=False)
        d.reset()
        k = d.stream("odom", seconds, k, scans=True, record=False)
        gaps = np.diff(np.array(d.arrivals))
        if gaps.size < 10:
            raise RuntimeError("timer mode: no commands")
        rate = gaps.size / (d.arrivals[-1] - d.arrivals[0])
        rows.append(
            row(
                "ros",
                "timer mode 1 kHz: command inter-arrival at the receiver",
                gaps,
                np.full(gaps.size, 1e-3),
                "1 ms period",
                "rate >= 0.95 kHz",
                notes=(
                    f"{gaps.size + 1} commands in {seconds:.0f} s = {rate:.0f} Hz; "
                    "odometry at 1 kHz, scans at 20 Hz"
                ),
            )
        )
        rows[-1]["passed"] = bool(rate >= 950.0)
        d.transition(Transition.TRANSITION_DEACTIVATE)
        _stop(default["proc"])

        # 4. rclpy's executors alone (what the node used before InputFirstSpinner), same run
        single, k = message_mode("single", seconds, k)
        _stop(single["proc"])
        ref_single, ref_single_lost, _, k = echo_run("single", k)
        rows.append(
            row(
                "ros",
                f"sensor -> command, 1 kHz, executor: single ({seconds:.0f} s)",
                single["lat"],
                default["lat"],
                "same run, executor: inputs (default)",
                notes=(
                    f"single: {starvation(single)}, {single['lost']} lost; inputs: {default['lost']} lost; "
                    f"echo node on SingleThreadedExecutor: median {np.median(ref_single) * 1e6:.0f} us, "
                    f"p99 {np.percentile(ref_single, 99) * 1e6:.0f} us, {ref_single_lost} lost "
                    f"(on InputFirstSpinner: {np.median(ref) * 1e6:.0f} / "
                    f"{np.percentile(ref, 99) * 1e6:.0f} us, {ref_lost} lost)"
                ),
            )
        )
        rows[-1]["lost"], rows[-1]["echo_lost"] = single["lost"], ref_single_lost
        multi, k = message_mode("multi", seconds, k)
        rows.append(
            row(
                "ros",
                f"sensor -> command, 1 kHz, executor: multi ({seconds:.0f} s)",
                multi["lat"],
                default["lat"],
                "same run, executor: inputs (default)",
                notes=f"multi: {starvation(multi)}, {multi['lost']} lost; inputs: {starvation(default)}",
            )
        )
        return rows
    except Exception:
        for p in procs:  # the child's own words are the best clue
            print(f"--- child {p.args!r:.120} output:\n{_stop(p)[-3000:]}", file=sys.stderr)
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                _stop(p)
        d.close()


def run(quick: bool, in_process_only: bool = False) -> list[dict[str, Any]]:
    _ros_env()
    with tempfile.TemporaryDirectory(prefix="lnn_bench_ros_") as tmp:
        model_path = pathlib.Path(tmp) / "cfc_ncp19.npz"
        ncps_model = _make_model(model_path)
        rows = _in_process(quick, model_path, ncps_model)
        if not in_process_only:
            rows += _across_processes(quick, model_path)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--in-process", action="store_true", help="only the two node step in-process rows")
    ap.add_argument("--echo", action="store_true", help="run the echo node (used by the benchmark)")
    ap.add_argument("--executor", default="inputs", choices=("inputs", "single"), help="echo node's spin")
    args = ap.parse_args()
    if args.echo:
        _echo_main(args.executor)
        return
    for r in run(args.quick, args.in_process):
        print(
            f"{r['name']}: median {r['ours_median_s'] * 1e6:.1f} us, p99 {r['ours_p99_s'] * 1e6:.1f} us"
            + (
                f" | {r['ref_name']} {r['ref_median_s'] * 1e6:.1f} / {r['ref_p99_s'] * 1e6:.1f} us"
                if r["ref_median_s"]
                else ""
            )
            + f" | passed {r['passed']} | {r['notes']}"
        )


if __name__ == "__main__":
    main()
