"""Sensor messages -> policy observation vector, filter state vector and command message fields.

Pure module: no rclpy, no message imports. Messages are any objects with attributes (rclpy
messages in the node, mcap-ros2-support decoded messages in training) or plain dicts, so the
node and training map fields with the same code and can never disagree.

Config (the ``observation:`` section of ``config/<robot>.yaml``)::

    observation:
      stamp_topic: /odom              # dt for the liquid cell = difference of this topic's stamps
      features:                       # policy inputs, in order
        - {name: v, topic: /odom, type: nav_msgs/msg/Odometry, field: twist.twist.linear.x}
        - {name: yaw, topic: /odom, type: nav_msgs/msg/Odometry, extractor: yaw}
        - {name: goal, topic: /goal_pose, type: geometry_msgs/msg/PoseStamped,
           extractor: goal_in_body, odom_topic: /odom}
        - {name: scan, topic: /scan, type: sensor_msgs/msg/LaserScan, extractor: scan_sectors, sectors: 8}
      state:                          # SafetyFilter state x, in order (same entry format)
        - ...
      env:                            # optional SafetyFilter env entries (name -> entry)
        scan_points: {topic: /scan, type: sensor_msgs/msg/LaserScan, extractor: scan_points_world,
                      odom_topic: /odom}
      command:
        topic: /cmd_vel
        type: geometry_msgs/msg/Twist
        fields: [linear.x, angular.z]

Extractors (registry :data:`EXTRACTORS`): ``yaw``, ``goal_in_body``, ``scan_sectors``,
``scan_points_world``, ``joints`` (``joints: [names]``, ``quantity: position|velocity|effort``),
``image`` (sensor_msgs/Image, below), ``float_array`` (a numeric array field, default ``data``,
of any length: env entries only, e.g. a lane map).

``image``: ``{extractor: image, encoding: rgb8|mono8, height: H, width: W}`` with optional
``channels`` (1 or the encoding's; 1 from rgb8 = luminance 0.299 R + 0.587 G + 0.114 B),
``scale`` (default 1/255) and ``offset`` (default 0): values = pixel * scale + offset, flattened
row-major (H, W, channels); ``odom_topic`` with ``max_age`` (s): the image's stamp may lag that
topic's stamp by at most ``max_age``. A message with another encoding or size, a wrong data
length or row step, or an image older than ``max_age`` raises :class:`ObservationError`
(``bad_message``, ``wrong_size``, ``stale``), so the control step falls back like for any input.
Extractors, field access and stamps live in :mod:`lnn_control.control.extractors` (re-exported
here). A ``field`` entry reads one dotted path (``position[2]``);
``size: N`` makes it read an array of exactly N values.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from lnn_control.control.extractors import (
    EXTRACTORS,
    IMAGE_ENCODINGS,
    ObservationError,
    _check_image_args,
    _forget_reads,
    _image_channels,
    _is_mapping,
    _need,
    _parse_path,
    get_field,
    set_field,
    stamp_seconds,
)

__all__ = [
    "EXTRACTORS",
    "IMAGE_ENCODINGS",
    "ObservationError",
    "ObservationMap",
    "Feature",
    "get_field",
    "set_field",
    "stamp_seconds",
]


_SPEC_KEYS = {"name", "topic", "type", "field", "extractor", "size"}


@dataclass
class Feature:
    """One entry of a feature list: values taken from the latest message on ``topic``."""

    name: str
    topic: str
    type: str
    field: str | None = None
    extractor: str | None = None
    size: int | None = 1
    args: dict[str, Any] = dc_field(default_factory=dict)
    # last (input messages, values): a scan is reused across the many odometry-triggered steps
    _memo: tuple[tuple[Any, ...], tuple[float, ...] | np.ndarray] | None = dc_field(
        default=None, repr=False, compare=False
    )
    # extractor-private cache (scan_points_world: the last scan's valid ranges and angles)
    _aux: Any = dc_field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: Any, where: str) -> Feature:
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{where}: expected a mapping with name/topic/type/field|extractor, got {cfg!r}")
        for k in ("name", "topic", "type"):
            if not isinstance(cfg.get(k), str) or not cfg.get(k):
                raise ValueError(f"{where}: set {k!r} (a non-empty string)")
        if ("field" in cfg) == ("extractor" in cfg):
            raise ValueError(f"{where} ({cfg['name']}): give exactly one of 'field' or 'extractor'")
        args = {k: v for k, v in cfg.items() if k not in _SPEC_KEYS}
        if "/" not in cfg["type"]:
            raise ValueError(f"{where}: type {cfg['type']!r} must look like pkg/msg/Type")
        if "field" in cfg:
            _parse_path(str(cfg["field"]))
            size = int(cfg.get("size", 1))
            if size < 1:
                raise ValueError(f"{where}: size must be >= 1")
            if args:
                raise ValueError(f"{where}: unknown keys {sorted(args)} for a field entry")
            return cls(cfg["name"], cfg["topic"], cfg["type"], field=str(cfg["field"]), size=size)
        ex = cfg["extractor"]
        if ex not in EXTRACTORS:
            raise ValueError(f"{where}: extractor {ex!r} unknown; choose one of {sorted(EXTRACTORS)}")
        _, required, size_of = EXTRACTORS[ex]
        missing = [k for k in required if k not in args]
        if missing:
            raise ValueError(f"{where}: extractor {ex!r} needs {missing}")
        if ex == "scan_sectors" and int(args["sectors"]) < 1:
            raise ValueError(f"{where}: sectors must be >= 1")
        if ex == "joints" and (not isinstance(args["joints"], list) or not args["joints"]):
            raise ValueError(f"{where}: joints must be a non-empty list of joint names")
        if ex == "image":
            _check_image_args(args, where)
        return cls(cfg["name"], cfg["topic"], cfg["type"], extractor=ex, size=size_of(args), args=args)

    @property
    def dependencies(self) -> list[str]:
        extra = [str(self.args["odom_topic"])] if "odom_topic" in self.args else []
        return [self.topic, *extra]

    def extract(self, latest: Mapping[str, Any]) -> np.ndarray:
        """Values from the latest messages; raises :class:`ObservationError` on bad data."""
        v = self._values(latest)
        return v.copy() if isinstance(v, np.ndarray) else np.array(v)

    def _values(self, latest: Mapping[str, Any]) -> tuple[float, ...] | np.ndarray:
        """:meth:`extract` without the copy: the memo's own value, small fixed-size ones as a tuple
        of floats (no numpy calls on the hot path), others as the memo's array (never write it)."""
        msg = latest.get(self.topic)
        if msg is None:
            msg = _need(latest, self.topic, self)
        # the memo holds the message objects themselves (compared with `is`), so a recycled id
        # can never alias an old message
        dep = self.args.get("odom_topic")  # the one extra input topic an extractor may read
        inputs = (msg,) if dep is None else (msg, latest.get(str(dep)))
        memo = self._memo
        if memo is not None and len(memo[0]) == len(inputs) and all(map(operator.is_, memo[0], inputs)):
            return memo[1]
        v = self._extract(msg, latest)
        self._memo = (inputs, v)
        return v

    def _extract(self, msg: Any, latest: Mapping[str, Any]) -> tuple[float, ...] | np.ndarray:
        try:
            if self.field is not None:
                raw = get_field(msg, self.field)
                if self.size == 1 and isinstance(raw, (float, int)):
                    # one number (most fields): plain float checks, ~10x cheaper than via numpy
                    f = float(raw)
                    if not math.isfinite(f):
                        raise ObservationError(
                            "non_finite", f"feature {self.name!r} on {self.topic!r}: NaN/Inf in [{f}]"
                        )
                    return (f,)
                v = np.atleast_1d(np.asarray(raw, dtype=np.float64)).reshape(-1)
            else:
                r = EXTRACTORS[self.extractor or ""][0](self, msg, latest)
                if type(r) is tuple:  # small results as plain floats (yaw, goal_in_body)
                    if self.size == len(r) and all(type(a) is float for a in r):
                        if not all(map(math.isfinite, r)):
                            raise ObservationError(
                                "non_finite", f"feature {self.name!r} on {self.topic!r}: NaN/Inf in {list(r)}"
                            )
                        return r
                v = np.asarray(r)  # arrays, and tuples of other sizes / types: the checks below
        except ObservationError:
            raise
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
            raise ObservationError(
                "bad_message", f"feature {self.name!r} on {self.topic!r}: {type(e).__name__}: {e}"
            ) from e
        if self.size is not None and v.size != self.size:
            raise ObservationError(
                "wrong_size",
                f"feature {self.name!r} on {self.topic!r}: {v.size} values, expected {self.size}",
            )
        vals = v.ravel().tolist() if v.size <= 8 else None
        if not (all(map(math.isfinite, vals)) if vals is not None else np.isfinite(v).all()):
            raise ObservationError("non_finite", f"feature {self.name!r} on {self.topic!r}: NaN/Inf in {v}")
        if vals is not None and self.size is not None and v.ndim == 1 and v.dtype == np.float64:
            return tuple(vals)
        return v


