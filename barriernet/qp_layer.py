"""Batched, differentiable convex QP layer (torch only, any device).

Each sample b of a batch solves

    u*_b = argmin_u  1/2 u' P_b u + q_b' u   s.t.  G_b u <= h_b,   lb_b <= u <= ub_b

with P_b symmetric positive definite (only its symmetric part (P + P')/2 is used). The
gradient of a loss L(u*) reaches every input (P, q, G, h, lb, ub) by implicit differentiation
of the KKT conditions at the solution (as in OptNet, Amos & Kolter 2017): with S the active
rows (box rows included) and z their multipliers,

    [P    A_S'] [d_u]   [-dL/du*]
    [A_S   0  ] [d_z] = [   0   ]

gives dL/dq = d_u, dL/dP = (d_u u*' + u* d_u')/2, dL/dA_S = z d_u' + d_z u*', dL/db_S = -d_z
(A, b: the rows ``G u <= h``, ``u <= ub``, ``-u <= -lb``); inactive rows get zero. The system
is solved through its dual Schur complement ``A_S P^-1 A_S'`` (closed form for the <= 3 rows
of an enumerated active set, else masked Cholesky).

Forward solvers (``method``):

- ``enumerate``: for tiny problems (n <= 3 controls) every candidate active set S of at most n
  linearly independent rows is solved in closed form at once, batch-last; by weak duality the
  optimum is the dual-feasible candidate (z_S >= 0) of largest dual value, so no candidate's
  primal slack is needed, only the winner's (checked). Exact to rounding, no iterations.
- ``ipm``: a batched primal-dual interior-point method (Mehrotra predictor-corrector) on the
  (n x n) reduced Newton system, rows scaled to unit norm, early exit once every sample
  converged, then a polish step that solves the identified active set exactly.
- ``auto`` (default): ``enumerate`` while the candidate count is small enough to be faster
  (measured: n = 2 up to 36 rows incl. box, n = 3 up to 10 at batch 1,024), else ``ipm``.

Per-sample outcome: :attr:`QPLayer.status` after each call (and :meth:`QPLayer.solve`) holds
an int tensor, :data:`OPTIMAL` (0), :data:`INFEASIBLE` (1: no u satisfies the constraints,
certified) or :data:`INACCURATE` (2: the solver stopped short of its tolerance). A batch with
a bad sample is not lost: infeasible samples return u = 0, inaccurate ones the solver's best
iterate, and neither passes gradient (zero) to its inputs. ``on_infeasible="raise"`` raises
``RuntimeError`` instead. Malformed input (shapes, dtypes, NaN, non-PD P) raises ``ValueError``
naming the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from barriernet.qp_layer_common import (
    INACCURATE,
    INFEASIBLE,
    OPTIMAL,
    STATUS_NAMES,
    _expand,
    _indexed_dual_solve,
    _masked_dual_solve,
    _mm,
    _solve_with,
    _SPDSolver,
)
from barriernet.qp_layer_enumerate import _solve_enumerate, _use_enumeration
from barriernet.qp_layer_ipm import _solve_ipm_polished

__all__ = ["INACCURATE", "INFEASIBLE", "OPTIMAL", "STATUS_NAMES", "QPLayer", "QPLayerResult"]

_METHODS = ("auto", "enumerate", "ipm")


@dataclass
class QPLayerResult:
    """``u`` (B, n) or (n,), ``status`` (B,) or () int64 (see :data:`STATUS_NAMES`),
    ``iterations`` (interior-point iterations; 0 for ``enumerate``), ``method`` used."""

    u: Tensor
    status: Tensor
    iterations: int
    method: str


@dataclass
class _Config:
    method: str
    max_iter: int
    tol: float | None
    batch: int
    n: int
    batched: tuple[bool, ...]  # per input P, q, G, h, lb, ub: had a leading batch dim
    iters_out: int = 0  # set by the forward pass
    method_out: str = ""


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


# ----------------------------------------------------------------------------- input checks


def _check_inputs(
    P: Any, q: Any, G: Any, h: Any, lb: Any, ub: Any
) -> tuple[int, int, int, tuple[bool, ...], torch.dtype, torch.device]:
    """Validate shapes / dtypes / devices / values; return (batch, n, m, batched flags, dtype, device)."""
    if not isinstance(q, Tensor):
        raise ValueError(f"q must be a torch.Tensor (n,) or (B, n), got {type(q).__name__}")
    if q.dim() not in (1, 2) or q.shape[-1] == 0:
        raise ValueError(f"q must have shape (n,) or (B, n) with n >= 1, got {tuple(q.shape)}")
    n = q.shape[-1]
    dtype, device = q.dtype, q.device
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"q must be float32 or float64, got {dtype}")
    if (G is None) != (h is None):
        raise ValueError("G and h must be given together (both None for no general rows)")
    m = 0 if G is None else (G.shape[-2] if isinstance(G, Tensor) and G.dim() >= 2 else -1)
    spec = {
        "P": (P, (n, n)),
        "q": (q, (n,)),
        "G": (G, (m, n)),
        "h": (h, (m,)),
        "lb": (lb, (n,)),
        "ub": (ub, (n,)),
    }
    batched = []
    sizes: dict[str, int] = {}
    for name, (t, tail) in spec.items():
        if t is None:
            batched.append(False)
            continue
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dim() not in (len(tail), len(tail) + 1) or tuple(t.shape[-len(tail) :]) != tail or m < 0:
            shape = "(" + ", ".join(map(str, tail)) + ")"
            raise ValueError(
                f"{name} must have shape {shape} or (B, {shape[1:]} for n={n}"
                + (f", m={m}" if name in ("G", "h") else "")
                + f"; got {tuple(t.shape)}"
            )
        if t.dtype != dtype:
            raise ValueError(f"{name} has dtype {t.dtype}, but q has {dtype}: pass all inputs in one dtype")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device}, but q is on {device}: pass all inputs on one device")
        isb = t.dim() == len(tail) + 1
        batched.append(isb)
        if isb:
            sizes[name] = t.shape[0]
    real = {k: v for k, v in sizes.items() if v != 1}
    if len(set(real.values())) > 1:
        raise ValueError(
            f"batch sizes differ between inputs: {real}; use one B (or 1 / no batch dim to share)"
        )
    batch = next(iter(real.values()), 1)
    for name, t in (("P", P), ("q", q), ("G", G)):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf")
    for name, t in (("h", h), ("lb", lb), ("ub", ub)):
        if t is not None and bool(torch.isnan(t).any()):
            raise ValueError(f"{name} contains NaN (+-Inf is allowed: an absent bound)")
    return batch, n, m, tuple(batched), dtype, device


def _assemble(
    G: Tensor | None, h: Tensor | None, lb: Tensor | None, ub: Tensor | None, cfg: _Config, dtype, device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows A u <= b (B, p, n), (B, p): G rows, then ub rows (e_i), then lb rows (-e_i).

    Absent bounds (+inf in h / ub, -inf in lb) become the inert row 0 u <= 1. Returns A, b,
    ``present`` (B, p) bool, and ``trivially_infeasible`` (B,) bool (h = -inf, lb = +inf,
    ub = -inf or lb > ub).
    """
    B, n = cfg.batch, cfg.n
    bP, bq, bG, bh, blb, bub = cfg.batched
    As, bs = [], []
    bad = torch.zeros(B, dtype=torch.bool, device=device)
    eye = torch.eye(n, dtype=dtype, device=device)
    if G is not None and h is not None and G.shape[-2] > 0:
        m = G.shape[-2]
        As.append(_expand(G, bG, B, (m, n)))
        bs.append(_expand(h, bh, B, (m,)))
        bad = bad | (bs[-1] == -math.inf).any(-1)
    if ub is not None:
        As.append(eye.expand(B, n, n))
        bs.append(_expand(ub, bub, B, (n,)))
        bad = bad | (bs[-1] == -math.inf).any(-1)
    if lb is not None:
        As.append((-eye).expand(B, n, n))
        lbe = _expand(lb, blb, B, (n,))
        bs.append(-lbe)
        bad = bad | (lbe == math.inf).any(-1)
        if ub is not None:
            bad = bad | (lbe > bs[-2]).any(-1)
    if not As:
        z = torch.zeros(B, 0, dtype=dtype, device=device)
        return torch.zeros(B, 0, n, dtype=dtype, device=device), z, z.bool(), bad
    A = torch.cat(As, 1) if len(As) > 1 else As[0]
    b = torch.cat(bs, 1) if len(bs) > 1 else bs[0]
    present = torch.isfinite(b)
    if not bool(present.all()):
        A = A * present.unsqueeze(-1)
        b = torch.where(present, b, torch.ones((), dtype=dtype, device=device))
    return A, b, present, bad


