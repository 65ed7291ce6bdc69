"""Interpretability of a liquid policy: neuron activity, wiring graph, decision tree, input saliency.

``lnn-control inspect MODEL --robot diff_drive --out DIR [--recording FILE]`` runs the model
(``lnn_control.runtime.model_file``) along a rollout and writes, for a person to look at:

- ``activity.png``: every neuron's state over time, one panel per layer (NCP: inter, command,
  motor), above the policy's commands;
- ``wiring.png``: the wiring graph, sensory -> inter -> command -> motor, synapse polarity as
  colour and line style (excitatory green solid, inhibitory red dashed), neurons coloured by their
  mean activity along the rollout;
- ``tree.png`` / ``tree.txt``: a decision tree on the command neurons' activity that predicts the
  policy's commands (scikit-learn), with its fidelity on held-out steps;
- ``saliency.png``: input saliency over time, |d u_j / d x_i| * std(x_i) (the change of command j
  for a one-standard-deviation change of input i at that step, hidden state held), from torch;
- ``summary.json``: the numbers behind the pictures.

The rollout is either closed loop in the built-in simulator (``lnn_control.sim``; the model's
observation mapping, or ``config/<robot>.yaml``'s, turns the simulator's messages into inputs)
or a recording: an ``.npz`` with ``obs`` (T, n_inputs) and optionally ``dt`` (T,) s, or a
rosbag2 directory / ``.mcap`` read through the observation mapping (one step per message on
its ``stamp_topic``).

Activity is the hidden state of the torch-free :class:`~lnn_control.runtime.stepper.PolicyStepper`
after each step, re-indexed by neuron id (the state vector of a wired CfC is ordered by layer).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from lnn_control import strict_json
from lnn_control.config import config_path
from lnn_control.nn.wiring import Wiring

__all__ = [
    "ActivityTrace",
    "TreeResult",
    "extract_tree",
    "inspect",
    "main",
    "neuron_layers",
    "plot_activity",
    "plot_saliency",
    "plot_tree",
    "plot_wiring",
    "read_recording",
    "record_activity",
    "rollout_activity",
    "saliency",
    "state_neuron_ids",
]

_LAYER_NAMES = ("inter", "command", "motor")
_COMMANDS = {"diff_drive": ("v", "omega"), "arm": ("tau1", "tau2", "tau3")}


# --- neurons ----------------------------------------------------------------------------------
def _wiring_of(config: dict[str, Any]) -> Wiring | None:
    cfg = config.get("wiring")
    return None if cfg is None else Wiring.from_config(cfg)


def _units(config: dict[str, Any]) -> int:
    w = _wiring_of(config)
    return w.units if w is not None else int(config["units"])


def state_neuron_ids(config: dict[str, Any]) -> list[int]:
    """Neuron id of each of the first ``units`` entries of the policy's state vector.

    Wired CfC: the state is ordered by layer (``[i for layer in wiring.layers for i in layer]``);
    LTC and dense networks: by neuron id.
    """
    w = _wiring_of(config)
    if w is None:
        return list(range(int(config["units"])))
    if config.get("cell") == "cfc":
        return [i for layer in w.layers for i in layer]
    return list(range(w.units))


def neuron_layers(config: dict[str, Any]) -> dict[str, list[int]]:
    """Layer name -> neuron ids in signal order (NCP: inter, command, motor; else neurons/motor)."""
    w = _wiring_of(config)
    if w is None:
        return {"neurons": list(range(int(config["units"])))}
    layers = w.layers
    if len(layers) == 3 and all(w.neuron_type(layer[0]) == n for layer, n in zip(layers, _LAYER_NAMES)):
        return dict(zip(_LAYER_NAMES, layers))
    motor = list(range(w.output_dim))
    rest = [i for i in range(w.units) if i >= w.output_dim]
    return {"neurons": rest, "motor": motor} if rest else {"motor": motor}


# --- traces -----------------------------------------------------------------------------------
@dataclasses.dataclass
class ActivityTrace:
    """A rollout of a policy with every neuron's activity.

    obs (T, n_inputs) raw inputs; dt (T,) s; outputs (T, n_outputs) raw [commands, gains];
    states (T, state_size) stepper state after each step (torch layout); activity (T, units)
    by neuron id; names of inputs / outputs; layers (name -> neuron ids); info (rollout facts).
    """

    obs: np.ndarray
    dt: np.ndarray
    outputs: np.ndarray
    states: np.ndarray
    activity: np.ndarray
    input_names: list[str]
    output_names: list[str]
    layers: dict[str, list[int]]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def time(self) -> np.ndarray:
        """Time (s) of each step, the first at 0."""
        return np.cumsum(self.dt) - self.dt[0]


def record_activity(stepper: Any, obs: np.ndarray, dt: np.ndarray | float) -> ActivityTrace:
    """Step ``stepper`` (reset first) through ``obs`` (T, n_inputs) with ``dt`` (T,) or a scalar (s)."""
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != stepper.n_inputs or obs.shape[0] < 1:
        raise ValueError(f"obs must have shape (T >= 1, {stepper.n_inputs}), got {obs.shape}")
    dts = np.broadcast_to(np.asarray(dt, dtype=np.float64), (obs.shape[0],)).copy()
    if not np.all(np.isfinite(dts)) or np.any(dts <= 0):
        raise ValueError("dt must be finite and > 0 seconds at every step")
    stepper.reset()
    outs, states = [], []
    for o, d in zip(obs, dts):
        outs.append(stepper.step(o, float(d)))
        states.append(stepper.state)
    return _trace(stepper, obs, dts, np.array(outs), np.array(states), {"source": "recording"})


def _trace(
    stepper: Any, obs: np.ndarray, dt: np.ndarray, outs: np.ndarray, states: np.ndarray, info: dict[str, Any]
) -> ActivityTrace:
    cfg = stepper.config
    ids = state_neuron_ids(cfg)
    units = len(ids)
    act = np.empty((states.shape[0], units))
    act[:, ids] = states[:, :units]
    return ActivityTrace(
        obs=obs,
        dt=dt,
        outputs=outs,
        states=states,
        activity=act,
        input_names=list(stepper.input_names),
        output_names=[*stepper.output_names, *stepper.gain_names],
        layers=neuron_layers(cfg),
        info=info,
    )


def observation_map(stepper: Any, robot: str | None, config: str | pathlib.Path | None = None) -> Any:
    """The ObservationMap for ``stepper``: from ``config`` when given, else the model file's
    ``observation`` section, else ``config/<robot>.yaml``; its size must match the model."""
    from lnn_control.config import load_observation_config
    from lnn_control.control.observation import ObservationMap

    tried = []
    candidates: list[tuple[str, Any]] = []
    if config is not None:
        candidates.append((str(config), lambda: load_observation_config(config)))
    else:
        if isinstance(stepper.observation, dict):
            candidates.append(("the model file", lambda: ObservationMap(stepper.observation)))
        if robot is not None:
            candidates.append((str(config_path(robot)), lambda: load_observation_config(config_path(robot))))
    for where, make in candidates:
        try:
            m = make()
        except (ValueError, OSError, KeyError, TypeError) as e:
            tried.append(f"{where}: {e}")
            continue
        if m.n_inputs == stepper.n_inputs:
            return m
        tried.append(f"{where}: {m.n_inputs} inputs, the model takes {stepper.n_inputs}")
    raise ValueError(
        "no observation mapping fits the model (" + "; ".join(tried or ["none given"]) + "); pass --config"
    )


def read_recording(
    path: str | pathlib.Path, stepper: Any, robot: str | None = None, config: Any = None, episode: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(obs (T, n_inputs), dt (T,)) from an ``.npz`` (``obs``, optional ``dt``; (E, T, n) takes
    ``episode``) or a rosbag2 directory / ``.mcap`` through the observation mapping."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ValueError(f"recording {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "obs" not in z.files:
                raise ValueError(f"recording {path}: needs an 'obs' array (T, n_inputs); it has {z.files}")
            obs = np.asarray(z["obs"], dtype=np.float64)
            dt = np.asarray(z["dt"], dtype=np.float64) if "dt" in z.files else None
        if obs.ndim == 3:
            if not 0 <= episode < obs.shape[0]:
                raise ValueError(f"episode {episode} out of range: {path} holds {obs.shape[0]} episodes")
            obs = obs[episode]
            dt = None if dt is None else dt[episode]
        if obs.ndim != 2 or obs.shape[1] != stepper.n_inputs:
            raise ValueError(
                f"recording {path}: obs has shape {obs.shape}, the model takes {stepper.n_inputs}"
            )
        if dt is None:
            rate = float((stepper.metadata or {}).get("rate_hz", 50.0))
            dt = np.full(obs.shape[0], 1.0 / rate)
        return obs, np.broadcast_to(dt, (obs.shape[0],)).astype(np.float64)
    from lnn_control.learn import bags

    om = observation_map(stepper, robot, config)
    rows, times = [], []
    for m in bags.read_bag(path, om.topics):
        om.update(m.topic, m.msg, m.log_time_ns)
        if m.topic == om.stamp_topic:
            v = om.vector()
            if v is not None:
                rows.append(v)
                times.append(m.log_time_ns * 1e-9)
    if len(rows) < 2:
        raise ValueError(f"recording {path}: fewer than 2 complete observations on {om.stamp_topic}")
    t = np.asarray(times)
    dt = np.diff(t)
    dt = np.concatenate([dt[:1], dt])
    if np.any(dt <= 0):
        dt = np.maximum(dt, 1e-6)
    return np.array(rows), dt


class _Recording:
    """The stepper as ControlStep steps it, keeping every input, output, neuron state and dt."""

    def __init__(self, stepper: Any) -> None:
        self.stepper = stepper
        self.n_inputs = stepper.n_inputs
        self.n_gains = int(getattr(stepper, "n_gains", 0) or 0)
        self.gain_names = list(getattr(stepper, "gain_names", []) or [])
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []

    def reset(self) -> None:
        self.stepper.reset()
        self.rows = []

    def step(self, obs: np.ndarray, dt: float) -> np.ndarray:
        y = np.asarray(self.stepper.step(obs, dt), dtype=np.float64)
        self.rows.append((np.array(obs, dtype=np.float64), y.copy(), np.array(self.stepper.state), float(dt)))
        return y


def rollout_activity(
    stepper: Any,
    robot: str,
    seed: int = 100_000,
    max_time: float | None = None,
    config: Any = None,
    rate: float | None = None,
) -> ActivityTrace:
    """Closed-loop episode ``seed`` (:func:`lnn_control.sim.episodes.draw`) driven by ``stepper``
    through :class:`lnn_control.sim.rollout.ClosedLoop` (the deployed control step with only the
    actuator box of the config's filter: the policy's own commands), recording every neuron. The
    episode ends at the goal or at ``max_time`` (default the episode's time limit); violations
    (:mod:`lnn_control.sim.episodes`) are recorded in ``info`` and the rollout goes on.
    """
    from lnn_control.sim import topics as T
    from lnn_control.sim.rollout import ClosedLoop, Condition

    if robot not in T.TOPICS:
        raise ValueError(f"robot must be one of {sorted(T.TOPICS)}, got {robot!r}")
    om = observation_map(stepper, robot, config)
    rate = float(rate or (stepper.metadata or {}).get("rate_hz") or T.PUBLISH_RATE[robot])
    loop = ClosedLoop(robot, config or config_path(robot), rate, condition=Condition(filter=False))
    rec = _Recording(stepper)
    res = loop.run(rec, seed, max_time, hold=0.0, stop_after_collision=math.inf)
    if not rec.rows:
        raise ValueError(f"episode {seed}: the policy never ran")
    obs, outs, states, dts = (np.array(c) for c in zip(*rec.rows))
    n_cmd = stepper.n_commands
    names = list(om.names)
    if list(stepper.input_names) == [f"x{i}" for i in range(stepper.n_inputs)] and len(names) == obs.shape[1]:
        stepper.input_names = names  # a model saved without names: the observation mapping's
    if list(stepper.output_names) == [f"u{i}" for i in range(n_cmd)] and len(_COMMANDS[robot]) == n_cmd:
        stepper.output_names = list(_COMMANDS[robot])
    sc = res.score
    info = {
        "source": "simulator",
        "robot": robot,
        "seed": int(seed),
        "rate_hz": rate,
        "duration_s": float(res.t[-1]),
        "reached": sc.reached,
        "violation": sc.violated,
        "violations": dict(sc.violations),
        "success": sc.safe_success,
        "min_barrier": sc.min_margin,
        "goal": [float(g) for g in res.goal],
    }
    return _trace(stepper, obs, dts, outs, states, info)


# --- decision tree ----------------------------------------------------------------------------
@dataclasses.dataclass
class TreeResult:
    """A fitted tree, its fidelity on held-out steps and its text form.

    mode: ``regression`` (R^2 of the commands, averaged over outputs) or ``classification``
    (accuracy on the commands discretised into ``bins`` quantile bins per output, classes = the
    tuple of bins). train / test: step indices used for fitting / scoring.
    """

    tree: Any
    mode: str
    fidelity: float
    train_fidelity: float
    depth: int
    leaves: int
    feature_names: list[str]
    target_names: list[str]
    text: str
    train: np.ndarray
    test: np.ndarray
    bins: int = 0
    class_names: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "metric": "R2" if self.mode == "regression" else "accuracy",
            "fidelity": self.fidelity,
            "train_fidelity": self.train_fidelity,
            "depth": self.depth,
            "leaves": self.leaves,
            "features": self.feature_names,
            "targets": self.target_names,
            "train_steps": int(self.train.size),
            "test_steps": int(self.test.size),
            "bins": self.bins,
        }


def _block_split(n: int, holdout: float, seed: int, blocks: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous blocks of steps, ``holdout`` of them (at least one) held out, chosen by ``seed``:
    neighbouring steps are nearly equal, so a random step split would leak."""
    k = max(2, min(blocks, n))
    edges = np.linspace(0, n, k + 1).astype(int)
    rng = np.random.default_rng(seed)
    n_test = min(k - 1, max(1, int(round(holdout * k))))
    test_blocks = set(rng.choice(k, size=n_test, replace=False).tolist())
    test = np.concatenate([np.arange(edges[b], edges[b + 1]) for b in sorted(test_blocks)])
    train = np.setdiff1d(np.arange(n), test)
    return train, test


def _bin_edges(y: np.ndarray, bins: int) -> np.ndarray:
    """Upper bin edges of ``y``: its quantiles, or the midpoints between its values when it takes at
    most ``bins`` distinct values (a quantile would land on a value and merge two classes)."""
    u = np.unique(y)
    if u.size <= bins:
        return (u[1:] + u[:-1]) / 2
    return np.unique(np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1]))


