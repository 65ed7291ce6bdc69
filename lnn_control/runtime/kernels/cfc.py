"""CfC kernels: one class per CfC mode on one base that folds the weights and runs the heads.

Closed-form continuous-time cell (Hasani et al. 2022), per layer with heads
P = [ff1, ff2, t_a, t_b] of the layer's input [x or h_prev, h, 1] (through the backbone if any):

- ``cfc_default``: t = sigma(t_a dt + t_b), h = ff1 (1 - t) + ff2 t with ff = tanh(.);
- ``cfc_no_gate``: h = ff1 + t ff2;
- ``cfc_pure``:   h = A - A exp(-dt (|w_tau| + |ff1|)) ff1   (one head, no tanh).

The buffer u = [1, x, h_0, 1, h_1, 1, h_2, ...] holds every layer's input as one contiguous
slice [h_prev, 1, h] (layer 0: [1, x, h_0]), so each affine map is one matmul. Every sigmoid
is a tanh of a half-scaled argument, sigma(z) = (1 + tanh(z / 2)) / 2, with the halves folded in;
the gated modes reorder the heads to [ff1, ff2, t_b/2, t_a/2] so one tanh covers three of them.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from lnn_control.runtime.kernels.base import KernelMismatch, LstmMemory, PolicySpec, StepKernel

__all__ = ["CfcDefault", "CfcKernel", "CfcNoGate", "CfcPure"]

_ACTIVATIONS = ("none", "tanh", "relu", "silu", "gelu")
# one stage of a layer: (weights (rows, cols), bias (cols,) or None, activation, output buffer)
_Stage = tuple[np.ndarray, "np.ndarray | None", str, np.ndarray]


class CfcKernel(StepKernel):
    """Shared construction and layer loop of the CfC kernels; subclasses give :meth:`_update`."""

    cell = "cfc"
    mode: ClassVar[str] = ""

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__(spec)
        mode = str(spec.config.get("mode", "default"))
        if mode != self.mode:
            raise KernelMismatch(f"it runs CfC mode {self.mode!r}, the policy has mode {mode!r}")
        dt, n_in, cfg = spec.dtype, spec.n_inputs, spec.config
        L = 0
        while spec.has(f"net.cells.{L}.w_in"):
            L += 1
        if L == 0:
            raise ValueError("model arrays hold no CfC block (net.cells.0.w_in)")
        sizes = [spec.get(f"net.cells.{k}.w_rec").shape[1] for k in range(L)]
        wiring = spec.wiring()
        want = [len(layer) for layer in wiring.layers] if wiring is not None else [cfg.get("units")]
        if sizes != want:
            raise ValueError(f"CfC blocks have {sizes} neurons but the config's wiring/units say {want}")
        self.units = sum(sizes)
        h_start, pos = [], 1 + n_in  # h_k starts at h_start[k]; a 1 before each h_k, k > 0
        for k, H in enumerate(sizes):
            if k > 0:
                pos += 1
            h_start.append(pos)
            pos += H
        u = np.zeros(pos, dtype=dt)
        u[0] = 1.0
        for k in range(1, L):
            u[h_start[k] - 1] = 1.0
        self._u = u
        self.x = u[1 : 1 + n_in]
        self._h_views = [u[s : s + H] for s, H in zip(h_start, sizes)]
        inv = 1.0 / self._scale
        plain = L == 1 and cfg.get("wiring") is None
        backbone_layers = int(cfg.get("backbone_layers", 0)) if plain else 0
        act = str(cfg.get("backbone_activation", "lecun_tanh"))
        self._layers: list[tuple[int, int, list[_Stage], int, np.ndarray, np.ndarray]] = []
        for k, H in enumerate(sizes):
            p = f"net.cells.{k}."
            w_in, w_rec, b = spec.get(p + "w_in"), spec.get(p + "w_rec"), spec.get(p + "bias")
            if spec.has(p + "in_mask"):
                w_in = w_in * spec.get(p + "in_mask", w_in.shape)
            if spec.has(p + "rec_mask"):
                w_rec = w_rec * spec.get(p + "rec_mask", w_rec.shape)
            R = w_in.shape[0]
            if k == 0:
                lo, hi = 0, 1 + n_in + H
                W = np.zeros((hi - lo, R))
                W[0] = b + w_in @ spec.beta
                W[1 : 1 + n_in] = (w_in * spec.alpha).T
                W[1 + n_in :] = w_rec.T * inv
            else:
                lo, hi = h_start[k - 1], h_start[k] + H
                W = np.zeros((hi - lo, R))
                Hp = sizes[k - 1]
                W[:Hp] = w_in.T * inv
                W[Hp] = b
                W[Hp + 1 :] = w_rec.T * inv
            lin: list[tuple[np.ndarray, np.ndarray | None]] = [(W, None)]
            act_name = "none"
            if backbone_layers > 0:  # first affine is W, then the Linear layers, then the heads
                j = 0
                while spec.has(f"{p}backbone.{j}.weight"):
                    lin.append((spec.get(f"{p}backbone.{j}.weight").T, spec.get(f"{p}backbone.{j}.bias")))
                    j += 1
                lin.append((spec.get(p + "head.weight").T, spec.get(p + "head.bias")))
                act_name = act
                if act == "lecun_tanh":  # 1.7159 tanh(0.666 z): 0.666 into this layer, 1.7159 into the next
                    for i in range(len(lin) - 1):
                        wi, bi = lin[i]
                        lin[i] = (wi * 0.666, None if bi is None else bi * 0.666)
                        lin[i + 1] = (lin[i + 1][0] * 1.7159, lin[i + 1][1])
                    act_name = "tanh"
            if act_name not in _ACTIVATIONS:
                raise ValueError(f"backbone activation {act!r} is not supported by the stepper")
            lin[-1] = self._head_layout(*lin[-1], H)
            stages = [
                (
                    np.ascontiguousarray(Wi, dtype=dt),
                    None if bi is None else bi.astype(dt),
                    act_name if i < len(lin) - 1 else "none",
                    np.zeros(Wi.shape[1], dtype=dt),
                )
                for i, (Wi, bi) in enumerate(lin)
            ]
            a, w_tau = self._pure_params(spec, p, H)
            self._layers.append((lo, hi, stages, H, a, w_tau))
        self._tmp = [np.zeros(H, dtype=dt) for H in sizes]
        if spec.mixed:
            self._memory = LstmMemory(spec, u.size, list(zip(h_start, sizes)), self._scale)
        # output neurons: a contiguous run of the last layer
        first, n_net = h_start[-1], sizes[-1]
        if wiring is not None and cfg.get("synapses", "wiring") != "ncps":
            ids = [wiring.layers[-1].index(i) for i in range(wiring.output_dim)]
            first, n_net = h_start[-1] + ids[0], len(ids)
        self.out = u[first : first + n_net]
        self.readout = (np.eye(n_net) * inv, np.zeros(n_net))

    def _head_layout(
        self, w: np.ndarray, b: np.ndarray | None, H: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Reorder fused head columns [ff1, ff2, ta, tb] -> [ff1, ff2, tb/2, ta/2] (tanh form of the gate)."""
        cols = np.concatenate([w[:, : 2 * H], 0.5 * w[:, 3 * H :], 0.5 * w[:, 2 * H : 3 * H]], 1)
        bias = None if b is None else np.concatenate([b[: 2 * H], 0.5 * b[3 * H :], 0.5 * b[2 * H : 3 * H]])
        return cols, bias

    def _pure_params(self, spec: PolicySpec, p: str, H: int) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros(0, dtype=spec.dtype)
        return empty, empty

    def advance(self, dt: float) -> None:
        u = self._u
        if self._memory is not None:
            self._memory.step(u, self._h_views)
        update, h_views, tmp = self._update, self._h_views, self._tmp
        for k, (lo, hi, stages, H, a, w_tau) in enumerate(self._layers):
            z = u[lo:hi]
            for W, b, act, out in stages:
                np.dot(z, W, out=out)
                if b is not None:
                    out += b
                if act == "tanh":
                    np.tanh(out, out=out)
                elif act != "none":
                    _activate(act, out)
                z = out
            update(z, h_views[k], H, dt, tmp[k], a, w_tau)

    def _update(
        self, P: np.ndarray, h: np.ndarray, H: int, dt: float, t: np.ndarray, a: np.ndarray, w_tau: np.ndarray
    ) -> None:
        """Write the layer's new state into ``h`` from its heads ``P`` (``t`` is scratch (H,))."""
        raise NotImplementedError


