"""Clean exit on signals (issue 15): Ctrl-C on ``ros2 launch`` sends SIGINT to the process group
and launch forwards another milliseconds later. ``lnn_controller`` and ``mujoco_sim`` run as real
processes in their own process group; two signals 5 ms apart (or a burst of them) must give exit
code 0, no traceback, and (controller, active) the filter's fallback command on the command topic."""

from __future__ import annotations

import math
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("barriernet.safety_filter")

import ros_rig  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from lnn_control.msg import SafetyStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import LaserScan  # noqa: E402

from barriernet.safety_filter import SafetyFilter  # noqa: E402
from lnn_control.config import load_filter_config  # noqa: E402
from lnn_control.ros.service_calls import call_service, wait_lifecycle_ready  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "diff_drive.yaml"
X0 = np.array([-1.0, 0.5, 0.0])  # the pose the test's odometry reports (px, py, theta)
_CASES = [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)]
_IDS = ["SIGINT-twice", "SIGTERM-twice", "SIGINT-burst"]


def _start(module: str, *ros_args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in (str(ROOT), env.get("PYTHONPATH")) if p])
    # output to a file, not a pipe: nobody reads a pipe until the end, and a node that logs more
    # than the pipe holds (64 KiB, e.g. warnings under load) blocks in its logger and never exits
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--ros-args", *ros_args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as launch's children share one
    )
    _LOGS[proc.pid] = log
    return proc


_LOGS: dict[int, Any] = {}


def _output(proc: subprocess.Popen[str]) -> str:
    log = _LOGS.pop(proc.pid)
    log.seek(0)
    text = str(log.read())
    log.close()
    return text


def _signal(proc: subprocess.Popen[str], sig: int, burst: bool) -> None:
    """Two signals 5 ms apart (what launch does on Ctrl-C), or one every 5 ms until the process
    exits (at most 3 s): two alone often coalesce while the process waits in rcl, a burst is
    sure to land in the teardown too (where the old main raised KeyboardInterrupt)."""
    end = time.monotonic() + 3.0
    for i in range(1000):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # gone: fine
            return
        if (i >= 1 and not burst) or proc.poll() is not None or time.monotonic() > end:
            return
        time.sleep(0.005)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # the node dumps every thread's stack (faulthandler)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out = _output(proc)[-3000:]
        raise AssertionError(f"process did not exit after the signals; output:\n{out}") from None
    return proc.returncode, _output(proc)


