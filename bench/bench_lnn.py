"""Liquid networks: our torch-free stepper and our training step against ncps 1.0.1, same run.

Groups (batch 1, 8 inputs, 2 outputs unless said; torch single-threaded):

- ``stepper vs ncps``: ``PolicyStepper.step(obs, dt)`` (numpy float64) of ``from_ncps(m)`` against
  the ncps module call ``m(x, hx=h, timespans=dt)`` under ``no_grad`` (what a user runs), for
  CfC-NCP(19), CfC-NCP(64), LTC-NCP(19), LTC-NCP(64) and a dense CfC of 64 units with a 2-output
  projection. Target: >= 5x (ANCHORS.md: ncps 194 / 204 / 276 / 307 / 99 us). Before timing, the
  stepper is checked against ncps over 20 steps (raises if they differ by > 1e-5 in float32).
- ``stepper vs our exports``: the same stepper against our TorchScript trace and our ONNX
  model in onnxruntime (1 thread) of the same policy's step (no target: context).
- ``training step``: batch 64 x 64 steps, MSE, forward + backward + Adam, float32, ours
  (``LiquidPolicy`` with per-sample timespans) against ncps's module call (its own loop, no
  timespans: its fastest path). Targets: CfC >= 1x, LTC >= 2x.
- ``step vs neurons``: stepper and ncps for AutoNCP(N, 2), N = 19 ... 256 (figure
  ``lnn_step_vs_neurons``), float64 and float32 stepper.

``python -m bench.bench_lnn [--quick]`` prints the table.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import row, time_calls

__all__ = ["run"]

_N_IN, _N_OUT = 8, 2


def _ncps_models() -> dict[str, Callable[[], torch.nn.Module]]:
    from ncps.torch import LTC, CfC
    from ncps.wirings import AutoNCP

    return {
        "CfC-NCP(19)": lambda: CfC(_N_IN, AutoNCP(19, _N_OUT, seed=0), batch_first=True),
        "CfC-NCP(64)": lambda: CfC(_N_IN, AutoNCP(64, _N_OUT, seed=0), batch_first=True),
        "LTC-NCP(19)": lambda: LTC(_N_IN, AutoNCP(19, _N_OUT, seed=0), batch_first=True),
        "LTC-NCP(64)": lambda: LTC(_N_IN, AutoNCP(64, _N_OUT, seed=0), batch_first=True),
        "dense CfC(64)": lambda: CfC(_N_IN, 64, proj_size=_N_OUT, batch_first=True),
    }


def _pair(model: Any) -> tuple[Callable[[], Any], Callable[[], Any], Any, Any]:
    """(ours, ncps) single-step callables on the same model, checked to agree first."""
    from lnn_control.nn.policy import from_ncps

    model = model.eval()
    policy = from_ncps(model).eval()
    stepper = policy.runtime()
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(20, _N_IN)).astype(np.float32)
    dts = rng.uniform(0.01, 0.2, size=20).astype(np.float32)
    h = torch.zeros(1, model.state_size)
    for t in range(20):
        with torch.no_grad():
            y_ref, h = model(torch.from_numpy(xs[t]).view(1, 1, -1), hx=h, timespans=torch.tensor([[dts[t]]]))
        y = stepper.step(xs[t], float(dts[t]))
        err = float(np.abs(y - y_ref.numpy().reshape(-1)).max())
        if err > 1e-5:
            raise RuntimeError(f"stepper disagrees with ncps by {err:.2e} at step {t}")
    stepper.reset()
    x1 = torch.from_numpy(xs[0]).view(1, 1, -1)
    ts1 = torch.tensor([[0.05]])
    h1 = torch.zeros(1, model.state_size)
    obs = xs[0].astype(np.float64)

    def ours() -> Any:
        return stepper.step(obs, 0.05)

    def ref() -> Any:
        with torch.no_grad():
            return model(x1, hx=h1, timespans=ts1)

    return ours, ref, policy, stepper


def _stepper_rows(quick: bool) -> list[dict[str, Any]]:
    n = 300 if quick else 3000
    group = "stepper vs ncps module call (batch 1, 8 in, 2 out)"
    rows = []
    for name, make in _ncps_models().items():
        torch.manual_seed(0)
        ours, ref, _, _ = _pair(make())
        t_ref = time_calls(ref, n, warmup=50)
        t_ours = time_calls(ours, n, warmup=50)
        rows.append(
            row(
                group,
                f"stepper {name}",
                t_ours,
                t_ref,
                ref_name=f"ncps {name}",
                target=">= 5x",
                min_speedup=5.0,
            )
        )
    return rows


def _export_rows(quick: bool) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from lnn_control.nn.export import export_onnx, export_torchscript

    n = 300 if quick else 3000
    group = "stepper vs our exports of the same step (batch 1)"
    rows = []
    models = _ncps_models()
    for name in ("CfC-NCP(19)", "LTC-NCP(19)"):
        torch.manual_seed(0)
        ours, _, policy, _ = _pair(models[name]())
        traced = export_torchscript(policy)
        data = export_onnx(policy)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        x = torch.randn(1, _N_IN)
        dt = torch.full((1, 1), 0.05)
        h = torch.zeros(1, policy.state_size)
        feeds = {"x": x.numpy(), "dt": dt.numpy(), "h": h.numpy()}

        def jit_step(traced: Any = traced, args: tuple = (x, dt, h)) -> Any:
            with torch.no_grad():
                return traced(*args)

        def onnx_step(sess: Any = sess, feeds: dict = feeds) -> Any:
            return sess.run(None, feeds)

        t_ours = time_calls(ours, n, warmup=50)
        rows.append(
            row(group, f"stepper {name}", t_ours, time_calls(jit_step, n, 50), ref_name="our TorchScript")
        )
        rows.append(
            row(group, f"stepper {name}", t_ours, time_calls(onnx_step, n, 50), ref_name="our ONNX (ort)")
        )
    return rows


def _training_rows(quick: bool) -> list[dict[str, Any]]:
    from ncps.torch import LTC, CfC
    from ncps.wirings import AutoNCP

    from lnn_control.nn.policy import LiquidPolicy
    from lnn_control.nn.wiring import AutoNCP as OurAutoNCP

    group = "training step, batch 64 x 64 steps, fwd+bwd+Adam (float32)"
    torch.manual_seed(0)
    xb, yb = torch.randn(64, 64, _N_IN), torch.randn(64, 64, _N_OUT)
    tsb = torch.rand(64, 64) * 0.2 + 0.01  # ours takes per-sample, per-step dt
    cases = [
        ("CfC-NCP(19)", "cfc", 19, 1.0),
        ("LTC-NCP(19)", "ltc", 19, 2.0),
    ]
    if not quick:
        cases.append(("LTC-NCP(64)", "ltc", 64, 2.0))
    rows = []
    reps, warm = (3, 1) if quick else (15, 3)
    for name, cell, units, target in cases:
        ref_model = (CfC if cell == "cfc" else LTC)(_N_IN, AutoNCP(units, _N_OUT, seed=0), batch_first=True)
        ours_model = LiquidPolicy(_N_IN, cell, OurAutoNCP(units, _N_OUT, seed=0))

        def step_fn(fwd: Callable[[], torch.Tensor], params: Any) -> Callable[[], float]:
            opt = torch.optim.Adam(params, lr=1e-3)

            def train_step() -> float:
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(fwd(), yb)
                loss.backward()
                opt.step()
                return float(loss.detach())

            return train_step

        def ref_fwd(m: torch.nn.Module = ref_model) -> torch.Tensor:
            return m(xb)[0]

        def ours_fwd(m: torch.nn.Module = ours_model) -> torch.Tensor:
            return m(xb, tsb)[0]

        ref_step = step_fn(ref_fwd, ref_model.parameters())
        ours_step = step_fn(ours_fwd, ours_model.parameters())
        loss = ours_step()
        if not np.isfinite(loss):
            raise RuntimeError(f"our {name} training step gave loss {loss}")
        t_ref = time_calls(ref_step, reps, warmup=warm)
        t_ours = time_calls(ours_step, reps, warmup=warm)
        rows.append(
            row(
                group,
                f"ours {name} training step",
                t_ours,
                t_ref,
                ref_name=f"ncps {name}",
                target=f">= {target:g}x",
                min_speedup=target,
                notes="ours with per-sample timespans; ncps without (its fastest path)",
            )
        )
    return rows


def _sweep_rows(quick: bool) -> list[dict[str, Any]]:
    from ncps.torch import LTC, CfC
    from ncps.wirings import AutoNCP

    sizes = [19, 64, 256] if quick else [19, 32, 64, 128, 256]
    n = 100 if quick else 2000
    rows = []
    for cell_name, cell in (("CfC", CfC), ("LTC", LTC)):
        for units in sizes:
            torch.manual_seed(0)
            model = cell(_N_IN, AutoNCP(units, _N_OUT, seed=0), batch_first=True)
            ours, ref, policy, _ = _pair(model)
            s32 = policy.runtime(dtype=np.float32)
            obs = np.random.default_rng(0).normal(size=_N_IN)
            t_ref = time_calls(ref, n, warmup=20)
            for label, fn in (("float64", ours), ("float32", lambda s=s32, o=obs: s.step(o, 0.05))):
                r = row(
                    "step latency vs neurons (AutoNCP(N, 2), batch 1)",
                    f"stepper {label} {cell_name}-NCP({units})",
                    time_calls(fn, n, warmup=20),
                    t_ref,
                    ref_name=f"ncps {cell_name}",
                )
                r["plot"] = {
                    "figure": "lnn_step_vs_neurons",
                    "x": units,
                    "x_label": "neurons (AutoNCP wiring, 8 inputs, 2 motor)",
                    "log_x": True,
                    "series": f"stepper {label} {cell_name}",
                    "ref_series": f"ncps {cell_name}",
                }
                rows.append(r)
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """All rows; raises if our stepper disagrees with ncps or a training step is not finite."""
    torch.set_num_threads(1)
    return _stepper_rows(quick) + _export_rows(quick) + _training_rows(quick) + _sweep_rows(quick)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    rows = run(ap.parse_args().quick)
    print(f"{'name':44s} {'ours us':>9s} {'ref':28s} {'ref us':>9s} {'speedup':>8s} {'target':>7s}")
    for r in rows:
        sp = "" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        ref = "" if r["ref_median_s"] is None else f"{r['ref_median_s'] * 1e6:9.1f}"
        flag = {True: "ok", False: "MISS", None: ""}[r["passed"]]
        ours = f"{r['ours_median_s'] * 1e6:9.1f}"
        print(f"{r['name']:44s} {ours} {r['ref_name']:28s} {ref:>9s} {sp:>8s} {flag:>7s}")


if __name__ == "__main__":
    main()