def _forward_solve(
    P: Tensor,
    q: Tensor,
    G: Tensor | None,
    h: Tensor | None,
    lb: Tensor | None,
    ub: Tensor | None,
    cfg: _Config,
) -> dict[str, Any]:
    """Solve the batch; return the pieces that backward needs."""
    dtype, device = q.dtype, q.device
    B, n = cfg.batch, cfg.n
    bP, bq = cfg.batched[0], cfg.batched[1]
    tol = cfg.tol if cfg.tol is not None else _default_tol(dtype)
    Psym = 0.5 * (P + P.mT)
    Pfac = _SPDSolver(Psym)  # computed once when P is shared
    if bool(Pfac.bad.any()):
        bad = torch.nonzero(Pfac.bad.reshape(-1)).reshape(-1)[:5].tolist()
        raise ValueError(
            "P must be symmetric positive definite" + (f"; samples {bad} are not" if bP else "; it is not")
        )
    Pfac.expand(bP, B)
    qe = _expand(q, bq, B, (n,))
    A, b, present, trivially_bad = _assemble(G, h, lb, ub, cfg, dtype, device)
    p = A.shape[1]
    one = torch.ones((), dtype=dtype, device=device)
    # Rows scaled to unit norm (z below are multipliers of the scaled rows; z_orig = z / rnorm).
    rnorm = torch.where(present, torch.linalg.vector_norm(A, dim=-1), one)
    An = A / rnorm.unsqueeze(-1)
    bn = b / rnorm
    u0 = -Pfac.solve(qe.unsqueeze(-1)).squeeze(-1)
    V = Pfac.solve(An.mT)  # (B, n, p) = P^-1 An'
    H = _mm(An, V)
    c = _mm(An, u0.unsqueeze(-1)).squeeze(-1) - bn
    qscale = 1 + qe.abs().amax(-1)
    method = cfg.method
    if method == "auto":
        method = "enumerate" if _use_enumeration(n, p, B) else "ipm"
    iters = 0
    rows = None
    if p == 0:
        u, z = u0, torch.zeros(B, 0, dtype=dtype, device=device)
        status = torch.zeros(B, dtype=torch.long, device=device)
        rows = torch.zeros(B, 0, dtype=torch.long, device=device)
    elif method == "enumerate":
        u, z, rows, status = _solve_enumerate(u0, V, H, c, An, bn, present, qscale, tol)
        # Rounding at a degenerate vertex can leave no candidate within the tolerance: those
        # samples go to the interior-point path (its answer is kept where it is optimal).
        ix = torch.nonzero(status == INACCURATE).reshape(-1)
        if ix.numel():
            Pe = _expand(Psym, bP, B, (n, n))
            u2, z2, st2, iters = _solve_ipm_polished(
                Pe[ix],
                qe[ix],
                An[ix],
                bn[ix],
                u0[ix],
                V[ix],
                H[ix],
                c[ix],
                present[ix],
                qscale[ix],
                tol,
                cfg.max_iter,
            )
            use = (st2 == OPTIMAL).unsqueeze(-1)
            u, z, status = u.clone(), z.clone(), status.clone()
            u[ix] = torch.where(use, u2, u[ix])
            z[ix] = torch.where(use, z2, z[ix])
            status[ix] = torch.where(use[:, 0], st2, status[ix])
            rows = None  # backward through the general (masked) active-set solve
    else:
        Pe = _expand(Psym, bP, B, (n, n))
        u, z, status, iters = _solve_ipm_polished(
            Pe, qe, An, bn, u0, V, H, c, present, qscale, tol, cfg.max_iter
        )
    status = torch.where(trivially_bad, INFEASIBLE, status).to(torch.long)
    ok = status == OPTIMAL
    u = torch.where((status == INFEASIBLE).unsqueeze(-1), 0.0, u)
    return {
        "u": u,
        "z": z,  # scaled rows
        "rows": rows,
        "active": (z != 0) & ok.unsqueeze(-1),
        "status": status,
        "Pfac": Pfac.factor(),
        "is_inv": Pfac.inv is not None,
        "rnorm": rnorm,
        "V": V,
        "H": H,
        "iters": iters,
        "method": method,
        "ok": ok,
    }


