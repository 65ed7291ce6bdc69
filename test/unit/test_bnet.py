"""BarrierNet head for the unicycle (barriernet.bnet) and the BarrierNet-effect pipeline."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest
import torch

from barriernet.bnet import BarrierNetHead, DiscObstacle, UnicycleBarrierNet, unicycle_hocbf_rows
from barriernet.qp import solve_qp
from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP

ROOT = pathlib.Path(__file__).resolve().parents[2]
OBS = [DiscObstacle(2.0, 0.0, 0.6), DiscObstacle(0.5, 1.5, 0.4)]


def _states(n: int, rng: np.random.Generator, obstacles=OBS) -> torch.Tensor:
    """Random unicycle states outside every obstacle."""
    out: list[np.ndarray] = []
    while len(out) < n:
        x = rng.uniform([-1.0, -1.5, -np.pi, -0.5], [4.0, 2.5, np.pi, 1.5])
        if all(o.barrier(x[0], x[1]) > 0.05 for o in obstacles):
            out.append(x)
    return torch.tensor(np.array(out))


def _rk4(x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
    def f(s: np.ndarray) -> np.ndarray:
        return np.array([s[3] * np.cos(s[2]), s[3] * np.sin(s[2]), u[0], u[1]])

    k1 = f(x)
    k2 = f(x + dt / 2 * k1)
    k3 = f(x + dt / 2 * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def test_rows_are_the_hocbf_of_the_unicycle() -> None:
    """b_dot and b_ddot = Lf^2 b + Lg Lf b u agree with finite differences along the true flow."""
    rng = np.random.default_rng(0)
    obs = OBS[:1]
    centers = torch.tensor([[obs[0].x, obs[0].y]], dtype=torch.float64)
    radii = torch.tensor([obs[0].radius], dtype=torch.float64)
    x = _states(20, rng, obs)
    p1 = torch.full((20, 1), 1.5, dtype=torch.float64)
    p2 = torch.full((20, 1), 0.5, dtype=torch.float64)
    G, h, b = unicycle_hocbf_rows(x, centers, radii, p1, p2)
    # Isolate the pieces: h = Lf2 + (p1 + p2) b_dot + p1 p2 b with two gain pairs.
    _, h2, _ = unicycle_hocbf_rows(x, centers, radii, p1 * 2, p2 * 2)
    eps = 1e-4
    for i in range(20):
        xi = x[i].numpy()
        u = rng.uniform(-2, 2, 2)

        def bar(s: np.ndarray) -> float:
            return float(obs[0].barrier(s[0], s[1]))

        xp, xm = _rk4(xi, u, eps), _rk4(xi, u, -eps)
        b_dot = (bar(xp) - bar(xm)) / (2 * eps)
        b_ddot = (bar(xp) - 2 * bar(xi) + bar(xm)) / eps**2
        assert float(b[i, 0]) == pytest.approx(bar(xi), abs=1e-12)
        # h(p) = Lf2 + s b_dot + m b with s = p1 + p2 = 2, m = p1 p2 = 0.75; h(2p): s = 4, m = 3.
        lf2 = 2 * xi[3] ** 2
        assert float(h[i, 0]) == pytest.approx(lf2 + 2.0 * b_dot + 0.75 * bar(xi), abs=1e-6)
        assert float(h2[i, 0]) == pytest.approx(lf2 + 4.0 * b_dot + 3.0 * bar(xi), abs=1e-6)
        # G = -Lg Lf b, so b_ddot = Lf2 - G u.
        assert lf2 - float(G[i, 0] @ torch.tensor(u)) == pytest.approx(b_ddot, abs=1e-4)


def _head_inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = _states(n, rng)
    u_ref = torch.tensor(rng.uniform(-4, 4, (n, 2)))
    gains = torch.tensor(rng.uniform(0.05, 4.0, (n, 4)))
    return x, u_ref, gains


def test_output_satisfies_every_hocbf_row_and_matches_a_reference_qp() -> None:
    head = BarrierNetHead(OBS, control_weights=(1.0, 2.0)).double()
    x, u_ref, gains = _head_inputs(200, seed=1)
    with torch.no_grad():
        u = head(x, u_ref, gains)
        G, h, _ = head.rows(x, gains)
    lhs = (G @ u.unsqueeze(-1)).squeeze(-1)
    assert bool((lhs <= h + 1e-6 * (1 + h.abs())).all())
    active = 0
    Q = np.diag([1.0, 2.0])
    for i in range(200):
        ref = solve_qp(Q, -Q @ u_ref[i].numpy(), G[i].numpy(), h[i].numpy())
        assert ref.status == "optimal" and ref.x is not None
        assert np.allclose(u[i].numpy(), ref.x, atol=1e-5, rtol=1e-5)
        if (G[i] @ u_ref[i] > h[i]).any():
            active += 1
        else:  # the reference is already safe: the layer passes it through
            assert np.allclose(u[i].numpy(), u_ref[i].numpy(), atol=1e-6)
    assert 20 < active < 180  # both cases were exercised


def test_gradients_flow_from_the_loss_through_the_qp_to_the_network() -> None:
    torch.manual_seed(0)
    wiring = AutoNCP(12, 4, seed=3)
    backbone = LiquidPolicy(4, "cfc", wiring, proj_size=6, n_gains=4, backbone_units=8).double()
    model = UnicycleBarrierNet(backbone, BarrierNetHead(OBS)).double()
    rng = np.random.default_rng(2)
    x = _states(16 * 5, rng).reshape(16, 5, 4)
    target = torch.tensor(rng.normal(size=(16, 5, 2)))
    u, _, aux = model(x, 0.05)
    assert u.shape == (16, 5, 2) and aux["gains"].shape == (16, 5, 4)
    G, h, _ = model.head.rows(x.reshape(-1, 4), aux["gains"].reshape(-1, 4).detach())
    assert bool((G @ aux["u_ref"].reshape(-1, 2, 1).detach()).squeeze(-1).gt(h).any())  # some rows active
    loss = ((u - target) ** 2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert backbone.proj is not None and backbone.proj.weight.grad is not None
    assert float(backbone.proj.weight.grad[2:].abs().sum()) > 0  # the gain outputs learn through the QP


def test_head_gradients_match_finite_differences() -> None:
    head = BarrierNetHead(OBS[:1]).double()
    rng = np.random.default_rng(3)
    x = _states(4, rng, OBS[:1])
    gains = torch.tensor(rng.uniform(0.2, 2.0, (4, 2)), requires_grad=True)
    G, h, _ = head.rows(x, gains.detach())
    g = G[:, 0]
    # References along G beyond the row (active) in the first three samples, random in the last.
    push = g * (h.clamp(min=0) / (g * g).sum(-1, keepdim=True) + 0.5)
    u_ref = torch.cat([push[:3], torch.tensor(rng.uniform(-3, 3, (1, 2)))]).requires_grad_(True)
    assert bool(((G @ u_ref.detach().unsqueeze(-1)).squeeze(-1)[:3] > h[:3]).all())
    torch.autograd.gradcheck(lambda a, g: head(x, a, g), (u_ref, gains), eps=1e-6, atol=1e-4, rtol=1e-3)


def test_head_keeps_an_adversarial_reference_out_of_the_obstacle_in_closed_loop() -> None:
    """A reference that steers at the obstacle's centre and accelerates enters the disc alone,
    never through the head (fixed gains, 20 Hz zero-order hold, RK4 in between).

    The HOCBF keeps b >= 0 only from starts in its safe set, b >= 0 and psi1 = b_dot + p1 b >= 0
    (from a fast approach with psi1 < 0 the row may act too late), so the starts are drawn there."""
    obs = OBS[0]
    head = BarrierNetHead([obs]).double()
    p1, p2 = 1.0, 2.0
    rng = np.random.default_rng(5)
    x0 = rng.uniform([-0.5, -1.0, -0.5, 0.0], [0.5, 1.0, 0.5, 1.5], (200, 4))
    b0 = obs.barrier(x0[:, 0], x0[:, 1])
    b_dot = 2 * x0[:, 3] * ((x0[:, 0] - obs.x) * np.cos(x0[:, 2]) + (x0[:, 1] - obs.y) * np.sin(x0[:, 2]))
    x0 = x0[b_dot + p1 * b0 >= 0][:24]
    n = len(x0)
    assert n == 24

    def reference(x: np.ndarray) -> np.ndarray:
        aim = np.arctan2(obs.y - x[:, 1], obs.x - x[:, 0])
        err = (aim - x[:, 2] + np.pi) % (2 * np.pi) - np.pi
        return np.stack([3.0 * err, np.full(len(x), 1.0)], 1)

    gains = torch.tensor([[p1, p2]], dtype=torch.float64).expand(n, 2)
    min_b = {"alone": np.inf, "head": np.inf}
    for mode in min_b:
        x = x0.copy()
        for _ in range(100):
            u = reference(x)
            if mode == "head":
                with torch.no_grad():
                    u = head(torch.tensor(x), torch.tensor(u), gains).numpy()
            x = np.array([_rk4(x[i], u[i], 0.05) for i in range(n)])
            min_b[mode] = min(min_b[mode], float(obs.barrier(x[:, 0], x[:, 1]).min()))
    assert min_b["alone"] < -0.3
    assert min_b["head"] >= 0.0


def test_bad_input_is_refused_with_the_argument_named() -> None:
    head = BarrierNetHead(OBS)
    x, u_ref, gains = _head_inputs(4, seed=4)
    with pytest.raises(ValueError, match="x must"):
        head(x[:, :3], u_ref, gains)
    with pytest.raises(ValueError, match="u_ref has batch"):
        head(x, u_ref[:3], gains)
    with pytest.raises(ValueError, match="gains must be > 0"):
        head(x, u_ref, -gains)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        head(bad, u_ref, gains)
    with pytest.raises(ValueError, match="gains must"):
        head(x, u_ref, gains[:, :2])
    with pytest.raises(ValueError, match="radius"):
        DiscObstacle(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="DiscObstacle.x"):
        DiscObstacle(float("inf"), 0.0, 1.0)
    with pytest.raises(ValueError, match="obstacles"):
        BarrierNetHead([])
    with pytest.raises(ValueError, match="control_weights"):
        BarrierNetHead(OBS, control_weights=(1.0, 0.0))
    backbone = LiquidPolicy(4, "cfc", None, 8, proj_size=3, n_gains=1)
    with pytest.raises(ValueError, match="backbone has 3 outputs"):
        UnicycleBarrierNet(backbone, BarrierNetHead(OBS[:1]))


def _load_script():
    path = ROOT / "scripts" / "barriernet_effect.py"
    spec = importlib.util.spec_from_file_location("barriernet_effect", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["barriernet_effect"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_effect_config_refuses_bad_sizes() -> None:
    effect = _load_script()
    with pytest.raises(ValueError, match="n_demos"):
        effect.EffectConfig(n_demos=0)
    with pytest.raises(ValueError, match="horizon"):
        effect.EffectConfig(horizon=float("nan"))


def test_effect_pipeline_end_to_end_tiny(tmp_path: pathlib.Path) -> None:
    """Seeded demos -> both policies trained -> closed loop: the BarrierNet policy never enters."""
    effect = _load_script()
    torch.set_num_threads(1)
    cfg = effect.EffectConfig(seed=0, n_demos=4, n_eval=8, epochs=2, batch=16, horizon=5.0)
    summary = effect.run(cfg, tmp_path, log=lambda *_: None)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "trajectories.png").stat().st_size > 10_000
    assert saved["results"] == json.loads(json.dumps(summary["results"]))
    for set_name in ("demo_region", "uncovered"):
        res = summary["results"][set_name]
        assert res["expert"]["collisions"] == 0
        assert res["barriernet"]["starts"] == cfg.n_eval
        assert res["barriernet"]["collisions"] == 0
        assert res["barriernet"]["min_barrier"] >= 0.0
        assert len(res["plain"]["min_barrier_per_start"]) == cfg.n_eval
        assert 0.0 <= res["barriernet"]["qp_intervened_steps"] <= 1.0
        assert "qp_intervened_steps" not in res["plain"]
        assert 0 <= res["barriernet"]["starts_outside_hocbf_set"] <= cfg.n_eval
    # The filter is not idle: from the uncovered starts the QP changes the reference somewhere.
    assert summary["results"]["uncovered"]["barriernet"]["qp_intervened_steps"] > 0
