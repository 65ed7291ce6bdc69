"""Soak run: lnn_controller at 1 kHz across processes for a long time (default one hour).

``.venv/bin/python scripts/soak.py [--minutes 60] [--rt PRIO] [--raw-trigger on|off]
[--out out/soak/summary.json]`` (``make soak``; ``make soak SOAK_MINUTES=5`` for the short
variant; ``make bench`` runs a 5-minute one as ``bench.bench_soak``). ``--rt PRIO``: the node
and the driver under SCHED_FIFO (what a deployed 1 kHz controller asks for; other work on the
machine then cannot delay them); ``--raw-trigger off``: the node's message-object path, for an
A/B. What is measured: ``bench/bench_soak.py``. Strict JSON (``lnn_control.strict_json``) and a
table.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_soak import HEADER, LOSS_LIMIT, RSS_GROWTH_LIMIT_KB, soak  # noqa: E402

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from lnn_control import strict_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="duration; the first minute is warm-up")
    ap.add_argument("--minute-s", type=float, default=60.0, help="length of one reported period, s")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "soak" / "summary.json")
    ap.add_argument(
        "--raw-trigger", choices=("on", "off"), default="on", help="the node's raw_trigger parameter (A/B)"
    )
    ap.add_argument(
        "--rt", type=int, default=0, metavar="PRIO",
        help="run the node and the driver under SCHED_FIFO at this priority (0: the default scheduler)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    print(HEADER)
    with tempfile.TemporaryDirectory(prefix="lnn_soak_") as tmp:
        s = soak(args.minutes, pathlib.Path(tmp), args.minute_s, args.raw_trigger == "on", args.rt)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strict_json.write(args.out, s)
    print(
        strict_json.dumps({k: v for k, v in s.items() if k not in ("per_minute", "node_log_tail")}, indent=1)
    )
    ok = s["loss_ok"] and s["rss_ok"] and s["node_alive_at_end"]
    print(
        f"RSS growth after warm-up {s['rss_growth_after_warmup_kb']} kB (target < {RSS_GROWTH_LIMIT_KB}), "
        f"loss {s['loss']:.3%} (target < {LOSS_LIMIT:.0%}); summary in {args.out}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
