#!/usr/bin/env python3
"""Show the BarrierNet effect (Xiao et al., T-RO 2023, unicycle + circular obstacle).

One command: ``.venv/bin/python scripts/barriernet_effect.py [--quick] [--out DIR] [--seed S]``

1. A CBF-QP expert (tangent-point guidance to pass the obstacle, then a HOCBF-QP with fixed
   gains and actuator bounds, solved by ``barriernet.solve_qp``) drives the unicycle
   x = (px, py, theta, v), u = (omega, a) from seeded starts on ONE side of the obstacle
   (the demonstration region) to the goal behind it.
2. Two liquid policies (CfC on an AutoNCP wiring, same size, same seed, same data, same
   training) learn from those demonstrations: a plain one that outputs u, and a BarrierNet
   one that outputs u_ref and two class-K gains, followed by the differentiable HOCBF-QP
   (``barriernet.bnet.UnicycleBarrierNet``); both are trained on the MSE to the expert's u.
3. All three run closed loop from seeded starts: new ones from the demonstration region, and
   starts the demonstrations never covered (the other side, other headings, higher speeds).
   Reported per policy and start set: collisions (b < 0 at any step), the minimum barrier
   value b = |p - c|^2 - r^2 (m^2), goal reached (within GOAL_TOL).

Writes ``<out>/summary.json`` and ``<out>/trajectories.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from lnn_control import strict_json

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from barriernet.bnet import BarrierNetHead, DiscObstacle, UnicycleBarrierNet  # noqa: E402
from barriernet.qp import solve_qp  # noqa: E402
from lnn_control.nn.policy import LiquidPolicy  # noqa: E402
from lnn_control.nn.wiring import AutoNCP  # noqa: E402
from lnn_control.sim.episodes import wilson  # noqa: E402

# --- the scene (the task's description; the layer itself holds no constants) ------------------
OBSTACLE = DiscObstacle(2.0, 0.0, 0.6)
GOAL = (4.0, 0.0)
GOAL_TOL = 0.2  # m
DT = 0.05  # s, control period (zero-order hold, RK4 in between)
HORIZON = 8.0  # s (the expert needs at most ~5.2 s)
# Expert: guidance gains, limits and its own CBF gains.
V_MAX, OMEGA_MAX, A_MAX = 1.0, 2.5, 2.0
PASS_MARGIN = 0.25  # m added to the radius for the tangent-point guidance
EXPERT_P = (2.0, 2.0)
# Start regions: (low, high) for px, py, theta, v.
DEMO_REGION = ((-0.5, 0.0), (0.3, 0.9), (-0.3, 0.3), (0.2, 0.6))
WIDE_REGION = ((-0.5, 0.8), (-0.9, 0.9), (-0.8, 0.8), (0.0, 1.0))


@dataclass
class EffectConfig:
    """Sizes of one run (``quick`` shrinks them); everything is seeded from ``seed``."""

    seed: int = 0
    n_demos: int = 48
    n_eval: int = 100
    units: int = 32  # NCP neurons
    motor: int = 8  # NCP motor neurons, read out by a Linear layer to the outputs
    sparsity: float = 0.3
    epochs: int = 40
    window: int = 32
    batch: int = 16
    lr: float = 1e-2
    gain_scale: float = 4.0
    horizon: float = HORIZON  # s, evaluation episodes

    def __post_init__(self) -> None:
        for name in ("n_demos", "n_eval", "units", "motor", "epochs", "window", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"EffectConfig.{name} must be an int >= 1, got {v!r}")
        if self.window < 2:
            raise ValueError(f"EffectConfig.window must be >= 2 steps, got {self.window}")
        for name in ("lr", "gain_scale", "horizon"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"EffectConfig.{name} must be a finite number > 0, got {v!r}")

    @classmethod
    def quick(cls, seed: int = 0) -> EffectConfig:
        return cls(seed=seed, n_demos=48, n_eval=50, epochs=20)


# --- dynamics and barrier ------------------------------------------------------------------
def unicycle_f(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x' for states x (N, 4) and controls u (N, 2)."""
    th, v = x[:, 2], x[:, 3]
    return np.stack([v * np.cos(th), v * np.sin(th), u[:, 0], u[:, 1]], axis=1)


