"""Liquid time-constant (LTC) networks (Hasani et al., AAAI 2021) on any wiring.

Neuron j's potential v_j (N neurons) follows

    cm_j dv_j/dt = gleak_j (vleak_j - v_j) + sum_i w_ij s_ij(v_i) (erev_ij - v_j)
                                          + sum_k sw_kj s_kj(x_k) (serev_kj - v_j),
    s_ij(v) = sigmoid(sigma_ij (v - mu_ij)),

summed over the wiring's synapses only (recurrent i -> j and sensory k -> j). ``w, sw, cm,
gleak`` are kept positive by softplus (``positive="softplus"``, as ncps's default) or used as
they are (``positive="none"``; then call :meth:`LTCCell.apply_constraints` after each optimiser
step, as ncps does with ``implicit_param_constraints=False``). ``erev`` starts at the synapse
polarity (+-1) and is trained.

Solvers, by name from :data:`ODE_SOLVERS`, each taking ``ode_unfolds`` sub-steps of dt/unfolds:

- ``fused`` (ncps's semi-implicit step), c = cm unfolds / dt:
  v <- (c v + gleak vleak + sum w s erev) / (c + gleak + sum w s + eps);
- ``euler``: v <- v + dt/unfolds * f(v); ``rk4``: classical Runge-Kutta on f = dv/dt.

Inputs pass an affine map x * input_w + input_b first; outputs are the motor neurons
(ids 0..output_dim-1) mapped by v * output_w + output_b (``"affine"``, ``"linear"`` or ``None``).

Speed: only existing synapses are evaluated: the (N, N) parameters are gathered once per
sequence into (S,) vectors, the sensory term is computed for all steps at once, and the
synapse sums are one ``addmm`` per unfold (a synapse -> neuron scatter matrix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from lnn_control.nn.wiring import Wiring

__all__ = ["LTC", "LTCCell", "ODE_SOLVERS", "POSITIVE_FNS"]

MAPPINGS = ("affine", "linear", None)
_INIT = {
    "gleak": (0.001, 1.0),
    "vleak": (-0.2, 0.2),
    "cm": (0.4, 0.6),
    "w": (0.001, 1.0),
    "sigma": (3.0, 8.0),
    "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0),
    "sensory_sigma": (3.0, 8.0),
    "sensory_mu": (0.3, 0.8),
}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


POSITIVE_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softplus": torch.nn.functional.softplus,
    "none": _identity,
}


class _Synapses:
    """Per-sequence gathered synapse tensors (S existing synapses) and the per-step constants."""

    def __init__(self, cell: LTCCell) -> None:
        pos = cell.positive
        src, dst = cell.syn_src, cell.syn_dst
        self.src = src
        self.sigma = cell.sigma[src, dst]
        self.neg_sm = -self.sigma * cell.mu[src, dst]
        w = pos(cell.w)[src, dst]
        # (S, 2N): synapse k adds w_k erev_k to numerator column dst_k and w_k to denominator N + dst_k
        self.scatter = torch.cat(
            [cell.scatter * (w * cell.erev[src, dst]).unsqueeze(1), cell.scatter * w.unsqueeze(1)], 1
        )
        self.cm = pos(cell.cm)
        self.gleak = pos(cell.gleak)
        # (N, S) gather matrix: column k holds sigma_k at row src_k, so v @ gather = sigma_k v_src(k)
        self.gather = cell.gather_onehot * self.sigma.unsqueeze(0)

    def fused_constants(
        self, cell: LTCCell, sens: torch.Tensor, ts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(base (..., 2N), c (..., N)) of the fused solver for sensory terms ``sens`` and
        elapsed times ``ts`` (..., 1): c = cm unfolds / dt, base = [gleak vleak + sensory numerator,
        c + gleak + eps + sensory denominator]."""
        c = self.cm * (cell.ode_unfolds / ts)
        const = torch.cat([self.gleak * cell.vleak, self.gleak + cell.epsilon])
        base = sens + const
        N = cell.units
        return torch.cat([base[..., :N], base[..., N:] + c], -1), c


