"""The safety filter's row kernels (``kernel=``) against its generic barrier blocks.

``kernel="affine"`` (half-space and joint-limit rows on a double integrator, affine in the
state with a constant G, precomputed when the filter is built) must give the barrier values
of ``kernel="generic"`` at any state and gains (float64, 1e-12), and the same commands and
reports (its DAQP workspace, set up once, against ``daqp.solve`` on freshly filled rows),
through every path (QP, relaxation, fallbacks) in any order of calls."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest

from barriernet import KERNELS, SafetyFilter
from barriernet.filter_kernels import RowKernel


def linear_cfg(dim: int, n_walls: int, seed: int, joints: bool = False, slack: bool = True) -> dict[str, Any]:
    """Double integrator, ``n_walls`` HOCBF half-spaces with random normals (+ joint limits)."""
    rng = np.random.default_rng(seed)
    barriers: list[dict[str, Any]] = [
        {"type": "half_space", "name": f"w{i}", "normal": rng.standard_normal(dim).tolist(),
         "offset": float(rng.uniform(0.5, 1.5)), "margin": 0.01, "priority": i % 2,
         "gains": rng.uniform(0.5, 3.0, 2).tolist()}
        for i in range(n_walls)
    ]  # fmt: skip
    if joints:
        barriers += [
            {"type": "joint_position_limits", "name": "q", "lower": [-1.2] * dim, "upper": [1.1] * dim,
             "margin": 0.02, "gains": [2.0, 1.5]},
            {"type": "joint_velocity_limits", "name": "dq", "lower": [-0.9] * dim, "upper": [1.0] * dim,
             "gains": [3.0]},
        ]  # fmt: skip
    return {
        "dynamics": {"type": "double_integrator", "dim": dim},
        "controls": {"lower": [-2.0] * dim, "upper": [1.5] * dim},
        "barriers": barriers,
        "slack": {"enabled": slack, "penalty": 1e4},
        "fallback": {"type": "brake"},
    }


CASES = [(2, 1, False), (3, 8, False), (7, 8, False), (2, 2, True), (4, 3, True)]


@pytest.mark.parametrize(("dim", "walls", "joints"), CASES)
def test_affine_kernel_rows_equal_generic_rows(dim: int, walls: int, joints: bool) -> None:
    """kernel="affine" against kernel="generic" on seeded states, default and learned gains:
    the same barrier values (1e-12) and, where the QP's answer is a vertex of the rows and the
    box, the same command."""
    cfg = linear_cfg(dim, walls, seed=dim * 10 + walls, joints=joints)
    fast = SafetyFilter.from_config({**cfg, "kernel": "affine"})
    slow = SafetyFilter.from_config({**cfg, "kernel": "generic"})
    assert (fast.kernel, slow.kernel) == ("affine", "generic")
    assert SafetyFilter.from_config(cfg).kernel == "affine"  # auto picks it
    rng = np.random.default_rng(5)
    for i in range(200):
        x = rng.standard_normal(fast.n_state) * (10.0 if i % 4 == 0 else 1.0)
        u_nom = rng.uniform(fast.lower, fast.upper)
        gains = rng.uniform(0.1, 4.0, fast.n_gains) if i % 2 else None
        a, ra = fast.filter(x, u_nom, gains=gains)
        b, rb = slow.filter(x, u_nom, gains=gains)
        np.testing.assert_allclose(ra.barrier_values, rb.barrier_values, rtol=1e-12, atol=1e-12)
        assert (ra.status, ra.intervened, ra.fallback_used) == (rb.status, rb.intervened, rb.fallback_used)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("dim", "walls", "joints"), CASES)
@pytest.mark.parametrize("slack", [True, False])
def test_filter_same_with_and_without_the_linear_kernel(
    dim: int, walls: int, joints: bool, slack: bool
) -> None:
    cfg = linear_cfg(dim, walls, seed=dim * 10 + walls, joints=joints, slack=slack)
    fast = SafetyFilter.from_config({**cfg, "kernel": "affine"})  # DAQP workspace set up once
    slow = SafetyFilter.from_config({**cfg, "kernel": "generic"})  # daqp.solve on refilled rows
    rng = np.random.default_rng(17)
    kinds: set[str] = set()
    for i in range(300):
        x = rng.standard_normal(fast.n_state) * (2.0 if i % 5 == 0 else 0.5)
        u_nom = rng.uniform(fast.lower * 1.5, fast.upper * 1.5)
        gains = rng.uniform(0.5, 3.0, fast.n_gains) if i % 3 == 0 else None
        a, ra = fast.filter(x, u_nom, gains=gains)
        b, rb = slow.filter(x, u_nom, gains=gains)
        np.testing.assert_allclose(a, b, atol=1e-9, rtol=0)
        assert (ra.status, ra.fallback_used, ra.intervened) == (rb.status, rb.fallback_used, rb.intervened)
        np.testing.assert_allclose(ra.barrier_values, rb.barrier_values, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ra.slack, rb.slack, atol=1e-9)
        assert ((a >= fast.lower) & (a <= fast.upper)).all()
        if ra.status == "optimal":
            assert ra.active.tolist() == rb.active.tolist()
            G, h, _ = slow.constraints(x, gains=gains)
            assert (G @ a <= h + 1e-9 * (1 + np.abs(h))).all()
        kinds.add(ra.status + ("+cut" if ra.intervened else ""))
    assert {"optimal", "optimal+cut"} <= kinds, kinds
    assert kinds & {"relaxed+cut", "infeasible+cut"}, kinds


def test_affine_kernel_only_for_affine_rows() -> None:
    cfg = linear_cfg(2, 2, seed=1)
    assert SafetyFilter.from_config(cfg).kernel == "affine"
    speed = {"type": "speed_limit", "name": "speed", "max": 1.0, "gains": [1.0]}  # |v|^2: not affine
    disc = {"type": "circle_obstacle", "name": "o", "center": [2.0, 0.0], "radius": 0.3, "gains": [1.0, 1.0]}
    wall = {"type": "half_space", "name": "w", "normal": [1, 0], "offset": 1.0, "gains": [1, 1]}
    box = {"lower": [-1, -1], "upper": [1, 1]}
    uni = {"dynamics": {"type": "unicycle"}, "controls": box, "barriers": [wall]}  # rows in cos/sin(theta)
    for other in (
        {**cfg, "barriers": cfg["barriers"] + [speed]},
        {**cfg, "barriers": cfg["barriers"] + [disc]},
        uni,
    ):
        assert SafetyFilter.from_config(other).kernel == "scalar"  # auto: the next fastest
        with pytest.raises(ValueError, match="kernel: 'affine' is for"):
            SafetyFilter.from_config({**other, "kernel": "affine"})
    assert SafetyFilter.from_config({**cfg, "kernel": "generic"}).kernel == "generic"
    with pytest.raises(ValueError, match=r"kernel: 'fast' unknown; choose one of \['auto'"):
        SafetyFilter.from_config({**cfg, "kernel": "fast"})
    scan = {"type": "laser_scan", "name": "s", "radius": 0.2, "max_points": 4, "gains": [1.0, 1.0]}
    with pytest.raises(ValueError, match="kernel: 'scalar' is for"):
        SafetyFilter.from_config({**cfg, "barriers": cfg["barriers"] + [scan], "kernel": "scalar"})


def test_auto_takes_the_first_kernel_in_KERNELS_that_the_rows_allow() -> None:
    """KERNELS maps each name to its RowKernel class, in the order ``auto`` tries them; a
    kernel the rows do not allow raises naming the argument and the reason."""
    assert list(KERNELS) == ["affine", "scalar", "generic"]
    assert all(issubclass(cls, RowKernel) and cls.name == name for name, cls in KERNELS.items())
    scan = {"type": "laser_scan", "name": "s", "radius": 0.2, "max_points": 4, "gains": [1.0, 1.0]}
    disc = {"type": "circle_obstacle", "name": "o", "center": [2.0, 0.0], "radius": 0.3, "gains": [1.0, 1.0]}
    affine = linear_cfg(2, 2, seed=1)
    cases = {
        "affine": (affine, ["affine", "scalar", "generic"]),
        "scalar": ({**affine, "barriers": affine["barriers"] + [disc]}, ["scalar", "generic"]),
        "generic": ({**affine, "barriers": affine["barriers"] + [scan]}, ["generic"]),
    }
    for want, (cfg, allowed) in cases.items():
        got = []
        for name in KERNELS:
            try:
                assert SafetyFilter.from_config({**cfg, "kernel": name}).kernel == name
                got.append(name)
            except ValueError as e:
                assert str(e).startswith(f"kernel: {name!r} is for ") and "use kernel 'auto'" in str(e)
        assert got == allowed
        assert SafetyFilter.from_config(cfg).kernel == want == got[0]


def test_linear_kernel_non_finite_and_huge_inputs_fall_back_or_stay_in_the_box() -> None:
    filt = SafetyFilter.from_config(linear_cfg(3, 4, seed=2, joints=True))
    x = np.zeros(6)
    u, rep = filt.filter([np.nan, 0, 0, 0, 0, 0], np.zeros(3))
    assert rep.fallback_used and rep.status == "invalid_input" and "x" in rep.fallback_reason
    u, rep = filt.filter(x, [0.0, np.inf, 0.0])
    assert rep.fallback_used and "u_nom" in rep.fallback_reason
    u, rep = filt.filter(np.full(6, 1e300), np.zeros(3))  # rows overflow: no unverified command
    assert rep.fallback_used and rep.status == "solver_error"
    assert ((u >= filt.lower) & (u <= filt.upper)).all()
    u, rep = filt.filter(x, [1e300, -1e300, 3.0])
    assert ((u >= filt.lower) & (u <= filt.upper)).all() and np.isfinite(u).all()
    G, h, _ = filt.constraints(x)
    assert (G @ u <= h + 1e-9 * (1 + np.abs(h))).all()


def scan_reference(
    pts: np.ndarray, p: np.ndarray, v: np.ndarray | None, m: int, r: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """h, -dh/dp and v'Hess(h)v of the m nearest finite points, sorted by distance (brute force)."""
    fin = pts[np.isfinite(pts).all(axis=1)]
    d = fin - p
    dist = np.sqrt((d * d).sum(axis=1))
    o = np.argsort(dist)[:m]
    ng = d[o] / dist[o, None]
    curv = np.zeros(len(o)) if v is None else (v @ v - (ng @ v) ** 2) / dist[o]
    return dist[o] - r, ng, curv


