"""MuJoCo models, plain environments and expert controllers of the two built-in robots (no ROS).

Episodes (draw, time limit, scoring) are :mod:`lnn_control.sim.episodes`; the closed-loop rollout
through the deployed control step is :mod:`lnn_control.sim.rollout` (imported on demand: it
needs the control and learning packages).
"""

from __future__ import annotations

from lnn_control.sim.arm import ArmEnv
from lnn_control.sim.diff_drive import DiffDriveEnv
from lnn_control.sim.episodes import make_env
from lnn_control.sim.experts import ArmExpert, DiffDriveExpert
from lnn_control.sim.models import ROBOTS

__all__ = ["ROBOTS", "ArmEnv", "ArmExpert", "DiffDriveEnv", "DiffDriveExpert", "make_env"]
