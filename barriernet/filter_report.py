"""What one safety-filter call did (:class:`FilterReport`), built in one place (:class:`ReportFactory`)."""

from __future__ import annotations

import time

import numpy as np

__all__ = ["STATUSES", "FilterReport", "ReportFactory", "differs"]

#: FilterReport.status values (SafetyStatus.msg constants, lower case).
STATUSES = ("optimal", "relaxed", "infeasible", "invalid_input", "stale_input", "solver_error")

_clock = time.perf_counter
_ACTIVE_TOL = 1e-7


class FilterReport:
    """What one filter call did; fields mirror ``lnn_control/SafetyStatus.msg``.

    constraint_names: one per QP row; barrier_values (m,) h(x) per row (clearance in m for
    obstacle barriers; 1e30 for scan rows without a point; nan when unknown); active (m,)
    bool: row tight at the output (residual within 1e-7); slack (m,): violation allowed on
    each row; total_slack: their sum; status: one of :data:`STATUSES`; solver_name;
    solve_time (s, the whole filter call); fallback_used / fallback_reason; intervened: the
    output differs from ``u_nom`` beyond ``numpy.allclose`` tolerances (1e-8 + 1e-5 |u_nom|).
    """

    __slots__ = (
        "constraint_names",
        "barrier_values",
        "_active",
        "_residual",
        "slack",
        "total_slack",
        "status",
        "solver_name",
        "solve_time",
        "fallback_used",
        "fallback_reason",
        "intervened",
    )

    def __init__(
        self,
        constraint_names: tuple[str, ...],
        barrier_values: np.ndarray,
        active: np.ndarray | None,
        slack: np.ndarray,
        total_slack: float,
        status: str,
        solver_name: str,
        solve_time: float,
        fallback_used: bool,
        fallback_reason: str,
        intervened: bool,
        residual: np.ndarray | None = None,
    ) -> None:
        self.constraint_names = constraint_names
        self.barrier_values = barrier_values
        self._active = active  # None: computed on first access from ``residual`` (G u - h)
        self._residual = residual
        self.slack = slack
        self.total_slack = total_slack
        self.status = status
        self.solver_name = solver_name
        self.solve_time = solve_time
        self.fallback_used = fallback_used
        self.fallback_reason = fallback_reason
        self.intervened = intervened

    @property
    def active(self) -> np.ndarray:
        """(m,) bool: rows tight at the output."""
        if self._active is None:
            res = self._residual if self._residual is not None else np.full(len(self.constraint_names), -1.0)
            self._active = res >= -_ACTIVE_TOL
        return self._active

    def __repr__(self) -> str:
        return (
            f"FilterReport(status={self.status!r}, intervened={self.intervened}, "
            f"fallback_used={self.fallback_used}, fallback_reason={self.fallback_reason!r}, "
            f"total_slack={self.total_slack:g}, rows={len(self.constraint_names)}, "
            f"min_barrier={np.min(self.barrier_values, initial=np.inf):g}, "
            f"solver={self.solver_name}, solve_time={self.solve_time * 1e6:.1f} us)"
        )


def differs(u: list[float], u_nom: list[float]) -> bool:
    """Not ``numpy.allclose(u, u_nom)``: some |u - u_nom| > 1e-8 + 1e-5 |u_nom| (nan counts as differing)."""
    for a, b in zip(u, u_nom):
        if not abs(a - b) <= 1e-8 + 1e-5 * abs(b):
            return True
    return False


class ReportFactory:
    """Every :class:`FilterReport` of one filter, with its constant fields (row names, solver
    name, the shared read-only zero slack) bound once; ``solve_time`` runs from ``t0``."""

    __slots__ = ("constraint_names", "solver_name", "zero_slack")

    def __init__(self, constraint_names: tuple[str, ...], solver_name: str) -> None:
        self.constraint_names = constraint_names
        self.solver_name = solver_name
        self.zero_slack = np.zeros(len(constraint_names))
        self.zero_slack.setflags(write=False)

    def make(
        self,
        t0: float,
        status: str,
        barrier_values: np.ndarray,
        residual: np.ndarray | None,
        intervened: bool,
        slack: np.ndarray | None = None,
        total_slack: float = 0.0,
        fallback_reason: str | None = None,
    ) -> FilterReport:
        """The report of a call that started at ``t0``: ``residual`` (m,) = G u - h at the output
        gives ``active`` (None: no row active); ``fallback_reason`` given: a fallback's report."""
        return FilterReport(
            self.constraint_names,
            barrier_values,
            None,
            self.zero_slack if slack is None else slack,
            total_slack,
            status,
            self.solver_name,
            _clock() - t0,
            fallback_reason is not None,
            fallback_reason or "",
            intervened,
            residual,
        )
