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
from barriernet.qp_layer import INFEASIBLE, OPTIMAL, STATUS_NAMES

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


def _csc(M: np.ndarray, upper: bool = False) -> sp.csc_matrix:
    """Dense (or upper-triangular part of a) matrix as CSC, built directly (scipy's dense
    conversion costs several times Clarabel's solve at these sizes)."""
    r, c = M.shape
    if upper:
        rows = np.concatenate([np.arange(j + 1) for j in range(c)])
        cols = np.concatenate([np.full(j + 1, j) for j in range(c)])
        return sp.csc_matrix(
            (M[rows, cols], rows, np.concatenate([[0], np.cumsum(np.arange(1, c + 1))])), (r, c)
        )
    return sp.csc_matrix((M.T.reshape(-1), np.tile(np.arange(r), c), np.arange(0, r * c + 1, r)), (r, c))


def _clarabel(P, q, G, h, lb, ub) -> np.ndarray:
    """Tight Clarabel solve of one QP (the solver cvxpy calls, without cvxpy's per-call overhead)."""
    n = q.shape[0]
    rows, rhs = [G], [h]
    if ub is not None:
        rows += [np.eye(n), -np.eye(n)]
        rhs += [ub, -lb]
    A = np.vstack(rows)
    b = np.concatenate(rhs)
    A, b = A[np.isfinite(b)], b[np.isfinite(b)]  # +-inf: an absent bound
    solver = clarabel.DefaultSolver(
        _csc(P, upper=True), q, _csc(A), b, [clarabel.NonnegativeConeT(A.shape[0])], _CLARABEL
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


def _t(*arrays: np.ndarray | None, requires_grad: bool = False) -> list[torch.Tensor | None]:
    return [None if a is None else torch.tensor(a, dtype=F64).requires_grad_(requires_grad) for a in arrays]


@pytest.mark.parametrize("method", ["enumerate", "ipm"])
def test_known_answers_projection_onto_box_and_half_space(method: str) -> None:
    layer = QPLayer(method=method)
    y = torch.tensor([[2.0, -3.0, 0.25], [0.5, 0.5, -0.5]], dtype=F64, requires_grad=True)
    lb = torch.tensor([-1.0, -1.0, -1.0], dtype=F64)
    ub = torch.tensor([1.0, 1.0, 1.0], dtype=F64, requires_grad=True)
    u = layer(torch.eye(3, dtype=F64), -y, lb=lb, ub=ub)  # min 1/2 |u - y|^2 on the box = clip
    torch.testing.assert_close(u, torch.clamp(y, -1.0, 1.0), atol=1e-12, rtol=0)
    u[:, 0].sum().backward()
    # du0/dy0 = 1 where y0 is inside the box, 0 where it is clipped; du0/dub0 = 1 where clipped at ub
    torch.testing.assert_close(y.grad[:, 0], torch.tensor([0.0, 1.0], dtype=F64))
    torch.testing.assert_close(ub.grad, torch.tensor([1.0, 0.0, 0.0], dtype=F64))
    # half-space a'u <= beta: u = y - max(0, a'y - beta) / |a|^2 a
    a = torch.tensor([[1.0, 2.0]], dtype=F64)
    for yv, beta in (([3.0, 1.0], 1.0), ([-1.0, 0.0], 0.5)):
        yt = torch.tensor(yv, dtype=F64)
        u = layer(torch.eye(2, dtype=F64), -yt, a, torch.tensor([beta], dtype=F64))
        exp = yt - torch.clamp(a[0] @ yt - beta, min=0) / (a[0] @ a[0]) * a[0]
        assert u.shape == (2,) and layer.status.shape == () and int(layer.status) == OPTIMAL
        torch.testing.assert_close(u, exp, atol=1e-12, rtol=0)


def _nondegenerate(rng: np.random.Generator, batch: int, n: int, m: int, margin: float = 1e-2):
    """Random QPs whose every row is clearly active (z > margin) or clearly inactive (slack > margin),
    with at least one active row per sample, found by rejection against a tight Clarabel solve."""
    out: list[tuple[np.ndarray, ...]] = []
    while len(out) < batch:
        P, q, G, h, lb, ub = (x[0] for x in _random_qps(rng, 1, n, m, box=True))
        q = q * 3.0
        u = _clarabel(P, q, G, h, lb, ub)
        A = np.vstack([G, np.eye(n), -np.eye(n)])
        b = np.concatenate([h, ub, -lb])
        slack = b - A @ u
        act = slack < 1e-7
        if not act.any() or (slack[~act] < margin).any() or act.sum() > n:
            continue
        z, *_ = np.linalg.lstsq(A[act].T, -(P @ u + q), rcond=None)
        if (z < margin).any() or np.linalg.norm(A[act].T @ z + P @ u + q) > 1e-6:
            continue
        out.append((P, q, G, h, lb, ub))
    return [np.stack(c) for c in zip(*out)]


@pytest.mark.parametrize(("method", "n", "m"), [("enumerate", 2, 2), ("enumerate", 3, 2), ("ipm", 4, 3)])
def test_gradcheck_every_input_batched(method: str, n: int, m: int) -> None:
    rng = np.random.default_rng(7 + n)
    P, q, G, h, lb, ub = _nondegenerate(rng, 2, n, m)
    inputs = tuple(_t(P, q, G, h, lb, ub, requires_grad=True))
    layer = QPLayer(method=method)

    def f(*args: torch.Tensor) -> torch.Tensor:
        u = layer(*args)
        assert (layer.status == OPTIMAL).all()
        return u

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    assert layer.last_method == method


@pytest.mark.parametrize("method", ["enumerate", "ipm"])
def test_gradcheck_shared_inputs_broadcast(method: str) -> None:
    """P, G, lb, ub without a batch dim are shared; their gradient sums over the batch."""
    rng = np.random.default_rng(3)
    P, q, G, h, lb, ub = _nondegenerate(rng, 1, 2, 3)
    q = np.concatenate([q, q + rng.normal(scale=1e-3, size=q.shape)])  # two close samples
    h = np.concatenate([h, h])
    args = _t(P[0], q, G[0], h, lb[0], ub[0], requires_grad=True)
    layer = QPLayer(method=method)
    assert torch.autograd.gradcheck(lambda *a: layer(*a), tuple(args), eps=1e-6, atol=1e-6, rtol=1e-5)
    # the shared call equals the expanded batched call, value and gradient
    expanded = [a.detach().expand(2, *a.shape).clone().requires_grad_(True) for a in (args[0], args[2])]
    u1 = layer(args[0], args[1], args[2], args[3], args[4], args[5])
    u2 = layer(expanded[0], args[1], expanded[1], args[3], args[4], args[5])
    torch.testing.assert_close(u1, u2, atol=1e-12, rtol=0)
    g1 = torch.autograd.grad(u1.square().sum(), [args[0], args[2]])
    g2 = torch.autograd.grad(u2.square().sum(), expanded)
    torch.testing.assert_close(g1[0], g2[0].sum(0))
    torch.testing.assert_close(g1[1], g2[1].sum(0))


def test_methods_agree_values_and_gradients() -> None:
    rng = np.random.default_rng(11)
    P, q, G, h, lb, ub = _random_qps(rng, 200, 3, 4, box=True)
    grads = []
    for method in ("enumerate", "ipm"):
        args = _t(P, q, G, h, lb, ub, requires_grad=True)
        layer = QPLayer(method=method)
        u = layer(*args)
        assert (layer.status == OPTIMAL).all()
        w = torch.linspace(-1.0, 1.0, 3, dtype=F64)
        (u * w).sum().backward()
        grads.append([u.detach()] + [a.grad for a in args])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("float64_inside", [True, False])
def test_float32_matches_float64(float64_inside: bool) -> None:
    rng = np.random.default_rng(5)
    for n, m in ((2, 4), (3, 6), (6, 12)):
        arrays = _random_qps(rng, 300, n, m, box=True)
        u64 = QPLayer()(*_t(*arrays))
        layer = QPLayer(float64_inside=float64_inside)
        args32 = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in arrays]
        u32 = layer(*args32)
        assert u32.dtype == torch.float32
        ok = layer.status == OPTIMAL
        # solved natively in float32 the interior-point path may stop short on a few problems
        assert ok.float().mean() >= (1.0 if float64_inside else 0.95), (
            f"n={n}: {int((~ok).sum())} not optimal"
        )
        err = (u32[ok].double() - u64[ok]).abs().max().item()
        assert err < (1e-5 if float64_inside else 2e-3), f"n={n} m={m}: float32 differs by {err:.3g}"
        u32.sum().backward()
        assert all(a.grad.dtype == torch.float32 and torch.isfinite(a.grad).all() for a in args32)


