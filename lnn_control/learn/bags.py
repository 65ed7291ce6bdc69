"""rosbag2 MCAP recordings without rclpy: write and read bags with ``mcap`` + ``mcap-ros2-support``.

A bag is what ``ros2 bag record -s mcap`` makes: a directory holding ``<name>_0.mcap`` (profile
``ros2``, CDR messages, one ``ros2msg`` schema per type with every dependent definition
appended after ``=====...`` / ``MSG: pkg/Type`` separators) and a ``metadata.yaml`` in rosbag2's
format (version 9). Message definitions of every type the project records are embedded here
(``MESSAGE_DEFINITIONS``), so writing never needs a ROS install; other types are looked up
under ``<prefix>/share/<pkg>/msg/<Type>.msg`` (AMENT_PREFIX_PATH, sys.prefix, the repo's msg/).

Messages are written from dicts (nested dicts / lists / numpy arrays) or objects with the
fields as attributes; reading yields ``BagMessage(topic, msg, log_time_ns)`` where ``msg``
allows attribute access (``msg.pose.pose.position.x``). Times are integer nanoseconds.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer as _McapRos2Writer

__all__ = [
    "MESSAGE_DEFINITIONS",
    "BagMessage",
    "BagWriter",
    "normalize_type",
    "full_definition",
    "stamp",
    "read_bag",
    "bag_topics",
    "bag_files",
]

# Field lists of the .msg files (comments dropped; types fully qualified).
MESSAGE_DEFINITIONS: dict[str, str] = {
    "builtin_interfaces/msg/Time": "int32 sec\nuint32 nanosec\n",
    "std_msgs/msg/Header": "builtin_interfaces/Time stamp\nstring frame_id\n",
    "std_msgs/msg/MultiArrayDimension": "string label\nuint32 size\nuint32 stride\n",
    "std_msgs/msg/MultiArrayLayout": "std_msgs/MultiArrayDimension[] dim\nuint32 data_offset\n",
    "std_msgs/msg/Float64MultiArray": "std_msgs/MultiArrayLayout layout\nfloat64[] data\n",
    "geometry_msgs/msg/Vector3": "float64 x\nfloat64 y\nfloat64 z\n",
    "geometry_msgs/msg/Point": "float64 x\nfloat64 y\nfloat64 z\n",
    "geometry_msgs/msg/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n",
    "geometry_msgs/msg/Pose": "geometry_msgs/Point position\ngeometry_msgs/Quaternion orientation\n",
    "geometry_msgs/msg/PoseWithCovariance": "geometry_msgs/Pose pose\nfloat64[36] covariance\n",
    "geometry_msgs/msg/Twist": "geometry_msgs/Vector3 linear\ngeometry_msgs/Vector3 angular\n",
    "geometry_msgs/msg/TwistWithCovariance": "geometry_msgs/Twist twist\nfloat64[36] covariance\n",
    "geometry_msgs/msg/PoseStamped": "std_msgs/Header header\ngeometry_msgs/Pose pose\n",
    "geometry_msgs/msg/TwistStamped": "std_msgs/Header header\ngeometry_msgs/Twist twist\n",
    "nav_msgs/msg/Odometry": (
        "std_msgs/Header header\nstring child_frame_id\n"
        "geometry_msgs/PoseWithCovariance pose\ngeometry_msgs/TwistWithCovariance twist\n"
    ),
    "sensor_msgs/msg/LaserScan": (
        "std_msgs/Header header\nfloat32 angle_min\nfloat32 angle_max\nfloat32 angle_increment\n"
        "float32 time_increment\nfloat32 scan_time\nfloat32 range_min\nfloat32 range_max\n"
        "float32[] ranges\nfloat32[] intensities\n"
    ),
    "sensor_msgs/msg/JointState": (
        "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n"
    ),
    "rosgraph_msgs/msg/Clock": "builtin_interfaces/Time clock\n",
}

_PRIMITIVES = {
    "bool",
    "byte",
    "char",
    "float32",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "string",
    "wstring",
}
_SEPARATOR = "=" * 80


class BagMessage(NamedTuple):
    """One recorded message: topic name, decoded message (attribute access), log time (ns)."""

    topic: str
    msg: Any
    log_time_ns: int


def normalize_type(type_name: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``; raises ``ValueError`` otherwise."""
    parts = type_name.strip().split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise ValueError(f"type_name must look like 'pkg/msg/Type' or 'pkg/Type', got {type_name!r}")
    return "/".join(parts)


