"""barriernet.SafetyFilter: configs, QP answers against cvxpy, property tests (box always exact,
rows held when feasible, whatever the input), relaxation by priority, fallbacks, and closed-loop
safety over 1,000 sampled-data episodes each of a unicycle among obstacles and a double
integrator in a box."""

from __future__ import annotations

import math
import pathlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barriernet import FilterReport, SafetyFilter
from barriernet.safety_filter import STATUSES
from lnn_control.config import load_filter_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
DD_CFG = load_filter_config(ROOT / "config" / "diff_drive.yaml")
ARM_CFG = load_filter_config(ROOT / "config" / "arm.yaml")
OBST = [[0.9, 0.3, 0.35], [-0.7, 1.1, 0.30], [0.1, -1.2, 0.40]]


def unicycle_cfg(margin: float = 0.03, gains: tuple[float, float] = (2.0, 2.0)) -> dict[str, Any]:
    return {
        "dynamics": {"type": "unicycle"},
        "controls": {"names": ["omega", "a"], "lower": [-3.0, -3.0], "upper": [3.0, 3.0]},
        "barriers": [
            {"type": "circle_obstacle", "name": f"obs{i}", "center": [cx, cy], "radius": r,
             "robot_radius": 0.15, "margin": margin, "gains": list(gains)}
            for i, (cx, cy, r) in enumerate(OBST)
        ]
        + [{"type": "speed_limit", "name": "speed", "max": 1.0, "gains": [2.0], "priority": -1}],
        "fallback": {"type": "brake"},
    }  # fmt: skip


def box_cfg(margin: float = 0.01, dim: int = 2) -> dict[str, Any]:
    walls = []
    for i in range(dim):
        for s in (1.0, -1.0):
            nrm = [0.0] * dim
            nrm[i] = s
            walls.append({"type": "half_space", "name": f"wall{i}{'+' if s > 0 else '-'}", "normal": nrm,
                          "offset": 1.0, "margin": margin, "gains": [1.0, 1.0]})  # fmt: skip
    return {
        "dynamics": {"type": "double_integrator", "dim": dim},
        "controls": {"lower": [-2.0] * dim, "upper": [2.0] * dim},
        "barriers": walls + [{"type": "speed_limit", "name": "speed", "max": 1.5, "gains": [2.0]}],
        "fallback": {"type": "brake"},
    }


SE3_CFG = {
    "dynamics": {"type": "double_integrator", "dim": 3},
    "controls": {"lower": [-1.0, -1.0, -1.0], "upper": [1.0, 1.0, 1.0], "weights": [1.0, 2.0, 0.5]},
    "barriers": [
        {
            "type": "superellipsoid_obstacle",
            "name": "body",
            "center": [0.0, 0.0, 0.0],
            "axes": [0.5, 0.3, 0.4],
            "exponent": 4,
            "robot_radius": 0.1,
            "gains": [1.0, 2.0],
        },
        {
            "type": "half_space",
            "name": "floor",
            "normal": [0.0, 0.0, -1.0],
            "offset": 1.0,
            "gains": [2.0, 2.0],
        },
    ],
}

DD = SafetyFilter.from_config(DD_CFG)
ARM = SafetyFilter.from_config(ARM_CFG)
UNI = SafetyFilter.from_config(unicycle_cfg())
BOX = SafetyFilter.from_config(box_cfg())
SE3 = SafetyFilter.from_config(SE3_CFG)


