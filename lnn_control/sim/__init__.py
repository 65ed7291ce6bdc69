"""MuJoCo models, plain environments and expert controllers of the two built-in robots (no ROS)."""

from __future__ import annotations

from lnn_control.sim.diff_drive import DiffDriveEnv
from lnn_control.sim.models import ROBOTS

__all__ = ["ROBOTS", "DiffDriveEnv"]