class _QPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, cfg: _Config, P, q, G, h, lb, ub):  # type: ignore[override]
        out = _forward_solve(P, q, G, h, lb, ub, cfg)
        ctx.cfg = cfg
        ctx.has = (G is not None and G.shape[-2] > 0, lb is not None, ub is not None)
        ctx.is_inv = out["is_inv"]
        ctx.use_rows = out["rows"] is not None
        rows = out["rows"] if ctx.use_rows else out["active"]
        ctx.save_for_backward(
            out["u"], out["z"], rows, out["Pfac"], out["rnorm"], out["V"], out["H"], out["ok"]
        )
        ctx.mark_non_differentiable(out["status"])
        cfg.iters_out, cfg.method_out = out["iters"], out["method"]
        return out["u"], out["status"]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gu: Tensor, _gs: Any):  # type: ignore[override]
        # Adjoint of the active-set KKT system, on unit-norm rows An = A / rnorm:
        #   P d_u + An_S' e = -g,  An_S d_u = 0  ->  (An_S P^-1 An_S') e = -An_S P^-1 g,
        #   d_u = -P^-1 (g + An_S' e); original-row multipliers: z = zn / rnorm, d_z = e / rnorm.
        u, zn, rows, Pfac, rnorm, V, H, ok = ctx.saved_tensors
        cfg: _Config = ctx.cfg
        n = cfg.n
        gu = torch.where(ok.unsqueeze(-1), gu, 0.0)
        w = _solve_with(Pfac, ctx.is_inv, gu.unsqueeze(-1))  # P^-1 g (B, n, 1)
        rhs = -_mm(V.mT, gu.unsqueeze(-1)).squeeze(-1)  # -An P^-1 g
        if ctx.use_rows:
            e = _indexed_dual_solve(H, rhs, rows) if rows.shape[1] else rhs * 0
        else:
            jit = 1e-12 if u.dtype == torch.float64 else 1e-6
            e, _ = _masked_dual_solve(H, rhs, rows, jit)
        du = -(w.squeeze(-1) + (V * e.unsqueeze(-2)).sum(-1))
        dz = e / rnorm
        z = zn / rnorm
        bP, bq, bG, bh, blb, bub = cfg.batched
        need = ctx.needs_input_grad  # (cfg, P, q, G, h, lb, ub)

        def red(g: Tensor, batched: bool) -> Tensor:
            return g if batched else g.sum(0)

        gP = gq = gG = gh = glb = gub = None
        if need[1]:
            outer = du.unsqueeze(-1) * u.unsqueeze(-2)
            gP = red(0.5 * (outer + outer.mT), bP)
        if need[2]:
            gq = red(du, bq)
        gb = -dz
        m = 0
        if ctx.has[0]:
            m = rnorm.shape[1] - n * (int(ctx.has[1]) + int(ctx.has[2]))
            if need[3]:
                gA = z[:, :m].unsqueeze(-1) * du.unsqueeze(-2) + dz[:, :m].unsqueeze(-1) * u.unsqueeze(-2)
                gG = red(gA, bG)
            if need[4]:
                gh = red(gb[:, :m], bh)
        off = m
        if ctx.has[2]:
            if need[6]:
                gub = red(gb[:, off : off + n], bub)
            off += n
        if ctx.has[1] and need[5]:
            glb = red(-gb[:, off : off + n], blb)
        return None, gP, gq, gG, gh, glb, gub