def _names(features: Sequence[Feature]) -> list[str]:
    out: list[str] = []
    for f in features:
        out += [f.name] if f.size == 1 else [f"{f.name}[{i}]" for i in range(f.size or 0)]
    return out


_RESERVED = {"features", "state", "env", "command", "stamp_topic"}


def _entry(cfg: Mapping[str, Any], item: Any, where: str) -> Feature:
    """An inline entry (mapping) or a name referring to ``cfg[name]`` (the ROS-parameter layout,
    where lists of mappings are not allowed)."""
    if isinstance(item, str):
        if item in _RESERVED or not isinstance(cfg.get(item), Mapping):
            raise ValueError(
                f"{where}: {item!r} names no entry; add 'observation.{item}: {{topic: ..., type: ...}}'"
            )
        return Feature.from_config({"name": item, **cfg[item]}, f"observation.{item}")
    return Feature.from_config(item, where)


class _Plan:
    """A feature list compiled once: ``run(latest)`` -> the concatenated values (n,).

    Scalar attribute fields (``field:`` without an index, size 1) are grouped per topic and read
    with one ``operator.attrgetter(*paths)`` call, checked as plain floats and written into one
    output vector; every other feature goes through its memoised :meth:`Feature._values`. Any
    surprise on the fast path (a dict message, a missing topic or attribute, a non-float value,
    NaN/Inf) reruns the plain per-feature path, which gives the same values and raises the same
    :class:`ObservationError` as before, for the first bad feature in order.
    """

    def __init__(self, feats: Sequence[Feature]) -> None:
        self.feats = list(feats)
        self.n = sum(f.size or 0 for f in self.feats)
        groups: dict[str, tuple[list[str], list[int]]] = {}
        self.others: list[tuple[Feature, int, int]] = []
        off = 0
        for f in self.feats:
            size = f.size or 0
            if f.field is not None and size == 1 and "[" not in f.field:
                paths, pos = groups.setdefault(f.topic, ([], []))
                paths.append(f.field)
                pos.append(off)
            else:
                self.others.append((f, off, off + size))
            off += size
        # (topic, getter giving a tuple of values, output positions)
        self.groups: list[tuple[str, Callable[[Any], Any], tuple[int, ...]]] = [
            (t, operator.attrgetter(*paths) if len(paths) > 1 else _one(paths[0]), tuple(pos))
            for t, (paths, pos) in groups.items()
        ]

    def run(self, latest: Mapping[str, Any]) -> np.ndarray:
        if not self.feats:
            return np.zeros(0)
        out: list[Any] = [0.0] * self.n  # plain floats, one array at the end: few numpy calls
        try:
            for topic, get, pos in self.groups:
                msg = latest[topic]
                if type(msg) is dict or _is_mapping(msg):
                    raise _SlowPath
                vals = get(msg)
                # one float sum checks the types (floats/ints) and finiteness: s - s is 0 only
                # for a finite s (an overflow to inf just takes the slow path, which accepts it)
                s = sum(vals)
                if type(s) is not float or s - s != 0.0:
                    raise _SlowPath
                for i, v in zip(pos, vals):
                    out[i] = v
        except (_SlowPath, KeyError, AttributeError, TypeError):
            return np.concatenate([f.extract(latest) for f in self.feats])
        for f, a, b in self.others:
            v = f._values(latest)
            out[a:b] = v.ravel().tolist() if isinstance(v, np.ndarray) else v
        return np.array(out, dtype=np.float64)


