"""The QP layer's ``enumerate`` forward solver: every candidate active set at once (n <= 3).

Internal to :mod:`barriernet.qp_layer` (see its docstring for the method); split out so the
solver reads on its own. By weak duality the optimum is the dual-feasible candidate of largest
dual value, so only the winner's primal slack is checked.
"""

from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import Tensor

from barriernet.qp_layer_common import (
    INACCURATE,
    INFEASIBLE,
    OPTIMAL,
    _indexed_dual_solve,
    _inv_small,
    _kkt_score,
    _mm,
)

# ``auto`` enumerates when the candidate active sets are few enough: measured (fwd + bwd, CPU,
# one thread) faster than the interior-point path for n = 2 up to p = 36 rows (667 candidates)
# at batch 1 and 1,024, and for n = 3 up to p = 10 (176) at batch 1,024, up to p = 18 at batch 1.
_ENUM_MAX_CANDIDATES = {1: 10**9, 2: 700, 3: 180}
_ENUM_MAX_CANDIDATES_X_BATCH = 20_000


_COMBO_CACHE: dict[tuple[int, int, str], Tensor] = {}
_TABLE_CACHE: dict[tuple[int, int, str], Tensor] = {}


def _use_enumeration(n: int, p: int, batch: int) -> bool:
    if n > 3:
        return False
    c = _n_candidates(n, p)
    return c <= _ENUM_MAX_CANDIDATES[n] or c * batch <= _ENUM_MAX_CANDIDATES_X_BATCH


def _n_candidates(n: int, p: int) -> int:
    return sum(math.comb(p, k) for k in range(min(n, p) + 1))


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
