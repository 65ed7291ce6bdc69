"""Closed-loop evaluation of a model file on the built-in simulator (no ROS).

``lnn-control evaluate MODEL --robot R --episodes N --seed S [--filter on|off]
[--condition NAME ...] [--config YAML] [--json]``

Each episode ``S, S+1, ...`` (:func:`lnn_control.sim.episodes.draw`) runs in
:class:`lnn_control.sim.rollout.ClosedLoop`: the deployed control step (observation mapping,
stamps, policy, safety filter of ``config/<robot>.yaml`` or only its actuator box with
``--filter off``, verification, fallback) against the MuJoCo environment, under each named
condition (:data:`lnn_control.sim.rollout.CONDITIONS`). An episode ends at the goal or at the
time limit (a violation does not end it: success and violations are measured apart). Reported
per condition (definitions in :mod:`lnn_control.sim.episodes`): success (goal reached within
the time limit) and safe success (and no violation) with Wilson 95 % intervals, episodes with a
violation (by kind), the minimum ground-truth margin, filter interventions, fallbacks, held
periods and the mean time to the goal.
Training never uses seeds from 100000 on: hold those out for evaluation.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from lnn_control.sim import episodes as E
from lnn_control.sim.models import ROBOTS
from lnn_control.sim.rollout import CONDITIONS, ClosedLoop, condition

__all__ = ["evaluate", "main", "table"]


def evaluate(
    model: str | pathlib.Path,
    robot: str,
    episodes: int,
    seed: int,
    filter: bool = True,
    conditions: Sequence[str] = ("clean",),
    config: str | pathlib.Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` (a model file) on ``episodes`` seeded episodes per condition.

    Returns ``{"model", "robot", "filter", "seeds": [first, last], "conditions": {name:
    episodes.aggregate(...) + "per_episode"}}`` (JSON-able; missing values None).
    """
    from lnn_control.config import config_path
    from lnn_control.runtime.model_file import load_stepper

    if robot not in ROBOTS:
        raise ValueError(f"robot must be one of {ROBOTS}, got {robot!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    cfg = config_path(robot) if config is None else pathlib.Path(config)
    stepper = load_stepper(model)
    out: dict[str, Any] = {
        "model": str(model),
        "robot": robot,
        "config": str(cfg),
        "filter": "on" if filter else "off",
        "seeds": [int(seed), int(seed) + episodes - 1],
        "time_limit_s": E.TIME_LIMIT[robot],
        "conditions": {},
    }
    t0 = time.perf_counter()
    for name in conditions:
        loop = ClosedLoop(robot, cfg, condition=condition(name, robot, filter))
        seeds = range(int(seed), int(seed) + episodes)
        if progress:
            from tqdm import tqdm

            seeds = tqdm(seeds, desc=f"{robot} {name}", unit="episode", file=sys.stderr)  # type: ignore[assignment]
        # no early stop on a violation: success and violations are measured apart
        scores = [loop.run(stepper, s, hold=0.0, stop_after_collision=math.inf).score for s in seeds]
        agg = E.aggregate(scores)
        agg["per_episode"] = [sc.as_dict() for sc in scores]
        out["conditions"][name] = agg
    out["wall_s"] = time.perf_counter() - t0
    return out


def _rate(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}]"


def table(result: dict[str, Any]) -> str:
    """The evaluation as a markdown table (one row per condition)."""
    head = (
        "| condition | episodes | success [95 % CI] | safe success [95 % CI] | violated | by kind "
        "| min margin | interventions | fallbacks | held | mean time (s) |"
    )
    lines = [
        f"{result['robot']}: {result['model']}, filter {result['filter']}, seeds "
        f"{result['seeds'][0]}..{result['seeds'][1]}",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for name, a in result["conditions"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in a["violations_by_kind"].items()) or "-"
        mm = "n/a" if a["min_margin"] is None else f"{a['min_margin']:.3f}"
        mt = "n/a" if a["mean_time_s"] is None else f"{a['mean_time_s']:.2f}"
        lines.append(
            f"| {name} | {a['episodes']} | {_rate(a['success'])} | {_rate(a['safe_success'])} | "
            f"{a['violated']['count']} | {kinds} | {mm} | {a['interventions']} | {a['fallbacks']} | "
            f"{a['held']} | {mt} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``lnn-control evaluate``: 0 on success, 2 on a usage error."""
    p = argparse.ArgumentParser(
        prog="lnn-control evaluate",
        description="Closed-loop evaluation of a model file on the built-in simulator (the deployed step).",
    )
    p.add_argument("model", type=pathlib.Path, help="model file (.npz, lnn_control.runtime.model_file)")
    p.add_argument("--robot", choices=ROBOTS, required=True)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument(
        "--seed", type=int, default=100_000, help="first episode seed (>= 100000: never trained on)"
    )
    p.add_argument("--filter", choices=("on", "off"), default="on", help="off: the actuator box only")
    p.add_argument("--condition", nargs="+", choices=CONDITIONS, default=["clean"])
    p.add_argument(
        "--config", type=pathlib.Path, default=None, help="robot YAML (default config/<robot>.yaml)"
    )
    p.add_argument("--json", action="store_true", help="print strict JSON instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    a = p.parse_args(argv)
    if not a.model.is_file():
        print(f"error: model file {a.model} not found", file=sys.stderr)
        return 2
    try:
        res = evaluate(
            a.model,
            a.robot,
            a.episodes,
            a.seed,
            a.filter == "on",
            a.condition,
            a.config,
            progress=not a.no_progress,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        from lnn_control import strict_json

        print(strict_json.dumps(res, indent=1))
    else:
        print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
