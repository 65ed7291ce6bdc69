"""``lnn-control`` console script: ``train`` here; ``inspect`` / ``compare`` dispatch lazily.

``lnn-control train --config config/diff_drive.yaml --data DIR_OR_FILES --cell cfc|ltc
--wiring ncp --units 19 [--barriernet] --epochs N [--dagger-rounds R] --out models/x.npz``

The observation mapping is the node's (``lnn_control.config.load_observation_config`` on the
same YAML), and the result is a ``lnn_control.runtime.model_file`` policy file the node loads.

``inspect`` and ``compare`` live in ``lnn_control.analysis.interpret`` / ``.compare``; each is
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

__all__ = ["main", "train_main"]

_SUBMODULES = {"inspect": "lnn_control.analysis.interpret", "compare": "lnn_control.analysis.compare"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lnn-control train",
        description="Train a liquid policy (CfC/LTC, NCP wiring) from recordings; writes a model file.",
    )
    p.add_argument(
        "--config",
        required=True,
        type=pathlib.Path,
        help="robot config YAML (config/<robot>.yaml): its observation section maps messages to inputs",
    )
    p.add_argument(
        "--data", required=True, nargs="+", help="bag directories, .mcap, .npz, .csv, or folders of them"
    )
    p.add_argument("--cell", choices=("cfc", "ltc"), default="cfc")
    p.add_argument("--wiring", choices=("ncp",), default="ncp", help="AutoNCP wiring (lnn_control.nn.wiring)")
    p.add_argument("--units", type=int, default=19, help="neurons of the NCP wiring")
    p.add_argument("--sparsity", type=float, default=0.5, help="NCP synapse sparsity in [0.1, 1)")
    p.add_argument(
        "--motor", type=int, default=0, help="motor neurons before the linear read-out (0: one per output)"
    )
    p.add_argument(
        "--barriernet",
        action="store_true",
        help="train end to end through barriernet.QPLayer with learned class-K gains",
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--window", type=int, default=32, help="truncated-BPTT window (steps)")
    p.add_argument("--batch", type=int, default=16, help="windows per gradient step")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--input-noise", type=float, default=0.0, help="augmentation noise (normalised units)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument(
        "--dagger-rounds",
        type=int,
        default=0,
        help="DAgger rounds on the built-in simulator (policy rollouts relabelled by the expert)",
    )
    p.add_argument("--dagger-episodes", type=int, default=16, help="policy rollouts added per DAgger round")
    p.add_argument("--dagger-epochs", type=int, default=15, help="training epochs per DAgger round")
    p.add_argument(
        "--dagger-beta", type=float, default=0.5, help="round r applies the expert's command w.p. beta^r"
    )
    p.add_argument(
        "--eval-episodes",
        type=int,
        default=0,
        help="closed-loop evaluation episodes on the built-in simulator after training / each DAgger round",
    )
    p.add_argument(
        "--noise-episodes",
        type=int,
        default=0,
        help="extra expert episodes on the built-in simulator with --action-noise on the applied command "
        "(labels stay the expert's clean command: recovery data, DART)",
    )
    p.add_argument("--action-noise", type=float, default=0.1, help="disturbance std / command limit")
    p.add_argument(
        "--filter-in-loop",
        action="store_true",
        help="DAgger rollouts, noise episodes and closed-loop evaluation apply the config's safety_filter "
        "to every command, as the node does (the expert labels the states the filtered policy visits)",
    )
    p.add_argument(
        "--goal-relabel",
        type=int,
        default=0,
        help="arm: copies of each training episode with a new random goal, relabelled by the expert",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=pathlib.Path, help="model file (.npz); plots go next to it")
    p.add_argument("--no-progress", action="store_true")
    return p


def train_main(argv: list[str]) -> int:
    """``lnn-control train``: returns 0 on success, 2 on bad data / arguments (message on stderr)."""
    import importlib.util

    from lnn_control.analysis import plots
    from lnn_control.config import load_filter_config, load_observation_config, read_robot_config
    from lnn_control.learn import training
    from lnn_control.runtime.model_file import save_policy

    a = _parser().parse_args(argv)
    if not a.config.is_file():
        print(f"error: --config {a.config} does not exist", file=sys.stderr)
        return 2
    try:
        params = read_robot_config(a.config)
        probe = load_observation_config(a.config)
    except (ValueError, yaml.YAMLError) as e:
        print(f"error: --config {a.config}: {e}", file=sys.stderr)
        return 2
    robot = str(params.get("robot") or a.config.stem)
    try:
        controls = load_filter_config(a.config).get("controls", {})
        output_names = [str(n) for n in controls.get("names", [])]
    except ValueError:
        output_names = []
    if len(output_names) != len(probe.command_fields):
        output_names = list(probe.command_fields)
    safety_filter = None
    if a.barriernet:
        if importlib.util.find_spec("barriernet.filter_layer") is None:
            print("error: --barriernet needs barriernet.filter_layer, not in this install", file=sys.stderr)
            return 2
        if a.goal_relabel:
            print(
                "error: --barriernet: --goal-relabel makes episodes with new goals but the recorded filter "
                "state of the old ones; use recordings, --noise-episodes or --dagger-rounds",
                file=sys.stderr,
            )
            return 2
        from barriernet.safety_filter import SafetyFilter

        try:
            safety_filter = SafetyFilter.from_config(load_filter_config(a.config))
        except ValueError as e:
            print(f"error: --barriernet: --config {a.config} safety_filter: {e}", file=sys.stderr)
            return 2
    if a.dagger_rounds < 0:
        print(f"error: --dagger-rounds must be >= 0, got {a.dagger_rounds}", file=sys.stderr)
        return 2

    def factory() -> Any:
        return load_observation_config(a.config)

    try:
        episodes = training.load_recordings(a.data, factory, probe.command_topic, probe.command_fields)
        tc = training.TrainConfig(
            cell=a.cell,
            units=a.units,
            sparsity=a.sparsity,
            motor=a.motor,
            wiring_seed=a.seed,
            epochs=a.epochs,
            window=a.window,
            batch=a.batch,
            lr=a.lr,
            patience=a.patience,
            val_fraction=a.val_fraction,
            seed=a.seed,
            input_noise=a.input_noise,
            progress=not a.no_progress,
        )
        train_eps, val_eps = training.split_episodes(episodes, a.val_fraction, a.seed)
        if a.noise_episodes > 0 or a.goal_relabel > 0:  # training split only: validation stays clean
            from lnn_control.learn.dagger import ClosedLoop, relabel_goals

            loop = ClosedLoop(robot, a.config, safety_filter=a.filter_in_loop)
            train_eps += [
                loop.run(None, 30_000 + a.seed + i, action_noise=a.action_noise).episode
                for i in range(a.noise_episodes)
            ]
            if a.goal_relabel > 0:
                train_eps += relabel_goals(loop, train_eps, a.goal_relabel, a.seed)
        res = training.train_policy(
            [],
            tc,
            input_names=probe.names,
            output_names=output_names,
            split=(train_eps, val_eps),
            safety_filter=safety_filter,
        )
    except (training.DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = res.model
    history: list[dict[str, Any]] = []
    if a.dagger_rounds > 0 or a.eval_episodes > 0:
        model, history = _dagger(a, robot, tc, res, train_eps, probe.names, output_names, safety_filter)
    meta: dict[str, Any] = {
        "robot": robot,
        "config": str(a.config),
        "command_topic": probe.command_topic,
        "training": {
            "cell": a.cell,
            "wiring": {
                "type": "auto_ncp",
                "units": a.units,
                "motor": a.motor,
                "sparsity": a.sparsity,
                "seed": a.seed,
            },
            "epochs_run": len(res.train_loss),
            "best_epoch": res.best_epoch,
            "best_val_loss": res.val_loss[res.best_epoch],
            "n_train": len(res.train_episodes),
            "n_val": len(res.val_episodes),
            "noise_episodes": a.noise_episodes,
            "filter_in_loop": a.filter_in_loop,
            **({"goal_relabel": a.goal_relabel} if a.goal_relabel else {}),
            "action_noise": a.action_noise,
            "data": [pathlib.Path(d).name for d in a.data],  # names only: files do not depend on where
            "seed": a.seed,
            "dagger": history,
            **(
                {
                    "barriernet": {
                        "gain_names": list(model.gain_names),
                        "gain_scale": model.gain_scale,
                        "infeasible_per_epoch": res.infeasible,
                        "val_infeasible_per_epoch": res.val_infeasible,
                    }
                }
                if safety_filter is not None
                else {}
            ),
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    out = pathlib.Path(save_policy(a.out, model.double(), observation=params.get("observation"), **meta))
    stem = out.with_suffix("")
    plots.loss_curves(f"{stem}_loss.png", res.train_loss, res.val_loss, res.best_epoch)
    show = (res.val_episodes or res.train_episodes)[:3]
    plots.rollouts_vs_demos(
        f"{stem}_rollouts.png",
        [e.target for e in show],
        [training.predict(model, e)[:, : model.n_commands] for e in show],
        [np.cumsum(e.dt) - e.dt[0] for e in show],
        output_names,
    )
    last = f", closed loop {history[-1]}" if history else ""
    if safety_filter is not None:
        last += (
            f", BarrierNet gains {model.gain_names}, infeasible QP samples dropped (last epoch) "
            f"{res.infeasible[-1] if res.infeasible else 0}"
        )
    print(
        f"{robot}: {len(episodes)} episodes, best epoch {res.best_epoch + 1}/{len(res.train_loss)}, "
        f"val loss {res.val_loss[res.best_epoch]:.4f}{last} -> {out}"
    )
    return 0


def _dagger(
    a: argparse.Namespace,
    robot: str,
    tc: Any,
    res: Any,
    train_eps: list[Any],
    input_names: list[str],
    output_names: list[str],
    safety_filter: Any = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """DAgger rounds after behaviour cloning (lnn_control.learn.dagger); best round by closed-loop success."""
    import dataclasses

    from lnn_control.learn import dagger, training

    loop = dagger.ClosedLoop(robot, a.config, safety_filter=a.filter_in_loop)
    fine = dataclasses.replace(tc, epochs=a.dagger_epochs, lr=tc.lr * 0.3, patience=a.dagger_epochs)

    def train(data: Any, prev: Any) -> Any:
        if prev is None:
            return res.model
        return training.train_policy(
            [],
            fine,
            input_names=input_names,
            output_names=output_names,
            init=prev,
            split=(data, []),
            safety_filter=safety_filter,
        ).model

    eval_seeds = [10_000 + a.seed + i for i in range(a.eval_episodes)]
    return dagger.dagger(
        loop,
        train_eps,
        train,
        a.dagger_rounds,
        a.dagger_episodes,
        20_000 + a.seed,
        eval_seeds,
        beta=a.dagger_beta,
    )


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
