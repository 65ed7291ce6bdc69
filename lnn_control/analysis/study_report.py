"""The study's report from its store (:mod:`lnn_control.analysis.study`): ``study.md`` (tables),
``study.json`` (strict JSON, every cell and episode count), ``study_conditions.png`` (success vs
condition with 95 % intervals) and ``study_params.png`` (success vs parameter count).

A cell is (robot, model, condition). Its success rate pools every finished (seed, episode); the
Wilson 95 % interval treats episodes as independent; with >= 2 finished seeds the bootstrap 95 %
interval resamples seeds, then episodes within each seed (2000 draws, seeded), so the spread
between training seeds is in it. A cell lists how many of its seeds are done; cells with none
are marked "not run".
"""

from __future__ import annotations

import datetime
import pathlib
import time
from typing import Any

import numpy as np

from lnn_control import strict_json
from lnn_control.analysis.study import MODELS, Store, StudySpec, eval_key, job_keys, train_key
from lnn_control.sim import episodes as E

__all__ = ["bootstrap_ci", "cells", "markdown", "write"]

_T0 = time.time()


def bootstrap_ci(per_seed: list[list[bool]], draws: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """95 % interval of the pooled success rate by resampling seeds, then episodes within each
    (None with fewer than 2 seeds)."""
    if len(per_seed) < 2:
        return None
    rng = np.random.default_rng(seed)
    arrs = [np.asarray(x, dtype=float) for x in per_seed]
    stats = np.empty(draws)
    for b in range(draws):
        pick = rng.integers(len(arrs), size=len(arrs))
        stats[b] = np.mean(np.concatenate([rng.choice(arrs[i], size=arrs[i].size) for i in pick]))
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return float(lo), float(hi)


def cells(spec: StudySpec, root: str | pathlib.Path) -> dict[str, Any]:
    """Every (robot, model, condition) cell and every (robot, model) row from the store."""
    store = Store(root)
    trains, _ = job_keys(spec)
    rows: dict[str, Any] = {}
    for r, m, s in trains:
        row = rows.setdefault(
            f"{r}/{m}",
            {"robot": r, "model": m, "label": MODELS[m]["label"], "trained_seeds": [], "cells": {}},
        )
        k = train_key(r, m, s)
        if store.has(k):
            t = store.get(k)
            row["trained_seeds"].append(s)
            for f in ("parameters", "live_parameters", "stepper", "units"):
                if f in t:
                    row[f] = t[f]
            row["units"] = t["recipe"]["units"]
            row.setdefault("stepper_us_per_seed", []).append(t["stepper_us"])
            row.setdefault("train_wall_s", []).append(t["train_wall_s"])
            row.setdefault("optimiser_steps", []).append(t["optimiser_steps"])
    for row in rows.values():
        us = row.get("stepper_us_per_seed")
        row["stepper_us"] = float(np.median(us)) if us else None
        for c in spec.conditions:
            per_seed: list[list[bool]] = []
            viol = 0
            seeds_done = []
            for s in spec.seeds:
                k = eval_key(row["robot"], row["model"], s, c)
                if store.has(k):
                    e = store.get(k)
                    per_seed.append([bool(x["success"]) for x in e["per_episode"]])
                    viol += int(e["violated"]["count"])
                    seeds_done.append(s)
            n = sum(len(x) for x in per_seed)
            k_succ = sum(sum(x) for x in per_seed)
            lo, hi = E.wilson(k_succ, n)
            row["cells"][c] = {
                "seeds_done": seeds_done,
                "seeds_planned": len(spec.seeds),
                "episodes": n,
                "success": k_succ,
                "rate": k_succ / n if n else None,
                "wilson95": [lo, hi] if n else None,
                "bootstrap95": bootstrap_ci(per_seed),
                "per_seed_rate": [float(np.mean(x)) for x in per_seed],
                "episodes_with_violation": viol,
            }
    return rows


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}"


def _cell(c: dict[str, Any]) -> str:
    if not c["episodes"]:
        return "not run"
    lo, hi = c["bootstrap95"] or c["wilson95"]
    mark = (
        ""
        if len(c["seeds_done"]) == c["seeds_planned"]
        else f" ({len(c['seeds_done'])}/{c['seeds_planned']} seeds)"
    )
    return f"{_pct(c['rate'])} [{_pct(lo)}, {_pct(hi)}]{mark}"