def rk4_step(x: np.ndarray, u: np.ndarray, dt: float = DT) -> np.ndarray:
    k1 = unicycle_f(x, u)
    k2 = unicycle_f(x + 0.5 * dt * k1, u)
    k3 = unicycle_f(x + 0.5 * dt * k2, u)
    k4 = unicycle_f(x + dt * k3, u)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def barrier(x: np.ndarray) -> np.ndarray:
    return np.asarray(OBSTACLE.barrier(x[..., 0], x[..., 1]))


def _wrap(a: np.ndarray | float) -> Any:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


# --- expert ---------------------------------------------------------------------------------
def expert_nominal(x: np.ndarray) -> np.ndarray:
    """Guidance (N, 4) -> (N, 2): aim at the goal, or at the tangent point of the obstacle
    inflated by PASS_MARGIN when it blocks the line to the goal; speed tracks a goal-distance ramp."""
    px, py, th, v = x.T
    gdx, gdy = GOAL[0] - px, GOAL[1] - py
    dist_goal = np.hypot(gdx, gdy)
    to_goal = np.arctan2(gdy, gdx)
    odx, ody = OBSTACLE.x - px, OBSTACLE.y - py
    d = np.hypot(odx, ody)
    beta = np.arctan2(ody, odx)
    R = OBSTACLE.radius + PASS_MARGIN
    diff = _wrap(to_goal - beta)
    side = np.where(diff >= 0, 1.0, -1.0)
    alpha = np.arcsin(np.clip(R / np.maximum(d, 1e-9), 0.0, 1.0))
    blocked = (d < dist_goal) & (np.abs(diff) < alpha)
    inside = d <= R
    psi = np.where(blocked, beta + side * alpha, to_goal)
    psi = np.where(inside & (d < dist_goal), beta + side * (np.pi / 2 + (R - d) / R), psi)
    omega = 3.0 * _wrap(psi - th) * np.minimum(1.0, dist_goal / 0.3)
    v_des = V_MAX * np.minimum(1.0, dist_goal / 1.0)
    a = 2.0 * (v_des - v)
    return np.stack([omega, a], axis=1)


def expert_control(x: np.ndarray) -> np.ndarray:
    """The expert: nominal guidance through a HOCBF-QP with fixed gains and the actuator box."""
    u_nom = expert_nominal(x)
    out = np.empty_like(u_nom)
    p1, p2 = EXPERT_P
    lb, ub = np.array([-OMEGA_MAX, -A_MAX]), np.array([OMEGA_MAX, A_MAX])
    for i in range(x.shape[0]):
        px, py, th, v = x[i]
        dx, dy = px - OBSTACLE.x, py - OBSTACLE.y
        c, s = math.cos(th), math.sin(th)
        radial = dx * c + dy * s
        b = dx * dx + dy * dy - OBSTACLE.radius**2
        G = -np.array([[2 * v * (dy * c - dx * s), 2 * radial]])
        h = np.array([2 * v * v + (p1 + p2) * 2 * v * radial + p1 * p2 * b])
        res = solve_qp(np.eye(2), -u_nom[i], G, h, lb, ub)
        # Infeasible (the box cannot satisfy the row): brake hard, straight.
        out[i] = res.x if res.x is not None else np.array([0.0, -A_MAX if v > 0 else 0.0])
    return out


# --- rollouts ------------------------------------------------------------------------------
def sample_starts(region: tuple[tuple[float, float], ...], n: int, rng: np.random.Generator) -> np.ndarray:
    lo = np.array([r[0] for r in region])
    hi = np.array([r[1] for r in region])
    return lo + (hi - lo) * rng.random((n, 4))


