"""BarrierNet training end to end: the diff_drive policy's command and class-K gains through the
safety filter's own QP (barriernet.filter_layer.FilterQPLayer) while training, float64 QP."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import torch

from barriernet.filter_layer import FilterQPLayer
from barriernet.safety_filter import SafetyFilter
from lnn_control import cli
from lnn_control.config import load_filter_config, load_observation_config
from lnn_control.learn import record
from lnn_control.learn import training as tr
from lnn_control.runtime.model_file import load_stepper
from lnn_control.sim.experts import DiffDriveExpert

torch.set_num_threads(1)
ROOT = pathlib.Path(__file__).resolve().parents[2]
DD = ROOT / "config" / "diff_drive.yaml"
ARM = ROOT / "config" / "arm.yaml"


def _filter(path: pathlib.Path = DD) -> SafetyFilter:
    return SafetyFilter.from_config(load_filter_config(path))


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Four 3 s expert episodes of the diff_drive robot (seeded starts near obstacles and walls), by
    an expert that cuts closer to obstacles (0.12 m) than the filter's default gains allow, so the
    BarrierNet gains have something to learn."""
    out = tmp_path_factory.mktemp("bn") / "bags"
    close = DiffDriveExpert(inflation=0.12, guard=0.08, approach_gain=100.0)  # no filter-aware speed cap
    for i in range(4):
        record.record_episode("diff_drive", out / f"ep{i}", seed=100 + i, max_time=3.0, expert=close)
    return out


@pytest.fixture(scope="module")
def episodes(bags: pathlib.Path) -> list[tr.Episode]:
    probe = load_observation_config(DD)
    return tr.load_recordings(
        [bags], lambda: load_observation_config(DD), probe.command_topic, probe.command_fields
    )


def _cfg(**kw: object) -> tr.TrainConfig:
    base: dict[str, object] = dict(
        units=12, epochs=8, window=32, batch=8, lr=1e-2, patience=20, seed=0, progress=False
    )
    base.update(kw)
    return tr.TrainConfig(**base)  # type: ignore[arg-type]


def _near_obstacle_samples(n: int, seed: int) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """diff_drive states with scan points 0.3-0.7 m ahead of the robot (rows active for most
    nominal commands), world frame."""
    rng = np.random.default_rng(seed)
    xs = np.c_[rng.uniform(-2.0, 2.0, (n, 2)), rng.uniform(-np.pi, np.pi, n)]
    envs = []
    for x in xs:
        ang = x[2] + rng.uniform(-1.0, 1.0, 20)
        r = rng.uniform(0.3, 0.7, 20)
        envs.append({"scan_points": x[:2] + np.c_[r * np.cos(ang), r * np.sin(ang)]})
    return xs, envs


# ---- the filter's row pieces and the torch layer -----------------------------------------------


@pytest.mark.parametrize("config", [DD, ARM], ids=["diff_drive", "arm"])
def test_row_terms_rebuild_the_filters_rows_for_any_gains(config: pathlib.Path) -> None:
    f = _filter(config)
    rng = np.random.default_rng(0)
    i1, i2, deg2 = f.row_gain_index()
    for _ in range(5):
        if f.n_state == 3:
            x = np.r_[rng.uniform(-2.5, 2.5, 2), rng.uniform(-3, 3)]
            env = {"scan_points": rng.uniform(-3, 3, (rng.integers(3, 30), 2))}
        else:
            x, env = np.r_[rng.uniform(-1.5, 1.5, 3), rng.uniform(-2, 2, 3)], None
        g = rng.uniform(0.2, 4.0, f.n_gains)
        G, a, b, c = f.row_terms(x, env)
        G_ref, h_ref, _ = f.constraints(x, g, env)
        h = a + (g[i1] + deg2 * g[i2]) * b + deg2 * g[i1] * g[i2] * c
        live = np.isfinite(a)
        np.testing.assert_array_equal(G, G_ref)
        np.testing.assert_allclose(h[live], h_ref[live], rtol=1e-12, atol=1e-12)
        # rows that constrain nothing (scan rows without a point) are +inf, the filter's 1e30 k
        assert np.all(G[~live] == 0) and np.all(h_ref[~live] >= 1e29)
    if f.n_state == 3:
        assert (~live).sum() == 0 or np.all(b[~live] == 0)
        with pytest.raises(ValueError, match="scan_points"):
            f.row_terms(x, None)
    with pytest.raises(ValueError, match="x"):
        f.row_terms(np.full(f.n_state, np.nan))