@pytest.mark.parametrize("path", ["compiled", "numpy"])
@pytest.mark.parametrize("dyn_type", ["diff_drive", "unicycle"])
def test_scan_rows_equal_brute_force_nearest_points(dyn_type: str, path: str) -> None:
    """The scan barrier's selection (compiled, barriernet.compiled; or numpy: complex-plane
    distances, non-finite points left to sort last) against a brute-force reference, with
    no-return points, few points, odd layouts; with more points than rows, nearest first."""
    from barriernet import compiled
    from barriernet.barriers import LaserScan, PointGroup
    from barriernet.dynamics import make_dynamics

    dyn = make_dynamics({"type": dyn_type})
    m, r = 6, 0.25
    scan = LaserScan({"type": "laser_scan", "name": "s", "radius": 0.2, "margin": 0.05, "max_points": m,
                      "gains": [1.0] * dyn.point_order}, "scan")  # fmt: skip
    scan.bind(dyn)
    grp = PointGroup([scan], np.zeros(m))
    if path == "numpy":
        scan._jit = None
    else:
        assert scan._jit is compiled.nearest_rows() is not None  # numba is installed here
    kin = dyn.new_kinematics()
    rng = np.random.default_rng(23)
    infl = dyn.point_inflation
    for i in range(400):
        x = rng.uniform(-2, 2, dyn.n_state)
        kin = dyn.kinematics(x, kin)
        n = int(rng.choice([0, 3, 6, 7, 72]))
        pts = rng.uniform(-3, 3, (n, 2))
        if n and i % 3 == 0:  # no returns
            bad = rng.random(n) < (0.9 if i % 9 == 0 else 0.2)
            pts[bad] = rng.choice([np.nan, np.inf, -np.inf], (int(bad.sum()), 2))
        if i % 4 == 1:
            pts = np.asfortranarray(pts)
        elif i % 4 == 2:
            pts = np.repeat(pts, 2, axis=0)[::2]  # a strided view
        v = kin.v if dyn.point_order == 2 else None
        scan.phi(kin.p, v, {"scan_points": pts})
        hv, ng, curv = scan_reference(np.asarray(pts), kin.p, v, m, r + infl)
        k = len(hv)
        if n > m and k == m:  # more finite points than rows: the rows come nearest first
            assert (np.diff(grp.hv) >= 0).all(), grp.hv
        o = np.argsort(grp.hv[:k], kind="stable")
        np.testing.assert_allclose(grp.hv[:k][o], hv, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grp.ngrad[:k][o], ng, rtol=1e-12, atol=1e-12)
        if v is not None:
            np.testing.assert_allclose(grp.curv[:k][o], curv, rtol=1e-9, atol=1e-12)
        assert (grp.hv[k:] == 1e30).all() and (grp.ngrad[k:] == 0).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.0, -1.0, -0.0])
