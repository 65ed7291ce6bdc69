"""Interpretability of a liquid policy: neuron activity, wiring graph, decision tree, input saliency.

``lnn-control inspect MODEL --robot diff_drive --out DIR [--recording FILE]`` runs the model
(``lnn_control.runtime.model_file``) along a rollout and writes, for a person to look at:

- ``activity.png``: every neuron's state over time, one panel per layer (NCP: inter, command,
  motor), above the policy's commands;
- ``wiring.png``: the wiring graph, sensory -> inter -> command -> motor, synapse polarity as
  colour and line style (excitatory green solid, inhibitory red dashed), neurons coloured by their
  mean activity along the rollout;
- ``tree.png`` / ``tree.txt``: the behaviour tree (:mod:`lnn_control.analysis.behaviour_tree`):
  the manoeuvre of the policy's command (diff_drive: stop / turn left / straight / turn right)
  from the command neurons, fitted on training episodes (seeds 50000..) and scored on held-out
  episodes (seeds from ``--seed``), beside a tree of the same depth on the raw inputs (simulator
  only; a recording gets no tree);
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
from typing import Any

import numpy as np

from lnn_control import strict_json
from lnn_control.config import config_path
from lnn_control.nn.wiring import Wiring

__all__ = [
    "ActivityTrace",
    "inspect",
    "main",
    "neuron_layers",
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
    tree_episodes: int = 20,
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
    from lnn_control.analysis import interpret_plots as P

    n_cmd = stepper.n_commands
    files = {
        "activity": str(P.plot_activity(trace, out / "activity.png", n_cmd)),
        "wiring": str(
            P.plot_wiring(cfg, out / "wiring.png", trace.activity, trace.input_names, trace.output_names)
        ),
    }
    tree_summary: dict[str, Any] | None = None
    if recording is None and robot is not None:
        from lnn_control.analysis import behaviour_tree as BT

        trees = BT.fit(
            stepper,
            robot,
            range(BT.TRAIN_SEED, BT.TRAIN_SEED + tree_episodes),
            range(seed, seed + tree_episodes),
            tree_depth,
            max_time,
        )
        (out / "tree.txt").write_text(BT.report(trees))
        files["tree_txt"] = str(out / "tree.txt")
        files["tree_png"] = str(P.plot_behaviour_tree(trees, out / "tree.png"))
        tree_summary = trees.summary()
    J = saliency(policy, trace.obs, trace.dt, trace.states)
    std = _input_std(policy, trace.obs)
    files["saliency"] = str(P.plot_saliency(J, trace, std, out / "saliency.png", n_cmd))
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
        "tree": tree_summary,
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
    p.add_argument(
        "--tree-episodes", type=int, default=20, help="training and held-out episodes of the behaviour tree"
    )
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
            a.tree_episodes,
            a.episode,
        )
    except (ModelFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = s["rollout"]
    t = s["tree"]
    tree = (
        "no tree (a recording)"
        if t is None
        else f"tree depth {t['depth']}: held-out accuracy command neurons {t['neuron_accuracy']:.3f}, "
        f"raw inputs {t['raw_accuracy']:.3f}, majority {t['majority_accuracy']:.3f}"
    )
    print(
        f"{s['model']}: {r['steps']} steps ({r.get('source')}); {tree}; "
        f"wrote {len(s['files'])} files to {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
