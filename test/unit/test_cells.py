"""CfC and LTC cells: exact answers, gradcheck, solver convergence, synapse masks honoured, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lnn_control.nn.cfc_cell import CfC, CfCCell, lecun_tanh
from lnn_control.nn.ltc_cell import LTC, ODE_SOLVERS, LTCCell
from lnn_control.nn.wiring import AutoNCP, NCPWiring, Wiring

pytestmark = pytest.mark.usefixtures("torch_float64_seeded")  # float64, seed 0 (conftest.py)


def _zero_weights_cfc(mode: str, bias: list[float], H: int = 1) -> CfCCell:
    cell = CfCCell(2, H, mode=mode, backbone_layers=0)
    with torch.no_grad():
        cell.w_in.zero_()
        cell.w_rec.zero_()
        cell.bias.copy_(torch.tensor(bias))
    return cell


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@pytest.mark.parametrize("t", [0.01, 0.3, 2.0])
def test_cfc_known_answers(t: float) -> None:
    b1, b2, ta, tb = 0.3, -0.7, 1.5, -0.2
    x, h = torch.randn(1, 2), torch.randn(1, 1)
    gate = _sig(ta * t + tb)
    expected = {
        "default": math.tanh(b1) * (1 - gate) + gate * math.tanh(b2),
        "no_gate": math.tanh(b1) + gate * math.tanh(b2),
    }
    for mode, want in expected.items():
        got = _zero_weights_cfc(mode, [b1, b2, ta, tb])(x, h, t)
        assert got.item() == pytest.approx(want, abs=1e-14)
    pure = _zero_weights_cfc("pure", [b1])
    with torch.no_grad():
        pure.w_tau.fill_(-0.4)
        pure.A.fill_(1.3)
    want = 1.3 - 1.3 * math.exp(-t * (0.4 + abs(b1))) * b1
    assert pure(x, h, t).item() == pytest.approx(want, abs=1e-14)


def test_lecun_tanh_constants() -> None:
    z = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(lecun_tanh(z), 1.7159 * torch.tanh(0.666 * z))


def _one_neuron_ltc(solver: str, unfolds: int) -> LTCCell:
    w = Wiring(1, 1, [[0]], [[1]])
    cell = LTCCell(w, 1, ode_unfolds=unfolds, solver=solver, epsilon=0.0, positive="none", input_mapping=None)
    with torch.no_grad():
        cell.gleak.fill_(0.8)
        cell.vleak.fill_(0.1)
        cell.cm.fill_(0.5)
        cell.sensory_w.fill_(0.6)
        cell.sensory_sigma.fill_(4.0)
        cell.sensory_mu.fill_(0.2)
        cell.sensory_erev.fill_(1.0)
    return cell


def test_ltc_linear_ode_exact_solution() -> None:
    """One neuron driven by a constant input: the ODE is linear with a closed-form solution."""
    x, v0, t = 0.7, -0.3, 0.9
    s = 0.6 * _sig(4.0 * (x - 0.2))
    a, b = 0.8 * 0.1 + s * 1.0, 0.8 + s
    v_inf = a / b
    exact = v_inf + (v0 - v_inf) * math.exp(-b * t / 0.5)
    xt, vt = torch.tensor([[x]]), torch.tensor([[v0]])
    # fused (semi-implicit) = implicit Euler on this linear ODE: v_n = v_inf + (v0 - v_inf) (c / (c + b))^n
    for n in (1, 6, 20):
        c = 0.5 * n / t
        _, v = _one_neuron_ltc("fused", n)(xt, vt, t)
        assert v.item() == pytest.approx(v_inf + (v0 - v_inf) * (c / (c + b)) ** n, abs=1e-14)
    # RK4 converges at fourth order: doubling unfolds divides the error by ~16
    errs = [abs(_one_neuron_ltc("rk4", n)(xt, vt, t)[1].item() - exact) for n in (20, 40)]
    assert errs[1] < 1e-7 and 14 < errs[0] / errs[1] < 18
    # Euler converges at first order: doubling unfolds halves the error
    errs = [abs(_one_neuron_ltc("euler", n)(xt, vt, t)[1].item() - exact) for n in (50, 100)]
    assert 1.8 < errs[0] / errs[1] < 2.2


def test_ltc_solvers_agree_on_ncp_when_refined() -> None:
    w = AutoNCP(12, 2, seed=3)
    cells = {
        s: LTCCell(w.copy(), 4, ode_unfolds=n, solver=s)
        for s, n in (("rk4", 200), ("euler", 2000), ("fused", 4000))
    }
    state = cells["rk4"].state_dict()
    x, v = torch.randn(3, 4), torch.randn(3, 12) * 0.3
    ts = torch.tensor([[0.2], [0.5], [1.0]])
    out = {}
    for s, cell in cells.items():
        cell.load_state_dict(state)
        out[s] = cell(x, v, ts)[1]
    torch.testing.assert_close(out["euler"], out["rk4"], atol=2e-3, rtol=0)
    torch.testing.assert_close(out["fused"], out["rk4"], atol=2e-3, rtol=0)
    assert set(ODE_SOLVERS) == {"fused", "euler", "rk4"}


def test_ltc_honours_every_synapse() -> None:
    """With one unfold, dv'_j/dv_i = 0 for i != j without a synapse i -> j, and != 0 with one."""
    w = AutoNCP(15, 2, seed=1)
    cell = LTCCell(w, 5, ode_unfolds=1)
    x = torch.randn(1, 5)
    jac = torch.autograd.functional.jacobian(lambda v: cell(x, v, 0.5)[1][0], torch.randn(1, 15))[:, 0, :]
    off = ~np.eye(15, dtype=bool)
    has = w.adjacency.T != 0  # [j, i]
    assert (jac.numpy()[off & ~has] == 0).all()
    assert (jac.numpy()[has] != 0).all()
    jx = torch.autograd.functional.jacobian(lambda xx: cell(xx, torch.zeros(1, 15), 0.5)[1][0], x)[:, 0, :]
    assert ((jx.numpy() != 0) == (w.sensory_adjacency.T != 0)).all()  # type: ignore[union-attr]


