"""Attention of every compared camera model (issue 14 item 5/6): lane_compare's saved models load
with their steppers, the saliency measures run on the baselines (hidden state carried for the
LSTM, none for the feed-forward CNN), one closed-loop episode end to end, the side-by-side sheet."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from lnn_control.analysis import lane_attention as LA
from lnn_control.analysis import lane_compare as LC


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, int]:
    from lnn_control.config import config_path, load_observation_config
    from lnn_control.learn import training

    om = load_observation_config(config_path("lane"))
    torch.manual_seed(0)
    models = {}
    for kind, units in LC.MODELS:
        tc = training.TrainConfig(model=kind, units=units, seed=0, image=om.images[0], progress=False)
        names = {"input_names": om.names, "output_names": ["v", "omega"]}
        models[kind] = training._vision_policy(tc, om.n_inputs, 2, names).double()
    folder = tmp_path_factory.mktemp("lane_models")
    LC.save_models(models, folder)
    return folder, om.n_inputs


def _obs(n_inputs: int, T: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (T, n_inputs))


def test_load_lane_model_gives_the_right_policy_and_stepper(saved: tuple[pathlib.Path, int]) -> None:
    from lnn_control.nn.vision import ConvBaseline, VisionPolicy

    folder, n = saved
    obs = _obs(n, 3, 0)
    for kind, cls in (("conv_ncp", VisionPolicy), ("conv_lstm", ConvBaseline), ("conv_mlp", ConvBaseline)):
        policy, stepper = LA.load_lane_model(folder / f"{kind}.npz")
        assert isinstance(policy, cls) and policy.head.map_weight.dtype == torch.float64
        with torch.no_grad():
            y, _ = policy(torch.as_tensor(obs[None]), torch.full((1, 3, 1), 0.05, dtype=torch.float64))
        stepper.reset()
        steps = np.stack([stepper.step(o, 0.05) for o in obs])
        np.testing.assert_allclose(steps[:, :2], y[0].numpy(), rtol=0, atol=1e-9)
    if (pathlib.Path("models") / "lane.npz").is_file():  # the shipped model: the torch-free stepper
        policy, stepper = LA.load_lane_model("models/lane.npz")
        assert isinstance(policy, VisionPolicy) and type(stepper).__name__ != "TorchStepper"


def test_saliency_carries_memory_only_where_there_is_some(
    saved: tuple[pathlib.Path, int],
) -> None:
    folder, n = saved
    a, b = _obs(n, 3, 1), _obs(n, 3, 1)
    b[0] = _obs(n, 1, 2)[0]  # only the first frame differs
    dt = np.full(3, 0.05)
    for kind, memory in (("conv_lstm", True), ("conv_mlp", False), ("conv_ncp", True)):
        policy, _ = LA.load_lane_model(folder / f"{kind}.npz")
        va, ga = LA.saliency_maps(policy, a, dt)
        vb, gb = LA.saliency_maps(policy, b, dt)
        assert va.shape == ga.shape == (3, 48, 64) and (va >= 0).all() and (ga >= 0).all()
        assert ga[2].sum() > 0
        # VisualBackProp reads the frame through the head only: the same frame, the same map
        np.testing.assert_allclose(va[1:], vb[1:], rtol=0, atol=1e-12)
        # the gradient at frame 2 depends on frame 0 only through a hidden state
        differs = not np.allclose(ga[2], gb[2], rtol=1e-9, atol=1e-15)
        assert differs == memory, kind


def test_episode_saliency_of_a_baseline_and_the_side_by_side_sheet(
    saved: tuple[pathlib.Path, int], tmp_path: pathlib.Path
) -> None:
    folder, _ = saved
    ep = LA.episode_saliency(folder / "conv_mlp.npz", 100_000, distractors=4, max_time=1.0)
    T = len(ep["images"])
    assert T >= 15 and ep["images"].dtype == np.uint8
    assert ep["labels"].shape == ep["vbp"].shape == ep["grad"].shape == (T, 48, 64)
    assert ep["obs"].shape[0] == T and (ep["dt"] > 0).all()
    shares = LA.attention_shares(ep["grad"], ep["labels"])
    total = shares["road"]["saliency_share"] + shares["off_road"]["saliency_share"]
    assert total == pytest.approx(1.0, abs=1e-9)  # every pixel is road or off-road
    lstm, _ = LA.load_lane_model(folder / "conv_lstm.npz")
    maps = {"conv_mlp": (ep["vbp"], ep["grad"]), "conv_lstm": LA.saliency_maps(lstm, ep["obs"], ep["dt"])}
    out = tmp_path / "sheet.png"
    LA.compare_sheet(ep["images"], maps, out, frames=4)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size < 300_000