def _discretise(y: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Bin index per column: bin k is (edge[k-1], edge[k]]."""
    cols = [np.searchsorted(e, y[:, j], side="left") for j, e in enumerate(edges)]
    return np.stack(cols, 1)


def extract_tree(
    features: np.ndarray,
    targets: np.ndarray,
    feature_names: Sequence[str],
    target_names: Sequence[str],
    max_depth: int = 3,
    mode: str = "regression",
    bins: int = 3,
    holdout: float = 0.3,
    seed: int = 0,
    min_samples_leaf: int = 5,
) -> TreeResult:
    """Fit a decision tree from ``features`` (T, k) (e.g. command-neuron activity) to the policy's
    ``targets`` (T, m) and score it on held-out blocks of steps.

    regression: ``DecisionTreeRegressor``; fidelity = R^2 = 1 - SS_res / SS_tot per output,
    averaged (``sklearn.metrics.r2_score``, uniform average). classification: each output is cut
    at its training-set quantiles into ``bins`` bins, the class is the tuple of bins, fidelity =
    accuracy of ``DecisionTreeClassifier``.
    """
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor, export_text

    X = np.asarray(features, dtype=np.float64)
    Y = np.asarray(targets, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or X.shape[0] != Y.shape[0] or X.shape[0] < 4:
        raise ValueError(f"features (T, k) and targets (T, m) need the same T >= 4, got {X.shape}, {Y.shape}")
    if len(feature_names) != X.shape[1] or len(target_names) != Y.shape[1]:
        raise ValueError("feature_names / target_names must name every column")
    if mode not in ("regression", "classification"):
        raise ValueError(f"mode {mode!r}: use 'regression' or 'classification'")
    if not isinstance(max_depth, int) or max_depth < 1:
        raise ValueError(f"max_depth must be a positive int, got {max_depth!r}")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    train, test = _block_split(X.shape[0], holdout, seed)
    leaf = max(1, min(min_samples_leaf, train.size // 4))
    class_names: list[str] = []
    if mode == "regression":
        tree: Any = DecisionTreeRegressor(max_depth=max_depth, min_samples_leaf=leaf, random_state=seed)
        tree.fit(X[train], Y[train])

        def score(idx: np.ndarray) -> float:
            return float(r2_score(Y[idx], tree.predict(X[idx]).reshape(len(idx), -1)))

        fid, fid_tr = score(test), score(train)
    else:
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}")
        edges = [_bin_edges(Y[train, j], bins) for j in range(Y.shape[1])]
        codes = _discretise(Y, edges)
        labels = np.array(["|".join(f"{n}:{c}" for n, c in zip(target_names, row)) for row in codes])
        tree = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=leaf, random_state=seed)
        tree.fit(X[train], labels[train])
        fid = float(accuracy_score(labels[test], tree.predict(X[test])))
        fid_tr = float(accuracy_score(labels[train], tree.predict(X[train])))
        class_names = [str(c) for c in tree.classes_]
    text = export_text(tree, feature_names=list(feature_names), decimals=3)
    return TreeResult(
        tree=tree,
        mode=mode,
        fidelity=fid,
        train_fidelity=fid_tr,
        depth=int(tree.get_depth()),
        leaves=int(tree.get_n_leaves()),
        feature_names=list(feature_names),
        target_names=list(target_names),
        text=text,
        train=train,
        test=test,
        bins=bins if mode == "classification" else 0,
        class_names=class_names,
    )


def tree_features(trace: ActivityTrace) -> tuple[np.ndarray, list[str], str]:
    """(command-neuron activity (T, c), names, which): the NCP command layer, else every non-motor neuron."""
    if "command" in trace.layers:
        ids, which = trace.layers["command"], "command neurons"
    else:
        motor = set(trace.layers.get("motor", []))
        ids = [i for i in range(trace.activity.shape[1]) if i not in motor] or list(
            range(trace.activity.shape[1])
        )
        which = "all non-motor neurons (no NCP command layer)"
    return trace.activity[:, ids], [f"n{i}" for i in ids], which


# --- saliency ---------------------------------------------------------------------------------
def saliency(policy: Any, obs: np.ndarray, dt: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Jacobians J (T, n_outputs, n_inputs), J_t = d y_t / d x_t along a rollout.

    ``states`` (T, state_size) are the states after each step (``ActivityTrace.states``); step t
    starts from ``states[t - 1]`` (zeros at t = 0), held fixed, so J_t is the instantaneous
    sensitivity of the command to the current input. All steps run as one batch in float64.
    """
    import copy

    import torch

    obs = np.asarray(obs, dtype=np.float64)
    T = obs.shape[0]
    h0 = np.zeros((T, policy.state_size))
    if T > 1:
        h0[1:] = np.asarray(states, dtype=np.float64)[:-1]
    pol = copy.deepcopy(policy).double()
    x = torch.tensor(obs[:, None, :], dtype=torch.float64, requires_grad=True)
    ts = torch.as_tensor(np.asarray(dt, dtype=np.float64).reshape(T, 1))
    y, _ = pol(x, ts, torch.as_tensor(h0))
    J = np.zeros((T, y.shape[-1], obs.shape[1]))
    for j in range(y.shape[-1]):
        (g,) = torch.autograd.grad(y[:, 0, j].sum(), x, retain_graph=j < y.shape[-1] - 1)
        J[:, j, :] = g[:, 0, :].numpy()
    return J


# --- plots ------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_activity(
    trace: ActivityTrace, path: str | pathlib.Path, n_commands: int | None = None
) -> pathlib.Path:
    """Heatmap of each layer's neurons over time (diverging colours, 0 white) and the commands."""
    plt = _plt()
    path = pathlib.Path(path)
    t = trace.time
    layers = list(trace.layers.items())
    heights = [max(1.2, 0.16 * len(ids) + 0.6) for _, ids in layers] + [1.6]
    fig, axes = plt.subplots(
        len(layers) + 1,
        1,
        figsize=(11, sum(heights) + 0.8),
        dpi=100,
        sharex=True,
        gridspec_kw={"height_ratios": heights},
    )
    vmax = float(np.max(np.abs(trace.activity))) or 1.0
    im = None
    for ax, (name, ids) in zip(axes, layers):
        a = trace.activity[:, ids].T
        im = ax.imshow(
            a,
            aspect="auto",
            cmap="RdBu_r",
            vmin=-vmax,
            vmax=vmax,
            interpolation="nearest",
            extent=(float(t[0]), float(t[-1] + trace.dt[-1]), len(ids) - 0.5, -0.5),
        )
        ax.set_yticks(range(len(ids)), [f"n{i}" for i in ids], fontsize=7)
        ax.set_ylabel(name, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=list(axes[:-1]), label="neuron state", fraction=0.02, pad=0.01)
    ax = axes[-1]
    k = n_commands if n_commands is not None else len(trace.output_names)
    for j in range(k):
        ax.plot(t, trace.outputs[:, j], label=trace.output_names[j], lw=1.2)
    ax.set_ylabel("command")
    ax.set_xlabel("time (s)")
    ax.legend(fontsize=8, loc="upper right", ncol=min(k, 4))
    ax.grid(True, alpha=0.3)
    title = "Neuron activity by layer"
    if trace.info.get("source") == "simulator":
        outcome = "goal reached" if trace.info["success"] else "goal not reached"
        info = trace.info
        title += f" ({info['robot']} episode {info['seed']}: {outcome} in {info['duration_s']:.1f} s)"
    axes[0].set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_wiring(
    config: dict[str, Any],
    path: str | pathlib.Path,
    activity: np.ndarray | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> pathlib.Path:
    """The wiring as a layered graph: sensory inputs, then each layer, left to right.

    Synapses: green solid excitatory (+1), red dashed inhibitory (-1); recurrent synapses within
    a layer arc to the side. Neurons are coloured by mean activity (``activity`` (T, units) by
    neuron id) when given. A dense network (no wiring) is drawn as one fully connected layer note.
    """
    plt = _plt()
    from matplotlib.patches import FancyArrowPatch

    path = pathlib.Path(path)
    w = _wiring_of(config)
    n_in = int(config["n_inputs"])
    names_in = list(input_names or config.get("input_names") or [f"x{i}" for i in range(n_in)])
    names_out = list(output_names or config.get("output_names") or [])
    layers = neuron_layers(config)
    columns = [("sensory", list(range(n_in)))] + list(layers.items())
    tall = max(len(ids) for _, ids in columns)
    fig, ax = plt.subplots(figsize=(3.0 * len(columns) + 1.5, max(4.0, 0.32 * tall + 1.5)), dpi=100)
    pos: dict[tuple[str, int], tuple[float, float]] = {}
    for c, (name, ids) in enumerate(columns):
        n = len(ids)
        gap = min(2.5, (tall - 1) / (n - 1)) if n > 1 else 0.0  # small layers spread out, capped
        for k, i in enumerate(ids):
            y = (tall - 1) / 2 - (k - (n - 1) / 2) * gap
            pos[("s" if name == "sensory" else "n", i)] = (float(c), y)
        ax.text(c, tall + 0.1, name, ha="center", fontsize=11, weight="bold")
    mean_act = None if activity is None else np.asarray(activity).mean(axis=0)
    lim = float(np.max(np.abs(mean_act))) if mean_act is not None and mean_act.size else 1.0
    lim = lim or 1.0
    cmap = plt.get_cmap("RdBu_r")
    drawn = 0

    def arrow(a: tuple[float, float], b: tuple[float, float], sign: int, rad: float) -> None:
        nonlocal drawn
        ax.add_patch(
            FancyArrowPatch(
                a,
                b,
                arrowstyle="-|>",
                mutation_scale=7,
                lw=0.8,
                alpha=0.55 if drawn < 400 else 0.25,
                color="tab:green" if sign > 0 else "tab:red",
                linestyle="-" if sign > 0 else "--",
                connectionstyle=f"arc3,rad={rad}",
                shrinkA=7,
                shrinkB=7,
            )
        )
        drawn += 1

    if w is not None:
        layer_of = {i: c for c, (_, ids) in enumerate(columns[1:], start=1) for i in ids}
        assert w.sensory_adjacency is not None
        for s, d in zip(*np.nonzero(w.sensory_adjacency)):
            arrow(pos[("s", int(s))], pos[("n", int(d))], int(w.sensory_adjacency[s, d]), 0.0)
        for s, d in zip(*np.nonzero(w.adjacency)):
            a, b = pos[("n", int(s))], pos[("n", int(d))]
            same = layer_of[int(s)] == layer_of[int(d)]
            if s == d:
                b = (b[0] + 0.001, b[1] + 0.001)
            arrow(a, b, int(w.adjacency[s, d]), 0.6 if same else 0.0)
    for (kind, i), (x, y) in pos.items():
        if kind == "s":
            ax.scatter([x], [y], s=140, marker="s", color="0.85", edgecolor="0.3", zorder=3)
            ax.text(
                x - 0.12,
                y,
                names_in[i] if i < len(names_in) else f"x{i}",
                ha="right",
                va="center",
                fontsize=8,
            )
        else:
            v = 0.0 if mean_act is None else float(mean_act[i] / lim)
            col = cmap(0.5 + 0.5 * v) if mean_act is not None else "white"
            ax.scatter([x], [y], s=260, color=col, edgecolor="0.2", zorder=3)
            ax.text(
                x,
                y,
                str(i),
                ha="center",
                va="center",
                fontsize=7,
                zorder=4,
                color="white" if abs(v) > 0.6 else "black",
            )
            if w is not None and i < w.output_dim and i < len(names_out):
                ax.text(x + 0.15, y, names_out[i], ha="left", va="center", fontsize=9, weight="bold")
    if mean_act is not None:
        import matplotlib as mpl

        sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(-lim, lim))
        fig.colorbar(sm, ax=ax, fraction=0.025, pad=0.01, label="mean neuron state along the rollout")
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([0], [0], color="tab:green", ls="-", label="excitatory (+1)"),
            Line2D([0], [0], color="tab:red", ls="--", label="inhibitory (-1)"),
        ],
        loc="lower right",
        fontsize=8,
    )
    if w is None:
        ax.text(
            (len(columns) - 1) / 2,
            -0.9,
            "dense network: every neuron sees every input and neuron",
            ha="center",
            fontsize=9,
        )
    n_syn = (w.synapse_count + w.sensory_synapse_count) if w is not None else None
    ax.set_title(
        f"{config.get('cell', '?').upper()} wiring: {_units(config)} neurons"
        + (f", {n_syn} synapses" if n_syn is not None else "")
    )
    ax.set_xlim(-1.2, len(columns) - 0.3)
    ax.set_ylim(-1.2, tall + 0.8)
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_tree(result: TreeResult, path: str | pathlib.Path) -> pathlib.Path:
    """The decision tree (``sklearn.tree.plot_tree``) with its held-out fidelity in the title."""
    plt = _plt()
    from sklearn.tree import plot_tree as sk_plot_tree

    path = pathlib.Path(path)
    fig, ax = plt.subplots(figsize=(max(8.0, 2.2 * result.leaves), 2.2 * result.depth + 2.0), dpi=100)
    sk_plot_tree(
        result.tree,
        feature_names=result.feature_names,
        class_names=result.class_names or None,
        filled=True,
        rounded=True,
        precision=2,
        impurity=False,
        fontsize=8,
        ax=ax,
    )
    metric = "R²" if result.mode == "regression" else "accuracy"
    ax.set_title(
        f"Decision tree on command-neuron activity -> {', '.join(result.target_names)} "
        f"(depth {result.depth}, {result.leaves} leaves; held-out {metric} {result.fidelity:.3f})"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_saliency(
    J: np.ndarray, trace: ActivityTrace, input_std: np.ndarray, path: str | pathlib.Path, n_commands: int
) -> pathlib.Path:
    """|d u_j / d x_i| * std(x_i) over time, one heatmap per command, inputs on the y axis."""
    plt = _plt()
    path = pathlib.Path(path)
    S = np.abs(J[:, :n_commands, :]) * np.asarray(input_std)[None, None, :]
    t = trace.time
    fig, axes = plt.subplots(
        n_commands,
        1,
        figsize=(11, (0.22 * J.shape[2] + 1.0) * n_commands + 0.6),
        dpi=100,
        sharex=True,
        squeeze=False,
    )
    for j in range(n_commands):
        ax = axes[j, 0]
        im = ax.imshow(
            S[:, j, :].T,
            aspect="auto",
            cmap="magma",
            interpolation="nearest",
            extent=(float(t[0]), float(t[-1] + trace.dt[-1]), J.shape[2] - 0.5, -0.5),
        )
        ax.set_yticks(range(J.shape[2]), trace.input_names, fontsize=7)
        ax.set_title(
            f"saliency of {trace.output_names[j]}: |d{trace.output_names[j]}/dx| x std(x)", fontsize=10
        )
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    axes[-1, 0].set_xlabel("time (s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


# --- the command ------------------------------------------------------------------------------
def _input_std(policy: Any, obs: np.ndarray) -> np.ndarray:
    std = policy.input_std.detach().double().numpy().copy()
    if np.allclose(std, 1.0):  # no normalisation stored: use the rollout's spread
        std = np.maximum(obs.std(axis=0), 1e-9)
    return np.asarray(std)


def inspect(
    model: str | pathlib.Path,
    out: str | pathlib.Path,
    robot: str | None = None,
    recording: str | pathlib.Path | None = None,
    config: str | pathlib.Path | None = None,
    seed: int = 100_000,
    max_time: float | None = None,
    tree_depth: int = 3,
    tree_mode: str = "regression",
    episode: int = 0,
) -> dict[str, Any]:
    """Everything ``lnn-control inspect`` writes (see the module docstring); returns the summary."""
    from lnn_control.runtime.model_file import load_policy, load_stepper

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stepper = load_stepper(model)
    policy = load_policy(model)
    cfg = stepper.config
    if recording is not None:
        obs, dt = read_recording(recording, stepper, robot, config, episode)
        trace = record_activity(stepper, obs, dt)
        trace.info.update({"recording": str(recording)})
    else:
        if robot is None:
            robot = (stepper.metadata or {}).get("robot")
        if robot is None:
            raise ValueError("give --robot (diff_drive or arm) or --recording")
        trace = rollout_activity(stepper, robot, seed, max_time, config)
    imap = getattr(stepper, "input_map", None)
    if imap is not None:  # a residual network behind an input map (runtime.feedforward): it sees z = A o
        trace = dataclasses.replace(trace, obs=imap(trace.obs), input_names=list(imap.names))
    n_cmd = stepper.n_commands
    files = {
        "activity": str(plot_activity(trace, out / "activity.png", n_cmd)),
        "wiring": str(
            plot_wiring(cfg, out / "wiring.png", trace.activity, trace.input_names, trace.output_names)
        ),
    }
    X, names, which = tree_features(trace)
    tree = extract_tree(X, trace.outputs[:, :n_cmd], names, trace.output_names[:n_cmd], tree_depth, tree_mode)
    (out / "tree.txt").write_text(
        f"# decision tree on {which} -> {', '.join(tree.target_names)}\n"
        f"# depth {tree.depth}, {tree.leaves} leaves, held-out "
        f"{'R^2' if tree.mode == 'regression' else 'accuracy'} {tree.fidelity:.4f} "
        f"({tree.test.size} of {X.shape[0]} steps held out in blocks)\n" + tree.text
    )
    files["tree_txt"] = str(out / "tree.txt")
    files["tree_png"] = str(plot_tree(tree, out / "tree.png"))
    J = saliency(policy, trace.obs, trace.dt, trace.states)
    std = _input_std(policy, trace.obs)
    files["saliency"] = str(plot_saliency(J, trace, std, out / "saliency.png", n_cmd))
    S = np.abs(J[:, :n_cmd, :]) * std[None, None, :]
    mean_sal = S.mean(axis=0)  # (n_cmd, n_in)
    layers_summary = {
        name: {
            "neurons": ids,
            "mean": [float(v) for v in trace.activity[:, ids].mean(0)],
            "std": [float(v) for v in trace.activity[:, ids].std(0)],
        }
        for name, ids in trace.layers.items()
    }
    w = _wiring_of(cfg)
    wiring_summary: dict[str, Any] = {
        "type": None if w is None else cfg["wiring"]["type"],
        "units": _units(cfg),
    }
    if w is not None:
        adj = w.adjacency
        sens = w.sensory_adjacency if w.sensory_adjacency is not None else np.zeros((0, 0))
        wiring_summary.update(
            {
                "synapses": int(np.count_nonzero(adj)),
                "sensory_synapses": int(np.count_nonzero(sens)),
                "excitatory": int((adj > 0).sum() + (sens > 0).sum()),
                "inhibitory": int((adj < 0).sum() + (sens < 0).sum()),
                "layers": {k: len(v) for k, v in trace.layers.items()},
            }
        )
    summary = {
        "model": str(model),
        "cell": cfg.get("cell"),
        "n_inputs": stepper.n_inputs,
        "n_outputs": stepper.n_outputs,
        "wiring": wiring_summary,
        "rollout": {**trace.info, "steps": int(trace.obs.shape[0])},
        "activity": layers_summary,
        "tree": {**tree.summary(), "on": which},
        "saliency": {
            "definition": "mean over steps of |d command / d input| * input std",
            "by_command": {
                trace.output_names[j]: dict(
                    sorted(
                        (
                            (trace.input_names[i], float(mean_sal[j, i]))
                            for i in range(len(trace.input_names))
                        ),
                        key=lambda kv: -kv[1],
                    )
                )
                for j in range(n_cmd)
            },
        },
        "files": files,
    }
    strict_json.write(out / "summary.json", summary)
    files["summary"] = str(out / "summary.json")
    return summary


def main(argv: list[str] | None = None) -> int:
    """``lnn-control inspect MODEL --robot ROBOT --out DIR [--recording FILE] ...``; 0 ok, 2 bad input."""
    p = argparse.ArgumentParser(
        prog="lnn-control inspect",
        description="Neuron activity, wiring graph, decision tree and saliency of a liquid policy.",
    )
    p.add_argument("model", type=pathlib.Path, help="model file (.npz from lnn_control.runtime.model_file)")
    p.add_argument("--robot", choices=("diff_drive", "arm"), default=None, help="simulator for the rollout")
    p.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    p.add_argument("--recording", type=pathlib.Path, default=None, help=".npz (obs, dt) or rosbag2 dir/.mcap")
    p.add_argument(
        "--config", type=pathlib.Path, default=None, help="robot YAML with the observation mapping"
    )
    p.add_argument("--seed", type=int, default=100_000, help="simulator episode seed")
    p.add_argument("--max-time", type=float, default=None, help="episode limit (s)")
    p.add_argument("--tree-depth", type=int, default=3)
    p.add_argument("--tree-mode", choices=("regression", "classification"), default="regression")
    p.add_argument("--episode", type=int, default=0, help="episode of a multi-episode .npz")
    a = p.parse_args(argv)
    from lnn_control.runtime.model_file import ModelFileError

    if a.robot is None and a.recording is None:
        print("error: give --robot (simulator rollout) or --recording", file=sys.stderr)
        return 2
    try:
        s = inspect(
            a.model,
            a.out,
            a.robot,
            a.recording,
            a.config,
            a.seed,
            a.max_time,
            a.tree_depth,
            a.tree_mode,
            a.episode,
        )
    except (ModelFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = s["rollout"]
    t = s["tree"]
    print(
        f"{s['model']}: {r['steps']} steps ({r.get('source')}); "
        f"tree depth {t['depth']}, {t['leaves']} leaves, held-out {t['metric']} {t['fidelity']:.3f}; "
        f"wrote {len(s['files'])} files to {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
