#!/usr/bin/env python3
"""What the lane filter does: held-out lane episodes of models/lane.npz with a disturbance on the
applied command, filter on vs off.

``ClosedLoop.run(action_noise=a)`` adds an AR(1) disturbance (0.3 s correlation) of std
``a`` x the command limits (0.8 m/s, 3 rad/s) to the policy's command before the safety filter,
as a gust, a slipping wheel or a bad actuator would; the policy itself never leaves the lane on
the held-out tracks (``lnn-control evaluate``), so this is where the filter shows.

``python scripts/lane_disturbance.py --episodes 20 --action-noise 0.2 --out docs/lane/disturbance_0.2.json``
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lnn_control import strict_json  # noqa: E402
from lnn_control.runtime.model_file import load_stepper  # noqa: E402
from lnn_control.sim.episodes import aggregate  # noqa: E402
from lnn_control.sim.rollout import ClosedLoop, Condition  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=pathlib.Path, default=REPO / "models" / "lane.npz")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=100_000, help="first held-out episode seed")
    p.add_argument("--action-noise", type=float, default=0.2)
    p.add_argument("--out", type=pathlib.Path, default=None)
    a = p.parse_args(argv)
    stepper = load_stepper(a.model)
    out = {"model": str(a.model), "action_noise": a.action_noise, "seeds": [a.seed, a.seed + a.episodes - 1]}
    for f in (True, False):
        loop = ClosedLoop("lane", REPO / "config" / "lane.yaml", condition=Condition(filter=f))
        t = time.time()
        seeds = range(a.seed, a.seed + a.episodes)
        agg = aggregate(loop.run(stepper, s, hold=0.0, action_noise=a.action_noise).score for s in seeds)
        out["filter_on" if f else "filter_off"] = agg
        lo, hi = agg["safe_success"]["ci95"]
        print(
            f"filter {'on' if f else 'off'}, action noise {a.action_noise}: laps without departure "
            f"{agg['safe_success']['count']}/{a.episodes} [{100 * lo:.0f}, {100 * hi:.0f} %], episodes with "
            f"a departure {agg['violated']['count']}, min margin {agg['min_margin']:.3f} m, "
            f"interventions {agg['interventions']} ({time.time() - t:.0f} s)",
            flush=True,
        )
    if a.out is not None:
        strict_json.write(a.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
