"""The model-based feed-forward and input map around a residual network (lnn_control.runtime.feedforward):
the runtime gravity against MuJoCo's own, model files with and without it, the deployed step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from lnn_control.learn.data import Episode, Structure
from lnn_control.learn.recipe import Recipe, structure_for
from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP
from lnn_control.runtime.feedforward import (
    FeedforwardStepper,
    GravityPitchChain,
    build_feedforward,
    gravity_pitch_chain_config,
)
from lnn_control.runtime.model_file import (
    ModelFileError,
    load_policy,
    load_stepper,
    read_model_file,
    save_policy,
)
from lnn_control.runtime.stepper import PolicyStepper
from lnn_control.sim import models as M

ROOT = Path(__file__).resolve().parents[2]


def _arm() -> tuple[mujoco.MjModel, mujoco.MjData]:
    m = mujoco.MjModel.from_xml_string(M.arm_mjcf())
    return m, mujoco.MjData(m)


def _mujoco_gravity(m: mujoco.MjModel, d: mujoco.MjData, q: np.ndarray) -> np.ndarray:
    d.qpos[:] = q
    d.qvel[:] = 0.0
    mujoco.mj_forward(m, d)
    return d.qfrc_bias.copy()


def _config_path() -> Path:
    return ROOT / "config" / "arm.yaml"


def test_gravity_matches_mujoco_bias_at_rest() -> None:
    """The analytic pitch-chain gravity from the MJCF's masses equals MuJoCo's qfrc_bias at dq = 0
    (float64, 1e-9) over the whole joint box, per step and batched, with q anywhere in o."""
    m, d = _arm()
    cfg = gravity_pitch_chain_config(m, q_index=[4, 5, 6])
    assert cfg["joints"] == [1, 2] and cfg["gravity"] == pytest.approx(9.81)
    ff = build_feedforward(json.loads(json.dumps(cfg)))  # as read back from a model file
    rng = np.random.default_rng(0)
    obs, want = [], []
    for _ in range(500):
        q = rng.uniform(M.ARM_Q_LOWER, M.ARM_Q_UPPER)
        o = rng.normal(size=9)
        o[4:7] = q
        g = _mujoco_gravity(m, d, q)
        np.testing.assert_allclose(ff(o), g, rtol=0, atol=1e-9)
        obs.append(o)
        want.append(g)
    np.testing.assert_allclose(ff(np.array(obs)), np.array(want), rtol=0, atol=1e-9)
    assert np.abs(np.array(want)[:, 1]).max() > 4.0  # joint 2 carries several N m: a real test


def test_gravity_config_refuses_other_models_and_bad_sections() -> None:
    with pytest.raises(ValueError, match="hinge|chain|axis"):
        gravity_pitch_chain_config(mujoco.MjModel.from_xml_string(M.mjcf_for("diff_drive")))
    good = gravity_pitch_chain_config(_arm()[0])
    for change, match in (
        ({"kind": "magic"}, "kind 'magic' is unknown"),
        ({"moments": [[0.5, 0.0]]}, "moments must be 2 finite"),
        ({"moments": [[0.5, math.nan], [0.1, 0.0]]}, "moments must be 2 finite"),
        ({"joints": [1, 5]}, "beyond q_index"),
        ({"q_index": [0, -1, 2]}, "indices >= 0"),
        ({"gravity": -9.81}, "gravity must be finite"),
    ):
        with pytest.raises(ValueError, match=match):
            build_feedforward({**good, **change})


@pytest.fixture
def residual_net() -> LiquidPolicy:
    torch.manual_seed(0)
    p = LiquidPolicy(
        6,
        "cfc",
        AutoNCP(12, 3, seed=3),
        proj_size=3,
        input_names=[f"goal_error[{i}]" for i in range(3)] + [f"dq[{i}]" for i in range(3)],
        output_names=["tau1", "tau2", "tau3"],
    ).eval()
    p.set_normalization(np.zeros(6), np.ones(6), [0.1, -0.2, 0.3], [2.0, 3.0, 1.0])
    return p.double()


def _arm_structure() -> Structure:
    from lnn_control.config import load_observation_config

    s = structure_for(
        Recipe(feedforward="gravity", inputs="goal_error"), "arm", load_observation_config(_config_path())
    )
    assert s is not None
    return s


def test_model_file_round_trip_with_feedforward(tmp_path: Path, residual_net: LiquidPolicy) -> None:
    """A v2 file: load_stepper runs [net(A o) + g(q)] on the raw observation, equal to a hand-built
    composition with MuJoCo's gravity; the torch network alone comes back from load_policy."""
    s = _arm_structure()
    path = save_policy(
        tmp_path / "arm", residual_net, feedforward=s.feedforward, input_map=s.input_map, robot="arm"
    )
    config, _ = read_model_file(path)
    assert config["format_version"] == 2 and config["feedforward"]["kind"] == "gravity_pitch_chain"
    st = load_stepper(path)
    assert isinstance(st, FeedforwardStepper) and st.n_inputs == 9 and st.n_commands == 3
    assert st.input_names[:3] == ["q[0]", "q[1]", "q[2]"] and st.network.n_inputs == 6
    assert st.metadata["robot"] == "arm" and st.output_names == ["tau1", "tau2", "tau3"]
    net = residual_net.runtime()
    m, d = _arm()
    rng = np.random.default_rng(1)
    for k in range(50):
        q = rng.uniform(M.ARM_Q_LOWER, M.ARM_Q_UPPER)
        dq, goal = rng.normal(size=3), rng.uniform(M.ARM_Q_LOWER, M.ARM_Q_UPPER)
        o = np.concatenate([q, dq, goal])
        dt = 0.01 * (1 + k % 3)
        want = net.step(np.concatenate([goal - q, dq]), dt) + _mujoco_gravity(m, d, q)
        np.testing.assert_allclose(st.step(o, dt), want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(st.state, net.state, rtol=0, atol=0)
    st.reset()
    assert np.all(st.state == 0)
    with pytest.raises(ValueError, match="obs must have shape"):
        st.step(np.zeros(6), 0.01)
    with pytest.raises(ValueError, match="NaN"):
        st.step(np.full(9, np.nan), 0.01)
    with pytest.raises(ValueError, match="dt"):
        st.step(np.zeros(9), 0.0)
    back = load_policy(path)
    assert back.n_inputs == 6  # the residual network itself


def test_files_without_feedforward_still_load(tmp_path: Path, residual_net: LiquidPolicy) -> None:
    """A file without the sections is written and read as version 1 and gives a plain PolicyStepper;
    a version-1 file that claims a feed-forward, or a broken section, is refused with the reason."""
    path = save_policy(tmp_path / "plain", residual_net)
    config, arrays = read_model_file(path)
    assert config["format_version"] == 1 and "feedforward" not in config
    assert type(load_stepper(path)) is PolicyStepper
    s = _arm_structure()
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for name, cfg, match in (
        ("v1ff", {**config, "feedforward": s.feedforward}, "format_version 1 cannot hold"),
        ("badkind", {**config, "format_version": 2, "feedforward": {"kind": "x"}}, "kind 'x' is unknown"),
        (
            "badmap",
            {**config, "format_version": 2, "input_map": {"matrix": [[1.0] * 9] * 5}},
            "input_map gives 5 inputs, the network takes 6",
        ),
        ("v3", {**config, "format_version": 3}, "this code reads 1 and 2"),
    ):
        bad = tmp_path / f"{name}.npz"
        np.savez(bad, **{**arrays, "__config__": np.array(json.dumps(cfg))})
        with pytest.raises(ModelFileError, match=match):
            load_stepper(bad)
    with pytest.raises(ValueError, match="do not fit the policy"):
        save_policy(tmp_path / "wrong", residual_net, feedforward={**s.feedforward, "q_index": [20, 21, 22]})


def test_residual_episodes_and_recipe_checks() -> None:
    s = _arm_structure()
    rng = np.random.default_rng(2)
    obs = rng.uniform(-1, 1, size=(20, 9))
    target = rng.normal(size=(20, 3))
    e = s.residual(Episode(obs, np.full(20, 0.01), target, source="x"))
    m, d = _arm()
    g = np.array([_mujoco_gravity(m, d, o[:3]) for o in obs])
    np.testing.assert_allclose(e.target, target - g, rtol=0, atol=1e-9)
    np.testing.assert_allclose(e.obs, np.concatenate([obs[:, 6:9] - obs[:, :3], obs[:, 3:6]], 1), atol=1e-12)
    assert s.input_names == ["goal_error[0]", "goal_error[1]", "goal_error[2]", "dq[0]", "dq[1]", "dq[2]"]
    with pytest.raises(ValueError, match="feedforward must be one of"):
        Recipe(feedforward="inverse_dynamics")
    with pytest.raises(ValueError, match="barriernet"):
        Recipe(feedforward="gravity", barriernet=True)
    from lnn_control.config import load_observation_config

    with pytest.raises(ValueError, match="only the built-in arm"):
        structure_for(
            Recipe(feedforward="gravity"),
            "diff_drive",
            load_observation_config(ROOT / "config" / "diff_drive.yaml"),
        )
    assert structure_for(Recipe(), "arm", load_observation_config(_config_path())) is None


def test_shipped_arm_model_deploys_the_feedforward() -> None:
    """models/arm.npz declares the gravity feed-forward, and the deployed ControlStep's nominal
    command is the network's residual plus MuJoCo's gravity torque at the measured q."""
    from lnn_control.control.step import ControlStep
    from lnn_control.sim.rollout import ClosedLoop

    model = ROOT / "models" / "arm.npz"
    config, _ = read_model_file(model)
    assert config["feedforward"]["kind"] == "gravity_pitch_chain"
    step = ControlStep.from_files(_config_path(), model)
    assert isinstance(step.stepper, FeedforwardStepper)
    m, d = _arm()
    res = ClosedLoop("arm", _config_path(), safety_filter=True).run(load_stepper(model), 7, max_time=1.0)
    assert res.episode.obs.shape[0] > 50
    deployed, net = load_stepper(model), load_stepper(model).network
    for o, dt in zip(res.episode.obs, res.episode.dt):
        want = net.step(np.concatenate([o[6:9] - o[:3], o[3:6]]), dt) + _mujoco_gravity(m, d, o[:3])
        np.testing.assert_allclose(deployed.step(o, dt), want, rtol=0, atol=1e-9)


def test_gravity_step_and_batch_agree_on_a_longer_chain() -> None:
    """A 4-link pitch chain (no yaw base) with off-axis centres of mass: still MuJoCo's bias."""
    xml = """
<mujoco><option gravity="0 0 -9.81"/><worldbody>
 <body name="a"><joint name="j0" type="hinge" axis="0 1 0"/>
  <geom type="sphere" size="0.02" pos="0.3 0 0.05" mass="1.2"/>
  <body name="b" pos="0.4 0 0.02"><joint name="j1" type="hinge" axis="0 1 0"/>
   <geom type="sphere" size="0.02" pos="0.2 0 -0.03" mass="0.7"/>
   <body name="c" pos="0.3 0 0"><joint name="j2" type="hinge" axis="0 1 0"/>
    <geom type="sphere" size="0.02" pos="0.1 0 0" mass="0.4"/>
    <body name="d" pos="0.2 0 0.01"><joint name="j3" type="hinge" axis="0 1 0"/>
     <geom type="sphere" size="0.02" pos="0.05 0 0.02" mass="0.2"/>
 </body></body></body></body></worldbody></mujoco>"""
    m = mujoco.MjModel.from_xml_string(xml)
    d = mujoco.MjData(m)
    ff = GravityPitchChain(gravity_pitch_chain_config(m))
    rng = np.random.default_rng(3)
    for _ in range(200):
        q = rng.uniform(-3, 3, size=4)
        np.testing.assert_allclose(ff(q), _mujoco_gravity(m, d, q), rtol=0, atol=1e-9)