def markdown(spec: StudySpec, rows: dict[str, Any], meta: dict[str, Any]) -> str:
    """The report as markdown."""
    lines = [
        "# What liquid networks buy: the study",
        "",
        f"Generated {meta['generated']} by `{meta['command']}` (wall time so far {meta['wall_s']:.0f} s"
        f" over {meta['runs']} run(s) of the study).",
    ]
    if meta.get("note"):
        lines += ["", f"**{meta['note']}**"]
    lines += [
        "",
        f"Budget per model and seed (the same for every model): {spec.noise_episodes} expert episodes "
        f"(DART noise {spec.action_noise}), {spec.steps} optimiser steps of {spec.batch} windows x "
        f"{spec.window} steps (lr {spec.lr}), {spec.dagger_rounds} DAgger rounds x {spec.dagger_episodes} "
        f"rollouts through the filter ({spec.dagger_epochs} epochs each), best round by "
        f"{spec.select_episodes} closed-loop episodes (seeds < 100000). Seeds {list(spec.seeds)}; "
        f"{spec.episodes} held-out episodes per (model, seed, condition), seeds {spec.eval_seed}.."
        f"{spec.eval_seed + spec.episodes - 1}, through the safety filter.",
        "",
        "Cells: success % [95 % interval] pooled over the finished seeds' episodes; the interval is the "
        "seed-then-episode bootstrap with >= 2 seeds, else Wilson (episodes only). `(k/N seeds)`: only k "
        "of the N planned seeds are done; `not run`: nothing finished. Stepper: microseconds per "
        "`step` of the deployed stepper (median, on a shared, loaded machine: compare within the table).",
        "",
    ]
    for robot in spec.robots:
        head = "| model | units | parameters (live) | stepper us/step | " + " | ".join(spec.conditions) + " |"
        lines += [f"## {robot}", "", head, "|" + "---|" * (head.count("|") - 1)]
        for row in rows.values():
            if row["robot"] != robot:
                continue
            params = f"{row['parameters']} ({row['live_parameters']})" if "parameters" in row else "n/a"
            us = "n/a" if row["stepper_us"] is None else f"{row['stepper_us']:.0f}"
            lines.append(
                f"| {row['label']} | {row.get('units', 'n/a')} | {params} | {us} | "
                + " | ".join(_cell(row["cells"][c]) for c in spec.conditions)
                + " |"
            )
        lines.append("")
    lines += [
        "Conditions (`lnn_control.sim.rollout.condition`): clean; noise_low / noise / noise_high: "
        "Gaussian sensor noise (diff_drive 0.01 / 0.03 / 0.1 m, rad; arm 0.005 / 0.02 / 0.05); drop: 30 % "
        "of sensor messages lost; irregular / irregular_wide: each control period x U(0.5, 2) / "
        "U(0.2, 5); ood: diff_drive the mirrored room (obstacles at (x, -y): a layout never seen in "
        "training), arm a 0.1 kg payload and 2x joint damping.",
        "",
    ]
    return "\n".join(lines)


def _plots(spec: StudySpec, rows: dict[str, Any], out: pathlib.Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, str] = {}
    for robot in spec.robots:
        rr = [r for r in rows.values() if r["robot"] == robot]
        fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(spec.conditions)), 4.5))
        width = 0.8 / max(1, len(rr))
        for i, row in enumerate(rr):
            xs, ys, lo, hi = [], [], [], []
            for j, c in enumerate(spec.conditions):
                cell = row["cells"][c]
                if cell["rate"] is None:
                    continue
                a, b = cell["bootstrap95"] or cell["wilson95"]
                xs.append(j - 0.4 + (i + 0.5) * width)
                ys.append(100 * cell["rate"])
                lo.append(100 * (cell["rate"] - a))
                hi.append(100 * (b - cell["rate"]))
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=2, label=row["label"])
        ax.set_xticks(range(len(spec.conditions)), spec.conditions, rotation=20)
        ax.set_ylabel("success % (95 % interval)")
        ax.set_ylim(-5, 105)
        ax.set_title(f"{robot}: success by condition ({spec.episodes} held-out episodes per seed)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        p = out / f"study_{robot}_conditions.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files[f"{robot}_conditions"] = str(p)
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for row in rr:
            cell = row["cells"].get("clean") or next(iter(row["cells"].values()))
            if cell["rate"] is None or "live_parameters" not in row:
                continue
            a, b = cell["bootstrap95"] or cell["wilson95"]
            ax.errorbar(
                [row["live_parameters"]],
                [100 * cell["rate"]],
                yerr=[[100 * (cell["rate"] - a)], [100 * (b - cell["rate"])]],
                fmt="o",
                capsize=3,
                label=row["label"],
            )
        ax.set_xscale("log")
        ax.set_xlabel("live parameters")
        ax.set_ylabel("success % on clean episodes (95 % interval)")
        ax.set_ylim(-5, 105)
        ax.set_title(f"{robot}: success vs parameter count")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / f"study_{robot}_params.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files[f"{robot}_params"] = str(p)
    return files


def write(
    spec: StudySpec, out: str | pathlib.Path, command: str, note: str = "", running: bool = True
) -> dict[str, pathlib.Path]:
    """Write ``study.md``, ``study.json`` and the plots into ``out`` from ``out/store``; ``running``:
    this process is a run of the study (its time so far counts in the wall time)."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "store")
    ledger = store.get("runs").get("runs", []) if store.has("runs") else []
    meta = {
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "note": note,
        "wall_s": sum(float(r["wall_s"]) for r in ledger) + ((time.time() - _T0) if running else 0.0),
        "runs": len(ledger) + int(running),
    }
    rows = cells(spec, out / "store")
    files = _plots(spec, rows, out)
    (out / "study.md").write_text(markdown(spec, rows, meta))
    strict_json.write(
        out / "study.json",
        {
            "format": "lnn_control.analysis.study/1",
            "spec": spec.as_dict(),
            "meta": meta,
            "rows": rows,
            "files": files,
        },
    )
    return {
        "md": out / "study.md",
        "json": out / "study.json",
        **{k: pathlib.Path(v) for k, v in files.items()},
    }


def record_run(out: str | pathlib.Path, command: str, wall_s: float) -> None:
    """Append this run's wall time to ``store/runs.json`` (the report sums them)."""
    store = Store(pathlib.Path(out) / "store")
    ledger = store.get("runs").get("runs", []) if store.has("runs") else []
    ledger.append({"command": command, "wall_s": float(wall_s), "ended": time.time()})
    store.put("runs", {"runs": ledger})
