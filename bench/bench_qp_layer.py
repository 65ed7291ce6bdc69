"""Differentiable batched QP: barriernet.QPLayer vs qpth's QPFunction and cvxpylayers' CvxpyLayer.

The BarrierNet layer's problem (ANCHORS.md): 2 controls, m CBF rows plus a box,

    u* = argmin 1/2 u'Pu + q'u  s.t.  G u <= h,  -1 <= u <= 1,

P SPD per sample, q, G, h per sample (random, strictly feasible), float64. qpth and
cvxpylayers get the box as 2n extra rows (qpth has no bounds; the cvxpy problem states them
as constraints on the variable), all three the same problems. Rows:

- ``m rows, batch B, fwd`` and ``fwd+bwd`` (loss = sum of u*, gradient w.r.t. P, q, G, h) for
  m in (1, 4), B in (1, 1024): ours vs qpth (target 5x at B = 1024, fwd+bwd) and ours vs
  cvxpylayers (target 100x at B = 1024, fwd+bwd);
- accuracy: max |u* - u_clarabel| of each tool on 256 problems against a tight Clarabel solve
  (extra key ``max_abs_err``; in the notes), and max |dL/dq| difference from ours;
- larger problems (n = 6, 16 rows; n = 12, 32 rows; box; batch 1024; fwd+bwd): ours vs qpth.

Quick mode (CI smoke) runs every path once on batch 1 and 8. cvxpylayers takes seconds per
call at batch 1024, so full mode times 3 calls of it there. Torch runs single-threaded.
The layer-time-vs-batch curve is in ``bench_scaling`` (figure ``layer_vs_batch``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import row, time_calls

__all__ = ["run"]

_N = 2
_F64 = torch.float64


def make_problems(batch: int, m: int, seed: int, n: int = _N) -> dict[str, torch.Tensor]:
    """``batch`` strictly feasible QPs with n controls, m rows and the box |u| <= 1 (float64)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, n, n))
    P = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(n)
    q = rng.standard_normal((batch, n)) * 2.0
    G = rng.standard_normal((batch, m, n))
    u0 = rng.uniform(-0.8, 0.8, (batch, n))
    h = np.einsum("bmn,bn->bm", G, u0) + rng.uniform(0.0, 0.5, (batch, m))
    out = {k: torch.tensor(v, dtype=_F64) for k, v in {"P": P, "q": q, "G": G, "h": h}.items()}
    out["lb"] = -torch.ones(n, dtype=_F64)
    out["ub"] = torch.ones(n, dtype=_F64)
    return out


