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
from itertools import combinations
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["INACCURATE", "INFEASIBLE", "OPTIMAL", "STATUS_NAMES", "QPLayer", "QPLayerResult"]

OPTIMAL, INFEASIBLE, INACCURATE = 0, 1, 2
STATUS_NAMES = ("optimal", "infeasible", "inaccurate")

_METHODS = ("auto", "enumerate", "ipm")
# ``auto`` enumerates when the candidate active sets are few enough: measured (fwd + bwd, CPU,
# one thread) faster than the interior-point path for n = 2 up to p = 36 rows (667 candidates)
# at batch 1 and 1,024, and for n = 3 up to p = 10 (176) at batch 1,024, up to p = 18 at batch 1.
_ENUM_MAX_CANDIDATES = {1: 10**9, 2: 700, 3: 180}
_ENUM_MAX_CANDIDATES_X_BATCH = 20_000


def _use_enumeration(n: int, p: int, batch: int) -> bool:
    if n > 3:
        return False
    c = _n_candidates(n, p)
    return c <= _ENUM_MAX_CANDIDATES[n] or c * batch <= _ENUM_MAX_CANDIDATES_X_BATCH


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


def _n_candidates(n: int, p: int) -> int:
    return sum(math.comb(p, k) for k in range(min(n, p) + 1))


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


def _expand(t: Tensor, batched: bool, batch: int, tail: tuple[int, ...]) -> Tensor:
    return t.expand(batch, *tail) if batched else t.unsqueeze(0).expand(batch, *tail)


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


# ----------------------------------------------------------------------------- small dense algebra