def tight_qp(w: np.ndarray, u_nom: np.ndarray, G: np.ndarray, h: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    """Reference: min (u - u_nom)' diag(w) (u - u_nom) s.t. G u <= h, box, by cvxpy/Clarabel at 1e-12."""
    import cvxpy as cp

    scale = np.maximum(np.linalg.norm(G, axis=1), 1e-12)  # same rows, better conditioned
    G, h = G / scale[:, None], h / scale
    u = cp.Variable(u_nom.size)
    prob = cp.Problem(
        cp.Minimize(cp.sum(cp.multiply(w, cp.square(u - u_nom)))), [G @ u <= h, u >= lo, u <= hi]
    )
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert prob.status == "optimal"
    return np.asarray(u.value)


def scan_points(rng: np.random.Generator, n: int = 72) -> np.ndarray:
    return rng.uniform(-3.0, 3.0, (n, 2))


# ---- configuration ---------------------------------------------------------------------------


def test_from_config_both_robot_files() -> None:
    assert DD.n_controls == 2 and DD.n_state == 3 and DD.n_rows == 16 + 4
    assert DD.constraint_names[:2] == ("scan[0]", "scan[1]") and DD.constraint_names[-1] == "wall_yn"
    assert DD.gain_names == ("scan.k", "wall_xp.k", "wall_xn.k", "wall_yp.k", "wall_yn.k")
    assert DD.control_names == ("v", "omega") and DD.fallback_type == "zero"
    assert ARM.n_controls == 3 and ARM.n_state == 6 and ARM.n_rows == 12 + 1  # + floor (tool site)
    assert ARM.gain_names == ("q_limits.p1", "q_limits.p2", "dq_limits.k", "floor.p1", "floor.p2")
    assert ARM.constraint_names[-1] == "floor"
    assert ARM.fallback_type == "gravity_compensation"
    np.testing.assert_array_equal(ARM.upper, [20.0, 14.0, 6.0])


@pytest.mark.parametrize(
    "change,match",
    [
        ({"controls": {"lower": [0.5, -0.5], "upper": [0.2, 0.5]}}, "lower must be <= upper"),
        ({"controls": {"lower": [-1.0], "upper": [1.0, 1.0]}}, "expected 2 values"),
        ({"controls": {"lower": [-np.inf, -1.0], "upper": [1.0, 1.0]}}, "finite"),
        ({"controls": {"lower": [-1, -1], "upper": [1, 1], "weights": [1.0, 0.0]}}, "weights"),
        ({"controls": {"lower": [-1, -1], "upper": [1, 1], "names": ["v"]}}, "names"),
        ({"controls": {"upper": [1.0, 1.0]}}, "controls"),
        ({"slack": {"enabled": True, "penalty": -1.0}}, "penalty"),
        ({"slack": {"weight": 1.0}}, "slack"),
        ({"fallback": {"type": "teleport"}}, "fallback.type"),
        ({"fallback": {"type": "constant"}}, "value"),
        ({"fallback": {"type": "constant", "value": [5.0, 0.0]}}, "inside the box"),
        ({"fallback": {"type": "gravity_compensation"}}, "manipulator"),
        ({"solver": "magic"}, "solver"),
        ({"horizon": 3}, "unknown key"),
        ({"barriers": {"type": "half_space"}}, "list"),
        ({"dynamics": {"type": "hovercraft"}}, "dynamics.type"),
    ],
)
def test_from_config_errors_say_what_to_fix(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SafetyFilter.from_config({**DD_CFG, **change})


def test_bad_barrier_entries_and_duplicates() -> None:
    bad = {**DD_CFG, "barriers": [{**DD_CFG["barriers"][0], "margin": -1.0}]}
    with pytest.raises(ValueError, match="safety_filter.scan.margin"):
        SafetyFilter.from_config(bad)
    dup = {**DD_CFG, "barriers": DD_CFG["barriers"][1:3] + DD_CFG["barriers"][1:2]}
    with pytest.raises(ValueError, match="duplicate"):
        SafetyFilter.from_config(dup)


def test_actuator_box_tightens_controls() -> None:
    cfg = {**box_cfg(), "barriers": [{"type": "actuator_box", "lower": [-1.0, -3.0], "upper": [0.5, 3.0]}]}
    f = SafetyFilter.from_config(cfg)
    np.testing.assert_array_equal(f.lower, [-1.0, -2.0])
    np.testing.assert_array_equal(f.upper, [0.5, 2.0])
    u, rep = f.filter(np.zeros(4), [1.0, -1.0])
    np.testing.assert_array_equal(u, [0.5, -1.0])
    assert f.n_rows == 0 and rep.status == "optimal" and rep.intervened


# ---- answers ---------------------------------------------------------------------------------


def test_known_answer_wall_and_box() -> None:
    """Double integrator at rest 0.5 m from the wall x <= 1 (margin 0.01): HOCBF (p1 = p2 = 1)
    row a_x <= p1 p2 h = 0.49; the nominal a = (2, 0.3) is cut to (0.49, 0.3)."""
    cfg = box_cfg()
    cfg["barriers"] = cfg["barriers"][:1]
    f = SafetyFilter.from_config(cfg)
    u, rep = f.filter([0.5, 0.0, 0.0, 0.0], [2.0, 0.3])
    np.testing.assert_allclose(u, [0.49, 0.3], atol=1e-12)
    assert rep.status == "optimal" and rep.intervened and rep.active.tolist() == [True]
    assert rep.barrier_values[0] == pytest.approx(0.49) and rep.solver_name == "daqp"
    assert isinstance(rep, FilterReport) and rep.constraint_names == ("wall0+",)
    # a nominal command that is already safe passes through untouched
    u2, rep2 = f.filter([0.5, 0.0, 0.0, 0.0], [0.2, -0.3])
    assert u2.tolist() == [0.2, -0.3] and not rep2.intervened and rep2.active.tolist() == [False]


@pytest.mark.parametrize("name", ["DD", "UNI", "BOX", "SE3", "ARM"])
def test_matches_cvxpy_reference(name: str) -> None:
    """The filter's command equals a tight cvxpy/Clarabel solve of the same QP (feasible cases)."""
    filt = {"DD": DD, "UNI": UNI, "BOX": BOX, "SE3": SE3, "ARM": ARM}[name]
    rng = np.random.default_rng(7)
    compared = 0
    for _ in range(30):
        x, env = random_state(filt, rng)
        u_nom = rng.uniform(filt.lower * 1.5, filt.upper * 1.5)
        u, rep = filt.filter(x, u_nom, env=env)
        if rep.status != "optimal":
            continue
        G, h, _ = filt.constraints(x, env=env)
        np.testing.assert_allclose(u, tight_qp(filt.weights, u_nom, G, h, filt.lower, filt.upper), atol=1e-7)
        compared += 1
    assert compared >= 15


DD_WALLS_DISCS = {
    "dynamics": {"type": "diff_drive", "lookahead": 0.08},
    "controls": {"lower": [-0.6, -2.0], "upper": [0.6, 2.0], "weights": [1.0, 0.3]},
    "barriers": DD_CFG["barriers"][1:]
    + [
        {"type": "circle_obstacle", "name": f"o{i}", "center": [cx, cy], "radius": r, "robot_radius": 0.2,
         "margin": 0.05, "gains": [1.5]}
        for i, (cx, cy, r) in enumerate(OBST)
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    "cfg",
    [
        unicycle_cfg(),
        box_cfg(),
        {**box_cfg(dim=3), "barriers": box_cfg(dim=3)["barriers"][:2] + box_cfg(dim=3)["barriers"][-1:]},
        DD_WALLS_DISCS,
        {**box_cfg(dim=8), "barriers": box_cfg(dim=8)["barriers"][:1] + box_cfg(dim=8)["barriers"][-1:]},
    ],
    ids=["unicycle", "box2", "box3", "diff_drive", "box8"],
)
def test_plain_float_path_matches_vectorised_blocks(cfg: dict[str, Any]) -> None:
    """Small problems of built-in point models may take the plain-float kernel
    (``kernel="scalar"``); it must give the same commands, statuses and reports as the
    vectorised barrier blocks (``kernel="generic"``, used for everything else)."""
    fast = SafetyFilter.from_config({**cfg, "kernel": "scalar"})
    slow = SafetyFilter.from_config({**cfg, "kernel": "generic"})
    rng = np.random.default_rng(13)
    kinds: set[str] = set()
    for i in range(300):
        x = rng.uniform(-1.5, 1.5, fast.n_state)
        u_nom = rng.uniform(fast.lower * 1.5, fast.upper * 1.5)
        gains = rng.uniform(0.5, 3.0, fast.n_gains) if i % 3 == 0 else None
        a, ra = fast.filter(x, u_nom, gains=gains)
        b, rb = slow.filter(x, u_nom, gains=gains)
        np.testing.assert_allclose(a, b, atol=1e-9, rtol=0)
        assert (ra.status, ra.fallback_used, ra.intervened) == (rb.status, rb.fallback_used, rb.intervened)
        np.testing.assert_allclose(ra.barrier_values, rb.barrier_values, atol=1e-12, rtol=1e-12)
        np.testing.assert_allclose(ra.slack, rb.slack, atol=1e-9)
        if ra.status == "optimal":
            assert ra.active.tolist() == rb.active.tolist()
        kinds.add(ra.status + ("+cut" if ra.intervened else ""))
    assert "optimal+cut" in kinds, kinds


def test_cvxpy_backend_gives_the_same_command() -> None:
    slow = SafetyFilter.from_config({**box_cfg(), "solver": "cvxpy"})
    rng = np.random.default_rng(8)
    for _ in range(10):
        x, _ = random_state(BOX, rng)
        u_nom = rng.uniform(-3, 3, 2)
        a, ra = BOX.filter(x, u_nom)
        b, rb = slow.filter(x, u_nom)
        assert ra.status == rb.status
        np.testing.assert_allclose(a, b, atol=1e-5)  # Clarabel at its default tolerances
        assert rb.solver_name == "cvxpy"


def test_learned_gains_map_in_gain_names_order() -> None:
    """gains= replaces the YAML gains row by row; a larger class-K gain is less conservative."""
    cfg = box_cfg()
    cfg["barriers"] = cfg["barriers"][:1]
    f = SafetyFilter.from_config(cfg)
    assert f.gain_names == ("wall0+.p1", "wall0+.p2")
    x = [0.5, 0.0, 0.0, 0.0]
    u, _ = f.filter(x, [2.0, 0.0], gains=[2.0, 1.5])
    assert u[0] == pytest.approx(2.0 * 1.5 * 0.49)  # p1 p2 h
    u_yaml, _ = f.filter(x, [2.0, 0.0])
    assert u_yaml[0] == pytest.approx(0.49)  # YAML gains used again without gains=
    with pytest.raises(ValueError, match="gains"):
        f.filter(x, [2.0, 0.0], gains=[1.0, 1.0, 1.0])
    u_map, _ = f.filter(x, [2.0, 0.0], gains={"wall0+.p2": 1.5})  # by name; p1 keeps its YAML 1.0
    assert u_map[0] == pytest.approx(1.5 * 0.49)
    with pytest.raises(ValueError, match="unknown name"):
        f.filter(x, [2.0, 0.0], gains={"wall0+.k": 1.0})
    for bad in ([0.0, 1.0], [np.nan, 1.0], [-1.0, 1.0]):
        u, rep = f.filter(x, [2.0, 0.0], gains=bad)
        assert rep.fallback_used and rep.status == "invalid_input" and "gains" in rep.fallback_reason


def test_weights_change_the_projection() -> None:
    rng = np.random.default_rng(9)
    for _ in range(10):
        x, _ = random_state(SE3, rng)
        u_nom = rng.uniform(-1.5, 1.5, 3)
        u, rep = SE3.filter(x, u_nom)
        if rep.status == "optimal" and rep.intervened:
            G, h, _ = SE3.constraints(x)
            w = np.array([1.0, 2.0, 0.5])
            np.testing.assert_allclose(u, tight_qp(w, u_nom, G, h, SE3.lower, SE3.upper), atol=1e-7)


def test_user_dynamics_and_barrier_from_the_registries() -> None:
    """A user model x' = -x + u and a user barrier h = 1 - x, both by name in a config (torch
    callables for f, g: test_dynamics): the CBF row -(dh/dx g) u <= dh/dx f + k h reads
    u <= x + k (1 - x)."""
    from barriernet import (
        BARRIERS,
        DYNAMICS,
        CallableDynamics,
        StateBarrier,
        register_barrier,
        register_dynamics,
    )

    class Leaky(CallableDynamics):
        def __init__(self, rate: float = 1.0) -> None:
            super().__init__(lambda x: -rate * x, lambda x: np.ones((1, 1)), 1, 1)

    class Ceiling(StateBarrier):
        type_name = "test_ceiling"
        keys = ("level",)

        def __init__(self, cfg: Any, where: str) -> None:
            super().__init__(cfg, where)
            self.level = float(cfg.get("level", 1.0))

        def value(self, x: np.ndarray) -> float:
            return self.level - float(x[0])

        def gradient(self, x: np.ndarray) -> np.ndarray:
            return np.array([-1.0])

    if "test_leaky" not in DYNAMICS:
        register_dynamics("test_leaky", Leaky)
    if "test_ceiling" not in BARRIERS:
        register_barrier("test_ceiling", Ceiling)
    f = SafetyFilter.from_config(
        {
            "dynamics": {"type": "test_leaky", "rate": 1.0},
            "controls": {"lower": [-5.0], "upper": [5.0]},
            "barriers": [{"type": "test_ceiling", "name": "cap", "level": 1.0, "gains": [2.0]}],
        }
    )
    u, rep = f.filter([0.5], [4.0])
    assert u[0] == pytest.approx(0.5 + 2.0 * 0.5) and rep.intervened  # u <= x + k h = 1.5
    u, rep = f.filter([0.5], [1.0])
    assert u[0] == 1.0 and not rep.intervened


def test_shape_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="x: expected 3"):
        DD.filter(np.zeros(4), [0.0, 0.0], env={"scan_points": np.zeros((0, 2))})
    with pytest.raises(ValueError, match="u_nom: expected 2"):
        DD.filter(np.zeros(3), [0.0], env={"scan_points": np.zeros((0, 2))})
    with pytest.raises(ValueError, match="status"):
        DD.fallback(np.zeros(3), "why", status="fine")


# ---- fallbacks and relaxation -----------------------------------------------------------------


def test_non_finite_inputs_fall_back_with_the_reason() -> None:
    env = {"scan_points": np.array([[1.0, 1.0]])}
    for x, u, what in (
        ([np.nan, 0.0, 0.0], [0.1, 0.1], "x"),
        ([0.0, 0.0, np.inf], [0.1, 0.1], "x"),
        ([0.0, 0.0, 0.0], [np.nan, 0.1], "u_nom"),
        ([0.0, 0.0, 0.0], [0.1, -np.inf], "u_nom"),
    ):
        u_out, rep = DD.filter(x, u, env=env)
        assert u_out.tolist() == [0.0, 0.0]  # zero fallback
        assert rep.fallback_used and rep.status == "invalid_input" and what in rep.fallback_reason
        assert rep.intervened
    u_out, rep = DD.filter([0.0, 0.0, 0.0], [0.1, 0.1], env={})
    assert rep.fallback_used and "scan_points" in rep.fallback_reason
    # the wall rows are still known in the report; the scan rows are not
    assert np.isnan(rep.barrier_values[:16]).all() and np.isfinite(rep.barrier_values[16:]).all()


def test_fallback_kinds() -> None:
    u, rep = UNI.fallback([0.0, 0.0, 0.0, 0.8], "stale", status="stale_input")
    np.testing.assert_allclose(u, [0.0, -1.6])  # brake: a = -2 v
    assert rep.status == "stale_input" and rep.fallback_used and rep.fallback_reason == "stale"
    u, _ = UNI.fallback([0.0, 0.0, 0.0, 5.0], "fast")
    np.testing.assert_allclose(u, [0.0, -3.0])  # clipped to the box
    u, _ = UNI.fallback([np.nan] * 4, "broken")
    np.testing.assert_allclose(u, [0.0, 0.0])  # no state: the box point nearest zero
    const = SafetyFilter.from_config({**DD_CFG, "fallback": {"type": "constant", "value": [-0.1, 0.5]}})
    assert const.fallback(np.zeros(3), "x")[0].tolist() == [-0.1, 0.5]
    # gravity compensation: MuJoCo bias (gravity + Coriolis - joint damping) minus damping dq, clipped
    x = np.array([0.3, 0.8, -0.5, 0.4, -0.2, 0.1])
    u, _ = ARM.fallback(x, "x")
    expect = np.clip(ARM.dynamics.bias(x) - 1.0 * x[3:], ARM.lower, ARM.upper)
    np.testing.assert_allclose(u, expect)
    assert abs(u[1]) > 1.0  # joint 2 carries the links' weight
    gc = SafetyFilter.from_config({**ARM_CFG, "fallback": {"type": "gravity_compensation", "damping": 3.0}})
    expect = np.clip(ARM.dynamics.bias(x) - 3.0 * x[3:], ARM.lower, ARM.upper)
    np.testing.assert_allclose(gc.fallback(x, "x")[0], expect)


def test_infeasible_without_slack_falls_back() -> None:
    cfg = box_cfg()
    cfg["slack"] = {"enabled": False}
    f = SafetyFilter.from_config(cfg)
    # at 3 m/s towards the wall from 0.2 m: no admissible deceleration keeps the HOCBF
    u, rep = f.filter([0.8, 0.0, 3.0, 0.0], [0.0, 0.0])
    assert rep.status == "infeasible" and rep.fallback_used and "infeasible" in rep.fallback_reason
    np.testing.assert_allclose(u, [-2.0, 0.0])  # brake (a = -2 v, clipped)


def test_relaxation_follows_priority_and_reports_slack() -> None:
    """Two contradictory rows: the lower-priority one is relaxed, the other held exactly."""
    cfg: dict[str, Any] = {
        "dynamics": {"type": "double_integrator", "dim": 2},
        "controls": {"lower": [-1.0, -1.0], "upper": [1.0, 1.0]},
        "barriers": [
            # moving at +2 m/s in x, 0.1 m from the wall x <= 1: needs a_x <= -3.8 (impossible in the box)
            {"type": "half_space", "name": "wall", "normal": [1.0, 0.0], "offset": 1.0, "gains": [1.0, 1.0],
             "priority": 0},
            {"type": "half_space", "name": "lane", "normal": [0.0, 1.0], "offset": 0.5, "gains": [1.0, 1.0],
             "priority": 5},
        ],
        "slack": {"enabled": True, "penalty": 1e4},
    }  # fmt: skip
    f = SafetyFilter.from_config(cfg)
    x = [0.9, 0.45, 2.0, 0.5]  # lane row: a_y <= -(2 * 0.5) + 0.05 = -0.95, feasible
    u, rep = f.filter(x, [0.5, 0.5])
    assert rep.status == "relaxed" and not rep.fallback_used
    G, h, _ = f.constraints(x)
    viol = G @ u - h
    assert viol[1] <= 1e-9  # the high-priority row holds
    assert viol[0] > 0.1 and rep.slack[0] == pytest.approx(viol[0]) and rep.slack[1] == 0.0
    assert rep.total_slack == pytest.approx(viol[0])
    assert u[0] == pytest.approx(-1.0)  # the relaxed row still pulls as hard as the box allows
    # with equal priorities both rows may be relaxed, and the slack is still reported
    cfg["barriers"][1]["priority"] = 0
    u2, rep2 = SafetyFilter.from_config(cfg).filter(x, [0.5, 0.5])
    assert rep2.status == "relaxed" and rep2.total_slack > 0


def sequential_relaxation(filt: SafetyFilter, x: np.ndarray, u_nom: np.ndarray) -> tuple[np.ndarray, int]:
    """The reference relaxation (the filter's method before issue 15): one QP per priority
    level, slack with the L1 penalty on the rows of the lowest levels first, every row above
    them hard. Returns (u, the highest relaxed level)."""
    from barriernet import solve_qp

    G, h, _ = filt.constraints(x)
    n, m = filt.n_controls, filt.n_rows
    for level in sorted(set(filt.priorities.tolist())):
        relax = filt.priorities <= level
        k = int(relax.sum())
        H = np.zeros((n + k, n + k))
        H[:n, :n] = np.diag(filt.weights)
        H[n:, n:] = 1e-6 * np.eye(k)
        f = np.concatenate([-filt.weights * u_nom, np.full(k, filt.slack_penalty)])
        A = np.zeros((m, n + k))
        A[:, :n] = G
        A[np.flatnonzero(relax), n + np.arange(k)] = -1.0
        lo = np.concatenate([filt.lower, np.zeros(k)])
        hi = np.concatenate([filt.upper, np.full(k, np.inf)])
        r = solve_qp(H, f, A, h, lo, hi)
        if r.status == "optimal" and r.x is not None:
            return np.clip(r.x[:n], filt.lower, filt.upper), level
    raise AssertionError("the sequential relaxation found no solution")


def priority_cfg(rng: np.random.Generator) -> dict[str, Any]:
    """Walls of three priority levels and a disc of a random level, weighted controls, slack on."""
    walls = [
        {"type": "half_space", "name": f"w{i}", "normal": rng.standard_normal(2).tolist(),
         "offset": float(rng.uniform(0.3, 1.0)), "gains": rng.uniform(0.5, 3.0, 2).tolist(),
         "priority": int(i % 3)}
        for i in range(5)
    ]  # fmt: skip
    disc = {"type": "circle_obstacle", "name": "disc", "center": rng.uniform(-0.5, 0.5, 2).tolist(),
            "radius": 0.15, "gains": [2.0, 2.0], "priority": int(rng.integers(0, 3))}  # fmt: skip
    return {
        "dynamics": {"type": "double_integrator", "dim": 2},
        "controls": {"lower": [-1.0, -1.0], "upper": [1.0, 1.0], "weights": [1.0, 2.0]},
        "barriers": walls + [disc],
        "slack": {"enabled": True, "penalty": 1e4},
    }


@pytest.mark.parametrize("seed", range(4))
def test_relaxed_check_compiled_equals_plain_floats(seed: int) -> None:
    """The relaxed answer's check as one compiled call (barriernet.compiled.relaxed_check) and
    in plain floats give the same command and status, and slack and total to round-off, call
    for call; the compiled check fails an answer that breaks a hard row."""
    from barriernet import compiled

    rng = np.random.default_rng(seed)
    cfg = priority_cfg(rng)
    jit, plain = SafetyFilter.from_config(cfg), SafetyFilter.from_config(cfg)
    assert jit._relax._check is compiled.relaxed_check() is not None  # numba is installed here
    plain._relax._check = None
    n_relaxed = 0
    for _ in range(400):
        x = np.concatenate([rng.uniform(-0.4, 0.4, 2), rng.uniform(-3.0, 3.0, 2)])
        u_nom = rng.uniform(-1.5, 1.5, 2)
        (u1, r1), (u2, r2) = jit.filter(x, u_nom), plain.filter(x, u_nom)
        assert r1.status == r2.status and r1.fallback_reason == r2.fallback_reason
        assert np.array_equal(u1, u2)  # the clip is exact
        # G u: a loop here, BLAS (which may fuse multiply-adds) there: equal to round-off
        np.testing.assert_allclose(r1.slack, r2.slack, rtol=1e-13, atol=1e-15)
        assert r1.total_slack == pytest.approx(r2.total_slack, rel=1e-13, abs=1e-15)
        assert np.array_equal(r1.active, r2.active)
        n_relaxed += r1.status == "relaxed"
    assert n_relaxed >= 40
    # a solver answer that breaks a hard row (all slack on the lowest level, the top row moved)
    R = jit._relax
    z = np.zeros(R.n + jit.n_rows)
    z[R.n] = 1.0  # slack on row 0 only
    hard = [i for i in range(jit.n_rows) if jit.priorities[i] > jit.priorities[0]]
    if hard:
        R.qp.G[:] = 0.0
        R.qp.G[hard[0]] = [1.0, 0.0]
        R.h[:] = 0.0
        z[0] = 0.5  # G u - h = 0.5 on a hard row
        qp = R.qp
        out = R._check(z, qp.G, R.h, qp.lower, qp.upper, qp.priorities, 1e-9, R._u_b, R._res_b, R._viol_b)
        assert out[0] is False


@pytest.mark.parametrize("seed", range(8))
def test_one_qp_relaxation_keeps_the_priority_order_of_the_sequential_method(seed: int) -> None:
    """Seeded infeasible problems (walls of three priority levels and a disc, fast towards
    them): the one-QP relaxation keeps every row the sequential method keeps hard, relaxes no
    level above it, relaxes its top level no more, and equals it when one level suffices."""
    rng = np.random.default_rng(seed)
    filt = SafetyFilter.from_config(priority_cfg(rng))
    seen: set[str] = set()
    n_cases = 0
    while n_cases < 40:
        x = np.concatenate([rng.uniform(-0.4, 0.4, 2), rng.uniform(-3.0, 3.0, 2)])
        u_nom = rng.uniform(-1.5, 1.5, 2)
        u, rep = filt.filter(x, u_nom)
        if rep.status != "relaxed":
            continue
        n_cases += 1
        u_ref, level = sequential_relaxation(filt, x, u_nom)
        G, h, _ = filt.constraints(x)
        tol = 1e-9 * (1.0 + np.abs(h))
        hard = filt.priorities > level
        viol, viol_ref = np.maximum(G @ u - h, 0.0), np.maximum(G @ u_ref - h, 0.0)
        assert (viol[hard] <= tol[hard]).all()  # hard rows never relaxed
        assert (rep.slack[hard] == 0.0).all()
        np.testing.assert_allclose(rep.slack, np.where(viol > tol, viol, 0.0), atol=1e-12)
        top = filt.priorities == level
        assert viol[top].sum() <= viol_ref[top].sum() * (1 + 1e-6) + 1e-7  # the top level: no more
        assert ((u >= filt.lower) & (u <= filt.upper)).all()
        if level == min(filt.priorities):
            np.testing.assert_allclose(u, u_ref, atol=1e-6)
            seen.add("one level")
        else:
            seen.add("several levels")
    assert seen == {"one level", "several levels"}, seen


def test_huge_finite_nominal_commands_stay_in_the_box() -> None:
    rng = np.random.default_rng(10)
    for _ in range(20):
        x, env = random_state(DD, rng)
        u_nom = rng.choice([-1.0, 1.0], 2) * 10.0 ** rng.uniform(5, 300, 2)
        u, rep = DD.filter(x, u_nom, env=env)
        assert np.isfinite(u).all() and (u >= DD.lower).all() and (u <= DD.upper).all()
        assert rep.intervened


# ---- property tests (hypothesis, derandomized) ------------------------------------------------


def random_state(filt: SafetyFilter, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any] | None]:
    if filt is DD:
        return np.array([*rng.uniform(-2.8, 2.8, 2), rng.uniform(-4, 4)]), {"scan_points": scan_points(rng)}
    if filt is UNI:
        return np.array([*rng.uniform(-2.5, 2.5, 2), rng.uniform(-4, 4), rng.uniform(-1.2, 1.2)]), None
    if filt is ARM:
        return np.concatenate([rng.uniform(ARM_CFG["barriers"][0]["lower"], ARM_CFG["barriers"][0]["upper"]),
                               rng.uniform(-2.6, 2.6, 3)]), None  # fmt: skip
    return rng.uniform(-1.2, 1.2, filt.n_state), None


FILTERS = {"DD": DD, "UNI": UNI, "BOX": BOX, "SE3": SE3, "ARM": ARM}
any_float = st.one_of(
    st.floats(-3.0, 3.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e300, -1e300, 1e-300, np.nan, np.inf, -np.inf]),
)


