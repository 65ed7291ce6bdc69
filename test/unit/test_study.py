"""The study (lnn_control.analysis.study): conditions it adds to the one rollout, job keys, the
store, a 2-worker Dask LocalCluster run that is killed part-way and resumed, and the report."""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lnn_control.analysis import study as S
from lnn_control.analysis import study_report as R
from lnn_control.config import config_path
from lnn_control.sim.rollout import CONDITIONS, ClosedLoop, Condition, condition

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --- conditions -------------------------------------------------------------------------------
def test_every_study_condition_is_a_rollout_condition_for_both_robots() -> None:
    for name in S.STUDY_CONDITIONS:
        assert name in CONDITIONS
        for robot in ("diff_drive", "arm"):
            assert isinstance(condition(name, robot), Condition)
    assert condition("irregular_wide", "arm").period_scale == (0.2, 5.0)
    lo, mid, hi = (condition(n, "diff_drive").noise_std for n in ("noise_low", "noise", "noise_high"))
    assert 0 < lo < mid < hi
    assert condition("ood", "diff_drive").mirror and condition("ood", "arm").payload > 0
    with pytest.raises(ValueError, match="payload"):
        Condition(payload=-1.0)
    with pytest.raises(ValueError, match="damping_scale"):
        Condition(damping_scale=0.0)


def test_mirrored_room_is_the_same_physics_seen_through_a_reflection() -> None:
    """The expert through the filter in the reflected room drives the same true path (the
    reflection is consistent for odometry, scan, goal and turn rate); the controller sees it reflected."""
    loop = ClosedLoop("diff_drive", config_path("diff_drive"), safety_filter=True)
    a = loop.run(None, 100_003, max_time=4.0, condition=condition("clean", "diff_drive"))
    b = loop.run(None, 100_003, max_time=4.0, condition=condition("ood", "diff_drive"))
    np.testing.assert_allclose(a.ground_truth, b.ground_truth, atol=1e-9)
    names = loop.input_names
    gy = names.index("goal_body[1]")
    assert abs(a.episode.obs[0, gy]) > 1e-3
    np.testing.assert_allclose(b.episode.obs[:, gy], -a.episode.obs[:, gy], atol=1e-9)
    np.testing.assert_allclose(b.episode.target[:, 1], -a.episode.target[:, 1], atol=1e-9)
    with pytest.raises(ValueError, match="diff_drive"):
        ClosedLoop("arm", config_path("arm")).run(
            None, 100_000, max_time=0.2, condition=Condition(mirror=True)
        )


def test_arm_payload_changes_the_run_and_clean_restores_the_model() -> None:
    loop = ClosedLoop("arm", config_path("arm"), safety_filter=True)
    a = loop.run(None, 100_001, max_time=1.0, condition=condition("clean", "arm"))
    b = loop.run(None, 100_001, max_time=1.0, condition=condition("ood", "arm"))
    c = loop.run(None, 100_001, max_time=1.0, condition=condition("clean", "arm"))
    assert np.abs(a.ground_truth - b.ground_truth).max() > 1e-4
    np.testing.assert_array_equal(a.ground_truth, c.ground_truth)


# --- spec, keys, store ------------------------------------------------------------------------
def test_spec_refuses_held_out_training_seeds_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="eval_seed"):
        S.StudySpec(eval_seed=99_999)
    with pytest.raises(ValueError, match="seeds"):
        S.StudySpec(seeds=(100_000,))
    with pytest.raises(ValueError, match="models"):
        S.StudySpec(models=("transformer",))
    with pytest.raises(ValueError, match="conditions"):
        S.StudySpec(conditions=("rain",))
    spec = S.StudySpec(models=("mlp", "lstm"), seeds=(0, 1), conditions=("clean", "drop"))
    trains, evals = S.job_keys(spec)
    assert len(trains) == 4 and len(evals) == 8
    assert len({S.eval_key(*e) for e in evals}) == 8
    assert S.StudySpec.from_dict(json.loads(json.dumps(spec.as_dict()))) == spec


def test_baselines_are_matched_to_ncp_parameter_counts() -> None:
    spec = S.StudySpec()
    ref = S.model_recipe("cfc_ncp19", "diff_drive", spec, 0)
    one = S.model_recipe("gru", "diff_drive", spec, 0)
    ten = S.model_recipe("gru_10x", "diff_drive", spec, 0)
    n_in, n_out = S._sizes("diff_drive")
    live = S.count_parameters(S._fresh(ref, n_in, n_out), n_in)[1]
    n1 = S.count_parameters(S._fresh(one, n_in, n_out), n_in)[0]
    n10 = S.count_parameters(S._fresh(ten, n_in, n_out), n_in)[0]
    assert 0.7 < n1 / live < 1.4 and 7 < n10 / live < 14
    assert ref.steps == one.steps == ten.steps and ref.noise_episodes == ten.noise_episodes


def test_store_refuses_another_budget(tmp_path: pathlib.Path) -> None:
    store = S.Store(tmp_path)
    store.check_spec(S.StudySpec(steps=10))
    store.check_spec(S.StudySpec(steps=10, models=("mlp",)))  # what is compared may grow
    with pytest.raises(ValueError, match="budget"):
        store.check_spec(S.StudySpec(steps=11))


def test_bootstrap_interval_covers_the_seed_spread() -> None:
    assert R.bootstrap_ci([[True, False]]) is None
    lo, hi = R.bootstrap_ci([[True] * 50, [False] * 50])
    assert lo < 0.2 and hi > 0.8  # two seeds that disagree: the interval says so
    lo, hi = R.bootstrap_ci([[True] * 25 + [False] * 25] * 3)
    assert lo < 0.5 < hi and hi - lo < 0.4


