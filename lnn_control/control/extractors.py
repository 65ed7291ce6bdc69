"""The observation mapping's building blocks: field access by dotted path, stamps, and the
named extractors (registry :data:`EXTRACTORS`) that turn messages into values.

Pure module: no rclpy, no message imports (messages are any attribute objects or plain dicts).
:mod:`lnn_control.control.observation` builds ``ObservationMap`` on these and documents the
config format; add an extractor here: a function ``(feature, msg, latest) -> values`` and an
``EXTRACTORS`` entry (name -> function, required argument names, size from the arguments).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lnn_control.control.observation import Feature

__all__ = [
    "EXTRACTORS",
    "IMAGE_ENCODINGS",
    "ExtractorFn",
    "ObservationError",
    "get_field",
    "set_field",
    "stamp_seconds",
]


class ObservationError(ValueError):
    """A message cannot give a valid observation; ``kind`` is ``non_finite``, ``wrong_size``,
    ``missing``, ``stale`` or ``bad_message``. The node turns it into a fallback command."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@functools.lru_cache(maxsize=1024)  # paths come from a config: parse each once, not per message
def _parse_path(path: str) -> tuple[tuple[str, int | None], ...]:
    parts: list[tuple[str, int | None]] = []
    for part in path.split("."):
        idx: int | None = None
        if part.endswith("]") and "[" in part:
            part, rest = part.split("[", 1)
            idx = int(rest[:-1])
        if not part.isidentifier():
            raise ValueError(f"field path {path!r}: {part!r} is not a field name")
        parts.append((part, idx))
    return tuple(parts)


_MAPPING_TYPES: dict[type, bool] = {}


def _is_mapping(obj: Any) -> bool:
    """``isinstance(obj, Mapping)``, cached per type (the abstract-class check costs more than a
    field read on the node's hot path)."""
    t = type(obj)
    r = _MAPPING_TYPES.get(t)
    if r is None:
        r = _MAPPING_TYPES[t] = isinstance(obj, Mapping)
    return r


@functools.lru_cache(maxsize=1024)
def _attr_getter(path: str) -> Callable[[Any], Any] | None:
    """``operator.attrgetter`` for a dotted path without indices (reads it in C), else None."""
    return None if "[" in path else operator.attrgetter(path)


def get_field(msg: Any, path: str) -> Any:
    """Value of ``msg`` at dotted ``path`` (``pose.pose.position.x``, ``position[2]``)."""
    if type(msg) is not dict and not _is_mapping(msg):
        getter = _attr_getter(path)
        if getter is not None:
            try:
                return getter(msg)
            except AttributeError:
                pass  # a mapping further down (or a real miss): the general walk below decides
    cur = msg
    for name, idx in _parse_path(path):
        cur = cur[name] if type(cur) is dict or _is_mapping(cur) else getattr(cur, name)
        if idx is not None:
            cur = cur[idx]
    return cur


def set_field(msg: Any, path: str, value: float) -> None:
    """Set ``msg`` at dotted ``path`` to ``value`` (indexed leaves are written in place)."""
    parts = _parse_path(path)
    cur = msg
    for name, idx in parts[:-1]:
        cur = cur[name] if isinstance(cur, Mapping) else getattr(cur, name)
        if idx is not None:
            cur = cur[idx]
    name, idx = parts[-1]
    if idx is None:
        if isinstance(cur, Mapping):
            cur[name] = value  # type: ignore[index]
        else:
            setattr(cur, name, value)
    else:
        arr = cur[name] if isinstance(cur, Mapping) else getattr(cur, name)
        arr[idx] = value


def stamp_seconds(msg: Any) -> float | None:
    """``header.stamp`` of ``msg`` in seconds, or None when the message has no header."""
    try:  # message objects (the node's every receipt): plain attribute reads
        st = msg.header.stamp
        return float(st.sec) + 1e-9 * float(st.nanosec)
    except AttributeError:
        pass
    try:
        st = get_field(msg, "header.stamp")
    except (AttributeError, KeyError, TypeError):
        return None
    sec = st["sec"] if isinstance(st, Mapping) else st.sec
    nsec = st["nanosec"] if isinstance(st, Mapping) else st.nanosec
    return float(sec) + 1e-9 * float(nsec)


