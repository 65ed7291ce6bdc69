import numpy as np
import pytest

from barriernet.qp import solve_qp


def test_known_answer_box_and_row():
    # min 1/2|u - (2,2)|^2 s.t. u0 + u1 <= 1, 0 <= u <= 1 -> (0.5, 0.5)
    P = np.eye(2)
    q = -np.array([2.0, 2.0])
    for solver in ("daqp", "cvxpy"):
        r = solve_qp(P, q, [[1.0, 1.0]], [1.0], [0, 0], [1, 1], solver=solver)
        assert r.status == "optimal"
        np.testing.assert_allclose(r.x, [0.5, 0.5], atol=1e-6)


def test_infeasible_detected():
    r = solve_qp(np.eye(2), np.zeros(2), [[1.0, 0.0], [-1.0, 0.0]], [-1.0, -1.0])
    assert r.status == "infeasible"


def test_random_matches_cvxpy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, m = 3, 4
        A = rng.normal(size=(n, n))
        P = A @ A.T + np.eye(n)
        q, G = rng.normal(size=n), rng.normal(size=(m, n))
        h = rng.uniform(0.1, 1.0, size=m)
        a = solve_qp(P, q, G, h, -np.ones(n), np.ones(n))
        b = solve_qp(P, q, G, h, -np.ones(n), np.ones(n), solver="cvxpy")
        np.testing.assert_allclose(a.x, b.x, atol=1e-6)


def test_bad_solver_name():
    with pytest.raises(ValueError, match="solver"):
        solve_qp(np.eye(1), np.zeros(1), None, None, solver="nope")
