"""Training pipeline: data loading (bag / CSV / NPZ), split, checkpoint logic, loss decreases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lnn_control.learn import training as tr
from lnn_control.learn.bags import BagWriter, stamp

torch.set_num_threads(1)


def _synthetic(n_eps: int, t: int, seed: int) -> list[tr.Episode]:
    """Target = first-order lag of a nonlinear function of the observation (needs memory + dt)."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n_eps):
        obs = np.cumsum(rng.normal(0, 0.3, (t, 2)), axis=0)
        dt = rng.uniform(0.02, 0.06, t)
        u = np.zeros((t, 1))
        for k in range(1, t):
            a = dt[k] / 0.2
            u[k] = u[k - 1] + a * (np.tanh(obs[k, 0] - 0.5 * obs[k, 1]) - u[k - 1])
        eps.append(tr.Episode(obs, dt, u))
    return eps


def test_training_decreases_loss_and_beats_mean_baseline() -> None:
    eps = _synthetic(8, 60, seed=1)
    cfg = tr.TrainConfig(
        cell="cfc", units=8, epochs=25, window=30, batch=8, lr=1e-2, patience=25, seed=0, progress=False
    )
    res = tr.train_policy(eps, cfg)
    assert res.train_loss[-1] < 0.5 * res.train_loss[0]
    # Trivial baseline: predict the training mean command -> normalised MSE of the val targets.
    stats = tr.norm_stats(res.train_episodes)
    tgt = np.concatenate([e.target for e in res.val_episodes])
    baseline = float((((tgt - stats.output_mean) / stats.output_std) ** 2).mean())
    assert tr.evaluate(res.model, res.val_episodes) < 0.5 * baseline
    assert res.val_loss[res.best_epoch] == min(res.val_loss)


def test_ltc_trains_too() -> None:
    eps = _synthetic(3, 30, seed=2)
    res = tr.train_policy(
        eps, tr.TrainConfig(cell="ltc", units=6, epochs=3, window=15, seed=0, progress=False)
    )
    assert all(math.isfinite(v) for v in res.train_loss)


def test_best_checkpoint_keeps_lowest_and_stops_after_patience() -> None:
    torch.manual_seed(0)
    m = torch.nn.Linear(2, 1)
    best = tr.BestCheckpoint(patience=2)
    assert not best.update(0, 1.0, m)
    with torch.no_grad():
        m.weight.fill_(3.0)
    assert not best.update(1, 0.5, m)
    with torch.no_grad():
        m.weight.fill_(-7.0)
    assert not best.update(2, 0.7, m)
    assert best.update(3, 0.6, m)  # second epoch without improvement
    assert best.best_epoch == 1 and best.best_loss == 0.5
    assert best.state is not None and torch.all(best.state["weight"] == 3.0)
    with pytest.raises(FloatingPointError, match="lower lr"):
        best.update(4, float("nan"), m)


def test_split_is_by_episode_and_seeded() -> None:
    eps = _synthetic(10, 5, seed=3)
    a_tr, a_va = tr.split_episodes(eps, 0.2, seed=4)
    b_tr, b_va = tr.split_episodes(eps, 0.2, seed=4)
    assert len(a_va) == 2 and len(a_tr) == 8
    assert [id(e) for e in a_va] == [id(e) for e in b_va]
    assert not {id(e) for e in a_tr} & {id(e) for e in a_va}


