"""rosbag2 MCAP bags: round trip of every message type we record, schemas, metadata.yaml, recorder output."""

from __future__ import annotations

import math
import pathlib
import sys

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader

from lnn_control.learn import bags
from lnn_control.learn.bags import BagWriter, bag_topics, full_definition, read_bag, stamp
from lnn_control.learn.record import main as record_main
from lnn_control.learn.record import record_episode
from lnn_control.sim import topics as T
from lnn_control.sim.arm import ArmObservation
from lnn_control.sim.diff_drive import DiffDriveObservation

RNG = np.random.default_rng(42)
SCAN = RNG.uniform(0.1, 3.9, 72)
SCAN[5] = np.inf
DD_OBS = DiffDriveObservation(
    time=1.25, pose=np.array([0.5, -1.0, 2.0]), twist=np.array([0.3, -0.7]), scan=SCAN
)
ARM_OBS = ArmObservation(
    time=0.5, position=RNG.normal(size=3), velocity=RNG.normal(size=3), effort=RNG.normal(size=3)
)
T_NS = 1_250_000_017

# (topic, type, message dict) of every type the sim, the recorder and the goal publishers use.
MESSAGES = [
    ("/odom", "nav_msgs/msg/Odometry", T.odometry(DD_OBS, T_NS)),
    ("/scan", "sensor_msgs/msg/LaserScan", T.laser_scan(DD_OBS, T_NS, 0.02)),
    ("/joint_states", "sensor_msgs/msg/JointState", T.joint_state(ARM_OBS, T_NS)),
    ("/sim/ground_truth", "std_msgs/msg/Float64MultiArray", T.float64_array(RNG.normal(size=7), "a,b,c")),
    ("/clock", "rosgraph_msgs/msg/Clock", T.clock(T_NS)),
    ("/cmd_vel", "geometry_msgs/msg/Twist", T.twist(0.25, -1.5)),
    ("/goal_pose", "geometry_msgs/msg/PoseStamped", T.pose_stamped(1.0, 2.0, T_NS, theta=0.3)),
    (
        "/cmd_vel_stamped",
        "geometry_msgs/TwistStamped",
        {"header": T.header(T_NS, "base_link"), **{"twist": T.twist(1, 2)}},
    ),
    ("/effort_controller/commands", "std_msgs/msg/Float64MultiArray", T.float64_array([1.0, -2.0, 3.5])),
]


