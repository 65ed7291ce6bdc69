"""Fault injection against lnn_controller processes over real DDS (issue 15 items 4).

The small variants of ``scripts/faults.py`` (same code, loaded from the script): message fuzzing
on every input topic of both robot configs, the simulator killed and restarted under a running
controller, and live ``model_file`` sets to broken files. The long runs (>= 100,000 messages per
config, the CPU hog) are ``make faults``.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_faults():
    spec = importlib.util.spec_from_file_location("faults_script", ROOT / "scripts" / "faults.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["faults_script"] = mod
    spec.loader.exec_module(mod)
    return mod


faults = _load_faults()
from lnn_control.msg import SafetyStatus  # noqa: E402

# Bad inputs the node does not detect today (each with a strict xfail test below that turns into a
# failure once the node catches it, so this set cannot go stale). The inf / zero quaternion gap
# is closed: the yaw extractor refuses a quaternion whose squared norm is not in (1e-6, 1e12).
KNOWN_GAPS: set[str] = set()


@pytest.mark.parametrize("robot", ["diff_drive", "arm"])
def test_fuzzed_inputs_never_give_an_unverified_command(robot: str, tmp_path: pathlib.Path) -> None:
    r = faults.fuzz(robot, 2500, seed=0, workdir=tmp_path, budget_s=45.0)
    print({k: v for k, v in r.items() if k != "per_kind"})
    assert r["node_alive"] and r["crashes"] == 0, "the controller process died"
    assert not r["node_log_problems"], r["node_log_problems"]
    assert r["messages_sent"] >= 2500 and r["bad_messages"] >= 100
    assert r["unverified_commands"] == 0, r["unverified_examples"]
    assert r["command_status_mismatches"] == 0
    assert r["commands_received"] >= r["steps"] - r["no_reply_steps"]
    # every kind that must fall back did so at the step after the bad message or the one after it
    missed = {k: n for k, n in r["missed_fallbacks"].items() if k not in KNOWN_GAPS}
    assert not missed, missed
    for kind, pk in r["per_kind"].items():
        if pk["expect"] == "fallback" and kind not in KNOWN_GAPS and pk["sent"] >= 10:
            assert pk["fallback_at_step"] >= 0.8 * pk["sent"], (kind, pk)
    # and filtered commands came back after valid data: within 3 steps, or sensor_timeout for stamps
    assert r["n_not_recovered"] == 0, r["not_recovered"]
    # (a stamp from the future waits out sensor_timeout of wall time: a load stall can add to it)
    assert all("stamp_future" in s for s in r["slow_recoveries"]), r["slow_recoveries"]
    # valid data never gave a fallback except as staleness (a load stall of this 2-core machine)
    assert all("stale" in s or "no control step" in s for s in r["spurious_fallbacks"]), r[
        "spurious_fallbacks"
    ]
    assert r["diagnostics_warn_with_reason"] > 0, "/diagnostics never said WARN with the fallback reason"


def _bring_up(robot: str, tmp_path: pathlib.Path, **params):
    proc = faults.start_controller(robot, tmp_path / "controller.log", **params)
    rig = faults.Rig(robot)
    rig.bring_up()
    return proc, rig


def _close(proc, rig, log: pathlib.Path) -> None:
    rig.close()
    alive = proc.poll() is None
    faults.stop(proc)
    print(log.read_text(errors="replace")[-3000:])
    assert alive, "the controller process died"
    assert not faults.node_log_problems(log)


def test_odometry_with_an_inf_quaternion_falls_back(tmp_path: pathlib.Path) -> None:
    proc, rig = _bring_up("diff_drive", tmp_path)
    try:
        f = faults.Fuzzer(rig, faults.Trajectory("diff_drive", 0), 0)
        assert f.good_steps(3, 10.0) is not None
        msgs = f.traj.messages(f.traj.t_ns + 20_000_000)
        msgs["/odom"]["pose"]["pose"]["orientation"].update(z=0.5, w=math.inf)
        _, st = f.step(bad=("/odom", msgs["/odom"]))
        assert st is not None and st.fallback_used, "odometry with orientation.w = inf was used"
    finally:
        _close(proc, rig, tmp_path / "controller.log")


def test_simulator_killed_then_restarted(tmp_path: pathlib.Path) -> None:
    """SIGKILL to the simulator: the watchdog's fallback within sensor_timeout + one watchdog
    period; a new simulator: filtered commands again, from the same controller process."""
    timeout = faults.ROBOTS["diff_drive"].sensor_timeout
    sim = faults.start_sim("diff_drive", tmp_path / "sim1.log")
    proc, rig = _bring_up("diff_drive", tmp_path, diagnostics_rate=10.0)
    sim2 = None
    try:
        rig.publish("/goal_pose", faults.Trajectory("diff_drive", 0).goal_message())
        n0 = len(rig.statuses)
        assert rig.spin_until(lambda: sum(not s.fallback_used for _, s in rig.statuses[n0:]) >= 20, 30.0)
        time.sleep(0.5)  # mid-episode: the robot is moving
        rig.spin_until(lambda: False, 0.5)
        t_kill = time.monotonic()
        sim.kill()
        sim.wait()

        def stale_after(t: float) -> list[float]:
            return [
                ts for ts, s in rig.statuses if ts > t and s.solver_status == SafetyStatus.STATUS_STALE_INPUT
            ]

        assert rig.spin_until(lambda: bool(stale_after(t_kill)), 5.0), "no fallback after the simulator died"
        t_fb = stale_after(t_kill)[0] - t_kill
        print(f"fallback {t_fb * 1e3:.0f} ms after SIGKILL (sensor_timeout {timeout * 1e3:.0f} ms)")
        # watchdog period = sensor_timeout / 2; 0.25 s for scheduling on the shared 2-core machine
        # (measured 0.28-0.48 s at load 2-4)
        assert t_fb <= timeout + timeout / 2 + 0.25
        rig.spin_until(lambda: False, 0.5)
        after = [u for t, u in rig.commands if t > t_kill + t_fb + 0.05]
        assert after and all(u == [0.0, 0.0] for u in after), (
            "commands other than the zero fallback while stale"
        )
        # /diagnostics says WARN with the reason while the simulator is gone
        warn = [d for d in rig.diags if d[0] > t_kill + t_fb and d[1] == 1 and "stale" in d[2]]
        assert warn, [d[1:3] for d in rig.diags[-5:]]

        t_restart = time.monotonic()
        sim2 = faults.start_sim("diff_drive", tmp_path / "sim2.log")
        assert rig.spin_until(
            lambda: any(t > t_restart and not s.fallback_used for t, s in rig.statuses), 40.0
        ), "no filtered command after the simulator came back"
        fresh = [
            (t, s)
            for t, s in rig.statuses
            if t > t_restart and s.solver_status != SafetyStatus.STATUS_STALE_INPUT
        ]
        first_filtered = next(i for i, (_, s) in enumerate(fresh) if not s.fallback_used)
        print(f"filtered again {fresh[first_filtered][0] - t_restart:.2f} s after the restart, "
              f"{first_filtered} non-stale fallbacks first")  # fmt: skip
        assert first_filtered <= 3, [s.fallback_reason for _, s in fresh[:5]]
        assert proc.poll() is None
    finally:
        for p in (sim, sim2):
            if p is not None:
                faults.stop(p)
        _close(proc, rig, tmp_path / "controller.log")


def _bad_models(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    good = (ROOT / "models" / "diff_drive.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "not_npz.npz").write_text("this is not a model file\n")
    return {
        "truncated": tmp_path / "truncated.npz",
        "wrong_inputs": ROOT / "models" / "arm.npz",  # 9 inputs; the diff_drive mapping gives 12
        "not_npz": tmp_path / "not_npz.npz",
    }


def test_model_file_set_to_a_broken_file_keeps_the_old_model(tmp_path: pathlib.Path) -> None:
    """Today ``model_file`` is read on configure: a live set is accepted and changes nothing while
    active. Whatever the set answers, the running model must keep running; a reconfigure with the
    broken file must fail with the reason, the node staying alive and recovering with a good file."""
    from lifecycle_msgs.msg import Transition

    proc, rig = _bring_up("diff_drive", tmp_path)
    try:
        f = faults.Fuzzer(rig, faults.Trajectory("diff_drive", 0), 0)
        assert f.good_steps(3, 10.0) is not None
        for name, path in _bad_models(tmp_path).items():
            res = rig.set_parameter("model_file", str(path))
            print(f"set model_file {name}: successful={res.successful} reason={res.reason!r}")
            if not res.successful:
                assert res.reason, f"{name}: rejected without a reason"
            n0 = len(rig.statuses)
            for _ in range(10):
                f.step()
            assert all(not s.fallback_used for _, s in rig.statuses[n0:]), (
                f"{name}: the running model stopped"
            )
            if res.successful:  # read on configure: a reconfigure must fail and say why
                assert rig.transition(Transition.TRANSITION_DEACTIVATE)
                assert rig.transition(Transition.TRANSITION_CLEANUP)
                assert not rig.transition(Transition.TRANSITION_CONFIGURE), f"{name}: configured with it"
                assert proc.poll() is None
                log = (tmp_path / "controller.log").read_text(errors="replace")
                failed = [ln for ln in log.splitlines() if "configure failed" in ln]
                assert failed and path.name in failed[-1], f"{name}: no reason naming the file: {failed[-1:]}"
                assert rig.set_parameter("model_file", str(ROOT / "models" / "diff_drive.npz")).successful
                assert rig.transition(Transition.TRANSITION_CONFIGURE)
                assert rig.transition(Transition.TRANSITION_ACTIVATE)
                assert f.good_steps(3, 10.0) is not None, f"{name}: no filtered command after recovery"
    finally:
        _close(proc, rig, tmp_path / "controller.log")


def test_model_file_set_to_a_broken_file_is_rejected_with_the_reason(tmp_path: pathlib.Path) -> None:
    proc, rig = _bring_up("diff_drive", tmp_path)
    try:
        for name, path in _bad_models(tmp_path).items():
            res = rig.set_parameter("model_file", str(path))
            assert not res.successful, f"model_file set to the {name} file {path} was accepted"
            assert "model_file" in res.reason and str(path.name) in res.reason, res.reason
    finally:
        _close(proc, rig, tmp_path / "controller.log")
