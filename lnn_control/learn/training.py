"""Behaviour cloning of policies from demonstrations: one fit for every model kind.

Data (:mod:`lnn_control.learn.data`): :class:`Episode` objects -> train / validation split BY
EPISODE -> normalisation statistics of the training split -> non-overlapping windows of
``window`` steps. Truncated-BPTT training on those windows, MSE on normalised commands:

    L = mean_{b,t,j} ((y_bt,j - mu_j) / sigma_j - (u_bt,j - mu_j) / sigma_j)^2

The model (:data:`MODEL_KINDS`, ``TrainConfig.model``) is a :class:`~lnn_control.nn.policy.LiquidPolicy`
(``ncp``: CfC or LTC on an AutoNCP wiring; ``dense``: a fully connected CfC / LTC with a linear
read-out) or a baseline of :mod:`lnn_control.nn.baselines` (``lstm``, ``gru``, ``mlp``), each with
the normalisation statistics inside it, so it takes raw observations and returns raw commands;
``lnn_control.runtime.model_file.save_policy`` writes a liquid policy in the format the
controller node loads. The budget is ``epochs`` (with early stopping after ``patience`` epochs
without improvement) or exactly ``steps`` optimiser steps; the checkpoint with the lowest
validation loss is kept. The whole recipe (recordings, simulator episodes, DAgger, model file)
is :mod:`lnn_control.learn.recipe`.

BarrierNet mode (``train_policy(..., safety_filter=f)``, liquid policies only): the policy gets
one class-K gain output per ``f.gain_names``, and at every step its nominal command and gains
pass through the filter's own QP (:class:`barriernet.filter_layer.FilterQPLayer`, float64, rows
from :meth:`~barriernet.SafetyFilter.row_terms` of the recorded filter state and env); the loss is
the normalised MSE of the *safe* command (:func:`safe_command_error`), so the gradient trains
both heads (Xiao et al., BarrierNet, T-RO 2023). Samples whose QP is infeasible are dropped and counted.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lnn_control.learn.data import (
    DataError,
    Episode,
    NormStats,
    episode_from_bag,
    load_csv,
    load_npz,
    load_recordings,
    norm_stats,
    split_episodes,
    window_stack,
    windows,
)
from lnn_control.nn.baselines import BASELINES, BaselinePolicy
from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP

if TYPE_CHECKING:
    from barriernet.filter_layer import FilterQPLayer
    from barriernet.safety_filter import SafetyFilter

__all__ = [
    # data (lnn_control.learn.data), re-exported: one import for training code
    "DataError",
    "Episode",
    "episode_from_bag",
    "load_csv",
    "load_npz",
    "load_recordings",
    "split_episodes",
    "NormStats",
    "norm_stats",
    # the fit
    "MODEL_KINDS",
    "Policy",
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

#: model kinds of :func:`build_policy`: liquid (``ncp``, ``dense``, ``conv_ncp``: a conv head on the
#: observation's image in front of the NCP, :class:`lnn_control.nn.vision.VisionPolicy`) and baselines
MODEL_KINDS: tuple[str, ...] = ("ncp", "dense", "conv_ncp", "conv_lstm", "conv_mlp", *BASELINES)
#: camera kinds: the same conv head in front of an NCP, an LSTM or a feed-forward MLP (comparison)
VISION_KINDS: tuple[str, ...] = ("conv_ncp", "conv_lstm", "conv_mlp")
#: what :func:`train_policy` trains (a conv_ncp model is a VisionPolicy with the same interface)
Policy = LiquidPolicy | BaselinePolicy


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of :func:`train_policy`.

    model: one of :data:`MODEL_KINDS`: ``ncp`` (liquid cell on an AutoNCP wiring), ``dense``
    (fully connected liquid cell of ``units`` neurons, linear read-out), ``lstm`` / ``gru`` /
    ``mlp`` (:mod:`lnn_control.nn.baselines`, ``units`` hidden units; no gain head);
    cell: ``cfc`` | ``ltc`` (liquid kinds); units: neurons of the AutoNCP wiring (> n_outputs + n_gains + 2);
    sparsity: its synapse sparsity in [0.1, 1); wiring_seed: seed of its synapse draw;
    synapses: wired CfC synapses, ``ncps`` (as ncps 1.0.1: dense time gates and intra-layer
    recurrence, more capacity) or ``wiring`` (only the wiring's synapses);
    readout: ``linear`` (a Linear map from the motor neurons to the outputs: wired CfC states are
    bounded by tanh to +-1, i.e. +-1 std of the commands, too narrow for torques) or ``motor``
    (the motor neurons are the outputs); motor: motor neurons with the linear readout (0: one per
    output; more widen the wiring's last layer, which otherwise bottlenecks the map to the outputs);
    backbone_units: CfC backbone width (dense CfC only; a wired CfC has none); epochs;
    steps: optimiser-step budget; when > 0 exactly this many steps run (as many epochs as that
    takes, the last one cut short; ``epochs`` and ``patience`` are then ignored), the same for
    every model kind;
    window: truncated-BPTT window (steps); batch: windows per step; lr; weight_decay (Adam);
    patience: epochs without validation improvement before stopping; val_fraction: share of
    episodes held out; seed: split, initialisation and batch order; input_noise: std of Gaussian
    noise added to the normalised observations while training (augmentation, 0 = off);
    n_gains / gain_scale: BarrierNet class-K gain head (``gain_scale * sigmoid``); progress: tqdm bar.
    """

    model: str = "ncp"
    cell: str = "cfc"
    units: int = 19
    sparsity: float = 0.5
    wiring_seed: int = 0
    synapses: str = "ncps"
    readout: str = "linear"
    motor: int = 0
    backbone_units: int = 128
    epochs: int = 50
    steps: int = 0
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
    #: conv_ncp: the observation's image layout (``ObservationMap.images[0]``) and optional
    #: ConvHead settings (``head``: channels, kernels, strides, features_per_map)
    image: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS}, got {self.model!r}")
        if self.model in BASELINES and self.n_gains:
            raise ValueError(
                f"n_gains: the {self.model} baseline has no gain head; use model 'ncp' or 'dense'"
            )
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0 (0: the budget is epochs), got {self.steps}")
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
) -> Policy:
    """A fresh policy of kind ``cfg.model`` with ``stats`` inside (initialised from torch's RNG).

    ``ncp``: :class:`LiquidPolicy` on an AutoNCP wiring with ``n_outputs + n_gains`` motor
    neurons (``cfg.motor`` with the linear read-out); commands are de-normalised with the command
    statistics, gains are ``gain_scale * sigmoid`` (see :mod:`lnn_control.nn.policy`). ``dense``:
    a fully connected liquid cell of ``cfg.units`` neurons with a linear read-out. ``lstm`` /
    ``gru`` / ``mlp``: the baselines of :mod:`lnn_control.nn.baselines` with ``cfg.units`` hidden units.
    """
    names: dict[str, Any] = {
        "input_names": None if input_names is None else list(input_names),
        "output_names": None if output_names is None else list(output_names),
    }
    policy: Policy
    if cfg.model in VISION_KINDS:
        policy = _vision_policy(cfg, n_inputs, n_outputs, names)
    elif cfg.model in BASELINES:
        policy = BASELINES[cfg.model](n_inputs, n_outputs, cfg.units, **names)
    else:
        n_out = n_outputs + cfg.n_gains
        extra: dict[str, Any] = (
            {"backbone_units": cfg.backbone_units, "synapses": cfg.synapses} if cfg.cell == "cfc" else {}
        )
        head: dict[str, Any] = {
            "n_gains": cfg.n_gains,
            "gain_scale": cfg.gain_scale,
            "gain_names": None if gain_names is None else list(gain_names),
        }
        if cfg.model == "dense":
            extra.pop("synapses", None)
            policy = LiquidPolicy(
                n_inputs, cfg.cell, None, cfg.units, proj_size=n_out, **names, **head, **extra
            )
        else:
            n_motor = max(n_out, cfg.motor) if cfg.readout == "linear" else n_out
            if cfg.units < n_motor + 3:
                raise ValueError(
                    f"units must be >= motor neurons + 3 = {n_motor + 3} for an NCP wiring, got {cfg.units}"
                )
            wiring = AutoNCP(cfg.units, n_motor, sparsity=cfg.sparsity, seed=cfg.wiring_seed)
            proj = n_out if cfg.readout == "linear" else None
            policy = LiquidPolicy(n_inputs, cfg.cell, wiring, proj_size=proj, **names, **head, **extra)
    policy.set_normalization(stats.input_mean, stats.input_std, stats.output_mean, stats.output_std)
    return policy


