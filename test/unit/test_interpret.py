"""lnn_control.analysis.interpret: activity recording, decision-tree fidelity, saliency, inspect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnn_control import strict_json
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


def test_tree_fidelity_exact_on_a_step_function() -> None:
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (400, 3))
    X[np.abs(X[:, 1] - 0.2) < 0.05, 1] += 0.1  # a clear margin: every threshold in the gap is exact
    y = np.where(X[:, 1] > 0.2, 1.5, -0.5)[:, None]  # one split on feature 1 explains everything
    r = interpret.extract_tree(X, y, ["a", "b", "c"], ["u"], max_depth=3)
    assert r.fidelity == pytest.approx(1.0)
    assert r.depth == 1 and r.leaves == 2
    assert "|--- b <= 0.2" in r.text or "|--- b <= 0.1" in r.text
    assert r.test.size + r.train.size == 400 and np.intersect1d(r.test, r.train).size == 0
    c = interpret.extract_tree(X, y, ["a", "b", "c"], ["u"], max_depth=2, mode="classification", bins=2)
    assert c.fidelity == pytest.approx(1.0) and c.depth == 1


def test_tree_fidelity_is_held_out_r2() -> None:
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, (600, 2))
    Y = np.stack([np.sin(3 * X[:, 0]) + 0.1 * rng.normal(size=600), X[:, 1] ** 2], 1)
    r = interpret.extract_tree(X, Y, ["a", "b"], ["u", "v"], max_depth=2, seed=7)
    pred = r.tree.predict(X[r.test])
    yt = Y[r.test]
    r2 = np.mean(
        [1 - np.sum((yt[:, j] - pred[:, j]) ** 2) / np.sum((yt[:, j] - yt[:, j].mean()) ** 2) for j in (0, 1)]
    )
    assert r.fidelity == pytest.approx(r2, rel=1e-12)
    assert 0.3 < r.fidelity < r.train_fidelity + 0.2 and r.depth == 2
    deeper = interpret.extract_tree(X, Y, ["a", "b"], ["u", "v"], max_depth=6, seed=7)
    assert deeper.fidelity > r.fidelity  # a deeper tree explains more of a smooth map
    noise = interpret.extract_tree(X, rng.normal(size=(600, 1)), ["a", "b"], ["u"], max_depth=3)
    assert noise.fidelity < 0.1  # unrelated targets: no fidelity


def test_tree_rejects_bad_arguments() -> None:
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match="mode"):
        interpret.extract_tree(X, np.zeros(10), ["a", "b"], ["u"], mode="forest")
    with pytest.raises(ValueError, match="feature_names"):
        interpret.extract_tree(X, np.zeros(10), ["a"], ["u"])
    with pytest.raises(ValueError, match="max_depth"):
        interpret.extract_tree(X, np.zeros(10), ["a", "b"], ["u"], max_depth=0)


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
    assert s["tree"]["on"] == "command neurons" and 1 <= s["tree"]["depth"] <= 2
    assert s["tree"]["fidelity"] <= 1.0 and s["tree"]["test_steps"] > 0
    assert set(s["saliency"]["by_command"]) == {"tau1", "tau2", "tau3"}  # unnamed model: the arm's names
    assert all(v >= 0 for v in s["saliency"]["by_command"]["tau1"].values())
    text = (out / "tree.txt").read_text()
    assert "depth" in text and "|---" in text


def test_inspect_recordings_npz_and_bag(tmp_path) -> None:
    from lnn_control.learn.record import record_episode

    model = _model(tmp_path, "ltc")
    obs, dt = _inputs(50, 9, seed=9)
    np.savez(tmp_path / "rec.npz", obs=obs, dt=dt)
    s = interpret.inspect(model, tmp_path / "a", recording=tmp_path / "rec.npz", tree_mode="classification")
    assert s["rollout"]["steps"] == 50 and s["tree"]["metric"] == "accuracy"
    bag = tmp_path / "bag"
    record_episode("arm", bag, seed=4, max_time=0.3)
    s = interpret.inspect(model, tmp_path / "b", robot="arm", recording=bag)
    assert s["rollout"]["steps"] >= 29  # 100 Hz joint states over 0.3 s
    dense = _model(tmp_path / "d", "cfc", wired=False) if (tmp_path / "d").mkdir() is None else ""
    s = interpret.inspect(dense, tmp_path / "c", recording=tmp_path / "rec.npz")
    assert s["wiring"]["type"] is None and "non-motor" in s["tree"]["on"]
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