class CfcDefault(CfcKernel):
    """Gated CfC; the state is stored doubled: 2h = (ff1 + ff2) + tanh(.) (ff2 - ff1)."""

    name, mode = "cfc_default", "default"
    _scale = 2.0

    def _update(
        self, P: np.ndarray, h: np.ndarray, H: int, dt: float, t: np.ndarray, a: np.ndarray, w_tau: np.ndarray
    ) -> None:
        ff1, ff2, tb, ta = P[:H], P[H : 2 * H], P[2 * H : 3 * H], P[3 * H :]
        ta *= dt
        tb += ta
        np.tanh(P[: 3 * H], out=P[: 3 * H])
        np.subtract(ff2, ff1, out=ta)
        ta *= tb
        np.add(ff1, ff2, out=h)
        h += ta


class CfcNoGate(CfcKernel):
    """CfC without the 1 - t gate: h = ff1 + (1 + tanh(.)) ff2 / 2."""

    name, mode = "cfc_no_gate", "no_gate"

    def _update(
        self, P: np.ndarray, h: np.ndarray, H: int, dt: float, t: np.ndarray, a: np.ndarray, w_tau: np.ndarray
    ) -> None:
        ff1, ff2, tb, ta = P[:H], P[H : 2 * H], P[2 * H : 3 * H], P[3 * H :]
        ta *= dt
        tb += ta
        np.tanh(P[: 3 * H], out=P[: 3 * H])
        tb += 1.0
        tb *= ff2
        tb *= 0.5
        np.add(ff1, tb, out=h)


