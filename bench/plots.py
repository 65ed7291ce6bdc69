"""Plots of benchmark rows (matplotlib, Agg): scaling curves and same-run speedups.

- One figure per distinct ``row["plot"]["figure"]`` (rows from ``bench.bench_scaling``):
  median latency (with a p99 band) of ours and of the reference against ``plot["x"]``,
  log-log, written as ``scaling_<figure>.png``.
- ``speedups.png``: every row that has a same-run reference, speedup = reference median /
  ours median on a log axis, with the 1x line; missed targets drawn in red.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): no display needed

__all__ = ["make_plots", "plot_scaling", "plot_speedups"]

_TITLES = {
    "step_vs_neurons": "Control step latency vs neuron count (batch 1)",
    "qp_vs_size": "QP solve latency vs problem size",
    "layer_vs_batch": "Differentiable QP layer, forward + backward, vs batch",
}


def plot_scaling(rows: Sequence[dict[str, Any]], figure: str, path: Path) -> Path:
    """Median (line) and p99 (band) vs ``plot['x']`` for ours and the reference.

    Args:
        rows: rows sharing ``row["plot"]["figure"] == figure``; times in seconds.
        figure: the figure key; its title comes from ``_TITLES`` (else the key).
        path: PNG file to write.
    """
    pts = sorted(rows, key=lambda r: r["plot"]["x"])
    if not pts:
        raise ValueError(f"plot_scaling: no rows for figure {figure!r}")
    xs = [r["plot"]["x"] for r in pts]
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=110)
    series: list[tuple[str, str, str]] = []
    if any(not r["name"].startswith("[ref]") for r in pts):
        series.append(("ours", "ours_median_s", "ours_p99_s"))
    if any(r["ref_median_s"] is not None for r in pts):
        series.append((pts[0]["ref_name"] or "reference", "ref_median_s", "ref_p99_s"))
    if not series:  # reference-only sweep: the measured column holds the reference
        label = pts[0]["name"].removeprefix("[ref] ").split(" ")[0]
        series.append((f"{label} (reference)", "ours_median_s", "ours_p99_s"))
    for label, med, p99 in series:
        keep = [r for r in pts if r[med] is not None]
        x = [r["plot"]["x"] for r in keep]
        m = [r[med] * 1e3 for r in keep]
        hi = [r[p99] * 1e3 for r in keep]
        (line,) = ax.plot(x, m, marker="o", label=f"{label} median")
        ax.fill_between(x, m, hi, color=line.get_color(), alpha=0.2, label=f"{label} median..p99")
        for xi, mi, r in zip(x, m, keep):
            if figure == "qp_vs_size":  # x alone does not say which (n, m): label the points
                ax.annotate(
                    r["name"].split("QP ")[-1],
                    (xi, mi),
                    fontsize=7,
                    xytext=(3, 4),
                    textcoords="offset points",
                )
    if pts[0]["plot"].get("log_x", True):
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(pts[0]["plot"]["x_label"])
    ax.set_ylabel("time per call (ms, log)")
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
    fig, ax = plt.subplots(figsize=(8.0, 0.32 * len(rs) + 1.5), dpi=110)
    labels = [f"{r['name']}  vs {r['ref_name']}" for r in rs]
    colors = ["tab:red" if r["passed"] is False else "tab:blue" for r in rs]
    ax.barh(range(len(rs)), [r["speedup"] for r in rs], color=colors)
    ax.set_yticks(range(len(rs)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("speedup = reference median / ours median (log; red: missed target)")
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