def check_output(
    filt: SafetyFilter, x: Any, u_nom: Any, env: Any, u: np.ndarray, rep: FilterReport, gains: Any = None
) -> None:
    assert u.shape == (filt.n_controls,) and np.isfinite(u).all()
    assert (u >= filt.lower).all() and (u <= filt.upper).all(), (u, filt.lower, filt.upper)
    assert rep.status in STATUSES
    m = filt.n_rows
    assert len(rep.constraint_names) == len(rep.barrier_values) == len(rep.active) == len(rep.slack) == m
    if rep.fallback_used:
        assert rep.fallback_reason
        return
    assert rep.status in ("optimal", "relaxed") and rep.fallback_reason == ""
    G, h, _ = filt.constraints(x, gains=gains, env=env)
    viol = G @ u - h
    if rep.status == "optimal":
        assert viol.max(initial=0.0) <= 1e-7, viol
        assert rep.total_slack == 0.0
    else:  # every row violated by no more than its reported slack
        assert (viol <= np.asarray(rep.slack) + 1e-7).all()
        assert rep.total_slack == pytest.approx(float(np.sum(rep.slack)))


@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(FILTERS)),
    seed=st.integers(0, 2**31 - 1),
    u_scale=st.sampled_from([0.5, 1.0, 3.0, 1e6]),
    learned=st.booleans(),
)
def test_property_random_states_and_commands(name: str, seed: int, u_scale: float, learned: bool) -> None:
    """Random states, nominal commands and (half the time) random learned class-K gains."""
    filt = FILTERS[name]
    rng = np.random.default_rng(seed)
    x, env = random_state(filt, rng)
    u_nom = rng.uniform(-1, 1, filt.n_controls) * u_scale * np.maximum(np.abs(filt.upper), 1.0)
    gains = 4.0 / (1.0 + np.exp(-rng.normal(0, 2, filt.n_gains))) + 1e-3 if learned else None  # 4 sigmoid
    u, rep = filt.filter(x, u_nom, gains=gains, env=env)
    check_output(filt, x, u_nom, env, u, rep, gains)
    assert rep.intervened == (not np.allclose(u, u_nom))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on 1e300 inputs is expected here
