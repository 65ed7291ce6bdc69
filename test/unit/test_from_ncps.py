"""from_ncps: identical outputs to ncps 1.0.1 (float64, 1,000 steps, irregular per-sample dt)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from lnn_control.nn.policy import LiquidPolicy, from_ncps

ncps_torch = pytest.importorskip("ncps.torch")
ncps_wirings = pytest.importorskip("ncps.wirings")
CfC, LTC = ncps_torch.CfC, ncps_torch.LTC
NCP, AutoNCP, FullyConnected, Random = (
    ncps_wirings.NCP,
    ncps_wirings.AutoNCP,
    ncps_wirings.FullyConnected,
    ncps_wirings.Random,
)


pytestmark = pytest.mark.usefixtures("torch_float64_seeded")  # float64, seed 0 (conftest.py)


def ncps_reference(
    m: torch.nn.Module, x: torch.Tensor, ts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ncps's own cells stepped with (B, 1) elapsed times (its sequence loop squeezes them to (B,),
    which is wrong for batch > 1: issues 81-83), so the reference is ncps's maths, per sample."""
    B, T, _ = x.shape
    h = torch.zeros(B, m.state_size)
    c = torch.zeros(B, m.state_size)
    outs = []
    with torch.no_grad():
        for t in range(T):
            if m.use_mixed:
                h, c = m.lstm(x[:, t], (h, c))
            o, h = m.rnn_cell(x[:, t], h, ts[:, t : t + 1])
            outs.append(m.fc(o) if hasattr(m, "fc") else o)
    return torch.stack(outs, 1), (torch.cat([h, c], 1) if m.use_mixed else h)


CASES: dict[str, Callable[[], torch.nn.Module]] = {
    "cfc_ncp19": lambda: CfC(8, AutoNCP(19, 2, seed=1)),
    "cfc_ncp19_no_gate_proj": lambda: CfC(8, AutoNCP(19, 2, seed=2), mode="no_gate", proj_size=3),
    "cfc_ncp_pure_mixed": lambda: CfC(8, AutoNCP(16, 3, seed=3), mode="pure", mixed_memory=True),
    "cfc_ncp_explicit": lambda: CfC(6, NCP(6, 4, 2, 3, 2, 4, 2, seed=5)),
    "cfc_dense": lambda: CfC(8, 16),
    "cfc_dense_pure_silu2": lambda: CfC(
        8, 12, mode="pure", activation="silu", backbone_layers=2, backbone_units=20
    ),
    "cfc_dense_nogate_mixed_proj": lambda: CfC(8, 10, mode="no_gate", mixed_memory=True, proj_size=2),
    "cfc_dense_no_backbone_relu": lambda: CfC(8, 10, backbone_layers=0, activation="relu"),
    "cfc_dense_gelu_dropout": lambda: CfC(8, 10, activation="gelu", backbone_layers=3, backbone_dropout=0.2),
    "cfc_dense_tanh": lambda: CfC(8, 10, activation="tanh", backbone_units=7),
    "ltc_ncp19": lambda: LTC(8, AutoNCP(19, 2, seed=1)),
    "ltc_ncp_mixed": lambda: LTC(8, AutoNCP(15, 2, seed=4), mixed_memory=True),
    "ltc_fc": lambda: LTC(8, 10),
    "ltc_fc_wiring_clip": lambda: LTC(
        8, FullyConnected(9, 3, erev_init_seed=2), implicit_param_constraints=False
    ),
    "ltc_random_linear": lambda: LTC(
        5, Random(8, 2, sparsity_level=0.5, random_seed=3), input_mapping="linear"
    ),
    "ltc_ncp_unfolds3_nomap": lambda: LTC(
        8, AutoNCP(12, 2), ode_unfolds=3, output_mapping=None, input_mapping=None
    ),
}


def _perturb(m: torch.nn.Module) -> None:
    """Trained-looking weights: move every parameter off its initial value (seeded)."""
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_outputs_as_ncps_batch_with_irregular_dt(name: str) -> None:
    m = CASES[name]().double().eval()
    _perturb(m)
    if isinstance(m, LTC) and not m.rnn_cell._implicit_param_constraints:
        m.rnn_cell.apply_weight_constraints()
    policy = from_ncps(m).eval()
    n_in = m.input_size
    rng = np.random.default_rng(7)
    B, T = 3, 1000
    x = torch.tensor(rng.normal(size=(B, T, n_in)))
    ts = torch.tensor(rng.uniform(0.01, 0.8, size=(B, T)))
    y_ref, h_ref = ncps_reference(m, x, ts)
    with torch.no_grad():
        y, h = policy(x, ts)
    assert y.shape == y_ref.shape
    assert (y - y_ref).abs().max().item() <= 1e-6
    assert (h - h_ref).abs().max().item() <= 1e-6
    # and the torch-free stepper gives ncps's numbers too (sample 0)
    stepper = policy.runtime()
    ys = np.stack([stepper.step(x[0, t].numpy(), float(ts[0, t])) for t in range(T)])
    assert np.abs(ys - y_ref[0].numpy()).max() <= 1e-6


@pytest.mark.parametrize("name", ["cfc_ncp19", "ltc_ncp19", "cfc_dense"])
def test_module_call_batch_one(name: str) -> None:
    """ncps's own forward (its loop works at batch 1) against ours, same call form."""
    m = CASES[name]().double().eval()
    _perturb(m)
    policy = from_ncps(m)
    x = torch.randn(1, 200, 8)
    ts = torch.rand(1, 200) + 0.05
    with torch.no_grad():
        y_ref, h_ref = m(x, timespans=ts)
        y, h = policy(x, ts)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)


def test_wiring_converted_to_named_class() -> None:
    p = from_ncps(CfC(8, AutoNCP(19, 2, seed=9)))
    cfg = p.get_config()
    assert cfg["wiring"]["type"] == "auto_ncp" and cfg["wiring"]["seed"] == 9
    assert cfg["synapses"] == "ncps"
    assert isinstance(p, LiquidPolicy)
    assert p(torch.randn(1, 2, 8), 0.1)[0].dtype == torch.float32  # the module's dtype
    ltc = from_ncps(LTC(8, 10)).get_config()
    assert ltc["wiring"]["type"] == "fully_connected" and ltc["positive"] == "softplus"


def test_rejects_other_modules() -> None:
    with pytest.raises(ValueError, match="takes an ncps.torch CfC or LTC"):
        from_ncps(torch.nn.LSTM(3, 4))
