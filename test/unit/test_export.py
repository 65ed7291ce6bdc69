"""TorchScript and ONNX export: each checked against the torch model, files reload, batch is dynamic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lnn_control.nn.export import StepFunction, _rollout_check, export_onnx, export_torchscript
from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP

ort = pytest.importorskip("onnxruntime")

CONFIGS = {
    "cfc_ncp": dict(cell="cfc", wiring=AutoNCP(19, 2, seed=1)),
    "cfc_dense_mixed_gain": dict(cell="cfc", units=12, mixed_memory=True, n_gains=1, backbone_units=16),
    "cfc_pure_proj": dict(cell="cfc", wiring=AutoNCP(14, 2, seed=2), mode="pure", proj_size=3),
    "ltc_ncp": dict(cell="ltc", wiring=AutoNCP(19, 2, seed=1)),
    "ltc_rk4_mixed": dict(cell="ltc", units=8, solver="rk4", ode_unfolds=2, mixed_memory=True, n_gains=1),
}


def _policy(name: str, dtype: torch.dtype) -> LiquidPolicy:
    torch.manual_seed(0)
    p = LiquidPolicy(6, **CONFIGS[name]).to(dtype).eval()
    rng = np.random.default_rng(0)
    p.set_normalization(rng.normal(size=6), rng.uniform(0.5, 2, 6), rng.normal(size=p.n_commands), None)
    return p


def _sequence(p: LiquidPolicy, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    dtype = p.input_mean.dtype
    return torch.randn(B, T, 6, generator=g, dtype=dtype), torch.rand(
        B, T, generator=g, dtype=dtype
    ) * 0.4 + 0.01


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exports_match_torch_and_reload(tmp_path: Path, name: str, dtype: torch.dtype) -> None:
    p = _policy(name, dtype)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    export_torchscript(p, tmp_path / "step.pt")
    export_onnx(p, tmp_path / "step.onnx")
    # reload both files and roll out with a batch size not used at export time
    B, T = 5, 30
    x, ts = _sequence(p, B, T)
    with torch.no_grad():
        y_ref, h_ref = p(x, ts)
    ts_mod = torch.jit.load(str(tmp_path / "step.pt"))
    sess = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    h_ts = torch.zeros(B, p.state_size, dtype=dtype)
    h_ox = np.zeros((B, p.state_size), dtype=h_ts.numpy().dtype)
    for t in range(T):
        with torch.no_grad():
            y_ts, h_ts = ts_mod(x[:, t], ts[:, t : t + 1], h_ts)
        y_ox, h_ox = sess.run(None, {"x": x[:, t].numpy(), "dt": ts[:, t : t + 1].numpy(), "h": h_ox})
        assert np.abs(y_ts.numpy() - y_ref[:, t].numpy()).max() <= tol
        assert np.abs(y_ox - y_ref[:, t].numpy()).max() <= tol
    assert np.abs(h_ox - h_ref.numpy()).max() <= tol
    # the export left the policy's own maths untouched
    with torch.no_grad():
        torch.testing.assert_close(p(x, ts)[0], y_ref, atol=0, rtol=0)


def test_step_function_is_forward_at_t1() -> None:
    p = _policy("ltc_ncp", torch.float64)
    x, ts = _sequence(p, 3, 1)
    h0 = torch.randn(3, p.state_size, dtype=torch.float64)
    with torch.no_grad():
        y, h = StepFunction(p)(x[:, 0], ts, h0)
        y_ref, h_ref = p(x, ts, hx=h0)
    torch.testing.assert_close(y, y_ref[:, 0], atol=0, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=0, rtol=0)


def test_rollout_check_catches_a_wrong_export() -> None:
    p = _policy("cfc_ncp", torch.float64)

    def off_by_a_little(x: np.ndarray, dt: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            y, hn = StepFunction(p)(torch.as_tensor(x), torch.as_tensor(dt), torch.as_tensor(h))
        return y.numpy() + 1e-4, hn.numpy()

    with pytest.raises(RuntimeError, match="differs from the torch model by 0.0001"):
        _rollout_check(p, off_by_a_little, 1e-6, "test")
    with pytest.raises(ValueError, match="policy must be a LiquidPolicy"):
        StepFunction(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
