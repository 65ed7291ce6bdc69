"""Camera policy: conv head -> 32 features -> 19-neuron NCP; the numpy runtime equals torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnn_control.nn.vision import ConvHead, VisionPolicy, conv_output_shape
from lnn_control.runtime.vision import ConvHeadRuntime, VisionStepper
from lnn_control.sim.lane import LaneEnv, LaneExpert

pytestmark = pytest.mark.usefixtures("torch_float64_seeded")


def _camera_frames(n: int, mono: bool = False) -> np.ndarray:
    """n consecutive camera frames (n, H, W, C) of the expert driving track 2."""
    env = LaneEnv(2, mono=mono)
    env.reset(seed=0)
    expert = LaneExpert(env.track)
    frames = []
    for _ in range(n):
        obs = env.step(expert.command(env.pose), 0.05)
        frames.append(obs.image if not mono else obs.image[:, :, None])
    return np.stack(frames)


def _scaled(policy: VisionPolicy) -> VisionPolicy:
    """Weights scaled up so the features are O(1) (random init gives ~0.1): a stronger check."""
    with torch.no_grad():
        policy.head.map_weight.mul_(8.0)
    return policy


def test_shape_is_the_ncp_lane_keeping_head() -> None:
    p = VisionPolicy(cell="ltc", n_outputs=1)
    assert p.head.n_maps == 8 and p.head.features_per_map == 4 and p.head.n_features == 32
    assert conv_output_shape(48, 64, [5, 3, 3], [2, 2, 1]) == (8, 12)
    w = p.policy.net.wiring
    assert w.units == 19 and w.output_dim == 1 and p.policy.n_inputs == 32
    # each last-layer map feeds only its own 4 features
    x = torch.as_tensor(_camera_frames(1))
    base = p.head(x)
    with torch.no_grad():
        p.head.map_weight[2].add_(0.5)
    changed = (p.head(x) - base).abs()[0] > 0
    assert changed.nonzero().flatten().tolist() == [8, 9, 10, 11]


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
@pytest.mark.parametrize("mono", [False, True])
def test_numpy_runtime_equals_torch_float64(cell: str, mono: bool) -> None:
    head = {"in_channels": 1} if mono else None
    policy = _scaled(VisionPolicy(head, cell=cell, n_outputs=2))
    frames = _camera_frames(6, mono)
    with torch.no_grad():
        feats = policy.features(torch.as_tensor(frames[None]))[0].numpy()
        y, h = policy(torch.as_tensor(frames[None]), 0.05)
    assert np.abs(feats).max() > 0.3  # not a check of near-zero numbers
    stepper = policy.runtime(np.float64)
    ys, fs = [], []
    for f in frames:
        fs.append(stepper.head(f if not mono else f[:, :, 0]))
        ys.append(stepper.step(f, 0.05))
    np.testing.assert_allclose(np.array(fs), feats, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.array(ys), y[0].numpy(), rtol=0, atol=1e-10)
    stepper.reset()
    np.testing.assert_allclose(stepper.step(frames[0], 0.05), ys[0], atol=1e-12)


def test_numpy_runtime_float32_matches_torch_float32() -> None:
    policy = _scaled(VisionPolicy(cell="cfc", n_outputs=1)).float()
    frames = _camera_frames(4)
    with torch.no_grad():
        feats = policy.features(torch.as_tensor(frames[None]))[0].numpy()
        y, _ = policy(torch.as_tensor(frames[None]), 0.05)
    stepper = policy.runtime(np.float32)
    fs = np.array([stepper.head(f) for f in frames])
    ys = np.array([stepper.step(f, 0.05) for f in frames])
    assert fs.dtype == np.float32
    # float32 rounding over sums of up to 400 products: ~1e-6 relative to the O(1) features
    np.testing.assert_allclose(fs, feats, rtol=0, atol=5e-6 * np.abs(feats).max())
    np.testing.assert_allclose(ys, y[0].numpy(), rtol=0, atol=1e-5)


def test_config_round_trip_and_head_gradcheck() -> None:
    policy = VisionPolicy(cell="cfc", n_outputs=1)
    twin = VisionPolicy.from_config(policy.get_config())
    twin.load_state_dict(policy.state_dict())
    x = torch.as_tensor(_camera_frames(2)[None])
    with torch.no_grad():
        torch.testing.assert_close(twin(x, 0.05)[0], policy(x, 0.05)[0], rtol=0, atol=0)
    small = ConvHead(height=7, width=9, in_channels=2, channels=[3, 2], kernels=[3, 2], strides=[2, 1])
    img = torch.rand(1, 7, 9, 2, dtype=torch.float64) * 255
    assert torch.autograd.gradcheck(lambda a: small(a), (img.requires_grad_(),))
    # and the runtime agrees on that small, odd-sized head too
    rt = ConvHeadRuntime(small.get_config(), {k: v.detach().numpy() for k, v in small.state_dict().items()})
    np.testing.assert_allclose(rt(img[0].detach().numpy()), small(img).detach().numpy()[0], atol=1e-12)


def test_errors_name_the_argument() -> None:
    policy = VisionPolicy(n_outputs=1)
    with pytest.raises(ValueError, match="images must be a tensor"):
        policy(torch.zeros(1, 2, 48, 64))
    stepper = policy.runtime()
    with pytest.raises(ValueError, match=r"image must have shape \(48, 64, 3\)"):
        stepper.step(np.zeros((64, 48, 3)), 0.05)
    with pytest.raises(ValueError, match="too small"):
        ConvHead(height=8, width=8)
    with pytest.raises(ValueError, match="one entry per layer"):
        ConvHead(channels=[4, 8], kernels=[3], strides=[1])
    arrays = policy.numpy_state()
    del arrays["head.map_bias"]
    with pytest.raises(ValueError, match="map_bias"):
        VisionStepper(policy.get_config(), arrays)
    with pytest.raises(ValueError, match="'head' and 'policy'"):
        VisionStepper({"policy": {}}, policy.numpy_state())


def test_flat_observation_policy_model_file_and_control_step(tmp_path) -> None:
    """conv_ncp as the recipe trains it: the flat observation of config/lane.yaml (grey image +
    speed) -> model file -> torch-free load_stepper, equal to torch, run by ControlStep."""
    from barriernet.safety_filter import SafetyFilter
    from lnn_control.config import config_path, load_filter_config, load_observation_config
    from lnn_control.control.step import ControlStep
    from lnn_control.learn.data import Episode, norm_stats
    from lnn_control.learn.training import TrainConfig, build_policy
    from lnn_control.runtime.model_file import load_policy, load_stepper, save_policy
    from lnn_control.sim.rollout import ClosedLoop

    cfg = config_path("lane")
    om = load_observation_config(cfg)
    assert om.images == [
        {"name": "camera", "offset": 0, "height": 48, "width": 64, "channels": 1,
         "scale": 1 / 255, "offset_value": 0.0}
    ]  # fmt: skip
    res = ClosedLoop("lane", cfg, safety_filter=True).run(None, 50500, max_time=3.0)
    ep: Episode = res.episode
    assert ep.obs.shape == (len(ep.dt), 64 * 48 + 1)
    tc = TrainConfig(model="conv_ncp", units=19, seed=3, image=om.images[0], progress=False)
    policy = build_policy(tc, om.n_inputs, 2, norm_stats([ep]), om.names, ["v", "omega"]).double()
    assert policy.policy.net.wiring.units == 19 and policy.head.n_features == 32
    assert policy.policy.n_inputs == 33 and policy.n_inputs == 64 * 48 + 1
    # only the speed's statistics reach the NCP; the 32 features are not normalised
    np.testing.assert_allclose(policy.policy.input_mean[32].item(), ep.obs[:, -1].mean(), rtol=1e-12)
    assert float(policy.policy.input_std[:32].sub(1).abs().max()) == 0.0
    with torch.no_grad():
        y, _ = policy(torch.as_tensor(ep.obs[None]), torch.as_tensor(ep.dt[None]))
    path = save_policy(tmp_path / "lane.npz", policy, observation=None, robot="lane")
    stepper = load_stepper(path)
    assert type(stepper).__name__ == "VisionStepper" and stepper.n_inputs == om.n_inputs
    ys = np.array([stepper.step(o, d) for o, d in zip(ep.obs, ep.dt)])
    scale = float(np.abs(y[0].numpy()).max())
    assert scale > 0.05
    np.testing.assert_allclose(ys, y[0].numpy(), rtol=0, atol=1e-9 * scale)  # issue: 1e-6
    twin = load_policy(path)
    with torch.no_grad():
        torch.testing.assert_close(twin(torch.as_tensor(ep.obs[None]), torch.as_tensor(ep.dt[None]))[0], y)
    # the node's per-message logic runs it (dry step, box, filter)
    ControlStep(om, stepper, SafetyFilter.from_config(load_filter_config(cfg)))
    with pytest.raises(ValueError, match=r"obs must have shape \(3073,\)"):
        stepper.step(np.zeros(3072), 0.05)


@pytest.mark.parametrize("kind", ["conv_lstm", "conv_mlp"])
def test_conv_baselines_share_the_head_and_the_flat_layout(kind: str) -> None:
    """The comparison models: the same conv head and flat observation, an LSTM or MLP core; their
    torch stepper equals the sequence forward (the LSTM carries its state, the MLP has none)."""
    from lnn_control.learn.data import NormStats
    from lnn_control.learn.training import TrainConfig, build_policy

    n = 64 * 48 + 1
    img = {"offset": 0, "height": 48, "width": 64, "channels": 1, "scale": 1 / 255, "offset_value": 0.0}
    tc = TrainConfig(model=kind, units=16, image=img, progress=False)
    stats = NormStats(np.zeros(n), np.ones(n), np.zeros(2), np.ones(2))
    m = build_policy(tc, n, 2, stats).double()
    assert m.head.n_features == 32 and m.policy.n_inputs == 33 and m.n_inputs == n
    x = torch.rand(1, 6, n, dtype=torch.float64)
    with torch.no_grad():
        y, _ = m(x)
    st = m.runtime()
    ys = np.array([st.step(o, 0.05) for o in x[0].numpy()])
    np.testing.assert_allclose(ys, y[0].numpy(), atol=1e-12)
    if kind == "conv_mlp":  # memoryless: each output depends on its own frame only
        with torch.no_grad():
            np.testing.assert_allclose(m(x[:, 3:4])[0][0, 0].numpy(), y[0, 3].numpy(), atol=1e-12)
