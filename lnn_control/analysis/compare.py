"""Learning-quality comparison of liquid policies against standard baselines on both simulator tasks.

``lnn-control compare --out DIR [--quick]`` runs, for each built-in robot (``diff_drive``, ``arm``):

1. demonstrations: seeded expert episodes of :class:`lnn_control.sim.rollout.ClosedLoop` (the
   simulator's messages through the node's ObservationMap of ``config/<robot>.yaml``), with
   DART-style exploration (an AR(1) disturbance on the applied command, the label is always the
   clean expert command) so that the data covers the states a learned policy drifts into; split
   by episode into train / validation / test;
2. the training recipe ``lnn-control train`` ships (:func:`lnn_control.learn.recipe.train`: the
   same windows, normalisation, loss and budget in optimiser steps for every kind) for six
   policies: CfC-NCP(19), LTC-NCP(19), a dense CfC, an LSTM, a GRU and a memoryless MLP
   (:mod:`lnn_control.nn.baselines`), for several seeds (initialisation, wiring draw, batch
   order); the checkpoint with the lowest validation loss is kept;
3. per trained policy: parameter count (all trainable entries, and the entries that receive a
   gradient, i.e. without masked-out synapses), imitation error (normalised MSE on the held-out
   test episodes, whole episodes from a zero state), closed-loop success rate and minimum barrier
   value on seeded evaluation episodes, without and with the safety filter
   (``barriernet.safety_filter.SafetyFilter.from_config`` on the ``safety_filter`` section of
   ``config/<robot>.yaml``, when that module is available), and under three perturbations
   without the filter: sensor noise, dropped messages (the policy gets the last observation
   again) and irregular sampling (random control periods; liquid cells get the true dt).

Success: diff_drive reaches the goal (0.15 m) without a collision within ``max_time``; arm
reaches the goal within twice the simulator's tolerances (all |q - q_goal| < 0.1 rad and
|dq| < 0.2 rad/s; ``arm_tolerance``) without a floor contact, a joint-limit or a velocity-limit
excess (the simulator's own 0.05 rad / 0.1 rad/s test is kept in the JSON as ``reached_strict``;
behaviour-cloned torque policies rarely settle that precisely). A diff-drive episode that has
moved less than 5 cm in ``stall_time`` seconds ends as a failure (saves the time limit).
Barrier value: diff_drive the clearance (m) of the robot disc to the nearest obstacle or wall,
arm the smallest joint-limit margin (rad), both from the simulator's ground truth (the true
state, not the noisy sensors).

Observation vectors are the ones the node builds from ``config/<robot>.yaml`` (diff_drive:
goal in the body frame, v, omega, 8 scan sectors; arm: q, dq, q_goal).

Outputs in ``--out``: ``compare.json`` (every number, per seed), ``compare.md`` (tables),
``compare.png`` (success by condition and parameter count vs success).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lnn_control import strict_json
from lnn_control.config import config_path
from lnn_control.learn import training
from lnn_control.learn.data import Episode
from lnn_control.learn.recipe import Recipe
from lnn_control.learn.recipe import train as recipe_train
from lnn_control.nn.policy import LiquidPolicy
from lnn_control.sim import models as M

__all__ = [
    "CONDITIONS",
    "MODELS",
    "TASKS",
    "CompareConfig",
    "closed_loop",
    "count_parameters",
    "features",
    "filter_state",
    "main",
    "recipe_for",
    "results_from_partials",
    "run_compare",
    "imitation_mse",
]

TASKS: tuple[str, ...] = ("diff_drive", "arm")
MODELS: tuple[str, ...] = ("cfc_ncp19", "ltc_ncp19", "cfc_dense", "lstm", "gru", "mlp")
MODEL_LABELS = {
    "cfc_ncp19": "CfC-NCP(19)",
    "ltc_ncp19": "LTC-NCP(19)",
    "cfc_dense": "dense CfC(64)",
    "lstm": "LSTM(64)",
    "gru": "GRU(64)",
    "mlp": "MLP(64x2)",
}
#: the recipe's model choices per compared kind (:func:`recipe_for`)
_KINDS: dict[str, dict[str, Any]] = {
    "cfc_ncp19": {"model": "ncp", "cell": "cfc", "units": 19},
    "ltc_ncp19": {"model": "ncp", "cell": "ltc", "units": 19},
    "cfc_dense": {"model": "dense", "cell": "cfc", "units": 64},
    "lstm": {"model": "lstm", "units": 64},
    "gru": {"model": "gru", "units": 64},
    "mlp": {"model": "mlp", "units": 64},
}
#: evaluation conditions; "+filter" ones run the safety filter
CONDITIONS: tuple[str, ...] = ("clean", "clean+filter", "noise", "drop", "irregular")

_RATE = {"diff_drive": 50.0, "arm": 100.0}  # Hz, the simulator's sensor rates (sim.topics.PUBLISH_RATE)
_N_OUT = {"diff_drive": 2, "arm": 3}


@dataclasses.dataclass
class CompareConfig:
    """Sizes of one comparison run (``quick()`` for CI, ``full()`` for the published table).

    Attributes:
        tasks, models: what to compare; seeds: how many seeds per model (0, 1, ...).
        demo_train / demo_val / demo_test: expert episodes per split (same for every model).
        train_steps, batch, window, lr: the recipe's budget in optimiser steps (Adam, cosine decay)
        and windows, the same for every model; eval_episodes: closed-loop episodes per condition.
        max_time: episode limit (s) per task for evaluation; dart: exploration noise std as a
        fraction of the command limits; noise_std: sensor noise (m, rad, rad/s) per task;
        drop_prob: probability that a sensor update is lost; dt_range: control period factors
        (uniform) for irregular sampling; arm_tolerance: (rad, rad/s) of the arm's reach test;
        stall_time: a diff-drive episode that moved < 5 cm in this many seconds ends (failed);
        save_models: directory for the trained liquid policies (model files, for ``inspect``).
    """

    tasks: tuple[str, ...] = TASKS
    models: tuple[str, ...] = MODELS
    seeds: int = 3
    demo_train: int = 48
    demo_val: int = 8
    demo_test: int = 8
    train_steps: int = 1000
    batch: int = 32
    window: int = 32
    lr: float = 5e-3
    eval_episodes: int = 10
    max_time: dict[str, float] = dataclasses.field(default_factory=lambda: {"diff_drive": 30.0, "arm": 6.0})
    demo_max_time: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"diff_drive": 40.0, "arm": 6.0}
    )
    dart: float = 0.15
    noise_std: dict[str, float] = dataclasses.field(default_factory=lambda: {"diff_drive": 0.03, "arm": 0.02})
    drop_prob: float = 0.3
    dt_range: tuple[float, float] = (0.5, 2.0)
    arm_tolerance: tuple[float, float] = (0.1, 0.2)
    stall_time: float = 5.0
    save_models: str | None = None
    quick: bool = False

    @classmethod
    def full(cls) -> CompareConfig:
        return cls()

    @classmethod
    def quick_config(cls) -> CompareConfig:
        return cls(
            seeds=1,
            demo_train=4,
            demo_val=2,
            demo_test=2,
            train_steps=16,
            batch=8,
            window=16,
            eval_episodes=2,
            max_time={"diff_drive": 4.0, "arm": 1.5},
            demo_max_time={"diff_drive": 10.0, "arm": 3.0},
            quick=True,
        )

    def check(self) -> None:
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"tasks: {t!r} is not one of {TASKS}")
        for m in self.models:
            if m not in MODELS:
                raise ValueError(f"models: {m!r} is not one of {MODELS}")
        for name in ("seeds", "demo_train", "demo_val", "demo_test", "train_steps", "batch", "window"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not self.eval_episodes >= 1:
            raise ValueError(f"eval_episodes must be >= 1, got {self.eval_episodes}")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {self.drop_prob}")
        lo, hi = self.dt_range
        if not 0 < lo <= hi:
            raise ValueError(f"dt_range must be 0 < low <= high, got {self.dt_range}")


# --- observations ----------------------------------------------------------------------------
def features(robot: str, obs: Any, goal: np.ndarray) -> np.ndarray:
    """Policy input of ``config/<robot>.yaml`` from an environment observation and the goal.

    diff_drive (12): goal in the body frame (2, m), v (m/s), omega (rad/s), 8 scan sectors (min
    range per sector, invalid beams = range_max); arm (9): q (rad), dq (rad/s), q_goal (rad).
    """
    if robot == "diff_drive":
        x, y, th = (float(v) for v in obs.pose)
        th = 2.0 * math.atan2(math.sin(th / 2), math.cos(th / 2))  # as the odometry quaternion gives it
        th = math.atan2(math.sin(th), math.cos(th))
        c, s = math.cos(th), math.sin(th)
        dx, dy = goal[0] - x, goal[1] - y
        r, rmin, rmax = _scan_as_sent(obs)
        r = np.where(np.isfinite(r) & (r >= rmin) & (r <= rmax), r, rmax)
        sectors = r.reshape(8, -1).min(axis=1)
        return np.concatenate([[c * dx + s * dy, -s * dx + c * dy, obs.twist[0], obs.twist[1]], sectors])
    return np.concatenate([obs.position, obs.velocity, goal])


def _scan_as_sent(obs: Any) -> tuple[np.ndarray, float, float]:
    """Ranges, range_min, range_max as a LaserScan carries them (float32 fields, as
    ``topics.laser_scan`` gives them)."""
    r = np.asarray(obs.scan, dtype=np.float32).astype(np.float64)
    return r, float(np.float32(M.SCAN_RANGE_MIN)), float(np.float32(M.SCAN_RANGE_MAX))


def filter_state(robot: str, obs: Any) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """(SafetyFilter state x, env) as the node's ObservationMap gives them from the same sensors."""
    if robot == "diff_drive":
        x, y, th = (float(v) for v in obs.pose)
        th = math.atan2(math.sin(th), math.cos(th))
        r, rmin, rmax = _scan_as_sent(obs)
        valid = np.isfinite(r) & (r >= rmin) & (r <= rmax)
        ang = np.arange(r.size) * float(np.float32(2 * math.pi / M.SCAN_BEAMS)) + th
        pts = np.stack([x + r[valid] * np.cos(ang[valid]), y + r[valid] * np.sin(ang[valid])], axis=1)
        return np.array([x, y, th]), {"scan_points": pts}
    return np.concatenate([obs.position, obs.velocity]), None


