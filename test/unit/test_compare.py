"""lnn_control.analysis.compare: observation vectors, parameter counts, closed loop, a tiny --quick run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lnn_control import strict_json
from lnn_control.analysis import compare as C
from lnn_control.config import config_path, load_observation_config
from lnn_control.sim import episodes
from lnn_control.sim import topics as T


@pytest.mark.parametrize("robot", ["diff_drive", "arm"])
def test_features_match_the_node_observation_map(robot: str) -> None:
    """The fast vectors equal what lnn_controller builds from the simulator's messages."""
    from lnn_control.sim import models as M

    om = load_observation_config(config_path(robot))
    spec = episodes.draw(robot, 3)
    env = episodes.make_env(robot, noise_std=0.02)
    o, goal = spec.reset(env), spec.goal
    rng = np.random.default_rng(0)
    lim = (
        np.array([M.DIFF_DRIVE_V_LIMIT, M.DIFF_DRIVE_OMEGA_LIMIT])
        if robot == "diff_drive"
        else np.asarray(M.ARM_TAU_LIMIT)
    )
    for k in range(15):
        t_ns = k * 20_000_000
        if robot == "diff_drive":
            om.update("/odom", T.odometry(o, t_ns), t_ns)
            om.update("/scan", T.laser_scan(o, t_ns, 0.02), t_ns)
            om.update("/goal_pose", T.pose_stamped(goal[0], goal[1], t_ns), t_ns)
        else:
            om.update("/joint_states", T.joint_state(o, t_ns), t_ns)
            om.update("/goal_joints", {"header": T.header(t_ns, "base_link"), "position": list(goal)}, t_ns)
        np.testing.assert_allclose(C.features(robot, o, goal), om.observation(), rtol=1e-12, atol=1e-12)
        x, fenv = C.filter_state(robot, o)
        np.testing.assert_allclose(x, om.state(), rtol=1e-12, atol=1e-12)
        if robot == "diff_drive":
            assert fenv is not None
            np.testing.assert_allclose(fenv["scan_points"], om.env()["scan_points"], rtol=1e-12, atol=1e-12)
        o = env.step(rng.uniform(-lim, lim), 0.02)


def test_parameter_counts() -> None:
    """Every compared kind comes from the recipe; masked NCP synapses are stored but never trained."""
    from lnn_control.learn import training
    from lnn_control.learn.data import NormStats

    def build(kind: str, n_in: int, n_out: int) -> torch.nn.Module:
        stats = NormStats(np.zeros(n_in), np.ones(n_in), np.zeros(n_out), np.ones(n_out))
        cfg = C.recipe_for(kind, C.CompareConfig(), 0).train_config()
        return training.build_policy(cfg, n_in, n_out, stats)

    assert C.count_parameters(build("mlp", 9, 3), 9) == (9 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3,) * 2
    n = 4 * 64 * (12 + 64 + 2) + 64 * 2 + 2
    assert C.count_parameters(build("lstm", 12, 2), 12) == (n, n)
    g = 3 * 64 * (12 + 64 + 2) + 64 * 2 + 2
    assert C.count_parameters(build("gru", 12, 2), 12) == (g, g)
    total, live = C.count_parameters(build("cfc_ncp19", 12, 2), 12)
    assert live < total < n / 10
    total, live = C.count_parameters(build("ltc_ncp19", 12, 2), 12)
    assert live < total
    with pytest.raises(ValueError, match="kind"):
        C.recipe_for("transformer", C.CompareConfig(), 0)


def test_expert_closed_loop_and_filter() -> None:
    cfg = C.CompareConfig(max_time={"diff_drive": 30.0, "arm": 4.0})
    eps = C.closed_loop("arm", None, [100_000, 100_001], "clean", cfg)
    assert all(e["success"] and e["reached"] and not e["violation"] for e in eps)
    assert all(0 < e["min_barrier"] < 2.0 and e["min_goal_error"] < 0.1 for e in eps)
    filt, note = C.make_filter("arm")
    if filt is not None:
        eps_f = C.closed_loop("arm", None, [100_000], "clean+filter", cfg, filt)
        assert eps_f[0]["success"] and eps_f[0]["min_barrier"] > 0
    with pytest.raises(ValueError, match="condition"):
        C.closed_loop("arm", None, [1], "rain", cfg)