def test_layer_equals_safety_filter_and_passes_gradients() -> None:
    """FilterQPLayer == SafetyFilter.filter (float64, 1e-9) wherever the filter solves its QP
    without slack; infeasible samples are exactly those the filter relaxes."""
    f = _filter()
    layer = FilterQPLayer(f)
    xs, envs = _near_obstacle_samples(60, seed=1)
    rng = np.random.default_rng(2)
    u_nom = rng.uniform(f.lower * 1.2, f.upper * 1.2, (60, 2))
    gains = rng.uniform(0.3, 4.0, (60, f.n_gains))
    rt = layer.terms(xs, envs)
    terms = tuple(torch.as_tensor(v) for v in (rt.G, rt.a, rt.b, rt.c))
    un = torch.tensor(u_nom, requires_grad=True)
    gt = torch.tensor(gains, requires_grad=True)
    u = layer(terms, un, gt)
    assert layer.status is not None
    status = layer.status.numpy()
    intervened = 0
    for i in range(60):
        us, rep = f.filter(xs[i], u_nom[i], gains=gains[i], env=envs[i])
        assert (rep.status == "optimal") == (status[i] == 0), (i, rep.status, status[i])
        if status[i] == 0:
            np.testing.assert_allclose(u[i].detach().numpy(), us, atol=1e-9)
            intervened += int(rep.intervened)
    assert intervened >= 20  # the rows are active: the comparison is not the trivial u = u_nom
    (u**2).sum().backward()
    assert gt.grad is not None and torch.isfinite(gt.grad).all() and (gt.grad != 0).any()
    assert un.grad is not None and torch.isfinite(un.grad).all()
    # gradcheck of the gain -> row bound -> QP chain on a few active samples
    act = [i for i in range(60) if status[i] == 0][:3]
    sub = tuple(t[act] for t in terms)
    torch.autograd.gradcheck(
        lambda a, b: layer(sub, a, b), (un[act].detach().requires_grad_(), gt[act].detach().requires_grad_())
    )


def test_layer_rejects_bad_input() -> None:
    layer = FilterQPLayer(_filter())
    xs, envs = _near_obstacle_samples(2, seed=3)
    rt = layer.terms(xs, envs)
    terms = tuple(torch.as_tensor(v) for v in (rt.G, rt.a, rt.b, rt.c))
    u = torch.zeros(2, 2, dtype=torch.float64)
    g = torch.ones(2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="u_nom"):
        layer(terms, torch.zeros(2, 3, dtype=torch.float64), g)
    with pytest.raises(ValueError, match="gains"):
        layer(terms, u, torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="gains"):
        layer(terms, u, -g)
    with pytest.raises(ValueError, match="states"):
        layer.terms(np.zeros((2, 4)), None)
    with pytest.raises(ValueError, match="envs"):
        layer.terms(xs, envs[:1])
    with pytest.raises(ValueError, match="safety_filter"):
        FilterQPLayer("diff_drive")  # type: ignore[arg-type]


# ---- training ---------------------------------------------------------------------------------


def test_bags_give_the_filter_state_and_env(episodes: list[tr.Episode]) -> None:
    f = _filter()
    for e in episodes:
        assert e.state is not None and e.state.shape == (e.obs.shape[0], 3)
        assert e.env is not None and len(e.env) == e.obs.shape[0]
        assert e.env[0]["scan_points"].shape[1] == 2
    # the expert keeps clear of the obstacles but drives closer / faster than the filter at its
    # YAML gains (k = 1) allows: its commands break scan rows, so the gains have something to learn
    worst, clear = -np.inf, np.inf
    for e in episodes:
        assert e.state is not None and e.env is not None
        for t in range(0, e.obs.shape[0], 5):
            G, h, hv = f.constraints(e.state[t], env=e.env[t])
            worst = max(worst, float((G @ e.target[t] - h).max()))
            clear = min(clear, float(hv.min()))
    assert 0 < clear < 0.2 and worst > 0.05


