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
(12 boxes off the road), and the shifts never seen in training: ``hard`` (held-out tracks of
the hard family, ``make_track(seed, "hard")``: tighter curves, narrower road), ``lighting`` (the
camera's lighting/texture shift, ``LaneEnv(lighting=1.0)``) and ``lighting_mild`` (the same draws
at half strength, 0.5). Per model and condition: laps without a departure (Wilson 95 %
interval), departures, mean |lane-centre error| (m), parameters, and microseconds per control
step (median of the runtime stepper over one recorded observation).

``--models DIR`` loads the three models from DIR when they are there, else trains and saves them
there (:func:`save_models`: conv_ncp in the model-file format, the baselines as float64 tensors
with their constructor config); ``models/lane_compare/`` holds the ones of docs/lane/compare.md.
Rows are written to ``OUT/summary.json`` and ``OUT/table.md`` after every cell.

``python -m lnn_control.analysis.lane_compare --models models/lane_compare --episodes 30``
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from typing import Any

import numpy as np

__all__ = ["main", "train_models"]

#: lighting/texture shift strength of the two lighting conditions (LaneEnv(lighting=...))
LIGHTING_STRENGTH = {"lighting": 1.0, "lighting_mild": 0.5}
MODELS = (("conv_ncp", 19), ("conv_lstm", 64), ("conv_mlp", 64))
CONDITIONS = ("hard", "lighting", "lighting_mild", "clean", "distractors", "noise_high", "irregular_wide")


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


def save_models(models: dict[str, Any], folder: pathlib.Path) -> dict[str, str]:
    """Write the trained models to ``folder``: ``conv_ncp.npz`` in the project's model-file format
    (:func:`lnn_control.runtime.model_file.save_policy`), the baselines as ``conv_lstm.npz`` /
    ``conv_mlp.npz`` (float64 tensors and a ``__config__`` JSON of :class:`ConvBaseline`'s
    arguments; :func:`load_baseline`). Returns {kind: path}."""
    from lnn_control.runtime.model_file import save_policy

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind, model in models.items():
        path = folder / f"{kind}.npz"
        if kind == "conv_ncp":
            out[kind] = save_policy(path, model.double(), comparison="lane_compare")
            continue
        cfg = {
            "head": model.head.get_config(),
            "core": model.core,
            "hidden": int(model.policy.hidden),
            "inputs": {"n_inputs": int(model.n_inputs), "image_offset": int(model.image_offset)},
            "n_outputs": int(model.n_outputs),
            "output_names": list(model.output_names),
        }
        state = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
        np.savez_compressed(path, __config__=np.array(json.dumps(cfg)), **state)
        out[kind] = str(path)
    return out


def load_baseline(path: str | pathlib.Path) -> Any:
    """A :class:`~lnn_control.nn.vision.ConvBaseline` (float64, eval mode) from :func:`save_models`."""
    import torch

    from lnn_control.nn.vision import ConvBaseline

    with np.load(path, allow_pickle=False) as z:
        if "__config__" not in z.files:
            raise ValueError(f"{path}: not a lane_compare baseline file (no __config__)")
        cfg = json.loads(str(z["__config__"]))
        state = {k: torch.from_numpy(np.array(z[k])) for k in z.files if k != "__config__"}
    model = ConvBaseline(cfg["head"], cfg["core"], cfg["hidden"], cfg["inputs"], cfg["n_outputs"],
                         output_names=cfg["output_names"]).double()  # fmt: skip
    model.load_state_dict(state)
    return model.eval()


def load_models(folder: pathlib.Path) -> dict[str, Any]:
    """The three models saved by :func:`save_models` in ``folder`` (torch, float64)."""
    from lnn_control.runtime.model_file import load_policy

    out: dict[str, Any] = {}
    for kind, _ in MODELS:
        path = folder / f"{kind}.npz"
        out[kind] = load_policy(path).double() if kind == "conv_ncp" else load_baseline(path)
    return out


def _centre_error(track: Any, gt: np.ndarray, fields: tuple[str, ...]) -> float:
    xy = gt[:, [fields.index("x"), fields.index("y")]]
    return float(np.mean([abs(track.project(p)[1]) for p in xy[::2]]))


def _hard_start(track: Any, seed: int) -> np.ndarray:
    """Episode ``seed``'s start on ``track`` (the draw of :func:`lnn_control.sim.episodes.draw`,
    applied to the hard-family track: a sample on the centreline, +-5 cm, +-0.1 rad)."""
    rng = np.random.default_rng([seed, 1])
    i = int(rng.integers(len(track.s)))
    d, dth = rng.uniform(-0.05, 0.05), rng.uniform(-0.1, 0.1)
    xy = track.centre[i] + d * track.normal[i]
    return np.array([xy[0], xy[1], math.atan2(track.tangent[i, 1], track.tangent[i, 0]) + dth])


