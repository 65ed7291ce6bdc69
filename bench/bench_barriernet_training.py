"""BarrierNet training through the diff_drive safety filter's QP (``lnn-control train --barriernet``).

The problem is the robot's own (config/diff_drive.yaml): 2 controls (v, omega), 20 rows (16
laser-scan points + 4 walls) plus the box, float64, at states 0.3-0.7 m from scan points (rows
active for most nominal commands). Rows:

- ``FilterQPLayer fwd+bwd`` (loss = sum of u, gradient to u_nom and the 5 class-K gains) at
  batch 1024 vs qpth's ``QPFunction`` on the same problems (what the official BarrierNet trains
  with; ANCHORS: 12.5 ms (1 row) to 29.5 ms (4 rows) at batch 1024). qpth gets the box as 4 extra
  rows and the inert scan rows (no point) as copies of the box row v <= upper (it takes no
  infinite bounds; ``0 u <= 1e3`` rows made it miss a third of the samples). Ours
  is checked against ``SafetyFilter.filter`` (1e-6) before timing; qpth's error is reported
  (it misses some samples with negative barrier values).
- ``training step`` (CfC-NCP(19) policy with 5 gain outputs, 16 windows x 32 steps, forward +
  backward + Adam) through the QP vs the same step without it (behaviour cloning on the nominal
  command): the cost of training end to end, as a ratio (< 1: slower).
- ``row_terms`` (the gain-free row pieces, once per sample in numpy) vs one ``SafetyFilter.filter``
  call on the same state: the one-off data cost per training sample.

Quick mode (CI smoke): batch 8 and 2 windows, a few calls. Torch runs single-threaded.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import torch

from bench.common import row, time_calls

__all__ = ["run"]

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_GROUP = "BarrierNet training (diff_drive filter QP)"


def _filter() -> Any:
    from barriernet.safety_filter import SafetyFilter
    from lnn_control.config import load_filter_config

    return SafetyFilter.from_config(load_filter_config(_ROOT / "config" / "diff_drive.yaml"))


def _samples(n: int, seed: int) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """States with 8-20 scan points 0.3-0.7 m ahead (fewer than 16: some rows inert)."""
    rng = np.random.default_rng(seed)
    xs = np.c_[rng.uniform(-2.0, 2.0, (n, 2)), rng.uniform(-np.pi, np.pi, n)]
    envs = []
    for x in xs:
        k = int(rng.integers(8, 21))
        ang = x[2] + rng.uniform(-1.0, 1.0, k)
        r = rng.uniform(0.3, 0.7, k)
        envs.append({"scan_points": x[:2] + np.c_[r * np.cos(ang), r * np.sin(ang)]})
    return xs, envs


def _layer_rows(quick: bool) -> list[dict[str, Any]]:
    from qpth.qp import QPFunction

    from barriernet.filter_layer import FilterQPLayer

    f = _filter()
    layer = FilterQPLayer(f)
    B = 8 if quick else 1024
    xs, envs = _samples(B, seed=1)
    rt = layer.terms(xs, envs)
    terms = tuple(torch.as_tensor(v) for v in (rt.G, rt.a, rt.b, rt.c))
    rng = np.random.default_rng(2)
    u_nom = torch.tensor(rng.uniform(f.lower, f.upper, (B, 2)))
    gains = torch.tensor(rng.uniform(0.5, 3.0, (B, f.n_gains)))
    # keep the feasible samples only (qpth has no per-sample status): same problems for both
    with torch.no_grad():
        layer(terms, u_nom, gains)
    assert layer.status is not None
    ok = layer.status == 0
    terms = tuple(t[ok] for t in terms)
    u_nom, gains = u_nom[ok], gains[ok]
    n = int(ok.sum())
    eye = torch.eye(2, dtype=torch.float64).expand(n, 2, 2)
    box_h = torch.cat([layer.upper.expand(n, 2), (-layer.lower).expand(n, 2)], 1)
    P = torch.eye(2, dtype=torch.float64).expand(n, 2, 2)
    empty = torch.empty(0, dtype=torch.float64)
    # qpth takes no infinite bounds: inert rows become copies of the box row v <= upper
    # (0 u <= 1e3 instead made its interior point miss a third of the samples)
    inert = torch.isinf(terms[1])
    G_rows = torch.where(inert[..., None], torch.tensor([1.0, 0.0], dtype=torch.float64), terms[0])

    def ours() -> torch.Tensor:
        un, g = u_nom.clone().requires_grad_(True), gains.clone().requires_grad_(True)
        u = layer(terms, un, g)
        u.sum().backward()
        return u

    def qpth() -> torch.Tensor:
        un, g = u_nom.clone().requires_grad_(True), gains.clone().requires_grad_(True)
        h = layer.rhs(terms[1], terms[2], terms[3], g)
        h = torch.where(inert, torch.full_like(h, float(layer.upper[0])), h)
        G = torch.cat([G_rows, eye, -eye], 1)
        u = QPFunction(verbose=-1)(P, -un, G, torch.cat([h, box_h], 1), empty, empty)
        u.sum().backward()
        return u

    # ours against the run-time filter itself (the contract); qpth's error reported, not enforced
    u_ours, u_qpth = ours().detach().numpy(), qpth().detach().numpy()
    idx = np.flatnonzero(ok.numpy())
    u_ref = np.stack(
        [f.filter(xs[i], u_nom[j].numpy(), gains[j].numpy(), envs[i])[0] for j, i in enumerate(idx)]
    )
    err = float(np.abs(u_ours - u_ref).max())
    if err > 1e-6:
        raise RuntimeError(f"FilterQPLayer differs from SafetyFilter.filter by {err:.3g}")
    err_qpth = float(np.abs(u_qpth - u_ref).max())
    bad_qpth = int((np.abs(u_qpth - u_ref).max(1) > 1e-6).sum())
    t_ours = time_calls(ours, 2 if quick else 30, warmup=1 if quick else 3)
    t_qpth = time_calls(qpth, 2 if quick else 20, warmup=1)
    return [
        row(
            _GROUP,
            f"FilterQPLayer fwd+bwd, 20 rows + box, batch {n}",
            t_ours,
            t_qpth,
            ref_name="qpth QPFunction (same problems)",
            notes=f"float64, grads to u_nom and 5 gains; max |u - u_filter| ours {err:.1e}, qpth "
            f"{err_qpth:.1e} ({bad_qpth} samples off by > 1e-6); {B - n} infeasible samples left out",
        )
    ]


def _training_rows(quick: bool) -> list[dict[str, Any]]:
    from barriernet.filter_layer import FilterQPLayer
    from lnn_control.learn import training as tr

    f = _filter()
    layer = FilterQPLayer(f)
    nw, T = (2, 8) if quick else (16, 32)
    xs, envs = _samples(nw * T, seed=3)
    rt = layer.terms(xs, envs)
    terms = [torch.as_tensor(v).reshape(nw, T, *v.shape[1:]) for v in (rt.G, rt.a, rt.b, rt.c)]
    rng = np.random.default_rng(4)
    obs = torch.tensor(rng.normal(size=(nw, T, 12)), dtype=torch.float32)
    dt = torch.full((nw, T), 0.02)
    target = torch.tensor(rng.uniform(-0.5, 0.5, (nw, T, 2)), dtype=torch.float32)
    cfg = tr.TrainConfig(units=19, n_gains=f.n_gains, progress=False)
    stats = tr.NormStats(np.zeros(12), np.ones(12), np.zeros(2), 0.3 * np.ones(2))
    torch.manual_seed(0)
    model = tr.build_policy(cfg, 12, 2, stats, gain_names=list(f.gain_names))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(safe: bool) -> Any:
        def call() -> None:
            y, _ = model(obs, dt)
            if safe:
                loss, _bad, _u = tr.safe_command_error(model, layer, y, target, terms)
                assert loss is not None
            else:
                loss = tr.normalized_error(model, y, target)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return call

    n = 2 if quick else 20
    t_bn = time_calls(step(True), n, warmup=1 if quick else 3)
    t_bc = time_calls(step(False), n, warmup=1 if quick else 3)
    x0, e0 = xs[0], envs[0]
    u0 = np.array([0.5, 0.0])
    t_terms = time_calls(lambda: f.row_terms(x0, e0), 20 if quick else 2000, warmup=5)
    t_filter = time_calls(lambda: f.filter(x0, u0, env=e0), 20 if quick else 2000, warmup=5)
    return [
        row(
            _GROUP,
            f"training step through the QP, CfC-NCP(19), {nw} x {T} steps",
            t_bn,
            t_bc,
            ref_name="same step, loss on the nominal command (no QP)",
            notes="forward + backward + Adam; ratio < 1 = the QP's cost",
        ),
        row(
            _GROUP,
            "row_terms per sample (numpy, once per training sample)",
            t_terms,
            t_filter,
            ref_name="one SafetyFilter.filter call, same state",
            notes="three row evaluations (gain coefficients) per state",
        ),
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Rows (see the module docstring)."""
    torch.set_num_threads(1)
    return _layer_rows(quick) + _training_rows(quick)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    for r in run(ap.parse_args().quick):
        print(r)
