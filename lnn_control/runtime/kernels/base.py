"""The step-kernel interface, the policy description the kernels read, and the LSTM memory.

A kernel advances a liquid network by one step of ``dt`` seconds in preallocated numpy buffers.
:class:`~lnn_control.runtime.stepper.PolicyStepper` writes the raw observation into
``kernel.x``, calls ``kernel.advance(dt)``, then reads ``kernel.out`` through the read-out it
folded from ``kernel.readout`` (proj, de-normalisation and gains are the stepper's, not the
kernel's). Each kernel class builds from a :class:`PolicySpec` and raises
:class:`KernelMismatch` (a ValueError) when the policy is not one it runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lnn_control.nn.wiring import Wiring

__all__ = ["KernelMismatch", "LstmMemory", "PolicySpec", "StepKernel"]


class KernelMismatch(ValueError):
    """The policy is not one this kernel runs (the message says why)."""


class PolicySpec:
    """A policy config and its arrays (float64), as every kernel reads them.

    Holds the input normalisation as ``x_normalised = x * alpha + beta`` (alpha, beta (n_inputs,)).
    """

    def __init__(self, config: dict[str, Any], arrays: dict[str, np.ndarray], dtype: np.dtype) -> None:
        self.config = config
        self.dtype = dtype
        self.arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        try:
            self.cell = str(config["cell"])
            self.n_inputs = int(config["n_inputs"])
            self.mixed = bool(config.get("mixed_memory", False))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"policy config is missing or has a bad entry: {e}") from None
        n = (self.n_inputs,)
        mean, std = self.get("input_mean", n), self.get("input_std", n)
        self.alpha, self.beta = 1.0 / std, -mean / std

    def get(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The array ``key``, checked against ``shape``; ValueError naming it when missing or misshaped."""
        if key not in self.arrays:
            raise ValueError(f"model arrays lack {key!r}")
        a = self.arrays[key]
        if shape is not None and a.shape != shape:
            raise ValueError(f"model array {key!r} has shape {a.shape}, expected {shape}")
        return a

    def has(self, key: str) -> bool:
        return key in self.arrays

    def wiring(self) -> Wiring | None:
        cfg = self.config.get("wiring")
        return None if cfg is None else Wiring.from_config(cfg)


class StepKernel:
    """One step of a liquid network in numpy; subclasses are the entries of ``KERNELS``.

    After construction a kernel has:
        x: (n_inputs,) view the caller writes the raw observation into before :meth:`advance`;
        out: (n_net,) view of the network's output neurons after :meth:`advance`;
        readout: (W (n_net, n_net), b (n_net,)): the network output is ``out @ W + b``;
        units: neurons; state_size: units, doubled with mixed memory.
    The hidden state lives in ``_h_views`` (stored times ``_scale``, in the kernel's neuron
    order; ``_state_index`` maps it back to the torch model's order) and in the LSTM memory.
    """

    name: ClassVar[str] = ""
    cell: ClassVar[str] = ""

    x: np.ndarray
    out: np.ndarray
    readout: tuple[np.ndarray, np.ndarray]
    units: int
    _h_views: list[np.ndarray]
    _scale: float = 1.0
    _state_index: np.ndarray | None = None
    _memory: LstmMemory | None = None

    def __init__(self, spec: PolicySpec) -> None:
        if spec.cell != self.cell:
            raise KernelMismatch(f"it runs {self.cell} cells, the policy has cell {spec.cell!r}")

    def advance(self, dt: float) -> None:
        """Advance the state by ``dt`` > 0 seconds with the input in ``x``."""
        raise NotImplementedError

    @property
    def state_size(self) -> int:
        return self.units * (2 if self._memory is not None else 1)

    def get_state(self) -> np.ndarray:
        """(state_size,) float64 in the torch model's order (a copy)."""
        h = np.concatenate(self._h_views) / self._scale
        if self._state_index is not None:
            h = h[self._state_index]
        if self._memory is not None:
            h = np.concatenate([h, self._memory.c])
        return h.astype(np.float64)

    def set_state(self, v: np.ndarray) -> None:
        """Set from (state_size,) finite float64 in the torch model's order (checked by the caller)."""
        if self._state_index is not None:
            h = np.empty(self.units)
            h[self._state_index] = v[: self.units]
            v = np.concatenate([h, v[self.units :]])
        pos = 0
        for view in self._h_views:
            view[:] = v[pos : pos + view.size] * self._scale
            pos += view.size
        if self._memory is not None:
            self._memory.c[:] = v[pos:]

    def reset(self) -> None:
        for view in self._h_views:
            view[:] = 0.0
        if self._memory is not None:
            self._memory.c[:] = 0.0


class LstmMemory:
    """Mixed memory: an LSTM before the cell, gates [g, i, f, o] = act([1, x, h] @ W).

    The input buffer holds 1 at row 0 and x at rows 1..n_inputs; ``slots`` lists (row, size)
    of the h blocks in it, stored times ``scale``. Sigmoid columns are halved at construction,
    sigma(z) = (1 + tanh(z / 2)) / 2, so one tanh covers all four gates. :meth:`step` writes
    h_lstm (times ``scale``) into the given h views.
    """

    def __init__(
        self,
        spec: PolicySpec,
        n_rows: int,
        slots: list[tuple[int, int]],
        scale: float,
        prefix: str = "net.lstm.",
    ) -> None:
        n_in = spec.n_inputs
        N = sum(H for _, H in slots)
        w_in = spec.get(prefix + "w_in", (4 * N, n_in))
        b = spec.get(prefix + "bias", (4 * N,))
        w_rec = spec.get(prefix + "w_rec")
        half = np.concatenate([np.ones(N), np.full(3 * N, 0.5)])
        b = b + np.concatenate([np.zeros(2 * N), np.ones(N), np.zeros(N)])  # forget-gate bias +1
        W = np.zeros((n_rows, 4 * N))
        W[0] = (b + w_in @ spec.beta) * half
        W[1 : 1 + n_in] = (w_in * spec.alpha).T * half
        col = 0
        for s, H in slots:
            W[s : s + H] = w_rec[:, col : col + H].T * half / scale
            col += H
        dt = spec.dtype
        self.N, self.scale = N, scale
        self.w = W.astype(dt)
        self.z = np.zeros(4 * N, dtype=dt)
        self.c = np.zeros(N, dtype=dt)
        self.t = np.zeros(N, dtype=dt)

    def step(self, inp: np.ndarray, h_views: list[np.ndarray]) -> None:
        N = self.N
        z = self.z
        np.dot(inp, self.w, out=z)
        np.tanh(z, out=z)
        g, i, f, o = z[:N], z[N : 2 * N], z[2 * N : 3 * N], z[3 * N :]
        z[N:] += 1.0
        z[N:] *= 0.5  # sigmoids
        c, t = self.c, self.t
        c *= f
        np.multiply(g, i, out=t)
        c += t
        np.tanh(c, out=t)
        t *= o
        pos = 0
        for view in h_views:
            np.multiply(t[pos : pos + view.size], self.scale, out=view)
            pos += view.size
