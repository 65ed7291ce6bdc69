"""Model files: round trips (torch and torch-free), metadata, and every kind of broken file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP
from lnn_control.runtime.model_file import (
    ModelFileError,
    load_policy,
    load_stepper,
    read_model_file,
    save_policy,
)

OBS = {"inputs": [{"topic": "/odom", "field": "twist.twist.linear.x"}], "rate": 20.0}


@pytest.fixture
def policy() -> LiquidPolicy:
    torch.manual_seed(0)
    p = LiquidPolicy(
        4,
        "cfc",
        AutoNCP(12, 3, seed=7),
        n_gains=1,
        input_names=["a", "b", "c", "d"],
        output_names=["v", "w"],
        gain_names=["k"],
    ).eval()
    p.set_normalization([0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0], [0.5, -0.5], [2.0, 3.0])
    return p


def _rewrite(
    path: Path, out: Path, change: dict | None = None, drop: str | None = None, config: str | None = None
) -> None:
    with np.load(path, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    if drop:
        del arrays[drop]
    arrays.update(change or {})
    if config is not None:
        arrays["__config__"] = np.array(config)
    np.savez(out, **arrays)


def test_round_trip_torch_and_stepper(tmp_path: Path, policy: LiquidPolicy) -> None:
    path = save_policy(tmp_path / "model", policy, observation=OBS, epochs=12, dataset="bags/run1")
    assert path.endswith("model.npz")
    q = load_policy(path)
    x = torch.randn(2, 6, 4)
    torch.testing.assert_close(q(x, 0.1)[0], policy(x, 0.1)[0], atol=0, rtol=0)
    assert q.get_config() == policy.get_config()
    assert q.observation == OBS and q.metadata == {"epochs": 12, "dataset": "bags/run1"}
    s = load_stepper(path)
    assert s.observation == OBS and s.metadata["epochs"] == 12
    assert (s.n_inputs, s.n_outputs, s.n_gains) == (4, 3, 1)
    assert s.input_names == ["a", "b", "c", "d"] and s.output_names == ["v", "w"] and s.gain_names == ["k"]
    ys = np.stack([s.step(o, 0.1) for o in x[0].numpy()])
    np.testing.assert_allclose(
        ys, policy(x[:1], 0.1)[0][0].detach().numpy(), atol=1e-6, rtol=0
    )  # float32 model
    # the config is human-readable JSON with the wiring seed and normalisation
    config, arrays = read_model_file(path)
    assert config["policy"]["wiring"]["seed"] == 7 and config["normalization"]["input_std"] == [
        1.0,
        2.0,
        3.0,
        4.0,
    ]
    assert set(arrays) == set(policy.state_dict())


def test_float64_round_trip_and_argument_order(tmp_path: Path, policy: LiquidPolicy) -> None:
    p64 = policy.double()
    path = save_policy(p64, tmp_path / "m64.npz")  # (policy, path) accepted too
    q = load_policy(path)
    assert q.input_mean.dtype == torch.float64
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(q(x, 0.2)[0], p64(x, 0.2)[0], atol=0, rtol=0)
    s = load_stepper(path)
    np.testing.assert_allclose(
        np.stack([s.step(o, 0.2) for o in x[0].numpy()]), p64(x, 0.2)[0][0].detach().numpy(), atol=1e-12
    )


def test_broken_files_raise_model_file_error(tmp_path: Path, policy: LiquidPolicy) -> None:
    good = Path(save_policy(tmp_path / "good.npz", policy))
    config = json.loads(str(np.load(good)["__config__"]))
    bad: dict[str, tuple[Path, str]] = {}

    p = tmp_path / "truncated.npz"
    p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    bad["truncated"] = (p, "unreadable")

    p = tmp_path / "text.npz"
    p.write_text("not a zip")
    bad["not_zip"] = (p, "unreadable")

    p = tmp_path / "shape.npz"
    _rewrite(good, p, change={"net.cells.1.w_rec": np.zeros((2, 2), np.float32)})
    bad["wrong_shape"] = (p, r"net.cells.1.w_rec has shape \[2, 2\], manifest says")

    p = tmp_path / "missing.npz"
    _rewrite(good, p, drop="input_std")
    bad["missing_array"] = (p, r"arrays missing \['input_std'\]")

    p = tmp_path / "noconfig.npz"
    _rewrite(good, p, drop="__config__")
    bad["missing_config"] = (p, "no __config__ entry")

    p = tmp_path / "json.npz"
    _rewrite(good, p, config="{not json")
    bad["bad_json"] = (p, "not valid JSON")

    p = tmp_path / "version.npz"
    _rewrite(good, p, config=json.dumps(dict(config, format_version=99)))
    bad["version"] = (p, "format_version 99, this code reads 1")

    p = tmp_path / "format.npz"
    _rewrite(good, p, config=json.dumps(dict(config, format="keras")))
    bad["format"] = (p, "format is 'keras'")

    p = tmp_path / "nan.npz"
    _rewrite(good, p, change={"input_mean": np.array([np.nan, 0, 0, 0], np.float32)})
    bad["nan"] = (p, "input_mean has NaN/Inf")

    # manifest and arrays agree, but they do not fit the policy config (units changed)
    p = tmp_path / "mismatch.npz"
    cfg = json.loads(json.dumps(config))
    cfg["policy"]["wiring"]["units"] = 14
    _rewrite(good, p, config=json.dumps(cfg))
    bad["config_mismatch"] = (p, "do not (fit|match) the policy config")

    bad["absent"] = (tmp_path / "nope.npz", "no such model file")

    for _case, (path, msg) in bad.items():
        for loader in (load_stepper, load_policy):
            with pytest.raises(ModelFileError, match=msg):
                loader(path)
    assert zipfile.is_zipfile(good)


def test_refuses_to_save_broken_or_unserialisable(tmp_path: Path, policy: LiquidPolicy) -> None:
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_policy(tmp_path / "m", policy, extra=object())
    with torch.no_grad():
        policy.net.cells[0].w_in[0, 0] = float("nan")
    with pytest.raises(ValueError, match="net.cells.0.w_in has NaN/Inf"):
        save_policy(tmp_path / "m", policy)
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(ValueError, match="policy must be a LiquidPolicy"):
        save_policy(tmp_path / "m", torch.nn.Linear(2, 2))
