"""Behaviour cloning of liquid policies (CfC / LTC with NCP wiring) from recorded demonstrations.

Pipeline: recordings (rosbag2 MCAP via :mod:`lnn_control.bags`, or CSV / NPZ) -> one
:class:`Episode` per recording (observation sequence ``obs`` (T, n_in), step lengths ``dt`` (T,) s
taken from the stamps, command targets ``target`` (T, n_out) from the recorded command topic)
-> normalisation statistics -> train / validation split BY EPISODE -> truncated-BPTT training on
windows of ``window`` steps, MSE on normalised commands:

    L = mean_{b,t,j} ((y_bt,j - mu_j) / sigma_j - (u_bt,j - mu_j) / sigma_j)^2

The checkpoint with the lowest validation loss is kept; training stops after ``patience`` epochs
without improvement. Observations come from a *message mapper* (``topics``, ``update(topic, msg,
t_ns)``, ``vector() -> ndarray | None``, ``names``): the node's :class:`ObservationMap` when the
config YAML has one, or :class:`FieldMap` (message field paths per topic).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

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
    "SequencePolicy",
    "TrainConfig",
    "TrainResult",
    "BestCheckpoint",
    "train_policy",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "lnn_control.training/1"


class DataError(ValueError):
    """Recordings that cannot be turned into training data; the message says what to fix."""


@dataclasses.dataclass
class Episode:
    """One demonstration: ``obs`` (T, n_in) raw observations, ``dt`` (T,) s, ``target`` (T, n_out)."""

    obs: np.ndarray
    dt: np.ndarray
    target: np.ndarray
    source: str = ""

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
    from lnn_control import bags

    path = pathlib.Path(path)
    topics = set(mapper.topics) | {command_topic}
    obs: list[np.ndarray] = []
    cmd: list[np.ndarray] = []
    times: list[int] = []
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
        else:
            mapper.update(m.topic, m.msg, m.log_time_ns)
    if not seen_cmd:
        raise DataError(f"bag {path} has no messages on the command topic {command_topic!r}")
    if len(times) < 3:
        raise DataError(f"bag {path} gives only {len(times)} samples; record longer episodes")
    t = np.asarray(times, dtype=np.float64) * 1e-9
    dt = np.diff(t)
    dt = np.concatenate([dt[:1], dt])
    return Episode(np.stack(obs), dt, np.stack(cmd), source=str(path))


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
                f"python -m lnn_control.record --robot diff_drive --episodes 20 --out {p}"
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


class SequencePolicy(nn.Module):
    """ncps CfC / LTC with AutoNCP wiring between input and output normalisation.

    ``forward(x (B, T, n_in) raw, timespans (B, T) s) -> (y (B, T, n_out) raw, h (B, units))``.
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor
    output_mean: torch.Tensor
    output_std: torch.Tensor

    def __init__(self, cell: str, n_in: int, n_out: int, units: int, seed: int, stats: NormStats) -> None:
        super().__init__()
        from ncps.torch import LTC, CfC
        from ncps.wirings import AutoNCP

        if cell not in ("cfc", "ltc"):
            raise ValueError(f"cell must be 'cfc' or 'ltc', got {cell!r}")
        if units < n_out + 3:
            raise ValueError(f"units must be >= n_out + 3 = {n_out + 3} for an NCP wiring, got {units}")
        self.cell, self.n_in, self.n_out, self.units, self.seed = cell, n_in, n_out, units, seed
        wiring = AutoNCP(units, n_out, seed=seed)
        self.rnn = (CfC if cell == "cfc" else LTC)(n_in, wiring, batch_first=True)
        for name, v in dataclasses.asdict(stats).items():
            self.register_buffer(name, torch.as_tensor(v, dtype=torch.float32))

    def forward(
        self, x: torch.Tensor, timespans: torch.Tensor, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.input_mean) / self.input_std
        b, t = z.shape[:2]
        ts = timespans.expand(b, t) if timespans.dim() == 2 else timespans.reshape(b, t)
        h = torch.zeros(b, self.rnn.state_size, dtype=z.dtype) if hx is None else hx
        outs = []
        # Own time loop: ncps' loop squeezes per-sample timespans to (B,), which does not
        # broadcast against (B, units) in the wired cells; (B, 1) does.
        for k in range(t):
            out, h = self.rnn.rnn_cell(z[:, k], h, ts[:, k : k + 1])
            outs.append(out)
        y = torch.stack(outs, 1)
        return y * self.output_std + self.output_mean, h

    def normalized_error(self, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error in normalised command units (dimensionless)."""
        return (((y - target) / self.output_std) ** 2).mean()


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters: epochs, window (steps), batch (windows), lr, patience (epochs), seed."""

    cell: str = "cfc"
    units: int = 19
    epochs: int = 50
    window: int = 32
    batch: int = 16
    lr: float = 5e-3
    patience: int = 8
    val_fraction: float = 0.2
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for k in ("epochs", "window", "batch", "patience", "units"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


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


def _windows(episodes: Sequence[Episode], window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``window`` steps (the tail window is aligned to the episode end)."""
    xs, ds, ys = [], [], []
    for e in episodes:
        t = e.obs.shape[0]
        w = min(window, t)
        starts = list(range(0, t - w + 1, w))
        if starts[-1] != t - w:
            starts.append(t - w)
        for s in starts:
            xs.append(e.obs[s : s + w])
            ds.append(e.dt[s : s + w])
            ys.append(e.target[s : s + w])
    w = min(x.shape[0] for x in xs)
    f = torch.float32
    return (
        torch.as_tensor(np.stack([x[:w] for x in xs]), dtype=f),
        torch.as_tensor(np.stack([d[:w] for d in ds]), dtype=f),
        torch.as_tensor(np.stack([y[:w] for y in ys]), dtype=f),
    )


@torch.no_grad()
def evaluate(model: SequencePolicy, episodes: Sequence[Episode]) -> float:
    """Open-loop normalised MSE over whole episodes (each run from a zero hidden state)."""
    total, count = 0.0, 0
    for e in episodes:
        x = torch.as_tensor(e.obs, dtype=torch.float32)[None]
        d = torch.as_tensor(e.dt, dtype=torch.float32)[None]
        y, _ = model(x, d)
        err = float(model.normalized_error(y, torch.as_tensor(e.target, dtype=torch.float32)[None]))
        total += err * e.obs.shape[0]
        count += e.obs.shape[0]
    return total / count


@dataclasses.dataclass
class TrainResult:
    """Trained model (best checkpoint loaded), per-epoch losses, best epoch, split."""

    model: SequencePolicy
    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int
    train_episodes: list[Episode]
    val_episodes: list[Episode]


def train_policy(episodes: Sequence[Episode], cfg: TrainConfig) -> TrainResult:
    """Behaviour cloning with truncated BPTT; returns the best-validation checkpoint.

    Without validation episodes (a single episode) the training loss picks the checkpoint.
    """
    from tqdm import tqdm

    if not episodes:
        raise DataError("no episodes to train on")
    torch.manual_seed(cfg.seed)
    train_eps, val_eps = split_episodes(episodes, cfg.val_fraction, cfg.seed)
    stats = norm_stats(train_eps)
    model = SequencePolicy(
        cfg.cell, train_eps[0].obs.shape[1], train_eps[0].target.shape[1], cfg.units, cfg.seed, stats
    )
    x, d, y = _windows(train_eps, cfg.window)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = BestCheckpoint(cfg.patience)
    tr_hist: list[float] = []
    va_hist: list[float] = []
    bar = tqdm(range(cfg.epochs), desc=f"train {cfg.cell}", disable=not cfg.progress, unit="epoch")
    for epoch in bar:
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        run, nb = 0.0, 0
        for i in range(0, x.shape[0], cfg.batch):
            idx = perm[i : i + cfg.batch]
            out, _ = model(x[idx], d[idx])
            loss = model.normalized_error(out, y[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # liquid cells can spike early on
            opt.step()
            run += float(loss.detach())
            nb += 1
        model.eval()
        tr_hist.append(run / nb)
        va = evaluate(model, val_eps) if val_eps else tr_hist[-1]
        va_hist.append(va)
        bar.set_postfix(train=f"{tr_hist[-1]:.4f}", val=f"{va:.4f}")
        if best.update(epoch, va, model):
            break
    assert best.state is not None
    model.load_state_dict(best.state)
    return TrainResult(model, tr_hist, va_hist, best.best_epoch, train_eps, val_eps)


def save_checkpoint(path: str | pathlib.Path, model: SequencePolicy, meta: dict[str, Any]) -> pathlib.Path:
    """Write tensors + ``__config__`` JSON (cell, sizes, seed, ``meta``) to one ``.npz`` (no pickle)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {
        "format": CHECKPOINT_FORMAT,
        "cell": model.cell,
        "n_in": model.n_in,
        "n_out": model.n_out,
        "units": model.units,
        "seed": model.seed,
        **meta,
    }
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    np.savez(path, __config__=np.array(json.dumps(cfg)), **arrays)
    return path


def load_checkpoint(path: str | pathlib.Path) -> tuple[SequencePolicy, dict[str, Any]]:
    """Inverse of :func:`save_checkpoint`; raises :class:`DataError` on a foreign or corrupt file."""
    path = pathlib.Path(path)
    with np.load(path, allow_pickle=False) as z:
        if "__config__" not in z:
            raise DataError(f"{path} has no __config__ entry; not a training checkpoint")
        cfg = json.loads(str(z["__config__"]))
        if cfg.get("format") != CHECKPOINT_FORMAT:
            raise DataError(f"{path} has format {cfg.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        arrays = {k: torch.as_tensor(z[k]) for k in z.files if k != "__config__"}
    zero = NormStats(
        np.zeros(cfg["n_in"]), np.ones(cfg["n_in"]), np.zeros(cfg["n_out"]), np.ones(cfg["n_out"])
    )
    model = SequencePolicy(cfg["cell"], cfg["n_in"], cfg["n_out"], cfg["units"], cfg["seed"], zero)
    model.load_state_dict(arrays)
    model.eval()
    return model, cfg
