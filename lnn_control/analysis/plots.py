"""Shared plotting helpers (matplotlib, Agg backend): loss curves and open-loop rollouts.

Every helper writes one PNG and returns its path; figures are closed so long runs do not leak.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: CI and the demo have no display
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["loss_curves", "rollouts_vs_demos"]


def loss_curves(
    path: str | pathlib.Path, train: Sequence[float], val: Sequence[float], best_epoch: int
) -> pathlib.Path:
    """Train / validation loss per epoch (normalised MSE, log scale) with the kept epoch marked."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ep = np.arange(1, len(train) + 1)
    ax.semilogy(ep, train, label="train", color="tab:blue")
    ax.semilogy(ep, val, label="validation", color="tab:orange")
    if 0 <= best_epoch < len(val):
        ax.axvline(best_epoch + 1, color="0.5", ls="--", lw=1)
        ax.plot(
            best_epoch + 1, val[best_epoch], "o", color="tab:orange", label=f"kept (epoch {best_epoch + 1})"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("normalised MSE")
    ax.set_title("Behaviour cloning loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def rollouts_vs_demos(
    path: str | pathlib.Path,
    demos: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    times: Sequence[np.ndarray],
    names: Sequence[str],
    max_episodes: int = 3,
) -> pathlib.Path:
    """Open-loop policy commands vs the demonstrated ones: one row per command, one colour per episode.

    Args:
        demos, predictions: per episode (T, n_out) commands in their units.
        times: per episode (T,) seconds from the episode start.
        names: n_out command names for the axis labels.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_out = len(names)
    fig, axes = plt.subplots(n_out, 1, figsize=(7, 1.9 * n_out + 0.6), dpi=120, sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (d, p, t) in enumerate(list(zip(demos, predictions, times, strict=True))[:max_episodes]):
        c = colours[i % len(colours)]
        for j in range(n_out):
            ax = axes[j, 0]
            ax.plot(t, d[:, j], color=c, lw=1.6, alpha=0.45, label="demonstration" if i == 0 else None)
            ax.plot(t, p[:, j], color=c, lw=1.0, ls="--", label="policy (open loop)" if i == 0 else None)
    for j, n in enumerate(names):
        axes[j, 0].set_ylabel(n)
        axes[j, 0].grid(True, alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("Validation episodes: policy vs demonstrations")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
