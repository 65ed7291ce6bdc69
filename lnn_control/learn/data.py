"""Demonstrations as :class:`Episode` objects, from recordings or the simulator, and the windows
every model kind trains on.

An episode is one demonstration: observation sequence ``obs`` (T, n_in) as the node's
:class:`~lnn_control.control.observation.ObservationMap` builds it, step lengths ``dt`` (T,) s
from the stamps, command targets ``target`` (T, n_out) from the recorded command topic, and for
BarrierNet training the safety filter's state and ``env`` per step. Recordings: rosbag2 MCAP (via
:mod:`lnn_control.learn.bags`, mapped with the robot's ObservationMap), CSV or NPZ.

Training data for every model kind (liquid policies and the LSTM / GRU / MLP baselines) is made
the same way: a seeded split by episode (:func:`split_episodes`), normalisation statistics of the
training split (:func:`norm_stats`) and non-overlapping windows (:func:`window_stack`,
:func:`windows`).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from lnn_control.control.observation import ObservationMap

__all__ = [
    "DataError",
    "Episode",
    "episode_from_bag",
    "load_csv",
    "load_npz",
    "load_recordings",
    "split_episodes",
    "NormStats",
    "norm_stats",
    "window_stack",
    "windows",
    "Structure",
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


def episode_from_bag(
    path: str | pathlib.Path,
    observation: ObservationMap,
    command_topic: str | None = None,
    command_fields: Sequence[str] | None = None,
) -> Episode:
    """One bag -> :class:`Episode`, one sample per message on the command topic.

    Sample k pairs ``observation``'s vector just before command k (messages logged at the same
    time as the command come first in the recorder's order) with the command's fields; ``dt[k]``
    is the log-time gap to the previous command (the first one reuses the second gap). When the
    mapping has a ``state:`` section the episode also holds the filter state and ``env`` per step.
    ``command_topic`` / ``command_fields`` default to the mapping's ``command:`` section.
    """
    from lnn_control.control.observation import get_field
    from lnn_control.learn import bags

    path = pathlib.Path(path)
    command_topic = observation.command_topic if command_topic is None else command_topic
    command_fields = observation.command_fields if command_fields is None else list(command_fields)
    mapper = observation
    topics = set(mapper.topics) | {command_topic}
    obs: list[np.ndarray] = []
    cmd: list[np.ndarray] = []
    times: list[int] = []
    with_state = mapper.n_state > 0
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
            cmd.append(np.array([float(get_field(m.msg, f)) for f in command_fields]))
            times.append(m.log_time_ns)
            if with_state:
                try:
                    states.append(np.array(mapper.state(), dtype=np.float64))
                    envs.append({k: np.array(a) for k, a in mapper.env().items()})
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
    mapper_factory: Callable[[], ObservationMap] | None = None,
    command_topic: str = "",
    command_fields: Sequence[str] = (),
    csv_columns: tuple[Sequence[str], Sequence[str]] | None = None,
    used_mappers: list[ObservationMap] | None = None,
) -> list[Episode]:
    """Every recording under ``paths`` -> episodes (bag dirs / .mcap, .npz, .csv; dirs are searched).

    Bags are mapped by a fresh :class:`ObservationMap` from ``mapper_factory`` each (episodes stay
    independent); the command topic and fields default to the mapping's. Raises
    :class:`DataError` when nothing is found, saying how to record demonstrations.
    ``used_mappers`` (when given) collects each bag's mapping after reading.
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
            if mapper_factory is None:
                raise DataError(f"{p} is a bag: give mapper_factory (the robot's ObservationMap)")
            mapper = mapper_factory()
            out.append(episode_from_bag(p, mapper, command_topic or None, list(command_fields) or None))
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


def window_stack(per_episode: Sequence[np.ndarray], window: int) -> np.ndarray:
    """Non-overlapping windows of ``window`` steps of per-episode arrays (T, ...) -> (N, window, ...).

    The tail window is aligned to the episode end; episodes shorter than ``window`` are
    left-padded by repeating their first step, so every window has the same length and no
    episode is cut to the shortest one. Every model kind trains on these windows.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
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


def windows(episodes: Sequence[Episode], window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(observations (N, window, n_in), dt (N, window), targets (N, window, n_out)) float32 windows
    of ``episodes`` (see :func:`window_stack`)."""
    f = torch.float32
    return (
        torch.as_tensor(window_stack([e.obs for e in episodes], window), dtype=f),
        torch.as_tensor(window_stack([e.dt for e in episodes], window), dtype=f),
        torch.as_tensor(window_stack([e.target for e in episodes], window), dtype=f),
    )


@dataclasses.dataclass(frozen=True)
class Structure:
    """The model-based part of a policy (:mod:`lnn_control.runtime.feedforward`): an input map
    ``z = A o`` and a feed-forward ``u_ff(o)``; the network learns the residual
    ``target - u_ff(o)`` from ``z``. Either section may be None (then that part is the identity /
    zero). ``feedforward`` and ``input_map`` are the model file's sections, stored as they are.
    """

    feedforward: dict | None = None
    input_map: dict | None = None

    def __post_init__(self) -> None:
        from lnn_control.runtime.feedforward import InputMap, build_feedforward

        object.__setattr__(self, "_ff", build_feedforward(self.feedforward) if self.feedforward else None)
        object.__setattr__(self, "_map", InputMap(self.input_map) if self.input_map else None)

    @property
    def input_names(self) -> list[str] | None:
        """The network's input names (None: the observation's)."""
        m = self._map  # type: ignore[attr-defined]
        return None if m is None else list(m.names)

    def inputs(self, obs: np.ndarray) -> np.ndarray:
        """The network's inputs (T, n_z) for observations (T, n_obs)."""
        m = self._map  # type: ignore[attr-defined]
        return np.asarray(obs, dtype=np.float64) if m is None else m(obs)

    def feedforward_command(self, obs: np.ndarray) -> np.ndarray | None:
        """u_ff (T, n_commands) for observations (T, n_obs); None without a feed-forward."""
        ff = self._ff  # type: ignore[attr-defined]
        return None if ff is None else ff(np.asarray(obs, dtype=np.float64))

    def residual(self, episode: Episode) -> Episode:
        """``episode`` as the network trains on it: inputs z, target minus the feed-forward."""
        obs = episode.obs
        target = episode.target
        ff = self.feedforward_command(obs)
        if ff is not None:
            if ff.shape != target.shape:
                raise DataError(
                    f"{episode.source or 'episode'}: feed-forward gives {ff.shape[1:]} commands, "
                    f"the target has {target.shape[1:]}"
                )
            target = target - ff
        return Episode(
            self.inputs(obs),
            episode.dt.copy(),
            target,
            source=episode.source,
            state=episode.state,
            env=episode.env,
        )

    def stepper(self, network: object) -> object:
        """The deployed stepper: ``network`` (a PolicyStepper of the residual network) wrapped."""
        from lnn_control.runtime.feedforward import FeedforwardStepper

        return FeedforwardStepper(network, self.feedforward, self.input_map)