def _share_dirs() -> list[pathlib.Path]:
    dirs = [pathlib.Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs.append(pathlib.Path(sys.prefix) / "share")
    return dirs


def _strip_msg(text: str) -> str:
    lines = []
    for line in text.splitlines():
        # A '#' inside a string constant's value is not a comment.
        is_string_constant = re.match(r"^\s*w?string\S*\s+\w+\s*=", line) is not None
        line = line.strip() if is_string_constant else line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _own_definition(type_name: str) -> str:
    t = normalize_type(type_name)
    if t in MESSAGE_DEFINITIONS:
        return MESSAGE_DEFINITIONS[t]
    pkg, _, name = t.split("/")
    candidates = [d / pkg / "msg" / f"{name}.msg" for d in _share_dirs()]
    if pkg == "lnn_control":
        candidates.append(pathlib.Path(__file__).resolve().parents[2] / "msg" / f"{name}.msg")
    for path in candidates:
        if path.is_file():
            return _strip_msg(path.read_text())
    raise ValueError(
        f"no message definition for {t}: add it to lnn_control.learn.bags.MESSAGE_DEFINITIONS "
        f"or install the package's share/{pkg}/msg/{name}.msg"
    )


def _dependencies(type_name: str) -> list[str]:
    pkg = normalize_type(type_name).split("/")[0]
    deps = []
    for line in _own_definition(type_name).splitlines():
        field_type = line.split()[0]
        base = re.sub(r"\[.*\]$", "", field_type).split("<=")[0]
        if base in _PRIMITIVES:
            continue
        if "/" not in base:
            base = "std_msgs/Header" if base == "Header" else f"{pkg}/{base}"
        deps.append(normalize_type(base))
    return deps


def full_definition(type_name: str) -> str:
    """The ros2msg schema text of ``type_name``: its fields, then each dependency once, depth first."""
    t = normalize_type(type_name)
    seen: list[str] = []

    def visit(name: str) -> None:
        for dep in _dependencies(name):
            if dep not in seen:
                seen.append(dep)
                visit(dep)

    visit(t)
    parts = [_own_definition(t)]
    for dep in seen:
        pkg, _, name = dep.split("/")
        parts.append(f"{_SEPARATOR}\nMSG: {pkg}/{name}\n{_own_definition(dep)}")
    return "".join(parts)


def stamp(t_ns: int) -> dict[str, int]:
    """A builtin_interfaces/Time dict for ``t_ns`` nanoseconds (>= 0)."""
    t_ns = int(t_ns)
    if t_ns < 0:
        raise ValueError(f"t_ns must be >= 0, got {t_ns}")
    return {"sec": t_ns // 1_000_000_000, "nanosec": t_ns % 1_000_000_000}


class BagWriter:
    """Write one rosbag2 MCAP bag (directory with ``<name>_0.mcap`` and ``metadata.yaml``).

    Args:
        path: bag directory to create; must not exist or be empty (like ``ros2 bag record -o``).
        compression: ``"zstd"``, ``"lz4"`` or ``"none"`` chunk compression inside the MCAP file.

    Use as a context manager or call ``close()``; ``metadata.yaml`` is written on close.
    """

    def __init__(self, path: str | os.PathLike[str], compression: str = "zstd"):
        from mcap.writer import CompressionType

        kinds = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
        if compression not in kinds:
            raise ValueError(f"compression must be one of {sorted(kinds)}, got {compression!r}")
        self.path = pathlib.Path(path)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise FileExistsError(f"bag path {self.path} exists and is not an empty directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.file_name = f"{self.path.name}_0.mcap"
        self._stream = open(self.path / self.file_name, "wb")  # closed in close()
        self._writer = _McapRos2Writer(self._stream, compression=kinds[compression])
        self._schemas: dict[str, Any] = {}
        self._topics: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._t0: int | None = None
        self._t1: int | None = None
        self._closed = False

    def write(self, topic: str, type_name: str, msg: Any, log_time_ns: int) -> None:
        """Append ``msg`` (dict or object) of ``type_name`` on ``topic`` logged at ``log_time_ns`` (ns)."""
        if self._closed:
            raise RuntimeError("BagWriter is closed")
        if not topic.startswith("/"):
            raise ValueError(f"topic must be an absolute name starting with '/', got {topic!r}")
        t = normalize_type(type_name)
        if self._topics.setdefault(topic, t) != t:
            raise ValueError(f"topic {topic} already carries {self._topics[topic]}, not {t}")
        schema = self._schemas.get(t)
        if schema is None:
            schema = self._writer.register_msgdef(t, full_definition(t))
            self._schemas[t] = schema
        log_time_ns = int(log_time_ns)
        seq = self._counts.get(topic, 0)
        self._writer.write_message(topic, schema, _plain(msg), log_time=log_time_ns, sequence=seq)
        self._counts[topic] = seq + 1
        self._t0 = log_time_ns if self._t0 is None else min(self._t0, log_time_ns)
        self._t1 = log_time_ns if self._t1 is None else max(self._t1, log_time_ns)

    def close(self) -> None:
        """Finish the MCAP file and write ``metadata.yaml``."""
        if self._closed:
            return
        self._closed = True
        self._writer.finish()
        self._stream.close()
        t0 = self._t0 or 0
        duration = (self._t1 or 0) - t0
        total = sum(self._counts.values())
        info = {
            "version": 9,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": t0},
            "message_count": total,
            "topics_with_message_counts": [
                {
                    "topic_metadata": {
                        "name": topic,
                        "type": t,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": [],
                        "type_description_hash": "",
                    },
                    "message_count": self._counts.get(topic, 0),
                }
                for topic, t in self._topics.items()
            ],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [self.file_name],
            "files": [
                {
                    "path": self.file_name,
                    "starting_time": {"nanoseconds_since_epoch": t0},
                    "duration": {"nanoseconds": duration},
                    "message_count": total,
                }
            ],
            "custom_data": {},
            "ros_distro": "kilted",
        }
        with open(self.path / "metadata.yaml", "w") as f:
            yaml.safe_dump({"rosbag2_bagfile_information": info}, f, sort_keys=False)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(msg: Any) -> Any:
    """Numpy arrays / scalars -> Python lists / numbers, recursively (the CDR encoder wants those)."""
    if isinstance(msg, dict):
        return {k: _plain(v) for k, v in msg.items()}
    if hasattr(msg, "tolist"):
        return msg.tolist()
    if isinstance(msg, (list, tuple)):
        return [_plain(v) for v in msg]
    return msg


def bag_files(path: str | os.PathLike[str]) -> list[pathlib.Path]:
    """MCAP files of a bag directory (``metadata.yaml``, else ``*.mcap``) or of one ``.mcap`` path."""
    p = pathlib.Path(path)
    if p.is_file():
        if p.suffix != ".mcap":
            raise ValueError(f"path must be a bag directory or an .mcap file, got {p}")
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"no bag at {p}")
    meta = p / "metadata.yaml"
    if meta.is_file():
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        if info.get("storage_identifier", "mcap") != "mcap":
            raise ValueError(f"bag {p} uses storage {info['storage_identifier']!r}; only mcap is supported")
        return [p / f for f in info["relative_file_paths"]]
    files = sorted(p.glob("*.mcap"))
    if not files:
        raise FileNotFoundError(f"no metadata.yaml or .mcap file in {p}")
    return files


def read_bag(path: str | os.PathLike[str], topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Iterate a bag's messages in log-time order within each file: ``BagMessage(topic, msg, log_time_ns)``.

    Args:
        path: bag directory or a single ``.mcap`` file.
        topics: only these topics (all when None).
    """
    wanted = None if topics is None else list(topics)
    for file in bag_files(path):
        with open(file, "rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            for _schema, channel, message, decoded in reader.iter_decoded_messages(
                topics=wanted, log_time_order=True
            ):
                yield BagMessage(channel.topic, decoded, int(message.log_time))


def bag_topics(path: str | os.PathLike[str]) -> dict[str, str]:
    """Topic -> message type (``pkg/msg/Type``) of every channel in the bag."""
    out: dict[str, str] = {}
    for file in bag_files(path):
        with open(file, "rb") as f:
            summary = make_reader(f).get_summary()
        if summary is None:
            continue
        for ch in summary.channels.values():
            out[ch.topic] = summary.schemas[ch.schema_id].name
    return out
