"""Benchmark runner: every ``bench/bench_*.py`` module, each in its own process, one report.

``python -m bench.run --mode quick|full`` (what ``make bench BENCH_MODE=...`` calls):

1. discovers ``bench/bench_<area>.py`` modules (sorted by name);
2. runs each one's ``run(quick)`` in a child process (``python -m bench.run --child MODULE``),
   so that a crash, a hang or a leaked ``torch.set_num_threads`` stays inside that module,
   and checks every returned row against the :func:`bench.common.row` format;
3. writes ``results.md`` (one table per group: ours median / p99, reference median / p99,
   speedup = reference median / ours median, target, pass / miss; a header with the machine,
   its load, library versions and the date), ``results.json`` and plots (``bench.plots``).

Exit status: 1 if any module failed (raised, timed out, or returned malformed rows), so CI's
quick run fails when a benchmark breaks. Missed speed targets are flagged in the table and
summarised on stdout; they fail the run only with ``--strict`` (timings on a loaded, shared
machine are too noisy to gate CI on).

Full mode writes to ``bench/`` (the committed results the README quotes); quick mode to
``bench/out/quick/`` (git-ignored) unless ``--out-dir`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lnn_control import strict_json

__all__ = [
    "ANCHOR_REFS",
    "ModuleResult",
    "anchor_comparison",
    "discover_modules",
    "machine_info",
    "main",
    "render_markdown",
    "run_module",
    "validate_rows",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

# Keys and value types every row must carry (bench.common.row builds exactly these).
_ROW_KEYS: dict[str, tuple[type, ...]] = {
    "group": (str,),
    "name": (str,),
    "ours_median_s": (float, int),
    "ours_p99_s": (float, int),
    "ref_name": (str,),
    "ref_median_s": (float, int, type(None)),
    "ref_p99_s": (float, int, type(None)),
    "speedup": (float, int, type(None)),
    "target": (str,),
    "passed": (bool, type(None)),
    "notes": (str,),
}

# Library versions quoted in the report header (distribution names on PyPI).
_VERSIONED = [
    "torch",
    "numpy",
    "ncps",
    "cvxpy",
    "daqp",
    "osqp",
    "clarabel",
    "qpth",
    "cvxpylayers",
    "onnxruntime",
    "rclpy",
]

# Per-module wall-clock limits (s): quick mode must stay well inside CI's budget.
_TIMEOUT_S = {"quick": 240.0, "full": 1800.0}

# Figures from /work/shared/ANCHORS.md (measured elsewhere; absolute times drift between
# machines, so the tables compare against references timed in the same run and these
# are quoted only for orientation).
ANCHOR_LINES = [
    "ncps 1.0.1 single step, batch 1, no_grad: CfC-NCP(19) 194 us, CfC-NCP(64) 204 us, "
    "dense CfC(64) 99 us, LTC-NCP(19) 276 us, LTC-NCP(64) 307 us; float64 numpy step of "
    "the wired CfC 46-48 us, LTC-NCP(19) 81 us; torch.jit.trace CfC-NCP(19) 86 us.",
    "ncps training step, batch 64 x seq 64, fwd+bwd+Adam: CfC-NCP(19) 61 ms, LTC-NCP(19) "
    "145 ms, LTC-NCP(64) 436 ms; nn.LSTM(64) 8 ms.",
    "2-control QP (box + 1 CBF row): DAQP 3.5 us (p99 3.8), quadprog 8.5 us, proxsuite 19 us, "
    "raw OSQP 29 us, cvxopt 0.24-0.30 ms, cvxpy (OSQP/Clarabel) 0.85-1.4 ms, qpth batch 1 "
    "4-6 ms, closed-form half-space projection 2 us.",
    "Differentiable QP, batch 1024, 2 controls, fwd+bwd: qpth 12.5 ms (1 row) to 29.5 ms "
    "(4 rows); proxsuite QPFunction 139 ms; cvxpylayers 1.5 s.",
    "ROS 2 (Fast DDS, loopback) 1 kHz ping-pong round trip: median 0.3 ms, p99 0.5-0.65 ms.",
]


# Reference timings from ANCHORS.md that this run re-measures, keyed by the reference's row
# label ("[ref] <ref_name>" or "[ref] <ref_name> <name>"): (anchor text, anchor median s).
# measured / anchor says how this machine and its load compare with the anchor's.
ANCHOR_REFS: dict[str, tuple[str, float]] = {
    "[ref] DAQP": ("3.5 us", 3.5e-6),
    "[ref] quadprog": ("8.5 us", 8.5e-6),
    "[ref] raw OSQP": ("29 us", 29e-6),
    "[ref] cvxopt": ("0.24-0.30 ms", 0.27e-3),
    "[ref] cvxpy+OSQP": ("0.85-1.4 ms", 1.1e-3),
    "[ref] cvxpy+Clarabel": ("0.85-1.4 ms", 1.1e-3),
    "[ref] ncps CfC CfC-NCP(19) step": ("194 us", 194e-6),
    "[ref] ncps CfC CfC-NCP(64) step": ("204 us", 204e-6),
    "[ref] ncps LTC LTC-NCP(19) step": ("276 us", 276e-6),
    "[ref] ncps LTC LTC-NCP(64) step": ("307 us", 307e-6),
    "[ref] qpth fwd+bwd batch 1024": ("29.5 ms (4 rows)", 29.5e-3),
    "[ref] torch.jit.trace ncps CfC-NCP(19) step": ("86 us", 86e-6),
    "[ref] ncps CfC-NCP(19) training step": ("61 ms", 61e-3),
    "[ref] ncps LTC-NCP(19) training step": ("145 ms", 145e-3),
    "[ref] nn.LSTM(64) training step": ("8 ms", 8e-3),
    "[ref] DDS round trip (rclpy echo node)": ("0.3 ms", 0.3e-3),
}


def anchor_comparison(rows: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
    """(label, anchor text, measured median s, measured / anchor) for re-measured anchors.

    Each anchor appears once (its first occurrence), whether the row timed the reference
    alone (``[ref] ...`` in the name) or as the reference column next to ours.
    """
    out: dict[str, tuple[str, str, float, float]] = {}
    for r in rows:
        cands = [(r["name"], r["ours_median_s"])] if r["name"].startswith("[ref]") else []
        if r["ref_median_s"] is not None:
            cands += [(f"[ref] {r['ref_name']}", r["ref_median_s"])]
            cands += [(f"[ref] {r['ref_name']} {r['name']}", r["ref_median_s"])]
        for label, med in cands:
            if label in ANCHOR_REFS and label not in out:
                text, sec = ANCHOR_REFS[label]
                out[label] = (label.removeprefix("[ref] "), text, float(med), float(med) / sec)
    return list(out.values())


class ModuleResult(dict):
    """Outcome of one module: ``module``, ``ok``, ``rows``, ``error``, ``wall_s``."""


def discover_modules(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Dotted names (``bench.bench_<area>``) of every benchmark module in ``bench_dir``, sorted."""
    return [f"bench.{p.stem}" for p in sorted(bench_dir.glob("bench_*.py"))]