def _vision_policy(cfg: TrainConfig, n_inputs: int, n_outputs: int, names: dict[str, Any]) -> Any:
    """conv_ncp: a :class:`~lnn_control.nn.vision.VisionPolicy` on the flat observation (conv_lstm,
    conv_mlp: :class:`~lnn_control.nn.vision.ConvBaseline` with the same head) (the image
    at ``cfg.image["offset"]``, in the extractor's scale, mapped to [-1, 1] inside the head), its
    per-map weights initialised 8x torch's default scale."""
    from lnn_control.nn.vision import VisionPolicy

    im = cfg.image
    if not im:
        raise ValueError(
            "model conv_ncp needs TrainConfig.image: the observation's image layout (an image feature)"
        )
    if cfg.n_gains:
        raise ValueError("n_gains: conv_ncp has no BarrierNet gain head yet")
    scale, off = float(im.get("scale", 1 / 255)), float(im.get("offset_value", 0.0))
    head = {
        "height": int(im["height"]),
        "width": int(im["width"]),
        "in_channels": int(im["channels"]),
        "pixel_scale": 2.0 / (255.0 * scale),  # (x - off) / scale = pixel 0..255 -> [-1, 1]
        "pixel_offset": -1.0 - 2.0 * off / (255.0 * scale),
        **dict(im.get("head") or {}),
    }
    n_motor = max(n_outputs, cfg.motor)
    extra = {"backbone_units": cfg.backbone_units, "synapses": cfg.synapses} if cfg.cell == "cfc" else {}
    inputs = {"n_inputs": n_inputs, "image_offset": int(im["offset"])}
    if cfg.model != "conv_ncp":  # comparison baselines: the same head, an LSTM / MLP core of cfg.units
        from lnn_control.nn.vision import ConvBaseline

        base = ConvBaseline(
            head, cfg.model[5:], cfg.units, inputs, n_outputs, names["input_names"], names["output_names"]
        )
        with torch.no_grad():
            base.head.map_weight.mul_(8.0)
        return base
    policy = VisionPolicy(
        head,
        cfg.cell,
        cfg.units,
        n_motor,
        wiring_seed=cfg.wiring_seed,
        inputs={"n_inputs": n_inputs, "image_offset": int(im["offset"])},
        sparsity=cfg.sparsity,
        input_names=names["input_names"],
        output_names=names["output_names"],
        proj_size=n_outputs,
        **extra,
    )
    # the per-map linear layers start 8x torch's default bound, so the 32 features start O(1)
    # rather than ~0.1 (measured on the lane data: normalised omega error 0.42 -> 0.001 after 30
    # epochs with lr 1e-2, both on the same 24 expert episodes)
    with torch.no_grad():
        policy.head.map_weight.mul_(8.0)
    return policy


