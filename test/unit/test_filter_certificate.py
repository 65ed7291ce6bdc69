"""The safety filter's certified infeasibility shortcut (a row that cannot hold anywhere in the
box skips the nominal QP): the same outputs as solving it, sound, and the solve really skipped."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.bench_filter import paths_filter


def _states(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = np.concatenate([rng.uniform(-0.95, 0.95, 2), rng.uniform(-3.0, 3.0, 2)])
        u = rng.uniform(-1.2, 1.2, 2)  # some outside the box too
        out.append((x, u, rng.uniform(0.5, 3.0, 10) if i % 3 == 0 else None))
    return out


@pytest.mark.parametrize("slack", [True, False])
def test_certificate_gives_the_outputs_of_the_qp_path(slack: bool) -> None:
    with_cert, without = paths_filter(slack), paths_filter(slack)
    assert with_cert.kernel == "scalar"
    without._kernel.row_infeasible_in_box = lambda: False  # type: ignore[method-assign]
    statuses: dict[str, int] = {}
    for x, u, g in _states(2000, seed=150):
        a, ra = with_cert.filter(x, u, gains=g)
        b, rb = without.filter(x, u, gains=g)
        assert np.array_equal(a, b), (x, u, g)
        assert ra.status == rb.status and ra.fallback_reason == rb.fallback_reason
        assert np.array_equal(ra.slack, rb.slack) and ra.total_slack == rb.total_slack
        assert np.array_equal(ra.barrier_values, rb.barrier_values)
        assert np.array_equal(ra.active, rb.active) and ra.intervened == rb.intervened
        statuses[ra.status] = statuses.get(ra.status, 0) + 1
    want = "relaxed" if slack else "infeasible"
    assert statuses.get(want, 0) > 500 and statuses.get("optimal", 0) > 100, statuses


def test_certificate_is_sound_and_skips_the_solve() -> None:
    """Whenever the certificate holds, DAQP on the same rows says infeasible; and a certified
    call makes no nominal solve."""
    f = paths_filter(True)
    kern, qp = f._kernel, f._qp
    calls = [0]
    solve = qp.solve

    def counted(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return solve(*a, **k)

    qp.solve = counted  # type: ignore[method-assign]
    certified = 0
    for x, u, g in _states(1500, seed=151):
        before = calls[0]
        _, rep = f.filter(x, u, gains=g)
        if calls[0] == before and rep.status == "relaxed":
            certified += 1
            assert kern.row_infeasible_in_box()
            _, status = solve(u, u.tolist())  # the rows of this call are still in the buffers
            assert status == "infeasible"
        elif rep.status == "relaxed":
            assert not kern.row_infeasible_in_box()
    assert certified > 300
