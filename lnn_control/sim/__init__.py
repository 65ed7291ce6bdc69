"""MuJoCo models, plain environments and expert controllers of the two built-in robots (no ROS)."""

from __future__ import annotations

from lnn_control.sim.arm import ArmEnv
from lnn_control.sim.diff_drive import DiffDriveEnv
from lnn_control.sim.experts import ArmExpert, DiffDriveExpert
from lnn_control.sim.models import ROBOTS

__all__ = ["ROBOTS", "ArmEnv", "ArmExpert", "DiffDriveEnv", "DiffDriveExpert", "make_env"]


def make_env(robot: str, noise_std: float = 0.0, seed: int | None = None) -> DiffDriveEnv | ArmEnv:
    """Environment of a built-in robot by name; ``noise_std`` applies to every sensor (m, rad, rad/s)."""
    if robot == "diff_drive":
        return DiffDriveEnv(scan_noise_std=noise_std, odom_noise_std=noise_std, seed=seed)
    if robot == "arm":
        return ArmEnv(noise_std=noise_std, seed=seed)
    raise ValueError(f"robot must be one of {ROBOTS}, got {robot!r}")
