"""The closed-loop demo: figures against hand-computed answers, and a short real run over ROS 2.

The real run starts ``mujoco_sim`` and ``lnn_controller`` as processes (both robots, one short
episode each, the committed models, filter on) and checks ``summary.json``: every figure present
and finite where it must be, no collision and no position, velocity or torque limit crossed, the
plots written, exit status 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lnn_control import strict_json
from lnn_control.ros import demo

ARM_FIELDS = [
    "margin_joint1",
    "margin_joint2",
    "margin_joint3",
    "max_tau_ratio",
    "collision",
    "max_dq_ratio",
    "goal_error",
]
DD_FIELDS = ["min_clearance", "collision", "goal_distance", "x", "y", "theta"]


def _status(barriers: list[float], intervened: bool = False, fallback: str = "") -> dict:
    return {
        "barrier_values": barriers,
        "intervened": intervened,
        "fallback_used": bool(fallback),
        "fallback_reason": fallback,
    }


def test_summarize_arm_known_answers() -> None:
    gt = np.array(
        [
            [0.5, 0.4, 0.3, 0.2, 0.0, 0.1, 1.0],
            [0.4, 0.3, 0.2, 0.9, 0.0, 0.5, 0.5],
            [0.3, -0.01, 0.2, 1.2, 0.0, 0.5, 0.1],  # joint2 past its limit and torque over: 1 tick
        ]
    )
    st = [_status([0.5, 0.2]), _status([0.1, 0.3], intervened=True), _status([0.05], fallback="stale /scan")]
    s = demo.summarize("arm", gt, ARM_FIELDS, st, [0.001, 0.002, 0.003, 0.004], reached=True, duration=2.5)
    assert s["violations"] == 1
    assert s["violations_by"] == {"joint_position": 1, "joint_velocity": 0, "effort": 1, "floor_contact": 0}
    assert s["min_barrier"] == -0.01  # ground truth: smallest joint margin
    assert s["min_filter_barrier"] == 0.05
    assert s["max_effort_ratio"] == 1.2  # from max_tau_ratio without commands
    assert s["max_dq_ratio"] == 0.5
    assert (s["interventions"], s["fallbacks"]) == (1, 1)
    assert s["fallback_reasons"] == {"stale /scan": 1}
    assert s["latency_p50_ms"] == pytest.approx(2.5)
    assert s["latency_p99_ms"] == pytest.approx(3.97)
    assert s["reached"] and s["time_s"] == 2.5
    cmds = np.array([[10.0, -7.0, 1.0], [-4.0, 3.5, 3.0]])
    s = demo.summarize("arm", gt, ARM_FIELDS, st, [], True, 1.0, cmds, [20.0, 14.0, 6.0])
    assert s["max_effort_ratio"] == 0.5  # |10|/20 = |-7|/14 = |3|/6


def test_summarize_diff_drive_collision_and_empty_status() -> None:
    gt = np.array([[0.3, 0, 1.0, 0, 0, 0], [0.0, 1, 0.9, 0, 0, 0], [-0.02, 1, 0.8, 0, 0, 0]], dtype=float)
    s = demo.summarize("diff_drive", gt, DD_FIELDS, [], [], reached=False, duration=10.0)
    assert s["violations"] == 2 and s["min_barrier"] == -0.02 and s["violations_by"] == {"collision": 2}
    assert math.isnan(s["min_filter_barrier"]) and math.isnan(s["latency_p50_ms"])
    assert math.isnan(s["max_dq_ratio"])  # no such column for the base
    gt = np.array([[0.5, 0.4, 0.3, 0.2, 0.0, 1.02, 1.0]])  # 2 % over the velocity limit: one tick
    s = demo.summarize("arm", gt, ARM_FIELDS, [], [], reached=False, duration=1.0)
    assert s["violations"] == 1 and s["violations_by"]["joint_velocity"] == 1 and s["max_dq_ratio"] == 1.02


def test_trim_before_drops_the_warm_up_by_arrival_and_stamp() -> None:
    st = [_status([1.0]) for _ in range(6)]
    ep = demo.EpisodeLog(start=[0.0] * 3, goal=[0.0] * 3)
    ep.gt, ep.gt_t = [[0.0]] * 4, [0.98, 0.99, 1.0, 1.01]
    # two statuses before the reset request (one a watchdog fallback stamped with wall time), one in
    # flight stamped before the reset at t = 1.0, then the episode's (one of them wall-stamped too)
    ep.statuses, ep.status_t = st, [0.97, 1.7e9, 0.99, 1.0, 1.7e9, 1.01]
    ep.commands, ep.latencies = [[float(i)] for i in range(6)], [0.1, 0.2, 0.3, 0.4]
    ep.trim_before(1.0, n_statuses=2, n_commands=2, n_latencies=1)
    assert ep.warmup_steps == 3 and ep.statuses == st[3:] and ep.status_t == [1.0, 1.7e9, 1.01]
    assert ep.commands == [[3.0], [4.0], [5.0]] and ep.latencies == [0.2, 0.3, 0.4]
    assert ep.gt_t == [1.0, 1.01] and len(ep.replay_statuses) == 6


def test_preflight_names_missing_pieces(tmp_path, capsys) -> None:
    missing = demo.missing_pieces("arm", repo=tmp_path)
    assert "config/arm.yaml" in missing and any("models/arm.npz" in m for m in missing)
    assert demo.main(["--robots", "arm", "--out", str(tmp_path), "--models", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err
    assert demo.main(["--episodes", "0", "--out", str(tmp_path)]) == 2


def test_short_real_demo_both_robots_filter_on(tmp_path) -> None:
    """Both robots closed loop over real DDS, one short episode each: no collision / limit crossing."""
    out = tmp_path / "demo"
    rc = demo.main(
        [
            "--robots",
            "diff_drive",
            "arm",
            "--filter",
            "on",
            "--out",
            str(out),
            "--episodes",
            "1",
            "--max-time",
            "4",
        ]
    )  # lane: test_lane_node.py
    summary = strict_json.loads((out / "summary.json").read_text())  # strict: no NaN tokens
    assert summary["filter"] == "on"
    assert set(summary["robots"]) == {"diff_drive", "arm"}
    for robot, s in summary["robots"].items():
        assert s["episodes"] == 1 and len(s["per_episode"]) == 1
        ep = s["per_episode"][0]
        # No collision, no joint past a position / velocity / torque limit at any tick of the
        # ground truth, and the episode started with the controller running its policy.
        assert s["violations"] == 0 and not any(ep["violations_by"].values()), f"{robot}: {ep}"
        assert ep["controller_ready"], f"{robot}: the controller was on its fallback at the reset"
        if robot == "arm":
            assert 0.0 < s["max_dq_ratio"] <= 1.0
        assert s["steps"] > 50, f"{robot}: the controller published only {s['steps']} statuses"
        assert s["min_barrier"] >= 0.0
        assert math.isfinite(s["min_filter_barrier"])
        assert 0.0 < s["max_effort_ratio"] <= 1.0 + 1e-9  # the filter keeps commands inside the box
        assert 0.0 < s["latency_p50_ms"] <= s["latency_p99_ms"] < 1000.0
        assert "replay_max_abs_diff" in ep and ep["goal"] and ep["start"]
        for name in s["plots"]:
            assert (out / name).stat().st_size > 5000
    assert rc == 0
