"""Every JSON file the package writes parses with a strict parser (no NaN / Infinity tokens)."""

from __future__ import annotations

import math
import pathlib
import subprocess

import numpy as np
import pytest

from lnn_control import strict_json

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_non_finite_values_become_null_and_numpy_becomes_plain() -> None:
    obj = {
        "a": float("nan"),
        "b": [1.0, float("inf"), -float("inf")],
        "c": np.float64(2.5),
        "d": np.arange(3),
    }
    text = strict_json.dumps(obj)
    assert "NaN" not in text and "Infinity" not in text
    assert strict_json.loads(text) == {"a": None, "b": [1.0, None, None], "c": 2.5, "d": [0, 1, 2]}


def test_keep_nonfinite_is_lossless_for_internal_files() -> None:
    out = strict_json.clean({"x": np.float64("nan")}, keep_nonfinite=True)
    assert math.isnan(out["x"])


def test_strict_parser_rejects_nan_tokens() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        strict_json.loads('{"x": NaN}')
    with pytest.raises(ValueError, match="not JSON"):
        strict_json.loads("[Infinity]")


def test_unserialisable_objects_are_named() -> None:
    with pytest.raises(TypeError, match="object"):
        strict_json.dumps({"x": object()})


def test_write_roundtrip(tmp_path: pathlib.Path) -> None:
    p = strict_json.write(tmp_path / "s.json", {"m": np.array([1.0, np.nan])})
    assert strict_json.loads(p.read_text()) == {"m": [1.0, None]}


def _tracked_json() -> list[pathlib.Path]:
    out = subprocess.run(["git", "ls-files", "*.json"], cwd=ROOT, capture_output=True, text=True)
    return [ROOT / f for f in out.stdout.split()] if out.returncode == 0 else []


@pytest.mark.parametrize("path", _tracked_json(), ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_json_files_are_strict(path: pathlib.Path) -> None:
    strict_json.loads(path.read_text())


def test_model_file_config_is_strict_json(tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    from lnn_control.nn.policy import LiquidPolicy
    from lnn_control.nn.wiring import AutoNCP
    from lnn_control.runtime.model_file import save_policy

    torch.manual_seed(0)
    model = LiquidPolicy(3, "cfc", AutoNCP(8, 2, seed=1))
    path = save_policy(tmp_path / "m.npz", model, val_loss=float("nan"))
    text = str(np.load(path, allow_pickle=False)["__config__"])
    assert strict_json.loads(text)["metadata"]["val_loss"] is None
