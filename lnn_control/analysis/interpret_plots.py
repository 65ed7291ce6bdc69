"""The pictures of ``lnn-control inspect`` (:mod:`lnn_control.analysis.interpret`): neuron
activity, the wiring graph, input saliency and the behaviour tree (split out of ``interpret.py``)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lnn_control.analysis.interpret import ActivityTrace, _units, _wiring_of, neuron_layers

__all__ = ["plot_activity", "plot_behaviour_tree", "plot_saliency", "plot_wiring"]


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


def plot_behaviour_tree(trees: Any, path: str | pathlib.Path) -> pathlib.Path:
    """The command-neuron tree of :func:`lnn_control.analysis.behaviour_tree.fit`, with both
    trees' held-out accuracies in the title."""
    from sklearn.tree import plot_tree

    plt = _plt()
    path = pathlib.Path(path)
    t = trees.neuron_tree
    fig, ax = plt.subplots(figsize=(max(8.0, 2.2 * t.get_n_leaves()), 2.0 + 1.6 * t.get_depth()))
    present = [trees.classes[int(c)] for c in t.classes_]
    plot_tree(t, feature_names=trees.neuron_names, class_names=present, filled=True, impurity=False, ax=ax)
    ax.set_title(
        f"{trees.robot}: manoeuvre from command neurons (depth {trees.depth}); held-out accuracy "
        f"{trees.neuron_accuracy:.2f} vs raw inputs {trees.raw_accuracy:.2f}, "
        f"majority {trees.majority_accuracy:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