def test_training_through_the_qp_trains_command_and_gains(episodes: list[tr.Episode]) -> None:
    f = _filter()
    cfg = _cfg()
    res = tr.train_policy(episodes, cfg, safety_filter=f)
    assert res.model.n_gains == f.n_gains and res.model.gain_names == list(f.gain_names)
    assert res.train_loss[-1] < 0.85 * res.train_loss[0]
    assert res.val_loss[res.best_epoch] < res.val_loss[0]
    assert len(res.infeasible) == len(res.train_loss) and all(n >= 0 for n in res.infeasible)
    # the same initial policy (train_policy seeds, then builds): the scan gain the expert's
    # commands need (they break the k = 1 rows) has grown
    torch.manual_seed(cfg.seed)
    init = tr.build_policy(dataclasses.replace(cfg, n_gains=5), 12, 2, tr.norm_stats(res.train_episodes))

    def mean_gains(m: torch.nn.Module) -> np.ndarray:
        with torch.no_grad():
            ys = [
                m(
                    torch.as_tensor(e.obs, dtype=torch.float32)[None],
                    torch.as_tensor(e.dt, dtype=torch.float32)[None],
                )[0][0]
                for e in episodes
            ]
        return torch.cat(ys)[:, 2:].mean(0).numpy()

    g0, g1 = mean_gains(init), mean_gains(res.model)
    assert g1[0] > g0[0] + 0.1, (g0, g1)

    # one batch by hand: the loss on the safe command reaches the gain rows of the read-out
    model = res.model.train()
    layer = FilterQPLayer(f)
    e = episodes[1]
    terms = tr.filter_terms(layer, e)
    x = torch.as_tensor(e.obs, dtype=torch.float32)[None]
    d = torch.as_tensor(e.dt, dtype=torch.float32)[None]
    y, _ = model(x, d)
    with torch.no_grad():  # nominal commands pushed into the obstacles: the rows become active
        push = torch.zeros_like(y)
        push[..., 0] = 0.6
    loss, n_bad, u = tr.safe_command_error(
        model, layer, y + push, torch.as_tensor(e.target)[None], [t[None] for t in terms]
    )
    assert loss is not None and n_bad >= 0
    model.zero_grad()
    loss.backward()
    proj = model.proj
    assert proj is not None and proj.weight.grad is not None
    k = model.n_commands
    assert float(proj.weight.grad[k:].abs().sum()) > 0  # gain head
    assert float(proj.weight.grad[:k].abs().sum()) > 0  # nominal head


def test_training_qp_equals_the_filter_on_the_trained_policy(episodes: list[tr.Episode]) -> None:
    """The QP solved in training gives SafetyFilter.filter's command for the same state,
    nominal command and gains (float64, 1e-6)."""
    f = _filter()
    res = tr.train_policy(episodes, _cfg(epochs=2), safety_filter=f)
    model = res.model.double().eval()
    layer = FilterQPLayer(f)
    checked = moved = 0
    for e in episodes[:2]:
        terms = tr.filter_terms(layer, e)
        with torch.no_grad():
            y, _ = model(torch.as_tensor(e.obs)[None], torch.as_tensor(e.dt)[None])
            y = y.clone()
            y[..., 0] += 0.4  # faster than the expert: the filter has work to do near obstacles
            _, _, u = tr.safe_command_error(
                model, layer, y, torch.as_tensor(e.target)[None], [t[None] for t in terms]
            )
        assert layer.status is not None
        yn = y[0].numpy()
        for t in range(e.obs.shape[0]):
            us, rep = f.filter(e.state[t], yn[t, :2], gains=yn[t, 2:], env=e.env[t])  # type: ignore[index]
            assert (rep.status == "optimal") == (int(layer.status[t]) == 0)
            if rep.status == "optimal":
                np.testing.assert_allclose(u[t].numpy(), us, atol=1e-6)
                checked += 1
                moved += int(rep.intervened)
    assert checked > 100 and moved > 0, (checked, moved)