class _FusedUnfolds(torch.autograd.Function):
    """All unfolds of one fused step as one autograd node (hand-written backward).

    Per unfold k: a = nsm + v_k G, s = sigmoid(a), nd = base + s W, v_{k+1} = (nd[:N] + c v_k) / nd[N:].
    One node per step instead of ~7 per unfold: LTC training is dominated by per-op overhead.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        v: torch.Tensor,
        base: torch.Tensor,
        c: torch.Tensor,
        gather: torch.Tensor,
        nsm: torch.Tensor,
        weights: torch.Tensor,
        unfolds: int,
    ) -> torch.Tensor:
        N = v.shape[1]
        vs, ss, dens = [], [], []
        for _ in range(unfolds):
            s = torch.sigmoid(torch.addmm(nsm, v, gather))
            nd = torch.addmm(base, s, weights)
            den = nd[:, N:]
            vs.append(v)
            ss.append(s)
            dens.append(den)
            v = torch.addcmul(nd[:, :N], c, v) / den
        vs.append(v)
        ctx.save_for_backward(c, gather, weights, *vs, *ss, *dens)
        ctx.unfolds = unfolds
        return v

    @staticmethod
    def backward(ctx: Any, gv: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        U = ctx.unfolds
        saved = ctx.saved_tensors
        c, gather, weights = saved[:3]
        vs, ss, dens = saved[3 : 3 + U + 1], saved[4 + U : 4 + 2 * U], saved[4 + 2 * U :]
        g_base = gv.new_zeros(gv.shape[0], 2 * gv.shape[1])
        g_c = torch.zeros_like(c)
        g_gather = torch.zeros_like(gather)
        g_nsm = torch.zeros_like(ss[0][0])
        g_w = torch.zeros_like(weights)
        for k in range(U - 1, -1, -1):
            g_num = gv / dens[k]
            g_nd = torch.cat([g_num, -g_num * vs[k + 1]], 1)
            g_base += g_nd
            g_c += g_num * vs[k]
            g_v = g_num * c
            g_w.addmm_(ss[k].t(), g_nd)
            s = ss[k]
            g_a = (g_nd @ weights.t()) * s * (1.0 - s)
            g_nsm += g_a.sum(0)
            g_gather.addmm_(vs[k].t(), g_a)
            gv = torch.addmm(g_v, g_a, gather.t())
        return gv, g_base, g_c, g_gather, g_nsm, g_w, None


class LTCCell(nn.Module):
    """LTC dynamics on a wiring; see the module docstring for the equations.

    Args:
        wiring: built or unbuilt :class:`Wiring` (built here with ``input_size``).
        input_size: features of x.
        ode_unfolds: sub-steps per step (>= 1).
        solver: name in :data:`ODE_SOLVERS`.
        epsilon: added to the fused solver's denominator.
        positive: name in :data:`POSITIVE_FNS`.
        input_mapping, output_mapping: ``"affine"``, ``"linear"`` or None.

    Parameters (ncps names): gleak, vleak, cm (N,); sigma, mu, w, erev (N, N) (i -> j);
    sensory_sigma, sensory_mu, sensory_w, sensory_erev (input_size, N); input_w, input_b
    (input_size,); output_w, output_b (output_dim,). Buffers sparsity_mask, sensory_sparsity_mask.
    """

    scatter: torch.Tensor
    sensory_scatter: torch.Tensor
    gather_onehot: torch.Tensor

    def __init__(
        self,
        wiring: Wiring,
        input_size: int,
        ode_unfolds: int = 6,
        solver: str = "fused",
        epsilon: float = 1e-8,
        positive: str = "softplus",
        input_mapping: str | None = "affine",
        output_mapping: str | None = "affine",
    ) -> None:
        super().__init__()
        if not isinstance(wiring, Wiring):
            raise ValueError(f"wiring must be an lnn_control.nn.wiring.Wiring, got {type(wiring).__name__}")
        if solver not in ODE_SOLVERS:
            raise ValueError(f"solver {solver!r}: use one of {sorted(ODE_SOLVERS)}")
        if positive not in POSITIVE_FNS:
            raise ValueError(f"positive {positive!r}: use one of {sorted(POSITIVE_FNS)}")
        if isinstance(ode_unfolds, bool) or not isinstance(ode_unfolds, int) or ode_unfolds < 1:
            raise ValueError(f"ode_unfolds must be an int >= 1, got {ode_unfolds!r}")
        for name, m in (("input_mapping", input_mapping), ("output_mapping", output_mapping)):
            if m not in MAPPINGS:
                raise ValueError(f"{name} {m!r}: use one of {MAPPINGS}")
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        wiring.build(int(input_size))
        self.wiring = wiring
        self.input_size, self.units, self.output_size = int(input_size), wiring.units, wiring.output_dim
        self.state_size = self.units
        self.ode_unfolds, self.solver, self.epsilon = ode_unfolds, solver, float(epsilon)
        self.positive_name, self.positive = positive, POSITIVE_FNS[positive]
        self.input_mapping, self.output_mapping = input_mapping, output_mapping
        N, n_in = self.units, self.input_size
        dt = torch.get_default_dtype()

        def init(name: str, *shape: int) -> nn.Parameter:
            lo, hi = _INIT[name]
            return nn.Parameter(torch.rand(*shape) * (hi - lo) + lo)

        self.gleak, self.vleak, self.cm = init("gleak", N), init("vleak", N), init("cm", N)
        self.sigma, self.mu, self.w = init("sigma", N, N), init("mu", N, N), init("w", N, N)
        self.erev = nn.Parameter(torch.as_tensor(wiring.adjacency, dtype=dt))
        self.sensory_sigma, self.sensory_mu = init("sensory_sigma", n_in, N), init("sensory_mu", n_in, N)
        self.sensory_w = init("sensory_w", n_in, N)
        assert wiring.sensory_adjacency is not None
        self.sensory_erev = nn.Parameter(torch.as_tensor(wiring.sensory_adjacency, dtype=dt))
        self.register_buffer("sparsity_mask", torch.as_tensor(np.abs(wiring.adjacency), dtype=dt))
        self.register_buffer(
            "sensory_sparsity_mask", torch.as_tensor(np.abs(wiring.sensory_adjacency), dtype=dt)
        )
        self.input_w = nn.Parameter(torch.ones(n_in)) if input_mapping else None
        self.input_b = nn.Parameter(torch.zeros(n_in)) if input_mapping == "affine" else None
        self.output_w = nn.Parameter(torch.ones(self.output_size)) if output_mapping else None
        self.output_b = nn.Parameter(torch.zeros(self.output_size)) if output_mapping == "affine" else None
        # Synapse lists (not saved: they follow from the wiring).
        src, dst = np.nonzero(wiring.adjacency)
        ssrc, sdst = np.nonzero(wiring.sensory_adjacency)
        self.syn_src = torch.as_tensor(src, dtype=torch.long)
        self.syn_dst = torch.as_tensor(dst, dtype=torch.long)
        self.ssyn_src = torch.as_tensor(ssrc, dtype=torch.long)
        self.ssyn_dst = torch.as_tensor(sdst, dtype=torch.long)
        self.register_buffer("scatter", _one_hot(dst, N), persistent=False)
        self.register_buffer("gather_onehot", _one_hot(src, N).t().contiguous(), persistent=False)
        self.register_buffer("sensory_scatter", _one_hot(sdst, N), persistent=False)

    def apply_constraints(self) -> None:
        """Clip w, sensory_w, cm, gleak at 0 (only needed with ``positive="none"``)."""
        with torch.no_grad():
            for p in (self.w, self.sensory_w, self.cm, self.gleak):
                p.clamp_(min=0.0)

    def map_inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_w is not None:
            x = x * self.input_w
        if self.input_b is not None:
            x = x + self.input_b
        return x

    def map_outputs(self, v: torch.Tensor) -> torch.Tensor:
        y = v[..., : self.output_size]
        if self.output_w is not None:
            y = y * self.output_w
        if self.output_b is not None:
            y = y + self.output_b
        return y

    def sensory_terms(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 2N): [sum_k sw s(x) serev, sum_k sw s(x)] per neuron, for mapped inputs x (..., in)."""
        pos = self.positive
        s, d = self.ssyn_src, self.ssyn_dst
        sig = self.sensory_sigma[s, d]
        act = torch.sigmoid(sig * (x[..., s] - self.sensory_mu[s, d]))
        sw = pos(self.sensory_w)[s, d]
        weights = torch.cat(
            [
                self.sensory_scatter * (sw * self.sensory_erev[s, d]).unsqueeze(1),
                self.sensory_scatter * sw.unsqueeze(1),
            ],
            1,
        )
        return act @ weights

    def synapses(self) -> _Synapses:
        return _Synapses(self)

    def step(self, v: torch.Tensor, sens: torch.Tensor, ts: torch.Tensor, syn: _Synapses) -> torch.Tensor:
        """One step: v (B, N), sens (B, 2N) from :meth:`sensory_terms`, ts (B, 1) s -> v' (B, N)."""
        return ODE_SOLVERS[self.solver](self, v, sens, ts, syn)

    def forward(
        self, x: torch.Tensor, v: torch.Tensor, ts: torch.Tensor | float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single step: x (B, in), v (B, N), ts scalar/(B,)/(B, 1) s -> (y (B, out), v' (B, N))."""
        t = torch.as_tensor(ts, dtype=v.dtype)
        t = t.reshape(-1, 1) if t.dim() > 0 else t.expand(v.shape[0], 1)
        v = self.step(v, self.sensory_terms(self.map_inputs(x)), t, self.synapses())
        return self.map_outputs(v), v


def _recurrent(v: torch.Tensor, syn: _Synapses, base: torch.Tensor) -> torch.Tensor:
    """base + [sum w s erev, sum w s] over recurrent synapses; (B, 2N)."""
    act = torch.sigmoid(torch.addcmul(syn.neg_sm, v[:, syn.src], syn.sigma))
    return torch.addmm(base, act, syn.scatter)


def _fused(
    cell: LTCCell, v: torch.Tensor, sens: torch.Tensor, ts: torch.Tensor, syn: _Synapses
) -> torch.Tensor:
    base, c = syn.fused_constants(cell, sens, ts)
    return _fused_pre(cell, v, base, c, syn)


def _fused_pre(
    cell: LTCCell, v: torch.Tensor, base: torch.Tensor, c: torch.Tensor, syn: _Synapses
) -> torch.Tensor:
    """Fused unfolds with this step's constants already computed (see ``_Synapses.fused_constants``)."""
    c = c.expand_as(v)
    if torch.jit.is_tracing():
        # Export (TorchScript trace / ONNX) cannot record a Python autograd.Function: trace plain ops.
        N = v.shape[1]
        for _ in range(cell.ode_unfolds):
            nd = torch.addmm(base, torch.sigmoid(torch.addmm(syn.neg_sm, v, syn.gather)), syn.scatter)
            v = torch.addcmul(nd[:, :N], c, v) / nd[:, N:]
        return v
    return _FusedUnfolds.apply(v, base, c, syn.gather, syn.neg_sm, syn.scatter, cell.ode_unfolds)


def _derivative(cell: LTCCell, v: torch.Tensor, base: torch.Tensor, syn: _Synapses) -> torch.Tensor:
    N = cell.units
    nd = _recurrent(v, syn, base)
    return (nd[:, :N] - v * nd[:, N:]) / syn.cm


def _ode_base(cell: LTCCell, sens: torch.Tensor, syn: _Synapses) -> torch.Tensor:
    return sens + torch.cat([syn.gleak * cell.vleak, syn.gleak]).unsqueeze(0)


def _euler(
    cell: LTCCell, v: torch.Tensor, sens: torch.Tensor, ts: torch.Tensor, syn: _Synapses
) -> torch.Tensor:
    h = ts / cell.ode_unfolds
    base = _ode_base(cell, sens, syn)
    for _ in range(cell.ode_unfolds):
        v = v + h * _derivative(cell, v, base, syn)
    return v


def _rk4(
    cell: LTCCell, v: torch.Tensor, sens: torch.Tensor, ts: torch.Tensor, syn: _Synapses
) -> torch.Tensor:
    h = ts / cell.ode_unfolds
    base = _ode_base(cell, sens, syn)
    for _ in range(cell.ode_unfolds):
        k1 = _derivative(cell, v, base, syn)
        k2 = _derivative(cell, v + 0.5 * h * k1, base, syn)
        k3 = _derivative(cell, v + 0.5 * h * k2, base, syn)
        k4 = _derivative(cell, v + h * k3, base, syn)
        v = v + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return v


ODE_SOLVERS: dict[
    str, Callable[[LTCCell, torch.Tensor, torch.Tensor, torch.Tensor, _Synapses], torch.Tensor]
] = {
    "fused": _fused,
    "euler": _euler,
    "rk4": _rk4,
}


class LTC(nn.Module):
    """An LTC network over sequences (optionally with a mixed-memory LSTM before the cell).

    ``forward(x (B, T, in), ts (B, T) s, h0 (B, S) | None, mask (B, T) bool | None)
    -> (y (B, T, output_dim), h_T (B, S))``; S = N (2N with mixed memory, state [v, c]).
    ``units`` is a Wiring or an int (fully connected wiring, all neurons are outputs).
    """

    def __init__(
        self, input_size: int, units: int | Wiring, mixed_memory: bool = False, **cell_kwargs: object
    ) -> None:
        super().__init__()
        from lnn_control.nn.cfc_cell import LSTMCell
        from lnn_control.nn.wiring import FullyConnected

        if not isinstance(units, Wiring):
            if isinstance(units, bool) or not isinstance(units, int) or units < 1:
                raise ValueError(f"units must be a positive int or a Wiring, got {units!r}")
            units = FullyConnected(units)
        self.cell = LTCCell(units, input_size, **cell_kwargs)  # type: ignore[arg-type]
        self.wiring = units
        self.input_size, self.units = int(input_size), units.units
        self.mixed_memory = bool(mixed_memory)
        self.lstm = LSTMCell(self.input_size, self.units) if self.mixed_memory else None
        self.state_size = self.units * (2 if self.mixed_memory else 1)
        self.output_size = self.cell.output_size
        self.state_neuron_ids = list(range(self.units))

    def forward(
        self,
        x: torch.Tensor,
        ts: torch.Tensor,
        h0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        N = self.units
        if h0 is None:
            h0 = x.new_zeros(B, self.state_size)
        v = h0[:, :N]
        c = h0[:, N:] if self.lstm is not None else None
        cell = self.cell
        sens = cell.sensory_terms(cell.map_inputs(x))  # (B, T, 2N), all steps at once
        syn = cell.synapses()
        xl = torch.nn.functional.linear(x, self.lstm.w_in, self.lstm.bias) if self.lstm is not None else None
        ts3 = ts.unsqueeze(-1)
        fused = cell.solver == "fused"
        if fused:  # every step's constants at once
            base_all, c_all = syn.fused_constants(cell, sens, ts3)
        outs = []
        for t in range(T):
            v_in = v
            c_new = None
            if self.lstm is not None and xl is not None and c is not None:
                v_in, c_new = self.lstm.step(xl[:, t], v, c)
            if fused:
                v_new = _fused_pre(cell, v_in, base_all[:, t], c_all[:, t], syn)
            else:
                v_new = cell.step(v_in, sens[:, t], ts3[:, t], syn)
            if mask is not None:
                m = mask[:, t : t + 1]
                v_new = torch.where(m, v_new, v)
                if c is not None and c_new is not None:
                    c_new = torch.where(m, c_new, c)
            v = v_new
            if c_new is not None:
                c = c_new
            outs.append(v[:, : self.output_size])
        y = cell.map_outputs(torch.stack(outs, 1))
        h = v if c is None else torch.cat([v, c], 1)
        return y, h


def _one_hot(idx: np.ndarray, n: int) -> torch.Tensor:
    m = torch.zeros(len(idx), n, dtype=torch.get_default_dtype())
    if len(idx):
        m[torch.arange(len(idx)), torch.as_tensor(idx, dtype=torch.long)] = 1.0
    return m
