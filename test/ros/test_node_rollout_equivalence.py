"""The node over real DDS and the in-process rollout run the same seeded episode the same way.

:class:`lnn_control.sim.rollout.ClosedLoop` is the one rollout loop. Here it runs episode 50001 of
each built-in robot (safety filter on, clean condition, the shipped model ``models/<robot>.npz``)
three times:

* as training and evaluation run it (``run(policy, seed)``: its own ControlStep);
* with ``controller=`` a recording wrapper around ``ControlStep.from_files`` (what the node builds
  from the same YAML and model): the same episode, the commands kept;
* with ``controller=`` :class:`RemoteStep`: every message goes over DDS to a real
  ``lnn_controller`` process (``--params-file config/<robot>.yaml``, ``use_sim_time:=true``), the
  test publishes ``/clock`` so the node's time is the rollout's sim time, and each step waits for
  the node's command (the sim in lock-step: the physics advances only once the command is back).

Starts and goals, every command (to 1e-9), fallbacks, interventions and the score must agree.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mujoco")
pytest.importorskip("barriernet.safety_filter")

import ros_rig  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from lnn_control.msg import SafetyStatus  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

from lnn_control.config import load_observation_config, read_robot_config  # noqa: E402
from lnn_control.control.observation import stamp_seconds  # noqa: E402
from lnn_control.control.step import ControlStep, StepOutput  # noqa: E402
from lnn_control.ros.conversions import message_class  # noqa: E402
from lnn_control.ros.service_calls import call_service, wait_lifecycle_ready  # noqa: E402
from lnn_control.ros.sim_node import fill_message  # noqa: E402
from lnn_control.runtime.model_file import load_stepper  # noqa: E402
from lnn_control.sim import topics as T  # noqa: E402
from lnn_control.sim.rollout import ClosedLoop, Condition, RolloutResult  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED = 50001
TOL = 1e-9  # commands: the node and the in-process step must compute the same float64 numbers
STEP_TIMEOUT = 5.0  # s of wall time for the node to answer one trigger
# s between the last sensor message of a tick and its trigger: the node takes every ready sensor
# before the trigger, so this only has to cover one loopback delivery (~0.1 ms)
SETTLE = 0.005


@dataclasses.dataclass(frozen=True)
class Sent:
    """One command a controller gave: the trigger stamp (ns) it answers, the command, fallback."""

    stamp_ns: int
    command: np.ndarray
    fallback: bool


class Recorded:
    """ControlStep's interface around another controller, keeping every command it gives."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: list[Sent] = []

    def reset(self, now: float) -> None:
        self.inner.reset(now)

    def receive(self, topic: str, msg: Any, now: float) -> float | None:
        return self.inner.receive(topic, msg, now)

    def step(self, now: float, stamp: float | None = None) -> StepOutput | None:
        out = self.inner.step(now, stamp)
        if out is not None and out.command is not None:
            self.sent.append(Sent(round((stamp or now) * 1e9), np.array(out.command), out.fallback))
        return out

    def watchdog(self, now: float) -> StepOutput | None:
        out = self.inner.watchdog(now)
        if out is not None and out.command is not None:
            self.sent.append(Sent(-1, np.array(out.command), out.fallback))
        return out


@dataclasses.dataclass(frozen=True)
class _Report:
    """What ClosedLoop reads of a step's report, from the node's SafetyStatus."""

    intervened: bool
    fallback_used: bool
    status: int


