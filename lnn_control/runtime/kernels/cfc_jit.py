"""``cfc_jit``: every CfC mode's step compiled by numba, one native call per step.

The numpy kernels (:mod:`lnn_control.runtime.kernels.cfc`) spend most of a step in numpy's
fixed cost per call (~8 calls a layer); at the sizes a robot runs (an NCP of 19-32 neurons) the
arithmetic itself is a few hundred multiply-adds. This kernel builds the numpy kernel of the
policy's mode for its buffers and folded weights (the same layout, the same state), then runs
the layers in one compiled function: the layer's affine map as a loop over its input, then the
mode's update, written in the order of the numpy kernel's operations, so the two agree to float64
round-off (the matmul's summation order is the only difference; the tests compare both with
torch at 1e-13).

It runs float64 policies without a backbone and without mixed memory (the layouts the NCP
policies use); anything else, numba missing, or ``LNN_CONTROL_NO_JIT`` set in the environment
raise :class:`KernelMismatch`, and ``auto`` takes the numpy kernel. The first build in a process
compiles (about 2 s) or loads numba's on-disk cache (``cache=True``: beside this file, or
numba's user cache directory when that is read-only).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from lnn_control.runtime.kernels.base import KernelMismatch, PolicySpec, StepKernel
from lnn_control.runtime.kernels.cfc import CfcDefault, CfcKernel, CfcNoGate, CfcPure

__all__ = ["CfcJit"]

_MODES: dict[str, tuple[int, type[CfcKernel]]] = {
    "default": (0, CfcDefault),
    "no_gate": (1, CfcNoGate),
    "pure": (2, CfcPure),
}


@functools.lru_cache(maxsize=1)
def _compiled() -> Any:
    """The compiled layer loop (numba imported and the function compiled on first use)."""
    import math

    from numba import njit

    @njit(cache=True, nogil=True)
    def advance(u, Ws, lo, hi, hs, a, w_tau, P, dt, mode, out0, Wo, bo, y, n_cmd, half_gain):  # type: ignore[no-untyped-def]  # pragma: no cover
        off = 0  # first neuron of layer k in a / w_tau
        for k in range(len(Ws)):
            W = Ws[k]
            z0 = lo[k]
            n_in = hi[k] - z0
            m = W.shape[1]
            for j in range(m):
                P[j] = 0.0
            for i in range(n_in):  # P = u[lo:hi] @ W, row by row (W is C-ordered)
                zi = u[z0 + i]
                if zi != 0.0:
                    for j in range(m):
                        P[j] += zi * W[i, j]
            h0 = hs[k]
            if mode == 2:  # pure: h = A - A exp(-dt (|w_tau| + |ff1|)) ff1
                for j in range(m):
                    p = P[j]
                    t = math.exp((abs(p) + w_tau[off + j]) * -dt) * p
                    u[h0 + j] = a[off + j] - t * a[off + j]
                off += m
                continue
            H = m // 4  # heads [ff1, ff2, tb/2, ta/2]
            for j in range(H):
                f1 = math.tanh(P[j])
                f2 = math.tanh(P[H + j])
                t = math.tanh(P[2 * H + j] + P[3 * H + j] * dt)
                if mode == 0:  # gated, state doubled: 2h = (ff1 + ff2) + t (ff2 - ff1)
                    u[h0 + j] = (f1 + f2) + (f2 - f1) * t
                else:  # no gate: h = ff1 + (1 + t) ff2 / 2
                    u[h0 + j] = f1 + (t + 1.0) * f2 * 0.5
            off += H
        # the stepper's read-out (Wo with no rows: none): y = out @ Wo + bo, gains (1 + tanh) / 2 scaled
        n_out = Wo.shape[1]
        if Wo.shape[0] == 0:
            return
        for j in range(n_out):
            y[j] = 0.0
        for i in range(Wo.shape[0]):
            oi = u[out0 + i]
            for j in range(n_out):
                y[j] += oi * Wo[i, j]
        for j in range(n_out):
            y[j] += bo[j]
        for j in range(n_cmd, n_out):
            y[j] = (math.tanh(y[j]) + 1.0) * half_gain

    return advance


class CfcJit(StepKernel):
    """The numpy CfC kernel's layout and state, advanced by one compiled call (module docstring)."""

    name = "cfc_jit"
    cell = "cfc"

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__(spec)
        if os.environ.get("LNN_CONTROL_NO_JIT"):
            raise KernelMismatch("compiled kernels are off (LNN_CONTROL_NO_JIT is set)")
        mode = str(spec.config.get("mode", "default"))
        if mode not in _MODES:
            raise KernelMismatch(f"it runs CfC modes {list(_MODES)}, the policy has mode {mode!r}")
        if spec.dtype != np.float64:
            raise KernelMismatch(f"it runs float64, the stepper asks for {spec.dtype}")
        if spec.mixed:
            raise KernelMismatch("it does not run mixed memory (the LSTM); the numpy kernel does")
        self._mode, cls = _MODES[mode]
        base = cls(spec)
        if any(len(stages) != 1 or stages[0][1] is not None for _lo, _hi, stages, *_ in base._layers):
            raise KernelMismatch("it does not run a backbone; the numpy kernel does")
        try:
            self._advance = _compiled()
        except ImportError as e:
            raise KernelMismatch(f"numba is not available ({e})") from None
        # the numpy kernel's buffers and folded weights: the same state, read and set alike
        self.x, self.out, self.readout, self.units = base.x, base.out, base.readout, base.units
        self._h_views, self._scale, self._u = base._h_views, base._scale, base._u
        self._state_index = base._state_index
        self._Ws = tuple(stages[0][0] for _lo, _hi, stages, *_ in base._layers)
        self._lo = np.array([lay[0] for lay in base._layers], dtype=np.int64)
        self._hi = np.array([lay[1] for lay in base._layers], dtype=np.int64)
        start = self._u.ctypes.data
        self._hs = np.array([(v.ctypes.data - start) // v.itemsize for v in self._h_views], dtype=np.int64)
        a = [lay[4] for lay in base._layers]
        w = [lay[5] for lay in base._layers]
        self._a = np.concatenate(a) if self._mode == 2 else np.zeros(1)
        self._w_tau = np.concatenate(w) if self._mode == 2 else np.zeros(1)
        self._P = np.zeros(max(W.shape[1] for W in self._Ws))
        self._out0 = (self.out.ctypes.data - start) // self.out.itemsize
        self._no_read = (np.zeros((0, 0)), np.zeros(0), np.zeros(0))
        self.advance(1.0)  # compile (or load) now, not on the first control step
        self.reset()

    def advance(self, dt: float) -> None:
        Wo, bo, y = self._no_read
        self._advance(
            self._u, self._Ws, self._lo, self._hi, self._hs, self._a, self._w_tau, self._P, dt, self._mode,
            self._out0, Wo, bo, y, 0, 0.0,
        )  # fmt: skip

    def bind_readout(
        self, Wo: np.ndarray, bo: np.ndarray, y: np.ndarray, n_commands: int, half_gain: float
    ) -> Any:
        """The stepper's read-out folded into the compiled call: returns ``advance_readout(dt)``,
        which advances and writes ``y = out @ Wo + bo`` (outputs from ``n_commands`` on as gains,
        ``(1 + tanh) * half_gain``), as the stepper's numpy read-out does."""
        if Wo.shape[0] != self.out.size or Wo.dtype != np.float64 or not Wo.flags.c_contiguous:
            return None
        read = (Wo, bo, y, int(n_commands), float(half_gain))
        args = (self._u, self._Ws, self._lo, self._hi, self._hs, self._a, self._w_tau, self._P)
        mode, out0, fn = self._mode, self._out0, self._advance

        def advance_readout(dt: float) -> None:
            fn(*args, dt, mode, out0, *read)

        return advance_readout
