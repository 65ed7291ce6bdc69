"""Liquid networks in torch: NCP wirings, LTC and CfC cells, the sequence policy, exports.

Public API (torch is imported on first use of a torch name, so ``from lnn_control.nn import
AutoNCP`` stays light)::

    AutoNCP, NCPWiring, FullyConnected, RandomSparse, Wiring   # wirings (plain numpy)
    CfC, LTC                                                   # wired recurrent layers
    LiquidPolicy, from_ncps                                    # the policy a model file holds
    export_torchscript, export_onnx                            # one step as a deployable graph
"""

from __future__ import annotations

import importlib
from typing import Any

from lnn_control.nn.wiring import WIRINGS, AutoNCP, FullyConnected, NCPWiring, RandomSparse, Wiring

_LAZY = {
    "CfC": "lnn_control.nn.cfc_cell",
    "LTC": "lnn_control.nn.ltc_cell",
    "LiquidPolicy": "lnn_control.nn.policy",
    "from_ncps": "lnn_control.nn.policy",
    "export_onnx": "lnn_control.nn.export",
    "export_torchscript": "lnn_control.nn.export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lnn_control.nn' has no attribute {name!r}")


__all__ = [
    "WIRINGS",
    "AutoNCP",
    "CfC",
    "FullyConnected",
    "LTC",
    "LiquidPolicy",
    "NCPWiring",
    "RandomSparse",
    "Wiring",
    "export_onnx",
    "export_torchscript",
    "from_ncps",
]
