"""The QP layer's ``ipm`` forward solver: batched Mehrotra predictor-corrector, then a polish.

Internal to :mod:`barriernet.qp_layer` (see its docstring for the method); split out so the
solver reads on its own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from barriernet.qp_layer_common import INACCURATE, INFEASIBLE, OPTIMAL, _kkt_score, _masked_dual_solve


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
    max_iter: int,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Interior point to a loose tolerance, then polish (exact active-set solve); samples whose
    polish fails continue the interior-point iterations to the final tolerance. Returns u, z
    (unit-row multipliers, zero off the active set), status, iterations."""
    dtype = qe.dtype
    tol_ipm = max(tol, 1e-8 if dtype == torch.float64 else 1e-4)
    u, zs, s, status, iters = _solve_ipm(Psym, qe, An, bn, tol_ipm, max_iter)
    z, good = _polish(zs, s, status, u0, V, H, c, An, bn, present, qscale, tol)
    u = torch.where(good.unsqueeze(-1), u0 - (V @ z.unsqueeze(-1)).squeeze(-1), u)
    retry = torch.nonzero(~good & (status != INFEASIBLE)).reshape(-1)
    if retry.numel() and tol < tol_ipm:
        ix = retry
        u2, zs2, s2, st2, it2 = _solve_ipm(
            Psym[ix], qe[ix], An[ix], bn[ix], tol, max_iter, (u[ix], s[ix], zs[ix])
        )
        iters += it2
        z2, g2 = _polish(
            zs2, s2, st2, u0[ix], V[ix], H[ix], c[ix], An[ix], bn[ix], present[ix], qscale[ix], tol
        )
        u2 = torch.where(g2.unsqueeze(-1), u0[ix] - (V[ix] @ z2.unsqueeze(-1)).squeeze(-1), u2)
        u, z, status, good = u.clone(), z.clone(), status.clone(), good.clone()
        u[ix], z[ix], status[ix], good[ix] = u2, z2, st2, g2
    return u, z, torch.where(good, OPTIMAL, status), iters
