"""CI smoke test of `make bench`: every benchmark module's quick mode runs and returns valid rows.

Each ``bench/bench_*.py`` runs in its own process through the real runner (as
``python -m bench.run --mode quick`` does), so a module that raises, hangs or returns
malformed rows fails here. The runner's own failure paths are checked with small
throw-away modules put on PYTHONPATH.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench import run as bench_run
from bench.common import row
from bench.plots import make_plots, plot_scaling

MODULES = bench_run.discover_modules()


def test_discovers_the_benchmark_modules() -> None:
    assert "bench.bench_scaling" in MODULES
    assert all(m.startswith("bench.bench_") for m in MODULES)
    assert "bench.run" not in MODULES and "bench.common" not in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_quick_mode_runs_and_returns_valid_rows(module: str) -> None:
    res = bench_run.run_module(module, quick=True, timeout_s=170)
    assert res["ok"], f"{module} failed in quick mode:\n{res['error']}"
    rows = bench_run.validate_rows(res["rows"], module)
    for r in rows:
        assert r["ours_median_s"] > 0.0, f"{module}: {r['name']} timed at zero"
        if r["speedup"] is not None:
            assert math.isclose(r["speedup"], r["ref_median_s"] / r["ours_median_s"], rel_tol=1e-9)


def _good_row() -> dict:
    return row("g", "n", np.array([1.0, 2.0, 3.0]), np.array([4.0, 6.0, 8.0]), "ref", ">= 1x", 1.0)


def test_row_format_known_values() -> None:
    r = _good_row()
    assert r["ours_median_s"] == 2.0 and r["ref_median_s"] == 6.0
    assert r["speedup"] == 3.0 and r["passed"] is True
    assert bench_run.validate_rows([r]) == [r]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("speedup"), "lacks key 'speedup'"),
        (lambda r: r.update(ours_median_s=float("nan")), "finite"),
        (lambda r: r.update(ours_median_s=-1.0), "non-negative"),
        (lambda r: r.update(ours_p99_s=0.5), "ours_p99_s < ours_median_s"),
        (lambda r: r.update(speedup=None), "speedup must be given"),
        (lambda r: r.update(passed="yes"), "passed='yes'"),
        (lambda r: r.update(name=""), "non-empty"),
        (lambda r: r.update(ours_median_s=True), "ours_median_s=True"),
    ],
)
def test_malformed_rows_are_rejected_naming_the_key(mutate, message: str) -> None:
    r = _good_row()
    mutate(r)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bench_run.validate_rows([r], "bench.fake")


@pytest.mark.parametrize("rows", [[], None, [1.0], "rows"])
def test_non_list_or_empty_results_are_rejected(rows) -> None:
    with pytest.raises(ValueError, match="bench.fake"):
        bench_run.validate_rows(rows, "bench.fake")


def _write_module(tmp_path: Path, name: str, body: str) -> str:
    """A throw-away module in package ``smoke_mods``; returns its dotted name."""
    pkg = tmp_path / "smoke_mods"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").touch()
    (pkg / f"{name}.py").write_text(textwrap.dedent(body))
    return f"smoke_mods.{name}"


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_a_raising_module_is_reported_as_failed(on_path: Path) -> None:
    mod = _write_module(
        on_path, "smoke_raises", "def run(quick):\n    raise RuntimeError('solver exploded')\n"
    )
    res = bench_run.run_module(mod, quick=True, timeout_s=60)
    assert not res["ok"] and res["rows"] == []
    assert "solver exploded" in res["error"]


def test_a_module_with_malformed_rows_is_reported_as_failed(on_path: Path) -> None:
    mod = _write_module(on_path, "smoke_bad_rows", "def run(quick):\n    return [{'group': 'g'}]\n")
    res = bench_run.run_module(mod, quick=True, timeout_s=60)
    assert not res["ok"]
    assert "lacks key 'name'" in res["error"]


def test_a_hanging_module_times_out(on_path: Path) -> None:
    mod = _write_module(on_path, "smoke_hangs", "import time\ndef run(quick):\n    time.sleep(60)\n")
    res = bench_run.run_module(mod, quick=True, timeout_s=3)
    assert not res["ok"] and "timed out" in res["error"]


def test_runner_exits_nonzero_when_a_module_fails_and_still_writes_the_report(on_path: Path) -> None:
    ok = _write_module(
        on_path,
        "smoke_ok",
        """
        import numpy as np
        from bench.common import row
        def run(quick):
            return [row("smoke group", "fast thing", np.full(5, 1e-6), np.full(5, 4e-6), "slow ref",
                        ">= 2x", 2.0),
                    row("smoke group", "slow thing", np.full(5, 1e-3), np.full(5, 1e-4), "fast ref",
                        ">= 1x", 1.0)]
        """,
    )
    bad = _write_module(on_path, "smoke_fails", "def run(quick):\n    raise ValueError('broken bench')\n")
    out = on_path / "out"
    args = ["--mode", "quick", "--out-dir", str(out), "--only", ok, bad]
    assert bench_run.main(args) == 1
    md = (out / "results.md").read_text()
    assert "## smoke group" in md
    assert "| fast thing | 1.0 us | 1.0 us | slow ref | 4.0 us | 4.0 us | 4.00x | >= 2x | pass |" in md
    assert (
        "| slow thing | 1.00 ms | 1.00 ms | fast ref | 100.0 us | 100.0 us | 0.10x | >= 1x | **MISS** |" in md
    )
    assert "- smoke group / slow thing: 0.10x, target >= 1x" in md
    assert f"`{bad}`: ValueError: broken bench" in md
    payload = json.loads((out / "results.json").read_text())
    assert [m["ok"] for m in payload["modules"]] == [True, False]
    assert (out / "speedups.png").stat().st_size > 1000
    # Without the failing module the misses do not fail the run, unless --strict.
    assert bench_run.main(["--mode", "quick", "--out-dir", str(out), "--only", ok]) == 0
    assert bench_run.main(["--mode", "quick", "--out-dir", str(out), "--only", ok, "--strict"]) == 1


def test_unknown_bench_module_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_run.main(["--mode", "quick", "--out-dir", str(tmp_path), "--only", "bench_nope"])
    assert exc.value.code == 2


def test_machine_info_names_versions_and_cores() -> None:
    info = bench_run.machine_info()
    assert info["cores"] >= 1 and info["cpu"]
    assert info["versions"]["torch"].startswith("2.")
    assert set(info["versions"]) >= {"torch", "numpy", "ncps", "cvxpy", "daqp", "rclpy"}


def test_scaling_plot_writes_png_and_rejects_empty(tmp_path: Path) -> None:
    rows = []
    for x in (19, 64, 256):
        r = row("s", f"step {x}", np.full(3, x * 1e-6), np.full(3, 2 * x * 1e-6), "ref")
        r["plot"] = {"figure": "step_vs_neurons", "x": x, "x_label": "neurons"}
        rows.append(r)
    paths = make_plots(rows, tmp_path)
    assert sorted(p.name for p in paths) == ["scaling_step_vs_neurons.png", "speedups.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    with pytest.raises(ValueError, match="no rows"):
        plot_scaling([], "empty", tmp_path / "x.png")


def test_filter_qp_instances_have_known_solutions() -> None:
    """Even instances cut the command (CBF row active), odd ones leave it alone (u* = u_nom)."""
    from bench.bench_extra import _tight, make_problems

    probs = make_problems(12, seed=3)
    sols = _tight(probs)
    for i, (p, u) in enumerate(zip(probs, sols)):
        u_nom = -p["q"]
        slack = float((p["G"] @ u - p["h"])[0])
        if i % 2:
            np.testing.assert_allclose(u, u_nom, atol=1e-7)
            assert slack < 0.0
        else:
            assert abs(slack) < 1e-7
            assert float((p["G"] @ u_nom - p["h"])[0]) > 0.0


def test_anchor_comparison_finds_references_alone_or_beside_ours() -> None:
    alone = row("g", "[ref] DAQP", np.full(3, 7e-6))
    paired = row("g", "solve_qp", np.full(3, 1e-6), np.full(3, 29e-6), ref_name="raw OSQP")
    again = row("g", "solve_qp", np.full(3, 1e-6), np.full(3, 1.0), ref_name="raw OSQP")
    unknown = row("g", "[ref] something else", np.full(3, 1.0))
    comp = bench_run.anchor_comparison([alone, paired, again, unknown])
    assert [c[0] for c in comp] == ["DAQP", "raw OSQP"]
    assert math.isclose(comp[0][3], 2.0) and math.isclose(comp[1][3], 1.0)
    md = bench_run.render_markdown(
        [bench_run.ModuleResult(module="m", ok=True, rows=[alone, paired], error="", wall_s=1.0)],
        bench_run.machine_info(),
        "full",
    )
    assert "| DAQP | 3.5 us | 7.0 us | 2.00 |" in md
    assert "| raw OSQP | 29 us | 29.0 us | 1.00 |" in md
