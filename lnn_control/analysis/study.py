"""What liquid networks buy: the study behind ``lnn-control study`` (alias ``lnn-control compare``).

Every model is trained by the one recipe (:func:`lnn_control.learn.recipe.train`) on the same
data with the same budget in optimiser steps, and evaluated by the one evaluation (the deployed
control step in :class:`lnn_control.sim.rollout.ClosedLoop`, scored by
:mod:`lnn_control.sim.episodes`, as ``lnn-control evaluate``) under the named conditions of
:func:`lnn_control.sim.rollout.condition`, through the config's safety filter.

Jobs and keys. The study is many independent jobs, run through Dask distributed (an embedded
``LocalCluster`` of ``--workers`` processes by default, or ``--address`` of a running scheduler):

* ``train/<robot>/<model>/s<seed>``: :func:`train_job`, the recipe for (model, seed); writes the
  trained policy (``policy.pt``, this study's own cache) and ``train.json`` (parameters, stepper
  microseconds per step, optimiser steps, wall time);
* ``eval/<robot>/<model>/s<seed>/<condition>``: :func:`eval_job`, ``episodes`` held-out episodes
  (seeds ``eval_seed ..``, >= 100000: never trained on or selected with) under the condition;
  writes ``<condition>.json`` (``episodes.aggregate`` + every episode's score).

Every result is written atomically (temporary file + rename) under ``<out>/store/<key>``; a job
whose result exists is not submitted again, so an interrupted study resumes where it stopped.
``store/spec.json`` holds the study's budget: a store made with another budget is refused.

Same data, same budget: for seed ``s`` every model gets the recipe's simulator expert episodes
``30000 + s + i`` (DART noise), ``steps`` optimiser steps of behaviour cloning, then
``dagger_rounds`` DAgger rounds through the filter (rollouts of its own policy: the data that
follows from the model) with ``dagger_epochs`` epochs each; model choice is the recipe's
(closed-loop success on seeds ``10000 + s + i``). No model family gets tuning the others do not.

Report (:mod:`lnn_control.analysis.study_report`): per (model, condition) the success rate over
every finished episode with its Wilson 95 % interval and, with >= 2 seeds, a seed-then-episode
bootstrap 95 % interval (the seed spread included), parameters and stepper microseconds per step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lnn_control import strict_json

__all__ = [
    "MODELS",
    "STUDY_CONDITIONS",
    "Store",
    "StudySpec",
    "eval_job",
    "job_keys",
    "main",
    "model_recipe",
    "run_study",
    "train_job",
]

#: held-out evaluation seeds start here (training and model selection use seeds below)
HELD_OUT = 100_000
#: the study's conditions (:func:`lnn_control.sim.rollout.condition` names)
STUDY_CONDITIONS: tuple[str, ...] = (
    "clean",
    "noise_low",
    "noise",
    "noise_high",
    "drop",
    "irregular",
    "irregular_wide",
    "ood",
)
#: compared models: recipe choices; ``match``: hidden units chosen so that the parameter count is
#: ``x`` times the live parameters of CfC-NCP(19) (:func:`model_recipe`)
MODELS: dict[str, dict[str, Any]] = {
    "cfc_ncp19": {"label": "CfC-NCP(19)", "model": "ncp", "cell": "cfc", "units": 19},
    "ltc_ncp19": {"label": "LTC-NCP(19)", "model": "ncp", "cell": "ltc", "units": 19},
    "cfc_ncp48": {"label": "CfC-NCP(48)", "model": "ncp", "cell": "cfc", "units": 48},
    "ltc_ncp48": {"label": "LTC-NCP(48)", "model": "ncp", "cell": "ltc", "units": 48},
    "cfc_dense19": {"label": "dense CfC(19)", "model": "dense", "cell": "cfc", "units": 19},
    "lstm": {"label": "LSTM (~1x)", "model": "lstm", "match": 1.0},
    "gru": {"label": "GRU (~1x)", "model": "gru", "match": 1.0},
    "mlp": {"label": "MLP (~1x)", "model": "mlp", "match": 1.0},
    "lstm_10x": {"label": "LSTM (~10x)", "model": "lstm", "match": 10.0},
    "gru_10x": {"label": "GRU (~10x)", "model": "gru", "match": 10.0},
    "mlp_10x": {"label": "MLP (~10x)", "model": "mlp", "match": 10.0},
}


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """One study: what is compared and with which budget (all of it is stored in ``spec.json``).

    robots, models (:data:`MODELS` keys), seeds (training seeds, < 100000), conditions
    (:data:`STUDY_CONDITIONS`), episodes per (model, seed, condition) from ``eval_seed`` (>= 100000).
    Budget per model: ``noise_episodes`` expert episodes with ``action_noise``, ``steps`` optimiser
    steps (``batch`` windows of ``window`` steps, ``lr``), ``dagger_rounds`` x ``dagger_episodes``
    rollouts through the filter with ``dagger_epochs`` epochs each, ``select_episodes`` closed-loop
    episodes to pick the round. ``max_time``: episode limit (s; None = the robot's).
    """

    robots: tuple[str, ...] = ("diff_drive",)
    models: tuple[str, ...] = tuple(MODELS)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    conditions: tuple[str, ...] = STUDY_CONDITIONS
    episodes: int = 50
    eval_seed: int = HELD_OUT
    noise_episodes: int = 32
    action_noise: float = 0.15
    steps: int = 3000
    batch: int = 16
    window: int = 32
    lr: float = 5e-3
    dagger_rounds: int = 4
    dagger_episodes: int = 16
    dagger_epochs: int = 5
    select_episodes: int = 16
    max_time: float | None = None

    def __post_init__(self) -> None:
        from lnn_control.sim.models import ROBOTS
        from lnn_control.sim.rollout import CONDITIONS

        bad = [r for r in self.robots if r not in ROBOTS or r == "lane"]
        if bad or not self.robots:
            raise ValueError(f"robots: use diff_drive and/or arm, got {list(self.robots)}")
        bad = [m for m in self.models if m not in MODELS]
        if bad or not self.models:
            raise ValueError(f"models: unknown {bad}; use some of {list(MODELS)}")
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad or not self.conditions:
            raise ValueError(f"conditions: unknown {bad}; use some of {list(CONDITIONS)}")
        if not self.seeds or any(not 0 <= s < HELD_OUT - 40_000 for s in self.seeds):
            raise ValueError(f"seeds must be in [0, 60000) (training seeds), got {list(self.seeds)}")
        if self.eval_seed < HELD_OUT:
            raise ValueError(f"eval_seed must be >= {HELD_OUT} (held-out episodes), got {self.eval_seed}")
        if self.episodes < 1 or self.steps < 1 or self.noise_episodes < 1:
            raise ValueError("episodes, steps and noise_episodes must be >= 1")

    def budget(self) -> dict[str, Any]:
        """The fields that decide what a stored result means (a store keeps one budget)."""
        d = dataclasses.asdict(self)
        for k in ("robots", "models", "seeds", "conditions"):
            d.pop(k)
        return d

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySpec:
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**kw)


# --- store --------------------------------------------------------------------------------------
class Store:
    """Results by key under ``root``: ``<key>.json`` files (and the trained policies), written
    atomically so that a killed job leaves either nothing or the whole result."""

    def __init__(self, root: str | pathlib.Path) -> None:
        self.root = pathlib.Path(root)

    def path(self, key: str, suffix: str = ".json") -> pathlib.Path:
        return self.root / f"{key}{suffix}"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> dict[str, Any]:
        return dict(json.loads(self.path(key).read_text()))

    def put(self, key: str, value: dict[str, Any]) -> pathlib.Path:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        strict_json.write(tmp, value)
        os.replace(tmp, p)
        return p

    def check_spec(self, spec: StudySpec) -> None:
        """Write ``spec.json`` on first use; ValueError when the store holds another budget."""
        key = "spec"
        if self.has(key):
            old = self.get(key).get("budget")
            if old != json.loads(strict_json.dumps(spec.budget())):
                raise ValueError(
                    f"{self.root}: this store was made with budget {old}; the study asks for "
                    f"{spec.budget()}. Use another --out (results of different budgets do not mix)."
                )
        else:
            self.put(key, {"budget": spec.budget()})


def train_key(robot: str, model: str, seed: int) -> str:
    return f"train/{robot}/{model}/s{seed}/train"


def eval_key(robot: str, model: str, seed: int, cond: str) -> str:
    return f"eval/{robot}/{model}/s{seed}/{cond}"


def job_keys(spec: StudySpec) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int, str]]]:
    """(train jobs (robot, model, seed), eval jobs (robot, model, seed, condition)) of ``spec``."""
    trains = [(r, m, s) for r in spec.robots for s in spec.seeds for m in spec.models]
    evals = [(r, m, s, c) for c in spec.conditions for (r, m, s) in trains]
    return trains, evals


# --- models -------------------------------------------------------------------------------------
def _sizes(robot: str) -> tuple[int, int]:
    from lnn_control.config import config_path, load_observation_config

    om = load_observation_config(config_path(robot))
    return int(om.n_inputs), len(om.command_fields)


def count_parameters(model: Any, n_inputs: int) -> tuple[int, int]:
    """(trainable entries, entries that receive a gradient) of a torch policy: the second leaves
    out synapses a wiring masks away (found from the gradient of a random 8-step batch)."""
    import torch

    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(0)
    dtype = next(model.parameters()).dtype
    x = torch.randn(4, 8, n_inputs, generator=g, dtype=dtype)
    ts = torch.rand(4, 8, generator=g, dtype=dtype) * 0.05 + 0.01
    model.zero_grad()
    y, _ = model(x, ts)
    (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum().backward()
    live = sum(int((p.grad != 0).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    return int(total), int(live)


def _fresh(recipe: Any, n_in: int, n_out: int) -> Any:
    import torch

    from lnn_control.learn.data import NormStats
    from lnn_control.learn.training import build_policy

    torch.manual_seed(0)
    stats = NormStats(np.zeros(n_in), np.ones(n_in), np.zeros(n_out), np.ones(n_out))
    return build_policy(recipe.train_config(), n_in, n_out, stats)


def model_recipe(name: str, robot: str, spec: StudySpec, seed: int) -> Any:
    """The :class:`~lnn_control.learn.recipe.Recipe` of compared model ``name`` (:data:`MODELS`):
    the same budget for every model; baselines with ``match`` get the hidden size whose parameter
    count is nearest ``match`` x the live parameters of CfC-NCP(19) on ``robot``."""
    from lnn_control.learn.recipe import Recipe

    m = dict(MODELS[name])
    m.pop("label")
    match = m.pop("match", None)
    common: dict[str, Any] = {
        "steps": spec.steps,
        "batch": spec.batch,
        "window": spec.window,
        "lr": spec.lr,
        "seed": seed,
        "noise_episodes": spec.noise_episodes,
        "action_noise": spec.action_noise,
        "dagger_rounds": spec.dagger_rounds,
        "dagger_episodes": spec.dagger_episodes,
        "dagger_epochs": spec.dagger_epochs,
        "eval_episodes": spec.select_episodes if spec.dagger_rounds else 0,
        "filter_in_loop": True,
        "val_fraction": 0.0,
    }
    if robot == "arm":  # the arm's model structure (issue 13 item 1), the same for every model
        common.update(feedforward="gravity", inputs="goal_error")
    if match is not None:
        m["units"] = matched_units(m["model"], robot, float(match))
    return Recipe(**m, **common)


def matched_units(kind: str, robot: str, factor: float) -> int:
    """Hidden units of baseline ``kind`` whose parameter count is nearest ``factor`` x CfC-NCP(19)'s
    live parameters on ``robot``."""
    from lnn_control.learn.recipe import Recipe

    n_in, n_out = _sizes(robot)
    ref = Recipe(model="ncp", cell="cfc", units=19)
    target = factor * count_parameters(_fresh(ref, n_in, n_out), n_in)[1]
    best, err = 1, math.inf
    for h in range(1, 1025):
        n = sum(p.numel() for p in _fresh(Recipe(model=kind, units=h), n_in, n_out).parameters())
        if abs(n - target) < err:
            best, err = h, abs(n - target)
        if n > target:
            break
    return best


def _stepper(policy: Any, structure: Any) -> Any:
    rt = policy.runtime()
    return rt if structure is None else structure.stepper(rt)


def stepper_us(stepper: Any, obs: np.ndarray, dt: float, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean wall time (microseconds) of one ``stepper.step`` over ``obs``."""
    runs = []
    for _ in range(repeats):
        stepper.reset()
        t0 = time.perf_counter()
        for o in obs:
            stepper.step(o, dt)
        runs.append((time.perf_counter() - t0) / len(obs) * 1e6)
    return float(np.median(runs))


def _threads() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


# --- jobs ---------------------------------------------------------------------------------------
def train_job(spec_d: dict[str, Any], root: str, robot: str, model: str, seed: int) -> dict[str, Any]:
    """Train (model, seed) on ``robot`` by the recipe; store the policy and ``train.json``.
    Returns the stored record (or the existing one: the job is idempotent)."""
    import torch

    from lnn_control.config import config_path
    from lnn_control.learn.recipe import train

    store = Store(root)
    key = train_key(robot, model, seed)
    if store.has(key) and store.path(key, ".pt").is_file():
        return store.get(key)
    _threads()
    spec = StudySpec.from_dict(spec_d)
    recipe = model_recipe(model, robot, spec, seed)
    t0 = time.perf_counter()
    res = train(recipe, config_path(robot), None, None, progress=False)
    wall = time.perf_counter() - t0
    policy = res.model.float()
    n_in = int(policy.n_inputs)
    total, live = count_parameters(policy, n_in)
    st = _stepper(policy, res.structure)
    ep = res.fit.train_episodes[0]
    obs = np.asarray(ep.obs[:400], dtype=np.float64)
    rec = {
        "robot": robot,
        "model": model,
        "label": MODELS[model]["label"],
        "seed": seed,
        "recipe": dataclasses.asdict(recipe),
        "parameters": total,
        "live_parameters": live,
        "stepper": type(st).__name__,
        "stepper_us": stepper_us(st, obs, float(np.median(ep.dt))),
        "optimiser_steps": int(res.fit.steps),
        "dagger": [{k: v for k, v in r.items() if isinstance(v, (int, float, str))} for r in res.dagger],
        "train_wall_s": wall,
    }
    pt = store.path(key, ".pt")
    pt.parent.mkdir(parents=True, exist_ok=True)
    tmp = pt.with_name(f".{pt.name}.{os.getpid()}.tmp")
    torch.save({"policy": policy, "structure": res.structure}, tmp)
    os.replace(tmp, pt)
    store.put(key, rec)
    return rec


def load_trained(root: str | pathlib.Path, robot: str, model: str, seed: int) -> Any:
    """The deployed stepper of a trained (model, seed) from the store."""
    import torch

    d = torch.load(Store(root).path(train_key(robot, model, seed), ".pt"), weights_only=False)
    return _stepper(d["policy"], d["structure"])


def eval_job(
    spec_d: dict[str, Any], root: str, robot: str, model: str, seed: int, cond: str, _after: Any = None
) -> dict[str, Any]:
    """Evaluate trained (model, seed) on ``spec.episodes`` held-out episodes under condition ``cond``
    (through the config's filter), as ``lnn-control evaluate``; store and return the aggregate."""
    from lnn_control.config import config_path
    from lnn_control.sim import episodes as E
    from lnn_control.sim.rollout import ClosedLoop, condition

    store = Store(root)
    key = eval_key(robot, model, seed, cond)
    if store.has(key):
        return store.get(key)
    _threads()
    spec = StudySpec.from_dict(spec_d)
    stepper = load_trained(root, robot, model, seed)
    loop = ClosedLoop(robot, config_path(robot), condition=condition(cond, robot, True))
    t0 = time.perf_counter()
    seeds = range(spec.eval_seed, spec.eval_seed + spec.episodes)
    # no early stop on a violation: success and violations are measured apart (as evaluate)
    scores = [
        loop.run(stepper, s, spec.max_time, hold=0.0, stop_after_collision=math.inf).score for s in seeds
    ]
    agg = E.aggregate(scores)
    rec = {
        "robot": robot,
        "model": model,
        "seed": seed,
        "condition": cond,
        "seeds": [seeds[0], seeds[-1]],
        **agg,
        "per_episode": [sc.as_dict() for sc in scores],
        "wall_s": time.perf_counter() - t0,
    }
    store.put(key, rec)
    return rec


# --- driver -------------------------------------------------------------------------------------
def _client(address: str | None, workers: int) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if address:
        return Client(address), None
    import dask

    # no queuing of ready jobs on the scheduler: otherwise jobs without dependencies wait there while
    # dependents of a finished training go straight to a worker, and the priorities are not kept
    with dask.config.set({"distributed.scheduler.worker-saturation": math.inf}):
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", memory_limit=0
        )
    return Client(cluster), cluster