@pytest.mark.parametrize(("method", "n"), [("enumerate", 2), ("enumerate", 3), ("ipm", 3), ("ipm", 5)])
def test_infeasible_samples_reported_batch_kept(method: str, n: int) -> None:
    rng = np.random.default_rng(n)
    P, q, G, h, lb, ub = _random_qps(rng, 6, n, 3, box=True)
    G[1, 1] = -G[1, 0]  # a'u <= -1 and -a'u <= -1: empty
    h[1, :2] = -1.0
    G[3, 2] = 0.0  # u_0 <= lb_0 - 1 against the box
    G[3, 2, 0] = 1.0
    h[3, 2] = lb[3, 0] - 1.0
    lb[4, 0] = ub[4, 0] + 0.5  # lb > ub
    args = _t(P, q, G, h, lb, ub, requires_grad=True)
    layer = QPLayer(method=method)
    res = layer.solve(*args)
    assert res.status.tolist() == [OPTIMAL, INFEASIBLE, OPTIMAL, INFEASIBLE, INFEASIBLE, OPTIMAL]
    assert torch.equal(layer.status, res.status) and STATUS_NAMES[INFEASIBLE] == "infeasible"
    bad = res.status != OPTIMAL
    assert (res.u[bad] == 0).all()
    good = ~bad
    ref = np.stack([_clarabel(P[i], q[i], G[i], h[i], lb[i], ub[i]) for i in np.nonzero(good.numpy())[0]])
    np.testing.assert_allclose(res.u[good].detach().numpy(), ref, atol=1e-6)
    (res.u * torch.arange(1.0, n + 1, dtype=F64)).sum().backward()
    per_sample = torch.stack([a.grad.flatten(1).abs().sum(1) for a in args])  # (inputs, B)
    assert torch.isfinite(per_sample).all() and (per_sample[:, bad] == 0).all()
    assert (per_sample[:, good].sum(0) > 0).all()
    with pytest.raises(RuntimeError, match="sample 1 infeasible"):
        QPLayer(method=method, on_infeasible="raise")(*_t(P, q, G, h, lb, ub))