def evaluate(
    models: dict[str, Any],
    episodes: int,
    seed: int,
    filters: tuple[bool, ...],
    log: Any = print,
    conditions: tuple[str, ...] = CONDITIONS,
    on_row: Any = None,
) -> list:
    """Rows (one per condition, filter and model, conditions outermost so a cut-short run has every
    model on the conditions it reached); ``on_row(rows)`` after each row."""
    from lnn_control.config import config_path
    from lnn_control.sim import episodes as E
    from lnn_control.sim.lane import LaneEnv, episode_track_seed, lane_map, make_track
    from lnn_control.sim.rollout import ClosedLoop, Condition, condition

    bad = [c for c in conditions if c not in CONDITIONS]
    if bad:
        raise ValueError(f"conditions {bad}: use some of {CONDITIONS}")
    rows: list[dict[str, Any]] = []
    fields = E.GROUND_TRUTH_FIELDS["lane"]
    steppers = {kind: model.double().runtime() for kind, model in models.items()}
    for cname in conditions:
        for filt in filters:
            for kind, model in models.items():
                stepper = steppers[kind]
                n_par = int(sum(p.numel() for p in model.parameters()))
                own_scene = cname in ("distractors", "lighting", "lighting_mild", "hard")
                cond = Condition(filter=filt) if own_scene else condition(cname, "lane", filt)
                loop = ClosedLoop("lane", config_path("lane"), condition=cond)
                t0 = time.time()
                ok = dep = 0
                errs = []
                for s in range(seed, seed + episodes):
                    ts = episode_track_seed(s)
                    kw: dict[str, Any] = {}
                    if cname == "distractors":  # this episode's scene (the loop picks its env by track)
                        loop._lane_envs[ts] = LaneEnv(ts, distractors=12, seed=s)
                    elif cname in ("lighting", "lighting_mild"):
                        loop._lane_envs[ts] = LaneEnv(
                            ts, lighting=1.0 if cname == "lighting" else 0.5, seed=s
                        )
                    elif cname == "hard":
                        track = make_track(ts, family="hard")
                        loop._lane_envs[ts] = LaneEnv(track, seed=s)
                        kw = {"start": _hard_start(track, s), "goal": lane_map(track)}
                    r = loop.run(stepper, s, hold=0.0, **kw)
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
                    "us_per_step": float(np.median(times) * 1e6), "wall_s": time.time() - t0,
                }  # fmt: skip
                rows.append(row)
                log(f"{kind} filter {row['filter']} {cname}: laps {ok}/{episodes} [{lo:.2f}, {hi:.2f}], "
                    f"departures {dep}, centre error {row['centre_error_m']:.3f} m, "
                    f"{row['us_per_step']:.0f} us/step ({time.time() - t0:.0f} s)")  # fmt: skip
                if on_row is not None:
                    on_row(rows)
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
    p.add_argument("--conditions", default=",".join(CONDITIONS), help=f"comma-separated, of {CONDITIONS}")
    p.add_argument("--models", type=pathlib.Path, default=None, help="saved models: load, or train and save")
    p.add_argument("--train-only", action="store_true", help="train (and save with --models), no evaluation")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/lane_compare"))
    a = p.parse_args(argv)
    if a.seed < 100_000:
        print("error: --seed must be >= 100000 (held-out tracks)", file=sys.stderr)
        return 2
    if a.episodes < 1:
        print("error: --episodes must be >= 1", file=sys.stderr)
        return 2
    conditions = tuple(c for c in a.conditions.split(",") if c)
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad or not conditions:
        print(f"error: --conditions {bad or a.conditions!r}: use some of {CONDITIONS}", file=sys.stderr)
        return 2
    from lnn_control import strict_json

    a.out.mkdir(parents=True, exist_ok=True)
    say = lambda m: print(m, flush=True)  # noqa: E731
    if a.models is not None and all((a.models / f"{k}.npz").is_file() for k, _ in MODELS):
        models = load_models(a.models)
        say(f"loaded {', '.join(models)} from {a.models}")
    else:
        models = train_models(say)
        if a.models is not None:
            say(f"saved {save_models(models, a.models)}")
    if a.train_only:
        return 0
    filters = {"off": (False,), "on": (True,), "both": (False, True)}[a.filter]

    def write(rows: list[dict[str, Any]]) -> None:
        strict_json.write(a.out / "summary.json", {"rows": rows, "seeds": [a.seed, a.seed + a.episodes - 1]})
        (a.out / "table.md").write_text(table(rows) + "\n")

    rows = evaluate(models, a.episodes, a.seed, filters, say, conditions, on_row=write)
    print(table(rows))
    return 0 if rows and all(math.isfinite(r["centre_error_m"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
