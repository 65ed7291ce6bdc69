"""Fixtures shared by the ROS tests."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A seeded CfC-NCP(19) policy (ncps, converted with ``from_ncps``) for config/diff_drive.yaml's
    12 inputs and 2 commands, saved as a model file: what the benchmark's node runs."""
    import torch
    from ncps.torch import CfC
    from ncps.wirings import AutoNCP

    from lnn_control.nn.policy import from_ncps
    from lnn_control.runtime.model_file import save_policy

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "policy.npz"
    save_policy(path, from_ncps(CfC(12, AutoNCP(19, 2, seed=0), batch_first=True)))
    return path
