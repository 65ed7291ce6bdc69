"""PolicyStepper: one control step of a LiquidPolicy in plain numpy (no torch import).

``PolicyStepper(config, arrays)`` takes the policy config (``LiquidPolicy.get_config()``) and its
state dict as numpy arrays (``LiquidPolicy.numpy_state()`` or a model file) and computes exactly
what ``LiquidPolicy.forward`` computes for one step of batch 1:

    y = stepper.step(obs (n_inputs,) raw, dt s)  ->  (n_outputs,) raw [commands, gains]

Bad input raises ``ValueError`` naming the argument (``obs`` wrong shape or NaN/Inf, ``dt`` <= 0
or non-finite); the state is then left as it was, so the caller can fall back and go on.

The network itself is advanced by a step kernel (:mod:`lnn_control.runtime.kernels`), chosen by
name (``kernel=``, ``auto`` by default); the stepper owns what every kernel shares: input
checks, and the read-out ``y = out @ Wo + bo`` with proj, de-normalisation and the gains' half
scale folded into one matrix at construction. Why it is fast (a control loop runs this at every
sensor message): every affine map of a step is folded into preallocated matrices at
construction, biases ride along as a constant-1 entry of the input buffers, sigmoids are tanh of
half-scaled arguments, and each step runs a fixed list of numpy calls writing into preallocated
buffers (no allocation but the returned copy).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lnn_control.runtime.kernels import KERNELS, PolicySpec, build_kernel

__all__ = ["KERNELS", "PolicyStepper"]


class PolicyStepper:
    """Stateful single-step runner of a LiquidPolicy (see the module docstring).

    Args:
        config: ``LiquidPolicy.get_config()`` (a JSON-able dict).
        arrays: state-dict name -> numpy array (float64 recommended).
        dtype: ``np.float64`` (matches torch float64 to ~1e-12) or ``np.float32`` (faster on
            large networks, ~1e-6 relative).
        kernel: ``"auto"`` (the fastest for this network: ``cfc_jit`` where numba runs it) or a
            name in :data:`KERNELS` (``cfc_default``, ``cfc_no_gate``, ``cfc_pure``,
            ``cfc_jit``, ``ltc_dense``, ``ltc_sparse``, ``ltc_split``); one that cannot run the
            policy raises ValueError naming ``kernel``.
    Attributes:
        kernel (the name in use), n_inputs, n_outputs, n_commands, n_gains, input_names,
        output_names, gain_names, units, state_size, cell, dtype, config, observation (mapping
        from the model file or None), metadata (dict).
    """

    def __init__(
        self,
        config: dict[str, Any],
        arrays: dict[str, np.ndarray],
        dtype: Any = np.float64,
        kernel: str = "auto",
    ) -> None:
        try:
            ok = np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.float32))
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"dtype must be float64 or float32, got {dtype}")
        if not isinstance(kernel, str):
            raise ValueError(f"kernel must be 'auto' or one of {list(KERNELS)}, got {kernel!r}")
        self.dtype = np.dtype(dtype)
        self.config = dict(config)
        self._arrays, self._kernel_arg = arrays, kernel  # for __reduce__: a copy is rebuilt from these
        self.observation: dict[str, Any] | None = None
        self.metadata: dict[str, Any] = {}
        spec = PolicySpec(self.config, arrays, self.dtype)
        try:
            self.n_gains = int(config.get("n_gains", 0))
            self.gain_scale = float(config.get("gain_scale", 4.0))
        except (TypeError, ValueError) as e:
            raise ValueError(f"policy config is missing or has a bad entry: {e}") from None
        self.cell, self.n_inputs = spec.cell, spec.n_inputs
        self.input_names = list(config.get("input_names") or [f"x{i}" for i in range(self.n_inputs)])
        k = self._kernel = build_kernel(spec, kernel)
        self.kernel = k.name
        self.units = k.units
        self._x_view, self._out_view = k.x, k.out
        self._build_output(spec, *k.readout)
        self.output_names = list(config.get("output_names") or [f"u{i}" for i in range(self.n_commands)])
        self.gain_names = list(config.get("gain_names") or [f"p{i}" for i in range(self.n_gains)])
        self.reset()

    def _build_output(self, spec: PolicySpec, w_net: np.ndarray, b_net: np.ndarray) -> None:
        """y = out_view @ Wo + bo, with proj, de-normalisation and the gains' half-scale folded in."""
        n_net = w_net.shape[1]
        if spec.has("proj.weight"):
            pw, pb = spec.get("proj.weight"), spec.get("proj.bias")
            if pw.shape[1] != n_net:
                raise ValueError(f"proj.weight has {pw.shape[1]} inputs, the network gives {n_net}")
            Wo, bo = w_net @ pw.T, b_net @ pw.T + pb
        else:
            Wo, bo = w_net, b_net
        n_out = Wo.shape[1]
        self.n_outputs = n_out
        self.n_commands = n_out - self.n_gains
        if not 0 <= self.n_gains < n_out:
            raise ValueError(f"config n_gains={self.n_gains} but the network has {n_out} outputs")
        k = self.n_commands
        om, os_ = spec.get("output_mean", (k,)), spec.get("output_std", (k,))
        scale = np.concatenate([os_, np.full(self.n_gains, 0.5)])
        shift = np.concatenate([om, np.zeros(self.n_gains)])
        self._Wo = np.ascontiguousarray(Wo * scale, dtype=self.dtype)
        self._bo = (bo * scale + shift).astype(self.dtype)
        self._y = np.zeros(n_out, dtype=self.dtype)
        self._y_gain = self._y[k:]
        self._half_gain = 0.5 * self.gain_scale
        # a kernel that can fold this read-out into its own step (cfc_jit) does both in one call
        bind = getattr(self._kernel, "bind_readout", None)
        self._advance_readout = (
            None if bind is None else bind(self._Wo, self._bo, self._y, k, self._half_gain)
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle / deepcopy as (config, arrays, dtype, kernel as asked, hidden state, file
        sections): the copy is rebuilt, so its buffers alias as the kernel laid them out (a
        pickled view of the kernel's buffer would not: such a copy computed other outputs) and
        ``auto`` chooses again where it is unpickled (numba there or not)."""
        extra = {"observation": self.observation, "metadata": self.metadata}
        args = (self.config, self._arrays, self.dtype.str, self._kernel_arg, self.state, extra)
        return (_rebuild, args)

    # --- state -------------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        """Hidden state length: units, doubled with mixed memory (the LSTM's cell state)."""
        return self._kernel.state_size

    @property
    def state(self) -> np.ndarray:
        """Hidden state (state_size,) float64, ordered as the torch model's (copy on read)."""
        return self._kernel.get_state()

    @state.setter
    def state(self, value: Any) -> None:
        v = np.asarray(value, dtype=np.float64)
        if v.shape != (self.state_size,) or not np.all(np.isfinite(v)):
            raise ValueError(f"state must be {self.state_size} finite values, got shape {v.shape}")
        self._kernel.set_state(v)

    def reset(self) -> None:
        """Zero the hidden state (start of an episode)."""
        self._kernel.reset()

    # --- step --------------------------------------------------------------------------
    def step(self, obs: Any, dt: float) -> np.ndarray:
        """Advance by ``dt`` seconds with observation ``obs`` (n_inputs,) raw; returns (n_outputs,) raw.

        Raises ValueError naming ``obs`` or ``dt`` on a wrong shape, NaN/Inf or dt <= 0.
        """
        x = self._x_view
        try:
            x[:] = obs
        except (ValueError, TypeError):
            shape = np.shape(obs) if not isinstance(obs, str) else "a string"
            raise ValueError(f"obs must have shape ({self.n_inputs},), got {shape}") from None
        if np.ndim(obs) != 1:
            raise ValueError(f"obs must have shape ({self.n_inputs},), got {np.shape(obs)}")
        if not math.isfinite(x.sum()):
            bad = np.flatnonzero(~np.isfinite(x)).tolist()
            raise ValueError(f"obs has NaN/Inf (or overflowing) entries at {bad or 'sum'}")
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            raise ValueError(f"dt must be a number of seconds, got {dt!r}") from None
        if not (dt > 0.0 and dt < math.inf):
            raise ValueError(f"dt must be finite and > 0 seconds, got {dt}")
        if self._advance_readout is not None:
            self._advance_readout(dt)
            return self._y.copy()
        self._kernel.advance(dt)
        y = self._y
        np.dot(self._out_view, self._Wo, out=y)
        y += self._bo
        if self.n_gains:
            g = self._y_gain
            np.tanh(g, out=g)
            g += 1.0
            g *= self._half_gain
        return y.copy()


def _rebuild(
    config: dict[str, Any], arrays: dict[str, np.ndarray], dtype: str, kernel: str, state: np.ndarray,
    extra: dict[str, Any],
) -> PolicyStepper:  # fmt: skip
    s = PolicyStepper(config, arrays, dtype=np.dtype(dtype), kernel=kernel)
    s.state = state
    s.observation, s.metadata = extra["observation"], extra["metadata"]
    return s
