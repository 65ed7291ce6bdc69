"""PolicyStepper: same numbers as the torch model (float64, 1,000 irregular steps), torch-free, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP, FullyConnected, RandomSparse

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("torch_float64_seeded")  # float64, seed 0 (conftest.py)


CONFIGS = {
    "cfc_ncp_default": dict(cell="cfc", wiring=AutoNCP(19, 2, seed=1)),
    "cfc_ncp_no_gate_gains": dict(cell="cfc", wiring=AutoNCP(19, 3, seed=2), mode="no_gate", n_gains=1),
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


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stepper_matches_torch_over_1000_irregular_steps(name: str) -> None:
    p = _trained_looking(CONFIGS[name])
    rng = np.random.default_rng(2)
    T = 1000
    x = rng.normal(size=(1, T, 8)) * 2
    ts = rng.uniform(0.005, 0.6, size=(1, T))
    with torch.no_grad():
        y, h = p(torch.tensor(x), torch.tensor(ts))
    s = p.runtime()
    ys = np.stack([s.step(x[0, t], ts[0, t]) for t in range(T)])
    assert ys.shape == (T, p.n_outputs)
    assert np.abs(ys - y[0].numpy()).max() <= 1e-9  # contract: 1e-6
    assert np.abs(s.state - h[0].numpy()).max() <= 1e-9
    if p.cell == "ltc":  # both LTC kernels, whichever "auto" picked
        from lnn_control.runtime.stepper import PolicyStepper

        for kernel in ("dense", "sparse", "split"):
            try:
                sk = PolicyStepper(p.get_config(), p.numpy_state(), ltc_kernel=kernel)
            except ValueError as e:  # split needs a fused, unmixed NCP-like wiring
                assert kernel == "split" and "needs the fused solver" in str(e)
                continue
            yk = np.stack([sk.step(x[0, t], ts[0, t]) for t in range(T)])
            assert np.abs(yk - y[0].numpy()).max() <= 1e-9, kernel
            assert np.abs(sk.state - h[0].numpy()).max() <= 1e-9, kernel
            sk.state = h[0].numpy()  # state is set/read in the torch model's neuron order
            assert np.abs(sk.state - h[0].numpy()).max() == 0.0, kernel


def test_ltc_split_kernel_matches_torch_on_large_ncp() -> None:
    """The split kernel (free inter neurons in closed form) gives the torch numbers on AutoNCP(64)."""
    from lnn_control.nn.wiring import AutoNCP
    from lnn_control.runtime.stepper import PolicyStepper

    torch.manual_seed(3)
    p = LiquidPolicy(8, cell="ltc", wiring=AutoNCP(64, 2, seed=5)).double().eval()
    rng = np.random.default_rng(3)
    T = 200
    x, ts = rng.normal(size=(1, T, 8)), rng.uniform(0.005, 0.6, size=(1, T))
    with torch.no_grad():
        y, h = p(torch.tensor(x), torch.tensor(ts))
    s = PolicyStepper(p.get_config(), p.numpy_state(), ltc_kernel="split")
    assert s._split
    ys = np.stack([s.step(x[0, t], ts[0, t]) for t in range(T)])
    assert np.abs(ys - y[0].numpy()).max() <= 1e-9
    assert np.abs(s.state - h[0].numpy()).max() <= 1e-9
    # float32 mode: same function, single precision
    s32 = p.runtime(dtype=np.float32)
    y32 = np.stack([s32.step(x[0, t], ts[0, t]) for t in range(50)])
    np.testing.assert_allclose(y32, y[0, :50].numpy(), atol=1e-3, rtol=1e-3)


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
    # outputs are copies too
    y = s.step(obs[0], 0.05)
    y[:] = 0.0
    assert s._y.any()


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
    from lnn_control.runtime.stepper import PolicyStepper

    with pytest.raises(ValueError, match="ltc_kernel 'gpu'"):
        PolicyStepper(p.get_config(), p.numpy_state(), ltc_kernel="gpu")


def test_stepper_needs_no_torch(tmp_path: Path) -> None:
    """The run-time path imports without torch: torch is blocked in a fresh interpreter."""
    from lnn_control.runtime.model_file import save_policy

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
        from lnn_control.runtime.model_file import load_stepper
        from lnn_control.runtime import stepper as runtime
        from lnn_control.nn import wiring
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
    from lnn_control.runtime.stepper import PolicyStepper

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