def test_wired_cfc_honours_sparse_recurrent_synapses() -> None:
    """Strict wiring: command neurons see only their recurrent command synapses (ncps issue 53)."""
    w = AutoNCP(19, 2, seed=5).build(6)
    net = CfC(6, w)
    inter, command, motor = w.layers
    cmd = net.cells[1]
    h = torch.randn(1, len(command))
    inp = torch.randn(1, len(inter))
    jac_h = torch.autograd.functional.jacobian(lambda hh: cmd(inp, hh, 0.3)[0], h)[:, 0, :]
    rec = w.adjacency[np.ix_(command, command)].T != 0
    assert ((jac_h.numpy() != 0) == rec).all()
    jac_in = torch.autograd.functional.jacobian(lambda ii: cmd(ii, h, 0.3)[0], inp)[:, 0, :]
    assert ((jac_in.numpy() != 0) == (w.adjacency[np.ix_(inter, command)].T != 0)).all()
    # ncps-compatible mode keeps ncps's dense intra-layer recurrence and dense time gates
    ncps_like = CfC(6, w, synapses="ncps")
    jac_n = torch.autograd.functional.jacobian(lambda hh: ncps_like.cells[1](inp, hh, 0.3)[0], h)[:, 0, :]
    assert (jac_n.numpy() != 0).all()


def test_wired_cfc_rejects_wiring_it_cannot_honour() -> None:
    adj = np.zeros((4, 4), int)
    adj[3, 0] = 1  # layer 0 -> layer 2 skip
    adj[3, 2] = adj[2, 1] = adj[1, 0] = 1
    w = Wiring(4, 1, adj, np.array([[0, 0, 0, 1]]), layers=[[3], [2], [1], [0]])
    CfC(1, w.copy(), synapses="ncps")  # ncps ignores it silently
    with pytest.raises(ValueError, match="cannot honour synapse 3 -> 0"):
        CfC(1, w)


def test_gradcheck_cfc_and_ltc() -> None:
    w = NCPWiring(3, 3, 2, 2, 2, 2, 2, seed=0)
    for net in (CfC(2, w.copy()), CfC(2, 4, backbone_units=5, mixed_memory=True), CfC(2, 3, mode="pure")):
        x, ts = torch.randn(2, 3, 2, requires_grad=True), (torch.rand(2, 3) + 0.1).requires_grad_()
        h0 = torch.randn(2, net.state_size, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b, c, n=net: n(a, b, c)[0], (x, ts, h0))
    for solver in ODE_SOLVERS:
        net = LTC(2, w.copy(), ode_unfolds=2, solver=solver)
        x, ts = torch.randn(2, 3, 2, requires_grad=True), (torch.rand(2, 3) + 0.1).requires_grad_()
        h0 = torch.randn(2, 8, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b, c, n=net: n(a, b, c)[0], (x, ts, h0))
        params = dict(net.named_parameters())
        for name in ("cell.w", "cell.sigma", "cell.cm"):
            p = params[name].detach().clone().requires_grad_()
            args = (x.detach(), ts.detach())
            fn = lambda q, n=net, k=name, a=args: torch.func.functional_call(n, {k: q}, a)[0]  # noqa: E731
            assert torch.autograd.gradcheck(fn, (p,))


def test_positive_parameters() -> None:
    w = AutoNCP(10, 2, seed=0)
    cell = LTCCell(w, 3, positive="none")
    with torch.no_grad():
        cell.w.fill_(-1.0)
        cell.cm.fill_(-0.5)
    cell.apply_constraints()
    assert (cell.w == 0).all() and (cell.cm == 0).all()
    soft = LTCCell(w.copy(), 3)
    with torch.no_grad():
        soft.w.fill_(-30.0)  # softplus keeps conductances positive and tiny
    syn = soft.synapses()
    assert (syn.scatter[:, 10:].sum(0) > 0).any() and (syn.scatter[:, 10:] >= 0).all()


def test_errors_at_construction() -> None:
    w = AutoNCP(10, 2)
    with pytest.raises(ValueError, match="mode 'fast' is not a CfC mode"):
        CfCCell(2, 3, mode="fast")
    with pytest.raises(ValueError, match="backbone_activation 'swish'"):
        CfCCell(2, 3, backbone_activation="swish")
    with pytest.raises(ValueError, match="backbone_dropout"):
        CfCCell(2, 3, backbone_dropout=1.0)
    with pytest.raises(ValueError, match="synapses 'all'"):
        CfC(2, w, synapses="all")
    with pytest.raises(ValueError, match="solver 'dopri5'"):
        LTCCell(w, 2, solver="dopri5")
    with pytest.raises(ValueError, match="ode_unfolds must be an int >= 1"):
        LTCCell(w, 2, ode_unfolds=0)
    with pytest.raises(ValueError, match="positive 'abs'"):
        LTCCell(w, 2, positive="abs")
    with pytest.raises(ValueError, match="input_mapping 'log'"):
        LTCCell(w, 2, input_mapping="log")
    with pytest.raises(ValueError, match="units must be a positive int or a Wiring"):
        LTC(2, 0)
