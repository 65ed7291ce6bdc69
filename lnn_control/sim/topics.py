"""Topics, message types and message contents of the simulator, as plain dicts (no ROS import).

The ROS simulator node (``lnn_control.ros.sim_node``) fills real messages from these dicts and the
recorder (``lnn_control.learn.record``) writes the same dicts into rosbag2 MCAP, so a recording and
a live run carry identical topics, types, frames and fields. Times are integer nanoseconds of
sim time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lnn_control.sim import models as M
from lnn_control.sim.arm import ArmObservation
from lnn_control.sim.diff_drive import DiffDriveObservation

__all__ = [
    "TOPICS",
    "COMMAND_TOPIC",
    "GOAL_TOPIC",
    "PUBLISH_RATE",
    "time_msg",
    "header",
    "odometry",
    "laser_scan",
    "joint_state",
    "float64_array",
    "clock",
    "twist",
    "pose_stamped",
    "image",
]

#: Topic -> message type published by the simulator, per robot.
TOPICS: dict[str, dict[str, str]] = {
    "diff_drive": {
        "/odom": "nav_msgs/msg/Odometry",
        "/scan": "sensor_msgs/msg/LaserScan",
        "/sim/ground_truth": "std_msgs/msg/Float64MultiArray",
        "/clock": "rosgraph_msgs/msg/Clock",
    },
    "arm": {
        "/joint_states": "sensor_msgs/msg/JointState",
        "/sim/ground_truth": "std_msgs/msg/Float64MultiArray",
        "/clock": "rosgraph_msgs/msg/Clock",
    },
    "lane": {
        "/odom": "nav_msgs/msg/Odometry",
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/lane/map": "std_msgs/msg/Float64MultiArray",
        "/sim/ground_truth": "std_msgs/msg/Float64MultiArray",
        "/clock": "rosgraph_msgs/msg/Clock",
    },
}
#: (topic, type) of the command each robot takes.
COMMAND_TOPIC: dict[str, tuple[str, str]] = {
    "diff_drive": ("/cmd_vel", "geometry_msgs/msg/Twist"),
    "arm": ("/effort_controller/commands", "std_msgs/msg/Float64MultiArray"),
    "lane": ("/cmd_vel", "geometry_msgs/msg/Twist"),
}
#: (topic, type) on which whoever runs an episode publishes the goal.
GOAL_TOPIC: dict[str, tuple[str, str]] = {
    "diff_drive": ("/goal_pose", "geometry_msgs/msg/PoseStamped"),
    "arm": ("/goal_joints", "sensor_msgs/msg/JointState"),
    # lane: no goal (drive a lap); the episode's track map is given once at the start instead
    "lane": ("/lane/map", "std_msgs/msg/Float64MultiArray"),
}
#: Default sensor publish rate (Hz); lane: camera and odometry together at the camera's 20 Hz.
PUBLISH_RATE: dict[str, float] = {"diff_drive": 50.0, "arm": 100.0, "lane": 20.0}


def time_msg(t_ns: int) -> dict[str, int]:
    """builtin_interfaces/Time of ``t_ns`` (ns >= 0)."""
    t_ns = int(t_ns)
    return {"sec": t_ns // 1_000_000_000, "nanosec": t_ns % 1_000_000_000}


def header(t_ns: int, frame_id: str) -> dict[str, Any]:
    """std_msgs/Header."""
    return {"stamp": time_msg(t_ns), "frame_id": frame_id}


def _vec(x: float, y: float, z: float) -> dict[str, float]:
    return {"x": float(x), "y": float(y), "z": float(z)}


def odometry(obs: DiffDriveObservation, t_ns: int) -> dict[str, Any]:
    """nav_msgs/Odometry, frame odom -> base_link; pose from ``obs.pose``, twist (v, omega) in base_link."""
    x, y, th = (float(v) for v in obs.pose)
    cov = [0.0] * 36
    return {
        "header": header(t_ns, "odom"),
        "child_frame_id": "base_link",
        "pose": {
            "pose": {
                "position": _vec(x, y, 0.0),
                "orientation": {"x": 0.0, "y": 0.0, "z": math.sin(th / 2), "w": math.cos(th / 2)},
            },
            "covariance": cov,
        },
        "twist": {
            "twist": {"linear": _vec(obs.twist[0], 0.0, 0.0), "angular": _vec(0.0, 0.0, obs.twist[1])},
            "covariance": cov,
        },
    }


def laser_scan(obs: DiffDriveObservation, t_ns: int, scan_time: float) -> dict[str, Any]:
    """sensor_msgs/LaserScan in base_link: beam k at angle k * 2 pi / SCAN_BEAMS; ``scan_time`` s.

    Its fields are float32 in ROS: every value is given rounded to float32 (as a Python float), so
    the in-process rollout sees exactly the numbers a published or recorded scan carries."""
    inc = 2 * math.pi / M.SCAN_BEAMS
    return {
        "header": header(t_ns, "base_link"),
        "angle_min": 0.0,
        "angle_max": _f32(inc * (M.SCAN_BEAMS - 1)),
        "angle_increment": _f32(inc),
        "time_increment": 0.0,
        "scan_time": _f32(scan_time),
        "range_min": _f32(M.SCAN_RANGE_MIN),
        "range_max": _f32(M.SCAN_RANGE_MAX),
        "ranges": np.asarray(obs.scan, dtype=np.float32).astype(np.float64).tolist(),
        "intensities": [],
    }


def _f32(v: float) -> float:
    """``v`` rounded to float32 (a ROS float32 field carries no more)."""
    return float(np.float32(v))


def joint_state(obs: ArmObservation, t_ns: int) -> dict[str, Any]:
    """sensor_msgs/JointState of the arm (rad, rad/s, applied N m)."""
    return {
        "header": header(t_ns, "base_link"),
        "name": list(M.ARM_JOINT_NAMES),
        "position": [float(v) for v in obs.position],
        "velocity": [float(v) for v in obs.velocity],
        "effort": [float(v) for v in obs.effort],
    }


def float64_array(values: np.ndarray, label: str = "") -> dict[str, Any]:
    """std_msgs/Float64MultiArray with one dimension named ``label``."""
    data = [float(v) for v in np.asarray(values, dtype=float).reshape(-1)]
    dim = [{"label": label, "size": len(data), "stride": len(data)}] if label else []
    return {"layout": {"dim": dim, "data_offset": 0}, "data": data}


def clock(t_ns: int) -> dict[str, Any]:
    """rosgraph_msgs/Clock."""
    return {"clock": time_msg(t_ns)}


def twist(v: float, omega: float) -> dict[str, Any]:
    """geometry_msgs/Twist with linear.x = v (m/s), angular.z = omega (rad/s)."""
    return {"linear": _vec(v, 0.0, 0.0), "angular": _vec(0.0, 0.0, omega)}


def image(pixels: np.ndarray, t_ns: int, frame_id: str = "camera_link") -> dict[str, Any]:
    """sensor_msgs/Image of ``pixels`` (H, W, 3) rgb8 or (H, W) mono8 uint8; data as bytes."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"pixels must be (H, W) mono8 or (H, W, 3) rgb8, got shape {a.shape}")
    c = 1 if a.ndim == 2 else 3
    return {
        "header": header(t_ns, frame_id),
        "height": int(a.shape[0]),
        "width": int(a.shape[1]),
        "encoding": "mono8" if c == 1 else "rgb8",
        "is_bigendian": 0,
        "step": int(a.shape[1]) * c,
        "data": a.tobytes(),
    }


def pose_stamped(x: float, y: float, t_ns: int, theta: float = 0.0) -> dict[str, Any]:
    """geometry_msgs/PoseStamped in frame odom (= world)."""
    return {
        "header": header(t_ns, "odom"),
        "pose": {
            "position": _vec(x, y, 0.0),
            "orientation": {"x": 0.0, "y": 0.0, "z": math.sin(theta / 2), "w": math.cos(theta / 2)},
        },
    }
