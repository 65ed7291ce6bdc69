"""ROS-free control logic: the observation mapping and the control step (torch-free)."""

from lnn_control.control.observation import ObservationError, ObservationMap
from lnn_control.control.step import ControlStep, StepOutput, StepSettings

__all__ = ["ControlStep", "ObservationError", "ObservationMap", "StepOutput", "StepSettings"]
