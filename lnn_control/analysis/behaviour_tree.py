"""A decision tree that explains a liquid policy's behaviour across episodes (issue 13 item 4).

The policy drives closed-loop episodes in :class:`lnn_control.sim.rollout.ClosedLoop` (the deployed
control step, through the config's safety filter). At every control step we keep the raw inputs,
the command neurons' states after the step and the policy's own (nominal) command. The target is
a label a person reads, the manoeuvre of the nominal command (diff_drive):

* ``stop``: |v| < ``v_stop`` (0.05 m/s);
* else ``turn_left``: omega > ``w_turn`` (0.3 rad/s); ``turn_right``: omega < -``w_turn``;
  else ``straight``.

(arm: the sign of each joint's torque command above 0.5 N m, ``+``/``0``/``-`` per joint.)

Two scikit-learn trees of the same depth are fitted on the steps of *training* episodes (seeds
below 100000, default 50000..) and scored on *held-out* episodes (seeds from 100000): one on the
command neurons' states, one on the raw inputs. Whole episodes are held out, so neighbouring,
nearly equal steps never sit on both sides of the split. The majority-class accuracy of the
held-out steps is reported beside them (what a tree that learned nothing scores).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MANOEUVRES", "BehaviourTrees", "collect", "command_neurons", "fit", "labels"]

#: diff_drive manoeuvre classes (index = label)
MANOEUVRES: tuple[str, ...] = ("stop", "turn_left", "straight", "turn_right")
TRAIN_SEED, HELD_OUT_SEED = 50_000, 100_000


def labels(
    robot: str, commands: np.ndarray, v_stop: float = 0.05, w_turn: float = 0.3
) -> tuple[np.ndarray, list[str]]:
    """(label per step, class names) of the nominal ``commands`` (T, n_commands); module docstring."""
    u = np.asarray(commands, dtype=float)
    if robot == "diff_drive":
        y = np.where(u[:, 1] > w_turn, 1, np.where(u[:, 1] < -w_turn, 3, 2))
        y = np.where(np.abs(u[:, 0]) < v_stop, 0, y)
        return y.astype(int), list(MANOEUVRES)
    s = np.sign(np.where(np.abs(u) < 0.5, 0.0, u)).astype(int) + 1  # 0 '-', 1 '0', 2 '+'
    code = (s * (3 ** np.arange(u.shape[1]))).sum(axis=1)
    names = []
    for c in range(3 ** u.shape[1]):
        digits = [(c // 3**j) % 3 for j in range(u.shape[1])]
        names.append(" ".join(f"tau{j + 1}{'-0+'[d]}" for j, d in enumerate(digits)))
    return code.astype(int), names


def command_neurons(stepper: Any) -> tuple[list[int], list[str]]:
    """(indices into ``stepper.state``, names) of the command neurons of an NCP policy (all state
    neurons of a network without NCP layers)."""
    from lnn_control.analysis.interpret import neuron_layers, state_neuron_ids

    cfg = stepper.config
    ids = state_neuron_ids(cfg)  # neuron id of each state entry
    layers = neuron_layers(cfg)
    want = layers.get("command") or layers.get("neurons") or [i for v in layers.values() for i in v]
    pos = {n: k for k, n in enumerate(ids)}
    return [pos[n] for n in want], [f"command_{n}" for n in want]


class _Recorder:
    """The stepper as ControlStep steps it, keeping inputs, outputs and states of every step."""

    def __init__(self, stepper: Any) -> None:
        self.stepper = stepper
        self.n_inputs = stepper.n_inputs
        self.n_gains = int(getattr(stepper, "n_gains", 0) or 0)
        self.gain_names = list(getattr(stepper, "gain_names", []) or [])
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def reset(self) -> None:
        self.stepper.reset()

    def step(self, obs: np.ndarray, dt: float) -> np.ndarray:
        y = np.asarray(self.stepper.step(obs, dt), dtype=np.float64)
        self.rows.append((np.array(obs, dtype=np.float64), y.copy(), np.array(self.stepper.state)))
        return y


def collect(
    stepper: Any, robot: str, seeds: Sequence[int], max_time: float | None = None, progress: bool = False
) -> dict[str, Any]:
    """Run ``stepper`` on episodes ``seeds`` through the filter; returns inputs (T, n_in), states
    (T, state), commands (T, n_commands) and the episode id of every step, plus per-episode success."""
    from lnn_control.config import config_path
    from lnn_control.sim.rollout import ClosedLoop

    loop = ClosedLoop(robot, config_path(robot), safety_filter=True)
    rec = _Recorder(stepper)
    it: Any = seeds
    if progress:
        import sys

        from tqdm import tqdm

        it = tqdm(seeds, desc=f"{robot} episodes", unit="episode", file=sys.stderr)
    episode: list[int] = []
    reached = []
    for s in it:
        n0 = len(rec.rows)
        res = loop.run(rec, int(s), max_time, hold=0.0, stop_after_collision=math.inf)
        episode += [int(s)] * (len(rec.rows) - n0)
        reached.append(bool(res.reached))
    if not rec.rows:
        raise ValueError("the policy never ran in these episodes")
    obs, out, st = (np.array(c) for c in zip(*rec.rows))
    n_cmd = loop.n_commands
    return {
        "inputs": obs,
        "states": st,
        "commands": out[:, :n_cmd],
        "episode": np.array(episode),
        "reached": reached,
        "input_names": list(loop.input_names),
    }


@dataclasses.dataclass
class BehaviourTrees:
    """The two trees and their scores (accuracies on held-out episodes' steps)."""

    robot: str
    depth: int
    classes: list[str]
    neuron_names: list[str]
    input_names: list[str]
    neuron_accuracy: float
    raw_accuracy: float
    majority_accuracy: float
    neuron_train_accuracy: float
    raw_train_accuracy: float
    train_steps: int
    test_steps: int
    train_episodes: list[int]
    test_episodes: list[int]
    class_counts_test: dict[str, int]
    neuron_text: str
    raw_text: str
    neuron_tree: Any = dataclasses.field(repr=False, default=None)

    def summary(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("neuron_tree")
        d["train_episodes"] = [min(self.train_episodes), max(self.train_episodes)]
        d["test_episodes"] = [min(self.test_episodes), max(self.test_episodes)]
        return d


def fit(
    stepper: Any,
    robot: str = "diff_drive",
    train_seeds: Sequence[int] | None = None,
    test_seeds: Sequence[int] | None = None,
    depth: int = 3,
    max_time: float | None = None,
    progress: bool = False,
) -> BehaviourTrees:
    """Fit both trees on ``train_seeds`` episodes (default 50000..50019) and score them on
    ``test_seeds`` (default 100000..100019); see the module docstring."""
    from sklearn.tree import DecisionTreeClassifier

    train_seeds = list(range(TRAIN_SEED, TRAIN_SEED + 20) if train_seeds is None else train_seeds)
    test_seeds = list(range(HELD_OUT_SEED, HELD_OUT_SEED + 20) if test_seeds is None else test_seeds)
    if any(s >= HELD_OUT_SEED for s in train_seeds):
        raise ValueError(f"train_seeds must be < {HELD_OUT_SEED} (held-out seeds are for scoring only)")
    if set(train_seeds) & set(test_seeds):
        raise ValueError("train_seeds and test_seeds overlap")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    idx, neuron_names = command_neurons(stepper)
    tr = collect(stepper, robot, train_seeds, max_time, progress)
    te = collect(stepper, robot, test_seeds, max_time, progress)
    y_tr, classes = labels(robot, tr["commands"])
    y_te, _ = labels(robot, te["commands"])
    feats = {
        "neuron": (tr["states"][:, idx], te["states"][:, idx]),
        "raw": (tr["inputs"], te["inputs"]),
    }
    trees, acc, acc_tr = {}, {}, {}
    for k, (xa, xb) in feats.items():
        t = DecisionTreeClassifier(max_depth=depth, random_state=0).fit(xa, y_tr)
        trees[k], acc[k], acc_tr[k] = t, float(t.score(xb, y_te)), float(t.score(xa, y_tr))
    counts = np.bincount(y_te, minlength=len(classes))
    return BehaviourTrees(
        robot=robot,
        depth=depth,
        classes=classes,
        neuron_names=neuron_names,
        input_names=tr["input_names"],
        neuron_accuracy=acc["neuron"],
        raw_accuracy=acc["raw"],
        majority_accuracy=float(counts.max() / counts.sum()),
        neuron_train_accuracy=acc_tr["neuron"],
        raw_train_accuracy=acc_tr["raw"],
        train_steps=int(y_tr.size),
        test_steps=int(y_te.size),
        train_episodes=train_seeds,
        test_episodes=test_seeds,
        class_counts_test={classes[i]: int(c) for i, c in enumerate(counts) if c},
        neuron_text=_text(trees["neuron"], neuron_names, classes),
        raw_text=_text(trees["raw"], tr["input_names"], classes),
        neuron_tree=trees["neuron"],
    )


def _text(tree: Any, features: list[str], classes: list[str]) -> str:
    """The tree as indented rules (one class seen: a single leaf)."""
    from sklearn.tree import export_text

    present = [classes[int(c)] for c in tree.classes_]
    if len(present) == 1:
        return f"|--- class: {present[0]} (the only class in the training steps)\n"
    return str(export_text(tree, feature_names=features, class_names=present))


def report(t: BehaviourTrees) -> str:
    """The trees and their held-out scores as text (``tree.txt``)."""
    return (
        f"# {t.robot}: manoeuvre of the policy's nominal command ({', '.join(t.classes[:4])}"
        f"{', ...' if len(t.classes) > 4 else ''}), trees of depth {t.depth}\n"
        f"# fitted on {t.train_steps} steps of training episodes "
        f"{min(t.train_episodes)}..{max(t.train_episodes)}, scored on {t.test_steps} steps of "
        f"held-out episodes {min(t.test_episodes)}..{max(t.test_episodes)}\n"
        f"# held-out accuracy: command neurons {t.neuron_accuracy:.3f}, raw inputs {t.raw_accuracy:.3f}, "
        f"majority class {t.majority_accuracy:.3f} (training: {t.neuron_train_accuracy:.3f} / "
        f"{t.raw_train_accuracy:.3f})\n"
        f"# held-out classes: {t.class_counts_test}\n\n"
        f"## tree on the command neurons\n{t.neuron_text}\n## tree on the raw inputs\n{t.raw_text}"
    )