def _inv_small(M: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse and determinant of (..., k, k) matrices, k <= 3, by cofactors.

    Batched LAPACK calls cost about a microsecond per 2 x 2 matrix; a dozen elementwise ops
    on the whole batch are far cheaper at the sizes this layer is for.
    """
    k = M.shape[-1]
    if k == 1:
        d = M[..., 0, 0]
        return (1.0 / d)[..., None, None], d
    if k == 2:
        a, b, c, d = M[..., 0, 0], M[..., 0, 1], M[..., 1, 0], M[..., 1, 1]
        det = a * d - b * c
        adj = torch.stack([d, -b, -c, a], -1).unflatten(-1, (2, 2))
        return adj / det[..., None, None], det
    m = [[M[..., i, j] for j in range(3)] for i in range(3)]
    cof = [
        [
            m[(i + 1) % 3][(j + 1) % 3] * m[(i + 2) % 3][(j + 2) % 3]
            - m[(i + 1) % 3][(j + 2) % 3] * m[(i + 2) % 3][(j + 1) % 3]
            for j in range(3)
        ]
        for i in range(3)
    ]
    det = m[0][0] * cof[0][0] + m[0][1] * cof[0][1] + m[0][2] * cof[0][2]
    adj = torch.stack([cof[j][i] for i in range(3) for j in range(3)], -1).unflatten(-1, (3, 3))
    return adj / det[..., None, None], det


def _mm(X: Tensor, Y: Tensor) -> Tensor:
    """X @ Y (batched, broadcasting); inner dimension <= 3 as a sum of outer products (batched
    BLAS calls on tiny matrices are slow on CPU)."""
    k = X.shape[-1]
    if k > 3:
        return X @ Y
    out = X[..., 0:1] * Y[..., 0:1, :]
    for j in range(1, k):
        out = out + X[..., j : j + 1] * Y[..., j : j + 1, :]
    return out


class _SPDSolver:
    """Solves with a batch of SPD matrices P (..., n, n): explicit inverse for n <= 3, else Cholesky."""

    def __init__(self, P: Tensor) -> None:
        n = P.shape[-1]
        self.inv: Tensor | None = None
        self.chol: Tensor | None = None
        if n <= 3:
            inv, det = _inv_small(P)
            pd = P[..., 0, 0] > 0
            if n >= 2:
                pd = pd & (P[..., 0, 0] * P[..., 1, 1] - P[..., 0, 1] * P[..., 1, 0] > 0)
            if n == 3:
                pd = pd & (det > 0)
            self.inv, self.bad = inv, ~pd
        else:
            L, info = torch.linalg.cholesky_ex(P)
            self.chol, self.bad = L, info != 0

    def expand(self, batched: bool, batch: int) -> _SPDSolver:
        for name in ("inv", "chol"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, _expand(t, batched, batch, tuple(t.shape[-2:])))
        return self

    def solve(self, X: Tensor) -> Tensor:
        """P^-1 X for X (B, n, r)."""
        if self.inv is not None:
            return _mm(self.inv, X)
        assert self.chol is not None
        return torch.cholesky_solve(X, self.chol)

    def factor(self) -> Tensor:
        return self.inv if self.inv is not None else self.chol  # type: ignore[return-value]


def _solve_with(factor: Tensor, is_inv: bool, X: Tensor) -> Tensor:
    return _mm(factor, X) if is_inv else torch.cholesky_solve(X, factor)


# ----------------------------------------------------------------------------- active-set algebra


def _masked_dual_solve(H: Tensor, rhs: Tensor, mask: Tensor, jitter: float) -> tuple[Tensor, Tensor]:
    """Solve (H_SS) z_S = rhs_S for the rows in ``mask`` (B, p), z = 0 elsewhere, by Cholesky.

    Returns z (B, p) and ok (B,) bool (False where H_SS is singular even with ``jitter``).
    """
    p = H.shape[-1]
    zero = torch.zeros((), dtype=H.dtype, device=H.device)
    mm = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    eye = torch.eye(p, dtype=H.dtype, device=H.device)
    Hd = torch.where(mm, H, zero) + eye * (~mask).unsqueeze(-1)
    r = torch.where(mask, rhs, zero)
    L, info = torch.linalg.cholesky_ex(Hd)
    ok = info == 0
    if not bool(ok.all()) and jitter > 0:
        scale = torch.diagonal(Hd, dim1=-2, dim2=-1).abs().amax(-1, keepdim=True).clamp_min(1e-300)
        L2, info2 = torch.linalg.cholesky_ex(Hd + torch.diag_embed(jitter * scale * mask))
        L = torch.where(ok.view(-1, 1, 1), L, L2)
        ok = ok | (info2 == 0)
    L = torch.where(ok.view(-1, 1, 1), L, eye)
    z = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
    return z * mask, ok


def _indexed_dual_solve(H: Tensor, rhs: Tensor, rows: Tensor) -> Tensor:
    """Like :func:`_masked_dual_solve` for active sets given as row indices (B, k), k <= 3,
    padded with p (no row); closed form. Returns z (B, p)."""
    B, p = rhs.shape
    k = rows.shape[1]
    valid = rows < p
    r = rows.clamp(max=p - 1)
    Hf = H.reshape(B, p * p)
    cs = torch.where(valid, rhs.gather(1, r), 0.0)
    if k == 1:
        zs = cs / torch.where(valid, Hf.gather(1, r * (p + 1)), 1.0)
    elif k == 2:
        # closed form; a padded (absent) second row gets h = 1, no coupling
        r0, r1 = r[:, 0:1], r[:, 1:2]
        h = Hf.gather(1, torch.cat([r0 * (p + 1), r0 * p + r1, r1 * (p + 1)], 1))
        v0, v1 = valid[:, 0:1], valid[:, 1:2]
        hii = torch.where(v0, h[:, 0:1], 1.0)
        hjj = torch.where(v1, h[:, 2:3], 1.0)
        hij = torch.where(v0 & v1, h[:, 1:2], 0.0)
        det = hii * hjj - hij * hij
        c0, c1 = cs[:, 0:1], cs[:, 1:2]
        zs = torch.cat([hjj * c0 - hij * c1, hii * c1 - hij * c0], 1) / det
    else:
        flat = (r.unsqueeze(-1) * p + r.unsqueeze(-2)).reshape(B, k * k)
        Hs = Hf.gather(1, flat).view(B, k, k)
        vv = valid.unsqueeze(-1) & valid.unsqueeze(-2)
        Hs = torch.where(vv, Hs, torch.eye(k, dtype=H.dtype, device=H.device))
        inv, _ = _inv_small(Hs)
        zs = _mm(inv, cs.unsqueeze(-1)).squeeze(-1)
    z = torch.zeros(B, p + 1, dtype=H.dtype, device=H.device)
    z.scatter_(1, torch.where(valid, rows, p), zs * valid)
    return z[:, :p]


def _kkt_score(
    u: Tensor, z: Tensor, An: Tensor, bn: Tensor, qscale: Tensor, complementarity: bool
) -> tuple[Tensor, Tensor]:
    """Relative primal (+ complementarity) and dual violation, (B, C) each, of candidates
    u (B, C, n), z (B, C, k) on unit-norm rows An u <= bn (z: their multipliers; with
    ``complementarity`` z is (B, C, p), one per row)."""
    slack = _mm(u, An.mT) - bn.unsqueeze(1)  # (B, C, p)
    pviol = slack.amax(-1).clamp_min(0)
    if complementarity:  # rows with a multiplier must hold with equality
        pviol = torch.maximum(pviol, torch.where(z != 0, slack.abs(), 0.0).amax(-1))
    pviol = pviol / (1 + u.abs().amax(-1))
    dviol = (-z).amax(-1).clamp_min(0) / qscale.unsqueeze(1) if z.shape[-1] else torch.zeros_like(pviol)
    return pviol, dviol


# ----------------------------------------------------------------------------- forward solvers

_COMBO_CACHE: dict[tuple[int, int, str], Tensor] = {}
_TABLE_CACHE: dict[tuple[int, int, str], Tensor] = {}


def _candidate_table(p: int, kmax: int, device: torch.device) -> Tensor:
    """Rows of every candidate active set, in enumeration order, padded with p: (C, kmax)."""
    key = (p, kmax, str(device))
    t = _TABLE_CACHE.get(key)
    if t is None:
        parts = [torch.full((1, kmax), p, dtype=torch.long, device=device)]
        parts += [
            torch.nn.functional.pad(_combos(p, k, device), (0, kmax - k), value=p) for k in range(1, kmax + 1)
        ]
        t = torch.cat(parts, 0)
        _TABLE_CACHE[key] = t
    return t


def _combos(p: int, k: int, device: torch.device) -> Tensor:
    key = (p, k, str(device))
    t = _COMBO_CACHE.get(key)
    if t is None:
        t = torch.tensor(list(combinations(range(p), k)), dtype=torch.long, device=device).reshape(-1, k)
        _COMBO_CACHE[key] = t
    return t


def _solve_enumerate_scored(
    u0: Tensor,
    V: Tensor,
    H: Tensor,
    c: Tensor,
    An: Tensor,
    bn: Tensor,
    present: Tensor,
    qscale: Tensor,
    tol: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every active set of <= n independent rows, solved in closed form; keep the one that
    meets the KKT conditions best (every candidate's primal slack is evaluated: (B, C, p) work).

    Args (rows scaled to unit norm): u0 = -P^-1 q (B, n); V = P^-1 An' (B, n, p);
    H = An P^-1 An' (B, p, p); c = An u0 - bn (B, p).
    Returns u (B, n), z (B, p) (unit-row multipliers), rows (B, kmax) (active rows, padded
    with p), status (B,).
    """
    B, n = u0.shape
    p = An.shape[1]
    kmax = min(n, p)
    dtype, device = u0.dtype, u0.device
    eps = torch.finfo(dtype).eps
    Vt = V.mT  # (B, p, n): row i = P^-1 An_i'
    us = [u0.unsqueeze(1)]
    zs = [torch.zeros(B, 1, kmax, dtype=dtype, device=device)]
    oks = [torch.ones(B, 1, dtype=torch.bool, device=device)]
    tables = [torch.full((1, kmax), p, dtype=torch.long, device=device)]
    hd = torch.diagonal(H, dim1=-2, dim2=-1)
    for k in range(1, kmax + 1):
        S = _combos(p, k, device)  # (C, k)
        C = S.shape[0]
        if k == 1:
            zk = (c / torch.where(present, hd, 1.0)).unsqueeze(-1)  # (B, p, 1)
            ok = present
            uk = u0.unsqueeze(1) - zk * Vt
        else:
            # H_SS and c_S by index_select on flattened indices (cheaper than advanced indexing)
            flat = S.reshape(-1)
            pairs = (S.unsqueeze(-1) * p + S.unsqueeze(-2)).reshape(-1)
            Hs = H.reshape(B, p * p).index_select(1, pairs).view(B, C, k, k)
            ok = present.index_select(1, flat).view(B, C, k).all(-1)
            cs = c.index_select(1, flat).view(B, C, k)
            if k == 2:
                hii, hij, hjj = Hs[..., 0, 0], Hs[..., 0, 1], Hs[..., 1, 1]
                det = hii * hjj - hij * hij
                ok = ok & (det > 1e3 * eps * hii * hjj)
                det = torch.where(ok, det, 1.0)
                ci, cj = cs[..., 0], cs[..., 1]
                zk = torch.stack([(hjj * ci - hij * cj) / det, (hii * cj - hij * ci) / det], -1)
            else:
                inv, det = _inv_small(Hs)
                ok = ok & (det > 1e3 * eps * torch.diagonal(Hs, dim1=-2, dim2=-1).prod(-1))
                zk = _mm(inv, cs.unsqueeze(-1)).squeeze(-1)
            zk = torch.where(ok.unsqueeze(-1), zk, 0.0)
            Vs = Vt.index_select(1, flat).view(B, C, k, n)
            uk = u0.unsqueeze(1) - zk[..., 0:1] * Vs[:, :, 0]
            for j in range(1, k):
                uk = uk - zk[..., j : j + 1] * Vs[:, :, j]
        us.append(uk)
        zs.append(torch.nn.functional.pad(zk, (0, kmax - k)))
        oks.append(ok)
        tables.append(torch.nn.functional.pad(S, (0, kmax - k), value=p))
    U, Z, OK, T = torch.cat(us, 1), torch.cat(zs, 1), torch.cat(oks, 1), torch.cat(tables, 0)
    pviol, dviol = _kkt_score(U, Z, An, bn, qscale, complementarity=False)
    inf = torch.full((), math.inf, dtype=dtype, device=device)
    score = torch.where(OK, torch.maximum(pviol, dviol), inf)
    sbest, best = score.min(1)
    u = U.gather(1, best[:, None, None].expand(B, 1, n)).squeeze(1)
    zb = Z.gather(1, best[:, None, None].expand(B, 1, kmax)).squeeze(1)
    rows = T.index_select(0, best)
    z = torch.zeros(B, p + 1, dtype=dtype, device=device).scatter_(1, rows, zb)[:, :p]
    status = torch.where(sbest > tol, INACCURATE, OPTIMAL)
    # No candidate point satisfies the constraints: the problem has no feasible point (a
    # feasible strictly convex QP's optimum is one of the candidates).
    minp = torch.where(OK, pviol, inf).amin(1)
    status = torch.where((sbest > tol) & (minp > tol), INFEASIBLE, status)
    return u, z, rows, status


def _pair_solve(Hs: Tensor, cs: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """z = H_SS^-1 c_S for candidate sets (B, C, k, k), (B, C, k); and ok (independent rows)."""
    k = Hs.shape[-1]
    if k == 2:
        hii, hij, hjj = Hs[..., 0, 0], Hs[..., 0, 1], Hs[..., 1, 1]
        det = hii * hjj - hij * hij
        ok = det > 1e3 * eps * hii * hjj
        det = torch.where(ok, det, 1.0)
        ci, cj = cs[..., 0], cs[..., 1]
        return torch.stack([(hjj * ci - hij * cj) / det, (hii * cj - hij * ci) / det], -1), ok
    inv, det = _inv_small(Hs)
    ok = det > 1e3 * eps * torch.diagonal(Hs, dim1=-2, dim2=-1).prod(-1)
    return _mm(inv, cs.unsqueeze(-1)).squeeze(-1), ok


def _solve_enumerate(
    u0: Tensor,
    V: Tensor,
    H: Tensor,
    c: Tensor,
    An: Tensor,
    bn: Tensor,
    present: Tensor,
    qscale: Tensor,
    tol: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every active set S of <= n independent rows, solved in closed form; keep the best one.

    Each candidate's multipliers z_S = H_SS^-1 c_S give the Lagrangian stationary point
    u_S = u0 - P^-1 An_S' z_S with A_S u_S = b_S, so its dual value is f(u0) + z_S'c_S / 2.
    Every dual-feasible candidate (z_S >= 0) bounds the optimum from below and the optimum
    is one of them: the answer is the dual-feasible candidate of largest z_S'c_S, found in
    (B, C) work without evaluating any candidate's primal slack. Only the winner's slack is
    checked; samples where it fails (an infeasible problem, or rounding) are settled by
    :func:`_solve_enumerate_scored` (every candidate's full KKT residual).

    Args and returns as :func:`_solve_enumerate_scored`.
    """
    B, n = u0.shape
    p = An.shape[1]
    kmax = min(n, p)
    dtype, device = u0.dtype, u0.device
    eps = torch.finfo(dtype).eps
    # Batch-last layout: per-candidate gathers become contiguous row copies, and the
    # reductions run across the batch (torch on CPU is slow at tiny trailing dimensions).
    Ht = H.reshape(B, p * p).T.contiguous()  # (p*p, B)
    ct = c.T.contiguous()  # (p, B)
    all_present = bool(present.all())
    pt = present.T
    zneg = -tol * qscale  # (B,): rounding allowance on z >= 0
    ninf = torch.full((), -math.inf, dtype=dtype, device=device)
    hd = Ht.index_select(0, torch.arange(p, device=device) * (p + 1))  # (p, B)
    if not all_present:
        hd = torch.where(pt, hd, 1.0)
    vals = [torch.zeros(1, B, dtype=dtype, device=device)]
    for k in range(1, kmax + 1):
        S = _combos(p, k, device)  # (C, k)
        C = S.shape[0]
        if k == 1:
            zk = ct / hd  # (p, B)
            ok = zk >= zneg
            val = zk * ct
        elif k == 2:
            i, j = S[:, 0], S[:, 1]
            hii, hjj = hd.index_select(0, i), hd.index_select(0, j)
            hij = Ht.index_select(0, i * p + j)
            ci, cj = ct.index_select(0, i), ct.index_select(0, j)
            det = hii * hjj - hij * hij
            ok = det > 1e3 * eps * hii * hjj
            det = torch.where(ok, det, 1.0)
            zi, zj = (hjj * ci - hij * cj) / det, (hii * cj - hij * ci) / det
            ok = ok & (zi >= zneg) & (zj >= zneg)
            val = zi * ci + zj * cj
        else:
            pairs = (S.unsqueeze(-1) * p + S.unsqueeze(-2)).reshape(-1)
            Hs = Ht.index_select(0, pairs).view(C, k, k, B).permute(0, 3, 1, 2)  # (C, B, k, k)
            cs = ct.index_select(0, S.reshape(-1)).view(C, k, B).transpose(1, 2)  # (C, B, k)
            zk, ok = _pair_solve(Hs, cs, eps)
            ok = ok & (zk.amin(-1) >= zneg)
            val = (zk * cs).sum(-1)
        if not all_present:
            ok = ok & pt.index_select(0, S.reshape(-1)).view(C, k, B).all(1)
        vals.append(torch.where(ok, val, ninf))
    val, T = torch.cat(vals, 0), _candidate_table(p, kmax, device)
    best = val.argmax(0)  # (B,)
    rows = T.index_select(0, best)  # (B, kmax), padded with p
    # the winner's multipliers, solved again for its rows alone (cheaper than keeping all)
    z = _indexed_dual_solve(H, c, rows)
    zb = z.gather(1, rows.clamp(max=p - 1)) * (rows < p)
    u = u0 - (V * z.unsqueeze(-2)).sum(-1)
    pviol, dviol = _kkt_score(u.unsqueeze(1), zb.unsqueeze(1), An, bn, qscale, complementarity=False)
    status = torch.where(torch.maximum(pviol, dviol).squeeze(1) > tol, INACCURATE, OPTIMAL)
    bad = torch.nonzero(status != OPTIMAL).reshape(-1)
    if bad.numel():
        ix = bad
        u2, z2, rows2, st2 = _solve_enumerate_scored(
            u0[ix], V[ix], H[ix], c[ix], An[ix], bn[ix], present[ix], qscale[ix], tol
        )
        u, z, rows, status = u.clone(), z.clone(), rows.clone(), status.clone()
        u[ix], z[ix], rows[ix], status[ix] = u2, z2, rows2, st2
    return u, z, rows, status


def _solve_ipm(
    Psym: Tensor,
    q: Tensor,
    An: Tensor,
    bn: Tensor,
    tol: float,
    max_iter: int,
    start: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Mehrotra predictor-corrector on rows An u <= bn (unit-norm rows), from ``start`` =
    (u, s, z) if given; returns u, z (multipliers), slack s, status, iterations."""
    B, n = q.shape
    p = An.shape[1]
    dtype, device = q.dtype, q.device
    At = An.mT
    qs = 1 + q.abs().amax(-1)
    bs = 1 + bn.abs().amax(-1)
    if start is None:
        # Least squares on the KKT system with S = Z = I, then shift s, z inside the cone.
        M0 = Psym + At @ An
        L0 = torch.linalg.cholesky(M0)
        u = torch.cholesky_solve((At @ bn.unsqueeze(-1)) - q.unsqueeze(-1), L0).squeeze(-1)
        s = bn - (An @ u.unsqueeze(-1)).squeeze(-1)
        z = -s
        ap = (-s).amax(-1, keepdim=True)
        s = torch.where(ap < 0, s, s + 1 + ap)
        ad = (-z).amax(-1, keepdim=True)
        z = torch.where(ad < 0, z, z + 1 + ad)
    else:
        u, s, z = start
    done = torch.zeros(B, dtype=torch.bool, device=device)
    infeas = torch.zeros(B, dtype=torch.bool, device=device)
    it = 0

    def step_len(v: Tensor, dv: Tensor) -> Tensor:
        ratio = torch.where(dv < 0, -v / dv, torch.full((), math.inf, dtype=dtype, device=device))
        return ratio.amin(-1).clamp(max=1.0)

    for it in range(1, max_iter + 1):  # noqa: B007
        Pu = (Psym @ u.unsqueeze(-1)).squeeze(-1)
        rd = Pu + q + (At @ z.unsqueeze(-1)).squeeze(-1)
        rp = (An @ u.unsqueeze(-1)).squeeze(-1) + s - bn
        gap = (s * z).sum(-1)
        obj = 1 + (0.5 * (u * Pu).sum(-1) + (q * u).sum(-1)).abs()
        conv = (rd.abs().amax(-1) <= tol * qs) & (rp.abs().amax(-1) <= tol * bs) & (gap <= tol * obj)
        # Farkas certificate of infeasibility: y >= 0, A'y = 0, b'y < 0 (y = z / sum z).
        y = z / z.sum(-1, keepdim=True)
        aty = (At @ y.unsqueeze(-1)).squeeze(-1).abs().amax(-1)
        cert = (aty <= tol * 10) & ((y * bn).sum(-1) < -tol * 10) & (z.sum(-1) > 1e6)
        infeas = infeas | (cert & ~conv)
        # Complementarity far below the tolerance while a residual is not: the normal
        # equations have lost the accuracy to go on (z/s spans ~1/eps); polish decides.
        stalled = gap <= 1e-4 * tol * obj
        done = conv | infeas | stalled
        if bool(done.all()):
            break
        mu = gap / p
        W = z / s
        M = Psym + At @ (W.unsqueeze(-1) * An)
        L, info = torch.linalg.cholesky_ex(M)
        bad = info != 0
        if bool(bad.any()):
            # Near the boundary z/s spans more than 1/eps: regularise instead of stopping.
            dmax = torch.diagonal(M, dim1=-2, dim2=-1).amax(-1)
            eye = torch.eye(n, dtype=dtype, device=device)
            L2, info2 = torch.linalg.cholesky_ex(
                M + (1e3 * torch.finfo(dtype).eps * dmax)[:, None, None] * eye
            )
            L = torch.where(bad.view(-1, 1, 1), L2, L)
            bad = info2 != 0
            done = done | bad
            L = torch.where(bad.view(-1, 1, 1), eye, L)

        def newton(
            rc: Tensor, L: Tensor = L, rd: Tensor = rd, rp: Tensor = rp, s: Tensor = s, z: Tensor = z
        ) -> tuple[Tensor, Tensor, Tensor]:
            r = -rd - (At @ ((z * rp - rc) / s).unsqueeze(-1)).squeeze(-1)
            du = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
            ds = -rp - (An @ du.unsqueeze(-1)).squeeze(-1)
            dz = (-rc - z * ds) / s
            return du, ds, dz

        du, ds, dz = newton(s * z)
        a_aff = torch.minimum(step_len(s, ds), step_len(z, dz)).unsqueeze(-1)
        mu_aff = ((s + a_aff * ds) * (z + a_aff * dz)).sum(-1) / p
        sigma = (mu_aff / mu).clamp(0, 1) ** 3
        sm = (sigma * mu).unsqueeze(-1)
        du, ds, dz = newton(s * z + ds * dz - sm)
        alpha = (0.99 * torch.minimum(step_len(s, ds), step_len(z, dz))).unsqueeze(-1)
        # Safeguard: along a feasible direction the gap changes by a g1 + a^2 g2 with
        # g2 = ds'dz = du'P du >= 0 for a QP, so a long step can raise it and the iterates
        # cycle. There take the plain centred Newton step, with the step that minimises the gap.
        worse = ((s + alpha * ds) * (z + alpha * dz)).sum(-1) > gap
        if bool((worse & ~done).any()):
            du2, ds2, dz2 = newton(s * z - torch.maximum(sm, 0.1 * mu.unsqueeze(-1)))
            a2 = (0.99 * torch.minimum(step_len(s, ds2), step_len(z, dz2))).unsqueeze(-1)
            g1 = (s * dz2 + z * ds2).sum(-1, keepdim=True)
            g2 = (ds2 * dz2).sum(-1, keepdim=True)
            a_min = torch.where((g2 > 0) & (g1 < 0), -g1 / (2 * g2).clamp_min(1e-300), a2)
            a2 = torch.minimum(a2, a_min)
            w = worse.unsqueeze(-1)
            du, ds, dz, alpha = (
                torch.where(w, x2, x) for x2, x in ((du2, du), (ds2, ds), (dz2, dz), (a2, alpha))
            )
        alpha = torch.where(done.unsqueeze(-1), torch.zeros((), dtype=dtype, device=device), alpha)
        u = u + alpha * du
        s = s + alpha * ds
        z = z + alpha * dz
    status = torch.where(
        conv, OPTIMAL, torch.where(infeas, INFEASIBLE, torch.full((), INACCURATE, device=device))
    ).long()
    return u, z, s, status, it


def _polish(
    z: Tensor,
    s: Tensor,
    status: Tensor,
    u0: Tensor,
    V: Tensor,
    H: Tensor,
    c: Tensor,
    An: Tensor,
    bn: Tensor,
    present: Tensor,
    qscale: Tensor,
    tol: float,
) -> tuple[Tensor, Tensor]:
    """Exact solve of the active set an interior-point iterate points to (rows with z > s).

    Returns the multipliers (z of the active-set solution where it passed the KKT test, else the
    iterate's z, zero on rows taken as inactive) and ``good`` (B,) bool: passed.
    """
    cand = (status != INFEASIBLE).unsqueeze(-1) & present
    active = (z > s) & cand
    zt, ok = _masked_dual_solve(H, c, active, 0.0)
    ut = u0 - (V @ zt.unsqueeze(-1)).squeeze(-1)
    pv, dv = _kkt_score(ut.unsqueeze(1), zt.unsqueeze(1), An, bn, qscale, complementarity=True)
    good = ok & (torch.maximum(pv, dv).squeeze(1) <= tol) & cand[:, 0]
    return torch.where(good.unsqueeze(-1), zt, z * active), good


def _solve_ipm_polished(
    Psym: Tensor,
    qe: Tensor,
    An: Tensor,
    bn: Tensor,
    u0: Tensor,
    V: Tensor,
    H: Tensor,
    c: Tensor,
    present: Tensor,
    qscale: Tensor,
    tol: float,
    cfg: _Config,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Interior point to a loose tolerance, then polish (exact active-set solve); samples whose
    polish fails continue the interior-point iterations to the final tolerance. Returns u, z
    (unit-row multipliers, zero off the active set), status, iterations."""
    dtype = qe.dtype
    tol_ipm = max(tol, 1e-8 if dtype == torch.float64 else 1e-4)
    u, zs, s, status, iters = _solve_ipm(Psym, qe, An, bn, tol_ipm, cfg.max_iter)
    z, good = _polish(zs, s, status, u0, V, H, c, An, bn, present, qscale, tol)
    u = torch.where(good.unsqueeze(-1), u0 - (V @ z.unsqueeze(-1)).squeeze(-1), u)
    retry = torch.nonzero(~good & (status != INFEASIBLE)).reshape(-1)
    if retry.numel() and tol < tol_ipm:
        ix = retry
        u2, zs2, s2, st2, it2 = _solve_ipm(
            Psym[ix], qe[ix], An[ix], bn[ix], tol, cfg.max_iter, (u[ix], s[ix], zs[ix])
        )
        iters += it2
        z2, g2 = _polish(
            zs2, s2, st2, u0[ix], V[ix], H[ix], c[ix], An[ix], bn[ix], present[ix], qscale[ix], tol
        )
        u2 = torch.where(g2.unsqueeze(-1), u0[ix] - (V[ix] @ z2.unsqueeze(-1)).squeeze(-1), u2)
        u, z, status, good = u.clone(), z.clone(), status.clone(), good.clone()
        u[ix], z[ix], status[ix], good[ix] = u2, z2, st2, g2
    return u, z, torch.where(good, OPTIMAL, status), iters


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
                Pe[ix], qe[ix], An[ix], bn[ix], u0[ix], V[ix], H[ix], c[ix], present[ix], qscale[ix], tol, cfg
            )
            use = (st2 == OPTIMAL).unsqueeze(-1)
            u, z, status = u.clone(), z.clone(), status.clone()
            u[ix] = torch.where(use, u2, u[ix])
            z[ix] = torch.where(use, z2, z[ix])
            status[ix] = torch.where(use[:, 0], st2, status[ix])
            rows = None  # backward through the general (masked) active-set solve
    else:
        Pe = _expand(Psym, bP, B, (n, n))
        u, z, status, iters = _solve_ipm_polished(Pe, qe, An, bn, u0, V, H, c, present, qscale, tol, cfg)
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
