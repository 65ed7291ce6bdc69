"""The training recipe (lnn_control.learn.recipe): every model kind through one fit, simulator
episodes, errors, and scripts/train_demo_policies.sh as a tiny seeded run."""

from __future__ import annotations

import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

from lnn_control.config import config_path
from lnn_control.learn import data as D
from lnn_control.learn import recipe as R
from lnn_control.learn import training as tr

torch.set_num_threads(1)
ROOT = pathlib.Path(__file__).resolve().parents[2]
ARM = config_path("arm")


@pytest.fixture(scope="module")
def arm_episodes() -> list[D.Episode]:
    """Five 1 s expert episodes of the arm with DART noise, through the node's ObservationMap."""
    return R.expert_episodes("arm", ARM, range(5), action_noise=0.15, max_time=1.0)


def test_expert_episodes_are_seeded_and_labelled_by_the_clean_expert(arm_episodes) -> None:
    e = arm_episodes[0]
    assert e.obs.shape == (e.target.shape[0], 9) and e.target.shape[1] == 3
    np.testing.assert_allclose(e.dt, 0.01)  # the simulator's 100 Hz joint states
    assert np.all(e.obs[:, 6:] == e.obs[0, 6:])  # q_goal is constant within an episode
    again = R.expert_episodes("arm", ARM, [0], action_noise=0.15, max_time=1.0)[0]
    np.testing.assert_array_equal(again.obs, e.obs)
    np.testing.assert_array_equal(again.target, e.target)
    clean = R.expert_episodes("arm", ARM, [0], max_time=1.0)[0]
    assert not np.allclose(clean.obs[-1], e.obs[-1])  # the disturbance moved the arm elsewhere


@pytest.mark.parametrize("model", ["ncp", "lstm"])
def test_recipe_trains_liquid_and_baseline_and_the_loss_falls(arm_episodes, model: str) -> None:
    rec = R.Recipe(
        model=model, units=12 if model == "ncp" else 16, steps=40, window=25, batch=8, lr=1e-2, seed=0
    )
    res = R.train(rec, ARM, arm_episodes[:4], progress=False, validation=arm_episodes[4:])
    fit = res.fit
    assert fit.steps == 40 and res.path is None and res.robot == "arm"
    assert fit.train_loss[-1] < 0.6 * fit.train_loss[0]
    assert fit.val_loss[fit.best_epoch] == min(fit.val_loss)
    assert res.model.input_names[:2] == ["q[0]", "q[1]"] and res.model.output_names == [
        "tau1",
        "tau2",
        "tau3",
    ]
    assert res.metadata["recipe"]["model"] == model and res.metadata["optimiser_steps"] == 40
    # the same model steps in closed loop as it runs on whole episodes
    stepper = res.model.runtime()
    e = arm_episodes[4]
    stepper.reset()
    got = np.stack([stepper.step(o, float(d)) for o, d in zip(e.obs, e.dt)])
    np.testing.assert_allclose(got, tr.predict(res.model, e), rtol=1e-4, atol=1e-4)


def test_every_kind_gets_the_same_split_normalisation_and_budget(arm_episodes) -> None:
    stats = D.norm_stats(arm_episodes[:3])
    for kind in tr.MODEL_KINDS:
        if kind in tr.VISION_KINDS:  # needs an image input: the arm has none, and says so
            with pytest.raises(ValueError, match="no image feature"):
                R.train(R.Recipe(model=kind, units=12, steps=3), ARM, arm_episodes[:3], progress=False)
            continue
        rec = R.Recipe(model=kind, units=12, steps=3, window=16, batch=4, seed=1)
        res = R.train(rec, ARM, arm_episodes[:3], progress=False, validation=arm_episodes[3:])
        m = res.model
        assert res.fit.steps == 3, kind
        for name, want in (
            ("input_mean", stats.input_mean),
            ("input_std", stats.input_std),
            ("output_mean", stats.output_mean),
            ("output_std", stats.output_std),
        ):
            np.testing.assert_allclose(getattr(m, name).double().numpy(), want, rtol=1e-6, err_msg=kind)
        assert [id(e) for e in res.fit.train_episodes] == [id(e) for e in arm_episodes[:3]]


def test_windows_are_non_overlapping_with_the_tail_aligned_and_short_episodes_padded() -> None:
    a = np.arange(10.0)[:, None]
    w = D.window_stack([a, np.arange(3.0)[:, None] + 100], 4)
    assert w.shape == (4, 4, 1)
    np.testing.assert_array_equal(w[:3, :, 0], [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]])
    np.testing.assert_array_equal(w[3, :, 0], [100, 100, 101, 102])  # left-padded by the first step
    with pytest.raises(ValueError, match="window must be >= 1"):
        D.window_stack([a], 0)


def test_recipe_errors_name_the_field(arm_episodes, tmp_path) -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        R.Recipe(model="transformer")
    with pytest.raises(ValueError, match="barriernet with goal_relabel"):
        R.Recipe(barriernet=True, goal_relabel=2)
    with pytest.raises(ValueError, match="barriernet needs a liquid policy"):
        R.Recipe(model="gru", barriernet=True)
    with pytest.raises(ValueError, match="dagger_beta"):
        R.Recipe(dagger_beta=2.0)
    with pytest.raises(ValueError, match="out: the model file holds liquid policies only"):
        R.train(R.Recipe(model="mlp", epochs=1), ARM, arm_episodes, tmp_path / "m.npz", progress=False)
    with pytest.raises(ValueError, match="config_yaml .* does not exist"):
        R.train(R.Recipe(), tmp_path / "nope.yaml", arm_episodes, progress=False)
    with pytest.raises(D.DataError, match="no training episodes"):
        R.train(R.Recipe(epochs=1), ARM, None, progress=False)


def test_train_demo_policies_script_tiny_seeded_run(tmp_path) -> None:
    """The script's own command line (lnn-control train) with 2 episodes and 1 epoch: a model file."""
    from lnn_control.runtime.model_file import load_stepper

    env = {
        **os.environ,
        "ROBOTS": "arm",
        "EPISODES": "2",
        "EXTRA": "--epochs 1 --eval-episodes 0 --dagger-rounds 0",
        "DATA_DIR": str(tmp_path / "data"),
        "MODELS_DIR": str(tmp_path / "models"),
    }
    script = ROOT / "scripts" / "train_demo_policies.sh"
    py = str(ROOT / ".venv" / "bin" / "python")
    run = subprocess.run(
        ["bash", str(script), py], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    st = load_stepper(tmp_path / "models" / "arm.npz")
    meta = st.metadata["training"]
    assert meta["recipe"]["units"] == 32 and meta["recipe"]["motor"] == 10 and meta["recipe"]["seed"] == 0
    assert meta["goal_relabel"] == 3 and meta["epochs_run"] == 1
    assert meta["n_val"] == 1 and meta["n_train"] == 1 + 3  # one recording and its 3 relabelled copies
    # the arm line trains the residual of the gravity feed-forward from the goal error, as shipped
    assert meta["recipe"]["feedforward"] == "gravity" and meta["recipe"]["inputs"] == "goal_error"
    assert st.feedforward is not None and st.n_inputs == 9 and st.network.n_inputs == 6
