"""Behaviour cloning of liquid policies (CfC / LTC with NCP wiring) from recorded demonstrations.

Pipeline: recordings (rosbag2 MCAP via :mod:`lnn_control.learn.bags`, or CSV / NPZ) -> one
:class:`Episode` per recording (observation sequence ``obs`` (T, n_in), step lengths ``dt`` (T,) s
taken from the stamps, command targets ``target`` (T, n_out) from the recorded command topic)
-> normalisation statistics -> train / validation split BY EPISODE -> truncated-BPTT training on
windows of ``window`` steps, MSE on normalised commands:

    L = mean_{b,t,j} ((y_bt,j - mu_j) / sigma_j - (u_bt,j - mu_j) / sigma_j)^2

The model is a :class:`~lnn_control.nn.policy.LiquidPolicy` (CfC or LTC on an AutoNCP wiring) with
the normalisation statistics inside it, so it takes raw observations and returns raw commands;
``lnn_control.runtime.model_file.save_policy`` writes it in the format the controller node loads. The
checkpoint with the lowest validation loss is kept; training stops after ``patience`` epochs
without improvement. Observations come from a *message mapper* (``topics``, ``update(topic, msg,
t_ns)``, ``vector() -> ndarray | None``, ``names``): the node's :class:`ObservationMap` (what the
CLI uses, from the robot's config YAML), or :class:`FieldMap` (message field paths per topic).
Closed-loop data aggregation (DAgger) lives in :mod:`lnn_control.learn.dagger`.

BarrierNet mode (``train_policy(..., safety_filter=f)``, ``lnn-control train --barriernet``): the
policy gets one class-K gain output per ``f.gain_names``, and at every step its nominal command
and gains pass through the filter's own QP (:class:`barriernet.filter_layer.FilterQPLayer`, float64,
rows from :meth:`~barriernet.SafetyFilter.row_terms` of the recorded filter state and env); the loss
is the normalised MSE of the *safe* command (:func:`safe_command_error`), so the gradient trains
both heads (Xiao et al., BarrierNet, T-RO 2023). Samples whose QP is infeasible are dropped and counted.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP

if TYPE_CHECKING:
    from barriernet.filter_layer import FilterQPLayer
    from barriernet.safety_filter import SafetyFilter

__all__ = [
    "DataError",
    "Episode",
    "MessageMapper",
    "FieldMap",
    "episode_from_bag",
    "load_csv",
    "load_npz",
    "load_recordings",
    "split_episodes",
    "NormStats",
    "norm_stats",
    "TrainConfig",
    "TrainResult",
    "BestCheckpoint",
    "build_policy",
    "normalized_error",
    "filter_terms",
    "safe_command_error",
    "evaluate_safe",
    "train_policy",
    "evaluate",
    "predict",
]


class DataError(ValueError):
    """Recordings that cannot be turned into training data; the message says what to fix."""


@dataclasses.dataclass
class Episode:
    """One demonstration: ``obs`` (T, n_in) raw observations, ``dt`` (T,) s, ``target`` (T, n_out).

    For BarrierNet training also the safety filter's inputs per step: ``state`` (T, n_state)
    and ``env`` (T entries, e.g. ``{"scan_points": (N, 2)}``); None when not recorded.
    """

    obs: np.ndarray
    dt: np.ndarray
    target: np.ndarray
    source: str = ""
    state: np.ndarray | None = None
    env: list[dict[str, np.ndarray]] | None = None

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs, dtype=np.float64)
        self.dt = np.asarray(self.dt, dtype=np.float64).reshape(-1)
        self.target = np.asarray(self.target, dtype=np.float64)
        where = f" in {self.source}" if self.source else ""
        if self.obs.ndim != 2 or self.target.ndim != 2:
            raise DataError(
                f"obs and target must be 2-D (T, n){where}, got {self.obs.shape} and {self.target.shape}"
            )
        t = self.obs.shape[0]
        if t < 2 or self.target.shape[0] != t or self.dt.shape[0] != t:
            raise DataError(
                f"episode needs >= 2 steps with equal lengths{where}: obs {self.obs.shape}, "
                f"dt {self.dt.shape}, target {self.target.shape}"
            )
        for name, arr in (("obs", self.obs), ("dt", self.dt), ("target", self.target)):
            if not np.all(np.isfinite(arr)):
                raise DataError(f"{name} has non-finite values{where}")
        if np.any(self.dt <= 0):
            raise DataError(f"dt must be > 0 (stamps must increase){where}; min dt {self.dt.min()}")
        if self.state is not None:
            self.state = np.asarray(self.state, dtype=np.float64)
            if self.state.ndim != 2 or self.state.shape[0] != t or not np.all(np.isfinite(self.state)):
                raise DataError(
                    f"state must be finite with shape ({t}, n_state){where}, got {self.state.shape}"
                )
        if self.env is not None and len(self.env) != t:
            raise DataError(f"env must have one entry per step ({t}){where}, got {len(self.env)}")


class MessageMapper(Protocol):
    """What training needs from an observation mapping (the node's ObservationMap satisfies it)."""

    @property
    def topics(self) -> Sequence[str]: ...

    @property
    def names(self) -> Sequence[str]: ...

    def update(self, topic: str, msg: Any, t_ns: int) -> None: ...

    def vector(self) -> np.ndarray | None: ...


def _get_path(msg: Any, path: str) -> Any:
    """``msg`` field at dotted ``path`` (``pose.pose.position.x``, ``data[2]``)."""
    cur = msg
    for part in path.split("."):
        idx = None
        if part.endswith("]") and "[" in part:
            part, rest = part.split("[", 1)
            idx = int(rest[:-1])
        cur = cur[part] if isinstance(cur, dict) else getattr(cur, part)
        if idx is not None:
            cur = cur[idx]
    return cur


class FieldMap:
    """Observation = concatenation of the latest values of message fields, per topic.

    Args:
        fields: ``{topic: [field path, ...]}`` (dotted paths, ``[i]`` indexes arrays; a path that
            names an array contributes all its elements, its length fixed by the first message).
            Non-finite values of a message with ``range_max`` (LaserScan) become ``range_max``.
    """

    def __init__(self, fields: dict[str, list[str]]) -> None:
        if not fields or not all(isinstance(v, list) and v for v in fields.values()):
            raise DataError("fields must map each topic to a non-empty list of field paths")
        self._fields = {str(k): [str(p) for p in v] for k, v in fields.items()}
        self._latest: dict[str, np.ndarray] = {}
        self._names: dict[str, list[str]] = {}

    @property
    def topics(self) -> list[str]:
        return list(self._fields)

    @property
    def names(self) -> list[str]:
        return [n for t in self._fields for n in self._names.get(t, [f"{t}:{p}" for p in self._fields[t]])]

    def update(self, topic: str, msg: Any, t_ns: int) -> None:
        if topic not in self._fields:
            return
        parts: list[np.ndarray] = []
        names: list[str] = []
        for p in self._fields[topic]:
            v = np.atleast_1d(np.asarray(_get_path(msg, p), dtype=np.float64)).reshape(-1)
            rmax = msg.get("range_max") if isinstance(msg, dict) else getattr(msg, "range_max", None)
            if rmax is not None:
                # LaserScan: +inf / nan mean "no return within range" -> range_max, as the node sees it.
                v = np.where(np.isfinite(v), v, float(rmax))
            parts.append(v)
            names += [f"{topic}:{p}"] if v.size == 1 else [f"{topic}:{p}[{i}]" for i in range(v.size)]
        self._latest[topic] = np.concatenate(parts)
        self._names[topic] = names

    def vector(self) -> np.ndarray | None:
        if len(self._latest) < len(self._fields):
            return None  # some topic not seen yet
        return np.concatenate([self._latest[t] for t in self._fields])


def episode_from_bag(
    path: str | pathlib.Path,
    mapper: MessageMapper,
    command_topic: str,
    command_fields: Sequence[str],
) -> Episode:
    """One bag -> :class:`Episode`, one sample per message on ``command_topic``.

    Sample k pairs the mapper's observation just before command k (messages logged at the same
    time as the command come first in the recorder's order) with the command's fields; ``dt[k]``
    is the log-time gap to the previous command (the first one reuses the second gap).
    """
    from lnn_control.learn import bags

    path = pathlib.Path(path)
    topics = set(mapper.topics) | {command_topic}
    obs: list[np.ndarray] = []
    cmd: list[np.ndarray] = []
    times: list[int] = []
    # the safety filter's state and env too, when the mapper gives them (ObservationMap)
    with_state = int(getattr(mapper, "n_state", 0) or 0) > 0
    states: list[np.ndarray] = []
    envs: list[dict[str, np.ndarray]] = []
    seen_cmd = False
    for m in bags.read_bag(path, topics):
        if m.topic == command_topic:
            seen_cmd = True
            v = mapper.vector()
            if v is None:
                continue  # sensors not complete yet
            obs.append(np.array(v, dtype=np.float64))
            cmd.append(np.array([float(_get_path(m.msg, f)) for f in command_fields]))
            times.append(m.log_time_ns)
            if with_state:
                try:
                    states.append(np.array(mapper.state(), dtype=np.float64))  # type: ignore[attr-defined]
                    envs.append({k: np.array(a) for k, a in mapper.env().items()})  # type: ignore[attr-defined]
                except ValueError as e:
                    raise DataError(f"bag {path}: filter state / env at {m.log_time_ns} ns: {e}") from e
        else:
            mapper.update(m.topic, m.msg, m.log_time_ns)
    if not seen_cmd:
        raise DataError(f"bag {path} has no messages on the command topic {command_topic!r}")
    if len(times) < 3:
        raise DataError(f"bag {path} gives only {len(times)} samples; record longer episodes")
    t = np.asarray(times, dtype=np.float64) * 1e-9
    dt = np.diff(t)
    dt = np.concatenate([dt[:1], dt])
    if not with_state:
        return Episode(np.stack(obs), dt, np.stack(cmd), source=str(path))
    return Episode(np.stack(obs), dt, np.stack(cmd), source=str(path), state=np.stack(states), env=envs)


def load_csv(path: str | pathlib.Path, obs_columns: Sequence[str], target_columns: Sequence[str]) -> Episode:
    """CSV with a header: column ``t`` (s, increasing) or ``dt`` (s), the observation and target columns."""
    path = pathlib.Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{path} has no data rows")
    cols = set(rows[0])
    missing = [c for c in [*obs_columns, *target_columns] if c not in cols]
    if missing:
        raise DataError(f"{path} lacks columns {missing}; it has {sorted(cols)}")
    if "dt" in cols:
        dt = np.array([float(r["dt"]) for r in rows])
    elif "t" in cols:
        tt = np.array([float(r["t"]) for r in rows])
        dt = np.diff(tt, prepend=tt[0] - (tt[1] - tt[0] if len(tt) > 1 else 1.0))
    else:
        raise DataError(f"{path} needs a 't' (s) or 'dt' (s) column")
    obs = np.array([[float(r[c]) for c in obs_columns] for r in rows])
    tgt = np.array([[float(r[c]) for c in target_columns] for r in rows])
    return Episode(obs, dt, tgt, source=str(path))


def load_npz(path: str | pathlib.Path) -> list[Episode]:
    """NPZ with arrays ``obs`` (E, T, n_in) or (T, n_in), ``dt`` and ``target`` shaped alike."""
    path = pathlib.Path(path)
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("obs", "dt", "target") if k not in z]
        if missing:
            raise DataError(f"{path} lacks arrays {missing}; it has {sorted(z.files)}")
        obs, dt, tgt = z["obs"], z["dt"], z["target"]
    if obs.ndim == 2:
        return [Episode(obs, dt, tgt, source=str(path))]
    if obs.ndim != 3:
        raise DataError(f"{path}: obs must be (T, n) or (E, T, n), got {obs.shape}")
    return [Episode(obs[i], dt[i], tgt[i], source=f"{path}[{i}]") for i in range(obs.shape[0])]