class QPLayer(nn.Module):
    """Batched differentiable QP: ``u* = argmin 1/2 u'Pu + q'u  s.t.  Gu <= h, lb <= u <= ub``.

    Args:
        method: ``"auto"`` (default), ``"enumerate"`` or ``"ipm"`` (see the module docstring).
        max_iter: interior-point iteration cap (``ipm``).
        tol: relative KKT tolerance; default 1e-10 (float64) / 1e-5 (float32).
        on_infeasible: ``"status"`` (default: report per sample in :attr:`status`) or ``"raise"``
            (``RuntimeError`` naming the samples that are infeasible or inaccurate).
        float64_inside: solve float32 problems in float64 (default True; u and the gradients
            come back in float32). False solves in float32 throughout (tolerance 1e-5; the
            interior-point path then stops short of it on a few % of ill-conditioned problems).

    Call ``layer(P, q, G=None, h=None, lb=None, ub=None) -> u``. Shapes (B = batch; an input
    without the leading B is shared by every sample): P (B, n, n), q (B, n), G (B, m, n),
    h (B, m), lb / ub (B, n); one float dtype and device for all. +-inf in h, lb, ub marks an
    absent bound. Returns u (B, n), or (n,) when no input has a batch dimension. After each
    call :attr:`status` (int64, (B,) or ()) and :attr:`iterations` describe it.
    """

    status: Tensor | None
    iterations: int

    def __init__(
        self,
        method: str = "auto",
        max_iter: int = 50,
        tol: float | None = None,
        on_infeasible: str = "status",
        float64_inside: bool = True,
    ) -> None:
        super().__init__()
        if method not in _METHODS:
            raise ValueError(f"method={method!r} unknown; choose one of {list(_METHODS)}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
        if tol is not None and not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 < tol < 1):
            raise ValueError(f"tol must be a number in (0, 1) or None, got {tol!r}")
        if on_infeasible not in ("status", "raise"):
            raise ValueError(f"on_infeasible={on_infeasible!r}; choose 'status' or 'raise'")
        self.method = method
        self.max_iter = max_iter
        self.tol = None if tol is None else float(tol)
        self.on_infeasible = on_infeasible
        self.float64_inside = bool(float64_inside)
        self.status = None
        self.iterations = 0
        self.last_method = ""

    def extra_repr(self) -> str:
        return (
            f"method={self.method!r}, max_iter={self.max_iter}, tol={self.tol}, "
            f"on_infeasible={self.on_infeasible!r}"
        )

    def solve(
        self,
        P: Tensor,
        q: Tensor,
        G: Tensor | None = None,
        h: Tensor | None = None,
        lb: Tensor | None = None,
        ub: Tensor | None = None,
    ) -> QPLayerResult:
        """Like calling the layer, but returns u with its per-sample status (:class:`QPLayerResult`)."""
        batch, n, m, batched, dtype, _device = _check_inputs(P, q, G, h, lb, ub)
        if m == 0:
            G = h = None
        cfg = _Config(self.method, self.max_iter, self.tol, batch, n, batched)
        if dtype == torch.float32 and self.float64_inside:
            # float32 in and out, solved in float64 (differentiable casts): the same accuracy
            # and status as float64 for the cost of the casts.
            P, q = P.double(), q.double()
            G, h, lb, ub = (None if t is None else t.double() for t in (G, h, lb, ub))
        u, status = _QPFunction.apply(cfg, P, q, G, h, lb, ub)
        u = u.to(dtype)
        iters, method = cfg.iters_out, cfg.method_out
        if not any(batched):
            u, status = u[0], status[0]
        self.status, self.iterations, self.last_method = status, iters, method
        if self.on_infeasible == "raise" and bool((status != OPTIMAL).any()):
            bad = torch.nonzero(status.reshape(-1) != OPTIMAL).reshape(-1)
            names = [STATUS_NAMES[int(status.reshape(-1)[i])] for i in bad[:5]]
            raise RuntimeError(
                f"QP not solved for {bad.numel()} of {status.numel()} samples: "
                + ", ".join(f"sample {int(i)} {s}" for i, s in zip(bad[:5], names))
            )
        return QPLayerResult(u, status, iters, method)

    def forward(
        self,
        P: Tensor,
        q: Tensor,
        G: Tensor | None = None,
        h: Tensor | None = None,
        lb: Tensor | None = None,
        ub: Tensor | None = None,
    ) -> Tensor:
        return self.solve(P, q, G, h, lb, ub).u