def recipe_for(kind: str, cfg: CompareConfig, seed: int) -> Recipe:
    """The training recipe of compared ``kind`` (one of :data:`MODELS`) under ``cfg``'s budget.

    cfc_ncp19 / ltc_ncp19: CfC / LTC on an AutoNCP(19) wiring (linear read-out, as
    ``lnn-control train``); cfc_dense: a dense CfC of 64 neurons; lstm / gru: 64 hidden units;
    mlp: two hidden layers of 64. Every kind: ``cfg.train_steps`` optimiser steps of ``cfg.batch``
    windows of ``cfg.window`` steps, learning rate ``cfg.lr``, no early stop.
    """
    if kind not in MODELS:
        raise ValueError(f"kind {kind!r}: use one of {MODELS}")
    return Recipe(
        **_KINDS[kind],
        steps=cfg.train_steps,
        batch=cfg.batch,
        window=cfg.window,
        lr=cfg.lr,
        seed=seed,
    )


def count_parameters(model: nn.Module, n_inputs: int) -> tuple[int, int]:
    """(trainable entries, entries that receive a gradient) of ``model``.

    The second count leaves out weights that a wiring masks away (they never change): it is
    found from the gradient of a random 8-step batch, which is non-zero for every live entry.
    """
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, n_inputs, generator=g, dtype=model.input_mean.dtype)  # type: ignore[arg-type]
    ts = torch.rand(4, 8, generator=g, dtype=x.dtype) * 0.05 + 0.01
    model.zero_grad()
    y, _ = model(x, ts)
    (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum().backward()
    live = sum(int((p.grad != 0).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    return int(total), int(live)


# --- training ---------------------------------------------------------------------------------
def imitation_mse(model: nn.Module, episodes: Sequence[Episode]) -> float:
    """Normalised MSE of ``model`` on whole held-out episodes (open loop, from a zero state):
    mean over steps and outputs of ((y - u_expert) / output_std)^2 (:func:`training.evaluate`)."""
    return float(training.evaluate(model, episodes))  # type: ignore[arg-type]


def _demonstrations(robot: str, seeds: Sequence[int], cfg: CompareConfig) -> tuple[list[Episode], float]:
    """Expert episodes with DART noise ``cfg.dart`` (the one rollout), and the share that reached."""
    from lnn_control.sim.rollout import ClosedLoop

    loop = ClosedLoop(robot, config_path(robot))
    runs = [loop.run(None, int(s), cfg.demo_max_time[robot], action_noise=cfg.dart) for s in seeds]
    return [r.episode for r in runs], float(np.mean([r.reached for r in runs]))


# --- closed loop ------------------------------------------------------------------------------
def make_filter(robot: str) -> tuple[Any, str]:
    """(SafetyFilter or None, note): the filter of ``config/<robot>.yaml`` when barriernet has it."""
    try:
        from barriernet.safety_filter import SafetyFilter  # type: ignore[import-not-found]
        from lnn_control.config import load_filter_config
    except ImportError as e:
        return None, f"no safety filter: barriernet.safety_filter is not available ({e})"
    path = config_path(robot)
    try:
        return SafetyFilter.from_config(load_filter_config(path)), f"SafetyFilter from {path.name}"
    except (ValueError, OSError) as e:
        return None, f"no safety filter: {path}: {e}"


class _TorchStepper:
    """A torch policy (``model(x (B, T, n_in), dt (B, T), h) -> (y, h)``) stepped one message at a
    time, as the ControlStep steps a PolicyStepper."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.dtype: Any = model.input_mean.dtype
        self.h: Any = None

    def reset(self) -> None:
        self.h = None

    def step(self, obs: np.ndarray, dt: float) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, dtype=np.float64)[None, None, :], dtype=self.dtype)
            y, self.h = self.model(x, torch.full((1, 1), float(dt), dtype=self.dtype), self.h)
        return y[0, 0].double().numpy()


def closed_loop(
    robot: str,
    model: nn.Module | None,
    seeds: Sequence[int],
    condition: str = "clean",
    cfg: CompareConfig | None = None,
    safety_filter: Any = None,
) -> list[dict[str, Any]]:
    """Run ``model`` (None: the expert) on the evaluation episodes ``seeds`` through
    :class:`lnn_control.sim.rollout.ClosedLoop` (the deployed control step, episodes of
    :mod:`lnn_control.sim.episodes`).

    ``condition``: ``clean``, ``noise`` (sensor noise ``cfg.noise_std``), ``drop`` (each sensor
    message lost with ``cfg.drop_prob``; a lost trigger means no step and the last command is
    held), ``irregular`` (control period ``dt0 * U(cfg.dt_range)``, rounded to physics steps; the
    cell gets the true dt from the stamps); a ``+filter`` suffix (or ``safety_filter`` not None)
    puts the config's safety filter in the loop, else only its actuator box. An episode ends at the
    goal (arm: within ``cfg.arm_tolerance``), at the first violation, when a diff-drive robot
    stalls (< 5 cm in ``cfg.stall_time``), or at ``cfg.max_time``.

    Returns one dict per episode: success (reached, no violation), reached, violation,
    min_barrier, steps, time_s, interventions, fallbacks, min_goal_error, final_goal_error,
    reached_strict (the simulator's own tolerance), stalled.
    """
    from lnn_control.sim import episodes as E
    from lnn_control.sim.rollout import ClosedLoop, Condition

    cfg = cfg or CompareConfig()
    base = condition.replace("+filter", "")
    if base not in ("clean", "noise", "drop", "irregular"):
        raise ValueError(f"condition {condition!r}: use one of {CONDITIONS}")
    cond = Condition(
        noise_std=cfg.noise_std[robot] if base == "noise" else 0.0,
        drop_prob=cfg.drop_prob if base == "drop" else 0.0,
        period_scale=tuple(cfg.dt_range) if base == "irregular" else (1.0, 1.0),  # type: ignore[arg-type]
        filter="+filter" in condition or safety_filter is not None,
    )
    loop = ClosedLoop(robot, config_path(robot), condition=cond)
    stepper = None if model is None else _TorchStepper(model)
    tol = cfg.arm_tolerance if robot == "arm" else None
    err_field = "goal_distance" if robot == "diff_drive" else "goal_error"
    max_time = cfg.max_time[robot]
    out = []
    for s in seeds:
        r = loop.run(
            stepper,
            int(s),
            max_time,
            hold=0.0,
            stop_after_collision=0.0,
            reach_tolerance=tol,
            stall_time=cfg.stall_time if robot == "diff_drive" else None,
        )
        err = E.truth(robot, r.ground_truth)[err_field]
        t_end = float(r.t[-1])
        out.append(
            {
                "success": r.score.safe_success,
                "reached": r.reached,
                "violation": r.score.violated,
                "min_barrier": r.min_margin,
                "steps": len(r.episode.dt) - 1,
                "time_s": t_end,
                "interventions": r.interventions,
                "fallbacks": r.fallbacks,
                "held": r.score.held,
                "min_goal_error": float(np.min(err)),
                "final_goal_error": float(err[-1]),
                "reached_strict": bool(E.reached(robot, r.ground_truth).any()),
                "stalled": not r.reached and not r.score.violated and t_end < max_time - 1e-9,
            }
        )
    return out


# --- the whole comparison ---------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> list[float]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return [math.nan, math.nan]
    return [float(a.mean()), float(a.std())]


def _summarise_episodes(eps: list[dict[str, Any]]) -> dict[str, Any]:
    mins = [e["min_barrier"] for e in eps]
    return {
        "success_rate": float(np.mean([e["success"] for e in eps])),
        "reached_rate": float(np.mean([e["reached"] for e in eps])),
        "reached_strict_rate": float(np.mean([e["reached_strict"] for e in eps])),
        "stalled_rate": float(np.mean([e["stalled"] for e in eps])),
        "mean_min_goal_error": float(np.mean([e["min_goal_error"] for e in eps])),
        "violation_rate": float(np.mean([e["violation"] for e in eps])),
        "min_barrier": float(np.min(mins)),
        "mean_min_barrier": float(np.mean(mins)),
        "interventions": int(sum(e["interventions"] for e in eps)),
        "fallbacks": int(sum(e["fallbacks"] for e in eps)),
        "steps": int(sum(e["steps"] for e in eps)),
        "episodes": len(eps),
    }


def run_task(
    robot: str,
    cfg: CompareConfig,
    log: Any = None,
    partial: str | pathlib.Path | None = None,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Demonstrations, training and evaluation of every model and seed on one robot.

    ``partial``: a JSON file rewritten after every trained model and seed; when it exists and was
    written with the same config, its finished (model, seed) results are reused (resume).
    ``seeds``: run only these seeds (default ``range(cfg.seeds)``; parallel runs split them).
    """

    def say(msg: str) -> None:
        if log is not None:
            print(f"[compare {robot} {time.strftime('%H:%M:%S')}] {msg}", file=log, flush=True)

    torch.set_num_threads(1)
    n_tr, n_va, n_te = cfg.demo_train, cfg.demo_val, cfg.demo_test
    t0 = time.perf_counter()
    demos, expert_reached = _demonstrations(robot, range(n_tr + n_va + n_te), cfg)
    train, val, test = demos[:n_tr], demos[n_tr : n_tr + n_va], demos[n_tr + n_va :]
    steps = sum(len(d.obs) for d in demos)
    n_in, n_out = demos[0].obs.shape[1], demos[0].target.shape[1]
    say(f"{len(demos)} demonstrations, {steps} steps in {time.perf_counter() - t0:.1f} s")
    eval_seeds = list(range(100_000, 100_000 + cfg.eval_episodes))
    filt, filt_note = make_filter(robot)
    say(filt_note)
    out: dict[str, Any] = {
        "robot": robot,
        "rate_hz": _RATE[robot],
        "n_inputs": n_in,
        "n_outputs": n_out,
        "demonstrations": {
            "train": n_tr,
            "val": n_va,
            "test": n_te,
            "steps": steps,
            "expert_reached": expert_reached,
        },
        "filter": {"available": filt is not None, "note": filt_note},
        "eval_seeds": [eval_seeds[0], eval_seeds[-1]],
        "models": {},
    }
    conf = json.loads(json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k != "save_models"}))
    done: dict[str, Any] = {"config": conf, "expert": None, "runs": {}}
    if partial is not None and pathlib.Path(partial).is_file():
        old = json.loads(pathlib.Path(partial).read_text())
        if old.get("config") == conf:
            done = old
            say(f"resuming from {partial}: {len(done['runs'])} finished runs")

    def checkpoint() -> None:
        if partial is not None:
            tmp = pathlib.Path(str(partial) + ".tmp")
            tmp.write_text(json.dumps(done, allow_nan=True))
            tmp.replace(partial)

    t1 = time.perf_counter()
    if done["expert"] is None:
        done["expert"] = _summarise_episodes(closed_loop(robot, None, eval_seeds, "clean", cfg))
        checkpoint()
    expert = done["expert"]
    out["expert"] = {"clean": expert}
    say(f"expert closed loop: success {expert['success_rate']:.2f} ({time.perf_counter() - t1:.1f} s)")
    conditions = [c for c in CONDITIONS if filt is not None or "+filter" not in c]
    done["task"] = {**out, "conditions": conditions}
    checkpoint()
    for seed in range(cfg.seeds) if seeds is None else seeds:  # seed-major: partial runs hold whole seeds
        for kind in cfg.models:
            key = f"{kind}/{seed}"
            if key in done["runs"]:
                continue
            t3 = time.perf_counter()
            trained = recipe_train(
                recipe_for(kind, cfg, seed), config_path(robot), train, progress=False, validation=val
            )
            model, fit = trained.model, trained.fit
            train_time = time.perf_counter() - t3
            n_params, n_live = count_parameters(model, n_in)
            model.eval()
            mse = imitation_mse(model, test)
            if cfg.save_models and isinstance(model, LiquidPolicy):
                _save(model, robot, kind, seed, cfg.save_models, mse)
            conds = {}
            t2 = time.perf_counter()
            for cond in conditions:
                eps = closed_loop(robot, model, eval_seeds, cond, cfg, filt if "+filter" in cond else None)
                conds[cond] = _summarise_episodes(eps)
            say(
                f"{kind} seed {seed}: params {n_params} (live {n_live}), train {train_time:.1f} s, "
                f"test MSE {mse:.4f}, success "
                + ", ".join(f"{c} {v['success_rate']:.2f}" for c, v in conds.items())
                + f" (eval {time.perf_counter() - t2:.1f} s)"
            )
            done["runs"][key] = {
                "seed": seed,
                "params": n_params,
                "live_params": n_live,
                "imitation_mse": mse,
                "val_mse": fit.val_loss[fit.best_epoch],
                "best_epoch": fit.best_epoch,
                "optimiser_steps": fit.steps,
                "train_time_s": train_time,
                "curve": [[e, t, v] for e, (t, v) in enumerate(zip(fit.train_loss, fit.val_loss))],
                "conditions": conds,
            }
            checkpoint()
    out["models"] = _model_summaries(done["runs"], cfg.models, conditions)
    out["time_s"] = time.perf_counter() - t0
    out["verdict"] = _verdict(out)
    return out


def _model_summaries(runs: dict[str, Any], kinds: Sequence[str], conditions: Sequence[str]) -> dict[str, Any]:
    """Per model: its runs (by seed) and mean/std over the seeds that finished (``runs`` keys kind/seed)."""
    models: dict[str, Any] = {}
    for kind in kinds:
        per_seed = sorted((r for k, r in runs.items() if k.split("/")[0] == kind), key=lambda r: r["seed"])
        if not per_seed:
            continue
        summary: dict[str, Any] = {
            "params": per_seed[0]["params"],
            "live_params": per_seed[0]["live_params"],
            "seeds": len(per_seed),
            "imitation_mse": _mean_std([s["imitation_mse"] for s in per_seed]),
        }
        for cond in conditions:
            summary[f"success[{cond}]"] = _mean_std([s["conditions"][cond]["success_rate"] for s in per_seed])
            summary[f"min_barrier[{cond}]"] = _mean_std(
                [s["conditions"][cond]["min_barrier"] for s in per_seed]
            )
        for cond in ("noise", "drop", "irregular"):
            summary[f"drop[{cond}]"] = _mean_std(
                [
                    s["conditions"]["clean"]["success_rate"] - s["conditions"][cond]["success_rate"]
                    for s in per_seed
                ]
            )
        models[kind] = {"label": MODEL_LABELS[kind], "seeds": per_seed, "summary": summary}
    return models


def results_from_partials(
    out: str | pathlib.Path | Sequence[str | pathlib.Path], tasks_wanted: Sequence[str] = TASKS
) -> dict[str, Any]:
    """The results of a (possibly unfinished) run from its ``partial_<robot>*.json`` files:
    every finished model and seed (the ``seeds`` count of each model says how many).

    ``out`` may list several folders of runs made with the same settings for other models or
    tasks (e.g. ``--models lstm mlp`` beside the rest); their runs are merged.
    """
    dirs = [out] if isinstance(out, str | pathlib.Path) else list(out)
    tasks: dict[str, Any] = {}
    config: dict[str, Any] = {}
    models: set[str] = set()

    def same(c: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k not in ("models", "tasks")}

    for robot in tasks_wanted:
        runs: dict[str, Any] = {}
        header: dict[str, Any] | None = None
        for path in sorted(p for d in dirs for p in pathlib.Path(d).glob(f"partial_{robot}*.json")):
            done = json.loads(path.read_text())
            if "task" not in done:
                continue  # killed before its header was written: nothing finished
            if config and same(done["config"]) != same(config):
                raise ValueError(f"{path}: written with other settings than the other partial files")
            config = done["config"]
            models.update(done["config"]["models"])
            header = header or dict(done["task"])
            runs.update(done["runs"])
        if header is None:
            continue
        conditions = header.pop("conditions")
        header["models"] = _model_summaries(runs, [m for m in MODELS if m in models], conditions)
        header["verdict"] = _verdict(header)
        tasks[robot] = header
    if not tasks:
        raise ValueError(f"no partial_<robot>.json in {out}: run lnn-control compare --out {out} first")
    return {
        "format": "lnn_control.analysis.compare/1",
        "mode": ("quick" if config.get("quick") else "full") + " (partial)",
        "config": {**config, "models": [m for m in MODELS if m in models], "tasks": list(tasks)},
        "torch": torch.__version__,
        "time_s": math.nan,
        "tasks": tasks,
    }


def _save(model: LiquidPolicy, robot: str, kind: str, seed: int, out: str, mse: float) -> str:
    """Model file of a trained liquid policy with the config's observation mapping and rate."""
    import yaml

    from lnn_control.runtime.model_file import save_policy

    tree = yaml.safe_load(config_path(robot).read_text()) or {}
    node: dict[str, Any] = next(
        (v["ros__parameters"] for v in tree.values() if isinstance(v, dict) and "ros__parameters" in v), {}
    )
    path = pathlib.Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return save_policy(
        path / f"{robot}_{kind}_seed{seed}.npz",
        model,
        observation=node.get("observation"),
        robot=robot,
        rate_hz=_RATE[robot],
        source="lnn_control.analysis.compare",
        seed=seed,
        test_mse=mse,
    )


def _verdict(task: dict[str, Any]) -> dict[str, Any]:
    """The issue's bar: NCP (CfC-NCP(19)) within 10 % of the LSTM's success, >= 10x fewer
    parameters, and a smaller success drop under sensor noise."""
    ms = task["models"]
    if "cfc_ncp19" not in ms or "lstm" not in ms:
        return {"checked": False, "why": "needs cfc_ncp19 and lstm"}
    n, lstm = ms["cfc_ncp19"]["summary"], ms["lstm"]["summary"]
    s_n, s_l = n["success[clean]"][0], lstm["success[clean]"][0]
    if not s_l > 0:
        return {"checked": False, "why": "the LSTM never succeeds: no reference to compare against"}
    ratio = lstm["params"] / n["params"]
    within = s_n >= 0.9 * s_l - 1e-12
    fewer = ratio >= 10.0
    less = n["drop[noise]"][0] <= lstm["drop[noise]"][0] + 1e-12
    return {
        "checked": True,
        "ncp_success": s_n,
        "lstm_success": s_l,
        "within_10_percent": bool(within),
        "param_ratio": float(ratio),
        "ten_x_fewer": bool(fewer),
        "ncp_noise_drop": n["drop[noise]"][0],
        "lstm_noise_drop": lstm["drop[noise]"][0],
        "degrades_less": bool(less),
        "passed": bool(within and fewer and less),
    }


def _run_unit(robot: str, cfg: CompareConfig, log: bool, partial: str | None, seed: int) -> dict[str, Any]:
    return run_task(robot, cfg, sys.stderr if log else None, partial, [seed])


def run_compare(
    cfg: CompareConfig, jobs: int = 1, log: Any = None, out: str | pathlib.Path | None = None
) -> dict[str, Any]:
    """Every task of ``cfg``; the JSON-able results.

    ``jobs`` > 1 runs (task, seed) units in that many processes (each collects the same seeded
    demonstrations). Every unit keeps ``out/partial_<robot>_s<seed>.json`` (a temporary folder
    without ``out``), from which an interrupted run resumes and the results are assembled.
    """
    import tempfile

    cfg.check()
    t0 = time.perf_counter()
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="lnn_compare_")
        out = tmp.name
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    units = [
        (t, k, str(pathlib.Path(out) / f"partial_{t}_s{k}.json")) for t in cfg.tasks for k in range(cfg.seeds)
    ]
    try:
        if jobs > 1 and len(units) > 1:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ctx.Pool(min(jobs, len(units))) as pool:
                pool.starmap(_run_unit, [(t, cfg, log is not None, part, k) for t, k, part in units])
        else:
            for t, k, part in units:
                run_task(t, cfg, log, part, [k])
        results = results_from_partials(out, cfg.tasks)
    finally:
        if tmp is not None:
            tmp.cleanup()
    results["mode"] = "quick" if cfg.quick else "full"
    results["time_s"] = time.perf_counter() - t0
    return results


# --- reports ----------------------------------------------------------------------------------
def _fmt(ms: list[float], pct: bool = False, digits: int = 3) -> str:
    m, s = ms
    if not math.isfinite(m):
        return "n/a"
    if pct:
        return f"{100 * m:.0f} ± {100 * s:.0f}%"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    """The comparison tables (one per task) as markdown."""
    cfg = results["config"]
    lines = [
        f"# Policy comparison ({results['mode']} mode)",
        "",
        f"Same demonstrations and budget for every model: {cfg['demo_train']} train / "
        f"{cfg['demo_val']} val / {cfg['demo_test']} test expert episodes, {cfg['train_steps']} Adam steps "
        f"of {cfg['batch']} windows x {cfg['window']} steps, {cfg['seeds']} seed(s); "
        f"{cfg['eval_episodes']} closed-loop episodes per condition. Values are mean ± std over seeds. "
        "Success: goal reached without violation (arm: within "
        f"{cfg['arm_tolerance'][0]} rad / {cfg['arm_tolerance'][1]} rad/s). "
        "min h: worst barrier value over the episodes "
        "(diff_drive clearance in m, arm joint margin in rad). Perturbations (no filter): noise = sensor "
        f"noise std {cfg['noise_std']}, drop = {cfg['drop_prob']:.0%} of sensor updates lost (last "
        f"observation held), irregular = control period x U{tuple(cfg['dt_range'])}.",
        "",
    ]
    for robot, task in results["tasks"].items():
        has_f = task["filter"]["available"]
        lines += [
            f"## {robot}",
            "",
            f"Expert on the same evaluation episodes: success {task['expert']['clean']['success_rate']:.0%}, "
            f"min h {task['expert']['clean']['min_barrier']:.3f}. Filter: {task['filter']['note']}.",
            "",
        ]
        head = ["model", "params (live)", "held-out MSE", "success", "min h"]
        if has_f:
            head += ["success +filter", "min h +filter"]
        head += ["noise", "drop", "irregular"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in task["models"].values():
            s = m["summary"]
            n_seeds = s.get("seeds", cfg["seeds"])
            row = [
                m["label"] + (f" ({n_seeds} of {cfg['seeds']} seeds)" if n_seeds < cfg["seeds"] else ""),
                f"{s['params']:,} ({s['live_params']:,})",
                _fmt(s["imitation_mse"]),
                _fmt(s["success[clean]"], pct=True),
                _fmt(s["min_barrier[clean]"]),
            ]
            if has_f:
                row += [_fmt(s["success[clean+filter]"], pct=True), _fmt(s["min_barrier[clean+filter]"])]
            row += [_fmt(s[f"success[{c}]"], pct=True) for c in ("noise", "drop", "irregular")]
            lines.append("| " + " | ".join(row) + " |")
        v = task["verdict"]
        if v.get("checked"):
            lines += [
                "",
                f"Bar (CfC-NCP(19) vs LSTM): success {v['ncp_success']:.0%} vs {v['lstm_success']:.0%} "
                f"(within 10%: {'yes' if v['within_10_percent'] else 'no'}); "
                f"{v['param_ratio']:.1f}x fewer parameters (>= 10x: {'yes' if v['ten_x_fewer'] else 'no'}); "
                f"success drop under noise {100 * v['ncp_noise_drop']:.0f} vs "
                f"{100 * v['lstm_noise_drop']:.0f} points (less: {'yes' if v['degrades_less'] else 'no'}). "
                f"**{'Passed' if v['passed'] else 'Not passed'}.**",
            ]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str | pathlib.Path) -> pathlib.Path:
    """Per task: success by condition (bars, seeds' std as error bars) and parameters vs success."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    tasks = results["tasks"]
    fig, axes = plt.subplots(len(tasks), 3, figsize=(17, 4.0 * len(tasks)), dpi=90, squeeze=False)
    colors = {
        "cfc_ncp19": "tab:blue",
        "ltc_ncp19": "tab:cyan",
        "cfc_dense": "tab:purple",
        "lstm": "tab:orange",
        "gru": "tab:red",
        "mlp": "tab:gray",
    }
    for row, (robot, task) in enumerate(tasks.items()):
        ax = axes[row, 0]
        conds = [c for c in CONDITIONS if f"success[{c}]" in next(iter(task["models"].values()))["summary"]]
        kinds = list(task["models"])
        w = 0.8 / max(len(kinds), 1)
        for j, kind in enumerate(kinds):
            s = task["models"][kind]["summary"]
            m = [100 * s[f"success[{c}]"][0] for c in conds]
            e = [100 * s[f"success[{c}]"][1] for c in conds]
            ax.bar(
                np.arange(len(conds)) + (j - (len(kinds) - 1) / 2) * w,
                m,
                w,
                yerr=e,
                color=colors[kind],
                label=MODEL_LABELS[kind],
                capsize=2,
            )
        ax.axhline(100 * task["expert"]["clean"]["success_rate"], color="k", ls=":", lw=1, label="expert")
        ax.set_xticks(np.arange(len(conds)), conds)
        ax.set_ylim(0, 128)
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("closed-loop success (%)")
        ax.set_title(f"{robot}: success by condition")
        ax.legend(fontsize=7, ncol=3, loc="upper center")
        ax.grid(True, axis="y", alpha=0.3)
        ax = axes[row, 1]
        for kind in kinds:
            s = task["models"][kind]["summary"]
            ax.errorbar(
                s["params"],
                100 * s["success[clean]"][0],
                yerr=100 * s["success[clean]"][1],
                fmt="o",
                color=colors[kind],
                capsize=3,
            )
            ax.annotate(
                MODEL_LABELS[kind],
                (s["params"], 100 * s["success[clean]"][0]),
                fontsize=8,
                xytext=(5, 4),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(-5, 105)
        ax.set_xlabel("trainable parameters (log)")
        ax.set_ylabel("success, clean (%)")
        ax.set_title(f"{robot}: size vs success")
        ax.grid(True, which="both", alpha=0.3)
        ax = axes[row, 2]
        unit = "m" if robot == "diff_drive" else "rad"
        has_f = any("min_barrier[clean+filter]" in task["models"][k]["summary"] for k in kinds)
        for j, kind in enumerate(kinds):
            s = task["models"][kind]["summary"]
            for c, cond in enumerate(["clean", "clean+filter"] if has_f else ["clean"]):
                m_, e_ = s[f"min_barrier[{cond}]"]
                ax.bar(
                    j + (c - 0.5) * 0.38 * has_f,
                    m_,
                    0.38,
                    yerr=e_,
                    color=colors[kind],
                    alpha=1.0 if c == 0 else 0.45,
                    hatch="" if c == 0 else "//",
                    capsize=2,
                )
        ax.axhline(0.0, color="k", lw=1)
        ax.set_xticks(range(len(kinds)), [MODEL_LABELS[k] for k in kinds], fontsize=8, rotation=15)
        ax.set_ylabel(f"worst barrier value h ({unit})")
        note = " (hatched: with SafetyFilter)" if has_f else ""
        ax.set_title(f"{robot}: worst barrier value{note}", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_reports(results: dict[str, Any], out: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """``compare.json``, ``compare.md`` and ``compare.png`` in ``out``."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "md": out / "compare.md", "png": out / "compare.png"}
    strict_json.write(paths["json"], results)
    paths["md"].write_text(markdown(results))
    plot(results, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    """``lnn-control compare --out DIR [--quick] [--tasks ...] [--models ...] [--seeds N] [--jobs N]``."""
    p = argparse.ArgumentParser(
        prog="lnn-control compare",
        description="Compare CfC/LTC NCP policies with dense CfC, LSTM and MLP on both simulator tasks.",
    )
    p.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    p.add_argument(
        "--quick", action="store_true", help="tiny run for CI (1 seed, few episodes, short training)"
    )
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    p.add_argument("--models", nargs="+", choices=MODELS, default=None)
    p.add_argument("--seeds", type=int, default=None, help="seeds per model (default 3, quick 1)")
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--episodes", type=int, default=None, help="closed-loop episodes per condition")
    p.add_argument("--jobs", type=int, default=1, help="processes (one per task)")
    p.add_argument("--save-models", type=pathlib.Path, default=None, help="save trained liquid policies here")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write the reports from --out's partial files (no training)",
    )
    p.add_argument("--merge", nargs="*", type=pathlib.Path, default=[], help="more run folders to merge")
    a = p.parse_args(argv)
    if a.report_only:
        try:
            results = results_from_partials([a.out, *a.merge])
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        paths = write_reports(results, a.out)
        print(markdown(results))
        print("wrote " + ", ".join(str(v) for v in paths.values()))
        return 0
    cfg = CompareConfig.quick_config() if a.quick else CompareConfig.full()
    if a.tasks:
        cfg.tasks = tuple(a.tasks)
    if a.models:
        cfg.models = tuple(a.models)
    if a.seeds is not None:
        cfg.seeds = a.seeds
    if a.train_steps is not None:
        cfg.train_steps = a.train_steps
    if a.episodes is not None:
        cfg.eval_episodes = a.episodes
    if a.save_models is not None:
        cfg.save_models = str(a.save_models)
    try:
        cfg.check()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.jobs < 1:
        print(f"error: --jobs must be >= 1, got {a.jobs}", file=sys.stderr)
        return 2
    results = run_compare(cfg, a.jobs, log=sys.stderr, out=a.out)
    paths = write_reports(results, a.out)
    print(markdown(results))
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
