"""The safety filter's QP as a differentiable torch layer, for training BarrierNet policies end to end.

For a :class:`barriernet.SafetyFilter` and a batch of samples b (state x_b, env_b as data;
nominal command u_nom_b and class-K gains g_b from the network) the layer solves

    u_b = argmin_u  1/2 (u - u_nom_b)' W (u - u_nom_b)
          s.t.      G_b u <= a_b + ks(g_b) * b_b + kp(g_b) * c_b,    lower <= u <= upper

in :class:`barriernet.qp_layer.QPLayer`: the filter's own problem (W, box, rows), without its
slack relaxation. The gain-free row pieces ``G, a, b, c`` come from
:meth:`SafetyFilter.row_terms` once per sample (numpy); the per-row gains from the gain vector
as the filter maps them (:meth:`SafetyFilter.row_gain_index`): degree 1 ks = k (rhs
Lf h + k h), HOCBF ks = p1 + p2, kp = p1 p2 (rhs Lf^2 h + (p1 + p2) h' + p1 p2 h). So the
gradient of a loss on u reaches both u_nom and the gains (Xiao et al., BarrierNet, T-RO 2023).

Samples whose rows are infeasible within the box (the filter would relax them with slack)
come back with :attr:`FilterQPLayer.status` 1 (u = 0, zero gradient): drop them from a loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from barriernet.qp_layer import QPLayer
from barriernet.safety_filter import SafetyFilter

__all__ = ["RowTerms", "FilterQPLayer"]


@dataclass
class RowTerms:
    """Gain-free QP row pieces of N samples: G (N, m, n), a, b, c (N, m) (float64 numpy)."""

    G: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray

    def __len__(self) -> int:
        return int(self.G.shape[0])


class FilterQPLayer(nn.Module):
    """Differentiable QP of ``safety_filter`` (see the module docstring).

    Args:
        safety_filter: the run-time filter whose dynamics, barriers, box and weights are used.
        method: :class:`QPLayer` forward method (``auto`` | ``enumerate`` | ``ipm``).
    """

    i1: Tensor
    i2: Tensor
    deg2: Tensor
    w: Tensor
    lower: Tensor
    upper: Tensor

    def __init__(self, safety_filter: SafetyFilter, method: str = "auto") -> None:
        super().__init__()
        if not isinstance(safety_filter, SafetyFilter):
            raise ValueError(f"safety_filter: expected a SafetyFilter, got {type(safety_filter).__name__}")
        self.filter = safety_filter
        self.n_controls = safety_filter.n_controls
        self.n_rows = safety_filter.n_rows
        self.n_gains = safety_filter.n_gains
        self.gain_names = list(safety_filter.gain_names)
        i1, i2, deg2 = safety_filter.row_gain_index()
        self.register_buffer("i1", torch.as_tensor(i1, dtype=torch.long), persistent=False)
        self.register_buffer("i2", torch.as_tensor(i2, dtype=torch.long), persistent=False)
        self.register_buffer("deg2", torch.as_tensor(deg2, dtype=torch.float64), persistent=False)
        w = torch.tensor(np.array(safety_filter.weights), dtype=torch.float64)
        self.register_buffer("w", w, persistent=False)
        for name in ("lower", "upper"):
            box = torch.tensor(np.array(getattr(safety_filter, name)), dtype=torch.float64)
            self.register_buffer(name, box, persistent=False)
        self.qp = QPLayer(method=method)
        self.status: Tensor | None = None

    def terms(self, states: Any, envs: Sequence[Mapping[str, Any] | None] | None = None) -> RowTerms:
        """Row pieces for states (N, n_state) and per-sample ``envs`` (N entries or None)."""
        xs = np.asarray(states, dtype=np.float64)
        if xs.ndim != 2 or xs.shape[1] != self.filter.n_state:
            raise ValueError(f"states: expected shape (N, {self.filter.n_state}), got {xs.shape}")
        if envs is not None and len(envs) != xs.shape[0]:
            raise ValueError(f"envs: expected {xs.shape[0]} entries (one per state), got {len(envs)}")
        n, m, k = xs.shape[0], self.n_rows, self.n_controls
        G, a, b, c = np.zeros((n, m, k)), np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, m))
        for i in range(n):
            G[i], a[i], b[i], c[i] = self.filter.row_terms(xs[i], None if envs is None else envs[i])
        return RowTerms(G, a, b, c)

    def rhs(self, a: Tensor, b: Tensor, c: Tensor, gains: Tensor) -> Tensor:
        """Row bounds h (B, m) = a + ks b + kp c from gains (B, n_gains) > 0."""
        ka, kb = gains[:, self.i1], gains[:, self.i2]
        deg2 = self.deg2.to(gains.dtype)
        return a + (ka + deg2 * kb) * b + (deg2 * ka * kb) * c

    def forward(self, terms: tuple[Tensor, Tensor, Tensor, Tensor], u_nom: Tensor, gains: Tensor) -> Tensor:
        """Safe commands u (B, n_controls) from ``terms`` = (G (B, m, n), a, b, c (B, m)),
        ``u_nom`` (B, n_controls) and ``gains`` (B, n_gains) > 0, all one float dtype.
        Per-sample status (0 optimal, 1 infeasible, 2 inaccurate) in :attr:`status`."""
        G, a, b, c = terms
        if u_nom.dim() != 2 or u_nom.shape[1] != self.n_controls:
            raise ValueError(f"u_nom: expected shape (B, {self.n_controls}), got {tuple(u_nom.shape)}")
        bsz = u_nom.shape[0]
        if gains.shape != (bsz, self.n_gains):
            raise ValueError(f"gains: expected shape ({bsz}, {self.n_gains}), got {tuple(gains.shape)}")
        if G.shape != (bsz, self.n_rows, self.n_controls):
            want = (bsz, self.n_rows, self.n_controls)
            raise ValueError(f"terms: G must have shape {want}, got {tuple(G.shape)}")
        if bool((gains <= 0).any()) or not bool(torch.isfinite(gains).all()):
            raise ValueError("gains: class-K gains must be finite and > 0")
        dt = u_nom.dtype
        w = self.w.to(dt)
        h = self.rhs(a.to(dt), b.to(dt), c.to(dt), gains)
        u = self.qp(torch.diag(w), -w * u_nom, G.to(dt), h, self.lower.to(dt), self.upper.to(dt))
        self.status = self.qp.status
        return u
