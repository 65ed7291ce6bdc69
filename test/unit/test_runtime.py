"""PolicyStepper: every kernel gives torch's numbers (float64, 1,000 irregular steps), torch-free, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP, FullyConnected, RandomSparse
from lnn_control.runtime import KERNELS, PolicyStepper, load_stepper, save_policy

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("torch_float64_seeded")  # float64, seed 0 (conftest.py)


CONFIGS = {
    "cfc_ncp_default": dict(cell="cfc", wiring=AutoNCP(19, 2, seed=1)),
    "cfc_ncp_no_gate_gains": dict(cell="cfc", wiring=AutoNCP(19, 3, seed=2), mode="no_gate", n_gains=1),
    "cfc_ncp_pure": dict(cell="cfc", wiring=AutoNCP(16, 2, seed=3), mode="pure"),
    "cfc_ncp_pure_mixed": dict(cell="cfc", wiring=AutoNCP(16, 2, seed=3), mode="pure", mixed_memory=True),
    "cfc_ncp_default_mixed": dict(cell="cfc", wiring=AutoNCP(16, 2, seed=3), mixed_memory=True),
    "cfc_ncp_ncps_synapses_proj": dict(
        cell="cfc", wiring=AutoNCP(19, 3), synapses="ncps", proj_size=4, n_gains=2
    ),
    "cfc_fc_wired": dict(cell="cfc", wiring=FullyConnected(10, 3, seed=4)),
    "cfc_dense": dict(cell="cfc", units=16),
    "cfc_dense_no_gate_mixed": dict(
        cell="cfc", units=12, mode="no_gate", mixed_memory=True, backbone_units=20
    ),
    "cfc_dense_pure_gelu2": dict(
        cell="cfc", units=12, mode="pure", backbone_layers=2, backbone_activation="gelu"
    ),
    "cfc_dense_relu3_proj": dict(
        cell="cfc", units=12, backbone_layers=3, backbone_activation="relu", proj_size=2
    ),
    "cfc_dense_silu_nobackbone": dict(cell="cfc", units=9, backbone_layers=0, backbone_activation="silu"),
    "ltc_ncp_fused": dict(cell="ltc", wiring=AutoNCP(19, 2, seed=1)),
    "ltc_ncp_mixed_gain": dict(cell="ltc", wiring=AutoNCP(19, 3, seed=2), mixed_memory=True, n_gains=1),
    "ltc_fc": dict(cell="ltc", units=10),
    "ltc_ncp64_auto_sparse": dict(cell="ltc", wiring=AutoNCP(64, 2, seed=3)),
    "ltc_gappy_sparse": dict(cell="ltc", wiring=RandomSparse(20, 2, 0.93, seed=1)),  # neurons without inputs
    "ltc_fc_wiring_euler": dict(cell="ltc", wiring=FullyConnected(8, 2), solver="euler", ode_unfolds=4),
    "ltc_sparse_rk4_nomap": dict(
        cell="ltc", wiring=RandomSparse(10, 2, 0.6, seed=5), solver="rk4", positive="none", input_mapping=None
    ),
}


def _trained_looking(cfg: dict, n_in: int = 8) -> LiquidPolicy:
    p = LiquidPolicy(n_in, **cfg).eval()
    with torch.no_grad():
        for prm in p.parameters():
            prm.add_(0.2 * torch.randn_like(prm))
    rng = np.random.default_rng(1)
    p.set_normalization(
        rng.normal(size=n_in),
        rng.uniform(0.5, 2, n_in),
        rng.normal(size=p.n_commands),
        rng.uniform(0.5, 2, p.n_commands),
    )
    return p


def _irregular(T: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1, T, 8)) * 2, rng.uniform(0.005, 0.6, size=(1, T))


def _run(s: PolicyStepper, x: np.ndarray, ts: np.ndarray) -> np.ndarray:
    return np.stack([s.step(x[0, t], ts[0, t]) for t in range(x.shape[1])])


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal to float64 round-off: 1e-13 of the outputs' scale (measured: <= 3e-14)."""
    return bool(np.abs(a - b).max() <= 1e-13 * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stepper_matches_torch_over_1000_irregular_steps(name: str) -> None:
    p = _trained_looking(CONFIGS[name])
    x, ts = _irregular(1000)
    with torch.no_grad():
        y, h = p(torch.tensor(x), torch.tensor(ts))
    s = p.runtime()
    assert s.kernel in KERNELS
    ys = _run(s, x, ts)
    assert ys.shape == (1000, p.n_outputs)
    assert _close(ys, y[0].numpy())  # contract: 1e-6
    assert _close(s.state, h[0].numpy())


# which kernels run which configs (any other raises ValueError naming ``kernel``); cfc_jit runs
# float64 CfCs without a backbone or mixed memory, in every mode
_FITS = {
    "ltc_ncp_fused": {"ltc_dense", "ltc_sparse", "ltc_split"},
    "ltc_ncp64_auto_sparse": {"ltc_dense", "ltc_sparse", "ltc_split"},
    "cfc_ncp_default": {"cfc_default", "cfc_jit"},
    "cfc_ncp_no_gate_gains": {"cfc_no_gate", "cfc_jit"},
    "cfc_ncp_pure": {"cfc_pure", "cfc_jit"},
    "cfc_ncp_ncps_synapses_proj": {"cfc_default", "cfc_jit"},
    "cfc_fc_wired": {"cfc_default", "cfc_jit"},
    "cfc_dense_silu_nobackbone": {"cfc_default", "cfc_jit"},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_kernel_equals_the_reference_kernel(name: str) -> None:
    """Each kernel that runs a config gives the reference kernel's numbers (and torch's), state included."""
    p = _trained_looking(CONFIGS[name])
    x, ts = _irregular(1000, seed=5)
    with torch.no_grad():
        y, h = p(torch.tensor(x), torch.tensor(ts))
    cfg, arrays = p.get_config(), p.numpy_state()
    mode = cfg.get("mode", "default")
    reference = f"cfc_{mode}" if p.cell == "cfc" else "ltc_dense"
    ref = PolicyStepper(cfg, arrays, kernel=reference)
    y_ref, h_ref = _run(ref, x, ts), ref.state
    ran = set()
    for kernel in KERNELS:
        try:
            s = PolicyStepper(cfg, arrays, kernel=kernel)
        except ValueError as e:
            assert f"kernel {kernel!r} cannot run this policy" in str(e)
            continue
        ran.add(kernel)
        assert s.kernel == kernel
        yk = _run(s, x, ts)
        assert _close(yk, y_ref) and _close(yk, y[0].numpy()), kernel
        assert _close(s.state, h_ref) and _close(s.state, h[0].numpy()), kernel
        s.state = h[0].numpy()  # state is set/read in the torch model's neuron order
        assert np.array_equal(s.state, h[0].numpy()), kernel
    default = {reference} if p.cell == "cfc" else {"ltc_dense", "ltc_sparse"}
    assert ran == _FITS.get(name, default)
    assert p.runtime().kernel in ran


def test_auto_kernel_follows_network_size() -> None:
    """auto: dense for a small LTC, split for a large NCP, sparse for a large net without free neurons."""
    torch.manual_seed(3)
    small = LiquidPolicy(8, cell="ltc", wiring=AutoNCP(19, 2, seed=1))
    ncp = LiquidPolicy(8, cell="ltc", wiring=AutoNCP(64, 2, seed=5))
    dense = LiquidPolicy(8, cell="ltc", wiring=FullyConnected(64, 2))
    assert [q.runtime().kernel for q in (small, ncp, dense)] == ["ltc_dense", "ltc_split", "ltc_sparse"]
    assert LiquidPolicy(8, cell="cfc", units=8, mode="pure").runtime().kernel == "cfc_pure"  # backbone


def test_auto_kernel_compiles_ncp_cfcs_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: the compiled kernel for an NCP CfC, the numpy kernel of its mode with
    LNN_CONTROL_NO_JIT set or for float32; the same outputs either way (float64 round-off)."""
    p = _trained_looking(CONFIGS["cfc_ncp_default"])
    cfg, arrays = p.get_config(), p.numpy_state()
    x, ts = _irregular(200, seed=7)
    jit = PolicyStepper(cfg, arrays)
    assert jit.kernel == "cfc_jit"
    assert PolicyStepper(cfg, arrays, dtype=np.float32).kernel == "cfc_default"
    monkeypatch.setenv("LNN_CONTROL_NO_JIT", "1")
    plain = PolicyStepper(cfg, arrays)
    assert plain.kernel == "cfc_default"
    with pytest.raises(ValueError, match="LNN_CONTROL_NO_JIT is set"):
        PolicyStepper(cfg, arrays, kernel="cfc_jit")
    assert _close(_run(jit, x, ts), _run(plain, x, ts))
    assert _close(jit.state, plain.state)


def test_ltc_split_kernel_float32_matches_torch_on_large_ncp() -> None:
    """The split kernel (free inter neurons in closed form) in float32: same function, single precision."""
    torch.manual_seed(3)
    p = LiquidPolicy(8, cell="ltc", wiring=AutoNCP(64, 2, seed=5)).double().eval()
    x, ts = _irregular(50, seed=3)
    with torch.no_grad():
        y, _ = p(torch.tensor(x), torch.tensor(ts))
    s32 = PolicyStepper(p.get_config(), p.numpy_state(), dtype=np.float32, kernel="ltc_split")
    np.testing.assert_allclose(_run(s32, x, ts), y[0].numpy(), atol=1e-3, rtol=1e-3)


def test_state_reset_and_restore() -> None:
    p = _trained_looking(CONFIGS["cfc_ncp_default_mixed"])
    s = p.runtime()
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(30, 8))
    first = [s.step(o, 0.05) for o in obs]
    saved = s.state
    assert saved.shape == (s.state_size,) == (32,)
    later = [s.step(o, 0.05) for o in obs[:5]]
    s.state = saved
    np.testing.assert_array_equal(np.stack([s.step(o, 0.05) for o in obs[:5]]), np.stack(later))
    s.reset()
    assert (s.state == 0).all()
    np.testing.assert_array_equal(np.stack([s.step(o, 0.05) for o in obs]), np.stack(first))
    # state is a copy: writing to it does not change the stepper
    st = s.state
    st[:] = 99.0
    assert not (s.state == 99.0).any()
    # outputs are copies too: the next step does not change the last one's, writing to it changes nothing
    y = s.step(obs[0], 0.05)
    kept = y.copy()
    y2 = s.step(obs[1], 0.05)
    np.testing.assert_array_equal(y, kept)
    y2[:] = 0.0
    s.state = saved
    np.testing.assert_array_equal(s.step(obs[0], 0.05), later[0])


def test_bad_input_names_the_argument_and_keeps_state() -> None:
    p = _trained_looking(CONFIGS["ltc_ncp_fused"])
    s = p.runtime()
    s.step(np.ones(8), 0.1)
    before = s.state
    cases = [
        (np.ones(7), 0.1, r"obs must have shape \(8,\)"),
        (np.ones((1, 8)), 0.1, r"obs must have shape \(8,\)"),
        (np.ones((2, 8)), 0.1, r"obs must have shape \(8,\)"),
        (3.0, 0.1, r"obs must have shape \(8,\)"),
        ("abcdefgh", 0.1, "obs must have shape"),
        (np.r_[np.ones(7), np.nan], 0.1, r"obs has NaN/Inf .* at \[7\]"),
        (np.r_[np.inf, np.ones(7)], 0.1, r"obs has NaN/Inf .* at \[0\]"),
        (np.ones(8), 0.0, "dt must be finite and > 0"),
        (np.ones(8), -0.01, "dt must be finite and > 0"),
        (np.ones(8), float("nan"), "dt must be finite and > 0"),
        (np.ones(8), float("inf"), "dt must be finite and > 0"),
        (np.ones(8), "fast", "dt must be a number of seconds"),
    ]
    for obs, dt, msg in cases:
        with pytest.raises(ValueError, match=msg):
            s.step(obs, dt)
        np.testing.assert_array_equal(s.state, before)
    with pytest.raises(ValueError, match="state must be 19 finite values"):
        s.state = np.zeros(18)
    with pytest.raises(ValueError, match="dtype must be float64 or float32"):
        p.runtime(dtype=np.int32)


def test_bad_kernel_names_the_argument_and_the_choices(tmp_path: Path) -> None:
    ltc = _trained_looking(CONFIGS["ltc_ncp_fused"])
    cfc = _trained_looking(CONFIGS["cfc_ncp_default"])
    cases: list[tuple[LiquidPolicy, Any, str]] = [
        (ltc, "gpu", r"kernel 'gpu' is unknown; use one of \['auto', 'cfc_default', 'cfc_no_gate'"),
        (ltc, 3, r"kernel must be 'auto' or one of \['cfc_default'"),
        (
            cfc,
            "ltc_dense",
            r"kernel 'ltc_dense' cannot run this policy: it runs ltc cells.*'auto' or a cfc kernel",
        ),
        (
            cfc,
            "cfc_pure",
            r"kernel 'cfc_pure' cannot run this policy: it runs CfC mode 'pure'.*mode 'default'",
        ),
        (
            _trained_looking(CONFIGS["ltc_fc"]),
            "ltc_split",
            "kernel 'ltc_split' cannot run this policy: .*an NCP",
        ),
        (
            _trained_looking(CONFIGS["ltc_ncp_mixed_gain"]),
            "ltc_split",
            "ltc_split' .*does not run mixed memory",
        ),
        (_trained_looking(CONFIGS["ltc_fc_wiring_euler"]), "ltc_split", r"ltc_split' .*needs solver 'fused'"),
    ]
    for p, kernel, msg in cases:
        with pytest.raises(ValueError, match=msg):
            PolicyStepper(p.get_config(), p.numpy_state(), kernel=kernel)
    path = save_policy(tmp_path / "ltc.npz", ltc)
    assert load_stepper(path, kernel="ltc_sparse").kernel == "ltc_sparse"
    with pytest.raises(ValueError, match="kernel 'gpu' is unknown"):
        load_stepper(path, kernel="gpu")
    with pytest.raises(ValueError, match="config mode 'fast' is not a CfC mode"):
        PolicyStepper(dict(cfc.get_config(), mode="fast"), cfc.numpy_state())
    dense = _trained_looking(CONFIGS["cfc_dense_relu3_proj"])
    with pytest.raises(ValueError, match="backbone activation 'swish' is not supported"):
        PolicyStepper(dict(dense.get_config(), backbone_activation="swish"), dense.numpy_state())


def test_runtime_package_exports_its_api_without_torch() -> None:
    """import lnn_control.runtime loads no torch; load_policy / save_policy import it when called."""
    code = textwrap.dedent(
        """
        import sys
        import lnn_control.runtime as rt
        assert sorted(rt.__all__) == sorted(
            ["KERNELS", "ModelFileError", "PolicyStepper", "load_policy", "load_stepper", "save_policy"]
        ), rt.__all__
        assert all(callable(getattr(rt, n)) for n in rt.__all__ if n != "KERNELS")
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch imported"
        print(sorted(rt.KERNELS))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "['cfc_default',",
        "'cfc_jit',",
        "'cfc_no_gate',",
        "'cfc_pure',",
        "'ltc_dense',",
        "'ltc_sparse',",
        "'ltc_split']",
    ]


def test_stepper_needs_no_torch(tmp_path: Path) -> None:
    """The run-time path imports without torch: torch is blocked in a fresh interpreter."""
    p = _trained_looking(CONFIGS["cfc_ncp_no_gate_gains"])
    path = save_policy(tmp_path / "m.npz", p)
    x = np.random.default_rng(4).normal(size=(20, 8))
    with torch.no_grad():
        y, _ = p(torch.tensor(x[None]), 0.1)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any 'import torch' now raises ImportError
        import numpy as np
        from lnn_control.runtime import load_stepper
        s = load_stepper({str(path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, np.stack([s.step(o, 0.1) for o in x]))
        loaded = [m for m, mod in sys.modules.items() if mod is not None]
        assert not any(m == "torch" or m.startswith("torch.") for m in loaded)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), y[0].numpy(), atol=1e-12, rtol=0)


def test_bad_arrays_fail_at_construction() -> None:
    p = _trained_looking(CONFIGS["ltc_fc"])
    arrays = p.numpy_state()
    bad = dict(arrays)
    bad["net.cell.sigma"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"net.cell.sigma' has shape \(3, 3\), expected \(10, 10\)"):
        PolicyStepper(p.get_config(), bad)
    bad = dict(arrays)
    del bad["input_std"]
    with pytest.raises(ValueError, match="model arrays lack 'input_std'"):
        PolicyStepper(p.get_config(), bad)
    with pytest.raises(ValueError, match="config cell 'gru'"):
        PolicyStepper(dict(p.get_config(), cell="gru"), arrays)
    with pytest.raises(ValueError, match="policy config is missing"):
        PolicyStepper({"cell": "ltc"}, arrays)


@pytest.mark.parametrize("kernel", ["auto", "cfc_no_gate"])
def test_pickled_and_copied_steppers_continue_where_the_original_is(kernel: str) -> None:
    """pickle and deepcopy rebuild the stepper (its buffers alias as laid out, the compiled
    kernel is compiled or loaded anew) with the same hidden state: the copies give the
    original's next outputs exactly, and the file sections come along."""
    import copy
    import pickle

    p = _trained_looking(CONFIGS["cfc_ncp_no_gate_gains"])
    s = PolicyStepper(p.get_config(), p.numpy_state(), kernel=kernel)
    s.observation, s.metadata = {"features": ["a"]}, {"epochs": 3}
    x, ts = _irregular(30, seed=11)
    _run(s, x[:, :10], ts[:, :10])
    copies = [pickle.loads(pickle.dumps(s)), copy.deepcopy(s)]
    want = _run(s, x[:, 10:], ts[:, 10:])
    for c in copies:
        assert c.kernel == s.kernel and c.observation == s.observation and c.metadata == s.metadata
        assert np.array_equal(_run(c, x[:, 10:], ts[:, 10:]), want)
