"""How cost grows: step latency vs neuron count, QP latency vs controls and rows, layer time vs batch.

Three sweeps, each a figure drawn by ``bench.plots`` from the rows' extra ``plot`` key
(``figure``, ``x``, ``x_label``, ``log_x``):

- ``step_vs_neurons``: one control step, batch 1, 8 inputs, 2 outputs, of a CfC and an LTC
  on an ``AutoNCP(N, 2)`` wiring, N in 19 ... 256. Ours: ``lnn_control.nn.policy.from_ncps(m)
  .runtime()`` (``PolicyStepper.step``); reference: the ncps module call under ``no_grad``.
- ``qp_vs_rows`` / ``qp_vs_controls``: min 1/2 u'Pu + q'u s.t. Gu <= h, -10 <= u <= 10, for
  n controls and m rows (random, strictly feasible, P = A'A + I): m in 1 ... 64 at n = 2, and
  n in 2 ... 16 at m = 4. Ours: ``barriernet.qp.solve_qp`` with its default solver, checked
  against a tight Clarabel solve before timing; references: cvxpy + OSQP on a parametrized
  problem (what a user would write) and DAQP called directly (what an expert would pick).
- ``layer_vs_batch``: a batched differentiable QP (2 controls, 4 rows), forward + backward,
  float64: ours ``barriernet.QPLayer`` against qpth's ``QPFunction`` (the anchor's tool),
  batch 1 ... 1,024.

Where our implementation is not importable the sweep times the reference alone (row
name prefixed ``[ref]``, ``notes`` says so) so the curve still exists; the row then has
no speedup. Torch runs single-threaded, as in every benchmark here.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import row, time_calls

__all__ = ["run"]

_N_IN, _N_OUT = 8, 2


def _optional(module: str, name: str) -> Any | None:
    """``module.name`` if our implementation of it exists yet, else None."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _plot(figure: str, x: float, x_label: str, log_x: bool = True) -> dict[str, Any]:
    return {"figure": figure, "x": x, "x_label": x_label, "log_x": log_x}


