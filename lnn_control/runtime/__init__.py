"""Run a trained liquid policy without torch: the numpy stepper and the model-file format.

Public API::

    stepper = load_stepper("model.npz")            # numpy only; or LiquidPolicy.runtime()
    y = stepper.step(obs, dt)                      # (n_inputs,) raw, seconds -> (n_outputs,) raw
    stepper.reset(); stepper.state                 # hidden state, torch model's order

- :class:`PolicyStepper`: one step of a ``LiquidPolicy`` from its config and arrays; the network
  is advanced by a kernel chosen by name (``kernel="auto"`` or a name in :data:`KERNELS`).
- :func:`load_stepper` / :func:`save_policy` / :func:`load_policy`: model files (one ``.npz``,
  never unpickled); :class:`ModelFileError` says which file and what is wrong.
  ``save_policy`` and ``load_policy`` import torch when called; importing this package does not.
"""

from lnn_control.runtime.model_file import ModelFileError, load_policy, load_stepper, save_policy
from lnn_control.runtime.stepper import KERNELS, PolicyStepper

__all__ = ["KERNELS", "ModelFileError", "PolicyStepper", "load_policy", "load_stepper", "save_policy"]