def _yaw(x: float, y: float, z: float, w: float) -> float:
    # yaw of the ZYX Euler decomposition; an inf component can still give a finite angle and a
    # zero quaternion gives 0, so both are refused here (one comparison chain also catches NaN)
    n = x * x + y * y + z * z + w * w
    if not 1e-6 < n < 1e12:
        raise ObservationError(
            "non_finite" if not math.isfinite(n) else "bad_message",
            f"orientation quaternion ({x}, {y}, {z}, {w}) is not a rotation (squared norm {n})",
        )
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


_QUAT = operator.attrgetter("x", "y", "z", "w")
_POSE = operator.attrgetter(
    "pose.pose.position.x",
    "pose.pose.position.y",
    "pose.pose.orientation.x",
    "pose.pose.orientation.y",
    "pose.pose.orientation.z",
    "pose.pose.orientation.w",
)


def _quat_yaw(q: Any) -> float:
    if _is_mapping(q):
        x, y, z, w = (float(q[k]) for k in ("x", "y", "z", "w"))
    else:
        x, y, z, w = map(float, _QUAT(q))
    return _yaw(x, y, z, w)


# (message, pose) of the last odometry read: several extractors read the same message per step.
# One tuple, rebound whole, so a reader in another thread never pairs a message with another's pose.
_POSE_MEMO: tuple[Any, tuple[float, float, float]] = (None, (0.0, 0.0, 0.0))


def _odom_pose(odom: Any) -> tuple[float, float, float]:
    global _POSE_MEMO
    memo = _POSE_MEMO
    if memo[0] is odom:
        return memo[1]
    if not _is_mapping(odom):
        try:
            x, y, qx, qy, qz, qw = map(float, _POSE(odom))
        except AttributeError:
            pass  # mappings inside an object: the general path below
        else:
            pose = (x, y, _yaw(qx, qy, qz, qw))
            _POSE_MEMO = (odom, pose)
            return pose
    p = get_field(odom, "pose.pose.position")
    x = float(p["x"] if _is_mapping(p) else p.x)
    y = float(p["y"] if _is_mapping(p) else p.y)
    return x, y, _quat_yaw(get_field(odom, "pose.pose.orientation"))


def _forget_reads() -> None:
    """Drop the shared per-message reads (a message object re-sent after a change)."""
    global _POSE_MEMO, _RANGES_MEMO
    _POSE_MEMO = (None, (0.0, 0.0, 0.0))
    _RANGES_MEMO = (None, (np.zeros(0), np.zeros(0, dtype=bool)))


# (scan message, its cleaned ranges): the sector and point extractors read the same scan
_RANGES_MEMO: tuple[Any, tuple[np.ndarray, np.ndarray]] = (None, (np.zeros(0), np.zeros(0, dtype=bool)))