class Probe:
    """Test-side node: diff_drive sensors out, command and status in, lifecycle client."""

    def __init__(self) -> None:
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        n = self.node = rclpy.create_node("signal_probe", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(n)
        self.pub_odom = n.create_publisher(Odometry, "/odom", qos_profile_sensor_data)
        self.pub_scan = n.create_publisher(LaserScan, "/scan", qos_profile_sensor_data)
        self.pub_goal = n.create_publisher(PoseStamped, "/goal_pose", qos_profile_sensor_data)
        rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.cmds: list[Twist] = []
        self.status: list[SafetyStatus] = []
        self.odom: list[Odometry] = []
        n.create_subscription(Twist, "/cmd_vel", self.cmds.append, rel)
        n.create_subscription(SafetyStatus, "/lnn_controller/safety_status", self.status.append, rel)
        self.change = n.create_client(ChangeState, "/lnn_controller/change_state")
        self.get_state = n.create_client(GetState, "/lnn_controller/get_state")
        self.t = 50.0

    def spin_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        return ros_rig.spin_until(lambda: self.ex.spin_once(timeout_sec=0.01), cond, timeout)

    def call(self, client: Any, req: Any, timeout: float = 30.0) -> Any:
        return call_service(client, req, lambda: self.ex.spin_once(timeout_sec=0.01), timeout)

    def ready(self, timeout: float = 60.0) -> None:
        wait_lifecycle_ready(self.get_state, lambda: self.ex.spin_once(timeout_sec=0.01), timeout)

    def transition(self, tid: int) -> bool:
        if tid == Transition.TRANSITION_CONFIGURE:
            self.ready()
        return bool(self.call(self.change, ChangeState.Request(transition=Transition(id=tid))).success)

    def publish(self) -> None:
        self.t += 0.02
        sec, nsec = int(self.t), int(round((self.t % 1) * 1e9))
        g = PoseStamped()
        g.header.frame_id = "odom"
        g.pose.position.x, g.pose.position.y = 2.0, 1.5
        self.pub_goal.publish(g)
        s = LaserScan()
        s.header.stamp.sec, s.header.stamp.nanosec = sec, nsec
        s.angle_min, s.angle_increment = 0.0, 2 * math.pi / 72
        s.range_min, s.range_max = 0.05, 4.0
        s.ranges = [2.5] * 72
        self.pub_scan.publish(s)
        o = Odometry()
        o.header.stamp.sec, o.header.stamp.nanosec = sec, nsec
        o.pose.pose.position.x, o.pose.pose.position.y = float(X0[0]), float(X0[1])
        o.pose.pose.orientation.w = 1.0
        o.twist.twist.linear.x = 0.2
        self.pub_odom.publish(o)

    def drive(self, cond: Callable[[], bool], timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.publish()
            if self.spin_until(cond, 0.02):
                return True
        return False

    def settle(self, quiet_s: float = 0.3, timeout: float = 5.0) -> None:
        """Spin until no command has come for ``quiet_s``: the answers to sensor messages still in
        flight when :meth:`drive` returned are in (drive stops at the first filtered status, and
        under load it has published again by then)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            n = len(self.cmds)
            if not self.spin_until(lambda n=n: len(self.cmds) > n, quiet_s):
                return

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _diagnose(proc: subprocess.Popen[str], probe: Probe) -> str:
    """What a node that never answered was doing: alive or not, what the probe's graph sees, and
    (alive) every thread's stack (SIGUSR1 -> faulthandler); the process is killed afterwards."""
    alive = proc.poll() is None
    names = sorted(probe.node.get_node_names())
    matched = probe.get_state.service_is_ready()  # a get_state server matched (not just our client)
    if alive:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return (
        f"process {'alive' if alive else f'exited {proc.returncode}'}; nodes seen {names}; "
        f"get_state server matched {matched}; output:\n{_output(proc)[-3000:]}"
    )


def _start_answering(probe: Probe, model: pathlib.Path, tries: int = 2) -> subprocess.Popen[str]:
    """Start ``lnn_controller`` and wait until it answers ``get_state``. In one CI run in about
    thirty the first controller of this file never answered in 60 s with an empty log (before
    the signal handling under test; likely the graph never reporting the service, which
    ``wait_lifecycle_ready`` now works around): should it happen again the start is diagnosed
    (:func:`_diagnose`, printed and warned) and a fresh process is started once; a second silent
    start fails the test."""
    reports = []
    for _ in range(tries):
        proc = _start(
            "lnn_control.ros.controller_node",
            "--params-file", str(CONFIG), "-p", f"model_file:={model}", "-p", "sensor_timeout:=1.0",
        )  # fmt: skip
        try:
            probe.ready(timeout=30.0)
            return proc
        except Exception:  # reported below with what the process was doing
            reports.append(_diagnose(proc, probe))
            print(reports[-1])
            warnings.warn(
                f"lnn_controller did not answer get_state in 30 s: {reports[-1][:400]}", stacklevel=2
            )
    raise AssertionError("lnn_controller never answered get_state:\n" + "\n---\n".join(reports))


@pytest.fixture
def probe() -> Any:
    p = Probe()
    yield p
    p.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig,burst", _CASES, ids=_IDS)
def test_controller_exits_cleanly_on_signals_after_its_fallback(
    probe: Probe, model: pathlib.Path, sig: int, burst: bool
) -> None:
    proc = _start_answering(probe, model)
    signalled = False
    try:
        assert probe.transition(Transition.TRANSITION_CONFIGURE)
        assert probe.transition(Transition.TRANSITION_ACTIVATE)
        assert probe.drive(lambda: any(not s.fallback_used for s in probe.status)), "no filtered command"
        probe.settle()
        n_cmds = len(probe.cmds)
        _signal(proc, sig, burst)
        signalled = True
        # no more sensor messages: the next command can only be the goodbye fallback
        assert probe.spin_until(
            lambda: len(probe.cmds) > n_cmds and any(s.fallback_reason == "shutdown" for s in probe.status),
            15.0,
        ), "no fallback command after the signals"
    finally:
        if not signalled:  # the set-up failed: end the node and let that failure be reported
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(_output(proc)[-3000:])
        else:
            code, err = _finish(proc)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    expected = SafetyFilter.from_config(load_filter_config(CONFIG)).fallback_command(X0)
    last = probe.cmds[-1]
    np.testing.assert_array_equal([last.linear.x, last.angular.z], expected)
    assert len(probe.cmds) == n_cmds + 1, "one fallback command, nothing after it"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig,burst", _CASES, ids=_IDS)
def test_sim_exits_cleanly_on_signals(probe: Probe, sig: int, burst: bool) -> None:
    probe.node.create_subscription(Odometry, "/odom", probe.odom.append, qos_profile_sensor_data)
    proc = _start("lnn_control.ros.sim_node", "-p", "robot:=diff_drive")
    signalled = False
    try:
        assert probe.spin_until(lambda: len(probe.odom) > 3, 60.0), "the simulator never published /odom"
        _signal(proc, sig, burst)
        signalled = True
    finally:
        if not signalled:  # the set-up failed: end the node and let that failure be reported
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(_output(proc)[-3000:])
        else:
            code, err = _finish(proc)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


def test_signals_reach_a_process_started_with_them_blocked() -> None:
    """A blocked signal mask is inherited through fork/exec: a parent that blocked SIGINT (as an
    rclpy process may) must not leave the node deaf to Ctrl-C (it hung in the full suite)."""
    code = (
        "import time\n"
        "from lnn_control.ros.spinner import stop_on_signals\n"
        "stop = stop_on_signals()\n"
        "print('ready', flush=True)\n"
        "t = time.monotonic()\n"
        "while not stop.is_set() and time.monotonic() - t < 10: time.sleep(0.01)\n"
        "print('stopped' if stop.is_set() else 'deaf', flush=True)\n"
    )
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert out.strip() == "stopped" and proc.returncode == 0