def normalized_error(model: Policy, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the commands ``y[..., :n_commands]`` in normalised units (dimensionless)."""
    k = model.n_commands
    return (((y[..., :k] - target) / model.output_std) ** 2).mean()


@torch.no_grad()
def evaluate(model: Policy, episodes: Sequence[Episode]) -> float:
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
    model: Policy,
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
    model: Policy,
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
def predict(model: Policy, episode: Episode) -> np.ndarray:
    """Open-loop outputs (T, n_outputs) of ``model`` over ``episode`` from a zero state."""
    dtype = model.input_mean.dtype
    y, _ = model(
        torch.as_tensor(episode.obs, dtype=dtype)[None], torch.as_tensor(episode.dt, dtype=dtype)[None]
    )
    return y[0].double().numpy()


@dataclasses.dataclass
class TrainResult:
    """Trained model (best checkpoint loaded), per-epoch losses, best epoch, split, optimiser steps run."""

    model: Policy
    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int
    train_episodes: list[Episode]
    val_episodes: list[Episode]
    #: BarrierNet training: samples per epoch whose QP was infeasible (dropped from the loss)
    infeasible: list[int] = dataclasses.field(default_factory=list)
    val_infeasible: list[int] = dataclasses.field(default_factory=list)
    #: optimiser steps taken (``TrainConfig.steps`` when that budget was set)
    steps: int = 0


def train_policy(
    episodes: Sequence[Episode],
    cfg: TrainConfig,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    gain_names: Sequence[str] | None = None,
    init: Policy | None = None,
    split: tuple[Sequence[Episode], Sequence[Episode]] | None = None,
    safety_filter: SafetyFilter | None = None,
) -> TrainResult:
    """Behaviour cloning with truncated BPTT, any model kind; returns the best-validation checkpoint.

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

        if cfg.model in BASELINES:
            raise ValueError(f"safety_filter: BarrierNet training needs a liquid policy, not {cfg.model!r}")

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
    x, d, y = windows(train_eps, cfg.window)
    tw: list[torch.Tensor] = []
    val_terms: list[tuple[torch.Tensor, ...]] = []
    if layer is not None:
        per_ep = [filter_terms(layer, e) for e in train_eps]
        tw = [torch.as_tensor(window_stack([p[j].numpy() for p in per_ep], cfg.window)) for j in range(4)]
        val_terms = [filter_terms(layer, e) for e in val_eps]
    bad_hist: list[int] = []
    val_bad_hist: list[int] = []
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # budget: epochs, or exactly cfg.steps optimiser steps (the cosine spans the epochs they take)
    epochs = cfg.epochs if cfg.steps == 0 else math.ceil(cfg.steps / math.ceil(x.shape[0] / cfg.batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=cfg.lr * 0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = BestCheckpoint(cfg.patience)
    tr_hist: list[float] = []
    va_hist: list[float] = []
    noise_scale = cfg.input_noise * model.input_std  # noise in normalised units -> raw units
    label = cfg.model if cfg.model in BASELINES else f"{cfg.cell}-{cfg.model}"
    bar = tqdm(range(epochs), desc=f"train {label}", disable=not cfg.progress, unit="epoch")
    n_steps = 0
    for epoch in bar:
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        run, nb, n_bad = 0.0, 0, 0
        for i in range(0, x.shape[0], cfg.batch):
            if cfg.steps and n_steps >= cfg.steps:
                break
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
            n_steps += 1
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
        if best.update(epoch, va, model) and not cfg.steps:  # a steps budget runs in full
            break
    assert best.state is not None
    model.load_state_dict(best.state)
    model.eval()
    res = TrainResult(model, tr_hist, va_hist, best.best_epoch, train_eps, val_eps, steps=n_steps)
    if layer is not None:
        res.infeasible, res.val_infeasible = bad_hist, val_bad_hist
    return res
