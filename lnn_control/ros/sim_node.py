"""ROS 2 MuJoCo simulator node (executable ``mujoco_sim``) for the built-in robots.

``python -m lnn_control.ros.sim_node --ros-args -p robot:=diff_drive`` (or ``robot:=arm``,
``robot:=lane``).

diff_drive publishes ``/odom`` (nav_msgs/Odometry, odom -> base_link), ``/scan``
(sensor_msgs/LaserScan, 72 beams, base_link) and takes ``/cmd_vel`` (geometry_msgs/Twist:
linear.x = v, angular.z = omega; zero after ``command_timeout`` s without one). arm publishes
``/joint_states`` and takes ``/effort_controller/commands`` (std_msgs/Float64MultiArray,
data = [tau1, tau2, tau3] N m, held until the next one; the motors clip to the torque limits).
Both publish ``/sim/ground_truth`` (std_msgs/Float64MultiArray; layout in
``lnn_control.sim.diff_drive.GROUND_TRUTH_FIELDS`` / ``lnn_control.sim.arm.GROUND_TRUTH_FIELDS``,
also named in ``layout.dim[0].label``, comma separated), ``/clock`` when ``use_sim_time`` is true
(stamps are then sim time; otherwise wall time), listen to the goal on ``/goal_pose``
(geometry_msgs/PoseStamped) or ``/goal_joints`` (sensor_msgs/JointState, position = targets) for
the ground truth's goal distance, and offer ``~/reset`` (std_srvs/Trigger) that starts a new
episode from ``initial_state`` (or a random free start drawn from ``seed`` + reset count).

lane publishes ``/odom``, the forward camera ``/camera/image_raw`` (sensor_msgs/Image, rgb8 64x48,
frame camera_link; ray-cast, :mod:`lnn_control.sim.lane`) together at ``publish_rate`` (20 Hz),
the track map ``/lane/map`` (std_msgs/Float64MultiArray, [left (N, 2), right (N, 2)] m, label
``lane_map``) at each reset and then once a second, and takes ``/cmd_vel`` like diff_drive. Its
episode is :func:`lnn_control.sim.episodes.draw` of ``seed`` + reset count (seeds from 100000 on
drive held-out tracks); ``initial_state`` overrides the start on that track.

Stepping: every 1 / (publish_rate * real_time_factor) s of wall time the physics advances
1 / publish_rate s of sim time (in ``sim_dt`` steps) with the latest command, then publishes.
"""

from __future__ import annotations

import faulthandler
import importlib
import math
import sys
import time
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState, LaserScan
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from lnn_control.sim import arm as arm_mod
from lnn_control.sim import diff_drive as dd_mod
from lnn_control.sim import episodes as E
from lnn_control.sim import lane as lane_mod
from lnn_control.sim import topics as T
from lnn_control.sim.models import ROBOTS

__all__ = ["MujocoSimNode", "fill_message", "main"]

_NS = 1_000_000_000