def _clean_ranges(scan: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ranges (n,) with invalid beams set to range_max, and the mask of valid beams (shared by the
    extractors of one scan message: read-only)."""
    global _RANGES_MEMO
    memo = _RANGES_MEMO
    if memo[0] is scan:
        return memo[1]
    r = np.asarray(get_field(scan, "ranges"), dtype=np.float64).reshape(-1)
    rmin, rmax = float(get_field(scan, "range_min")), float(get_field(scan, "range_max"))
    # inf / NaN / outside [range_min, range_max] mean "no valid return": treat as free up to range_max
    valid = np.isfinite(r) & (r >= rmin) & (r <= rmax)
    out = (np.where(valid, r, rmax), valid)
    _RANGES_MEMO = (scan, out)
    return out


@functools.lru_cache(maxsize=64)
def _sector_starts(n_beams: int, sectors: int) -> np.ndarray:
    """First beam of each sector, split as ``numpy.array_split`` does (the first n_beams % sectors
    sectors one beam longer)."""
    q, rem = divmod(n_beams, sectors)
    sizes = [q + 1] * rem + [q] * (sectors - rem)
    return np.cumsum([0, *sizes[:-1]]).astype(np.intp)


# Extractor signature: (spec, msg on the feature topic, latest messages by topic) -> values (size,),
# an array or, for a few values, a tuple of floats (no numpy call on the node's hot path)
ExtractorFn = Callable[["Feature", Any, Mapping[str, Any]], "np.ndarray | tuple[float, ...]"]


def _ex_yaw(f: Feature, msg: Any, latest: Mapping[str, Any]) -> tuple[float, ...]:
    path = str(f.args.get("quaternion", "pose.pose.orientation"))
    return (_quat_yaw(get_field(msg, path)),)


def _need(latest: Mapping[str, Any], topic: str, f: Feature) -> Any:
    if topic not in latest:
        raise ObservationError("missing", f"feature {f.name!r}: no message on {topic!r} yet")
    return latest[topic]


def _ex_goal_in_body(f: Feature, msg: Any, latest: Mapping[str, Any]) -> tuple[float, ...]:
    odom = _need(latest, str(f.args["odom_topic"]), f)
    try:
        p = get_field(msg, "pose.position")
    except (AttributeError, KeyError):
        p = get_field(msg, "point")  # PointStamped
    gx = float(p["x"] if _is_mapping(p) else p.x)
    gy = float(p["y"] if _is_mapping(p) else p.y)
    x, y, th = _odom_pose(odom)
    dx, dy = gx - x, gy - y
    c, s = math.cos(th), math.sin(th)
    # R(theta)^T (g - p): goal in the robot body frame
    return (c * dx + s * dy, -s * dx + c * dy)


def _ex_scan_sectors(f: Feature, msg: Any, latest: Mapping[str, Any]) -> np.ndarray:
    r, _ = _clean_ranges(msg)
    n = int(f.args["sectors"])
    if r.size < n:
        raise ObservationError("wrong_size", f"feature {f.name!r}: scan has {r.size} beams < {n} sectors")
    return np.minimum.reduceat(r, _sector_starts(r.size, n))  # type: ignore[no-any-return]


def _ex_scan_points_world(f: Feature, msg: Any, latest: Mapping[str, Any]) -> np.ndarray:
    odom = _need(latest, str(f.args["odom_topic"]), f)
    if f._aux is None or f._aux[0] is not msg:  # the scan's points in its own frame, once per scan
        r, valid = _clean_ranges(msg)
        a0, da = float(get_field(msg, "angle_min")), float(get_field(msg, "angle_increment"))
        ang = (a0 + da * np.arange(r.size))[valid]
        rv = r[valid]
        local = np.empty(rv.size, dtype=np.complex128)  # points as x + iy: a rotation is one product
        local.real = rv * np.cos(ang)
        local.imag = rv * np.sin(ang)
        f._aux = (msg, local)
    x, y, th = _odom_pose(odom)
    # world = p + R(theta) local, per odometry message: (x + iy) + e^(i theta) (lx + i ly), the
    # same products and sums as the 2x2 rotation; the complex array read as (N, 2) floats
    w = f._aux[1] * complex(math.cos(th), math.sin(th))
    w += complex(x, y)
    return w.view(np.float64).reshape(-1, 2)


def _ex_joints(f: Feature, msg: Any, latest: Mapping[str, Any]) -> np.ndarray:
    names = list(get_field(msg, "name"))
    values = np.asarray(get_field(msg, str(f.args.get("quantity", "position"))), dtype=np.float64)
    if values.size != len(names):
        raise ObservationError(
            "wrong_size", f"feature {f.name!r}: {values.size} values for {len(names)} joint names"
        )
    try:
        idx = [names.index(j) for j in f.args["joints"]]
    except ValueError as e:
        raise ObservationError("bad_message", f"feature {f.name!r}: joint missing in {names}: {e}") from e
    return values[idx]


#: channels per supported image encoding (8 bits per channel)
IMAGE_ENCODINGS: dict[str, int] = {"rgb8": 3, "mono8": 1}
_LUMA = np.array([0.299, 0.587, 0.114])


def _image_channels(a: Mapping[str, Any]) -> int:
    return int(a.get("channels", IMAGE_ENCODINGS.get(str(a.get("encoding")), 1)))


def _ex_image(f: Feature, msg: Any, latest: Mapping[str, Any]) -> np.ndarray:
    a = f.args
    enc, want_h, want_w = str(a["encoding"]), int(a["height"]), int(a["width"])
    got = str(get_field(msg, "encoding"))
    if got != enc:
        raise ObservationError("bad_message", f"feature {f.name!r}: image encoding {got!r}, expected {enc!r}")
    h, w, step = int(get_field(msg, "height")), int(get_field(msg, "width")), int(get_field(msg, "step"))
    if (h, w) != (want_h, want_w):
        raise ObservationError(
            "wrong_size", f"feature {f.name!r}: image is {w}x{h}, expected {want_w}x{want_h} (width x height)"
        )
    c = IMAGE_ENCODINGS[enc]
    if step < w * c:
        raise ObservationError(
            "bad_message", f"feature {f.name!r}: row step {step} < width * channels {w * c}"
        )
    data = get_field(msg, "data")
    if isinstance(data, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(data, dtype=np.uint8)
    else:  # array.array('B') from rclpy, or a list
        buf = np.asarray(data)
        if buf.dtype != np.uint8:
            if buf.size and (buf.dtype.kind not in "iu" or buf.min() < 0 or buf.max() > 255):
                raise ObservationError("bad_message", f"feature {f.name!r}: image data are not bytes 0..255")
            buf = buf.astype(np.uint8)
    if buf.size != h * step:
        raise ObservationError(
            "wrong_size", f"feature {f.name!r}: {buf.size} data bytes, expected height * step = {h * step}"
        )
    img = buf.reshape(h, step)[:, : w * c].reshape(h, w, c)
    if _image_channels(a) == 1 and c == 3:
        vals = img @ _LUMA
    else:
        vals = img.astype(np.float64)
    out = vals.reshape(-1) * float(a.get("scale", 1.0 / 255.0))
    off = float(a.get("offset", 0.0))
    if off:
        out += off
    if "max_age" in a and "odom_topic" in a:
        ref = stamp_seconds(_need(latest, str(a["odom_topic"]), f))
        st = stamp_seconds(msg)
        if ref is not None and st is not None and ref - st > float(a["max_age"]):
            raise ObservationError(
                "stale",
                f"feature {f.name!r}: image stamp {st:.3f} s is {ref - st:.3f} s older than "
                f"{a['odom_topic']} (max_age {float(a['max_age']):.3f} s)",
            )
    return out


def _ex_float_array(f: Feature, msg: Any, latest: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(get_field(msg, str(f.args.get("field_path", "data"))), dtype=np.float64).reshape(-1)


def _check_image_args(a: Mapping[str, Any], where: str) -> None:
    enc = a.get("encoding")
    if enc not in IMAGE_ENCODINGS:
        raise ValueError(f"{where}: encoding must be one of {sorted(IMAGE_ENCODINGS)}, got {enc!r}")
    for k in ("height", "width"):
        v = a.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096:
            raise ValueError(f"{where}: {k} must be an int in 1..4096 pixels, got {v!r}")
    ch = _image_channels(a)
    if ch not in (1, IMAGE_ENCODINGS[str(enc)]):
        raise ValueError(f"{where}: channels must be 1 or {IMAGE_ENCODINGS[str(enc)]} for {enc}, got {ch}")
    for k in ("scale", "offset", "max_age"):
        if k in a and not (isinstance(a[k], (int, float)) and math.isfinite(float(a[k]))):
            raise ValueError(f"{where}: {k} must be a finite number, got {a[k]!r}")
    if "scale" in a and float(a["scale"]) == 0.0:
        raise ValueError(f"{where}: scale must not be 0")
    if "max_age" in a and ("odom_topic" not in a or not float(a["max_age"]) > 0):
        raise ValueError(
            f"{where}: max_age (s, > 0) needs odom_topic, the topic whose stamp it is checked against"
        )
    unknown = set(a) - {"encoding", "height", "width", "channels", "scale", "offset", "max_age", "odom_topic"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} for the image extractor")


#: Named extractors: name -> (function, required argument names, size from args or None = variable).
EXTRACTORS: dict[str, tuple[ExtractorFn, tuple[str, ...], Callable[[Mapping[str, Any]], int | None]]] = {
    "yaw": (_ex_yaw, (), lambda a: 1),
    "goal_in_body": (_ex_goal_in_body, ("odom_topic",), lambda a: 2),
    "scan_sectors": (_ex_scan_sectors, ("sectors",), lambda a: int(a["sectors"])),
    "scan_points_world": (_ex_scan_points_world, ("odom_topic",), lambda a: None),
    "joints": (_ex_joints, ("joints",), lambda a: len(a["joints"])),
    "image": (
        _ex_image,
        ("encoding", "height", "width"),
        lambda a: int(a["height"]) * int(a["width"]) * _image_channels(a),
    ),
    "float_array": (_ex_float_array, (), lambda a: None),
}
