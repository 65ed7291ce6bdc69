"""Dense batched linear algebra and KKT scoring shared by the QP layer's solvers (torch only).

Internal to :mod:`barriernet.qp_layer` (its public API); split out so that each forward
solver (:mod:`barriernet.qp_layer_enumerate`, :mod:`barriernet.qp_layer_ipm`) reads on its own.
Batch-first shapes throughout: ``H`` (B, p, p) dual Schur complements of unit-norm rows, ``c``
(B, p) their right-hand sides.
"""

from __future__ import annotations

import torch
from torch import Tensor

OPTIMAL, INFEASIBLE, INACCURATE = 0, 1, 2
STATUS_NAMES = ("optimal", "infeasible", "inaccurate")


def _expand(t: Tensor, batched: bool, batch: int, tail: tuple[int, ...]) -> Tensor:
    return t.expand(batch, *tail) if batched else t.unsqueeze(0).expand(batch, *tail)


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
