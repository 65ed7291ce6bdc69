"""Every QP solver a user might pick, on the same run-time filter problems, timed and checked.

The problem is the anchor's (ANCHORS.md): 2 controls, box bounds and one CBF row,

    min 1/2 u'Pu + q'u   s.t.   g'u <= h,   lb <= u <= ub,

with P = I, q = -u_nom (a nominal command to be filtered) and K seeded random instances of
which about half have the CBF row active at the optimum. Each timed call solves the next
instance in turn (no solver sees the same data twice in a row).

References, each called the way its documentation shows: cvxpy (parametrized problem) with
OSQP and with Clarabel, raw OSQP (``update`` + ``solve`` on a set-up problem), cvxopt
``solvers.qp``, quadprog, DAQP. Ours: ``barriernet.qp.solve_qp`` (contract in
docs/ARCHITECTURE.md) when it exists, else rows time the references alone (``[ref]``).
Accuracy of every solver is measured against a tight Clarabel solve (tolerances 1e-10):
``max |u - u*|`` and the worst constraint violation, in ``notes`` and the ``accuracy`` key.
"""

from __future__ import annotations

import argparse
import functools
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import row, time_calls

__all__ = ["make_problems", "run"]

_N, _M = 2, 1
_LB, _UB = np.array([-0.5, -1.5]), np.array([0.5, 1.5])