@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(FILTERS)), data=st.data())
def test_property_hostile_inputs_never_leave_the_box(name: str, data: st.DataObject) -> None:
    filt = FILTERS[name]
    x = np.array(data.draw(st.lists(any_float, min_size=filt.n_state, max_size=filt.n_state)))
    u_nom = np.array(data.draw(st.lists(any_float, min_size=filt.n_controls, max_size=filt.n_controls)))
    env = None
    if filt is DD:
        pts = data.draw(st.lists(st.tuples(any_float, any_float), min_size=0, max_size=40))
        env = {"scan_points": np.array(pts, dtype=float).reshape(-1, 2)}
    u, rep = filt.filter(x, u_nom, env=env)
    assert u.shape == (filt.n_controls,) and np.isfinite(u).all()
    assert (u >= filt.lower).all() and (u <= filt.upper).all()
    if not (np.isfinite(x).all() and np.isfinite(u_nom).all()):
        assert rep.fallback_used and rep.status == "invalid_input"
    elif not rep.fallback_used:
        assert rep.status in ("optimal", "relaxed")
        if rep.status == "optimal":
            G, h, _ = filt.constraints(x, env=env)
            assert (G @ u - h).max(initial=0.0) <= 1e-7 * (1.0 + np.abs(h).max(initial=0.0))


