"""``lnn-control study`` (alias ``lnn-control compare``): the command line of
:mod:`lnn_control.analysis.study` (split out of it to keep that module short)."""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

__all__ = ["main"]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def main(argv: list[str] | None = None) -> int:
    """``lnn-control study`` (and ``lnn-control compare``); 0 ok, 2 bad input."""
    from lnn_control.analysis.study import HELD_OUT, MODELS, StudySpec, run_study

    p = argparse.ArgumentParser(
        prog="lnn-control study",
        description="Liquid networks vs LSTM/GRU/MLP: trained by the one recipe, evaluated by the one "
        "closed loop under noise, drops, irregular periods and out-of-distribution conditions (Dask).",
    )
    d = StudySpec()
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/compare"), help="report + store/")
    p.add_argument("--robots", default=",".join(d.robots), help="diff_drive,arm")
    p.add_argument("--models", default=",".join(d.models), help=f"some of {','.join(MODELS)}")
    p.add_argument("--seeds", type=int, default=len(d.seeds), help="training seeds 0..N-1")
    p.add_argument("--conditions", default=",".join(d.conditions))
    p.add_argument("--episodes", type=int, default=d.episodes, help="held-out episodes per cell")
    p.add_argument("--eval-seed", type=int, default=d.eval_seed, help=f"first held-out seed (>= {HELD_OUT})")
    for name in (
        "noise_episodes",
        "steps",
        "batch",
        "window",
        "dagger_rounds",
        "dagger_episodes",
        "dagger_epochs",
        "select_episodes",
    ):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--action-noise", type=float, default=d.action_noise)
    p.add_argument("--max-time", type=float, default=None, help="episode limit (s), default the robot's")
    p.add_argument("--address", default=None, help="a running Dask scheduler (tcp://host:8786)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (no --address)")
    p.add_argument("--report-only", action="store_true", help="write the report from the store; run nothing")
    p.add_argument("--note", default="", help="a line for the report (e.g. why the budget is reduced)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    from lnn_control.analysis import study_report

    try:
        spec = StudySpec(
            robots=_csv(a.robots),
            models=_csv(a.models),
            seeds=tuple(range(a.seeds)),
            conditions=_csv(a.conditions),
            episodes=a.episodes,
            eval_seed=a.eval_seed,
            noise_episodes=a.noise_episodes,
            action_noise=a.action_noise,
            steps=a.steps,
            batch=a.batch,
            window=a.window,
            lr=a.lr,
            dagger_rounds=a.dagger_rounds,
            dagger_episodes=a.dagger_episodes,
            dagger_epochs=a.dagger_epochs,
            select_episodes=a.select_episodes,
            max_time=a.max_time,
        )
        if a.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {a.workers}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = list(argv if argv is not None else sys.argv[1:])
    if "--note" in args[:-1]:  # the note is printed on its own
        i = args.index("--note")
        del args[i : i + 2]
    command = "lnn-control study " + " ".join(args)
    run: dict[str, Any] = {"submitted": [], "skipped": [], "wall_s": 0.0}
    if not a.report_only:
        try:
            run = run_study(
                spec,
                a.out,
                a.address,
                a.workers,
                progress=not a.no_progress,
                on_result=lambda k, r: study_report.write(spec, a.out, command, a.note),
            )
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    paths = study_report.write(spec, a.out, command, a.note, running=not a.report_only)
    if not a.report_only:
        study_report.record_run(a.out, command, run["wall_s"])
    print(
        f"{len(run['submitted'])} jobs run, {len(run['skipped'])} found done, {run['wall_s']:.0f} s; "
        f"wrote {', '.join(str(v) for v in paths.values())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