def _pair_row(
    group: str,
    label: str,
    ours: Callable[[], Any] | None,
    ref: Callable[[], Any],
    ref_name: str,
    n: int,
    missing: str,
    plot: dict[str, Any],
) -> dict[str, Any]:
    """Time ours against the reference, or the reference alone when ours is missing.

    ``plot["series"]`` names our curve (or the reference's, when ours is missing) and
    ``plot["ref_series"]`` the reference curve, for :func:`bench.plots.plot_scaling`.
    """
    t_ref = time_calls(ref, n, warmup=max(5, n // 20))
    if ours is None:
        r = row(group, f"[ref] {ref_name} {label}", t_ref, notes=f"reference only: {missing} not present")
        plot = dict(plot, series=f"{ref_name} (reference)")
    else:
        t_ours = time_calls(ours, n, warmup=max(5, n // 20))
        r = row(group, label, t_ours, t_ref, ref_name=ref_name)
        plot = dict(plot, ref_series=ref_name)
    r["plot"] = plot
    return r


def _step_sweep(quick: bool) -> list[dict[str, Any]]:
    from ncps.torch import LTC, CfC
    from ncps.wirings import AutoNCP

    from_ncps = _optional("lnn_control.nn.policy", "from_ncps")
    sizes = [19, 64, 256] if quick else [19, 32, 64, 128, 256]
    n = 100 if quick else 2000
    rows = []
    for cell_name, cell in (("CfC", CfC), ("LTC", LTC)):
        for units in sizes:
            torch.manual_seed(0)
            model = cell(_N_IN, AutoNCP(units, _N_OUT, seed=0), batch_first=True).eval()
            x = torch.randn(1, 1, _N_IN)
            hx = torch.zeros(1, units)

            def ref(model: Any = model, x: torch.Tensor = x, hx: torch.Tensor = hx) -> Any:
                with torch.no_grad():
                    return model(x, hx=hx, timespans=torch.ones(1, 1))

            ours = None
            if from_ncps is not None:
                stepper = from_ncps(model).runtime()
                obs = x.numpy().reshape(-1).astype(np.float64)

                def ours(stepper: Any = stepper, obs: np.ndarray = obs) -> Any:
                    return stepper.step(obs, 0.01)

            plot = _plot("step_vs_neurons", units, "neurons (AutoNCP wiring, 8 inputs, 2 motor)")
            rows.append(
                _pair_row(
                    "scaling: step latency vs neurons",
                    f"{cell_name}-NCP({units}) step",
                    ours,
                    ref,
                    f"ncps {cell_name}",
                    n,
                    "lnn_control.nn.policy.from_ncps",
                    dict(plot, series=f"ours {cell_name}"),
                )
            )
    return rows


def _random_qp(n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A strictly feasible random QP: P = A'A + I, h = G u0 + s with s > 0 and |u0| < 10."""
    a = rng.standard_normal((n, n))
    p = a.T @ a + np.eye(n)
    q = rng.standard_normal(n) * 3.0
    g = rng.standard_normal((m, n))
    u0 = rng.uniform(-1.0, 1.0, n)
    h = g @ u0 + rng.uniform(0.1, 1.0, m)
    return p, q, g, h, -10.0 * np.ones(n), 10.0 * np.ones(n)


def _qp_sweep(quick: bool) -> list[dict[str, Any]]:
    import cvxpy as cp
    import daqp

    solve_qp = _optional("barriernet.qp", "solve_qp")
    # Two sweeps: rows at 2 controls (a CBF filter adds rows per obstacle / scan point), and
    # controls at 4 rows (an arm adds controls per joint).
    if quick:
        sizes = [(2, 1, "qp_vs_rows"), (2, 16, "qp_vs_rows"), (8, 4, "qp_vs_controls")]
    else:
        sizes = [(2, m, "qp_vs_rows") for m in (1, 4, 16, 64)]
        sizes += [(n, 4, "qp_vs_controls") for n in (2, 4, 8, 16)]
    n_calls = 50 if quick else 1000
    rng = np.random.default_rng(8)
    rows = []
    for n, m, figure in sizes:
        p, q, g, h, lb, ub = _random_qp(n, m, rng)
        # Reference 1, as a user writes it: a parametrized cvxpy problem, values set per call.
        u = cp.Variable(n)
        qp_, hp_ = cp.Parameter(n), cp.Parameter(m)
        prob = cp.Problem(
            cp.Minimize(0.5 * cp.quad_form(u, cp.psd_wrap(p)) + qp_ @ u), [g @ u <= hp_, u >= lb, u <= ub]
        )
        qp_.value, hp_.value = q, h
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        if prob.status != "optimal":
            raise RuntimeError(f"tight cvxpy/Clarabel solve failed on the n={n} m={m} QP: {prob.status}")
        u_tight = np.asarray(u.value, dtype=np.float64)

        def cvx(
            prob: Any = prob, qp_: Any = qp_, hp_: Any = hp_, q: np.ndarray = q, h: np.ndarray = h
        ) -> Any:
            qp_.value, hp_.value = q, h
            return prob.solve(solver=cp.OSQP, eps_abs=1e-6, eps_rel=1e-6, verbose=False)

        # Reference 2, what an expert picks for this size (ANCHORS.md): DAQP called directly;
        # the first n entries of the bounds are the box on u.
        bu = np.concatenate([ub, h])
        bl = np.concatenate([lb, np.full(m, -1e30)])
        sense = np.zeros(n + m, dtype=np.int32)
        x_d, _, flag, _ = daqp.solve(p, q, g, bu, bl, sense)
        if flag != 1 or not np.allclose(x_d, u_tight, atol=1e-5):
            raise RuntimeError(f"DAQP reference disagrees with Clarabel on n={n} m={m}: flag {flag}")

        def dq(
            p: np.ndarray = p,
            q: np.ndarray = q,
            g: np.ndarray = g,
            bu: np.ndarray = bu,
            bl: np.ndarray = bl,
            sense: np.ndarray = sense,
        ) -> Any:
            return daqp.solve(p, q, g, bu, bl, sense)

        ours = None
        if solve_qp is not None:
            res = solve_qp(p, q, g, h, lb=lb, ub=ub)
            # A fast wrong answer is no result: check ours against the tight solve first.
            if res.status != "optimal" or not np.allclose(res.x, u_tight, atol=1e-5):
                raise RuntimeError(f"solve_qp disagrees with Clarabel on n={n} m={m}: {res.status}, {res.x}")

            def ours(
                p: np.ndarray = p,
                q: np.ndarray = q,
                g: np.ndarray = g,
                h: np.ndarray = h,
                lb: np.ndarray = lb,
                ub: np.ndarray = ub,
            ) -> Any:
                return solve_qp(p, q, g, h, lb=lb, ub=ub)

        x, x_label = (
            (m, "inequality rows (2 controls, plus box)")
            if figure == "qp_vs_rows"
            else (n, "controls (4 rows, plus box)")
        )
        for ref, ref_name in ((cvx, "cvxpy+OSQP"), (dq, "DAQP direct")):
            rows.append(
                _pair_row(
                    "scaling: QP latency vs controls and rows",
                    f"QP n={n} m={m}" + (" (controls sweep)" if figure == "qp_vs_controls" else ""),
                    ours,
                    ref,
                    ref_name,
                    n_calls,
                    "barriernet.qp.solve_qp",
                    dict(_plot(figure, x, x_label), series="ours solve_qp"),
                )
            )
    return rows


def _layer_sweep(quick: bool) -> list[dict[str, Any]]:
    from qpth.qp import QPFunction

    qp_layer = _optional("barriernet.qp_layer", "QPLayer")
    layer = qp_layer() if qp_layer is not None else None
    batches = [1, 16, 128] if quick else [1, 16, 128, 1024]
    n, m = 2, 4
    n_calls = 5 if quick else 30
    rng = np.random.default_rng(11)
    p0, q0, g0, h0, _, _ = _random_qp(n, m, rng)
    e = torch.empty(0, dtype=torch.float64)
    rows = []
    for b in batches:
        pt = torch.tensor(p0).expand(b, n, n).contiguous()
        gt = torch.tensor(g0).expand(b, m, n).contiguous()
        ht = torch.tensor(h0).expand(b, m).contiguous()
        qt = (
            torch.tensor(q0)
            + 0.1 * torch.randn(b, n, dtype=torch.float64, generator=torch.Generator().manual_seed(b))
        ).requires_grad_(True)

        def ref(
            pt: torch.Tensor = pt, qt: torch.Tensor = qt, gt: torch.Tensor = gt, ht: torch.Tensor = ht
        ) -> Any:
            u = QPFunction(verbose=-1)(pt, qt, gt, ht, e, e)
            u.sum().backward()
            return u

        t = time_calls(ref, n_calls, warmup=2)
        plot = _plot("layer_vs_batch", b, "batch size")
        if qp_layer is None:
            r = row(
                "scaling: QP layer time vs batch",
                f"[ref] qpth fwd+bwd batch {b}",
                t,
                notes="2 controls, 4 rows, float64; reference only (barriernet.QPLayer not present)",
            )
            r["plot"] = dict(plot, series="qpth QPFunction (reference)")
        else:

            def ours(
                pt: torch.Tensor = pt, qt: torch.Tensor = qt, gt: torch.Tensor = gt, ht: torch.Tensor = ht
            ) -> Any:
                u = layer(pt, qt, gt, ht)
                u.sum().backward()
                return u

            t_ours = time_calls(ours, max(n_calls, 20), warmup=3)
            r = row(
                "scaling: QP layer time vs batch",
                f"fwd+bwd batch {b}",
                t_ours,
                t,
                ref_name="qpth",
                notes="2 controls, 4 rows, float64; ours: barriernet.QPLayer",
            )
            r["plot"] = dict(plot, series="ours QPLayer", ref_series="qpth QPFunction")
        rows.append(r)
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """All three sweeps; rows per :func:`bench.common.row` plus a ``plot`` key each."""
    torch.set_num_threads(1)
    return _step_sweep(quick) + _qp_sweep(quick) + _layer_sweep(quick)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    rows = run(ap.parse_args().quick)
    for r in rows:
        sp = "" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"{r['group'][:38]:38s} {r['name'][:40]:40s} {r['ours_median_s'] * 1e6:10.1f} us {sp}")
