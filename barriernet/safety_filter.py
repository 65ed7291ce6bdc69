"""Run-time BarrierNet safety filter: nominal command in, verified safe command (or fallback) out.

Each call solves

    min_u  1/2 (u - u_nom)' W (u - u_nom)
    s.t.   G(x) u <= h(x)       (one CBF / HOCBF row per barrier row, barriernet.barriers)
           lower <= u <= upper  (the controls box; never relaxed)

with W = diag(``controls.weights``) (default I), and checks the answer independently before
returning it. The steps and what each failure gives:

1. ``x``, ``u_nom``, ``gains`` not finite (or gains <= 0), an unusable ``env`` entry
   -> fallback, status ``invalid_input``. Wrong shapes raise ``ValueError`` naming the argument.
   A finite but huge ``u_nom`` is clipped to ``[lower - 1e6 w, upper + 1e6 w]``
   (w = 1 + box width) so that the QP data stay finite; the output is unaffected in practice.
2. Fast path: if ``u_nom`` already satisfies the box and every row exactly, it is returned
   unchanged (no solver call).
3. QP (``solver``, default DAQP called directly with preallocated data). A row that cannot
   hold anywhere in the box (min over the box of G_i u above h_i by more than the check's
   tolerance; the ``scalar`` kernel tests the rows u_nom violates, in plain floats) makes the
   QP infeasible for certain: that call goes straight to the next step without a solve.
   Infeasible with ``slack.enabled``: ONE relaxed QP in (u, s), a slack s_i >= 0 on every
   row (``G u - s <= h``) under the L1 penalty ``sum_i w_i s_i`` (+ 1e-6 w_i s_i^2 /
   ``slack.penalty`` for strict convexity), w_i = ``slack.penalty`` * B^r for a row of the r-th
   lowest ``priority`` level (B = 1000; lower beyond four levels, so that the largest weight
   stays <= 1e9 ``slack.penalty``). A unit of slack on a higher level costs B times one on
   the level below, so higher levels are relaxed only where the lower ones cannot absorb it
   (an exact penalty holds a row whenever its weight exceeds the row's multiplier; with B =
   1000 this held on every seeded case of the tests, which compare with the former
   sequential method, one QP per level: same hard rows, no more slack on the top relaxed
   level, the same command when one level suffices). The rows above the highest level left
   with slack are this call's hard rows and are checked as such. Status ``relaxed``; the
   report gives each row's slack (its violation at the returned command). One solve of fixed
   size, capped at ``filter_qp.ITER_CAP`` DAQP iterations like every solve here: a solve that hits the
   cap falls back (``solver_error``), so no path's time is unbounded.
   Infeasible without slack -> fallback, status ``infeasible``; solver failure -> fallback,
   status ``solver_error``.
4. Independent check of every output: the solver's command is clipped into the box (so the
   bounds hold exactly), then every hard row is checked at the clipped command,
   ``G u <= h + 1e-9 (1 + |h|)`` (nan fails); relaxed rows report their violation as slack.
   A failed check -> fallback, status ``solver_error``.

Speed (numpy's fixed cost per call, ~0.5-1 us, dominates at these sizes, so each path keeps
the number of numpy calls small). The rows come from a row kernel (``kernel=``, one small
class each in :mod:`barriernet.filter_kernels`, chosen by name from :data:`KERNELS`; the tests
check each against ``generic``):

- ``affine``: rows affine in the state with a constant G (half-space and joint-limit barriers
  on a double integrator) are precomputed when the filter is built: ``[h; h(x)] = M x + c`` is
  one matvec per call, G is written once, and DAQP keeps one workspace (per call only the
  linear term and the bounds change, cold-started, so the answer does not depend on earlier
  calls);
- ``scalar``: small problems of the built-in point models (planar, half-space / disc / speed
  rows) in plain floats;
- ``generic``: everything else, written into preallocated arrays (consecutive obstacle
  barriers as one vectorised block; scan points as complex numbers).

This class only orchestrates: rows (the kernel) -> QP (:mod:`barriernet.filter_qp`) ->
relaxation -> independent check (the kernel) -> report (one
:class:`barriernet.filter_report.ReportFactory`); the buffers are a
:class:`barriernet.filter_rows.QPRows`.

Fallbacks (``fallback.type``): ``zero``; ``brake`` (the dynamics' braking command, e.g.
unicycle a = -k v); ``constant`` (``value``, must lie in the box); ``gravity_compensation``
(manipulator bias torque - ``damping`` dq). Every fallback is clipped to the box and checked
finite (else the box point nearest zero).

Class-K gains: from the YAML (``gains`` per barrier) or per call (``filter(..., gains=)``),
a vector ordered as :attr:`SafetyFilter.gain_names` (barrier order; ``<name>.k`` for
relative degree 1, ``<name>.p1``, ``<name>.p2`` for relative degree 2), all > 0: a
BarrierNet policy's ``gain_names`` should list exactly these. A mapping ``{gain name: value}``
sets some of them (the others keep their YAML values).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from barriernet.barriers import ActuatorBox, Barrier, InputError, make_barrier
from barriernet.dynamics import ControlAffine, make_dynamics
from barriernet.filter_kernels import KERNELS, RowsUndefined, choose_kernel
from barriernet.filter_qp import NominalQP, RelaxedQP
from barriernet.filter_report import STATUSES, FilterReport, ReportFactory, differs
from barriernet.filter_rows import QPRows
from barriernet.qp import SOLVERS

__all__ = ["FilterReport", "SafetyFilter", "STATUSES", "FALLBACKS", "KERNELS"]

#: fallback.type values.
FALLBACKS = ("zero", "brake", "constant", "gravity_compensation")

_clock = time.perf_counter
_isfinite = math.isfinite
_asarray = np.asarray
_TOP_KEYS = ("dynamics", "controls", "barriers", "slack", "fallback", "solver", "kernel")


def _floats(v: Any, where: str, size: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a list of numbers, got {v!r}") from None
    if size is not None and a.size != size:
        raise ValueError(f"{where}: expected {size} values, got {a.size}")
    return a


def _rebuild_filter(recipe: dict[str, Any]) -> SafetyFilter:
    """A filter from :attr:`SafetyFilter._recipe` (barriers copied again: building binds them)."""
    return SafetyFilter(**{**recipe, "barriers": copy.deepcopy(recipe["barriers"])})


class SafetyFilter:
    """CBF-QP safety filter (see the module docstring for the problem and the failure handling).

    Args:
        dynamics: a :class:`barriernet.dynamics.ControlAffine`.
        barriers: :class:`barriernet.barriers.Barrier` objects (not yet bound).
        lower, upper: (n_controls,) finite control box, lower <= upper.
        names: control names (default u0, u1, ...). weights: (n_controls,) > 0, W's diagonal.
        slack_enabled, slack_penalty: relaxation of infeasible rows (L1 penalty > 0).
        fallback: one of :data:`FALLBACKS`; fallback_value: (n_controls,) for ``constant``;
        fallback_damping: N m s/rad for ``gravity_compensation`` (default: the dynamics' damping).
        solver: a name in :data:`barriernet.qp.SOLVERS` (``daqp`` uses the direct fast path).
        kernel: ``auto`` (the first of :data:`KERNELS` the rows allow) or a name in :data:`KERNELS`
            (YAML ``kernel``); the one in use is :attr:`kernel`.
            Asking for one the rows do not allow raises ``ValueError``.

    A filter reuses preallocated buffers between calls: use one instance per thread.
    """

    def __init__(
        self,
        dynamics: ControlAffine,
        barriers: list[Barrier],
        lower: Any,
        upper: Any,
        names: list[str] | None = None,
        weights: Any = None,
        slack_enabled: bool = True,
        slack_penalty: float = 1e4,
        fallback: str = "zero",
        fallback_value: Any = None,
        fallback_damping: float | None = None,
        solver: str = "daqp",
        kernel: str = "auto",
    ) -> None:
        if not isinstance(dynamics, ControlAffine):
            raise ValueError(f"dynamics: expected a ControlAffine, got {type(dynamics).__name__}")
        # the recipe for copies (pickle / copy.deepcopy rebuild the filter from it: its buffers
        # are views of one another, which an array-by-array copy would silently separate)
        try:
            unbound: list[Barrier] | None = copy.deepcopy(list(barriers))
        except Exception:  # e.g. a user barrier holding something that does not copy
            unbound = None
        self._recipe = {
            "dynamics": dynamics, "barriers": unbound, "lower": lower, "upper": upper, "names": names,
            "weights": weights, "slack_enabled": slack_enabled, "slack_penalty": slack_penalty,
            "fallback": fallback, "fallback_value": fallback_value, "fallback_damping": fallback_damping,
            "solver": solver, "kernel": kernel,
        }  # fmt: skip
        self.dynamics = dyn = dynamics
        n = self.n_controls = dyn.n_controls
        self.n_state = dyn.n_state
        lo = _floats(lower, "controls.lower", n)
        hi = _floats(upper, "controls.upper", n)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError("controls.lower/upper: the control box must be finite")
        for b in barriers:
            b.bind(dyn)
            if isinstance(b, ActuatorBox) and b.box is not None:
                lo, hi = np.maximum(lo, b.box[0]), np.minimum(hi, b.box[1])
        if not (lo <= hi).all():
            raise ValueError(
                f"controls: lower must be <= upper, got lower={lo.tolist()}, upper={hi.tolist()}"
            )
        self.lower, self.upper = lo, hi
        self.lower.setflags(write=False)
        self.upper.setflags(write=False)
        self.control_names = tuple(str(s) for s in names) if names else tuple(f"u{i}" for i in range(n))
        if len(self.control_names) != n:
            raise ValueError(f"controls.names: {n} controls, got {len(self.control_names)} names")
        w = np.ones(n) if weights is None else _floats(weights, "controls.weights", n)
        if not (np.isfinite(w).all() and (w > 0).all()):
            raise ValueError(f"controls.weights: must be finite and > 0, got {w.tolist()}")
        self.weights = w
        self.slack_enabled = bool(slack_enabled)
        self.slack_penalty = float(slack_penalty)
        if not (math.isfinite(self.slack_penalty) and self.slack_penalty > 0):
            raise ValueError(f"slack.penalty: must be a finite number > 0, got {slack_penalty!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver: {solver!r} unknown; choose one of {sorted(SOLVERS)}")
        self.solver_name = solver
        self._init_fallback(fallback, fallback_value, fallback_damping)

        # ---- rows (kernel), the two QPs, the report --------------------------------------
        rows = [b for b in barriers if b.n_rows > 0]
        self.barriers = list(barriers)
        qp = self._qp_rows = QPRows(dyn, rows, lo, hi, w)
        self.n_rows = qp.n_rows
        self.constraint_names = qp.constraint_names
        self.gain_names = qp.gain_names
        self.n_gains = len(self.gain_names)
        self.priorities = qp.priorities
        self._hv = qp.hv
        kern = self._kernel = choose_kernel(kernel, qp)
        #: the row kernel in use (a name in KERNELS)
        self.kernel = kern.name
        self._qp = NominalQP(qp, solver, kern.constant_G)
        self._relax = RelaxedQP(qp, self.slack_penalty, solver, kern.constant_G)
        self._report = ReportFactory(self.constraint_names, solver).make  # every report comes from here
        self._xshape, self._ushape = (self.n_state,), (n,)
        self._gshape = (self.n_gains,)
        self._lo_l, self._hi_l = lo.tolist(), hi.tolist()

    def __reduce__(self) -> tuple[Any, ...]:
        """Copies and pickles are new filters built from the same arguments."""
        if self._recipe["barriers"] is None:
            raise TypeError(
                "this SafetyFilter cannot be copied: a barrier could not be copied when it was built"
            )
        return (_rebuild_filter, (self._recipe,))

    # ---- configuration ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SafetyFilter:
        """Build from the ``safety_filter`` schema (docs/ARCHITECTURE.md); ValueError says what to fix."""
        if not isinstance(cfg, Mapping):
            raise ValueError(f"safety_filter: expected a mapping, got {type(cfg).__name__}")
        unknown = set(cfg) - set(_TOP_KEYS)
        if unknown:
            raise ValueError(f"safety_filter: unknown key(s) {sorted(unknown)}; allowed: {list(_TOP_KEYS)}")
        if "dynamics" not in cfg:
            raise ValueError("safety_filter: missing 'dynamics' (e.g. {type: diff_drive})")
        dyn = make_dynamics(cfg["dynamics"])
        c = cfg.get("controls")
        if not isinstance(c, Mapping) or "lower" not in c or "upper" not in c:
            raise ValueError("safety_filter.controls: give {names: [...], lower: [...], upper: [...]}")
        bad = set(c) - {"names", "lower", "upper", "weights"}
        if bad:
            raise ValueError(f"safety_filter.controls: unknown key(s) {sorted(bad)}")
        blist = cfg.get("barriers", [])
        if not isinstance(blist, (list, tuple)):
            raise ValueError("safety_filter.barriers: expected a list of barrier mappings")
        barriers = []
        seen: set[str] = set()
        for i, bc in enumerate(blist):
            where = f"safety_filter.barriers[{i}]"
            if isinstance(bc, Mapping) and "name" in bc:
                where = f"safety_filter.{bc['name']}"
            b = make_barrier(bc, where)
            if b.name in seen:
                raise ValueError(f"{where}: duplicate barrier name {b.name!r}")
            seen.add(b.name)
            barriers.append(b)
        s = cfg.get("slack", {}) or {}
        if not isinstance(s, Mapping) or set(s) - {"enabled", "penalty"}:
            raise ValueError("safety_filter.slack: expected {enabled: bool, penalty: number}")
        f = cfg.get("fallback", {"type": "zero"}) or {"type": "zero"}
        if not isinstance(f, Mapping) or set(f) - {"type", "value", "damping"}:
            raise ValueError("safety_filter.fallback: expected {type: ..., value: [...], damping: ...}")
        return cls(
            dyn,
            barriers,
            c["lower"],
            c["upper"],
            names=list(c["names"]) if c.get("names") is not None else None,
            weights=c.get("weights"),
            slack_enabled=bool(s.get("enabled", True)),
            slack_penalty=float(s.get("penalty", 1e4)),
            fallback=str(f.get("type", "zero")),
            fallback_value=f.get("value"),
            fallback_damping=f.get("damping"),
            solver=str(cfg.get("solver", "daqp")),
            kernel=str(cfg.get("kernel", "auto")),
        )

    def _init_fallback(self, kind: str, value: Any, damping: Any) -> None:
        if kind not in FALLBACKS:
            raise ValueError(
                f"safety_filter.fallback.type: {kind!r} unknown; choose one of {list(FALLBACKS)}"
            )
        self.fallback_type = kind
        self._fb_value = np.clip(np.zeros(self.n_controls), self.lower, self.upper)
        if kind == "constant":
            if value is None:
                raise ValueError("safety_filter.fallback.value: required for type constant")
            v = _floats(value, "safety_filter.fallback.value", self.n_controls)
            if not (np.isfinite(v).all() and (v >= self.lower).all() and (v <= self.upper).all()):
                raise ValueError(f"safety_filter.fallback.value: must be finite and inside the box, got {v}")
            self._fb_value = v
        elif value is not None:
            raise ValueError(f"safety_filter.fallback.value: only for type constant, not {kind}")
        self._fb_damping = None
        if kind == "gravity_compensation":
            try:
                self.dynamics.bias(np.zeros(self.n_state))
            except ValueError as e:
                raise ValueError(f"safety_filter.fallback: {e}") from None
            if damping is not None:
                d = float(damping)
                if not (math.isfinite(d) and d >= 0):
                    raise ValueError(f"safety_filter.fallback.damping: must be >= 0, got {damping!r}")
                self._fb_damping = d
        elif damping is not None:
            raise ValueError("safety_filter.fallback.damping: only for type gravity_compensation")

    # ---- the filter: rows -> QP -> relaxation -> independent check -> report -----------------
    def filter(
        self,
        x: Any,
        u_nom: Any,
        gains: Any = None,
        env: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, FilterReport]:
        """Safe command (n_controls,) and its :class:`FilterReport` for state ``x`` (n_state,).

        Args:
            x: filter state (units of the dynamics' state_names).
            u_nom: (n_controls,) nominal command.
            gains: optional (n_gains,) class-K gains > 0 ordered as :attr:`gain_names` (e.g. a
                BarrierNet policy's gain outputs), or a mapping gain name -> value.
            env: optional run-time data, e.g. ``{"scan_points": (N, 2)}`` world-frame points.
        Raises:
            ValueError: naming the argument whose shape is wrong.
        """
        t0 = _clock()
        x = _asarray(x, dtype=np.float64)
        if x.shape != self._xshape:
            x = self._reshape(x, self.n_state, "x")
        u_nom = _asarray(u_nom, dtype=np.float64)
        if u_nom.shape != self._ushape:
            u_nom = self._reshape(u_nom, self.n_controls, "u_nom")
        ul = u_nom.tolist()
        if not _isfinite(sum(x.tolist()) + sum(ul)):  # nan / inf (or an overflowing sum)
            if not np.isfinite(x).all():
                return self._fallback(x, "x has non-finite values", "invalid_input", u_nom, None, t0)
            if not np.isfinite(u_nom).all():
                return self._fallback(x, "u_nom has non-finite values", "invalid_input", u_nom, None, t0)
        gv = None
        if gains is not None:
            if type(gains) is np.ndarray and gains.shape == self._gshape and gains.dtype == np.float64:
                gv = gains  # a policy's gain outputs as they come (the common case)
            else:
                gv = self._gain_vector(gains)
            if not all(0.0 < g < math.inf for g in gv.tolist()):  # nan fails too
                reason = f"gains must be finite and > 0, got {gv.tolist()}"
                return self._fallback(x, reason, "invalid_input", u_nom, None, t0)
        kern = self._kernel
        try:
            excess = kern.rows(x, u_nom, ul, gv, env)
        except InputError as e:
            return self._fallback(x, str(e), "invalid_input", u_nom, None, t0)
        except RowsUndefined as e:
            return self._fallback(x, str(e), "solver_error", u_nom, None, t0)
        if excess <= 0.0:  # the nominal command satisfies the box and every row exactly
            hv, res = kern.nominal
            return u_nom.copy(), self._report(t0, "optimal", hv, res, False)
        if excess != excess:
            reason = "constraint rows are not finite (dynamics or barrier at this state)"
            return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)
        if kern.row_infeasible_in_box():  # certified: no QP call needed to know it is infeasible
            self._qp.linear_term(u_nom, ul, excess)
            sol, status = u_nom, "infeasible"
        else:
            sol, status = self._qp.solve(u_nom, ul, excess)
        if status == "optimal":
            checked = kern.verify(sol, ul)
            if checked is None:
                reason = "solution failed the independent constraint check"
                return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)
            u, res, intervened = checked
            return u, self._report(t0, "optimal", self._hv.copy(), res, intervened)
        if status == "infeasible":
            if not self.slack_enabled:
                reason = "CBF constraints infeasible within the control box (slack disabled)"
                return self._fallback(x, reason, "infeasible", u_nom, self._hv.copy(), t0)
            return self._relaxed(x, u_nom, t0)
        reason = f"{self.solver_name} solver failed" + (
            " (iteration cap)" if status == "iteration_cap" else ""
        )
        return self._fallback(x, reason, "solver_error", u_nom, self._hv.copy(), t0)

    def _relaxed(self, x: np.ndarray, u_nom: np.ndarray, t0: float) -> tuple[np.ndarray, FilterReport]:
        """One relaxed QP (module docstring, step 3) on the rows of this call, checked."""
        out = self._relax.command(self._qp.f)
        if isinstance(out, str):
            return self._fallback(x, out, "solver_error", u_nom, self._hv.copy(), t0)
        u, ul, viol, res, total = out
        return u, self._report(t0, "relaxed", self._hv.copy(), res, differs(ul, u_nom.tolist()), viol, total)

    def _gain_vector(self, gains: Any) -> np.ndarray:
        """(n_gains,) from an array ordered as :attr:`gain_names`, or a mapping name -> gain
        (names not given keep their YAML value)."""
        if isinstance(gains, Mapping):
            unknown = set(gains) - set(self.gain_names)
            if unknown:
                raise ValueError(f"gains: unknown name(s) {sorted(unknown)}; known: {list(self.gain_names)}")
            gv = self._qp_rows.gain_default.copy()
            for i, name in enumerate(self.gain_names):
                if name in gains:
                    gv[i] = float(gains[name])
            return gv
        gv = np.asarray(gains, dtype=np.float64)
        if gv.shape != (self.n_gains,):
            gv = self._reshape(gv, self.n_gains, "gains")
        return gv

    @staticmethod
    def _reshape(a: np.ndarray, size: int, name: str) -> np.ndarray:
        if a.size != size or (a.ndim > 1 and max(a.shape) != size):
            raise ValueError(f"{name}: expected {size} values (shape ({size},)), got shape {a.shape}")
        return a.reshape(size)

    def constraints(
        self, x: Any, gains: Any = None, env: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The QP rows at ``x``: copies of G (m, n_controls), h (m,) (``G u <= h``) and h(x) (m,).

        For inspection and tests; raises ``ValueError`` / :class:`barriernet.barriers.InputError`
        where :meth:`filter` would fall back."""
        x = self._reshape(np.asarray(x, dtype=np.float64), self.n_state, "x")
        if not np.isfinite(x).all():
            raise ValueError("x: non-finite values")
        gv = None
        if gains is not None:
            gv = self._gain_vector(gains)
            if not (np.isfinite(gv).all() and (gv > 0).all()):
                raise ValueError(f"gains must be finite and > 0, got {gv.tolist()}")
        qp = self._qp_rows
        qp.fill(x, gv, env)
        return qp.G.copy(), qp.h.copy(), qp.hv.copy()

    def row_terms(
        self, x: Any, env: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gain-free pieces of the QP rows at ``x``: G (m, n_controls) and a, b, c (m,) with

            G u <= a + ks b + kp c      (per-row gains ks, kp as :meth:`row_gain_index` maps them)

        Relative degree 1: b = h(x), c = 0 (a holds Lf h); HOCBF rows: b = h'(x), c = h(x)
        (a holds Lf^2 h). For training a BarrierNet policy through a differentiable QP: these
        are data, computed once per sample; only the gains are learned. Rows that constrain
        nothing (scan rows without a point: G = 0 and a, b, c >= 0) come as a = +inf, b = c = 0.
        Raises ``ValueError`` / :class:`barriernet.barriers.InputError` where :meth:`filter`
        would fall back (non-finite ``x``, a missing ``env`` entry)."""
        x = self._reshape(np.asarray(x, dtype=np.float64), self.n_state, "x")
        if not np.isfinite(x).all():
            raise ValueError("x: non-finite values")
        return self._qp_rows.row_terms(x, env)

    def row_gain_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """How the gain vector g (ordered as :attr:`gain_names`) gives each row's (ks, kp):
        ``(i1, i2, deg2)`` (m,) each, with ks = g[i1] + deg2 g[i2], kp = deg2 g[i1] g[i2]
        (degree 1: ks = k; HOCBF: ks = p1 + p2, kp = p1 p2)."""
        qp = self._qp_rows
        return qp.gidx[0].copy(), qp.gidx[1].copy(), qp.rel2 > 0

    def barrier_values(self, x: Any, env: Mapping[str, Any] | None = None) -> np.ndarray:
        """h(x) of every row (m,) at the default gains; nan where it cannot be computed
        (non-finite x, a barrier whose ``env`` entry is missing)."""
        return self._qp_rows.barrier_values(x, env)

    # ---- fallback ---------------------------------------------------------------------------
    def fallback_command(self, x: Any) -> np.ndarray:
        """The configured fallback command at state ``x``, clipped to the box (finite always)."""
        u = self._fb_value
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        if xa.size == self.n_state and all(map(_isfinite, xa.tolist())):
            try:
                if self.fallback_type == "brake":
                    u = np.asarray(self.dynamics.brake(xa), dtype=np.float64).reshape(-1)
                elif self.fallback_type == "gravity_compensation":
                    u = np.asarray(self.dynamics.bias(xa), dtype=np.float64).reshape(-1)
                    k = self.n_state // 2
                    d = self._fb_damping
                    if d is None:
                        d = float(getattr(self.dynamics, "damping", 0.0))
                    u = u - d * xa[k:]
            except Exception:  # a fallback must never raise: use the default point
                u = self._fb_value
        ul = u.tolist() if u.shape == self._ushape else []
        if len(ul) != self.n_controls or not all(map(_isfinite, ul)):
            ul = [0.0] * self.n_controls
        # clipped into the box (plain floats: numpy's per-call cost dominates at this size)
        return np.array([a if v < a else (b if v > b else v) for a, v, b in zip(self._lo_l, ul, self._hi_l)])

    def fallback(self, x: Any, reason: str, status: str = "invalid_input") -> tuple[np.ndarray, FilterReport]:
        """Fallback command and report for a caller that knows the input is bad (``reason``)."""
        if status not in STATUSES:
            raise ValueError(f"status: {status!r} not one of {STATUSES}")
        return self._fallback(x, str(reason), status, None, None, time.perf_counter())

    def _fallback(
        self,
        x: Any,
        reason: str,
        status: str,
        u_nom: np.ndarray | None,
        hv: np.ndarray | None,
        t0: float,
    ) -> tuple[np.ndarray, FilterReport]:
        u = self.fallback_command(x)
        if hv is None:
            hv = self.barrier_values(x)
        intervened = True
        if u_nom is not None and u_nom.shape == u.shape:
            nl = u_nom.tolist()
            if all(map(_isfinite, nl)):
                intervened = differs(u.tolist(), nl)
        return u, self._report(t0, status, hv, None, intervened, fallback_reason=reason)

    def __repr__(self) -> str:
        return (
            f"SafetyFilter({type(self.dynamics).__name__}, {self.n_controls} controls, {self.n_rows} rows, "
            f"solver={self.solver_name}, fallback={self.fallback_type})"
        )
