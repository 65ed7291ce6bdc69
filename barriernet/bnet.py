"""BarrierNet heads: a network's reference control and class-K gains -> a differentiable CBF-QP.

The model of Xiao et al. (BarrierNet, IEEE T-RO 2023) for a unicycle with acceleration,
state x = (px, py, theta, v) (m, m, rad, m/s), control u = (omega, a) (rad/s, m/s^2):

    px' = v cos(theta),  py' = v sin(theta),  theta' = omega,  v' = a      (x' = f(x) + g(x) u)

A circular obstacle (centre (xo, yo), radius r) gives the barrier
``b(x) = (px - xo)^2 + (py - yo)^2 - r^2`` of relative degree 2 in u, with (dx = px - xo,
dy = py - yo, c = cos(theta), s = sin(theta))

    b_dot   = 2 v (dx c + dy s)
    Lf^2 b  = 2 v^2
    Lg Lf b = [2 v (dy c - dx s),  2 (dx c + dy s)]

and the high-order CBF row (class-K functions p1 * (.), p2 * (.))

    Lf^2 b + Lg Lf b u + (p1 + p2) b_dot + p1 p2 b >= 0      <=>   G u <= h,
    G = -Lg Lf b,   h = Lf^2 b + (p1 + p2) b_dot + p1 p2 b.

The network outputs a reference control u_ref and positive gains (p1, p2) per obstacle; the
layer returns the QP's solution

    u* = argmin_u 1/2 (u - u_ref)' Q (u - u_ref)   s.t.  G u <= h,     Q = diag(control_weights)

(``P = Q``, ``q = -Q u_ref``), solved batched and differentiably by :class:`barriernet.QPLayer`,
so a loss on u* trains u_ref and the gains through the QP. Obstacles are plain description
objects handed to the head; the layer holds no scene constants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from barriernet.qp_layer import QPLayer

__all__ = ["BarrierNetHead", "DiscObstacle", "UnicycleBarrierNet", "unicycle_hocbf_rows"]

N_STATE = 4  # (px, py, theta, v)
N_CONTROL = 2  # (omega, a)


@dataclass(frozen=True)
class DiscObstacle:
    """A disc the robot's reference point must stay out of: centre (x, y) in m, radius in m (> 0).

    The barrier is the paper's squared form ``b = |p - c|^2 - r^2`` (m^2), smooth everywhere;
    :class:`barriernet.barriers.CircleObstacle` is the run-time filter's distance form."""

    x: float
    y: float
    radius: float

    def __post_init__(self) -> None:
        for name in ("x", "y", "radius"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"DiscObstacle.{name} must be a finite number, got {v!r}")
        if self.radius <= 0:
            raise ValueError(f"DiscObstacle.radius must be > 0, got {self.radius}")

    def barrier(self, px: Any, py: Any) -> Any:
        """``b = (px - x)^2 + (py - y)^2 - radius^2`` (works on floats, numpy arrays and tensors)."""
        return (px - self.x) ** 2 + (py - self.y) ** 2 - self.radius**2