class _SlowPath(Exception):
    """The fast path of :class:`_Plan` met something it does not check itself."""


def _one(path: str) -> Callable[[Any], tuple[Any, ...]]:
    get = operator.attrgetter(path)
    return lambda msg: (get(msg),)


class ObservationMap:
    """Latest sensor messages -> observation ``o`` (n_inputs,), filter state ``x`` (n_state,), env.

    Args:
        cfg: the ``observation:`` mapping (see the module docstring). Raises ``ValueError``
            saying what to fix.
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        if not isinstance(cfg, Mapping):
            raise ValueError("observation: expected a mapping with 'features', 'state', 'command'")
        feats = cfg.get("features")
        if not isinstance(feats, list) or not feats:
            raise ValueError("observation.features: give a non-empty list of policy input entries")
        self.features = [_entry(cfg, c, f"observation.features[{i}]") for i, c in enumerate(feats)]
        states = cfg.get("state") or []
        if not isinstance(states, list):
            raise ValueError("observation.state: give a list of filter state entries")
        self.state_features = [_entry(cfg, c, f"observation.state[{i}]") for i, c in enumerate(states)]
        for f in [*self.features, *self.state_features]:
            if f.size is None:
                raise ValueError(
                    f"{f.name}: extractor {f.extractor!r} gives a variable size; use it under env"
                )
        env = cfg.get("env") or []
        if isinstance(env, Mapping):  # inline layout: name -> entry
            env = [{"name": str(k), **v} if isinstance(v, Mapping) else v for k, v in env.items()]
        if not isinstance(env, list):
            raise ValueError("observation.env: expected a list of entry names or a mapping name -> entry")
        env_feats = [_entry(cfg, c, f"observation.env[{i}]") for i, c in enumerate(env)]
        self.env_features = {f.name: f for f in env_feats}
        cmd = cfg.get("command")
        if not isinstance(cmd, Mapping) or not cmd.get("topic") or not cmd.get("type"):
            raise ValueError("observation.command: set topic, type and fields (one field path per control)")
        fields = cmd.get("fields")
        if not isinstance(fields, list) or not fields:
            raise ValueError("observation.command.fields: give one field path per control, e.g. [linear.x]")
        for p in fields:
            _parse_path(str(p))
        self.command_topic = str(cmd["topic"])
        self.command_type = str(cmd["type"])
        self.command_fields = [str(p) for p in fields]
        self._compile_command()
        types: dict[str, str] = {}
        for f in [*self.features, *self.state_features, *self.env_features.values()]:
            if types.setdefault(f.topic, f.type) != f.type:
                raise ValueError(f"topic {f.topic!r} given two types: {types[f.topic]!r} and {f.type!r}")
        for f in [*self.features, *self.state_features, *self.env_features.values()]:
            for d in f.dependencies:
                if d not in types:
                    raise ValueError(f"{f.name}: needs topic {d!r}, which no entry declares with a type")
        self.topic_types = types
        self.stamp_topic = str(cfg.get("stamp_topic", self.features[0].topic))
        if self.stamp_topic not in types:
            raise ValueError(f"observation.stamp_topic {self.stamp_topic!r} is not one of {sorted(types)}")
        self.latest: dict[str, Any] = {}
        self.latest_time: dict[str, float] = {}
        self._plans = {"features": _Plan(self.features), "state": _Plan(self.state_features)}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ObservationMap:
        return cls(cfg)

    # --- the training MessageMapper protocol -------------------------------------------------
    @property
    def topics(self) -> list[str]:
        """Every input topic, in first-use order."""
        return list(self.topic_types)

    @property
    def names(self) -> list[str]:
        """One name per observation element (``scan[3]`` for vector features)."""
        return _names(self.features)

    @property
    def state_names(self) -> list[str]:
        return _names(self.state_features)

    @property
    def n_inputs(self) -> int:
        return sum(f.size or 0 for f in self.features)

    @property
    def images(self) -> list[dict[str, Any]]:
        """Image features of the observation: name, offset (first element in ``o``), height,
        width, channels, scale, offset_value (the conv head's layout of ``o``)."""
        out, i = [], 0
        for f in self.features:
            if f.extractor == "image":
                a = f.args
                out.append(
                    {
                        "name": f.name,
                        "offset": i,
                        "height": int(a["height"]),
                        "width": int(a["width"]),
                        "channels": _image_channels(a),
                        "scale": float(a.get("scale", 1.0 / 255.0)),
                        "offset_value": float(a.get("offset", 0.0)),
                    }
                )
            i += f.size or 0
        return out

    @property
    def n_state(self) -> int:
        return sum(f.size or 0 for f in self.state_features)

    def update(self, topic: str, msg: Any, t_ns: int | None = None) -> None:
        """Store ``msg`` as the latest on ``topic``; ``t_ns`` (receipt time, ns) defaults to its stamp."""
        if topic not in self.topic_types:
            return
        if self.latest.get(topic) is msg:  # same object re-sent (maybe mutated): recompute
            _forget_reads()
            for f in [*self.features, *self.state_features, *self.env_features.values()]:
                if topic in f.dependencies:
                    f._memo = f._aux = None
        self.latest[topic] = msg
        if t_ns is not None:
            self.latest_time[topic] = 1e-9 * t_ns
        else:
            st = stamp_seconds(msg)
            if st is not None:
                self.latest_time[topic] = st

    def ready(self) -> bool:
        """True once every input topic has delivered a message."""
        return len(self.latest) == len(self.topic_types)

    def vector(self) -> np.ndarray | None:
        """Observation (n_inputs,), or None while a topic has not been seen; raises ObservationError."""
        if not self.ready():
            return None
        return self._plans["features"].run(self.latest)

    def observation(self) -> np.ndarray:
        """Like :meth:`vector` but raises ``ObservationError('missing')`` instead of returning None."""
        return self._plans["features"].run(self.latest)

    def state(self) -> np.ndarray:
        """Filter state x (n_state,); raises :class:`ObservationError`."""
        return self._plans["state"].run(self.latest)

    def env(self, copy: bool = True) -> dict[str, np.ndarray]:
        """SafetyFilter ``env`` entries, e.g. ``{"scan_points": (N, 2) world-frame points}``.

        ``copy=False`` hands out the extractors' memoised arrays (the node's step: the filter only
        reads them); never write into those."""
        out: dict[str, np.ndarray] = {}
        for k, f in self.env_features.items():
            if copy:
                out[k] = f.extract(self.latest)
            else:
                v = f._values(self.latest)
                out[k] = v if isinstance(v, np.ndarray) else np.array(v)
        return out

    def _concat(self, feats: Sequence[Feature]) -> np.ndarray:
        if not feats:
            return np.zeros(0)
        return np.concatenate([f.extract(self.latest) for f in feats])

    def _compile_command(self) -> None:
        """Command field paths -> writers, once: ``data[i]`` paths of one array become a list
        written as a whole; plain dotted paths a (parent getter, leaf name) pair per field."""
        fields = self.command_fields
        roots = {p.split("[", 1)[0] for p in fields}
        self._cmd_array: tuple[str, int, list[int]] | None = None
        if len(roots) == 1 and all("[" in p and "." not in p for p in fields):
            idx = [int(p.split("[", 1)[1][:-1]) for p in fields]
            self._cmd_array = (roots.pop(), 1 + max(idx), idx)
        self._cmd_setters: list[tuple[Callable[[Any], Any] | None, str]] | None = None
        if all("[" not in p for p in fields):
            self._cmd_setters = [
                (operator.attrgetter(p.rsplit(".", 1)[0]) if "." in p else None, p.rsplit(".", 1)[-1])
                for p in fields
            ]

    def fill_command(self, msg: Any, u: np.ndarray) -> Any:
        """Write command ``u`` (n_controls,) into ``msg`` at the command field paths; returns ``msg``.

        A ``data`` field of a Float64MultiArray is set as a whole list when the paths are
        ``data[0]..data[n-1]`` (the message starts empty).
        """
        u = np.asarray(u, dtype=np.float64).reshape(-1)
        if u.size != len(self.command_fields):
            raise ValueError(f"u: {u.size} values for {len(self.command_fields)} command fields")
        vals = u.tolist()
        if self._cmd_array is not None:
            root, length, idx = self._cmd_array
            data = [0.0] * length
            for i, v in zip(idx, vals):
                data[i] = v
            set_field(msg, root, data)  # type: ignore[arg-type]
            return msg
        if self._cmd_setters is not None and not _is_mapping(msg):
            try:
                for (parent, leaf), v in zip(self._cmd_setters, vals):
                    setattr(msg if parent is None else parent(msg), leaf, v)
                return msg
            except AttributeError:
                pass  # mappings inside the message: the general path below (which names the miss)
        for p, v in zip(self.command_fields, vals):
            set_field(msg, p, v)
        return msg

    def command_from_message(self, msg: Any) -> np.ndarray:
        """Command vector read back from a command message (training targets)."""
        return np.array([float(get_field(msg, p)) for p in self.command_fields])

    @staticmethod
    def dt(t_prev: float | None, t_now: float, default: float) -> float:
        """Elapsed seconds between two stamps; ``default`` for the first step.

        Raises ``ObservationError('out_of_order')`` when ``t_now <= t_prev``.
        """
        if t_prev is None:
            return default
        d = t_now - t_prev
        if not d > 0.0:
            raise ObservationError("out_of_order", f"stamp {t_now:.9f} s is not after {t_prev:.9f} s")
        return d
