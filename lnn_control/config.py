"""Robot configuration files: the one place that finds and reads ``config/<robot>.yaml``.

A robot config is a ROS 2 params file (``<node>: ros__parameters: {...}``) or the same keys at
top level. Its ``observation:`` section is the observation mapping
(:class:`~lnn_control.control.observation.ObservationMap`) and its ``safety_filter:`` section the
:class:`barriernet.SafetyFilter` (named-barrier layout, expanded by :func:`expand_filter_config`).
The node reads the same sections as ROS parameters, so node, training and evaluation share one
mapping and one filter.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = [
    "REPO",
    "config_path",
    "expand_filter_config",
    "load_filter_config",
    "load_observation_config",
    "model_path",
    "read_robot_config",
    "robot_section",
]

REPO = pathlib.Path(__file__).resolve().parents[1]
"""The source checkout (holds ``config/``, ``models/``, ``msg/``) when running from one."""


def _share() -> pathlib.Path:
    return pathlib.Path(sys.prefix) / "share" / "lnn_control"


def config_path(robot: str) -> pathlib.Path:
    """``config/<robot>.yaml`` of the source tree, else of the installed ROS package share."""
    here = REPO / "config" / f"{robot}.yaml"
    return here if here.is_file() else _share() / "config" / f"{robot}.yaml"


def model_path(robot: str) -> pathlib.Path:
    """``models/<robot>.npz`` of the source tree, else of the installed ROS package share."""
    here = REPO / "models" / f"{robot}.npz"
    return here if here.is_file() else _share() / "models" / f"{robot}.npz"


def _load(path: str | pathlib.Path) -> Mapping[str, Any]:
    p = pathlib.Path(path)
    cfg = yaml.safe_load(p.read_text()) or {}
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{p}: expected a YAML mapping")
    return cfg


def read_robot_config(path: str | pathlib.Path) -> dict[str, Any]:
    """The node's parameters in a robot config YAML (``<node>: ros__parameters:`` or top level)."""
    cfg = _load(path)
    for v in cfg.values():
        if isinstance(v, Mapping) and isinstance(v.get("ros__parameters"), Mapping):
            return dict(v["ros__parameters"])
    return dict(cfg)


def robot_section(path: str | pathlib.Path, key: str) -> Mapping[str, Any]:
    """The ``key:`` mapping of a robot config, at top level or under ``<node>.ros__parameters``."""
    cfg = _load(path)
    if isinstance(cfg.get(key), Mapping):
        return cfg[key]  # type: ignore[no-any-return]
    section = read_robot_config(path).get(key)
    if isinstance(section, Mapping):
        return section
    raise ValueError(f"{path}: no '{key}:' section (top level or under <node>.ros__parameters)")


def load_observation_config(path: str | pathlib.Path) -> Any:
    """ObservationMap from the ``observation:`` section of a robot config YAML.

    Accepts the ROS params layout of ``config/*.yaml`` (``<node>: ros__parameters: observation:``,
    entries referred to by name) and a plain layout (``observation:`` at top level, inline entries).
    """
    from lnn_control.control.observation import ObservationMap

    return ObservationMap(robot_section(path, "observation"))


def expand_filter_config(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``safety_filter`` parameters (named-barrier layout) -> the ``SafetyFilter.from_config`` schema.

    In ROS parameters ``barriers`` is a list of names, each barrier a mapping ``<name>: {...}``
    beside it, with an optional ``enabled`` flag (false drops it). A list of mappings (the
    schema itself) passes through unchanged.
    """
    if not isinstance(tree, Mapping):
        raise ValueError("safety_filter: expected a mapping (dynamics, controls, barriers, ...)")
    names = tree.get("barriers", [])
    if not isinstance(names, list):
        raise ValueError("safety_filter.barriers: give a list of barrier names")
    out: dict[str, Any] = {}
    barriers: list[dict[str, Any]] = []
    for b in names:
        if isinstance(b, Mapping):
            barriers.append(dict(b))
            continue
        entry = tree.get(b)
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"safety_filter.barriers: {b!r} names no entry; add 'safety_filter.{b}: {{type: ...}}'"
            )
        d = {"name": str(b), **entry}
        if d.pop("enabled", True):
            barriers.append(d)
    for k, v in tree.items():
        if k != "barriers" and k not in names:
            out[k] = dict(v) if isinstance(v, Mapping) else v
    out["barriers"] = barriers
    return out


def load_filter_config(path: str | pathlib.Path) -> dict[str, Any]:
    """The ``SafetyFilter.from_config`` dict from the ``safety_filter:`` section of a robot YAML."""
    return expand_filter_config(robot_section(path, "safety_filter"))