def make_problems(k: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """K filter QPs (2 controls, 1 CBF row, box), about half with the CBF row active.

    Returns dicts with ``P`` (2, 2), ``q`` (2,), ``G`` (1, 2), ``h`` (1,), ``lb``/``ub`` (2,)
    (units: those of the commands, e.g. m/s and rad/s).
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        u_nom = rng.uniform(_LB, _UB)
        g = rng.standard_normal((1, _N))
        if i % 2 == 0:
            # Active: h strictly between the box's lowest g'u and g'u_nom, so the filter must
            # cut the command and the QP stays feasible with an interior.
            box_min = float(np.sum(np.where(g[0] > 0, g[0] * _LB, g[0] * _UB)))
            h = np.array([box_min + rng.uniform(0.2, 0.9) * (float(g[0] @ u_nom) - box_min)])
        else:
            h = g @ u_nom + rng.uniform(0.05, 0.5, 1)
        out.append({"P": np.eye(_N), "q": -u_nom, "G": g, "h": h, "lb": _LB.copy(), "ub": _UB.copy()})
    return out


def _violation(u: np.ndarray, p: dict[str, np.ndarray]) -> float:
    return float(max(np.max(p["G"] @ u - p["h"]), np.max(u - p["ub"]), np.max(p["lb"] - u), 0.0))


def _solvers() -> dict[str, Callable[[list[dict[str, np.ndarray]]], Callable[[int], np.ndarray]]]:
    """name -> factory(problems) -> solve(i) returning u for problem i."""
    import cvxopt
    import cvxpy as cp
    import daqp
    import osqp
    import quadprog
    import scipy.sparse as sp

    def cvxpy_factory(solver: str) -> Callable[[list[dict[str, np.ndarray]]], Callable[[int], np.ndarray]]:
        def make(probs: list[dict[str, np.ndarray]]) -> Callable[[int], np.ndarray]:
            u = cp.Variable(_N)
            q, g, h = cp.Parameter(_N), cp.Parameter((_M, _N)), cp.Parameter(_M)
            prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(u) + q @ u), [g @ u <= h, u >= _LB, u <= _UB])

            def solve(i: int) -> np.ndarray:
                p = probs[i]
                q.value, g.value, h.value = p["q"], p["G"], p["h"]
                prob.solve(solver=solver)
                return np.asarray(u.value)

            return solve

        return make

    def raw_osqp(probs: list[dict[str, np.ndarray]]) -> Callable[[int], np.ndarray]:
        # A = [g'; I] with l = [-inf, lb], u = [h, ub]; A's sparsity must stay fixed, so the
        # CBF row is dense and updated through Ax.
        a0 = np.vstack([np.ones((1, _N)), np.eye(_N)])
        solver = osqp.OSQP()
        solver.setup(
            sp.csc_matrix(np.triu(np.eye(_N))),
            np.zeros(_N),
            sp.csc_matrix(a0),
            np.concatenate([[-np.inf], _LB]),
            np.concatenate([[np.inf], _UB]),
            verbose=False,
            eps_abs=1e-6,
            eps_rel=1e-6,
        )
        csc = sp.csc_matrix(a0)

        def solve(i: int) -> np.ndarray:
            p = probs[i]
            a = np.vstack([p["G"], np.eye(_N)])
            csc.data[:] = a.T[np.nonzero(a0.T)]  # CSC order: column by column
            solver.update(q=p["q"], Ax=csc.data, u=np.concatenate([p["h"], _UB]))
            return solver.solve().x

        return solve

    def cvxopt_qp(probs: list[dict[str, np.ndarray]]) -> Callable[[int], np.ndarray]:
        cvxopt.solvers.options["show_progress"] = False

        def solve(i: int) -> np.ndarray:
            p = probs[i]
            gg = np.vstack([p["G"], np.eye(_N), -np.eye(_N)])
            hh = np.concatenate([p["h"], p["ub"], -p["lb"]])
            sol = cvxopt.solvers.qp(
                cvxopt.matrix(p["P"]), cvxopt.matrix(p["q"]), cvxopt.matrix(gg), cvxopt.matrix(hh)
            )
            return np.array(sol["x"]).reshape(-1)

        return solve

    def quadprog_qp(probs: list[dict[str, np.ndarray]]) -> Callable[[int], np.ndarray]:
        def solve(i: int) -> np.ndarray:
            p = probs[i]
            # quadprog: min 1/2 x'Gx - a'x s.t. C'x >= b.
            c = -np.vstack([p["G"], np.eye(_N), -np.eye(_N)]).T
            b = -np.concatenate([p["h"], p["ub"], -p["lb"]])
            return quadprog.solve_qp(p["P"], -p["q"], c, b)[0]

        return solve

    def daqp_qp(probs: list[dict[str, np.ndarray]]) -> Callable[[int], np.ndarray]:
        sense = np.zeros(_N + _M, dtype=np.int32)
        bl = np.concatenate([_LB, np.full(_M, -1e30)])

        def solve(i: int) -> np.ndarray:
            p = probs[i]
            return daqp.solve(p["P"], p["q"], p["G"], np.concatenate([p["ub"], p["h"]]), bl, sense)[0]

        return solve

    return {
        "cvxpy+OSQP": cvxpy_factory("OSQP"),
        "cvxpy+Clarabel": cvxpy_factory("CLARABEL"),
        "raw OSQP": raw_osqp,
        "cvxopt": cvxopt_qp,
        "quadprog": quadprog_qp,
        "DAQP": daqp_qp,
    }


def _tight(probs: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    import cvxpy as cp

    sols = []
    for p in probs:
        u = cp.Variable(_N)
        prob = cp.Problem(
            cp.Minimize(0.5 * cp.quad_form(u, p["P"]) + p["q"] @ u),
            [p["G"] @ u <= p["h"], u >= p["lb"], u <= p["ub"]],
        )
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        if prob.status != "optimal":
            raise RuntimeError(f"tight Clarabel solve failed: {prob.status}")
        sols.append(np.asarray(u.value))
    return sols


def _accuracy(
    solve: Callable[[int], np.ndarray], probs: list[dict[str, np.ndarray]], ref: list[np.ndarray]
) -> dict[str, float]:
    err = max(float(np.max(np.abs(solve(i) - ref[i]))) for i in range(len(probs)))
    viol = max(_violation(solve(i), probs[i]) for i in range(len(probs)))
    return {"max_abs_error": err, "max_violation": viol}


def _cycled(solve: Callable[[int], np.ndarray], k: int) -> Callable[[], np.ndarray]:
    state = [0]

    def call() -> np.ndarray:
        state[0] = (state[0] + 1) % k
        return solve(state[0])

    return call


def _first_output(model: Any, x: Any) -> Any:
    """ncps modules return (y, h_last); the loss wants y."""
    return model(x)[0]


def _lnn_reference_rows(quick: bool) -> list[dict[str, Any]]:
    """The anchors' liquid-network references re-measured in this run (no ours here:
    ``bench.bench_lnn`` holds ours against them): a traced ncps step, and training steps.

    Training step: batch 64 x sequence 64, 8 inputs, 2 outputs, MSE, forward + backward +
    Adam, float32, as in ANCHORS.md.
    """
    import torch
    from ncps.torch import LTC, CfC
    from ncps.wirings import AutoNCP

    torch.set_num_threads(1)
    torch.manual_seed(0)
    group = "liquid-network references (ncps 1.0.1, torch), re-measured"
    rows = []
    cfc = CfC(8, AutoNCP(19, 2, seed=0), batch_first=True).eval().requires_grad_(False)
    x1, h1 = torch.randn(1, 1, 8), torch.zeros(1, 19)
    with torch.no_grad():
        traced = torch.jit.trace(lambda x, h: cfc(x, hx=h)[0], (x1, h1), check_trace=False)
        expect = cfc(x1, hx=h1)[0]
        if not torch.allclose(traced(x1, h1), expect, atol=1e-6):
            raise RuntimeError("torch.jit.trace of the ncps CfC disagrees with the module")

    def traced_step() -> Any:
        with torch.no_grad():
            return traced(x1, h1)

    n = 100 if quick else 2000
    rows.append(row(group, "[ref] torch.jit.trace ncps CfC-NCP(19) step", time_calls(traced_step, n)))
    xb, yb = torch.randn(64, 64, 8), torch.randn(64, 64, 2)
    models: list[tuple[str, torch.nn.Module]] = [
        ("ncps CfC-NCP(19)", CfC(8, AutoNCP(19, 2, seed=0), batch_first=True)),
        ("ncps LTC-NCP(19)", LTC(8, AutoNCP(19, 2, seed=0), batch_first=True)),
        ("nn.LSTM(64)", torch.nn.Sequential()),
    ]
    lstm, head = torch.nn.LSTM(8, 64, batch_first=True), torch.nn.Linear(64, 2)
    for name, model in models:
        if name.startswith("nn.LSTM"):
            params = list(lstm.parameters()) + list(head.parameters())
            fwd: Callable[[torch.Tensor], torch.Tensor] = lambda x: head(lstm(x)[0])  # noqa: E731
        else:
            params = list(model.parameters())
            fwd = functools.partial(_first_output, model)

        opt = torch.optim.Adam(params, lr=1e-3)

        def train_step(fwd: Any = fwd, opt: torch.optim.Optimizer = opt) -> float:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(fwd(xb), yb)
            loss.backward()
            opt.step()
            return float(loss)

        t = time_calls(train_step, 3 if quick else 20, warmup=1 if quick else 3)
        rows.append(row(group, f"[ref] {name} training step", t, notes="batch 64 x seq 64, fwd+bwd+Adam"))
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """One row per reference QP solver (ours against it when ``barriernet.qp`` exists), then
    the liquid-network references re-measured."""
    k = 8 if quick else 64
    n = 40 if quick else 2000
    probs = make_problems(k, seed=0)
    ref_sol = _tight(probs)
    if sum(abs(float((p["G"] @ u - p["h"])[0])) < 1e-7 for p, u in zip(probs, ref_sol)) < k // 4:
        raise RuntimeError("problem generator lost its active CBF rows; the benchmark would not test the cut")
    try:
        solve_qp = importlib.import_module("barriernet.qp").solve_qp
    except (ImportError, AttributeError):
        solve_qp = None
    ours_call = None
    ours_acc: dict[str, float] = {}
    if solve_qp is not None:

        def ours_solve(i: int) -> np.ndarray:
            p = probs[i]
            return np.asarray(solve_qp(p["P"], p["q"], p["G"], p["h"], lb=p["lb"], ub=p["ub"]).x)

        ours_acc = _accuracy(ours_solve, probs, ref_sol)
        if ours_acc["max_abs_error"] > 1e-5:
            raise RuntimeError(f"barriernet.qp.solve_qp is off the tight solution: {ours_acc}")
        ours_call = _cycled(ours_solve, k)
    group = "QP solvers, 2 controls + box + 1 CBF row (the run-time filter's problem)"
    rows = []
    t_ours = time_calls(ours_call, n, warmup=20) if ours_call is not None else None
    for name, factory in _solvers().items():
        solve = factory(probs)
        acc = _accuracy(solve, probs, ref_sol)
        t_ref = time_calls(_cycled(solve, k), n, warmup=20)
        acc_txt = f"{name}: max|u-u*| {acc['max_abs_error']:.1e}, viol {acc['max_violation']:.1e}"
        if t_ours is None:
            r = row(
                group, f"[ref] {name}", t_ref, notes=f"{acc_txt}; reference only: barriernet.qp not present"
            )
        else:
            r = row(
                group,
                "solve_qp (default solver)",
                t_ours,
                t_ref,
                ref_name=name,
                notes=f"ours: max|u-u*| {ours_acc['max_abs_error']:.1e}; {acc_txt}",
            )
        r["accuracy"] = {"ref": acc, "ours": ours_acc}
        rows.append(r)
    return rows + _lnn_reference_rows(quick)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    for r in run(ap.parse_args().quick):
        sp = "" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"{r['name'][:34]:34s} {r['ours_median_s'] * 1e6:10.1f} us  {sp:8s} {r['notes']}")