def assert_same(decoded: object, expected: object, path: str = "msg") -> None:
    """Field-by-field comparison of a decoded message with the dict it was written from."""
    if isinstance(expected, dict):
        for k, v in expected.items():
            assert_same(getattr(decoded, k), v, f"{path}.{k}")
    elif isinstance(expected, (list, tuple, np.ndarray)):
        got = list(decoded)  # type: ignore[call-overload]
        assert len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same(g, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        if math.isinf(expected):
            assert decoded == expected, path
        else:
            # float32 fields (LaserScan) keep ~7 significant digits.
            assert decoded == pytest.approx(expected, rel=1e-6, abs=1e-7), path
    else:
        assert decoded == expected, path


def test_round_trip_of_every_message_type(tmp_path: pathlib.Path) -> None:
    with BagWriter(tmp_path / "bag") as w:
        for i, (topic, type_name, msg) in enumerate(MESSAGES):
            w.write(topic, type_name, msg, T_NS + i)
    got = list(read_bag(tmp_path / "bag"))
    assert [m.topic for m in got] == [m[0] for m in MESSAGES]
    assert [m.log_time_ns for m in got] == [T_NS + i for i in range(len(MESSAGES))]
    for m, (_topic, _type, expected) in zip(got, MESSAGES):
        assert_same(m.msg, expected, m.topic)
    # Exact values where the wire type is float64 / integer.
    odom = got[0].msg
    assert odom.header.stamp.sec == 1 and odom.header.stamp.nanosec == 250_000_017
    assert odom.pose.pose.orientation.z == math.sin(1.0) and odom.twist.twist.angular.z == -0.7
    assert got[1].msg.ranges[5] == math.inf and len(got[1].msg.ranges) == 72
    assert got[3].msg.layout.dim[0].label == "a,b,c"
    # Reading one .mcap file directly and filtering by topic.
    only = list(read_bag(tmp_path / "bag" / "bag_0.mcap", topics=["/clock"]))
    assert len(only) == 1 and only[0].msg.clock.nanosec == 250_000_017


def test_file_is_a_ros2_profile_mcap_with_full_schemas(tmp_path: pathlib.Path) -> None:
    with BagWriter(tmp_path / "b") as w:
        w.write("/odom", "nav_msgs/Odometry", MESSAGES[0][2], 5)
    with open(tmp_path / "b" / "b_0.mcap", "rb") as f:
        reader = make_reader(f)
        header = reader.get_header()
        summary = reader.get_summary()
    assert header.profile == "ros2"
    assert summary is not None
    (schema,) = summary.schemas.values()
    assert schema.name == "nav_msgs/msg/Odometry" and schema.encoding == "ros2msg"
    text = schema.data.decode()
    for dep in (
        "std_msgs/Header",
        "builtin_interfaces/Time",
        "geometry_msgs/PoseWithCovariance",
        "geometry_msgs/Pose",
        "geometry_msgs/Point",
        "geometry_msgs/Quaternion",
        "geometry_msgs/TwistWithCovariance",
        "geometry_msgs/Twist",
        "geometry_msgs/Vector3",
    ):
        assert text.count(f"\nMSG: {dep}\n") == 1, dep
    (channel,) = summary.channels.values()
    assert channel.message_encoding == "cdr"


def test_metadata_yaml_like_rosbag2(tmp_path: pathlib.Path) -> None:
    with BagWriter(tmp_path / "b") as w:
        for k in range(3):
            w.write("/clock", "rosgraph_msgs/msg/Clock", T.clock(k * 10), 100 + k * 10)
        w.write("/cmd_vel", "geometry_msgs/msg/Twist", T.twist(0, 0), 150)
    info = yaml.safe_load((tmp_path / "b" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "mcap" and info["message_count"] == 4
    assert info["starting_time"]["nanoseconds_since_epoch"] == 100
    assert info["duration"]["nanoseconds"] == 50
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_counts"]}
    assert counts == {"/clock": 3, "/cmd_vel": 1}
    types = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["type"] for t in info["topics_with_message_counts"]
    }
    assert types == {"/clock": "rosgraph_msgs/msg/Clock", "/cmd_vel": "geometry_msgs/msg/Twist"}
    assert info["relative_file_paths"] == ["b_0.mcap"]
    assert bag_topics(tmp_path / "b") == types


def _fields(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            parts = line.split()
            out.append((parts[0].split("/")[-1], parts[1]))
    return out


def test_embedded_definitions_match_installed_msg_files() -> None:
    share = pathlib.Path(sys.prefix) / "share"
    checked = 0
    for type_name, text in bags.MESSAGE_DEFINITIONS.items():
        pkg, _, name = type_name.split("/")
        path = share / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            assert _fields(text) == _fields(path.read_text()), type_name
            checked += 1
    if checked == 0:
        pytest.skip("no ROS message definitions installed to compare with")


def test_definition_lookup_for_project_message() -> None:
    text = full_definition("lnn_control/msg/SafetyStatus")
    assert "\nMSG: std_msgs/Header\n" in text and "\nMSG: builtin_interfaces/Time\n" in text


def test_errors(tmp_path: pathlib.Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        BagWriter(tmp_path / "full")
    with pytest.raises(ValueError, match="compression"):
        BagWriter(tmp_path / "c", compression="gzip")
    with BagWriter(tmp_path / "b") as w:
        with pytest.raises(ValueError, match="topic"):
            w.write("cmd_vel", "geometry_msgs/msg/Twist", T.twist(0, 0), 0)
        with pytest.raises(ValueError, match="type_name"):
            w.write("/cmd_vel", "Twist", T.twist(0, 0), 0)
        with pytest.raises(ValueError, match="no message definition"):
            w.write("/x", "nonexistent_msgs/msg/Thing", {}, 0)
        w.write("/cmd_vel", "geometry_msgs/msg/Twist", T.twist(0, 0), 0)
        with pytest.raises(ValueError, match="already carries"):
            w.write("/cmd_vel", "geometry_msgs/msg/TwistStamped", {}, 0)
    with pytest.raises(FileNotFoundError):
        list(read_bag(tmp_path / "missing"))
    with pytest.raises(ValueError, match="t_ns"):
        stamp(-1)


@pytest.mark.parametrize("robot", ["diff_drive", "arm"])
def test_recorded_episode_has_the_sim_topics_and_sim_time_stamps(tmp_path: pathlib.Path, robot: str) -> None:
    result = record_episode(robot, tmp_path / "ep", seed=3)
    assert result.reached and result.collisions == 0
    expected = dict(T.TOPICS[robot])
    expected.update([T.COMMAND_TOPIC[robot], T.GOAL_TOPIC[robot]])
    assert bag_topics(tmp_path / "ep") == expected
    rate = T.PUBLISH_RATE[robot]
    msgs = list(read_bag(tmp_path / "ep"))
    state_topic = "/odom" if robot == "diff_drive" else "/joint_states"
    states = [m for m in msgs if m.topic == state_topic]
    gts = [m for m in msgs if m.topic == "/sim/ground_truth"]
    cmds = [m for m in msgs if m.topic == T.COMMAND_TOPIC[robot][0]]
    assert len(states) == len(gts) == len(cmds) == round(result.duration * rate) + 1
    for k, m in enumerate(states):
        stamp_ns = m.msg.header.stamp.sec * 1_000_000_000 + m.msg.header.stamp.nanosec
        assert stamp_ns == m.log_time_ns == round(k / rate * 1e9)
    # The recorded state is the ground truth (no noise): odometry / joint positions agree with it.
    last_state, last_gt = states[-1].msg, np.array(gts[-1].msg.data)
    if robot == "diff_drive":
        p = last_state.pose.pose.position
        np.testing.assert_allclose([p.x, p.y], last_gt[3:5], atol=1e-12)
        assert last_gt[2] < 0.15 and len(gts[0].msg.layout.dim) == 1
    else:
        goal = [m for m in msgs if m.topic == "/goal_joints"][0].msg.position
        np.testing.assert_allclose(last_state.position, goal, atol=0.05)
    assert max(np.array(g.msg.data)[1 if robot == "diff_drive" else 4] for g in gts) == 0.0


def test_record_cli(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert record_main(["--robot", "arm", "--episodes", "2", "--out", str(tmp_path), "--seed", "5"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm_ep000", "arm_ep001"]
    assert "2/2 episodes" in capsys.readouterr().out