class RemoteStep:
    """ControlStep's interface (reset / receive / step / watchdog) against a real lnn_controller.

    ``receive`` publishes ``/clock`` when the time moves, then the message (the rollout's dict
    filled into the ROS message, best effort like the node's sensor subscriptions; the trigger
    ``SETTLE`` s after the sensors). ``step`` waits for the command and the ``~/safety_status``
    carrying the trigger's stamp (the command types here are unstamped; with status_every_n 1 each
    command has its status, each topic in order) and gives them as a StepOutput. ``reset``
    activates the node at that time (its ControlStep.reset(now)).
    """

    def __init__(self, robot: str, config: pathlib.Path) -> None:
        om = load_observation_config(config)
        params = read_robot_config(config)
        self.trigger = str(params.get("trigger_topic") or "") or om.stamp_topic
        self.command_map = om
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(f"rollout_equivalence_{robot}", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        n = self.node
        self.types = {topic: message_class(name) for topic, name in om.topic_types.items()}
        self.pubs = {
            topic: n.create_publisher(cls, topic, qos_profile_sensor_data)
            for topic, cls in self.types.items()
        }
        self.clock_pub = n.create_publisher(
            Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.commands: list[Any] = []
        self.status: list[SafetyStatus] = []
        self.command_topic = om.command_topic
        n.create_subscription(
            message_class(om.command_type), om.command_topic, self.commands.append, reliable
        )
        n.create_subscription(SafetyStatus, "/lnn_controller/safety_status", self.status.append, reliable)
        self.change = n.create_client(ChangeState, "/lnn_controller/change_state")
        self.get_state = n.create_client(GetState, "/lnn_controller/get_state")
        self.clock = 0.0  # the node's ROS time before any /clock message
        self.active = False
        self.used = 0  # commands (and statuses) already answered
        self.no_reply = 0
        self.sent: list[Sent] = []

    # ---------------------------------------------------------------- setup
    def spin_until(self, cond: Any, timeout: float) -> bool:
        return ros_rig.spin_until(lambda: self.ex.spin_once(timeout_sec=0.001), cond, timeout)

    def call(self, client: Any, req: Any, timeout: float = 20.0) -> Any:
        return call_service(client, req, lambda: self.ex.spin_once(timeout_sec=0.001), timeout)

    def transition(self, tid: int) -> None:
        res = self.call(self.change, ChangeState.Request(transition=Transition(id=tid)))
        assert res.success, f"lnn_controller transition {tid} failed (see its log)"

    def configure(self, timeout: float = 60.0) -> None:
        """Wait for the node, configure it, and wait until every topic is matched both ways."""
        # a request sent right after discovery can go unanswered: get_state first, until answered
        wait_lifecycle_ready(self.get_state, lambda: self.ex.spin_once(timeout_sec=0.001), timeout)
        self.transition(Transition.TRANSITION_CONFIGURE)
        n = self.node

        def matched() -> bool:
            return (
                all(n.count_subscribers(t) >= 1 for t in [*self.pubs, "/clock"])
                and n.count_publishers(self.command_topic) >= 1
                and n.count_publishers("/lnn_controller/safety_status") >= 1
            )

        assert self.spin_until(matched, timeout), "lnn_controller's topics never matched"
        self.spin_until(lambda: False, 1.0)  # the node's side of the discovery

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)

    # ---------------------------------------------------------------- ControlStep's interface
    def _set_clock(self, now: float) -> None:
        if now != self.clock:
            t_ns = round(now * 1e9)
            self.clock_pub.publish(fill_message(Clock(), T.clock(t_ns)))
            self.clock = now

    def reset(self, now: float) -> None:
        if self.active:
            self.transition(Transition.TRANSITION_DEACTIVATE)  # its fallback "deactivated" is skipped
            self.spin_until(lambda: False, 0.2)
        if now != self.clock:
            self._set_clock(now)
            self.spin_until(lambda: False, 0.2)  # the node reads its clock on activation
        self.used = len(self.commands)
        self.transition(Transition.TRANSITION_ACTIVATE)
        self.active = True

    def receive(self, topic: str, msg: Any, now: float) -> float | None:
        self._set_clock(now)
        if topic == self.trigger:
            time.sleep(SETTLE)
        self.pubs[topic].publish(fill_message(self.types[topic](), msg))
        return stamp_seconds(msg)

    def _answer(self, stamp_ns: int | None) -> StepOutput | None:
        k = self.used
        if not self.spin_until(lambda: len(self.commands) > k and len(self.status) > k, STEP_TIMEOUT):
            self.no_reply += 1
            return None
        cmd, st = self.commands[k], self.status[k]
        self.used = k + 1
        got = st.header.stamp.sec * 1_000_000_000 + st.header.stamp.nanosec
        assert stamp_ns is None or got == stamp_ns, f"status for stamp {got} ns, expected {stamp_ns} ns"
        u = self.command_map.command_from_message(cmd)
        assert np.array_equal(u, np.asarray(st.safe_command)), (u, list(st.safe_command))
        self.sent.append(Sent(got if stamp_ns is not None else -1, u, bool(st.fallback_used)))
        report = _Report(bool(st.intervened), bool(st.fallback_used), int(st.solver_status))
        reason = str(st.fallback_reason) or ("fallback" if st.fallback_used else None)
        return StepOutput(u, np.asarray(st.nominal_command, dtype=np.float64), report, None, reason)

    def step(self, now: float, stamp: float | None = None) -> StepOutput | None:
        return self._answer(round((stamp if stamp else now) * 1e9))

    def watchdog(self, now: float) -> StepOutput | None:
        """The node's watchdog is its own timer on the (sim) clock: move the clock and give what
        it sent, if anything."""
        self._set_clock(now)
        k = self.used
        if self.spin_until(lambda: len(self.commands) > k and len(self.status) > k, 10 * SETTLE):
            return self._answer(None)
        return None


@pytest.fixture
def remote(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[RemoteStep]:
    robot = request.param
    config = ROOT / "config" / f"{robot}.yaml"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in (env.get("PYTHONPATH"), str(ROOT)) if p])
    cmd = [
        sys.executable, "-m", "lnn_control.ros.controller_node", "--ros-args",
        "--params-file", str(config),
        "-p", f"model_file:={ROOT / 'models' / f'{robot}.npz'}", "-p", "use_sim_time:=true",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    step = RemoteStep(robot, config)
    try:
        step.configure()
        yield step
    finally:
        step.close()
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        print(out[-3000:])


def _same_score(a: RolloutResult, b: RolloutResult) -> None:
    sa, sb = a.score, b.score
    assert (sa.reached, sa.violations, sa.interventions, sa.fallbacks, sa.held) == (
        sb.reached,
        sb.violations,
        sb.interventions,
        sb.fallbacks,
        sb.held,
    )
    assert sa.time_s == pytest.approx(sb.time_s, abs=1e-12)
    assert sa.min_margin == pytest.approx(sb.min_margin, abs=TOL)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("remote", ["diff_drive", "arm"], indirect=True)
def test_node_over_dds_runs_the_rollouts_episode(remote: RemoteStep) -> None:
    robot = "diff_drive" if remote.trigger == "/odom" else "arm"
    config, model = ROOT / "config" / f"{robot}.yaml", ROOT / "models" / f"{robot}.npz"
    clean = Condition(filter=True)

    def loop() -> ClosedLoop:
        return ClosedLoop(robot, config, condition=clean)

    default = loop().run(load_stepper(model), SEED)
    local = Recorded(ControlStep.from_files(config, model))
    in_process = loop().run(None, SEED, controller=local)
    # controller= changes nothing by itself: the recorded commands are the default run's
    assert np.array_equal(default.ground_truth, in_process.ground_truth)
    assert np.array_equal(default.episode.obs, in_process.episode.obs)
    _same_score(default, in_process)

    t0 = time.monotonic()
    over_dds = loop().run(None, SEED, controller=remote)
    wall = time.monotonic() - t0

    assert np.array_equal(over_dds.start, in_process.start) and np.array_equal(over_dds.goal, in_process.goal)
    assert remote.no_reply == 0, f"{remote.no_reply} triggers got no command from the node"
    assert [s.stamp_ns for s in remote.sent] == [s.stamp_ns for s in local.sent]
    diff = np.abs(np.stack([s.command for s in remote.sent]) - np.stack([s.command for s in local.sent]))
    print(f"{robot}: {len(local.sent)} commands, max |du| {diff.max():.3e}, {wall:.1f} s over DDS")
    worst = int(np.argmax(diff.max(axis=1)))
    assert diff.max() <= TOL, (
        f"command {worst} differs by {diff[worst]} (stamp {local.sent[worst].stamp_ns} ns)"
    )
    assert [s.fallback for s in remote.sent] == [s.fallback for s in local.sent]
    _same_score(over_dds, in_process)
    assert over_dds.ground_truth.shape == in_process.ground_truth.shape
    assert np.allclose(over_dds.ground_truth, in_process.ground_truth, rtol=0.0, atol=1e-9)
    assert in_process.score.reached and in_process.score.interventions > 0  # the filter acted