def test_optional_rows_and_infinite_bounds() -> None:
    rng = np.random.default_rng(9)
    P, q, G, h, lb, ub = _random_qps(rng, 50, 3, 3, box=True)
    lb[:, 1] = -np.inf
    ub[:, 2] = np.inf
    h[:, 0] = np.inf  # an absent row
    layer = QPLayer()
    u = layer(*_t(P, q, G, h, lb, ub))
    # reference: the same problem without the absent rows
    for i in range(0, 50, 7):
        ref = _clarabel(P[i], q[i], G[i], h[i], lb[i], ub[i])
        np.testing.assert_allclose(u[i].numpy(), ref, atol=1e-6)
    # only a box, only rows, nothing: the unconstrained minimiser -P^-1 q
    u_box = layer(*_t(P, q, None, None, lb, ub))
    u_rows = layer(*_t(P, q, G, h))
    u_free = layer(*_t(P, q))
    np.testing.assert_allclose(u_free.numpy(), -np.linalg.solve(P, q[..., None])[..., 0], atol=1e-10)
    assert (layer.status == OPTIMAL).all() and u_box.shape == u_rows.shape == (50, 3)


def test_bad_input_raises_naming_the_argument() -> None:
    P, q, G, h = (
        torch.eye(2, dtype=F64),
        torch.zeros(2, dtype=F64),
        torch.ones(1, 2, dtype=F64),
        torch.ones(1, dtype=F64),
    )
    layer = QPLayer()
    cases = [
        ((torch.eye(3, dtype=F64), q, G, h), "P must have shape"),
        ((P, q, torch.ones(1, 3, dtype=F64), h), "G must have shape"),
        ((P, q, G, torch.ones(2, dtype=F64)), "h must have shape"),
        ((P, q, G, None), "G and h must be given together"),
        ((P, q.float(), G, h), "dtype"),
        ((P, torch.tensor([0.0, float("nan")], dtype=F64), G, h), "q contains NaN"),
        ((P, q, G, torch.tensor([float("nan")], dtype=F64)), "h contains NaN"),
        (
            (torch.diag(torch.tensor([1.0, -1.0], dtype=F64)), q, G, h),
            "P must be symmetric positive definite",
        ),
        ((P.expand(3, 2, 2), q.expand(2, 2), G, h), "batch sizes differ"),
        ((P, torch.zeros(2, dtype=torch.int64), G, h), "q must be float32 or float64"),
        ((P.numpy(), q, G, h), "P must be a torch.Tensor"),
    ]
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg):
            layer(*args)
    with pytest.raises(ValueError, match="lb must have shape"):
        layer(P, q, lb=torch.zeros(3, dtype=F64))
    for kwargs, msg in (
        ({"method": "simplex"}, "method"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": 2.0}, "tol"),
        ({"on_infeasible": "ignore"}, "on_infeasible"),
    ):
        with pytest.raises(ValueError, match=msg):
            QPLayer(**kwargs)


def test_layer_in_a_training_step() -> None:
    """End to end: a linear policy's reference goes through the layer; the loss decreases."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    layer = QPLayer()
    x = torch.randn(256, 4, dtype=F64)
    target = torch.clamp(x[:, :2], -0.5, 0.5)
    G = torch.tensor([[1.0, 1.0]], dtype=F64)
    h = torch.tensor([0.6], dtype=F64)
    lb, ub = torch.full((2,), -0.5, dtype=F64), torch.full((2,), 0.5, dtype=F64)
    losses = []
    for _ in range(60):
        u = layer(torch.eye(2, dtype=F64), -net(x), G, h, lb, ub)
        loss = (u - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(4)
    for n, m in ((2, 4), (6, 12)):
        args = _t(*_random_qps(rng, 64, n, m, box=True), requires_grad=True)
        cuda = [a.detach().cuda().requires_grad_(True) for a in args]
        u_cpu, u_gpu = QPLayer()(*args), QPLayer()(*cuda)
        torch.testing.assert_close(u_gpu.cpu(), u_cpu, atol=1e-8, rtol=0)
        u_cpu.sum().backward()
        u_gpu.sum().backward()
        for a, c in zip(args, cuda):
            torch.testing.assert_close(c.grad.cpu(), a.grad, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("method", ["auto", "enumerate", "ipm"])
def test_degenerate_problems(method: str) -> None:
    """Parallel rows, rows through the optimum, zero-width box sides (lb = ub), wide scales:
    still optimal, still the Clarabel answer, finite gradients."""
    rng = np.random.default_rng(31)
    for n, m in ((2, 4), (3, 3)):
        B = 300
        a = rng.standard_normal((B, n, n))
        P = a @ a.transpose(0, 2, 1) + rng.uniform(0.01, 2.0, (B, 1, 1)) * np.eye(n)
        q = rng.standard_normal((B, n)) * rng.uniform(0.1, 20.0, (B, 1))
        G = rng.standard_normal((B, m, n)) * rng.uniform(0.01, 10.0, (B, m, 1))
        G[:, 1] = G[:, 0] * rng.uniform(0.5, 2.0, (B, 1))  # parallel rows
        u0 = rng.uniform(-1.0, 1.0, (B, n))
        h = np.einsum("bmn,bn->bm", G, u0) + rng.uniform(0.0, 1.0, (B, m)) * (rng.uniform(size=(B, m)) > 0.3)
        lb = u0 - rng.uniform(0.0, 2.0, (B, n)) * (rng.uniform(size=(B, n)) > 0.3)
        ub = u0 + rng.uniform(0.0, 2.0, (B, n)) * (rng.uniform(size=(B, n)) > 0.3)
        args = _t(P, q, G, h, lb, ub, requires_grad=True)
        layer = QPLayer(method=method)
        res = layer.solve(*args)
        assert (res.status == OPTIMAL).all(), f"n={n}: {int((res.status != OPTIMAL).sum())} not optimal"
        ref = np.stack([_clarabel(P[i], q[i], G[i], h[i], lb[i], ub[i]) for i in range(B)])
        np.testing.assert_allclose(res.u.detach().numpy(), ref, atol=1e-6)
        res.u.square().sum().backward()
        assert all(torch.isfinite(a.grad).all() for a in args)