def fill_message(msg: object, fields: dict) -> object:
    """Copy a nested dict of field values (as built by ``lnn_control.sim.topics``) into a ROS message."""
    for name, value in fields.items():
        if isinstance(value, dict):
            fill_message(getattr(msg, name), value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            cls = _element_type(msg, name)
            setattr(msg, name, [fill_message(cls(), item) for item in value])
        else:
            setattr(msg, name, value)
    return msg


def _element_type(msg: object, name: str) -> type:
    # rosidl messages describe their nested sequence element types in SLOT_TYPES.
    slots = dict(zip(msg.__slots__, msg.SLOT_TYPES))  # type: ignore[attr-defined]
    t = slots["_" + name].value_type
    mod = importlib.import_module(".".join(t.namespaces))
    return getattr(mod, t.name)


def _desc(text: str, lo: float | None = None, hi: float | None = None, integer: bool = False, **kw):
    d = ParameterDescriptor(description=text, **kw)
    if lo is not None and hi is not None:
        if integer:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


class MujocoSimNode(Node):
    """One simulated robot: steps the plain environment on a wall-clock timer and speaks its topics."""

    def __init__(self, **kwargs):
        super().__init__("mujoco_sim", **kwargs)
        robot = self.declare_parameter(
            "robot", "diff_drive", _desc(f"which built-in robot to simulate: {ROBOTS}", read_only=True)
        ).value
        if robot not in ROBOTS:
            raise ValueError(f"parameter robot must be one of {ROBOTS}, got {robot!r}")
        self.robot: str = robot
        self.sim_dt = self.declare_parameter(
            "sim_dt", 0.002, _desc("physics step (s)", 0.0005, 0.005, read_only=True)
        ).value
        self.publish_rate = self.declare_parameter(
            "publish_rate",
            T.PUBLISH_RATE[robot],
            _desc("sensor publish rate (Hz) = sim time advanced per tick", 1.0, 1000.0, read_only=True),
        ).value
        self.real_time_factor = self.declare_parameter(
            "real_time_factor", 1.0, _desc("sim seconds per wall second", 0.1, 20.0)
        ).value
        self.noise_std = self.declare_parameter(
            "noise_std", 0.0, _desc("sensor noise std (m, rad, rad/s)", 0.0, 1.0)
        ).value
        self.seed = self.declare_parameter(
            "seed", 0, _desc("random start seed", 0, 2**31 - 1, integer=True)
        ).value
        self.initial_state = list(
            self.declare_parameter(
                "initial_state",
                [0.0],
                _desc("start state on reset: [x, y, theta] or [q1, q2, q3]; [0.0] = random from seed"),
            ).value
        )
        self.command_timeout = self.declare_parameter(
            "command_timeout",
            0.5,
            _desc("diff_drive: zero velocity after this long without /cmd_vel (s)", 0.0, 10.0),
        ).value
        self.use_sim_time_ = bool(self.get_parameter("use_sim_time").value)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.env: Any
        self._lane_map: dict | None = None
        if robot == "lane":
            self.env = E.make_env("lane", self.noise_std, track_seed=lane_mod.episode_track_seed(self.seed))
            self.gt_label = ",".join(lane_mod.LANE_GROUND_TRUTH_FIELDS)
        elif robot == "diff_drive":
            self.env = dd_mod.DiffDriveEnv(self.noise_std, self.noise_std, seed=self.seed)
            self.gt_label = ",".join(dd_mod.GROUND_TRUTH_FIELDS)
        else:
            self.env = arm_mod.ArmEnv(self.noise_std, seed=self.seed)
            self.gt_label = ",".join(arm_mod.GROUND_TRUTH_FIELDS)
        self.env.model.opt.timestep = self.sim_dt
        self.resets = 0
        self.sim_time_offset_ns = 0  # sim time before the current episode, so /clock never jumps back
        self._reset_env()

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_gt = self.create_publisher(Float64MultiArray, "/sim/ground_truth", qos)
        self.pub_clock = self.create_publisher(ClockMsg, "/clock", qos) if self.use_sim_time_ else None
        if robot == "lane":
            self.pub_odom = self.create_publisher(Odometry, "/odom", qos)
            self.pub_image = self.create_publisher(Image, "/camera/image_raw", qos)
            self.pub_map = self.create_publisher(Float64MultiArray, "/lane/map", qos)
            self.create_subscription(Twist, "/cmd_vel", self._on_cmd_vel, qos)
            self.command = np.zeros(2)
            self._ticks = 0
        elif robot == "diff_drive":
            self.pub_odom = self.create_publisher(Odometry, "/odom", qos)
            self.pub_scan = self.create_publisher(LaserScan, "/scan", qos)
            self.create_subscription(Twist, "/cmd_vel", self._on_cmd_vel, qos)
            self.create_subscription(PoseStamped, "/goal_pose", self._on_goal_pose, qos)
            self.command = np.zeros(2)
        else:
            self.pub_js = self.create_publisher(JointState, "/joint_states", qos)
            self.create_subscription(Float64MultiArray, "/effort_controller/commands", self._on_effort, qos)
            self.create_subscription(JointState, "/goal_joints", self._on_goal_joints, qos)
            self.command = np.zeros(3)
        self.last_command_wall = -math.inf
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._wall_clock = Clock(clock_type=ClockType.STEADY_TIME)  # never driven by our own /clock
        self.timer = self._make_timer()
        self.get_logger().info(
            f"simulating {robot}: dt={self.sim_dt} s, publish {self.publish_rate} Hz, "
            f"real-time factor {self.real_time_factor}, noise {self.noise_std}"
        )

    # ---- parameters / episode -----------------------------------------------------------
    def _make_timer(self):
        period = 1.0 / (self.publish_rate * self.real_time_factor)
        return self.create_timer(period, self._tick, clock=self._wall_clock)

    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "initial_state":
                v = list(p.value)
                if not (v == [0.0] or len(v) == 3) or not all(math.isfinite(x) for x in v):
                    return SetParametersResult(
                        successful=False, reason="initial_state must be [0.0] or 3 numbers"
                    )
            elif p.name == "noise_std" and p.value < 0:
                return SetParametersResult(successful=False, reason="noise_std must be >= 0")
        for p in params:
            if p.name == "initial_state":
                self.initial_state = list(p.value)
            elif p.name == "noise_std":
                self.noise_std = float(p.value)
                if isinstance(self.env, lane_mod.LaneEnv):
                    self.env.odom_noise_std = self.noise_std
                    self.env.pixel_noise_std = E.LANE_PIXEL_NOISE_PER_STD * self.noise_std
                elif isinstance(self.env, dd_mod.DiffDriveEnv):
                    self.env.scan_noise_std = self.env.odom_noise_std = self.noise_std
                else:
                    self.env.noise_std = self.noise_std
            elif p.name == "real_time_factor":
                self.real_time_factor = float(p.value)
                if hasattr(self, "timer"):
                    self.destroy_timer(self.timer)
                    self.timer = self._make_timer()
            elif p.name == "command_timeout":
                self.command_timeout = float(p.value)
        return SetParametersResult(successful=True)

    def _reset_env(self) -> None:
        start = None if self.initial_state == [0.0] else np.array(self.initial_state, dtype=float)
        seed = self.seed + self.resets
        if self.robot == "lane":  # the seeded episode: its track, start and map
            spec = E.draw("lane", seed)
            if self.env.track.seed != lane_mod.episode_track_seed(seed):
                self.env = E.make_env("lane", self.noise_std, track_seed=lane_mod.episode_track_seed(seed))
            self.env.reset(seed=seed, start=spec.start if start is None else start)
            self._lane_map = E.goal_message("lane", spec.goal, 0)
            if hasattr(self, "pub_map"):
                self._publish_map()
            return
        goal = self.env.goal
        if isinstance(self.env, dd_mod.DiffDriveEnv):
            self.env.reset(seed=seed, start=start, goal=goal)
        else:
            self.env.reset(seed=seed, q0=start, goal=goal)

    def _on_reset(self, request, response):
        self.sim_time_offset_ns = self._sim_ns()
        self.resets += 1
        try:
            self._reset_env()
        except ValueError as exc:
            response.success, response.message = False, str(exc)
            return response
        self.command = np.zeros_like(self.command)
        response.success = True
        response.message = f"episode {self.resets} started at sim time {self.sim_time_offset_ns / _NS:.3f} s"
        return response

    # ---- inputs ----------------------------------------------------------------------------
    def _on_cmd_vel(self, msg: Twist) -> None:
        u = np.array([msg.linear.x, msg.angular.z])
        if not np.all(np.isfinite(u)):
            self.get_logger().warning("ignoring non-finite /cmd_vel; stopping")
            u = np.zeros(2)
        self.command = u
        self.last_command_wall = time.monotonic()

    def _on_effort(self, msg: Float64MultiArray) -> None:
        tau = np.asarray(msg.data, dtype=float)
        if tau.shape != (3,) or not np.all(np.isfinite(tau)):
            self.get_logger().warning(f"ignoring effort command {list(msg.data)}: need 3 finite torques")
            return
        self.command = tau
        self.last_command_wall = time.monotonic()

    def _on_goal_pose(self, msg: PoseStamped) -> None:
        self.env.set_goal(np.array([msg.pose.position.x, msg.pose.position.y]))

    def _on_goal_joints(self, msg: JointState) -> None:
        if len(msg.position) == 3:
            self.env.set_goal(np.asarray(msg.position, dtype=float))

    def _publish_map(self) -> None:
        if self._lane_map is not None:
            self.pub_map.publish(fill_message(Float64MultiArray(), self._lane_map))

    # ---- stepping / outputs ----------------------------------------------------------------
    def _sim_ns(self) -> int:
        return self.sim_time_offset_ns + round(self.env.time * _NS)

    def _tick(self) -> None:
        u = self.command
        if (
            isinstance(self.env, (dd_mod.DiffDriveEnv, lane_mod.LaneEnv))
            and self.command_timeout > 0
            and time.monotonic() - self.last_command_wall > self.command_timeout
        ):
            u = np.zeros(2)
        ob = self.env.step(u, 1.0 / self.publish_rate)
        if isinstance(self.env, lane_mod.LaneEnv):
            self._lane_obs = ob
        t_ns = self._sim_ns() if self.use_sim_time_ else self.get_clock().now().nanoseconds
        if self.pub_clock is not None:
            self.pub_clock.publish(fill_message(ClockMsg(), T.clock(self._sim_ns())))
        if isinstance(self.env, lane_mod.LaneEnv):
            obs = self._lane_obs  # rendered by the step above
            self.pub_image.publish(fill_message(Image(), T.image(obs.image, t_ns)))
            self.pub_odom.publish(fill_message(Odometry(), T.odometry(obs, t_ns)))
            self._ticks += 1
            if self._ticks % max(1, round(self.publish_rate)) == 1:  # the map once a second
                self._publish_map()
        elif isinstance(self.env, dd_mod.DiffDriveEnv):
            obs = self.env.observation()
            self.pub_odom.publish(fill_message(Odometry(), T.odometry(obs, t_ns)))
            self.pub_scan.publish(fill_message(LaserScan(), T.laser_scan(obs, t_ns, 1.0 / self.publish_rate)))
        else:
            self.pub_js.publish(fill_message(JointState(), T.joint_state(self.env.observation(), t_ns)))
        gt = T.float64_array(self.env.ground_truth(), label=self.gt_label)
        self.pub_gt.publish(fill_message(Float64MultiArray(), gt))


def main(args: list[str] | None = None) -> int:
    """Run the simulator node until SIGINT / SIGTERM (one or several, e.g. Ctrl-C on ``ros2 launch``,
    which forwards a second SIGINT), then shut down cleanly and return 0."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from lnn_control.ros.spinner import stop_on_signals

    stop = stop_on_signals()  # signals only end the loop below: no KeyboardInterrupt mid-teardown
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = SingleThreadedExecutor()
    try:
        node = MujocoSimNode()
        executor.add_node(node)
        while rclpy.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=0.1)  # bounded wait: a signal is seen within 0.1 s
    except ExternalShutdownException:
        pass
    finally:
        faulthandler.dump_traceback_later(10.0, exit=True)  # bounded exit, as lnn_controller's
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    sys.exit(main())
