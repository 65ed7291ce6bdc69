"""The training recipe: what ``lnn-control train``, ``lnn-control compare`` and
``scripts/train_demo_policies.sh`` run, callable from Python.

:class:`Recipe` holds every choice (model kind and size, budget, data augmentation, DAgger,
BarrierNet); :func:`train` runs it for one robot config:

1. episodes: recordings (bags mapped by the node's
   :class:`~lnn_control.control.observation.ObservationMap` from the same YAML, or .npz / .csv)
   or :class:`~lnn_control.learn.data.Episode` objects, split by episode (seeded);
2. training split only: ``noise_episodes`` expert episodes on the built-in simulator with an
   AR(1) disturbance on the applied command (labels stay the clean expert command: DART), and
   ``goal_relabel`` copies of each training episode with new goals (arm);
3. behaviour cloning (:func:`lnn_control.learn.training.train_policy`: the same windows,
   normalisation and loss for every model kind; BarrierNet mode trains through the filter's QP);
4. ``dagger_rounds`` rounds of DAgger (:func:`lnn_control.learn.dagger.dagger`): rollouts of the
   policy in :class:`lnn_control.sim.rollout.ClosedLoop`, through the config's safety filter when
   ``filter_in_loop``, relabelled by the expert; the round with the best closed-loop success on
   ``eval_episodes`` held-out episodes is kept;
Model structure (``feedforward``, ``inputs``; the arm): the network learns the residual of a
model-based feed-forward (``feedforward="gravity"``: the gravity torque g(q) of the robot's
MJCF, :func:`lnn_control.runtime.feedforward.gravity_pitch_chain_config`) from mapped inputs
(``inputs="goal_error"``: z = (q_goal - q, dq) instead of (q, dq, q_goal)); targets are
``expert - g(q)``, normalised by their own statistics. Both are stored in the model file and
run by its stepper (:class:`~lnn_control.runtime.feedforward.FeedforwardStepper`), in DAgger's
rollouts and evaluation as in the node.

5. with ``out``: the model file (:func:`lnn_control.runtime.model_file.save_policy`, liquid
   policies only) and loss / rollout plots next to it.

Simulator episode seeds: noise episodes ``30000 + seed + i``, DAgger rollouts ``20000 + seed +
1000 r + i``, closed-loop evaluation ``10000 + seed + i``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lnn_control.learn import training
from lnn_control.learn.data import DataError, Episode, Structure
from lnn_control.learn.training import MODEL_KINDS, Policy, TrainConfig

__all__ = ["FEEDFORWARDS", "INPUTS", "Recipe", "TrainResult", "expert_episodes", "structure_for", "train"]

#: ``Recipe.feedforward`` choices: none, or the robot model's gravity torque (arm)
FEEDFORWARDS = ("none", "gravity")
#: ``Recipe.inputs`` choices: the observation as mapped, (q_goal - q, dq) (arm), or the observation
#: without the robot's own measured velocity :data:`VELOCITY_INPUTS` (diff_drive)
INPUTS = ("observation", "goal_error", "no_velocity")
#: observation entries ``inputs="no_velocity"`` leaves out: on a kinematic base the measured (v, omega)
#: is the last command, and a network cloned with it learns to repeat it ("copycat" shortcut)
VELOCITY_INPUTS = ("v", "omega")

NOISE_SEED, DAGGER_SEED, EVAL_SEED = 30_000, 20_000, 10_000


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every choice of one training run (defaults: ``lnn-control train``'s).

    Model: ``model`` (:data:`lnn_control.learn.training.MODEL_KINDS`: ``ncp``, ``dense``,
    ``lstm``, ``gru``, ``mlp``), ``cell`` (``cfc`` | ``ltc``, liquid kinds), ``units`` (neurons /
    hidden units), ``sparsity`` and ``motor`` (NCP wiring; motor 0 = one per output).
    Budget: ``epochs`` with early stopping after ``patience`` epochs, or exactly ``steps``
    optimiser steps when > 0; ``window`` (truncated-BPTT steps), ``batch`` (windows per step),
    ``lr``, ``val_fraction`` (episodes held out), ``input_noise`` (normalised units), ``seed``
    (split, initialisation, wiring, batch order, simulator episodes).
    Data: ``noise_episodes`` simulator expert episodes with ``action_noise`` (std / command
    limit) on the applied command; ``goal_relabel`` copies per episode with new goals (arm).
    DAgger: ``dagger_rounds`` rounds of ``dagger_episodes`` rollouts, ``dagger_epochs`` epochs
    each (lr x 0.3), expert mixture ``dagger_beta ** round``; ``eval_episodes`` closed-loop
    episodes pick the best round. ``filter_in_loop``: rollouts apply the config's safety filter.
    ``barriernet``: train through the safety filter's QP with learned class-K gains.
    Structure (arm): ``feedforward`` (:data:`FEEDFORWARDS`) and ``inputs`` (:data:`INPUTS`), see
    the module docstring; diff_drive: ``inputs="no_velocity"`` (the network does not read the
    measured (v, omega), :data:`VELOCITY_INPUTS`).
    """

    model: str = "ncp"
    cell: str = "cfc"
    units: int = 19
    sparsity: float = 0.5
    motor: int = 0
    epochs: int = 50
    steps: int = 0
    window: int = 32
    batch: int = 16
    lr: float = 5e-3
    patience: int = 8
    val_fraction: float = 0.2
    input_noise: float = 0.0
    seed: int = 0
    noise_episodes: int = 0
    action_noise: float = 0.1
    goal_relabel: int = 0
    dagger_rounds: int = 0
    dagger_episodes: int = 16
    dagger_epochs: int = 15
    dagger_beta: float = 0.5
    eval_episodes: int = 0
    filter_in_loop: bool = False
    barriernet: bool = False
    feedforward: str = "none"
    inputs: str = "observation"

    def __post_init__(self) -> None:
        if self.feedforward not in FEEDFORWARDS:
            raise ValueError(f"feedforward must be one of {FEEDFORWARDS}, got {self.feedforward!r}")
        if self.inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {INPUTS}, got {self.inputs!r}")
        if self.barriernet and (self.feedforward != "none" or self.inputs != "observation"):
            raise ValueError(
                "barriernet trains the plain network through the filter: use feedforward 'none'"
                " and inputs 'observation' with it"
            )
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS}, got {self.model!r}")
        for k in ("noise_episodes", "goal_relabel", "dagger_rounds", "eval_episodes"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")
        for k in ("dagger_episodes", "dagger_epochs"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not (math.isfinite(self.action_noise) and self.action_noise >= 0):
            raise ValueError(f"action_noise must be finite and >= 0, got {self.action_noise}")
        if not 0.0 <= self.dagger_beta <= 1.0:
            raise ValueError(f"dagger_beta must be in [0, 1], got {self.dagger_beta}")
        if self.barriernet and self.goal_relabel:
            raise ValueError(
                "barriernet with goal_relabel: relabelling makes episodes with new goals but the recorded "
                "filter state of the old ones; use recordings, noise_episodes or dagger_rounds"
            )
        if self.barriernet and self.model not in ("ncp", "dense"):
            raise ValueError(f"barriernet needs a liquid policy (model 'ncp' or 'dense'), not {self.model!r}")
        self.train_config()  # the fit's own checks (cell, units, lr, ...)

    def train_config(self, progress: bool = False) -> TrainConfig:
        """The behaviour-cloning hyperparameters (:class:`~lnn_control.learn.training.TrainConfig`)."""
        return TrainConfig(
            model=self.model,
            cell=self.cell,
            units=self.units,
            sparsity=self.sparsity,
            motor=self.motor,
            wiring_seed=self.seed,
            epochs=self.epochs,
            steps=self.steps,
            window=self.window,
            batch=self.batch,
            lr=self.lr,
            patience=self.patience,
            val_fraction=self.val_fraction,
            seed=self.seed,
            input_noise=self.input_noise,
            progress=progress,
        )


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` made.

    model: the policy kept (best DAgger round, else the behaviour-cloning checkpoint), float32;
    fit: the behaviour-cloning result (losses per epoch, split, infeasible QP samples);
    dagger: one dict per DAgger round (data size, closed-loop rates); robot; episodes: demonstration
    episodes given (before augmentation); path: the model file written (None without ``out``);
    metadata: the ``training`` record stored in the model file.
    """

    model: Policy
    fit: training.TrainResult
    dagger: list[dict[str, Any]]
    robot: str
    episodes: int
    path: pathlib.Path | None
    metadata: dict[str, Any]
    #: the feed-forward / input map around ``model`` (None: the network is the whole policy)
    structure: Structure | None = None

    def stepper(self) -> Any:
        """The deployed run-time policy: ``model.runtime()`` inside its structure."""
        rt = self.model.runtime()  # type: ignore[union-attr]
        return rt if self.structure is None else self.structure.stepper(rt)


def _closed_loop(robot: str, config: pathlib.Path, filter_in_loop: bool) -> Any:
    from lnn_control.sim.rollout import ClosedLoop

    return ClosedLoop(robot, config, safety_filter=filter_in_loop)


def expert_episodes(
    robot: str,
    config: str | pathlib.Path,
    seeds: Sequence[int],
    action_noise: float = 0.0,
    filter_in_loop: bool = False,
    record_filter: bool = False,
    max_time: float | None = None,
) -> list[Episode]:
    """Expert episodes of ``robot`` on the built-in simulator, one per seed (the seeded draws of
    :func:`lnn_control.sim.episodes.draw`), observed through the config's ObservationMap.

    ``action_noise``: std / command limit of the AR(1) disturbance on the applied command (labels
    stay the expert's clean command); ``filter_in_loop``: the applied command passes the config's
    safety filter; ``record_filter``: episodes hold the filter state and env (BarrierNet data).
    """
    loop = _closed_loop(robot, pathlib.Path(config), filter_in_loop)
    return [
        loop.run(
            None, int(s), max_time=max_time, action_noise=action_noise, record_filter=record_filter
        ).episode
        for s in seeds
    ]


def structure_for(recipe: Recipe, robot: str, observation: Any) -> Structure | None:
    """The :class:`~lnn_control.learn.data.Structure` that ``recipe`` asks for on ``robot`` with
    the observation mapping ``observation`` (None when it asks for none); ValueError when the
    robot or mapping cannot have it (the gravity feed-forward needs the built-in arm's MJCF, both
    need q, dq and the goal in the observation)."""
    if recipe.feedforward == "none" and recipe.inputs == "observation":
        return None
    if recipe.inputs == "no_velocity":
        if recipe.feedforward != "none":
            raise ValueError("inputs 'no_velocity' is for a plain network: use feedforward 'none' with it")
        return _without_velocity(observation)
    if robot != "arm":
        raise ValueError(
            f"feedforward {recipe.feedforward!r} / inputs {recipe.inputs!r}: only the built-in arm has them, "
            f"not {robot!r}"
        )
    from lnn_control.learn.dagger import _slices

    sl = _slices(observation)
    if set(sl) != {"q", "dq", "goal"}:
        raise ValueError(
            f"feedforward / inputs need q, dq and the goal in the observation, found {sorted(sl)}"
        )
    n_obs, names = int(observation.n_inputs), list(observation.names)
    q = list(range(n_obs))[sl["q"]]
    dq = list(range(n_obs))[sl["dq"]]
    goal = list(range(n_obs))[sl["goal"]]
    ff = None
    if recipe.feedforward == "gravity":
        import mujoco

        from lnn_control.runtime.feedforward import gravity_pitch_chain_config
        from lnn_control.sim.models import mjcf_for

        ff = gravity_pitch_chain_config(mujoco.MjModel.from_xml_string(mjcf_for(robot)), q)
        ff["source"] = f"gravity torque of the built-in {robot} MJCF (lnn_control.sim.models), at dq = 0"
        ff["note"] = (
            "u = g(q) + network(z). The expert is PD + gravity compensation, so at the goal a torque error "
            "d tau leaves a steady-state error d tau / Kp: within the 0.05 rad tolerance only if "
            "|d tau| < 0.3 / 1.5 / 0.4 N m (joints 1-3), while g(q) spans up to 6 N m. A small network "
            "asked for tau must rebuild g(q) that precisely everywhere and did not (every failure of the "
            "plain 32-neuron policy was such an offset at rest); given g(q) exactly, it learns only "
            "the residual, normalised by its own statistics."
        )
    imap = None
    if recipe.inputs == "goal_error":
        rows: list[list[float]] = []
        znames: list[str] = []
        for i, (qi, gi) in enumerate(zip(q, goal)):
            r = [0.0] * n_obs
            r[gi], r[qi] = 1.0, -1.0
            rows.append(r)
            znames.append(f"goal_error[{i}]")
        for i, di in enumerate(dq):
            r = [0.0] * n_obs
            r[di] = 1.0
            rows.append(r)
            znames.append(names[di] if di < len(names) else f"dq[{i}]")
        imap = {
            "names": znames,
            "matrix": rows,
            "observation_names": names,
            "note": "the residual tau - g(q) of the PD expert is Kd (clip(Kp / Kd (q_goal - q)) - dq) "
            "+ d dq: "
            "a function of the goal error and the velocity only, so the network gets exactly those "
            "(a sparse NCP fed q and q_goal must otherwise form their difference itself)",
        }
    return Structure(ff, imap)


def _without_velocity(observation: Any) -> Structure:
    """An input map selecting every observation entry except :data:`VELOCITY_INPUTS`."""
    names = list(observation.names)
    keep = [i for i, n in enumerate(names) if n not in VELOCITY_INPUTS]
    if len(keep) == len(names):
        raise ValueError(
            f"inputs 'no_velocity': the observation has none of {VELOCITY_INPUTS}, found {names}"
        )
    rows = [[1.0 if j == i else 0.0 for j in range(len(names))] for i in keep]
    return Structure(None, {"names": [names[i] for i in keep], "matrix": rows, "observation_names": names})


def _names(config: pathlib.Path) -> tuple[dict[str, Any], Any, str, list[str]]:
    """(node parameters, ObservationMap, robot, command names) of a robot config."""
    import yaml

    from lnn_control.config import load_filter_config, load_observation_config, read_robot_config

    if not config.is_file():
        raise ValueError(f"config_yaml {config} does not exist; use config/<robot>.yaml")
    try:
        params = read_robot_config(config)
        probe = load_observation_config(config)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"config_yaml {config}: {e}") from e
    robot = str(params.get("robot") or config.stem)
    try:
        controls = load_filter_config(config).get("controls", {})
        output_names = [str(n) for n in controls.get("names", [])]
    except ValueError:
        output_names = []
    if len(output_names) != len(probe.command_fields):
        output_names = list(probe.command_fields)
    return params, probe, robot, output_names


def train(
    recipe: Recipe,
    config_yaml: str | pathlib.Path,
    data: Sequence[str | pathlib.Path] | Sequence[Episode] | None = None,
    out: str | pathlib.Path | None = None,
    progress: bool = True,
    *,
    validation: Sequence[Episode] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Run ``recipe`` for the robot of ``config_yaml`` (see the module docstring).

    Args:
        recipe: the choices.
        config_yaml: ``config/<robot>.yaml``: observation mapping, safety filter, robot name.
        data: recordings (bag dirs, .mcap, .npz, .csv, or folders of them) or Episode objects;
            None: simulator episodes only (``noise_episodes`` must then be > 0).
        out: model file (.npz) to write, plots next to it; None writes nothing.
        progress: tqdm bars on stderr (epochs, DAgger rounds).
        validation: held-out episodes; then ``data`` is all training data (no split).
        log: one line per DAgger round (default: stderr when ``progress``).
    Raises:
        DataError (bad or missing recordings), ValueError (bad config or recipe), each saying what to fix.
    """
    config = pathlib.Path(config_yaml)
    params, probe, robot, output_names = _names(config)
    if out is not None and recipe.model not in ("ncp", "dense", "conv_ncp"):
        raise ValueError(
            f"out: the model file holds liquid policies only; the {recipe.model} baseline is for "
            "comparison (pass out=None)"
        )
    safety_filter = None
    if recipe.barriernet:
        from barriernet.safety_filter import SafetyFilter
        from lnn_control.config import load_filter_config

        try:
            safety_filter = SafetyFilter.from_config(load_filter_config(config))
        except ValueError as e:
            raise ValueError(f"barriernet: config_yaml {config} safety_filter: {e}") from e
    if log is None:
        log = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)

    items = list(data or [])
    if all(isinstance(e, Episode) for e in items):
        episodes: list[Episode] = [e for e in items if isinstance(e, Episode)]
    else:
        from lnn_control.config import load_observation_config

        paths = [p for p in items if not isinstance(p, Episode)]
        if len(paths) != len(items):
            raise ValueError("data: give recordings (paths) or Episode objects, not both")
        episodes = training.load_recordings(paths, lambda: load_observation_config(config))
    if validation is not None:
        train_eps, val_eps = list(episodes), list(validation)
    else:
        train_eps, val_eps = training.split_episodes(episodes, recipe.val_fraction, recipe.seed)
    if recipe.noise_episodes or recipe.goal_relabel:  # training split only: validation stays clean
        seeds = [NOISE_SEED + recipe.seed + i for i in range(recipe.noise_episodes)]
        train_eps += expert_episodes(
            robot, config, seeds, recipe.action_noise, recipe.filter_in_loop, recipe.barriernet
        )
        if recipe.goal_relabel:
            from lnn_control.learn.dagger import relabel_goals

            loop = _closed_loop(robot, config, recipe.filter_in_loop)
            train_eps += relabel_goals(loop, train_eps, recipe.goal_relabel, recipe.seed)
    if not train_eps:
        raise DataError("no training episodes: give data (recordings or episodes) or noise_episodes > 0")
    structure = structure_for(recipe, robot, probe)
    fit_train, fit_val, input_names = train_eps, val_eps, probe.names
    if structure is not None:  # the network learns the residual from the mapped inputs
        fit_train = [structure.residual(e) for e in train_eps]
        fit_val = [structure.residual(e) for e in val_eps]
        input_names = structure.input_names or probe.names
    tc = recipe.train_config(progress)
    if recipe.model in training.VISION_KINDS:  # the conv head reads the observation's image (lane)
        if not probe.images:
            raise ValueError(f"model {recipe.model}: {config} has no image feature (extractor: image)")
        tc = dataclasses.replace(tc, image=probe.images[0])
    fit = training.train_policy(
        [],
        tc,
        input_names=input_names,
        output_names=output_names,
        split=(fit_train, fit_val),
        safety_filter=safety_filter,
    )
    model: Policy = fit.model
    history: list[dict[str, Any]] = []
    if recipe.dagger_rounds > 0 or recipe.eval_episodes > 0:
        model, history = _dagger(
            recipe, robot, config, tc, fit, train_eps, output_names, safety_filter, log, structure
        )
    meta = _metadata(recipe, config, fit, model, history, data, safety_filter is not None)
    path = None
    if out is not None:
        path = _write(
            pathlib.Path(out),
            model,
            fit,
            params,
            robot,
            probe.command_topic,
            meta,
            output_names,
            structure,
            val_eps,
        )
    return TrainResult(model, fit, history, robot, len(episodes), path, meta, structure)


def _dagger(
    recipe: Recipe,
    robot: str,
    config: pathlib.Path,
    tc: TrainConfig,
    fit: training.TrainResult,
    train_eps: list[Episode],
    output_names: list[str],
    safety_filter: Any,
    log: Callable[[str], None],
    structure: Structure | None = None,
) -> tuple[Policy, list[dict[str, Any]]]:
    """DAgger rounds after behaviour cloning, warm-started; best round by closed-loop success.

    With a ``structure`` the rollouts run the network inside it (as the model file deploys it) and
    every round's data (raw observations, expert commands) is turned into residual episodes."""
    from lnn_control.learn import dagger

    loop = _closed_loop(robot, config, recipe.filter_in_loop)
    fine = dataclasses.replace(
        tc, epochs=recipe.dagger_epochs, steps=0, lr=tc.lr * 0.3, patience=recipe.dagger_epochs
    )

    def retrain(data: Sequence[Episode], prev: Any | None) -> Any:
        if prev is None:
            return fit.model if structure is None else _Structured(fit.model, structure)
        if structure is None:
            init, eps = prev, list(data)
        else:
            init, eps = prev.network, [structure.residual(e) for e in data]
        net = training.train_policy(
            [],
            fine,
            input_names=fit.model.input_names,
            output_names=output_names,
            init=init,
            split=(eps, []),
            safety_filter=safety_filter,
        ).model
        return net if structure is None else _Structured(net, structure)

    eval_seeds = [EVAL_SEED + recipe.seed + i for i in range(recipe.eval_episodes)]
    best, history = dagger.dagger(
        loop,
        train_eps,
        retrain,
        recipe.dagger_rounds,
        recipe.dagger_episodes,
        DAGGER_SEED + recipe.seed,
        eval_seeds,
        beta=recipe.dagger_beta,
        log=log,
        record_filter=recipe.barriernet,
        progress=tc.progress,
    )
    return (best.network if isinstance(best, _Structured) else best), history


class _Structured:
    """A network with its structure, as DAgger handles policies: ``runtime()`` is the deployed stepper."""

    def __init__(self, network: Policy, structure: Structure) -> None:
        self.network, self.structure = network, structure

    def runtime(self) -> Any:
        return self.structure.stepper(self.network.runtime())  # type: ignore[union-attr]


def _metadata(
    recipe: Recipe,
    config: pathlib.Path,
    fit: training.TrainResult,
    model: Policy,
    history: list[dict[str, Any]],
    data: Any,
    barriernet: bool,
) -> dict[str, Any]:
    """The ``training`` record of the model file (the recipe, data names, losses, DAgger rounds)."""
    sources = [pathlib.Path(d).name for d in (data or []) if not isinstance(d, Episode)]
    meta: dict[str, Any] = {
        "model": recipe.model,
        "cell": recipe.cell,
        "wiring": {
            "type": "auto_ncp" if recipe.model == "ncp" else recipe.model,
            "units": recipe.units,
            "motor": recipe.motor,
            "sparsity": recipe.sparsity,
            "seed": recipe.seed,
        },
        "recipe": dataclasses.asdict(recipe),
        "epochs_run": len(fit.train_loss),
        "optimiser_steps": fit.steps,
        "best_epoch": fit.best_epoch,
        "best_val_loss": fit.val_loss[fit.best_epoch],
        "n_train": len(fit.train_episodes),
        "n_val": len(fit.val_episodes),
        "noise_episodes": recipe.noise_episodes,
        "filter_in_loop": recipe.filter_in_loop,
        **({"goal_relabel": recipe.goal_relabel} if recipe.goal_relabel else {}),
        "action_noise": recipe.action_noise,
        "data": sources,  # names only: files do not depend on where
        "config": str(config),
        "seed": recipe.seed,
        "dagger": history,
    }
    if barriernet:
        meta["barriernet"] = {
            "gain_names": list(model.gain_names),
            "gain_scale": float(getattr(model, "gain_scale", 0.0)),
            "infeasible_per_epoch": fit.infeasible,
            "val_infeasible_per_epoch": fit.val_infeasible,
        }
    return meta


def _write(
    out: pathlib.Path,
    model: Policy,
    fit: training.TrainResult,
    params: dict[str, Any],
    robot: str,
    command_topic: str,
    meta: dict[str, Any],
    output_names: list[str],
    structure: Structure | None = None,
    raw_val: Sequence[Episode] = (),
) -> pathlib.Path:
    """Model file + ``<stem>_loss.png`` + ``<stem>_rollouts.png`` (open loop on up to 3 held-out episodes)."""
    from lnn_control.analysis import plots
    from lnn_control.runtime.model_file import save_policy

    out.parent.mkdir(parents=True, exist_ok=True)
    path = pathlib.Path(
        save_policy(
            out,
            copy.deepcopy(model).double(),  # type: ignore[arg-type]
            observation=params.get("observation"),
            feedforward=None if structure is None else structure.feedforward,
            input_map=None if structure is None else structure.input_map,
            robot=robot,
            config=meta["config"],
            command_topic=command_topic,
            training=meta,
        )
    )
    stem = path.with_suffix("")
    plots.loss_curves(f"{stem}_loss.png", fit.train_loss, fit.val_loss, fit.best_epoch)
    show = (fit.val_episodes or fit.train_episodes)[:3]
    full = [training.predict(model, e)[:, : model.n_commands] for e in show]
    targets = [e.target for e in show]
    if structure is not None and structure.feedforward is not None and fit.val_episodes and raw_val:
        # the plot shows the deployed command: the network's residual plus the feed-forward
        raw = list(raw_val)[: len(show)]
        ffs = [structure.feedforward_command(e.obs) for e in raw]
        full = [y + f for y, f in zip(full, ffs) if f is not None]
        targets = [e.target for e in raw]
    plots.rollouts_vs_demos(
        f"{stem}_rollouts.png",
        targets,
        full,
        [np.cumsum(e.dt) - e.dt[0] for e in show],
        output_names,
    )
    return path