def unicycle_hocbf_rows(
    x: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HOCBF rows ``G u <= h`` of K circular obstacles for a batch of unicycle states.

    Args:
        x: (B, 4) states (px, py, theta, v).
        centers: (K, 2) obstacle centres; radii: (K,) radii.
        p1, p2: (B, K) positive class-K gains (first and second order) per state and obstacle.
    Returns:
        G (B, K, 2), h (B, K) and the barrier values b (B, K).
    """
    px, py, th, v = x[:, 0:1], x[:, 1:2], x[:, 2:3], x[:, 3:4]  # (B, 1) each, broadcast over K
    dx = px - centers[:, 0]
    dy = py - centers[:, 1]
    c, s = torch.cos(th), torch.sin(th)
    b = dx * dx + dy * dy - radii * radii
    radial = dx * c + dy * s  # heading component of the offset from the centre
    b_dot = 2.0 * v * radial
    lf2 = 2.0 * v * v
    lglf = torch.stack([2.0 * v * (dy * c - dx * s), 2.0 * radial], dim=-1)  # (B, K, 2)
    h = lf2 + (p1 + p2) * b_dot + p1 * p2 * b
    return -lglf, h, b


class BarrierNetHead(nn.Module):
    """The differentiable CBF-QP layer for the unicycle (see the module docstring for the maths).

    Args:
        obstacles: the circular obstacles (at least one); each takes two gains (p1, p2).
        control_weights: the diagonal of Q (2 positive numbers, for omega and a).
        verify_tol: a solution may exceed a row by at most ``verify_tol * (1 + |h|)``; the
            layer raises ``RuntimeError`` otherwise (a command is never returned unverified).
        qp_kwargs: options passed to :class:`barriernet.QPLayer` (default ``on_infeasible="raise"``).
    """

    centers: torch.Tensor
    radii: torch.Tensor
    weights: torch.Tensor

    def __init__(
        self,
        obstacles: Sequence[DiscObstacle],
        control_weights: Sequence[float] = (1.0, 1.0),
        verify_tol: float = 1e-5,
        **qp_kwargs: Any,
    ) -> None:
        super().__init__()
        obstacles = list(obstacles)
        if not obstacles or not all(isinstance(o, DiscObstacle) for o in obstacles):
            raise ValueError("obstacles must be a non-empty sequence of DiscObstacle")
        w = [float(v) for v in control_weights]
        if len(w) != N_CONTROL or not all(math.isfinite(v) and v > 0 for v in w):
            raise ValueError(f"control_weights must be {N_CONTROL} finite numbers > 0, got {control_weights}")
        if not (math.isfinite(verify_tol) and verify_tol > 0):
            raise ValueError(f"verify_tol must be finite and > 0, got {verify_tol}")
        self.obstacles = tuple(obstacles)
        self.n_barriers = len(obstacles)
        self.n_gains = 2 * self.n_barriers
        self.verify_tol = float(verify_tol)
        self.register_buffer(
            "centers", torch.tensor([[o.x, o.y] for o in obstacles], dtype=torch.float64), persistent=False
        )
        self.register_buffer(
            "radii", torch.tensor([o.radius for o in obstacles], dtype=torch.float64), persistent=False
        )
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float64), persistent=False)
        self.qp = QPLayer(**{"on_infeasible": "raise", **qp_kwargs})

    def rows(self, x: torch.Tensor, gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(G (B, K, 2), h (B, K), b (B, K))`` for states x (B, 4) and gains (B, 2K) = [p1..., p2...]."""
        x, gains = self._check(x=x, gains=gains)
        K = self.n_barriers
        dt = x.dtype
        return unicycle_hocbf_rows(x, self.centers.to(dt), self.radii.to(dt), gains[:, :K], gains[:, K:])

    def forward(self, x: torch.Tensor, u_ref: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """Safe controls u* (B, 2) for states x (B, 4), references u_ref (B, 2) and gains (B, 2K) > 0.

        Raises ``ValueError`` naming the argument on a wrong shape, NaN/Inf or a gain <= 0, and
        ``RuntimeError`` if the QP solution violates a row (it is checked here, not trusted).
        """
        x, gains, u_ref = self._check(x=x, gains=gains, u_ref=u_ref)
        G, h, _ = self.rows(x, gains)
        Q = torch.diag(self.weights.to(x.dtype))  # shared by the batch
        q = -u_ref * self.weights.to(x.dtype)
        u = self.qp(Q, q, G, h)
        with torch.no_grad():
            excess = (G @ u.unsqueeze(-1)).squeeze(-1) - h
            bad = excess > self.verify_tol * (1.0 + h.abs())
            if bool(bad.any()) or not bool(torch.isfinite(u).all()):
                raise RuntimeError(
                    f"QP layer returned a control violating a CBF row by {float(excess.max()):.3g} "
                    f"in {int(bad.any(-1).sum())} of {x.shape[0]} samples"
                )
        return u

    def _check(self, **arrays: torch.Tensor) -> tuple[torch.Tensor, ...]:
        widths = {"x": N_STATE, "u_ref": N_CONTROL, "gains": self.n_gains}
        out = []
        batch = None
        for name, t in arrays.items():
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != widths[name]:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be a tensor (batch, {widths[name]}), got {shape}")
            if batch is None:
                batch = t.shape[0]
            elif t.shape[0] != batch:
                raise ValueError(f"{name} has batch {t.shape[0]}, expected {batch} (as x)")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or Inf")
            if name == "gains" and not bool((t > 0).all()):
                raise ValueError("gains must be > 0 (class-K gains)")
            out.append(t)
        dt = out[0].dtype
        return tuple(t.to(dt) for t in out)


class UnicycleBarrierNet(nn.Module):
    """A backbone network followed by a :class:`BarrierNetHead`.

    The backbone maps state sequences to ``[u_ref (2), gains (2K)]`` with positive gains, e.g. a
    :class:`lnn_control.nn.policy.LiquidPolicy` built with ``n_gains=2K`` (gains are
    ``gain_scale * sigmoid(.)``). Its ``forward(x (B, T, n_in), timespans, hx) -> (y (B, T, n_out), hx)``
    contract is the one this module calls.

    Args:
        backbone: the network; head: the QP layer;
        state_index: which backbone inputs are the 4 unicycle states (default the first 4).
    """

    def __init__(self, backbone: nn.Module, head: BarrierNetHead, state_index: Sequence[int] = (0, 1, 2, 3)):
        super().__init__()
        n_out = getattr(backbone, "n_outputs", None)
        if n_out is not None and n_out != N_CONTROL + head.n_gains:
            raise ValueError(
                f"backbone has {n_out} outputs; the head needs {N_CONTROL} controls + {head.n_gains} gains"
            )
        idx = [int(i) for i in state_index]
        if len(idx) != N_STATE:
            raise ValueError(f"state_index must list {N_STATE} input columns, got {state_index}")
        self.backbone, self.head = backbone, head
        self.state_index = idx

    def forward(
        self, x: torch.Tensor, timespans: torch.Tensor | float | None = None, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Safe controls for a batch of sequences.

        Args:
            x: (B, T, n_in) backbone inputs (the unicycle states at ``state_index``).
            timespans, hx: passed to the backbone.
        Returns:
            u (B, T, 2) QP solutions, the backbone's state, and ``{"u_ref": (B, T, 2), "gains": (B, T, 2K)}``.
        """
        y, h = self.backbone(x, timespans, hx)
        B, T, _ = y.shape
        u_ref, gains = y[..., :N_CONTROL], y[..., N_CONTROL:]
        states = x[..., self.state_index].to(y.dtype)
        u = self.head(
            states.reshape(B * T, N_STATE), u_ref.reshape(B * T, N_CONTROL), gains.reshape(B * T, -1)
        )
        return u.reshape(B, T, N_CONTROL), h, {"u_ref": u_ref, "gains": gains}