def _finite_nonneg(v: float) -> bool:
    return math.isfinite(v) and v >= 0.0


def validate_rows(rows: Any, module: str = "?") -> list[dict[str, Any]]:
    """Check ``rows`` against the :func:`bench.common.row` format; return them or raise.

    Args:
        rows: what a module's ``run(quick)`` returned: a non-empty list of dicts.
        module: the module's name, quoted in error messages.

    Raises:
        ValueError: naming the module, the row and the key that is missing or wrong
        (extra keys, e.g. plot coordinates, are allowed).
    """
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{module}: run(quick) must return a non-empty list of row dicts, got {rows!r:.80}")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{module}: row {i} is {type(r).__name__}, not a dict from bench.common.row")
        label = f"{module}: row {i} ({r.get('name', '?')!r})"
        for key, types in _ROW_KEYS.items():
            if key not in r:
                raise ValueError(f"{label} lacks key {key!r}; build rows with bench.common.row")
            if not isinstance(r[key], types) or (bool not in types and isinstance(r[key], bool)):
                raise ValueError(f"{label}: {key}={r[key]!r} has type {type(r[key]).__name__}")
        if not r["group"] or not r["name"]:
            raise ValueError(f"{label}: group and name must be non-empty")
        for key in ("ours_median_s", "ours_p99_s", "ref_median_s", "ref_p99_s", "speedup"):
            v = r[key]
            if v is not None and not _finite_nonneg(float(v)):
                raise ValueError(f"{label}: {key}={v!r} is not a finite, non-negative number")
        if r["ours_p99_s"] < r["ours_median_s"]:
            raise ValueError(f"{label}: ours_p99_s < ours_median_s")
        if (r["ref_median_s"] is None) != (r["speedup"] is None):
            raise ValueError(f"{label}: speedup must be given exactly when a reference was timed")
        if r["ref_median_s"] is not None and r["ref_p99_s"] is None:
            raise ValueError(f"{label}: ref_p99_s missing while ref_median_s is set")
        if r["passed"] is not None and r["speedup"] is None:
            raise ValueError(f"{label}: passed is set but no reference was timed")
    return rows


