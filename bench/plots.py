"""Plots of benchmark rows (matplotlib, Agg): scaling curves and same-run speedups.

- One figure per distinct ``row["plot"]["figure"]`` (rows from ``bench.bench_scaling``):
  median latency (with a p99 band) of ours and of the reference against ``plot["x"]``,
  log-log, written as ``scaling_<figure>.png``.
- ``speedups.png``: every row that has a same-run reference, speedup = reference median /
  ours median on a log axis, with the 1x line; missed targets drawn in red.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): no display needed
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

__all__ = ["make_plots", "plot_scaling", "plot_speedups"]

_TITLES = {
    "step_vs_neurons": "Control step latency vs neuron count (batch 1)",
    "qp_vs_rows": "QP solve latency vs inequality rows (2 controls)",
    "qp_vs_controls": "QP solve latency vs controls (4 rows)",
    "layer_vs_batch": "Differentiable QP layer, forward + backward, vs batch",
}


def _curves(rows: Sequence[dict[str, Any]]) -> dict[str, dict[float, tuple[float, float]]]:
    """label -> {x: (median_s, p99_s)}: our series, and each reference series once per x."""
    curves: dict[str, dict[float, tuple[float, float]]] = {}
    for r in rows:
        p = r["plot"]
        x = p["x"]
        # The measured columns hold ours, or the reference itself in a reference-only row.
        curves.setdefault(p.get("series", "ours"), {}).setdefault(x, (r["ours_median_s"], r["ours_p99_s"]))
        if r["ref_median_s"] is not None:
            label = p.get("ref_series", r["ref_name"] or "reference")
            curves.setdefault(label, {}).setdefault(x, (r["ref_median_s"], r["ref_p99_s"]))
    return curves


def plot_scaling(rows: Sequence[dict[str, Any]], figure: str, path: Path) -> Path:
    """Median (line) and median..p99 (band) against ``plot['x']`` for every series, log-log.

    Args:
        rows: rows sharing ``row["plot"]["figure"] == figure``; times in seconds. The plot
            dict gives ``x``, ``x_label``, optional ``log_x``, ``series`` (label of the
            measured columns) and ``ref_series`` (label of the reference columns).
        figure: the figure key; its title comes from ``_TITLES`` (else the key).
        path: PNG file to write.
    """
    if not rows:
        raise ValueError(f"plot_scaling: no rows for figure {figure!r}")
    xs = sorted({r["plot"]["x"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=110)
    for label, pts in _curves(rows).items():
        x = sorted(pts)
        med = [pts[v][0] * 1e3 for v in x]
        hi = [pts[v][1] * 1e3 for v in x]
        (line,) = ax.plot(x, med, marker="o", label=f"{label}: median")
        ax.fill_between(x, med, hi, color=line.get_color(), alpha=0.15)
    if rows[0]["plot"].get("log_x", True):
        ax.set_xscale("log")
    ax.set_yscale("log")
    # 1-2-5 ticks with plain numbers: a log axis over one decade otherwise shows one label.
    ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(rows[0]["plot"]["x_label"])
    ax.set_ylabel("time per call, ms (log); band: median..p99")
    ax.set_title(_TITLES.get(figure, figure))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_speedups(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Horizontal bars of same-run speedups (log x); None when no row has a reference."""
    rs = [r for r in rows if r["speedup"] is not None]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(11.0, 0.45 * len(rs) + 1.6), dpi=110)
    # Long benchmark names wrap onto two lines instead of squeezing the bars.
    labels = [textwrap.fill(f"{r['name']} vs {r['ref_name']}", 60) for r in rs]
    colors = ["tab:red" if r["passed"] is False else "tab:blue" for r in rs]
    ax.barh(range(len(rs)), [r["speedup"] for r in rs], color=colors)
    for i, r in enumerate(rs):
        ax.annotate(
            f"{r['speedup']:.3g}x",
            (r["speedup"], i),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(range(len(rs)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("speedup = reference median / ours median, same run (log); red = missed target")
    ax.set_title("Same-run speedups")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def make_plots(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Every scaling figure plus the speedup chart into ``out_dir``; the written paths."""
    out_dir = Path(out_dir)
    out: list[Path] = []
    figures: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        p = r.get("plot")
        if isinstance(p, dict) and "figure" in p:
            figures.setdefault(p["figure"], []).append(r)
    for name, rs in figures.items():
        out.append(plot_scaling(rs, name, out_dir / f"scaling_{name}.png"))
    sp = plot_speedups(rows, out_dir / "speedups.png")
    if sp is not None:
        out.append(sp)
    return out
