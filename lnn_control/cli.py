"""``lnn-control`` console script: ``train`` here; ``inspect`` / ``compare`` dispatch lazily.

``lnn-control train --config config/diff_drive.yaml --data DIR_OR_FILES --cell cfc|ltc
--wiring ncp --units 19 [--barriernet] --epochs N --out models/x.npz``

``inspect`` and ``compare`` live in ``lnn_control.interpret`` / ``lnn_control.compare``; each is
imported only when asked for and must expose ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
from typing import Any

import numpy as np
import yaml

__all__ = ["main", "train_main", "ROBOT_FIELDS", "mapper_factory"]

#: Observation fields per built-in robot when the config YAML has no ``observation:`` mapping
#: that ``lnn_control.observation`` can load (the same topics the simulator publishes).
ROBOT_FIELDS: dict[str, dict[str, Any]] = {
    "diff_drive": {
        "fields": {
            "/odom": [
                "pose.pose.position.x",
                "pose.pose.position.y",
                "pose.pose.orientation.z",
                "pose.pose.orientation.w",
                "twist.twist.linear.x",
                "twist.twist.angular.z",
            ],
            "/scan": ["ranges"],
            "/goal_pose": ["pose.position.x", "pose.position.y"],
        },
        "command_topic": "/cmd_vel",
        "command_fields": ["linear.x", "angular.z"],
        "output_names": ["v", "omega"],
    },
    "arm": {
        "fields": {"/joint_states": ["position", "velocity"], "/goal_joints": ["position"]},
        "command_topic": "/effort_controller/commands",
        "command_fields": ["data[0]", "data[1]", "data[2]"],
        "output_names": ["tau1", "tau2", "tau3"],
    },
}

_SUBMODULES = {"inspect": "lnn_control.interpret", "compare": "lnn_control.compare"}


def _robot_of(cfg: dict[str, Any], path: pathlib.Path) -> str:
    robot = cfg.get("robot") or path.stem
    if robot not in ROBOT_FIELDS:
        raise SystemExit(f"--config {path}: set 'robot:' to one of {sorted(ROBOT_FIELDS)} (got {robot!r})")
    return str(robot)


def mapper_factory(config_path: pathlib.Path, cfg: dict[str, Any], robot: str) -> tuple[Any, str]:
    """Return (zero-argument mapper factory, description): the node's ObservationMap when available."""
    from lnn_control import training

    try:
        obs_mod = importlib.import_module("lnn_control.observation")
    except ImportError:
        obs_mod = None
    if obs_mod is not None and hasattr(obs_mod, "load_observation_config") and "observation" in cfg:

        def make_obs() -> Any:
            m = obs_mod.load_observation_config(str(config_path))
            return m

        probe = make_obs()
        if all(hasattr(probe, a) for a in ("topics", "update", "vector", "names")):
            return make_obs, "ObservationMap from " + str(config_path)
    fields = ROBOT_FIELDS[robot]["fields"]
    return (lambda: training.FieldMap(fields)), f"built-in {robot} field map"


def train_main(argv: list[str]) -> int:
    """``lnn-control train``: returns 0 on success, 2 on bad data / arguments (message on stderr)."""
    from lnn_control import plots, training

    p = argparse.ArgumentParser(
        prog="lnn-control train", description="Train a liquid policy from recordings."
    )
    p.add_argument(
        "--config", required=True, type=pathlib.Path, help="robot config YAML (config/<robot>.yaml)"
    )
    p.add_argument(
        "--data", required=True, nargs="+", help="bag directories, .mcap, .npz, .csv, or folders of them"
    )
    p.add_argument("--cell", choices=("cfc", "ltc"), default="cfc")
    p.add_argument("--wiring", choices=("ncp",), default="ncp")
    p.add_argument("--units", type=int, default=19)
    p.add_argument("--barriernet", action="store_true", help="train through barriernet.QPLayer end to end")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=pathlib.Path, help="model file (.npz); plots go next to it")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if not a.config.is_file():
        print(f"error: --config {a.config} does not exist", file=sys.stderr)
        return 2
    cfg = yaml.safe_load(a.config.read_text()) or {}
    robot = _robot_of(cfg, a.config)
    if a.barriernet:
        print(
            "error: --barriernet needs barriernet.QPLayer and differentiable barriers, "
            "which this training module does not wire up yet; train without --barriernet",
            file=sys.stderr,
        )
        return 2
    preset = ROBOT_FIELDS[robot]
    factory, how = mapper_factory(a.config, cfg, robot)
    used: list[Any] = []
    try:
        episodes = training.load_recordings(
            a.data, factory, preset["command_topic"], preset["command_fields"], used_mappers=used
        )
        tc = training.TrainConfig(
            cell=a.cell,
            units=a.units,
            epochs=a.epochs,
            window=a.window,
            lr=a.lr,
            patience=a.patience,
            seed=a.seed,
            progress=not a.no_progress,
        )
        res = training.train_policy(episodes, tc)
    except (training.DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = [str(n) for n in used[0].names] if used else []
    meta = {
        "robot": robot,
        "wiring": {"type": "ncp", "units": a.units, "seed": a.seed},
        "output_names": preset["output_names"],
        "input_names": names,
        "observation": cfg.get("observation", {"fields": preset["fields"], "source": how}),
        "command_topic": preset["command_topic"],
        "training": {
            "epochs_run": len(res.train_loss),
            "best_epoch": res.best_epoch,
            "best_val_loss": res.val_loss[res.best_epoch],
            "n_train": len(res.train_episodes),
            "n_val": len(res.val_episodes),
            "data": [str(d) for d in a.data],
        },
    }
    out = training.save_checkpoint(a.out, res.model, meta)
    stem = out.with_suffix("")
    plots.loss_curves(f"{stem}_loss.png", res.train_loss, res.val_loss, res.best_epoch)
    show = res.val_episodes or res.train_episodes
    preds = []
    import torch

    with torch.no_grad():
        for e in show[:3]:
            y, _ = res.model(
                torch.as_tensor(e.obs, dtype=torch.float32)[None],
                torch.as_tensor(e.dt, dtype=torch.float32)[None],
            )
            preds.append(y[0].numpy())
    plots.rollouts_vs_demos(
        f"{stem}_rollouts.png",
        [e.target for e in show[:3]],
        preds,
        [np.cumsum(e.dt) - e.dt[0] for e in show[:3]],
        preset["output_names"],
    )
    print(
        f"{robot}: {len(episodes)} episodes ({how}), best epoch {res.best_epoch + 1}/{len(res.train_loss)}, "
        f"val loss {res.val_loss[res.best_epoch]:.4f} -> {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lnn-control``: ``train`` | ``inspect`` | ``compare``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: lnn-control {train,inspect,compare} ...")
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd == "train":
        return train_main(rest)
    if cmd in _SUBMODULES:
        try:
            mod = importlib.import_module(_SUBMODULES[cmd])
        except ImportError as e:
            print(f"error: '{cmd}' needs {_SUBMODULES[cmd]}, which is not available ({e})", file=sys.stderr)
            return 2
        return int(mod.main(rest))
    print(f"error: unknown command {cmd!r}; use train, inspect or compare", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