def load_recordings(
    paths: Iterable[str | pathlib.Path],
    mapper_factory: Callable[[], MessageMapper] | None = None,
    command_topic: str = "",
    command_fields: Sequence[str] = (),
    csv_columns: tuple[Sequence[str], Sequence[str]] | None = None,
    used_mappers: list[MessageMapper] | None = None,
) -> list[Episode]:
    """Every recording under ``paths`` -> episodes (bag dirs / .mcap, .npz, .csv; dirs are searched).

    A fresh mapper per bag keeps episodes independent. Raises :class:`DataError` when nothing is
    found, saying how to record demonstrations. ``used_mappers`` (when given) collects each
    bag's mapper after reading, e.g. for its observation ``names``.
    """
    out: list[Episode] = []
    todo = [pathlib.Path(p) for p in paths]
    if not todo:
        raise DataError("no data paths given (--data DIR_OR_FILES)")
    for p in todo:
        if not p.exists():
            raise DataError(
                f"recordings not found: {p}. Record demonstrations first, e.g. "
                f"python -m lnn_control.learn.record --robot diff_drive --episodes 20 --out {p}"
            )
    while todo:
        p = todo.pop(0)
        if p.is_dir() and not (p / "metadata.yaml").is_file() and not list(p.glob("*.mcap")):
            todo[:0] = sorted(q for q in p.iterdir() if q.is_dir() or q.suffix in (".mcap", ".npz", ".csv"))
            continue
        if p.is_dir() or p.suffix == ".mcap":
            if mapper_factory is None or not command_topic or not command_fields:
                raise DataError(f"{p} is a bag: an observation mapping and a command topic are needed")
            mapper = mapper_factory()
            out.append(episode_from_bag(p, mapper, command_topic, command_fields))
            if used_mappers is not None:
                used_mappers.append(mapper)  # callers read observation names from these
        elif p.suffix == ".npz":
            out += load_npz(p)
        elif p.suffix == ".csv":
            if csv_columns is None:
                raise DataError(f"{p} is CSV: give the observation and target column names")
            out.append(load_csv(p, *csv_columns))
    if not out:
        raise DataError(f"no recordings (bags, .npz, .csv) found under {[str(p) for p in paths]}")
    n_in, n_out = out[0].obs.shape[1], out[0].target.shape[1]
    for e in out:
        if e.obs.shape[1] != n_in or e.target.shape[1] != n_out:
            raise DataError(
                f"{e.source}: sizes ({e.obs.shape[1]} obs, {e.target.shape[1]} cmd) differ "
                f"from {out[0].source} ({n_in}, {n_out})"
            )
    return out