# --- the distributed run ----------------------------------------------------------------------
_TINY = [
    "--robots",
    "diff_drive",
    "--models",
    "cfc_ncp19,mlp",
    "--seeds",
    "1",
    "--conditions",
    "clean,noise,drop,irregular_wide,ood",
    "--episodes",
    "2",
    "--noise-episodes",
    "2",
    "--steps",
    "5",
    "--batch",
    "4",
    "--window",
    "8",
    "--dagger-rounds",
    "0",
    "--max-time",
    "3",
    "--workers",
    "2",
    "--no-progress",
]


def _spec() -> S.StudySpec:
    return S.StudySpec(
        models=("cfc_ncp19", "mlp"),
        seeds=(0,),
        conditions=("clean", "noise", "drop", "irregular_wide", "ood"),
        episodes=2,
        noise_episodes=2,
        steps=5,
        batch=4,
        window=8,
        dagger_rounds=0,
        max_time=3.0,
    )


def test_two_worker_study_killed_part_way_resumes_without_redoing_finished_keys(
    tmp_path: pathlib.Path,
) -> None:
    out = tmp_path / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lnn_control.analysis.study", "--out", str(out), *_TINY],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    evals = out / "store" / "eval"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if evals.is_dir() and any(evals.rglob("*.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the study ended before it could be interrupted: {proc.stdout.read()!r}"
        os.killpg(proc.pid, signal.SIGKILL)  # the study, its scheduler and both workers
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    spec = _spec()
    trains, jobs = S.job_keys(spec)
    done_before = {S.eval_key(*j) for j in jobs if S.Store(out / "store").has(S.eval_key(*j))}
    assert 1 <= len(done_before) < len(jobs)
    stamps = {k: S.Store(out / "store").path(k).stat().st_mtime_ns for k in done_before}
    seen: list[str] = []
    run = S.run_study(spec, out, workers=2, progress=False, on_result=lambda k, r: seen.append(k))
    assert set(run["skipped"]) >= done_before
    assert not set(run["submitted"]) & done_before
    assert set(seen) == set(run["submitted"])
    store = S.Store(out / "store")
    for j in jobs:
        r = store.get(S.eval_key(*j))
        assert r["episodes"] == 2 and r["seeds"] == [100_000, 100_001]
        assert len(r["per_episode"]) == 2
    for k, t in stamps.items():  # finished keys were not rewritten
        assert store.path(k).stat().st_mtime_ns == t
    # a third run has nothing left to do
    again = S.run_study(spec, out, workers=2, progress=False)
    assert again["submitted"] == [] and len(again["skipped"]) == len(trains) + len(jobs)
    # the report: every cell done, with parameters and stepper time per row
    paths = R.write(spec, out, "test", running=False)
    md = paths["md"].read_text()
    assert "| not run" not in md and "CfC-NCP(19)" in md and "MLP (~1x)" in md
    js = json.loads(paths["json"].read_text())
    for row in js["rows"].values():
        assert row["live_parameters"] > 0 and row["stepper_us"] > 0
        for cell in row["cells"].values():
            assert cell["episodes"] == 2 and cell["wilson95"] is not None
    assert all(pathlib.Path(p).is_file() for p in js["files"].values())


def test_report_marks_cells_not_run(tmp_path: pathlib.Path) -> None:
    spec = _spec()
    store = S.Store(tmp_path / "store")
    store.put(
        S.train_key("diff_drive", "mlp", 0),
        {"recipe": {"units": 30}, "parameters": 10, "live_parameters": 10, "stepper_us": 5.0}
        | {"train_wall_s": 1.0, "optimiser_steps": 5, "stepper": "TorchStepper"},
    )
    ep = {"success": True, "per_episode": [{"success": True}, {"success": False}], "violated": {"count": 0}}
    store.put(S.eval_key("diff_drive", "mlp", 0, "clean"), ep)
    rows = R.cells(spec, tmp_path / "store")
    c = rows["diff_drive/mlp"]["cells"]
    assert c["clean"]["rate"] == 0.5 and c["noise"]["rate"] is None
    md = R.markdown(spec, rows, {"generated": "now", "command": "x", "wall_s": 1.0, "runs": 1})
    assert "| not run" in md and "50 [" in md
    assert math.isclose(c["clean"]["wilson95"][0], 0.0945, abs_tol=1e-3)


def test_cli_rejects_bad_input(tmp_path: pathlib.Path) -> None:
    assert S.main(["--out", str(tmp_path), "--models", "nope", "--report-only"]) == 2
    assert S.main(["--out", str(tmp_path), "--eval-seed", "5", "--report-only"]) == 2
    assert S.main(["--out", str(tmp_path), "--workers", "0"]) == 2


def test_compare_and_study_are_one_command(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lnn_control import cli

    for cmd in ("study", "compare"):
        assert cli.main([cmd, "--out", str(tmp_path), "--models", "nope", "--report-only"]) == 2
        assert "models: unknown ['nope']" in capsys.readouterr().err
    spec = S.StudySpec(models=("mlp",), seeds=(0,), conditions=("clean",))
    assert (
        cli.main(
            [
                "study",
                "--out",
                str(tmp_path),
                "--models",
                "mlp",
                "--seeds",
                "1",
                "--conditions",
                "clean",
                "--report-only",
            ]
        )
        == 0
    )
    md = (tmp_path / "study.md").read_text()
    assert "| MLP (~1x) |" in md and "| not run |" in md
    assert R.cells(spec, tmp_path / "store")["diff_drive/mlp"]["cells"]["clean"]["episodes"] == 0