def test_infeasible_samples_are_dropped_and_counted() -> None:
    """A robot ringed by scan points closer than its clearance: no command satisfies every row."""
    f = _filter()
    layer = FilterQPLayer(f)
    x = np.array([0.0, 0.0, 0.0])
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = {"scan_points": 0.2 * np.c_[np.cos(ang), np.sin(ang)]}
    xs, envs = _near_obstacle_samples(3, seed=4)
    rt = layer.terms(np.vstack([x, xs]), [ring, *envs])
    terms = [torch.as_tensor(v)[None] for v in (rt.G, rt.a, rt.b, rt.c)]  # (1, 4, ...)
    policy = tr.build_policy(
        _cfg(n_gains=5), 12, 2, tr.NormStats(np.zeros(12), np.ones(12), np.zeros(2), np.ones(2))
    )
    y, _ = policy(torch.zeros(1, 4, 12), torch.full((1, 4), 0.02))
    loss, n_bad, u = tr.safe_command_error(policy, layer, y, torch.zeros(1, 4, 2), terms)
    assert n_bad == 1 and loss is not None and torch.isfinite(loss)
    assert torch.all(u[0] == 0)  # QPLayer's infeasible output, not in the loss
    _, rep = f.filter(x, [0.1, 0.0], env=ring)
    assert rep.status == "relaxed"  # the run-time filter relaxes the same sample
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in policy.parameters())
    none, n_all, _ = tr.safe_command_error(
        policy, layer, y[:, :1], torch.zeros(1, 1, 2), [t[:, :1] for t in terms]
    )
    assert none is None and n_all == 1


def test_barriernet_training_errors(episodes: list[tr.Episode]) -> None:
    f = _filter()
    bare = [tr.Episode(e.obs, e.dt, e.target, source="bare") for e in episodes]
    with pytest.raises(tr.DataError, match="bare has no safety-filter state"):
        tr.train_policy(bare, _cfg(epochs=1), safety_filter=f)
    with pytest.raises(ValueError, match="n_gains=2"):
        tr.train_policy(episodes, _cfg(epochs=1, n_gains=2), safety_filter=f)
    with pytest.raises(ValueError, match="gain_names"):
        tr.train_policy(episodes, _cfg(epochs=1), gain_names=["a", "b", "c", "d", "e"], safety_filter=f)
    with pytest.raises(ValueError, match="safety_filter: 3 controls"):
        tr.train_policy(episodes, _cfg(epochs=1), safety_filter=_filter(ARM))


def test_cli_train_barriernet_writes_a_named_gain_policy(bags: pathlib.Path, tmp_path, capsys) -> None:
    out = tmp_path / "m" / "dd_bn.npz"
    argv = ["train", "--config", str(DD), "--data", str(bags), "--units", "12", "--window", "32"]
    rc = cli.main([*argv, "--barriernet", "--epochs", "3", "--out", str(out), "--no-progress", "--seed", "1"])
    assert rc == 0, capsys.readouterr().err
    assert "BarrierNet gains" in capsys.readouterr().out
    f = _filter()
    s = load_stepper(out)
    assert s.n_gains == f.n_gains and s.gain_names == list(f.gain_names)
    assert s.output_names == ["v", "omega"]
    bn = s.metadata["training"]["barriernet"]
    assert bn["gain_names"] == list(f.gain_names) and len(bn["infeasible_per_epoch"]) >= 1
    y = s.step(np.zeros(s.n_inputs), 0.02)
    assert y.shape == (2 + f.n_gains,) and np.all(y[2:] > 0) and np.all(y[2:] < s.gain_scale)
    # the node hands these outputs to the filter as its gains vector
    u, rep = f.filter(np.array([0.0, 0.0, 0.0]), y[:2], gains=y[2:], env={"scan_points": np.zeros((0, 2))})
    assert rep.status == "optimal" and not rep.fallback_used
    rc = cli.main([*argv, "--barriernet", "--goal-relabel", "2", "--out", str(out)])
    assert rc == 2 and "barriernet with goal_relabel" in capsys.readouterr().err


def test_cli_train_barriernet_with_dagger_through_the_filter(bags: pathlib.Path, tmp_path, capsys) -> None:
    """Simulator episodes record the filter state, so --barriernet trains on DAgger rollouts that run,
    like the node, through the safety filter with the policy's learned gains."""
    out = tmp_path / "dd_bn_dagger.npz"
    argv = ["train", "--config", str(DD), "--data", str(bags), "--units", "12", "--window", "32"]
    rc = cli.main(
        [*argv, "--barriernet", "--epochs", "2", "--dagger-rounds", "1", "--dagger-episodes", "1",
         "--dagger-epochs", "1", "--eval-episodes", "1", "--filter-in-loop", "--out", str(out),
         "--no-progress", "--seed", "1"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    meta = load_stepper(out).metadata["training"]
    assert meta["filter_in_loop"] is True and "barriernet" in meta
    assert [h["round"] for h in meta["dagger"]] == [0, 1]
    assert meta["dagger"][1]["data_episodes"] == meta["n_train"] + 1  # the rollout was trained on