def _box_rows(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """G, h with the box appended as rows (for the tools without bounds)."""
    B, n = d["q"].shape
    eye = torch.eye(n, dtype=_F64).expand(B, n, n)
    G = torch.cat([d["G"], eye, -eye], 1)
    h = torch.cat([d["h"], d["ub"].expand(B, n), (-d["lb"]).expand(B, n)], 1)
    return G, h


def _ours(d: dict[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
    from barriernet import QPLayer

    layer = QPLayer()

    def f(P: torch.Tensor, q: torch.Tensor, G: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        u = layer(P, q, G, h, d["lb"], d["ub"])
        if not bool((layer.status == 0).all()):
            raise RuntimeError(f"QPLayer: {int((layer.status != 0).sum())} samples not optimal")
        return u

    return f


def _qpth(d: dict[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
    from qpth.qp import QPFunction

    e = torch.empty(0, dtype=_F64)
    B, n = d["q"].shape
    eye = torch.eye(n, dtype=_F64).expand(B, n, n)
    box_h = torch.cat([d["ub"].expand(B, n), (-d["lb"]).expand(B, n)], 1)

    def f(P: torch.Tensor, q: torch.Tensor, G: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return QPFunction(verbose=-1)(P, q, torch.cat([G, eye, -eye], 1), torch.cat([h, box_h], 1), e, e)

    return f


def _cvxpylayers(m: int) -> Callable[..., torch.Tensor]:
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    u = cp.Variable(_N)
    Lp, qp_, Gp, hp = cp.Parameter((_N, _N)), cp.Parameter(_N), cp.Parameter((m, _N)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(Lp @ u) + qp_ @ u), [Gp @ u <= hp, u >= -1, u <= 1])
    layer = CvxpyLayer(prob, parameters=[Lp, qp_, Gp, hp], variables=[u])

    def f(P: torch.Tensor, q: torch.Tensor, G: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # 1/2 u'Pu = 1/2 |L'u|^2 with P = L L' (the cholesky is part of the differentiable graph)
        (sol,) = layer(torch.linalg.cholesky(P).mT, q, G, h)
        return sol

    return f


def _clarabel_reference(d: dict[str, torch.Tensor]) -> np.ndarray:
    import clarabel
    import scipy.sparse as sp

    st = clarabel.DefaultSettings()
    st.verbose = False
    st.tol_gap_abs = st.tol_gap_rel = st.tol_feas = 1e-10
    G, h = _box_rows(d)
    out = []
    for i in range(d["q"].shape[0]):
        P = d["P"][i].numpy()
        s = clarabel.DefaultSolver(
            sp.triu(sp.csc_matrix(P)).tocsc(),
            d["q"][i].numpy(),
            sp.csc_matrix(G[i].numpy()),
            h[i].numpy(),
            [clarabel.NonnegativeConeT(G.shape[1])],
            st,
        )
        r = s.solve()
        if str(r.status) != "Solved":
            raise RuntimeError(f"Clarabel reference failed on problem {i}: {r.status}")
        out.append(np.asarray(r.x))
    return np.stack(out)


def _timer(fn: Callable[..., torch.Tensor], d: dict[str, torch.Tensor], backward: bool) -> Callable[[], Any]:
    if backward:
        args = [d[k].clone().requires_grad_(True) for k in ("P", "q", "G", "h")]

        def call() -> Any:
            u = fn(*args)
            u.sum().backward()
            return u

    else:
        args = [d[k] for k in ("P", "q", "G", "h")]

        def call() -> Any:
            with torch.no_grad():
                return fn(*args)

    return call


def _check_grads(
    d: dict[str, torch.Tensor], tools: dict[str, Callable[..., torch.Tensor]]
) -> dict[str, float]:
    """Max |dL/dq - ours| of each reference tool (L = sum of u*): the gradients agree."""
    grads = {}
    for name, fn in tools.items():
        q = d["q"].clone().requires_grad_(True)
        fn(d["P"], q, d["G"], d["h"]).sum().backward()
        grads[name] = q.grad
    return {k: float((g - grads["ours"]).abs().max()) for k, g in grads.items() if k != "ours"}


def run(quick: bool) -> list[dict[str, Any]]:
    """Timing and accuracy rows (see the module docstring)."""
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    batches = (1, 8) if quick else (1, 1024)
    for m in (1, 4):
        cvx = _cvxpylayers(m)
        for B in batches:
            d = make_problems(B, m, seed=100 * m + B)
            ours, qpth = _ours(d), _qpth(d)
            big = B >= 1024
            for backward in (False, True):
                mode = "fwd+bwd" if backward else "fwd"
                n_calls = 2 if quick else (30 if big else 200)
                t_ours = time_calls(_timer(ours, d, backward), n_calls, warmup=1 if quick else 5)
                t_qpth = time_calls(_timer(qpth, d, backward), 2 if quick else (20 if big else 100), warmup=1)
                t_cvx = time_calls(_timer(cvx, d, backward), 1 if quick else (3 if big else 30), warmup=1)
                name = f"{m} row{'s' if m > 1 else ''} + box, batch {B}, {mode}"
                rows.append(
                    row(
                        "QP layer: ours vs qpth",
                        name,
                        t_ours,
                        t_qpth,
                        ref_name="qpth QPFunction",
                        target=">= 5x" if big and backward else "",
                        min_speedup=5.0 if big and backward else None,
                        notes="2 controls, float64, box as 4 extra rows for qpth",
                    )
                )
                rows.append(
                    row(
                        "QP layer: ours vs cvxpylayers",
                        name,
                        t_ours,
                        t_cvx,
                        ref_name="cvxpylayers CvxpyLayer",
                        target=">= 100x" if big and backward else "",
                        min_speedup=100.0 if big and backward else None,
                        notes=f"2 controls, float64; cvxpylayers timed over {len(t_cvx)} call(s)",
                    )
                )
        # Accuracy on the same family, and the gradients agree with qpth's and cvxpylayers'.
        d = make_problems(16 if quick else 256, m, seed=7 + m)
        ref = _clarabel_reference(d)
        tools = {"ours": _ours(d), "qpth": _qpth(d), "cvxpylayers": cvx}
        errs: dict[str, float] = {}
        times: dict[str, np.ndarray] = {}
        for name, fn in tools.items():
            times[name] = time_calls(_timer(fn, d, False), 1, warmup=0)
            with torch.no_grad():
                u = fn(d["P"], d["q"], d["G"], d["h"]).numpy()
            errs[name] = float(np.abs(u - ref).max())
        gdiff = _check_grads(d, tools)
        if errs["ours"] > 1e-6:
            raise RuntimeError(f"QPLayer disagrees with Clarabel by {errs['ours']:.3g} ({m} rows)")
        if gdiff["qpth"] > 1e-4:
            raise RuntimeError(f"QPLayer's dL/dq differs from qpth's by {gdiff['qpth']:.3g} ({m} rows)")
        r = row(
            "QP layer: accuracy vs a tight Clarabel solve",
            f"{m} row{'s' if m > 1 else ''} + box, {d['q'].shape[0]} problems",
            times["ours"],
            notes="max |u - u_clarabel|: "
            + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
            + "; max |dL/dq - ours|: "
            + ", ".join(f"{k} {v:.1e}" for k, v in gdiff.items()),
        )
        r["max_abs_err"] = errs
        r["grad_diff_vs_ours"] = gdiff
        rows.append(r)
    # Larger problems (an arm's joints and limits, and the layer's size limit): interior point.
    for n, m in ((6, 16), (12, 32)):
        B = 4 if quick else 1024
        d = make_problems(B, m, seed=n, n=n)
        t_ours = time_calls(_timer(_ours(d), d, True), 2 if quick else 10, warmup=1)
        t_qpth = time_calls(_timer(_qpth(d), d, True), 1 if quick else 5, warmup=1)
        rows.append(
            row(
                "QP layer: ours vs qpth",
                f"n={n}, {m} rows + box, batch {B}, fwd+bwd",
                t_ours,
                t_qpth,
                ref_name="qpth QPFunction",
                notes=f"{n} controls, float64 (ours: interior point + polish)",
            )
        )
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    for r in run(ap.parse_args().quick):
        sp_ = "" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        ms = r["ours_median_s"] * 1e3
        print(f"{r['group'][:32]:32s} {r['name'][:36]:36s} {ms:9.3f} ms {sp_:>8s} {r['notes']}")
