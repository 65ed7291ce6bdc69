"""Export a trained LiquidPolicy as a single-step function for embedded targets (ncps issues 20, 21).

The exported function is one control step of batch B:

    (x (B, n_inputs) raw, dt (B, 1) s, h (B, state_size)) -> (y (B, n_outputs) raw, h' (B, state_size))

with normalisation and the gain head inside, like :meth:`LiquidPolicy.forward` for T = 1 (no
input checks: the caller validates, as the stepper does). Two formats:

- TorchScript (:func:`export_torchscript`): ``torch.jit.trace`` of :class:`StepFunction`;
- ONNX (:func:`export_onnx`, opset 17, dynamic batch): runs in onnxruntime, C/C++, etc.

Each export is checked against the torch model before it is returned: a seeded random rollout
(irregular dt, state fed back) through both, max abs difference <= ``atol``; a mismatch raises
``RuntimeError`` saying how large it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from lnn_control.nn.policy import LiquidPolicy

__all__ = ["StepFunction", "export_onnx", "export_torchscript"]


class StepFunction(nn.Module):
    """One step of ``policy`` as ``forward(x (B, n_in), dt (B, 1), h (B, S)) -> (y (B, n_out), h')``."""

    def __init__(self, policy: LiquidPolicy) -> None:
        super().__init__()
        if not isinstance(policy, LiquidPolicy):
            raise ValueError(f"policy must be a LiquidPolicy, got {type(policy).__name__}")
        self.policy = policy

    def forward(
        self, x: torch.Tensor, dt: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.policy
        z = (x - p.input_mean) / p.input_std
        y, h_new = p.net(z.unsqueeze(1), dt.reshape(-1, 1), h)
        y = y[:, 0]
        if p.proj is not None:
            y = p.proj(y)
        return p._head(y), h_new


def _elementary_softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus as torch computes it (threshold 20) from Exp/Log ops every ONNX runtime has in float64."""
    return torch.where(x > 20.0, x, torch.log1p(torch.exp(torch.clamp(x, max=20.0))))


@contextlib.contextmanager
def _exportable(policy: LiquidPolicy) -> Iterator[None]:
    """Swap the LTC's softplus for elementary ops while tracing (onnxruntime has no float64 Softplus)."""
    cell = getattr(policy.net, "cell", None)
    if cell is None or cell.positive_name != "softplus":
        yield
        return
    cell.positive = _elementary_softplus
    try:
        yield
    finally:
        cell.positive = torch.nn.functional.softplus


def _example(policy: LiquidPolicy, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dtype = policy.input_mean.dtype
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, policy.n_inputs, generator=g, dtype=dtype)
    dt = torch.rand(batch, 1, generator=g, dtype=dtype) * 0.2 + 0.01
    return x, dt, torch.zeros(batch, policy.state_size, dtype=dtype)


def _rollout_check(policy: LiquidPolicy, step: Any, atol: float, name: str, steps: int = 50) -> float:
    """Max |exported - torch| over a seeded rollout (batch 3, irregular dt, state fed back)."""
    rng = np.random.default_rng(0)
    dtype = policy.input_mean.dtype
    B = 3
    x = torch.as_tensor(rng.normal(size=(B, steps, policy.n_inputs)) * 2, dtype=dtype)
    ts = torch.as_tensor(rng.uniform(0.005, 0.5, size=(B, steps)), dtype=dtype)
    with torch.no_grad():
        y_ref, h_ref = policy(x, ts)
    h = np.zeros((B, policy.state_size))
    err = 0.0
    for t in range(steps):
        y, h = step(x[:, t].numpy(), ts[:, t : t + 1].numpy(), h)
        err = max(err, float(np.abs(np.asarray(y) - y_ref[:, t].numpy()).max()))
    err = max(err, float(np.abs(np.asarray(h) - h_ref.numpy()).max()))
    if not err <= atol:
        raise RuntimeError(f"{name} export differs from the torch model by {err:.3g} (> atol {atol:.3g})")
    return err


def export_torchscript(
    policy: LiquidPolicy, path: Any = None, atol: float | None = None
) -> torch.jit.ScriptModule:
    """Trace :class:`StepFunction` of ``policy`` (in eval mode); save to ``path`` if given.

    Args:
        policy: the trained policy (its dtype is kept).
        path: optional ``.pt`` file (load with ``torch.jit.load``).
        atol: max allowed difference to the torch model (default 1e-9 float64, 1e-5 float32).
    Returns the traced module, already checked against the torch model.
    """
    policy = policy.eval()
    fn = StepFunction(policy).eval()
    with torch.no_grad(), _exportable(policy), warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the format C++/libtorch targets load
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        traced = torch.jit.trace(fn, _example(policy), check_trace=False)
    dtype = policy.input_mean.dtype
    tol = atol if atol is not None else (1e-9 if dtype == torch.float64 else 1e-5)

    def step(x: np.ndarray, dt: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            y, hn = traced(torch.as_tensor(x), torch.as_tensor(dt), torch.as_tensor(h, dtype=dtype))
        return y.numpy(), hn.numpy()

    _rollout_check(policy, step, tol, "TorchScript")
    if path is not None:
        traced.save(os.fspath(path))
    return traced


def export_onnx(policy: LiquidPolicy, path: Any = None, opset: int = 17, atol: float | None = None) -> bytes:
    """Export :class:`StepFunction` of ``policy`` to ONNX (inputs ``x, dt, h``; outputs ``y, h_next``;
    dynamic batch), check it in onnxruntime against the torch model, and save to ``path`` if given.

    Returns the serialised model bytes. ``atol`` defaults to 1e-9 (float64) / 1e-5 (float32).
    """
    policy = policy.eval()
    fn = StepFunction(policy).eval()
    buf = io.BytesIO()
    dyn = {
        "x": {0: "batch"},
        "dt": {0: "batch"},
        "h": {0: "batch"},
        "y": {0: "batch"},
        "h_next": {0: "batch"},
    }
    with torch.no_grad(), _exportable(policy), warnings.catch_warnings():
        # gather indices are synapse lists, never negative: the exporter's generic warning does not apply
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        # the torch.export-based exporter needs onnxscript (not a dependency); the legacy one is exact here
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            fn,
            _example(policy),
            buf,  # type: ignore[arg-type]  # the legacy exporter takes file objects
            input_names=["x", "dt", "h"],
            output_names=["y", "h_next"],
            dynamic_axes=dyn,
            opset_version=opset,
            dynamo=False,
        )
    data = buf.getvalue()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    dtype = policy.input_mean.dtype
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    tol = atol if atol is not None else (1e-9 if dtype == torch.float64 else 1e-5)

    def step(x: np.ndarray, dt: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y, hn = sess.run(None, {"x": x.astype(np_dtype), "dt": dt.astype(np_dtype), "h": h.astype(np_dtype)})
        return y, hn

    _rollout_check(policy, step, tol, "ONNX")
    if path is not None:
        with open(os.fspath(path), "wb") as f:
            f.write(data)
    return data
