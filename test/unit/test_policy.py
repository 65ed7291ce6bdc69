"""LiquidPolicy: per-sample timespans with batch > 1, masks, normalisation, gain head, configs, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP, FullyConnected, Wiring

pytestmark = pytest.mark.usefixtures("torch_float64_seeded")  # float64, seed 0 (conftest.py)


def _policies() -> list[LiquidPolicy]:
    return [
        LiquidPolicy(5, "cfc", AutoNCP(14, 2, seed=1)),
        LiquidPolicy(5, "cfc", None, 8, mixed_memory=True, mode="no_gate", backbone_units=16),
        LiquidPolicy(5, "ltc", AutoNCP(14, 2, seed=1), ode_unfolds=3),
        LiquidPolicy(5, "ltc", FullyConnected(6, 2), mixed_memory=True, solver="rk4", ode_unfolds=2),
    ]


@pytest.mark.parametrize("idx", range(4))
def test_batch_with_per_sample_timespans_equals_samples_alone(idx: int) -> None:
    """ncps issues 81-83: per-sample elapsed times must not mix across the batch."""
    p = _policies()[idx].eval()
    B, T = 4, 20
    x = torch.randn(B, T, 5)
    ts = torch.rand(B, T) * 0.9 + 0.05
    y, h = p(x, ts)
    for b in range(B):
        yb, hb = p(x[b : b + 1], ts[b : b + 1])
        torch.testing.assert_close(y[b : b + 1], yb, atol=1e-12, rtol=0)
        torch.testing.assert_close(h[b : b + 1], hb, atol=1e-12, rtol=0)
    # a different dt in one sample changes only that sample
    ts2 = ts.clone()
    ts2[1] *= 2
    y2, _ = p(x, ts2)
    assert torch.equal(y2[0], y[0]) and not torch.allclose(y2[1], y[1])


def test_timespan_forms_agree() -> None:
    p = _policies()[0]
    x = torch.randn(2, 6, 5)
    y1, _ = p(x, 0.3)
    y2, _ = p(x, torch.full((2, 6), 0.3))
    y3, _ = p(x, torch.full((2, 6, 1), 0.3))
    torch.testing.assert_close(y1, y2, atol=0, rtol=0)
    torch.testing.assert_close(y1, y3, atol=0, rtol=0)
    torch.testing.assert_close(p(x)[0], p(x, 1.0)[0], atol=0, rtol=0)


@pytest.mark.parametrize("idx", range(4))
def test_mask_equals_unpadded_sequences(idx: int) -> None:
    p = _policies()[idx]
    lengths = [7, 3, 5]
    T = max(lengths)
    x = torch.randn(3, T, 5)
    ts = torch.rand(3, T) + 0.1
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    y, h = p(x, ts, mask=mask)
    for b, n in enumerate(lengths):
        yb, hb = p(x[b : b + 1, :n], ts[b : b + 1, :n])
        torch.testing.assert_close(y[b : b + 1, :n], yb, atol=1e-12, rtol=0)
        torch.testing.assert_close(h[b : b + 1], hb, atol=1e-12, rtol=0)
        assert (y[b, n:] == 0).all()


def test_hidden_state_carries_across_calls() -> None:
    p = _policies()[2]
    x, ts = torch.randn(2, 10, 5), torch.rand(2, 10) + 0.1
    y, _ = p(x, ts)
    ya, ha = p(x[:, :4], ts[:, :4])
    yb, _ = p(x[:, 4:], ts[:, 4:], hx=ha)
    torch.testing.assert_close(torch.cat([ya, yb], 1), y, atol=1e-13, rtol=0)


def test_normalisation_and_gain_head() -> None:
    p = LiquidPolicy(
        4, "cfc", AutoNCP(12, 3, seed=2), n_gains=1, gain_scale=3.0, output_names=["v", "w"], gain_names=["k"]
    )
    x, ts = torch.randn(2, 5, 4) * 3 + 1, torch.rand(2, 5) + 0.1
    raw = LiquidPolicy.from_config(p.get_config())
    raw.load_state_dict(p.state_dict())
    mean, std = np.array([1.0, -2.0, 0.5, 0.0]), np.array([2.0, 0.5, 1.0, 3.0])
    om, os_ = np.array([0.3, -0.1]), np.array([2.0, 0.7])
    p.set_normalization(mean, std, om, os_)
    y, _ = p(x, ts)
    z, _ = raw(x, ts)  # un-normalised network outputs... on the normalised input:
    zn, _ = raw((x - torch.tensor(mean)) / torch.tensor(std), ts)
    assert not torch.allclose(y[..., :2], z[..., :2])
    torch.testing.assert_close(
        y[..., :2], zn[..., :2] * torch.tensor(os_) + torch.tensor(om), atol=1e-13, rtol=0
    )
    # gains: raw's gain output is 3 sigmoid(net), independent of output normalisation
    torch.testing.assert_close(y[..., 2], zn[..., 2], atol=1e-13, rtol=0)
    assert ((y[..., 2] > 0) & (y[..., 2] < 3.0)).all()
    with pytest.raises(ValueError, match="input_std must be > 0"):
        p.set_normalization(input_std=np.zeros(4))
    with pytest.raises(ValueError, match="output_mean must be 2 finite values"):
        p.set_normalization(output_mean=np.zeros(3))


def test_config_round_trip_rebuilds_same_function() -> None:
    for p in _policies() + [LiquidPolicy(3, "cfc", None, 6, proj_size=2, n_gains=1, backbone_layers=2)]:
        cfg = json.loads(json.dumps(p.get_config()))
        q = LiquidPolicy.from_config(cfg)
        q.load_state_dict(p.state_dict())
        x = torch.randn(2, 4, p.n_inputs)
        torch.testing.assert_close(q(x, 0.2)[0], p(x, 0.2)[0], atol=0, rtol=0)
        assert q.get_config() == cfg


def test_policy_owns_a_copy_of_the_wiring() -> None:
    w = AutoNCP(12, 2, seed=0)
    p = LiquidPolicy(3, "cfc", w)
    assert not w.is_built()  # the caller's object is untouched
    assert p.get_config()["wiring"]["seed"] == 0 and p.get_config()["wiring"]["input_dim"] == 3


def test_training_reduces_loss() -> None:
    """Gradients flow through every piece: a few Adam steps fit a smooth target much better."""
    p = LiquidPolicy(2, "cfc", AutoNCP(10, 1, seed=0))
    t = torch.linspace(0, 6, 40)
    x = torch.stack([torch.sin(t), torch.cos(t)], -1)[None].repeat(4, 1, 1)
    target = torch.sin(t + 0.5)[None, :, None].repeat(4, 1, 1)
    opt = torch.optim.Adam(p.parameters(), lr=0.03)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = ((p(x, 0.15)[0] - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_bad_input_names_the_argument() -> None:
    p = _policies()[0]
    x = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match=r"x must be a tensor \(batch, time, 5\)"):
        p(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="x must be a tensor"):
        p(torch.randn(3, 5))
    bad = x.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        p(bad)
    for ts in (
        torch.zeros(2, 3),
        torch.full((2, 3), -0.1),
        torch.full((2, 3), float("inf")),
        torch.full((2, 3), float("nan")),
    ):
        with pytest.raises(ValueError, match="timespans must be finite and > 0"):
            p(x, ts)
    with pytest.raises(ValueError, match=r"timespans must be a scalar, \(2, 3\)"):
        p(x, torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"hx must be a tensor \(2, 14\)"):
        p(x, 0.1, hx=torch.zeros(2, 13))
    with pytest.raises(ValueError, match="hx contains NaN"):
        p(x, 0.1, hx=torch.full((2, 14), float("nan")))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor \(2, 3\)"):
        p(x, 0.1, mask=torch.ones(2, 4, dtype=torch.bool))


def test_bad_construction_says_what_to_fix() -> None:
    with pytest.raises(ValueError, match="cell 'gru'"):
        LiquidPolicy(3, "gru", units=4)
    with pytest.raises(ValueError, match="give a wiring or a number of units"):
        LiquidPolicy(3, "cfc")
    with pytest.raises(ValueError, match="n_gains must be an int in"):
        LiquidPolicy(3, "cfc", AutoNCP(10, 2), n_gains=2)
    with pytest.raises(ValueError, match="output_names has 1 names, expected 2"):
        LiquidPolicy(3, "cfc", AutoNCP(10, 2), output_names=["v"])
    with pytest.raises(ValueError, match="gain_scale must be finite and > 0"):
        LiquidPolicy(3, "cfc", AutoNCP(10, 2), n_gains=1, gain_scale=0.0)
    with pytest.raises(ValueError, match="n_inputs must be a positive int"):
        LiquidPolicy(0, "cfc", units=3)
    with pytest.raises(ValueError, match="unknown wiring type"):
        LiquidPolicy(3, "cfc", {"type": "grid"})
    with pytest.raises(ValueError, match="bad policy config"):
        LiquidPolicy.from_config({"cell": "cfc", "n_inputs": 3, "units": 4, "colour": "red"})
    with pytest.raises(ValueError, match="custom Wiring needs sensory_adjacency"):
        LiquidPolicy(3, "ltc", Wiring(4, 1))