@pytest.mark.parametrize("kind", ["linear", "generic"])
def test_bad_learned_gains_fall_back_with_the_reason(bad: float, kind: str) -> None:
    cfg = linear_cfg(2, 3, seed=4)
    if kind == "generic":
        cfg["barriers"].append({"type": "speed_limit", "name": "speed", "max": 1.0, "gains": [1.0]})
    filt = SafetyFilter.from_config(cfg)
    assert filt.kernel == ("affine" if kind == "linear" else "scalar")
    gains = np.full(filt.n_gains, 1.5)
    u, rep = filt.filter(np.zeros(4), [0.1, 0.2], gains=gains)
    assert rep.status == "optimal" and not rep.fallback_used
    gains[-1] = bad
    u, rep = filt.filter(np.zeros(4), [0.1, 0.2], gains=gains)
    assert rep.fallback_used and rep.status == "invalid_input"
    assert "gains must be finite and > 0" in rep.fallback_reason
    np.testing.assert_array_equal(u, filt.fallback_command(np.zeros(4)))


@pytest.mark.parametrize("which", ["linear", "diff_drive", "unicycle"])
def test_copies_and_pickles_are_working_filters(which: str) -> None:
    """A copy must not share or separate the filter's buffers (they are views of one another):
    it is rebuilt from the same arguments and gives the same commands as the original."""
    import copy
    import pathlib
    import pickle

    from lnn_control.config import load_filter_config

    root = pathlib.Path(__file__).resolve().parents[2]
    cfg: dict[str, Any] = linear_cfg(3, 4, seed=8)
    if which == "diff_drive":
        cfg = load_filter_config(root / "config" / "diff_drive.yaml")
    elif which == "unicycle":
        cfg = {"dynamics": {"type": "unicycle"}, "controls": {"lower": [-2, -2], "upper": [2, 2]},
               "barriers": [{"type": "circle_obstacle", "name": "o", "center": [0.5, 0.0], "radius": 0.2,
                             "gains": [2.0, 2.0]}]}  # fmt: skip
    filt = SafetyFilter.from_config(cfg)
    rng = np.random.default_rng(9)
    cases = []
    for _ in range(60):
        x = rng.uniform(-1, 1, filt.n_state)
        env = {"scan_points": rng.uniform(-3, 3, (72, 2))}
        cases.append((x, rng.uniform(filt.lower * 2, filt.upper * 2), env))
    copies = [
        pickle.loads(pickle.dumps(filt)),
        copy.deepcopy(filt),
        copy.copy(filt),
        copy.copy(copy.copy(filt)),
    ]
    kinds = set()
    for other in copies:
        assert other is not filt and other.kernel == filt.kernel
        assert other.constraint_names == filt.constraint_names and other.gain_names == filt.gain_names
        for x, u_nom, env in cases:
            a, ra = filt.filter(x, u_nom, env=env)
            b, rb = other.filter(x, u_nom, env=env)
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(ra.barrier_values, rb.barrier_values)
            assert (ra.status, ra.intervened) == (rb.status, rb.intervened)
            kinds.add(ra.status + ("+cut" if ra.intervened else ""))
    assert "optimal+cut" in kinds, kinds


