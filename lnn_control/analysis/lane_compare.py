"""Camera policies compared on held-out tracks (issue 14 item 6): conv+NCP-19 vs conv+LSTM vs a
feed-forward CNN, each the same conv head, trained on the same data with the same budget.

Training (one seeded run per model, ``lnn_control.learn.training.train_policy``): the recipe's
behaviour-cloning stage for every model alike, no DAgger (``models/lane.npz`` adds 2 DAgger
rounds): 24 expert episodes with the privileged pose and the recipe's action disturbance on
training tracks (seeds 30000..30023), 30 epochs, lr 1e-2, windows of 32, input-noise augmentation
0.05, seed 0. Models: ``conv_ncp`` (CfC on a 19-neuron NCP), ``conv_lstm`` (LSTM, 64 units),
``conv_mlp`` (conv head -> 64-64 tanh -> commands: no memory).

Evaluation (``ClosedLoop``, the deployed step, held-out episodes from seed 100000, filter off so
the policy itself is measured, and on): conditions ``clean``, ``noise_high`` (odometry 0.05 and
25 grey levels of pixel noise), ``irregular_wide`` (control period x U(0.2, 5)), ``distractors``
(12 boxes off the road). Per model and condition: laps without a departure (Wilson 95 %
interval), departures, mean |lane-centre error| (m), parameters, and microseconds per control
step (median of the runtime stepper over one recorded observation).

``python -m lnn_control.analysis.lane_compare --episodes 16 --out out/lane_compare``
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
from typing import Any

import numpy as np

__all__ = ["main", "train_models"]

MODELS = (("conv_ncp", 19), ("conv_lstm", 64), ("conv_mlp", 64))
CONDITIONS = ("clean", "noise_high", "irregular_wide", "distractors")


def train_models(log: Any = print) -> dict[str, Any]:
    """The three models trained on the same expert episodes (module docstring)."""
    from lnn_control.config import config_path, load_observation_config
    from lnn_control.learn import recipe as R
    from lnn_control.learn import training

    cfg = config_path("lane")
    om = load_observation_config(cfg)
    t = time.time()
    eps = R.expert_episodes(
        "lane", cfg, [R.NOISE_SEED + i for i in range(24)], action_noise=0.1, filter_in_loop=True
    )
    log(f"expert episodes: {len(eps)} ({sum(len(e.dt) for e in eps)} steps) in {time.time() - t:.0f} s")
    out = {}
    for kind, units in MODELS:
        tc = training.TrainConfig(
            model=kind, cell="cfc", units=units, window=32, batch=16, lr=1e-2, epochs=30, patience=30,
            seed=0, wiring_seed=0, input_noise=0.05, image=om.images[0], progress=False,
        )  # fmt: skip
        t = time.time()
        fit = training.train_policy([], tc, om.names, ["v", "omega"], split=(eps, []))
        n_par = sum(p.numel() for p in fit.model.parameters())
        log(f"{kind}: {n_par} parameters, train loss {fit.train_loss[-1]:.4f}, {time.time() - t:.0f} s")
        out[kind] = fit.model
    return out


def _centre_error(track: Any, gt: np.ndarray, fields: tuple[str, ...]) -> float:
    xy = gt[:, [fields.index("x"), fields.index("y")]]
    return float(np.mean([abs(track.project(p)[1]) for p in xy[::2]]))


def evaluate(
    models: dict[str, Any], episodes: int, seed: int, filters: tuple[bool, ...], log: Any = print
) -> list:
    from lnn_control.config import config_path
    from lnn_control.sim import episodes as E
    from lnn_control.sim.lane import LaneEnv, episode_track_seed
    from lnn_control.sim.rollout import ClosedLoop, Condition, condition

    rows = []
    fields = E.GROUND_TRUTH_FIELDS["lane"]
    for kind, model in models.items():
        stepper = model.double().runtime() if kind == "conv_ncp" else model.runtime()
        n_par = int(sum(p.numel() for p in model.parameters()))
        for filt in filters:
            for cname in CONDITIONS:
                cond = Condition(filter=filt) if cname == "distractors" else condition(cname, "lane", filt)
                loop = ClosedLoop("lane", config_path("lane"), condition=cond)
                t0 = time.time()
                ok = dep = 0
                errs = []
                for s in range(seed, seed + episodes):
                    ts = episode_track_seed(s)
                    if cname == "distractors":  # this loop's scene of the track (its own loop per condition)
                        loop._lane_envs[ts] = LaneEnv(ts, distractors=12, seed=s)
                    r = loop.run(stepper, s, hold=0.0)
                    ok += int(r.score.reached and not r.score.violated)
                    dep += int(r.score.violated)
                    errs.append(_centre_error(loop.env.track, r.ground_truth, fields))
                obs = r.episode.obs[len(r.episode.obs) // 2]
                stepper.reset()
                times = []
                for _ in range(200):
                    a = time.perf_counter()
                    stepper.step(obs, 0.05)
                    times.append(time.perf_counter() - a)
                lo, hi = E.wilson(ok, episodes)
                row = {
                    "model": kind, "filter": "on" if filt else "off", "condition": cname,
                    "episodes": episodes,
                    "laps": ok, "laps_ci95": [lo, hi], "departures": dep,
                    "centre_error_m": float(np.mean(errs)), "parameters": n_par,
                    "us_per_step": float(np.median(times) * 1e6),
                }  # fmt: skip
                rows.append(row)
                log(f"{kind} filter {row['filter']} {cname}: laps {ok}/{episodes} [{lo:.2f}, {hi:.2f}], "
                    f"departures {dep}, centre error {row['centre_error_m']:.3f} m, "
                    f"{row['us_per_step']:.0f} us/step ({time.time() - t0:.0f} s)")  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | params | filter | condition | laps [95 % CI] | departures | centre error (m) | us/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["laps_ci95"]
        lines.append(
            f"| {r['model']} | {r['parameters']} | {r['filter']} | {r['condition']} | "
            f"{r['laps']}/{r['episodes']} "
            f"[{100 * lo:.0f}, {100 * hi:.0f}] | {r['departures']} | {r['centre_error_m']:.3f} | "
            f"{r['us_per_step']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lnn_control.analysis.lane_compare", description=__doc__.split("\n")[0]
    )
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=100_000, help="first held-out episode seed")
    p.add_argument("--filter", choices=("off", "on", "both"), default="off")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/lane_compare"))
    a = p.parse_args(argv)
    if a.seed < 100_000:
        print("error: --seed must be >= 100000 (held-out tracks)", file=sys.stderr)
        return 2
    from lnn_control import strict_json

    a.out.mkdir(parents=True, exist_ok=True)
    models = train_models(lambda m: print(m, flush=True))
    filters = {"off": (False,), "on": (True,), "both": (False, True)}[a.filter]
    rows = evaluate(models, a.episodes, a.seed, filters, lambda m: print(m, flush=True))
    text = table(rows)
    strict_json.write(a.out / "summary.json", {"rows": rows, "seeds": [a.seed, a.seed + a.episodes - 1]})
    (a.out / "table.md").write_text(text + "\n")
    print(text)
    return 0 if rows and all(math.isfinite(r["centre_error_m"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