def split_episodes(
    episodes: Sequence[Episode], val_fraction: float, seed: int
) -> tuple[list[Episode], list[Episode]]:
    """Seeded split by episode (never inside one): at least one episode on each side when possible."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(episodes)
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1 if n > 1 and val_fraction > 0 else 0, round(n * val_fraction)))
    val = [episodes[i] for i in sorted(order[:n_val])]
    train = [episodes[i] for i in sorted(order[n_val:])]
    return train, val


@dataclasses.dataclass
class NormStats:
    """Per-dimension mean / std of observations (n_in,) and commands (n_out,); std floored at 1e-6."""

    input_mean: np.ndarray
    input_std: np.ndarray
    output_mean: np.ndarray
    output_std: np.ndarray


def norm_stats(episodes: Sequence[Episode]) -> NormStats:
    """Statistics over every step of ``episodes`` (the training split only, so validation stays unseen)."""
    obs = np.concatenate([e.obs for e in episodes])
    tgt = np.concatenate([e.target for e in episodes])
    return NormStats(obs.mean(0), np.maximum(obs.std(0), 1e-6), tgt.mean(0), np.maximum(tgt.std(0), 1e-6))


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of :func:`train_policy`.

    cell: ``cfc`` | ``ltc``; units: neurons of the AutoNCP wiring (> n_outputs + n_gains + 2);
    sparsity: its synapse sparsity in [0.1, 1); wiring_seed: seed of its synapse draw;
    synapses: wired CfC synapses, ``ncps`` (as ncps 1.0.1: dense time gates and intra-layer
    recurrence, more capacity) or ``wiring`` (only the wiring's synapses);
    readout: ``linear`` (a Linear map from the motor neurons to the outputs: wired CfC states are
    bounded by tanh to +-1, i.e. +-1 std of the commands, too narrow for torques) or ``motor``
    (the motor neurons are the outputs); motor: motor neurons with the linear readout (0: one per
    output; more widen the wiring's last layer, which otherwise bottlenecks the map to the outputs);
    backbone_units: CfC backbone width (dense CfC only; a wired CfC has none); epochs;
    window: truncated-BPTT window (steps); batch: windows per step; lr; weight_decay (Adam);
    patience: epochs without validation improvement before stopping; val_fraction: share of
    episodes held out; seed: split, initialisation and batch order; input_noise: std of Gaussian
    noise added to the normalised observations while training (augmentation, 0 = off);
    n_gains / gain_scale: BarrierNet class-K gain head (``gain_scale * sigmoid``); progress: tqdm bar.
    """

    cell: str = "cfc"
    units: int = 19
    sparsity: float = 0.5
    wiring_seed: int = 0
    synapses: str = "ncps"
    readout: str = "linear"
    motor: int = 0
    backbone_units: int = 128
    epochs: int = 50
    window: int = 32
    batch: int = 16
    lr: float = 5e-3
    weight_decay: float = 0.0
    patience: int = 8
    val_fraction: float = 0.2
    seed: int = 0
    input_noise: float = 0.0
    n_gains: int = 0
    gain_scale: float = 4.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.cell not in ("cfc", "ltc"):
            raise ValueError(f"cell must be 'cfc' or 'ltc', got {self.cell!r}")
        for k in ("epochs", "window", "batch", "patience", "units", "backbone_units"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.input_noise < 0:
            raise ValueError(
                f"weight_decay and input_noise must be >= 0, got {self.weight_decay}, {self.input_noise}"
            )
        if self.motor < 0:
            raise ValueError(f"motor must be >= 0, got {self.motor}")
        if self.readout not in ("linear", "motor"):
            raise ValueError(f"readout must be 'linear' or 'motor', got {self.readout!r}")
        if self.synapses not in ("ncps", "wiring"):
            raise ValueError(f"synapses must be 'ncps' or 'wiring', got {self.synapses!r}")
        if self.n_gains < 0:
            raise ValueError(f"n_gains must be >= 0, got {self.n_gains}")
        if not (math.isfinite(self.gain_scale) and self.gain_scale > 0):
            raise ValueError(f"gain_scale must be finite and > 0, got {self.gain_scale}")


class BestCheckpoint:
    """Keeps a copy of the state with the lowest validation loss and counts epochs without improvement."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_loss = math.inf
        self.best_epoch = -1
        self.state: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def update(self, epoch: int, loss: float, model: nn.Module) -> bool:
        """Record ``loss`` of ``epoch``; returns True when training should stop (patience exhausted)."""
        if not math.isfinite(loss):
            raise FloatingPointError(f"validation loss is {loss} at epoch {epoch}; lower lr")
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.stale = loss, epoch, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.stale += 1
        return self.stale >= self.patience


def build_policy(
    cfg: TrainConfig,
    n_inputs: int,
    n_outputs: int,
    stats: NormStats,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    gain_names: Sequence[str] | None = None,
) -> LiquidPolicy:
    """A :class:`LiquidPolicy` (AutoNCP wiring, ``cfg.n_gains`` gain outputs) with ``stats`` inside.

    The wiring has ``n_outputs + n_gains`` motor neurons; commands are de-normalised with the
    command statistics, gains are ``gain_scale * sigmoid`` (see :mod:`lnn_control.nn.policy`).
    """
    n_out = n_outputs + cfg.n_gains
    n_motor = max(n_out, cfg.motor) if cfg.readout == "linear" else n_out
    if cfg.units < n_motor + 3:
        raise ValueError(
            f"units must be >= motor neurons + 3 = {n_motor + 3} for an NCP wiring, got {cfg.units}"
        )
    wiring = AutoNCP(cfg.units, n_motor, sparsity=cfg.sparsity, seed=cfg.wiring_seed)
    extra: dict[str, Any] = (
        {"backbone_units": cfg.backbone_units, "synapses": cfg.synapses} if cfg.cell == "cfc" else {}
    )
    policy = LiquidPolicy(
        n_inputs,
        cfg.cell,
        wiring,
        proj_size=n_out if cfg.readout == "linear" else None,
        n_gains=cfg.n_gains,
        gain_scale=cfg.gain_scale,
        input_names=None if input_names is None else list(input_names),
        output_names=None if output_names is None else list(output_names),
        gain_names=None if gain_names is None else list(gain_names),
        **extra,
    )
    policy.set_normalization(stats.input_mean, stats.input_std, stats.output_mean, stats.output_std)
    return policy


def normalized_error(model: LiquidPolicy, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the commands ``y[..., :n_commands]`` in normalised units (dimensionless)."""
    k = model.n_commands
    return (((y[..., :k] - target) / model.output_std) ** 2).mean()


def _window_stack(per_episode: Sequence[np.ndarray], window: int) -> np.ndarray:
    """Non-overlapping windows of ``window`` steps of per-episode arrays (T, ...) -> (N, window, ...).

    The tail window is aligned to the episode end; episodes shorter than ``window`` are
    left-padded by repeating their first step, so every window has the same length and no
    episode is cut to the shortest one.
    """
    out = []
    for a in per_episode:
        t = a.shape[0]
        if t < window:
            a = np.concatenate([np.repeat(a[:1], window - t, 0), a])
            t = window
        starts = list(range(0, t - window + 1, window))
        if starts[-1] != t - window:
            starts.append(t - window)
        out += [a[s : s + window] for s in starts]
    return np.stack(out)


def _windows(episodes: Sequence[Episode], window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(observations, dt, targets) windows (N, window, ...) float32 (see :func:`_window_stack`)."""
    f = torch.float32
    return (
        torch.as_tensor(_window_stack([e.obs for e in episodes], window), dtype=f),
        torch.as_tensor(_window_stack([e.dt for e in episodes], window), dtype=f),
        torch.as_tensor(_window_stack([e.target for e in episodes], window), dtype=f),
    )


@torch.no_grad()
def evaluate(model: LiquidPolicy, episodes: Sequence[Episode]) -> float:
    """Open-loop normalised MSE over whole episodes, each run from a zero hidden state."""
    total, count = 0.0, 0
    dtype = model.input_mean.dtype
    for e in episodes:
        x = torch.as_tensor(e.obs, dtype=dtype)[None]
        d = torch.as_tensor(e.dt, dtype=dtype)[None]
        y, _ = model(x, d)
        err = float(normalized_error(model, y, torch.as_tensor(e.target, dtype=dtype)[None]))
        total += err * e.obs.shape[0]
        count += e.obs.shape[0]
    return total / count


def filter_terms(layer: FilterQPLayer, episode: Episode) -> tuple[torch.Tensor, ...]:
    """The filter's gain-free row pieces at every step of ``episode``: G (T, m, n), a, b, c (T, m)
    float64 (:meth:`barriernet.SafetyFilter.row_terms`); needs ``episode.state`` (and ``env``)."""
    if episode.state is None:
        raise DataError(
            f"{episode.source or 'episode'} has no safety-filter state per step: BarrierNet training "
            "needs recordings read with an observation mapping that has a 'state:' section (bags)"
        )
    if episode.state.shape[1] != layer.filter.n_state:
        raise DataError(
            f"{episode.source or 'episode'}: state has {episode.state.shape[1]} values per step, the "
            f"safety filter's dynamics {layer.filter.n_state}"
        )
    try:
        rt = layer.terms(episode.state, episode.env)
    except ValueError as e:  # e.g. a missing env entry (InputError is a ValueError)
        raise DataError(f"{episode.source or 'episode'}: safety-filter rows: {e}") from e
    return tuple(torch.as_tensor(v) for v in (rt.G, rt.a, rt.b, rt.c))


def safe_command_error(
    model: LiquidPolicy,
    layer: FilterQPLayer,
    y: torch.Tensor,
    target: torch.Tensor,
    terms: Sequence[torch.Tensor],
) -> tuple[torch.Tensor | None, int, torch.Tensor]:
    """BarrierNet loss: normalised MSE of the *safe* command against ``target``.

    ``y`` (B, T, n_commands + n_gains) policy outputs [u_nom, gains]; ``terms`` (G, a, b, c) with
    leading (B, T); the QP runs in float64. Returns (loss over the feasible samples, or None when
    there is none; the number of infeasible samples, dropped; safe commands (B*T, n) float64).
    """
    k, ng = model.n_commands, model.n_gains
    u_nom = y[..., :k].reshape(-1, k).double()
    gains = y[..., k : k + ng].reshape(-1, ng).double().clamp_min(1e-12)  # sigmoid underflow in float32
    flat = [t.reshape(-1, *t.shape[2:]) for t in terms]
    u = layer((flat[0], flat[1], flat[2], flat[3]), u_nom, gains)
    assert layer.status is not None
    ok = layer.status == 0
    n_bad = int((~ok).sum())
    if n_bad == ok.numel():
        return None, n_bad, u
    std = model.output_std.double()
    err = (((u - target.reshape(-1, k).double()) / std) ** 2).mean(-1)
    return err[ok].mean(), n_bad, u


@torch.no_grad()
def evaluate_safe(
    model: LiquidPolicy,
    layer: FilterQPLayer,
    episodes: Sequence[Episode],
    terms: Sequence[Sequence[torch.Tensor]],
) -> tuple[float, int]:
    """Open-loop normalised MSE of the safe command over whole episodes (zero initial state),
    over the feasible samples; and the number of infeasible samples."""
    total, count, bad = 0.0, 0, 0
    dtype = model.input_mean.dtype
    for e, tm in zip(episodes, terms):
        y, _ = model(torch.as_tensor(e.obs, dtype=dtype)[None], torch.as_tensor(e.dt, dtype=dtype)[None])
        loss, n_bad, _u = safe_command_error(
            model, layer, y, torch.as_tensor(e.target)[None], [t[None] for t in tm]
        )
        bad += n_bad
        n_ok = e.obs.shape[0] - n_bad
        if loss is not None:
            total += float(loss) * n_ok
            count += n_ok
    return (total / count if count else math.inf), bad


@torch.no_grad()
def predict(model: LiquidPolicy, episode: Episode) -> np.ndarray:
    """Open-loop outputs (T, n_outputs) of ``model`` over ``episode`` from a zero state."""
    dtype = model.input_mean.dtype
    y, _ = model(
        torch.as_tensor(episode.obs, dtype=dtype)[None], torch.as_tensor(episode.dt, dtype=dtype)[None]
    )
    return y[0].double().numpy()


@dataclasses.dataclass
class TrainResult:
    """Trained model (best checkpoint loaded), per-epoch losses, best epoch, split."""

    model: LiquidPolicy
    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int
    train_episodes: list[Episode]
    val_episodes: list[Episode]
    #: BarrierNet training: samples per epoch whose QP was infeasible (dropped from the loss)
    infeasible: list[int] = dataclasses.field(default_factory=list)
    val_infeasible: list[int] = dataclasses.field(default_factory=list)


def train_policy(
    episodes: Sequence[Episode],
    cfg: TrainConfig,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    gain_names: Sequence[str] | None = None,
    init: LiquidPolicy | None = None,
    split: tuple[Sequence[Episode], Sequence[Episode]] | None = None,
    safety_filter: SafetyFilter | None = None,
) -> TrainResult:
    """Behaviour cloning with truncated BPTT; returns the best-validation checkpoint.

    Args:
        episodes: demonstrations (ignored when ``split`` is given).
        cfg: hyperparameters.
        input_names / output_names / gain_names: stored in the policy (and its model file).
        init: start from this policy's weights (DAgger rounds); its normalisation is kept.
        split: explicit (train, validation) episodes instead of a seeded split.
        safety_filter: BarrierNet training end to end: the policy gets one gain output per
            ``safety_filter.gain_names`` (the names stored with it), and its nominal command and
            gains pass through the filter's QP (:class:`barriernet.filter_layer.FilterQPLayer`)
            at every step; the loss is :func:`safe_command_error` on the safe command, so it
            trains both. Episodes need ``state`` (and ``env``) per step. Samples whose QP is
            infeasible are left out of the loss and counted (``TrainResult.infeasible``).
    Without validation episodes the training loss picks the checkpoint.
    """
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    if split is not None:
        train_eps, val_eps = list(split[0]), list(split[1])
    else:
        if not episodes:
            raise DataError("no episodes to train on")
        train_eps, val_eps = split_episodes(episodes, cfg.val_fraction, cfg.seed)
    if not train_eps:
        raise DataError("no training episodes")
    n_in, n_out = train_eps[0].obs.shape[1], train_eps[0].target.shape[1]
    layer: FilterQPLayer | None = None
    if safety_filter is not None:
        from barriernet.filter_layer import FilterQPLayer

        layer = FilterQPLayer(safety_filter)
        if layer.n_gains == 0:
            raise ValueError("safety_filter: has no class-K gains to learn (no barrier rows)")
        if layer.n_controls != n_out:
            raise ValueError(f"safety_filter: {layer.n_controls} controls, the data's commands {n_out}")
        if cfg.n_gains not in (0, layer.n_gains):
            raise ValueError(
                f"cfg.n_gains={cfg.n_gains}, the safety filter has {layer.n_gains} gains {layer.gain_names}"
            )
        cfg = dataclasses.replace(cfg, n_gains=layer.n_gains)
        if gain_names is not None and list(gain_names) != layer.gain_names:
            raise ValueError(
                f"gain_names {list(gain_names)} differ from the safety filter's {layer.gain_names}"
            )
        gain_names = layer.gain_names
        if init is not None and (init.n_gains != layer.n_gains or list(init.gain_names) != layer.gain_names):
            raise ValueError(
                f"init policy gains {list(init.gain_names)} differ from the filter's {layer.gain_names}"
            )
    if init is not None:
        if init.n_inputs != n_in or init.n_commands != n_out:
            raise ValueError(
                f"init policy has {init.n_inputs} inputs / {init.n_commands} commands, data {n_in} / {n_out}"
            )
        model = copy.deepcopy(init).float()
    else:
        model = build_policy(cfg, n_in, n_out, norm_stats(train_eps), input_names, output_names, gain_names)
    model.train()
    x, d, y = _windows(train_eps, cfg.window)
    tw: list[torch.Tensor] = []
    val_terms: list[tuple[torch.Tensor, ...]] = []
    if layer is not None:
        per_ep = [filter_terms(layer, e) for e in train_eps]
        tw = [torch.as_tensor(_window_stack([p[j].numpy() for p in per_ep], cfg.window)) for j in range(4)]
        val_terms = [filter_terms(layer, e) for e in val_eps]
    bad_hist: list[int] = []
    val_bad_hist: list[int] = []
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.lr * 0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = BestCheckpoint(cfg.patience)
    tr_hist: list[float] = []
    va_hist: list[float] = []
    noise_scale = cfg.input_noise * model.input_std  # noise in normalised units -> raw units
    bar = tqdm(range(cfg.epochs), desc=f"train {cfg.cell}", disable=not cfg.progress, unit="epoch")
    for epoch in bar:
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        run, nb, n_bad = 0.0, 0, 0
        for i in range(0, x.shape[0], cfg.batch):
            idx = perm[i : i + cfg.batch]
            xb = x[idx]
            if cfg.input_noise > 0:
                xb = xb + torch.randn(xb.shape, generator=gen) * noise_scale
            out, _ = model(xb, d[idx])
            if layer is None:
                loss = normalized_error(model, out, y[idx])
            else:
                safe_loss, bad, _u = safe_command_error(model, layer, out, y[idx], [t[idx] for t in tw])
                n_bad += bad
                if safe_loss is None:
                    continue  # every sample infeasible: nothing to learn from this batch
                loss = safe_loss
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # liquid cells can spike early on
            opt.step()
            run += float(loss.detach())
            nb += 1
        sched.step()
        model.eval()
        tr_hist.append(run / nb if nb else math.inf)
        bad_hist.append(n_bad)
        if layer is not None and val_eps:
            va, vbad = evaluate_safe(model, layer, val_eps, val_terms)
            val_bad_hist.append(vbad)
        else:
            va = evaluate(model, val_eps) if val_eps else tr_hist[-1]
        va_hist.append(va)
        bar.set_postfix(train=f"{tr_hist[-1]:.4f}", val=f"{va:.4f}")
        if best.update(epoch, va, model):
            break
    assert best.state is not None
    model.load_state_dict(best.state)
    model.eval()
    res = TrainResult(model, tr_hist, va_hist, best.best_epoch, train_eps, val_eps)
    if layer is not None:
        res.infeasible, res.val_infeasible = bad_hist, val_bad_hist
    return res
