"""BarrierNet safety layer: dynamics, barriers, QP solvers and the run-time safety filter."""

from typing import Any

from barriernet.barriers import (
    BARRIERS,
    ActuatorBox,
    Barrier,
    CircleObstacle,
    EllipseObstacle,
    HalfSpace,
    JointPositionLimits,
    JointVelocityLimits,
    LaserScan,
    SpeedLimit,
    StateBarrier,
    SuperellipsoidObstacle,
    register_barrier,
)
from barriernet.dynamics import (
    DYNAMICS,
    CallableDynamics,
    ControlAffine,
    DiffDrive,
    DoubleIntegrator,
    Manipulator,
    MujocoManipulator,
    PlanarArm,
    Unicycle,
    register_dynamics,
)
from barriernet.lane import EdgeLine, LaneBoundary
from barriernet.qp import SOLVERS, QPResult, register_solver, solve_qp
from barriernet.safety_filter import KERNELS, FilterReport, SafetyFilter


def __getattr__(name: str) -> Any:
    # QPLayer needs torch; imported on first use so the run-time filter (the ROS node) stays torch-free
    if name == "QPLayer":
        from barriernet.qp_layer import QPLayer

        return QPLayer
    raise AttributeError(f"module 'barriernet' has no attribute {name!r}")


__all__ = [
    "BARRIERS",
    "DYNAMICS",
    "KERNELS",
    "SOLVERS",
    "ActuatorBox",
    "Barrier",
    "CallableDynamics",
    "CircleObstacle",
    "ControlAffine",
    "DiffDrive",
    "DoubleIntegrator",
    "EdgeLine",
    "EllipseObstacle",
    "FilterReport",
    "HalfSpace",
    "JointPositionLimits",
    "JointVelocityLimits",
    "LaneBoundary",
    "LaserScan",
    "Manipulator",
    "MujocoManipulator",
    "PlanarArm",
    "QPLayer",
    "QPResult",
    "SafetyFilter",
    "SpeedLimit",
    "StateBarrier",
    "SuperellipsoidObstacle",
    "Unicycle",
    "register_barrier",
    "register_dynamics",
    "register_solver",
    "solve_qp",
]
