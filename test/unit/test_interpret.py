"""lnn_control.analysis.interpret + behaviour_tree: activity recording, the behaviour tree over
closed-loop episodes (neurons vs raw inputs, held out), saliency, inspect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnn_control import strict_json
from lnn_control.analysis import behaviour_tree as BT
from lnn_control.analysis import interpret
from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP
from lnn_control.runtime.model_file import save_policy


def _policy(cell: str, n_in: int = 9, n_out: int = 3, seed: int = 0, wired: bool = True) -> LiquidPolicy:
    torch.manual_seed(seed)
    if wired:
        p = LiquidPolicy(n_in, cell, AutoNCP(19, n_out, seed=seed + 5))
    else:
        p = LiquidPolicy(n_in, cell, None, 12, proj_size=n_out, backbone_units=16)
    p = p.double()
    rng = np.random.default_rng(seed)
    p.set_normalization(
        rng.normal(0, 0.3, n_in),
        rng.uniform(0.5, 2.0, n_in),
        rng.normal(0, 1, n_out),
        rng.uniform(0.5, 3, n_out),
    )
    return p


def _inputs(T: int, n_in: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, (T, n_in)), rng.uniform(0.005, 0.05, T)


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_activity_matches_stepper_and_torch_states(cell: str) -> None:
    p = _policy(cell)
    obs, dt = _inputs(40, 9)
    trace = interpret.record_activity(p.runtime(), obs, dt)
    # the same stepper driven by hand gives the same states and outputs
    st = p.runtime()
    for t in range(40):
        y = st.step(obs[t], dt[t])
        np.testing.assert_array_equal(trace.states[t], st.state)
        np.testing.assert_array_equal(trace.outputs[t], y)
    # ... and so does the torch model, one step at a time with its hidden state
    h = None
    with torch.no_grad():
        for t in range(40):
            y_t, h = p(torch.tensor(obs[None, t : t + 1]), torch.tensor([[dt[t]]]), h)
            np.testing.assert_allclose(trace.states[t], h[0].numpy(), rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(trace.outputs[t], y_t[0, 0].numpy(), rtol=1e-9, atol=1e-11)
    # activity is indexed by neuron id: motor neurons 0..2 are the outputs before de-normalisation
    w = p.get_config()["wiring"]
    assert trace.layers["motor"] == [0, 1, 2]
    assert sorted(i for ids in trace.layers.values() for i in ids) == list(range(19))
    assert len(trace.layers["command"]) == AutoNCP(19, 3).command_neurons
    ids = interpret.state_neuron_ids(p.get_config())
    np.testing.assert_array_equal(trace.activity[:, ids], trace.states[:, :19])
    if cell == "cfc":
        assert ids != list(range(19))  # layer order, not id order
        raw = trace.activity[:, :3] * p.output_std.numpy() + p.output_mean.numpy()
        np.testing.assert_allclose(raw, trace.outputs, rtol=1e-10, atol=1e-10)
    else:
        assert ids == list(range(19))
        ltc = p.net.cell
        v = trace.activity[:, :3] * ltc.output_w.detach().numpy() + ltc.output_b.detach().numpy()
        np.testing.assert_allclose(
            v * p.output_std.numpy() + p.output_mean.numpy(), trace.outputs, rtol=1e-10
        )
    assert w is not None


def test_record_activity_rejects_bad_input() -> None:
    st = _policy("cfc").runtime()
    with pytest.raises(ValueError, match="obs"):
        interpret.record_activity(st, np.zeros((5, 4)), 0.01)
    with pytest.raises(ValueError, match="dt"):
        interpret.record_activity(st, np.zeros((5, 9)), np.array([0.01, 0.01, 0.0, 0.01, 0.01]))


def test_manoeuvre_labels_read_the_command() -> None:
    u = np.array([[0.0, 1.0], [0.3, 1.0], [0.3, 0.0], [0.3, -1.0], [-0.3, 0.29], [0.04, -2.0]])
    y, names = BT.labels("diff_drive", u)
    assert [names[i] for i in y] == ["stop", "turn_left", "straight", "turn_right", "straight", "stop"]
    y, names = BT.labels("arm", np.array([[1.0, 0.0, -1.0], [0.1, 0.2, 0.3]]))
    assert names[y[0]] == "tau1+ tau20 tau3-" and names[y[1]] == "tau10 tau20 tau30"


def test_behaviour_tree_scores_held_out_episodes_on_neurons_and_raw_inputs() -> None:
    p = _policy("cfc", n_in=12, n_out=2, seed=4)
    p.set_normalization(np.zeros(12), np.ones(12), np.array([0.2, 0.0]), np.array([0.3, 3.0]))
    st = p.runtime()
    idx, names = BT.command_neurons(st)
    layers = interpret.neuron_layers(st.config)
    assert len(idx) == len(layers["command"]) and names == [f"command_{n}" for n in layers["command"]]
    r = BT.fit(st, "diff_drive", [50_000, 50_001], [100_000, 100_001], depth=2, max_time=3.0)
    assert r.train_steps > 50 and r.test_steps > 50
    # the scores are the trees' accuracies on the held-out episodes' steps (recomputed here)
    te = BT.collect(st, "diff_drive", [100_000, 100_001], 3.0)
    y, _ = BT.labels("diff_drive", te["commands"])
    assert y.size == r.test_steps
    assert r.neuron_accuracy == pytest.approx(np.mean(r.neuron_tree.predict(te["states"][:, idx]) == y))
    assert 0.0 <= r.raw_accuracy <= 1.0 and 0.0 < r.majority_accuracy <= 1.0
    assert r.neuron_tree.get_depth() <= 2
    text = BT.report(r)
    assert "held-out accuracy: command neurons" in text and "|--- command_" in text
    with pytest.raises(ValueError, match="held-out"):
        BT.fit(st, "diff_drive", [100_000], [100_001])
    with pytest.raises(ValueError, match="overlap"):
        BT.fit(st, "diff_drive", [50_000], [50_000])


@pytest.mark.parametrize("cell,wired", [("cfc", True), ("ltc", True), ("cfc", False)])
def test_saliency_matches_finite_differences(cell: str, wired: bool) -> None:
    p = _policy(cell, seed=2, wired=wired)
    obs, dt = _inputs(25, 9, seed=5)
    trace = interpret.record_activity(p.runtime(), obs, dt)
    J = interpret.saliency(p, trace.obs, trace.dt, trace.states)
    assert J.shape == (25, 3, 9)
    st = p.runtime()
    eps = 1e-6
    for t in (0, 7, 24):
        for i in range(9):
            ys = []
            for sgn in (1.0, -1.0):
                st.state = trace.states[t - 1] if t > 0 else np.zeros(st.state_size)
                x = obs[t].copy()
                x[i] += sgn * eps
                ys.append(st.step(x, dt[t]))
            fd = (ys[0] - ys[1]) / (2 * eps)
            np.testing.assert_allclose(J[t, :, i], fd, rtol=1e-5, atol=1e-8)
    assert np.abs(J).max() > 0
    assert p.dtype if hasattr(p, "dtype") else True  # the policy itself is left untouched
    assert next(p.parameters()).dtype == torch.float64


def _model(tmp_path, cell: str = "cfc", wired: bool = True) -> str:
    p = _policy(cell, seed=3, wired=wired)
    p.input_names = ["q[0]", "q[1]", "q[2]", "dq[0]", "dq[1]", "dq[2]", "g[0]", "g[1]", "g[2]"]
    return save_policy(tmp_path / f"{cell}.npz", p.float(), robot="arm")


def test_inspect_simulator_rollout_writes_every_file(tmp_path) -> None:
    model = _model(tmp_path)
    out = tmp_path / "insp"
    rc = interpret.main(
        [model, "--robot", "arm", "--out", str(out), "--max-time", "0.6", "--tree-depth", "2"]
        + ["--tree-episodes", "2"]
    )
    assert rc == 0
    for name in ("activity.png", "wiring.png", "tree.png", "saliency.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    s = strict_json.loads((out / "summary.json").read_text())
    assert s["rollout"]["source"] == "simulator" and s["rollout"]["steps"] == 60
    assert s["wiring"]["layers"] == {"inter": 10, "command": 6, "motor": 3}
    assert (
        s["wiring"]["excitatory"] + s["wiring"]["inhibitory"]
        == s["wiring"]["synapses"] + s["wiring"]["sensory_synapses"]
    )
    assert s["tree"]["depth"] == 2 and s["tree"]["test_episodes"] == [100_000, 100_001]
    assert s["tree"]["train_episodes"] == [50_000, 50_001] and s["tree"]["test_steps"] > 0
    assert 0.0 <= s["tree"]["neuron_accuracy"] <= 1.0 and 0.0 <= s["tree"]["raw_accuracy"] <= 1.0
    assert set(s["saliency"]["by_command"]) == {"tau1", "tau2", "tau3"}  # unnamed model: the arm's names
    assert all(v >= 0 for v in s["saliency"]["by_command"]["tau1"].values())
    text = (out / "tree.txt").read_text()
    assert "held-out accuracy" in text and "## tree on the command neurons\n|--- " in text


def test_inspect_recordings_npz_and_bag(tmp_path) -> None:
    from lnn_control.learn.record import record_episode

    model = _model(tmp_path, "ltc")
    obs, dt = _inputs(50, 9, seed=9)
    np.savez(tmp_path / "rec.npz", obs=obs, dt=dt)
    s = interpret.inspect(model, tmp_path / "a", recording=tmp_path / "rec.npz")
    assert s["rollout"]["steps"] == 50 and s["tree"] is None  # a recording: no episodes to explain
    bag = tmp_path / "bag"
    record_episode("arm", bag, seed=4, max_time=0.3)
    s = interpret.inspect(model, tmp_path / "b", robot="arm", recording=bag)
    assert s["rollout"]["steps"] >= 29  # 100 Hz joint states over 0.3 s
    dense = _model(tmp_path / "d", "cfc", wired=False) if (tmp_path / "d").mkdir() is None else ""
    s = interpret.inspect(dense, tmp_path / "c", recording=tmp_path / "rec.npz")
    assert s["wiring"]["type"] is None
    assert (tmp_path / "c" / "wiring.png").stat().st_size > 5_000


def test_inspect_errors_name_the_problem(tmp_path, capsys) -> None:
    assert interpret.main([str(tmp_path / "missing.npz"), "--robot", "arm", "--out", str(tmp_path)]) == 2
    assert "missing.npz" in capsys.readouterr().err
    model = _model(tmp_path)
    np.savez(tmp_path / "bad.npz", obs=np.zeros((10, 4)))
    assert (
        interpret.main([model, "--recording", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "takes 9" in capsys.readouterr().err
    assert interpret.main([model, "--out", str(tmp_path / "o")]) == 2
    assert "--robot" in capsys.readouterr().err