def test_bag_to_episode_mapping(tmp_path) -> None:
    """Observation = the node's ObservationMap (latest /odom x, scan ranges); target = cmd_vel
    fields; dt from log times."""
    from lnn_control.control.observation import ObservationMap

    path = tmp_path / "ep"
    with BagWriter(path) as w:
        for k in range(5):
            t = 1_000_000_000 + k * 20_000_000 + (5_000_000 if k == 4 else 0)
            w.write(
                "/odom",
                "nav_msgs/msg/Odometry",
                {
                    "header": {"stamp": stamp(t), "frame_id": "odom"},
                    "pose": {"pose": {"position": {"x": 0.1 * k}}},
                },
                t,
            )
            w.write(
                "/scan",
                "sensor_msgs/msg/LaserScan",
                {"header": {"stamp": stamp(t)}, "ranges": [1.0 + k, 2.0]},
                t,
            )
            w.write(
                "/cmd_vel", "geometry_msgs/msg/Twist", {"linear": {"x": 0.5 * k}, "angular": {"z": -k}}, t
            )
    cfg = {
        "features": ["x", "r"],
        "x": {"topic": "/odom", "type": "nav_msgs/msg/Odometry", "field": "pose.pose.position.x"},
        "r": {"topic": "/scan", "type": "sensor_msgs/msg/LaserScan", "field": "ranges", "size": 2},
        "command": {
            "topic": "/cmd_vel",
            "type": "geometry_msgs/msg/Twist",
            "fields": ["linear.x", "angular.z"],
        },
    }
    ep = tr.episode_from_bag(path, ObservationMap(cfg))
    np.testing.assert_allclose(ep.obs[:, 0], 0.1 * np.arange(5))
    np.testing.assert_allclose(ep.obs[:, 1:], np.stack([1.0 + np.arange(5), np.full(5, 2.0)], 1), rtol=1e-6)
    np.testing.assert_allclose(ep.target, np.stack([0.5 * np.arange(5), -np.arange(5.0)], 1))
    np.testing.assert_allclose(ep.dt, [0.02, 0.02, 0.02, 0.02, 0.025], atol=1e-9)
    assert ep.state is None
    with pytest.raises(tr.DataError, match="command topic '/nope'"):
        tr.episode_from_bag(path, ObservationMap(cfg), "/nope", ["data[0]"])