@pytest.mark.parametrize("case", ["scan", "affine"])
def test_compiled_residuals_equal_numpy(case: str) -> None:
    """A u - b and the check of the solver's answer as one compiled call (barriernet.compiled
    .residuals) and in numpy give the same command, status and rows, call for call: on the
    diff_drive config (scan rows, generic kernel) and on an affine double integrator, with
    nominal commands inside, at and beyond the box and non-finite ones."""
    from barriernet import compiled
    from lnn_control.config import load_filter_config

    root = pathlib.Path(__file__).resolve().parents[2]
    cfg = (
        load_filter_config(root / "config" / "diff_drive.yaml")
        if case == "scan"
        else linear_cfg(3, 4, seed=5)
    )
    jit, plain = SafetyFilter.from_config(cfg), SafetyFilter.from_config(cfg)
    assert jit._kernel._resid is compiled.residuals() is not None  # numba is installed here
    plain._kernel._resid = None
    rng = np.random.default_rng(31)
    statuses = set()
    for i in range(300):
        x = rng.uniform(-2.0, 2.0, jit.n_state)
        env = None
        if case == "scan":
            ang, rad = rng.uniform(-np.pi, np.pi, 72), rng.uniform(0.3, 3.0, 72)
            env = {"scan_points": x[:2] + np.column_stack([rad * np.cos(ang), rad * np.sin(ang)])}
        u_nom = rng.uniform(2.0 * jit.lower, 2.0 * jit.upper)
        if i % 50 == 7:
            u_nom[0] = np.nan
        (u1, r1), (u2, r2) = jit.filter(x, u_nom, env=env), plain.filter(x, u_nom, env=env)
        assert r1.status == r2.status and r1.fallback_reason == r2.fallback_reason
        np.testing.assert_allclose(u1, u2, rtol=1e-12, atol=1e-12)
        assert np.array_equal(r1.active, r2.active) and r1.intervened == r2.intervened
        statuses.add((r1.status, r1.intervened))
    assert {("optimal", True), ("optimal", False), ("invalid_input", True)} <= statuses, statuses
