"""barriernet.QPLayer: batched differentiable QP vs Clarabel, exact answers, gradcheck, status, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import clarabel
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from barriernet import QPLayer
from barriernet.qp_layer import OPTIMAL

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny batched linear algebra is slower with intra-op threads on a shared 2-core machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _random_qps(rng: np.random.Generator, batch: int, n: int, m: int, box: bool) -> tuple[np.ndarray, ...]:
    """Feasible random QPs: P = A A' + c I (c in [0.1, 2]), h = G u0 + s (s >= 0, some 0)."""
    a = rng.standard_normal((batch, n, n))
    P = a @ a.transpose(0, 2, 1) + rng.uniform(0.1, 2.0, (batch, 1, 1)) * np.eye(n)
    q = rng.standard_normal((batch, n)) * rng.uniform(0.5, 5.0, (batch, 1))
    G = rng.standard_normal((batch, m, n)) * rng.uniform(0.2, 3.0, (batch, m, 1))
    u0 = rng.uniform(-1.0, 1.0, (batch, n))
    s = rng.uniform(0.0, 1.0, (batch, m)) * (rng.uniform(size=(batch, m)) > 0.1)
    h = np.einsum("bmn,bn->bm", G, u0) + s
    lb = u0 - rng.uniform(0.05, 2.0, (batch, n)) if box else None
    ub = u0 + rng.uniform(0.05, 2.0, (batch, n)) if box else None
    return P, q, G, h, lb, ub


_CLARABEL = clarabel.DefaultSettings()
_CLARABEL.verbose = False
_CLARABEL.tol_gap_abs = _CLARABEL.tol_gap_rel = _CLARABEL.tol_feas = 1e-10
_CLARABEL.tol_ktratio = 1e-8


def _clarabel(P, q, G, h, lb, ub) -> np.ndarray:
    """Tight Clarabel solve of one QP (the solver cvxpy calls, without cvxpy's per-call overhead)."""
    n = q.shape[0]
    rows, rhs = [G], [h]
    if ub is not None:
        rows += [np.eye(n), -np.eye(n)]
        rhs += [ub, -lb]
    A = np.vstack(rows)
    b = np.concatenate(rhs)
    solver = clarabel.DefaultSolver(
        sp.triu(sp.csc_matrix(P)).tocsc(),
        q,
        sp.csc_matrix(A),
        b,
        [clarabel.NonnegativeConeT(A.shape[0])],
        _CLARABEL,
    )
    res = solver.solve()
    assert str(res.status) == "Solved", res.status
    return np.asarray(res.x)


def test_clarabel_reference_is_cvxpy_clarabel() -> None:
    """The direct Clarabel reference equals a parametrised cvxpy problem solved by Clarabel."""
    import cvxpy as cp

    rng = np.random.default_rng(1)
    for n, m in ((2, 3), (5, 9)):
        u = cp.Variable(n)
        Lt, qp_, Gp, hp = cp.Parameter((n, n)), cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
        lbp, ubp = cp.Parameter(n), cp.Parameter(n)
        prob = cp.Problem(
            cp.Minimize(0.5 * cp.sum_squares(Lt @ u) + qp_ @ u), [Gp @ u <= hp, u >= lbp, u <= ubp]
        )
        assert prob.is_dpp()
        P, q, G, h, lb, ub = _random_qps(rng, 20, n, m, box=True)
        for i in range(20):
            Lt.value = np.linalg.cholesky(P[i]).T
            qp_.value, Gp.value, hp.value, lbp.value, ubp.value = q[i], G[i], h[i], lb[i], ub[i]
            prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
            assert prob.status == "optimal"
            np.testing.assert_allclose(u.value, _clarabel(P[i], q[i], G[i], h[i], lb[i], ub[i]), atol=1e-8)


# (n, m, box, count): 10,000 problems; n = 2, 3 are the robots' control sizes (enumeration),
# larger ones exercise the interior-point path.
_SHAPES = [
    (2, 1, True, 2500),
    (2, 4, True, 2500),
    (3, 8, True, 1500),
    (2, 6, False, 1000),
    (3, 0, True, 500),
    (6, 16, True, 1000),
    (12, 32, True, 1000),
]


def test_matches_clarabel_on_10000_random_problems() -> None:
    rng = np.random.default_rng(2024)
    layer = QPLayer()
    total, t_ref, t_ours = 0, 0.0, 0.0
    for n, m, box, count in _SHAPES:
        P, q, G, h, lb, ub = _random_qps(rng, count, n, m, box)
        t0 = time.perf_counter()
        ref = np.stack(
            [
                _clarabel(P[i], q[i], G[i], h[i], *((lb[i], ub[i]) if box else (None, None)))
                for i in range(count)
            ]
        )
        t1 = time.perf_counter()
        args = [torch.from_numpy(x) if x is not None else None for x in (P, q, G, h, lb, ub)]
        if m == 0:
            args[2] = args[3] = None
        res = layer.solve(*args)
        t_ours += time.perf_counter() - t1
        t_ref += t1 - t0
        assert (res.status == OPTIMAL).all(), f"n={n} m={m}: {int((res.status != OPTIMAL).sum())} not optimal"
        err = np.abs(res.u.numpy() - ref).max()
        assert err <= 1e-6, f"n={n} m={m} ({res.method}): max |u - u_clarabel| = {err:.3g}"
        total += count
    assert total == 10_000
    print(f"10,000 QPs: ours {t_ours:.2f} s (batched), Clarabel {t_ref:.2f} s (one by one)")