def run_study(
    spec: StudySpec,
    out: str | pathlib.Path,
    address: str | None = None,
    workers: int = 2,
    progress: bool = True,
    on_result: Callable[[str, dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Run every job of ``spec`` whose result is not in ``<out>/store`` through Dask; returns
    ``{"submitted": [keys], "skipped": [keys], "wall_s"}``. ``address``: a running scheduler
    (``tcp://host:8786``); None starts a LocalCluster of ``workers`` processes. Workers must have
    this package installed and see ``out`` (a shared file system when they are on other hosts)."""
    from distributed import as_completed

    out = pathlib.Path(out).resolve()
    root = str(out / "store")
    store = Store(root)
    store.check_spec(spec)
    trains, evals = job_keys(spec)
    sd = spec.as_dict()
    skipped: list[str] = []
    submitted: list[str] = []
    t0 = time.perf_counter()
    client, cluster = _client(address, workers)
    try:
        futs: dict[Any, str] = {}
        tfut: dict[tuple[str, str, int], Any] = {}
        order = {c: i for i, c in enumerate(spec.conditions)}
        # seed-major: seed 0's training and evaluations first, so a study cut short has whole seeds.
        # Jobs are submitted in that order too (an idle worker takes a job as soon as it is submitted,
        # whatever comes after it), and the priorities keep the order among the ready ones.
        jobs = [("train", r, m, s, "") for r, m, s in trains] + [("eval", *e) for e in evals]
        jobs.sort(key=lambda j: (spec.seeds.index(j[3]), j[0] == "eval", order.get(j[4], 0)))
        for kind, r, m, s, c in jobs:
            if kind == "train":
                k = train_key(r, m, s)
                if store.has(k) and store.path(k, ".pt").is_file():
                    skipped.append(k)
                    continue
                prio = 1000 - 100 * spec.seeds.index(s)
                f = client.submit(
                    train_job, sd, root, r, m, s, key=f"{k}-{out.name}", pure=False, priority=prio
                )
                tfut[(r, m, s)] = f
            else:
                k = eval_key(r, m, s, c)
                if store.has(k):
                    skipped.append(k)
                    continue
                prio = 950 - 100 * spec.seeds.index(s) - order[c]
                dep = tfut.get((r, m, s))
                f = client.submit(
                    eval_job, sd, root, r, m, s, c, dep, key=f"{k}-{out.name}", pure=False, priority=prio
                )
            futs[f] = k
            submitted.append(k)
        bar = None
        if progress and futs:
            from tqdm import tqdm

            bar = tqdm(total=len(futs), desc="study jobs", unit="job", file=sys.stderr)
        for f in as_completed(list(futs)):
            res = f.result()  # a failed job raises here, with the worker's traceback
            if on_result is not None:
                on_result(futs[f], res)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(futs[f].split("/", 1)[1])
        if bar is not None:
            bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return {"submitted": submitted, "skipped": skipped, "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    """``lnn-control study`` (:mod:`lnn_control.analysis.study_cli`)."""
    from lnn_control.analysis.study_cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