def rollout(controller: Any, x0: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Closed loop from x0 (N, 4); ``controller(x (N, 4)) -> u (N, 2)`` (it may keep state).

    An episode stops (state frozen) once within GOAL_TOL of the goal. Returns states (N, steps+1, 4),
    controls (N, steps, 2), active (N, steps) (False after the goal) and goal_step (N,) (-1: never).
    """
    N = x0.shape[0]
    xs = np.empty((N, steps + 1, 4))
    us = np.zeros((N, steps, 2))
    active = np.zeros((N, steps), dtype=bool)
    goal_step = np.full(N, -1)
    x = x0.copy()
    xs[:, 0] = x
    live = np.ones(N, dtype=bool)
    for k in range(steps):
        u = np.asarray(controller(x), dtype=np.float64)
        if not np.isfinite(u).all():
            raise RuntimeError(f"controller returned non-finite controls at step {k}")
        active[:, k] = live
        us[live, k] = u[live]
        x = np.where(live[:, None], rk4_step(x, u), x)
        xs[:, k + 1] = x
        reached = live & (np.hypot(x[:, 0] - GOAL[0], x[:, 1] - GOAL[1]) < GOAL_TOL)
        goal_step[reached] = k + 1
        live &= ~reached
    return {"states": xs, "controls": us, "active": active, "goal_step": goal_step}


class TorchController:
    """Steps a trained policy (plain LiquidPolicy or UnicycleBarrierNet) one DT at a time, batched.

    For a BarrierNet, ``interventions`` collects per step which samples the QP changed (u != u_ref)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.h: torch.Tensor | None = None
        self.interventions: list[np.ndarray] = []
        self.first_gains: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(x, dtype=torch.float64).unsqueeze(1)
        with torch.no_grad():
            out = self.model(xt, DT, self.h)
        u, self.h = out[0], out[1]
        if len(out) > 2:
            changed = (u - out[2]["u_ref"]).abs().amax(dim=-1) > 1e-9 * (1 + u.abs().amax(dim=-1))
            self.interventions.append(changed[:, 0].numpy())
            if self.first_gains is None:
                self.first_gains = out[2]["gains"][:, 0].numpy()
        return u[:, 0].numpy()


# --- training ------------------------------------------------------------------------------
def make_policy(n_outputs: int, n_gains: int, cfg: EffectConfig) -> LiquidPolicy:
    torch.manual_seed(cfg.seed)
    policy = LiquidPolicy(
        4,
        "cfc",
        AutoNCP(cfg.units, cfg.motor, sparsity=cfg.sparsity, seed=cfg.seed + 1),
        proj_size=n_outputs,
        n_gains=n_gains,
        gain_scale=cfg.gain_scale,
        input_names=["px", "py", "theta", "v"],
        output_names=["omega_ref", "a_ref"] if n_gains else ["omega", "a"],
        gain_names=[f"p{i + 1}" for i in range(n_gains)] if n_gains else None,
        backbone_units=32,
    )
    return policy.double()


def windows(demos: dict[str, np.ndarray], window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut every demonstration (up to its goal step) into windows (stride window/2), padded + masked."""
    X, U, M = [], [], []
    for i in range(demos["states"].shape[0]):
        n = int(demos["goal_step"][i]) if demos["goal_step"][i] > 0 else demos["controls"].shape[1]
        for s in range(0, max(n - window // 2, 1), window // 2):
            e = min(s + window, n)
            x = np.zeros((window, 4))
            u = np.zeros((window, 2))
            m = np.zeros(window, dtype=bool)
            x[: e - s], u[: e - s], m[: e - s] = demos["states"][i, s:e], demos["controls"][i, s:e], True
            X.append(x)
            U.append(u)
            M.append(m)
    return torch.tensor(np.array(X)), torch.tensor(np.array(U)), torch.tensor(np.array(M))


def train(
    model: torch.nn.Module, data: tuple[torch.Tensor, ...], u_std: torch.Tensor, cfg: EffectConfig
) -> list[float]:
    """Adam on the masked MSE between the model's u and the expert's, in units of the expert's std."""
    X, U, M = data
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    losses = []
    for _ in range(cfg.epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        total, count = 0.0, 0
        for j in range(0, X.shape[0], cfg.batch):
            idx = perm[j : j + cfg.batch]
            x, u, m = X[idx], U[idx], M[idx]
            out = model(x, DT)[0]
            err = ((out - u) / u_std) ** 2 * m.unsqueeze(-1)
            loss = err.sum() / (2 * m.sum())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        sched.step()
        losses.append(total / count)
    return losses


# --- pipeline ------------------------------------------------------------------------------
def summarize(roll: dict[str, np.ndarray]) -> dict[str, Any]:
    """Counts with the words of :mod:`lnn_control.sim.episodes`: success = goal reached in the
    horizon, safe success = and the barrier never negative (a collision), Wilson 95 % intervals."""
    b = barrier(roll["states"])  # (N, steps+1)
    min_b = b.min(axis=1)
    n = int(b.shape[0])
    reached = int((roll["goal_step"] > 0).sum())
    safe = int(((roll["goal_step"] > 0) & (min_b >= 0)).sum())
    return {
        "starts": n,
        "collisions": int((min_b < 0).sum()),
        "min_barrier": float(min_b.min()),
        "goal_reached": reached,
        "goal_reached_safely": safe,
        "success_ci95": list(wilson(reached, n)),
        "safe_success_ci95": list(wilson(safe, n)),
        "min_barrier_per_start": min_b.tolist(),
    }


def run(cfg: EffectConfig, out_dir: pathlib.Path | None = None, log: Any = print) -> dict[str, Any]:
    """Demos -> train plain and BarrierNet policies -> closed-loop evaluation; returns the summary."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    steps = int(round(HORIZON / DT))
    eval_steps = int(round(cfg.horizon / DT))
    demo_starts = sample_starts(DEMO_REGION, cfg.n_demos, rng)
    demos = rollout(expert_control, demo_starts, steps)
    demo_sum = summarize(demos)
    if demo_sum["collisions"] or demo_sum["goal_reached"] < cfg.n_demos:
        raise RuntimeError(f"the expert failed on its own demonstrations: {demo_sum}")
    data = windows(demos, cfg.window)
    flat_u = demos["controls"][demos["active"]]
    flat_x = demos["states"][:, :-1][demos["active"]]
    x_mean, x_std = flat_x.mean(0), flat_x.std(0) + 1e-3
    u_mean, u_std = flat_u.mean(0), flat_u.std(0) + 1e-3
    log(f"demos: {cfg.n_demos} episodes, {len(flat_u)} samples, {data[0].shape[0]} windows")

    plain = make_policy(2, 0, cfg)
    plain.set_normalization(x_mean, x_std, u_mean, u_std)
    backbone = make_policy(4, 2, cfg)
    backbone.set_normalization(x_mean, x_std, u_mean, u_std)
    bnet = UnicycleBarrierNet(backbone, BarrierNetHead([OBSTACLE])).double()
    u_std_t = torch.tensor(u_std)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # first use imports torch._dynamo: keep it untimed
    t0 = time.perf_counter()
    loss_plain = train(plain, data, u_std_t, cfg)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss_bnet = train(bnet, data, u_std_t, cfg)
    t_bnet = time.perf_counter() - t0
    log(
        f"training: plain {t_plain:.1f} s (loss {loss_plain[-1]:.4f}), barriernet {t_bnet:.1f} s "
        f"(loss {loss_bnet[-1]:.4f})"
    )

    eval_rng = np.random.default_rng(cfg.seed + 1000)
    sets = {
        "demo_region": sample_starts(DEMO_REGION, cfg.n_eval, eval_rng),
        "uncovered": sample_starts(WIDE_REGION, cfg.n_eval, eval_rng),
    }
    plain.eval()
    bnet.eval()
    results: dict[str, dict[str, Any]] = {}
    rolls: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for set_name, starts in sets.items():
        results[set_name], rolls[set_name] = {}, {}
        for name, ctrl in (
            ("expert", expert_control),
            ("plain", TorchController(plain)),
            ("barriernet", TorchController(bnet)),
        ):
            r = rollout(ctrl, starts, eval_steps)
            rolls[set_name][name] = r
            results[set_name][name] = summarize(r)
            if isinstance(ctrl, TorchController) and ctrl.interventions:
                changed = np.stack(ctrl.interventions, axis=1) & r["active"]
                results[set_name][name]["qp_intervened_steps"] = float(changed.sum() / r["active"].sum())
            if isinstance(ctrl, TorchController) and ctrl.first_gains is not None:
                # HOCBF safe set at the start: b >= 0 and psi1 = b_dot + p1 b >= 0 (with the first gains).
                x = starts
                radial = (x[:, 0] - OBSTACLE.x) * np.cos(x[:, 2]) + (x[:, 1] - OBSTACLE.y) * np.sin(x[:, 2])
                b_dot = 2 * x[:, 3] * radial
                psi1 = b_dot + ctrl.first_gains[:, 0] * barrier(x)
                results[set_name][name]["starts_outside_hocbf_set"] = int((psi1 < 0).sum())
    summary = {
        "config": asdict(cfg),
        "scene": {
            "obstacle": asdict(OBSTACLE),
            "goal": list(GOAL),
            "goal_tol": GOAL_TOL,
            "dt": DT,
            "horizon_s": cfg.horizon,
            "demo_region": DEMO_REGION,
            "uncovered_region": WIDE_REGION,
        },
        "training": {
            "plain_final_loss": loss_plain[-1],
            "barriernet_final_loss": loss_bnet[-1],
            "plain_seconds": t_plain,
            "barriernet_seconds": t_bnet,
            "plain_loss": loss_plain,
            "barriernet_loss": loss_bnet,
        },
        "results": results,
        "total_seconds": time.perf_counter() - t_start,
    }
    log(table(results))
    bn = {k: v["barriernet"] for k, v in results.items()}
    outside = ", ".join(f"{k} {r['starts_outside_hocbf_set']}/{r['starts']}" for k, r in bn.items())
    log(f"BarrierNet starts outside the HOCBF safe set (b_dot + p1 b < 0 at t = 0): {outside}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        strict_json.write(out_dir / "summary.json", summary)
        plot(rolls, out_dir / "trajectories.png")
        log(f"wrote {out_dir / 'summary.json'} and {out_dir / 'trajectories.png'}")
    return summary


def table(results: dict[str, dict[str, Any]]) -> str:
    """Starts, collisions, minimum barrier (m^2, 3 significant digits), goals (all / without a
    collision), share of steps where the QP changed the reference."""
    head = (
        f"{'starts':<12} {'policy':<11} {'n':>4} {'collisions':>10} {'min b (m^2)':>12} {'goal reached':>12} "
        f"{'goal, safe':>10} {'QP changed u':>12}"
    )
    lines = [head, "-" * len(head)]
    for set_name, per in results.items():
        for name, r in per.items():
            share = r.get("qp_intervened_steps")
            lines.append(
                f"{set_name:<12} {name:<11} {r['starts']:>4} {r['collisions']:>10} "
                f"{r['min_barrier']:>12.3g} {r['goal_reached']:>12} {r['goal_reached_safely']:>10} "
                f"{'-' if share is None else f'{100 * share:.1f}% steps':>12}"
            )
    return "\n".join(lines)


def plot(rolls: dict[str, dict[str, dict[str, np.ndarray]]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["expert", "plain", "barriernet"]
    fig, axes = plt.subplots(len(rolls), 3, figsize=(15, 4.2 * len(rolls)), squeeze=False)
    for row, (set_name, per) in enumerate(rolls.items()):
        for col, name in enumerate(names):
            ax = axes[row][col]
            r = per[name]
            b = barrier(r["states"]).min(axis=1)
            for i in range(r["states"].shape[0]):
                n = r["goal_step"][i] if r["goal_step"][i] > 0 else r["states"].shape[1] - 1
                tr = r["states"][i, : n + 1]
                hit = b[i] < 0
                ax.plot(
                    tr[:, 0],
                    tr[:, 1],
                    color="tab:red" if hit else "tab:blue",
                    lw=1.2 if hit else 0.6,
                    alpha=0.9 if hit else 0.5,
                )
                ax.plot(tr[0, 0], tr[0, 1], ".", color="k", ms=3)
            ax.add_patch(plt.Circle((OBSTACLE.x, OBSTACLE.y), OBSTACLE.radius, color="0.5", alpha=0.6))
            ax.plot(*GOAL, "g*", ms=14)
            ax.set_aspect("equal")
            ax.set_xlim(-1.0, 4.8)
            ax.set_ylim(-2.0, 2.0)
            ax.set_title(
                f"{name}, {set_name} starts: {int((b < 0).sum())}/{len(b)} collide, min b {b.min():.3f}"
            )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer demos, epochs and evaluation starts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "barriernet_effect")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: reproducible)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    cfg = EffectConfig.quick(args.seed) if args.quick else EffectConfig(seed=args.seed)
    summary = run(cfg, args.out)
    print(f"total {summary['total_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