class CfcPure(CfcKernel):
    """Direct solution of the liquid ODE: h = A - A exp(-dt (|w_tau| + |ff1|)) ff1."""

    name, mode = "cfc_pure", "pure"

    def _head_layout(
        self, w: np.ndarray, b: np.ndarray | None, H: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return w, b

    def _pure_params(self, spec: PolicySpec, p: str, H: int) -> tuple[np.ndarray, np.ndarray]:
        return spec.get(p + "A", (H,)).astype(spec.dtype), np.abs(spec.get(p + "w_tau", (H,))).astype(
            spec.dtype
        )

    def _update(
        self, P: np.ndarray, h: np.ndarray, H: int, dt: float, t: np.ndarray, a: np.ndarray, w_tau: np.ndarray
    ) -> None:
        np.abs(P, out=t)
        t += w_tau
        t *= -dt
        np.exp(t, out=t)
        t *= P
        t *= a
        np.subtract(a, t, out=h)


def _activate(name: str, z: np.ndarray) -> None:
    """Backbone activations other than (LeCun) tanh, in place, as torch defines them."""
    if name == "relu":
        np.maximum(z, 0.0, out=z)
    elif name == "silu":
        z *= 0.5 * (1.0 + np.tanh(0.5 * z))
    elif name == "gelu":  # exact (erf) GELU, torch's default
        z *= 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in z], dtype=z.dtype))
    else:
        raise ValueError(f"backbone activation {name!r} is not supported by the stepper")
