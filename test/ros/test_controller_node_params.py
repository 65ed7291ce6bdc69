"""Parameters of lnn_controller from the real params files (in-process rclpy, own Context).

Runs without the policy / filter modules: only declaration, descriptors and the observation
mapping rebuilt from ROS parameters are checked here (behaviour: test_controller_node.py).
"""

from __future__ import annotations

import pathlib

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402

from lnn_control.config import expand_filter_config, load_filter_config, load_observation_config  # noqa: E402
from lnn_control.control.observation import (  # noqa: E402
    ObservationMap,
)
from lnn_control.ros.controller_node import COUNTERS, LnnController  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(params=["diff_drive", "arm"])
def node(request):
    ctx = Context()
    cfg = ROOT / "config" / f"{request.param}.yaml"
    rclpy.init(
        context=ctx, args=["--ros-args", "--params-file", str(cfg), "-p", "model_file:=/nonexistent.npz"]
    )
    n = LnnController(context=ctx)
    try:
        yield n, cfg
    finally:
        n.destroy_node()
        rclpy.shutdown(context=ctx)


def test_every_parameter_declared_with_description_and_range(node) -> None:
    n, _ = node
    names = n._parameters.keys()
    assert any(k.startswith("observation.") for k in names) and any(
        k.startswith("safety_filter.") for k in names
    )
    for name in names:
        if name in ("use_sim_time", "start_type_description_service"):
            continue  # declared by rclpy itself
        d = n.describe_parameter(name)
        assert len(d.description) > 10, name
        if d.type == 3:  # double
            if name.startswith("safety_filter.") and name.rsplit(".", 1)[-1] not in (
                "margin",
                "radius",
                "offset",
                "penalty",
            ):
                continue
            assert d.floating_point_range, f"{name} has no range"
        if name.startswith("observation."):
            assert d.read_only, name
        if d.type == 2:  # integer
            assert d.integer_range or name.startswith(("safety_filter.", "observation.")), f"{name}: no range"
    assert n.describe_parameter("rate_hz").floating_point_range[0].to_value == 1000.0
    assert n.describe_parameter("input_queue_depth").integer_range[0].from_value == 1
    assert n.describe_parameter("control_mode").additional_constraints == "one of: message, timer"
    assert n.describe_parameter("executor").read_only


def test_tree_matches_file_readers(node) -> None:
    n, cfg = node
    # the node rebuilds the same mapping and filter config from ROS parameters as training reads
    from_params = ObservationMap(n._tree("observation"))
    from_file = load_observation_config(cfg)
    assert from_params.names == from_file.names and from_params.state_names == from_file.state_names
    assert from_params.topic_types == from_file.topic_types
    assert from_params.command_fields == from_file.command_fields
    assert expand_filter_config(n._tree("safety_filter")) == load_filter_config(cfg)


def test_configure_fails_with_reason(node) -> None:
    n, _ = node
    assert n.on_configure(None) == TransitionCallbackReturn.FAILURE
    assert "configure failed" in n.last_reason
    assert set(n.counters) == set(COUNTERS)
    # changed tree values override the file values
    t = n._tree("safety_filter", {"safety_filter.controls.upper": [0.1, 0.2, 0.3]})
    assert t["controls"]["upper"] == [0.1, 0.2, 0.3]


def test_configured_node_is_torch_free(tmp_path: pathlib.Path) -> None:
    """The run-time path (model file -> stepper, SafetyFilter, node) never imports torch: robots
    need not install it, and the node stays small (torch alone is ~200 MiB resident)."""
    import subprocess
    import sys

    import torch
    from ncps.torch import CfC
    from ncps.wirings import AutoNCP

    from lnn_control.nn.policy import from_ncps
    from lnn_control.runtime.model_file import save_policy

    torch.manual_seed(0)
    model = tmp_path / "p.npz"
    save_policy(model, from_ncps(CfC(12, AutoNCP(19, 2, seed=0), batch_first=True)))
    code = f"""
import sys, rclpy
from rclpy.context import Context
from rclpy.lifecycle import TransitionCallbackReturn
from lnn_control.ros.controller_node import LnnController
ctx = Context()
rclpy.init(context=ctx, args=["--ros-args", "--params-file", {str(ROOT / "config" / "diff_drive.yaml")!r},
                              "-p", "model_file:={model}"])
n = LnnController(context=ctx)
assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS, n.last_reason
heavy = [m for m in ("torch", "cvxpy", "sklearn") if m in sys.modules]
assert not heavy, heavy
n.destroy_node()
rclpy.shutdown(context=ctx)
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