def test_quick_run_writes_a_sane_table(tmp_path) -> None:
    out = tmp_path / "cmp"
    assert C.main(["--quick", "--tasks", "arm", "--out", str(out), "--save-models", str(tmp_path / "m")]) == 0
    r = strict_json.loads((out / "compare.json").read_text())
    assert r["mode"] == "quick" and list(r["tasks"]) == ["arm"]
    task = r["tasks"]["arm"]
    assert set(task["models"]) == set(C.MODELS)
    conds = ["clean", "noise", "drop", "irregular"]
    if task["filter"]["available"]:
        conds.append("clean+filter")
    for m in task["models"].values():
        s = m["summary"]
        assert 0 < s["live_params"] <= s["params"]
        assert math.isfinite(s["imitation_mse"][0]) and s["imitation_mse"][0] > 0
        for c in conds:
            assert 0.0 <= s[f"success[{c}]"][0] <= 1.0
            assert -0.5 < s[f"min_barrier[{c}]"][0] < 3.0  # joint margins in rad
        seed = m["seeds"][0]
        assert seed["conditions"]["clean"]["episodes"] == 2 and seed["optimiser_steps"] == 16
        assert len(seed["curve"]) >= 1 and seed["best_epoch"] < len(seed["curve"])
    p = {k: m["summary"]["params"] for k, m in task["models"].items()}
    assert p["cfc_ncp19"] * 10 < p["lstm"] and p["ltc_ncp19"] * 5 < p["lstm"]
    md = (out / "compare.md").read_text()
    assert "| CfC-NCP(19) |" in md and "| LSTM(64) |" in md and "held-out MSE" in md
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    from lnn_control.runtime.model_file import load_stepper

    saved = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert saved == [f"arm_{k}_seed0.npz" for k in ("cfc_dense", "cfc_ncp19", "ltc_ncp19")]
    st = load_stepper(tmp_path / "m" / "arm_cfc_ncp19_seed0.npz")
    assert st.metadata["robot"] == "arm" and st.metadata["rate_hz"] == 100.0
    assert st.observation is not None and st.observation["features"] == ["q", "dq", "q_goal"]


def test_cli_rejects_bad_arguments(tmp_path, capsys) -> None:
    assert C.main(["--quick", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "seeds" in capsys.readouterr().err
    assert C.main(["--quick", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert C.main(["--report-only", "--out", str(tmp_path / "nothing")]) == 2
    assert "partial" in capsys.readouterr().err


def test_interrupted_run_resumes_from_its_partial_file(tmp_path) -> None:
    import io

    cfg = C.CompareConfig.quick_config()
    cfg.tasks, cfg.models = ("arm",), ("mlp",)
    part = tmp_path / "partial_arm.json"
    first = C.run_task("arm", cfg, None, part)
    saved = json.loads(part.read_text())
    assert list(saved["runs"]) == ["mlp/0"] and saved["expert"] is not None
    log = io.StringIO()
    again = C.run_task("arm", cfg, log, part)
    assert "resuming" in log.getvalue() and "mlp seed 0" not in log.getvalue()
    assert again["models"]["mlp"]["seeds"] == json.loads(json.dumps(first["models"]["mlp"]["seeds"]))
    res = C.results_from_partials(tmp_path)
    assert res["mode"] == "quick (partial)" and res["tasks"]["arm"]["models"]["mlp"]["summary"]["seeds"] == 1
    assert C.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "| MLP(64x2) |" in (tmp_path / "compare.md").read_text()
    cfg.eval_episodes = 3  # another config: nothing is reused
    log = io.StringIO()
    C.run_task("arm", cfg, log, part)
    assert "resuming" not in log.getvalue() and "mlp seed 0" in log.getvalue()
