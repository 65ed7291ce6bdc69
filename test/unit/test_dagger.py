"""Closed-loop rollouts with the node's observation mapping, and DAgger aggregation (no ROS)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from lnn_control.config import load_observation_config
from lnn_control.learn import dagger, record
from lnn_control.learn import training as tr
from lnn_control.sim.rollout import ClosedLoop

torch.set_num_threads(1)
CONFIG = pathlib.Path(__file__).resolve().parents[2] / "config"


def test_expert_rollout_equals_the_recorded_bag(tmp_path) -> None:
    """Same seed: the in-process episode has exactly the observations and commands the bag pipeline gives."""
    loop = ClosedLoop("arm", CONFIG / "arm.yaml")
    res = loop.run(None, seed=3)
    assert res.reached and not res.collided and res.min_margin > 0
    rec = record.record_episode("arm", tmp_path / "ep", seed=3)
    obs_map = load_observation_config(CONFIG / "arm.yaml")
    ep = tr.episode_from_bag(tmp_path / "ep", obs_map, obs_map.command_topic, obs_map.command_fields)
    assert rec.reached and ep.obs.shape == res.episode.obs.shape
    np.testing.assert_allclose(res.episode.obs, ep.obs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.episode.target, ep.target, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.episode.dt, ep.dt, rtol=1e-9)
    assert loop.input_names == obs_map.names and loop.n_commands == 3


class _Replay:
    """A 'policy' that replays fixed commands (to check what run() applies and labels)."""

    def __init__(self, u: np.ndarray) -> None:
        self.u, self.calls = u, 0

    def reset(self) -> None:
        self.calls = 0

    def step(self, obs: np.ndarray, dt: float) -> np.ndarray:
        self.calls += 1
        return self.u


def test_policy_rollout_is_labelled_by_the_expert_and_mixture_is_seeded() -> None:
    loop = ClosedLoop("diff_drive", CONFIG / "diff_drive.yaml")
    still = _Replay(np.zeros(2))
    res = loop.run(still, seed=5, max_time=1.0)
    assert not res.reached and still.calls == len(res.episode.dt) - 1
    # the robot never moved, yet every label is the expert's (non-zero) command for that state
    assert np.all(np.abs(res.episode.target).sum(axis=1) > 0)
    np.testing.assert_allclose(res.episode.obs[0], res.episode.obs[-1])
    a = loop.run(still, seed=5, max_time=1.0, beta=0.5)
    b = loop.run(still, seed=5, max_time=1.0, beta=0.5)
    np.testing.assert_array_equal(a.episode.obs, b.episode.obs)
    assert not np.allclose(a.episode.obs[0], a.episode.obs[-1])  # expert steps moved it
    with pytest.raises(ValueError, match="beta"):
        loop.run(still, seed=5, beta=1.5)
    with pytest.raises(ValueError, match="robot"):
        ClosedLoop("tank", CONFIG / "arm.yaml")


def test_filter_in_the_loop_applies_the_configs_filter_and_records_its_inputs() -> None:
    """safety_filter=True: every applied command is the config's SafetyFilter output for the mapped
    state (as the node sends it), and episodes carry that state and env for BarrierNet training."""
    from barriernet.safety_filter import SafetyFilter
    from lnn_control.config import load_filter_config

    plain = ClosedLoop("diff_drive", CONFIG / "diff_drive.yaml")
    loop = ClosedLoop("diff_drive", CONFIG / "diff_drive.yaml", safety_filter=True)
    assert plain.safety_filter is None and isinstance(loop.safety_filter, SafetyFilter)
    full = np.array([0.6, 0.0])  # full speed straight ahead, whatever is there
    res = loop.run(_Replay(full), seed=4, max_time=6.0, record_filter=True)
    raw = plain.run(_Replay(full), seed=4, max_time=6.0)
    assert raw.collided and not res.collided  # unfiltered it drives into something; filtered never
    assert res.interventions > 0 and res.fallbacks == 0 and res.min_margin > 0
    ep = res.episode
    assert ep.state is not None and ep.env is not None
    assert ep.state.shape == (len(ep.dt), 3) and len(ep.env) == len(ep.dt)
    assert ep.env[0]["scan_points"].shape[1] == 2
    # replaying the recorded inputs through a fresh filter gives commands inside the box that keep
    # every barrier row: what the run applied
    f = SafetyFilter.from_config(load_filter_config(CONFIG / "diff_drive.yaml"))
    for k in range(0, len(ep.dt) - 1, 25):
        u, rep = f.filter(ep.state[k], full, env=ep.env[k])
        assert not rep.fallback_used and np.all(u <= f.upper) and np.all(u >= f.lower)
    assert raw.episode.state is None  # recorded only when asked (record_filter)


def test_filtered_expert_reaches_its_goals() -> None:
    """The expert's paths keep outside the band where the filter acts, so filtering it as deployed
    does not stall it (with 0.12 m clearance it stalled in half of the episodes)."""
    loop = ClosedLoop("diff_drive", CONFIG / "diff_drive.yaml", safety_filter=True)
    res = [loop.run(None, 10_000 + i) for i in range(1, 5)]
    assert all(r.reached and not r.collided for r in res), [(r.reached, r.min_margin) for r in res]


def test_dagger_aggregates_policy_rollouts() -> None:
    loop = ClosedLoop("arm", CONFIG / "arm.yaml")
    demos = [loop.run(None, s).episode for s in (1, 2)]
    sizes: list[int] = []

    def train(data, prev):
        sizes.append(len(data))
        cfg = tr.TrainConfig(units=8, epochs=1, window=16, seed=0, progress=False)
        return tr.train_policy([], cfg, split=(data, []), init=prev).model

    policy, hist = dagger.dagger(loop, demos, train, rounds=1, episodes_per_round=2, seed=0, eval_seeds=[9])
    assert sizes == [2, 4]  # round 1 trains on the demos plus two relabelled policy rollouts
    assert [h["round"] for h in hist] == [0, 1] and hist[1]["data_episodes"] == 4
    assert 0.0 <= hist[1]["success"] <= 1.0
    assert policy.runtime().step(np.zeros(9), 0.01).shape == (3,)


def test_arm_pd_expert_reaches_goals_within_limits_and_rejects_bad_gains() -> None:
    from lnn_control.sim.experts import ArmPDExpert

    loop = ClosedLoop("arm", CONFIG / "arm.yaml")
    results = [loop.run(None, seed=s) for s in range(20, 24)]
    assert all(r.reached and not r.collided and r.min_margin > 0 for r in results)
    assert max(r.time_s for r in results) < 4.0
    with pytest.raises(ValueError, match="kp and kd"):
        ArmPDExpert(loop.env.model, kp=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="dq_max"):
        ArmPDExpert(loop.env.model, dq_max=3.0)


def test_goal_relabelling_gives_expert_labels_for_new_goals() -> None:
    loop = ClosedLoop("arm", CONFIG / "arm.yaml")
    demo = loop.run(None, seed=4).episode
    out = dagger.relabel_goals(loop, [demo], copies=2, seed=0)
    assert len(out) == 2
    for e in out:
        goal = e.obs[0, 6:9]
        assert np.all(e.obs[:, 6:9] == goal) and not np.allclose(goal, demo.obs[0, 6:9])
        np.testing.assert_array_equal(e.obs[:, :6], demo.obs[:, :6])  # same states, new goal
        k = len(e.dt) // 2
        np.testing.assert_allclose(e.target[k], loop.expert(e.obs[k, :3], e.obs[k, 3:6], goal))
    with pytest.raises(ValueError, match="arm"):
        dagger.relabel_goals(ClosedLoop("diff_drive", CONFIG / "diff_drive.yaml"), [demo], 1, 0)


def test_committed_barriernet_policy_drives_through_the_filter_with_its_gains() -> None:
    """models/diff_drive_barriernet.npz (scripts/train_demo_policies.sh, BARRIERNET=1): its gain
    outputs are named as the config's filter gains and are what the filter uses in the loop."""
    from lnn_control.runtime.model_file import load_stepper

    loop = ClosedLoop("diff_drive", CONFIG / "diff_drive.yaml", safety_filter=True)
    policy = load_stepper(CONFIG.parent / "models" / "diff_drive_barriernet.npz")
    assert policy.gain_names == list(loop.safety_filter.gain_names)
    y = policy.step(np.zeros(policy.n_inputs), 0.02)
    assert np.all(y[2:] > 0) and np.all(y[2:] < policy.gain_scale)
    res = loop.run(policy, seed=50_003)  # a held-out episode it completes (12/20 of 50000-50019)
    assert res.reached and not res.collided and res.fallbacks == 0 and res.interventions > 0