def _child(module: str, quick: bool, out_path: str) -> int:
    """Run one module in this (child) process and write its validated rows as JSON."""
    mod = importlib.import_module(module)
    run = getattr(mod, "run", None)
    if not callable(run):
        raise AttributeError(f"{module} has no run(quick: bool) -> list[dict]")
    rows = validate_rows(run(quick=quick), module)
    # a temporary file between two of our processes: lossless (NaN kept); results.json is strict
    Path(out_path).write_text(json.dumps(strict_json.clean(rows, keep_nonfinite=True)))
    return 0


def run_module(module: str, quick: bool, timeout_s: float | None = None) -> ModuleResult:
    """Run ``module``'s ``run(quick)`` in a child Python process and collect its rows.

    Args:
        module: dotted name, e.g. ``bench.bench_scaling``.
        quick: the quick (CI smoke) mode.
        timeout_s: wall-clock limit in seconds (default per mode, see ``_TIMEOUT_S``).

    Returns:
        A :class:`ModuleResult`; ``ok`` is False when the child raised, timed out or
        returned malformed rows, with the child's stderr tail in ``error``.
    """
    timeout = timeout_s if timeout_s is not None else _TIMEOUT_S["quick" if quick else "full"]
    with tempfile.TemporaryDirectory(prefix="lnn_bench_") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "bench.run", "--child", module, "--child-out", str(out)]
        if quick:
            cmd.append("--quick")
        env = dict(os.environ, MPLBACKEND="Agg")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stderr or b"")[-2000:]
            err = tail.decode(errors="replace") if isinstance(tail, bytes) else str(tail)
            return ModuleResult(
                module=module,
                ok=False,
                rows=[],
                error=f"timed out after {timeout:.0f} s\n{err}",
                wall_s=time.perf_counter() - t0,
            )
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            return ModuleResult(
                module=module,
                ok=False,
                rows=[],
                error=f"exit status {proc.returncode}\n{proc.stderr[-3000:]}",
                wall_s=wall,
            )
        rows = json.loads(out.read_text())
        return ModuleResult(module=module, ok=True, rows=rows, error="", wall_s=wall)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """CPU model, core count, load average, Python and library versions, date (UTC)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in _VERSIONED},
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _fmt_s(v: float | None) -> str:
    """Seconds in the unit that keeps 3 significant digits readable."""
    if v is None:
        return ""
    if v < 1e-3:
        return f"{v * 1e6:.1f} us"
    if v < 1.0:
        return f"{v * 1e3:.2f} ms"
    return f"{v:.2f} s"


def _verdict(r: dict[str, Any]) -> str:
    if r["passed"] is None:
        return ""
    return "pass" if r["passed"] else "**MISS**"


def render_markdown(
    results: list[ModuleResult], info: dict[str, Any], mode: str, loaded_note: str = ""
) -> str:
    """The results.md text: header, one table per group, failures, misses, anchors."""
    v = info["versions"]
    load = info["loadavg"]
    lines = [
        f"# Benchmark results ({mode} mode)",
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['cpu']}, {info['cores']} cores; load average at start "
        + (", ".join(f"{x:.2f}" for x in load) if load else "unknown"),
        f"- Python {info['python']}, torch {v['torch']}, numpy {v['numpy']}, ncps {v['ncps']}, "
        f"cvxpy {v['cvxpy']}, daqp {v['daqp']}, osqp {v['osqp']}, clarabel {v['clarabel']}, "
        f"qpth {v['qpth']}, cvxpylayers {v['cvxpylayers']}, onnxruntime {v['onnxruntime']}, "
        f"rclpy {v['rclpy']}",
        "- Speedup = reference median / ours median, both timed in this run (> 1: ours faster).",
        "- Rows named `[ref] ...` time a reference alone (our implementation was not importable"
        " when this ran); their 'ours' columns hold that reference's times.",
    ]
    if loaded_note:
        lines.append(f"- Note: {loaded_note}")
    lines.append("")
    by_group: dict[str, list[dict[str, Any]]] = {}
    for res in results:
        for r in res["rows"]:
            by_group.setdefault(r["group"], []).append(r)
    header = (
        "| benchmark | ours median | ours p99 | reference | ref median | ref p99 | speedup "
        "| target | result | notes |"
    )
    for group, rows in by_group.items():
        lines += [f"## {group}", "", header, "|" + "---|" * 10]
        for r in rows:
            sp = "" if r["speedup"] is None else f"{r['speedup']:.2f}x"
            cells = [
                r["name"],
                _fmt_s(r["ours_median_s"]),
                _fmt_s(r["ours_p99_s"]),
                r["ref_name"],
                _fmt_s(r["ref_median_s"]),
                _fmt_s(r["ref_p99_s"]),
                sp,
                r["target"],
                _verdict(r),
                r["notes"],
            ]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    failed = [r for r in results if not r["ok"]]
    if failed:
        lines += ["## Failed modules", ""]
        for res in failed:
            first = res["error"].strip().splitlines()[-1] if res["error"].strip() else "?"
            lines.append(f"- `{res['module']}`: {first}")
        lines.append("")
    misses = [r for res in results for r in res["rows"] if r["passed"] is False]
    lines += ["## Missed targets", ""]
    lines += [f"- {r['group']} / {r['name']}: {r['speedup']:.2f}x, target {r['target']}" for r in misses] or [
        "- none"
    ]
    comp = anchor_comparison([r for res in results for r in res["rows"]])
    if comp:
        lines += [
            "",
            "## References re-measured here vs the anchors (ANCHORS.md, another 2-core machine)",
            "",
            "| reference | anchor median | this run median | this run / anchor |",
            "|---|---|---|---|",
        ]
        lines += [f"| {lab} | {txt} | {_fmt_s(med)} | {ratio:.2f} |" for lab, txt, med, ratio in comp]
    lines += [
        "",
        "## Anchors (from /work/shared/ANCHORS.md, measured on another 2-core machine)",
        "",
        *[f"- {a}" for a in ANCHOR_LINES],
        "",
        "Modules run: "
        + ", ".join(f"`{r['module']}` ({r['wall_s']:.0f} s{'' if r['ok'] else ', FAILED'})" for r in results),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry; see the module docstring. Returns the process exit status."""
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["quick", "full"], default="full")
    ap.add_argument(
        "--out-dir", type=Path, default=None, help="default: bench/ (full), bench/out/quick (quick)"
    )
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="modules to run: bench_qp (bench/bench_qp.py) or a dotted path",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 on any missed speed target too")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, args.child_out)

    quick = args.mode == "quick"
    out_dir = args.out_dir or (BENCH_DIR / "out" / "quick" if quick else BENCH_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    modules = discover_modules()
    if args.only:
        # A bare name means bench/<name>.py; a dotted path is taken as given (tests use it).
        wanted = [m if "." in m else f"bench.{m}" for m in args.only]
        unknown = [m for m in wanted if m.startswith("bench.") and m not in modules]
        if unknown:
            ap.error(f"--only names unknown modules {unknown}; found {modules}")
        modules = wanted
    if not modules:
        print("no bench/bench_*.py modules found", file=sys.stderr)
        return 1

    info = machine_info()
    results: list[ModuleResult] = []
    for m in modules:
        print(f"[bench] {m} ({args.mode}) ...", flush=True)
        res = run_module(m, quick)
        status = "ok" if res["ok"] else "FAILED"
        print(f"[bench] {m}: {status}, {len(res['rows'])} rows, {res['wall_s']:.1f} s", flush=True)
        if not res["ok"]:
            print(res["error"], file=sys.stderr)
        results.append(res)

    cores = info["cores"] or 1
    load = info["loadavg"][0] if info["loadavg"] else 0.0
    note = (
        f"the machine was shared and loaded (1-min load {load:.1f} on {cores} cores); "
        "absolute times are inflated and noisy, ratios from the same run are what to read"
        if load > 0.5 * cores
        else ""
    )
    md = render_markdown(results, info, args.mode, note)
    (out_dir / "results.md").write_text(md)
    payload = {"mode": args.mode, "machine": info, "note": note, "modules": results}
    strict_json.write(out_dir / "results.json", payload)
    if not args.no_plots:
        from bench.plots import make_plots

        for p in make_plots([r for res in results for r in res["rows"]], out_dir):
            print(f"[bench] wrote {p}")
    print(f"[bench] wrote {out_dir / 'results.md'} and results.json")

    failed = [r["module"] for r in results if not r["ok"]]
    misses = [r for res in results for r in res["rows"] if r["passed"] is False]
    if misses:
        print(f"[bench] {len(misses)} missed speed target(s):")
        for r in misses:
            print(f"  - {r['group']} / {r['name']}: {r['speedup']:.2f}x vs target {r['target']}")
    if failed:
        print(f"[bench] FAILED modules: {', '.join(failed)}", file=sys.stderr)
        return 1
    if misses and args.strict:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