def test_csv_and_npz_loading_and_errors(tmp_path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("t,o1,u\n0.0,1,2\n0.1,3,4\n0.3,5,6\n")
    ep = tr.load_csv(p, ["o1"], ["u"])
    np.testing.assert_allclose(ep.dt, [0.1, 0.1, 0.2])
    np.testing.assert_allclose(ep.obs[:, 0], [1, 3, 5])
    with pytest.raises(tr.DataError, match=r"lacks columns \['zz'\]"):
        tr.load_csv(p, ["zz"], ["u"])
    q = tmp_path / "b.npz"
    np.savez(q, obs=np.ones((2, 4, 3)), dt=np.full((2, 4), 0.1), target=np.zeros((2, 4, 1)))
    assert len(tr.load_recordings([q])) == 2
    bad = tmp_path / "c.npz"
    np.savez(bad, obs=np.ones((4, 3)), dt=np.array([0.1, 0.1, -0.1, 0.1]), target=np.zeros((4, 1)))
    with pytest.raises(tr.DataError, match="dt must be > 0"):
        tr.load_npz(bad)
    nan = tmp_path / "d.npz"
    np.savez(nan, obs=np.full((4, 3), np.nan), dt=np.full(4, 0.1), target=np.zeros((4, 1)))
    with pytest.raises(tr.DataError, match="obs has non-finite"):
        tr.load_npz(nan)
    with pytest.raises(tr.DataError, match="recordings not found.*lnn_control.learn.record"):
        tr.load_recordings([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(tr.DataError, match="no recordings"):
        tr.load_recordings([tmp_path / "empty"])


def test_trained_policy_is_a_liquid_policy_and_model_file_round_trips(tmp_path) -> None:
    """Training gives a LiquidPolicy with the statistics inside; save_policy/load_stepper reproduce it."""
    from lnn_control.nn.policy import LiquidPolicy
    from lnn_control.runtime.model_file import load_policy, load_stepper, save_policy

    eps = _synthetic(3, 20, seed=5)
    cfg = tr.TrainConfig(units=6, epochs=2, seed=0, progress=False)
    res = tr.train_policy(eps, cfg, input_names=["a", "b"], output_names=["u"])
    model = res.model
    assert isinstance(model, LiquidPolicy) and model.cell == "cfc"
    assert model.get_config()["wiring"]["type"] == "auto_ncp"
    stats = tr.norm_stats(res.train_episodes)
    np.testing.assert_allclose(model.input_mean.numpy(), stats.input_mean, rtol=1e-6)
    np.testing.assert_allclose(model.output_std.numpy(), stats.output_std, rtol=1e-6)
    path = save_policy(tmp_path / "m.npz", model.double(), observation={"features": ["a"]}, robot="x")
    back = load_policy(path)
    assert back.input_names == ["a", "b"] and back.output_names == ["u"] and back.metadata["robot"] == "x"
    e = eps[0]
    want = tr.predict(model, e)
    np.testing.assert_allclose(tr.predict(back, e), want, rtol=1e-12, atol=1e-12)
    stepper = load_stepper(path)
    got = np.stack([stepper.step(o, float(d)) for o, d in zip(e.obs, e.dt)])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_gain_head_and_warm_start() -> None:
    """n_gains adds positive gain outputs below gain_scale; init= continues from given weights."""
    eps = _synthetic(3, 20, seed=6)
    cfg = tr.TrainConfig(units=8, epochs=1, seed=0, progress=False, n_gains=2, gain_scale=3.0)
    res = tr.train_policy(eps, cfg, gain_names=["p1", "p2"])
    y = tr.predict(res.model, eps[0])
    assert y.shape == (20, 3) and res.model.gain_names == ["p1", "p2"]
    assert np.all(y[:, 1:] > 0) and np.all(y[:, 1:] < 3.0)
    w0 = {k: v.clone() for k, v in res.model.state_dict().items()}
    cont = tr.train_policy(
        [],
        tr.TrainConfig(units=8, epochs=3, seed=0, progress=False, n_gains=2, lr=1e-2),
        init=res.model,
        split=(res.train_episodes, []),
    )
    assert cont.model is not res.model
    assert all(torch.equal(v, res.model.state_dict()[k]) for k, v in w0.items())  # init left untouched
    assert cont.train_loss[0] < res.train_loss[0]  # starts from the trained weights, not from scratch
    with pytest.raises(ValueError, match="init policy has"):
        tr.train_policy(
            [], cfg, init=res.model, split=([tr.Episode(np.ones((3, 5)), np.ones(3), np.ones((3, 1)))], [])
        )


def test_bad_config_errors() -> None:
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        tr.TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="cell must be"):
        tr.TrainConfig(cell="gru")
    with pytest.raises(ValueError, match="input_noise"):
        tr.TrainConfig(input_noise=-1.0)
    with pytest.raises(ValueError, match="units must be >= motor neurons"):
        tr.train_policy(_synthetic(2, 5, 0), tr.TrainConfig(units=3, epochs=1, progress=False))


def test_cli_train_on_recorded_bags(tmp_path, capsys) -> None:
    """Bags -> node's ObservationMap (config/arm.yaml) -> model file the node's loader reads."""
    import pathlib

    from lnn_control import cli
    from lnn_control.learn import record
    from lnn_control.runtime.model_file import load_stepper

    cfg = pathlib.Path(__file__).resolve().parents[2] / "config" / "arm.yaml"
    record.record("arm", 2, tmp_path / "bags", seed=0)
    out = tmp_path / "m" / "arm.npz"
    argv = ["train", "--config", str(cfg), "--data", str(tmp_path / "bags"), "--units", "8"]
    rc = cli.main([*argv, "--epochs", "2", "--window", "16", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    stepper = load_stepper(out)
    meta = stepper.metadata
    assert meta["robot"] == "arm" and stepper.output_names == ["tau1", "tau2", "tau3"]
    assert stepper.n_inputs == 9 and stepper.input_names[:2] == ["q[0]", "q[1]"]  # q, dq, q_goal
    assert stepper.observation["features"] == ["q", "dq", "q_goal"]
    assert meta["training"]["n_train"] == 1 and meta["training"]["n_val"] == 1
    assert stepper.step(np.zeros(9), 0.01).shape == (3,)
    assert (tmp_path / "m" / "arm_loss.png").stat().st_size > 1000
    assert (tmp_path / "m" / "arm_rollouts.png").stat().st_size > 1000
    rc = cli.main([*argv[:3], "--data", str(tmp_path / "nope"), "--out", str(out)])
    assert rc == 2 and "recordings not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("robot: arm\n")
    assert cli.main(["train", "--config", str(bad), "--data", str(tmp_path / "bags"), "--out", str(out)]) == 2
    assert "observation" in capsys.readouterr().err
    rc = cli.main([*argv, "--barriernet", "--goal-relabel", "2", "--out", str(out)])
    assert rc == 2 and "barriernet with goal_relabel" in capsys.readouterr().err
    assert cli.main(["frobnicate"]) == 2