# ---- closed loop: sampled-data safety over 1,000 episodes each ---------------------------------

CTRL_DT, SIM_DT = 0.01, 0.001  # zero-order hold of 10 ms, RK4 at 1 ms inside it


def rk4_batch(f: Any, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
    k1 = f(x, u)
    k2 = f(x + 0.5 * dt * k1, u)
    k3 = f(x + 0.5 * dt * k2, u)
    k4 = f(x + dt * k3, u)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def unicycle_f(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.stack([x[:, 3] * np.cos(x[:, 2]), x[:, 3] * np.sin(x[:, 2]), u[:, 0], u[:, 1]], axis=1)


def double_integrator_f(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.concatenate([x[:, 2:], u], axis=1)


def run_episodes(
    filt: SafetyFilter, x0: np.ndarray, nominal: Any, f: Any, clearance: Any, steps: int
) -> tuple[float, int, dict[str, int]]:
    """(min true clearance over all 1 ms samples, interventions, status counts)."""
    x = x0.copy()
    worst = float(clearance(x).min())
    interventions = 0
    counts: dict[str, int] = {}
    u = np.zeros((x.shape[0], filt.n_controls))
    for _ in range(steps):
        u_nom = nominal(x)
        for i in range(x.shape[0]):
            u[i], rep = filt.filter(x[i], u_nom[i])
            interventions += rep.intervened
            counts[rep.status] = counts.get(rep.status, 0) + 1
        for _ in range(round(CTRL_DT / SIM_DT)):
            x = rk4_batch(f, x, u, SIM_DT)
            worst = min(worst, float(clearance(x).min()))
    return worst, interventions, counts


def test_closed_loop_unicycle_among_obstacles_1000_episodes() -> None:
    """HOCBF (p1 = p2 = 2) on three discs, 1,000 random starts near an obstacle, heading at it,
    goal behind it, 0.6 s each.

    Sampled-data margin: the barriers use margin 0.03 m; the true clearance (no margin) must
    stay >= 0 at every 1 ms sample. Starts satisfy h >= 0 and psi1 = h' + p1 h >= 0
    (the HOCBF's safe set)."""
    rng = np.random.default_rng(11)
    n = 1000
    c = np.array(OBST)[:, :2]
    r_true = np.array(OBST)[:, 2] + 0.15

    def true_clearance(x: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(x[:, None, :2] - c[None], axis=2) - r_true).min(axis=1)

    x0 = np.zeros((0, 4))
    aim = np.zeros((0, 2))
    while x0.shape[0] < n:  # starts 2-60 cm from an obstacle's margin, heading roughly at it
        k = 4 * n
        j = rng.integers(0, len(OBST), k)
        ang = rng.uniform(-np.pi, np.pi, k)
        rad = r_true[j] + 0.03 + rng.uniform(0.02, 0.6, k)
        pos = c[j] + rad[:, None] * np.column_stack([np.cos(ang), np.sin(ang)])
        th = ang + np.pi + rng.uniform(-1.0, 1.0, k)
        cand = np.column_stack([pos, th, rng.uniform(0.2, 1.0, k)])
        d = cand[:, None, :2] - c[None]
        dist = np.linalg.norm(d, axis=2)
        h = dist - (r_true + 0.03)
        vel = cand[:, 3:4] * np.column_stack([np.cos(cand[:, 2]), np.sin(cand[:, 2])])
        hdot = np.einsum("eod,ed->eo", d / dist[..., None], vel)
        ok = ((h >= 0.02) & (hdot + 2.0 * h >= 0.0)).all(axis=1)  # the HOCBF's safe set
        x0 = np.vstack([x0, cand[ok]])[:n]
        aim = np.vstack([aim, (2.0 * c[j] - pos)[ok]])[:n]  # goal behind the obstacle
    goals = aim

    def nominal(x: np.ndarray) -> np.ndarray:  # go-to-goal at full speed: drives into obstacles
        head = np.arctan2(goals[:, 1] - x[:, 1], goals[:, 0] - x[:, 0])
        err = np.angle(np.exp(1j * (head - x[:, 2])))
        return np.column_stack([4.0 * err, 3.0 * (1.0 - x[:, 3])])

    steps = 60
    worst, interventions, counts = run_episodes(UNI, x0, nominal, unicycle_f, true_clearance, steps=steps)
    assert worst >= 0.0, f"true clearance went negative: {worst}"
    assert interventions > 0.2 * n * steps, f"the filter must be exercised: {interventions}"
    assert counts.get("optimal", 0) >= 0.99 * n * steps, counts


def test_closed_loop_double_integrator_in_a_box_1000_episodes() -> None:
    """HOCBF walls |p_i| <= 1 (margin 0.01 m) and a speed limit, 1,000 episodes of 0.8 s, nominal
    PD towards goals mostly outside the box. True |p_i| <= 1 at every 1 ms sample."""
    rng = np.random.default_rng(12)
    n = 1000
    x0 = np.zeros((0, 4))
    while x0.shape[0] < n:
        cand = np.column_stack([rng.uniform(-0.95, 0.95, (4 * n, 2)), rng.uniform(-1.2, 1.2, (4 * n, 2))])
        h = np.concatenate([0.99 - cand[:, :2], cand[:, :2] + 0.99], axis=1)
        hdot = np.concatenate([-cand[:, 2:], cand[:, 2:]], axis=1)
        ok = (hdot + h >= 0).all(axis=1) & (np.linalg.norm(cand[:, 2:], axis=1) <= 1.4)
        x0 = np.vstack([x0, cand[ok]])[:n]
    goals = rng.uniform(-2.0, 2.0, (n, 2))

    def nominal(x: np.ndarray) -> np.ndarray:
        return 6.0 * (goals - x[:, :2]) - 1.0 * x[:, 2:]

    def true_clearance(x: np.ndarray) -> np.ndarray:
        return (1.0 - np.abs(x[:, :2])).min(axis=1)

    steps = 80
    worst, interventions, counts = run_episodes(BOX, x0, nominal, double_integrator_f, true_clearance, steps)
    assert worst >= 0.0, f"left the box: {worst}"
    assert interventions > 0.2 * n * steps, f"the filter must be exercised: {interventions}"
    assert counts.get("optimal", 0) >= 0.99 * n * steps, counts


def test_closed_loop_margin_is_needed() -> None:
    """Control for the closed-loop tests: without the safety filter the same nominal controller
    leaves the box in many episodes (the tests above can fail)."""
    rng = np.random.default_rng(12)
    x = np.column_stack([rng.uniform(-0.9, 0.9, (200, 2)), np.zeros((200, 2))])
    goals = rng.uniform(-2.0, 2.0, (200, 2))
    worst = math.inf
    for _ in range(100):
        u = np.clip(6.0 * (goals - x[:, :2]) - x[:, 2:], -2, 2)
        for _ in range(10):
            x = rk4_batch(double_integrator_f, x, u, SIM_DT)
        worst = min(worst, float((1.0 - np.abs(x[:, :2])).min()))
    assert worst < -0.1


@pytest.mark.parametrize(
    "gains", [None, [10.0, 10.0, 20.0, 10.0, 10.0]], ids=["yaml_gains", "aggressive_gains"]
)
def test_closed_loop_mujoco_arm_keeps_joint_limits(gains: list[float] | None) -> None:
    """The arm config on the real MuJoCo arm (2 ms physics, filter every step): a saturating PD
    towards goals 0.5 rad beyond the joint limits (arm raised, away from the floor), with the
    YAML class-K gains and with aggressive ones passed as learned gains. The HOCBF margin is
    0.05 rad: the joints must stay >= 0.03 rad inside the limits (the model's hard stops never
    engage) and |dq| <= 2.5 rad/s (+2 %)."""
    from lnn_control.sim.arm import ArmEnv, joint_margins

    env = ArmEnv(seed=0)
    rng = np.random.default_rng(14)
    lo, hi = np.array([-2.6, -1.9, -2.3]), np.array([2.6, 1.9, 2.3])
    worst_margin, worst_dq, cut = np.inf, 0.0, 0
    counts: dict[str, int] = {}
    for _ in range(8):
        q0 = env.sample_configuration(rng, margin=0.3)
        q0[1] = rng.uniform(-1.5, -0.5)  # raised
        env.reset(q0=q0)
        goal = np.array([rng.choice([lo[0], hi[0]]), lo[1], rng.choice([lo[2], hi[2]])])
        goal += np.sign(goal) * 0.5
        for _ in range(500):  # 1 s
            x = np.concatenate([env.q, env.dq])
            u_nom = 60.0 * (goal - env.q) - 2.0 * env.dq
            u, rep = ARM.filter(x, u_nom, gains=gains)
            counts[rep.status] = counts.get(rep.status, 0) + 1
            cut += rep.intervened
            env.step(u, env.dt)
            worst_margin = min(worst_margin, float(joint_margins(env.q).min()))
            worst_dq = max(worst_dq, float(np.abs(env.dq).max()))
    assert 0.03 <= worst_margin < 0.4, f"joint margin {worst_margin:.4f} rad"
    assert worst_dq <= 2.5 * 1.02, f"joint speed {worst_dq:.3f} rad/s"
    assert cut > 1000 and counts.get("optimal", 0) >= 0.95 * 8 * 500, counts


def test_closed_loop_mujoco_diff_drive_with_laser_scan() -> None:
    """config/diff_drive.yaml in the real MuJoCo room: 72-beam scan -> world points -> filter at
    50 Hz, full-speed go-to-goal nominal with goals across the room (through the obstacles).
    The robot disc's true clearance (sim geometry) stays >= 0 and it never touches anything."""
    import math as _m

    from lnn_control.sim.diff_drive import DiffDriveEnv, clearance

    env = DiffDriveEnv(seed=0)
    rng = np.random.default_rng(15)
    beams = np.arange(72) * 2 * np.pi / 72
    worst, cut = np.inf, 0
    for _ in range(6):
        env.reset(seed=int(rng.integers(1 << 30)))
        goal = -env.pose[:2] + rng.uniform(-0.3, 0.3, 2)  # the opposite side of the room
        for _ in range(300):  # 6 s
            x = env.pose.copy()
            r = env.scan()
            ok = np.isfinite(r)
            ang = beams[ok] + x[2]
            pts = x[:2] + r[ok, None] * np.column_stack([np.cos(ang), np.sin(ang)])
            head = _m.atan2(goal[1] - x[1], goal[0] - x[0])
            err = _m.atan2(_m.sin(head - x[2]), _m.cos(head - x[2]))
            u_nom = np.array([0.6, 3.0 * err])
            u, rep = DD.filter(x, u_nom, env={"scan_points": pts})
            assert not rep.fallback_used, rep
            cut += rep.intervened
            env.step(u, 0.02)
            worst = min(worst, clearance(env.pose[:2]))
            assert not env.in_contact()
    assert worst >= 0.0, f"clearance {worst:.4f} m"
    assert cut > 100
