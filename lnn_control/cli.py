"""``lnn-control`` console script: ``train`` here; ``inspect`` / ``study`` (alias ``compare``) /
``evaluate`` dispatch lazily.

``lnn-control train --config config/diff_drive.yaml --data DIR_OR_FILES --cell cfc|ltc
--wiring ncp --units 19 [--barriernet] --epochs N [--dagger-rounds R] --out models/x.npz``
parses its arguments into a :class:`lnn_control.learn.recipe.Recipe` and runs
:func:`lnn_control.learn.recipe.train` (the observation mapping is the node's, from the same
YAML; the result is a ``lnn_control.runtime.model_file`` policy file the node loads).

``inspect``, ``study`` (= ``compare``) and ``evaluate`` live in ``lnn_control.analysis.interpret``
/ ``.study`` / ``.evaluate``; each is imported only when asked for and must expose
``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys

__all__ = ["main", "train_main"]

_SUBMODULES = {
    "inspect": "lnn_control.analysis.interpret",
    "study": "lnn_control.analysis.study_cli",
    "compare": "lnn_control.analysis.study_cli",
    "evaluate": "lnn_control.analysis.evaluate",
}


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
        "--data",
        nargs="*",
        default=[],
        help="bag directories, .mcap, .npz, .csv, or folders of them (none: --noise-episodes only)",
    )
    p.add_argument(
        "--model",
        choices=("ncp", "dense", "conv_ncp"),
        default="ncp",
        help="liquid policy: cell on an NCP wiring, or a dense cell with a linear read-out, or "
        "conv_ncp: a conv head on the observation's camera image in front of the NCP (lane)",
    )
    p.add_argument("--cell", choices=("cfc", "ltc"), default="cfc")
    p.add_argument("--wiring", choices=("ncp",), default="ncp", help="AutoNCP wiring (lnn_control.nn.wiring)")
    p.add_argument("--units", type=int, default=19, help="neurons (of the NCP wiring or the dense cell)")
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
    p.add_argument(
        "--steps", type=int, default=0, help="optimiser-step budget instead of --epochs (0: use --epochs)"
    )
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
    p.add_argument(
        "--feedforward",
        choices=("none", "gravity"),
        default="none",
        help="arm: the network learns the residual of the MJCF's gravity torque g(q), which the model "
        "file stores and its stepper adds (lnn_control.runtime.feedforward)",
    )
    p.add_argument(
        "--inputs",
        choices=("observation", "goal_error", "no_velocity"),
        default="observation",
        help="arm goal_error: network inputs (q_goal - q, dq) instead of the observation (q, dq, q_goal); "
        "diff_drive no_velocity: the observation without the measured (v, omega), which a cloned network "
        "would learn to repeat; stored as the model file's input_map",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=pathlib.Path, help="model file (.npz); plots go next to it")
    p.add_argument("--no-progress", action="store_true")
    return p


def train_main(argv: list[str]) -> int:
    """``lnn-control train``: the arguments -> :class:`lnn_control.learn.recipe.Recipe` ->
    :func:`lnn_control.learn.recipe.train`; 0 on success, 2 on bad data / arguments (stderr)."""
    import importlib.util

    from lnn_control.learn import recipe as R
    from lnn_control.learn.data import DataError

    a = _parser().parse_args(argv)
    if a.barriernet and importlib.util.find_spec("barriernet.filter_layer") is None:
        print("error: --barriernet needs barriernet.filter_layer, not in this install", file=sys.stderr)
        return 2
    try:
        rec = R.Recipe(
            model=a.model,
            cell=a.cell,
            units=a.units,
            sparsity=a.sparsity,
            motor=a.motor,
            epochs=a.epochs,
            steps=a.steps,
            window=a.window,
            batch=a.batch,
            lr=a.lr,
            patience=a.patience,
            val_fraction=a.val_fraction,
            input_noise=a.input_noise,
            seed=a.seed,
            noise_episodes=a.noise_episodes,
            action_noise=a.action_noise,
            goal_relabel=a.goal_relabel,
            dagger_rounds=a.dagger_rounds,
            dagger_episodes=a.dagger_episodes,
            dagger_epochs=a.dagger_epochs,
            dagger_beta=a.dagger_beta,
            eval_episodes=a.eval_episodes,
            filter_in_loop=a.filter_in_loop,
            barriernet=a.barriernet,
            feedforward=a.feedforward,
            inputs=a.inputs,
        )
        res = R.train(rec, a.config, a.data, a.out, progress=not a.no_progress)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model, fit = res.model, res.fit
    last = f", closed loop {res.dagger[-1]}" if res.dagger else ""
    if a.barriernet:
        last += (
            f", BarrierNet gains {model.gain_names}, infeasible QP samples dropped (last epoch) "
            f"{fit.infeasible[-1] if fit.infeasible else 0}"
        )
    print(
        f"{res.robot}: {res.episodes} episodes, best epoch {fit.best_epoch + 1}/{len(fit.train_loss)}, "
        f"val loss {fit.val_loss[fit.best_epoch]:.4f}{last} -> {res.path}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lnn-control``: ``train`` | ``inspect`` | ``study`` (``compare``) | ``evaluate``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: lnn-control {train,inspect,study,compare,evaluate} ...")
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
    print(f"error: unknown command {cmd!r}; use train, inspect, study (compare) or evaluate", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
