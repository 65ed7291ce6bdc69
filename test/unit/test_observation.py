"""ObservationMap: real ROS message classes and plain objects/dicts give the same, known vectors."""

from __future__ import annotations

import math
import pathlib
import types

import numpy as np
import pytest

from lnn_control.config import expand_filter_config, load_filter_config, load_observation_config
from lnn_control.control.observation import (
    EXTRACTORS,
    ObservationError,
    ObservationMap,
    get_field,
    stamp_seconds,
)

geometry_msgs = pytest.importorskip("geometry_msgs.msg")
nav_msgs = pytest.importorskip("nav_msgs.msg")
sensor_msgs = pytest.importorskip("sensor_msgs.msg")
std_msgs = pytest.importorskip("std_msgs.msg")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def odom_msg(x: float, y: float, th: float, v: float = 0.3, w: float = -0.2, t: float = 1.5):
    m = nav_msgs.Odometry()
    m.header.stamp.sec, m.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
    m.pose.pose.position.x, m.pose.pose.position.y = x, y
    m.pose.pose.orientation.z, m.pose.pose.orientation.w = math.sin(th / 2), math.cos(th / 2)
    m.twist.twist.linear.x, m.twist.twist.angular.z = v, w
    return m


def scan_msg(ranges, angle_min: float = 0.0, inc: float | None = None):
    m = sensor_msgs.LaserScan()
    m.angle_min = angle_min
    m.angle_increment = inc if inc is not None else 2 * math.pi / len(ranges)
    m.range_min, m.range_max = 0.05, 4.0
    m.ranges = [float(r) for r in ranges]
    return m


def goal_msg(x: float, y: float):
    m = geometry_msgs.PoseStamped()
    m.pose.position.x, m.pose.position.y = x, y
    return m


def ns(**kw):
    return types.SimpleNamespace(**kw)


def plain_odom(x, y, th, v=0.3, w=-0.2):
    q = ns(x=0.0, y=0.0, z=math.sin(th / 2), w=math.cos(th / 2))
    return ns(
        header=ns(stamp=ns(sec=1, nanosec=500_000_000)),
        pose=ns(pose=ns(position=ns(x=x, y=y, z=0.0), orientation=q)),
        twist=ns(twist=ns(linear=ns(x=v, y=0.0, z=0.0), angular=ns(x=0.0, y=0.0, z=w))),
    )


@pytest.fixture
def dd_map() -> ObservationMap:
    return load_observation_config(ROOT / "config" / "diff_drive.yaml")


@pytest.fixture
def arm_map() -> ObservationMap:
    return load_observation_config(ROOT / "config" / "arm.yaml")


def feed_dd(m: ObservationMap, odom, ranges, goal) -> None:
    m.update("/odom", odom)
    m.update("/scan", scan_msg(ranges))
    m.update("/goal_pose", goal)


def test_diff_drive_known_vector(dd_map: ObservationMap) -> None:
    ranges = np.full(72, 3.0)
    ranges[9] = 0.7  # sector 1 (beams 9..17)
    ranges[40] = np.inf  # no return -> range_max, not a minimum
    ranges[41] = np.nan
    ranges[42] = 0.01  # below range_min: invalid -> range_max
    assert dd_map.vector() is None  # nothing seen yet
    # robot at (1, 2) facing +y; goal at (1, 3) is straight ahead: body (1, 0)
    feed_dd(dd_map, odom_msg(1.0, 2.0, math.pi / 2), ranges, goal_msg(1.0, 3.0))
    o = dd_map.vector()
    assert o is not None and o.shape == (12,) and dd_map.n_inputs == 12
    np.testing.assert_allclose(o[:2], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(o[2:4], [0.3, -0.2])
    np.testing.assert_allclose(o[4:], [3.0, 0.7, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(dd_map.state(), [1.0, 2.0, math.pi / 2], atol=1e-12)


def test_goal_in_body_rotation_reference(dd_map: ObservationMap) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        x, y, th, gx, gy = rng.uniform(-3, 3, 5)
        feed_dd(dd_map, odom_msg(x, y, th), np.full(72, 2.0), goal_msg(gx, gy))
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        expect = rot.T @ np.array([gx - x, gy - y])
        np.testing.assert_allclose(dd_map.observation()[:2], expect, atol=1e-9)
        # yaw from the quaternion matches the angle wrapped to (-pi, pi]
        assert math.isclose(dd_map.state()[2], math.atan2(math.sin(th), math.cos(th)), abs_tol=1e-9)


def test_scan_points_world(dd_map: ObservationMap) -> None:
    ranges = np.full(72, np.inf)
    ranges[0] = 1.0  # beam at angle 0 in the body frame
    ranges[18] = 2.0  # beam at +90 deg
    feed_dd(dd_map, odom_msg(0.5, -0.5, math.pi / 2), ranges, goal_msg(0, 0))
    pts = dd_map.env()["scan_points"]
    # robot faces +y: body x-axis -> world +y, body y-axis -> world -x; invalid beams dropped
    np.testing.assert_allclose(pts, [[0.5, 0.5], [-1.5, -0.5]], atol=1e-9)


def test_plain_objects_and_dicts_match_messages(dd_map: ObservationMap) -> None:
    ranges = np.linspace(0.5, 3.5, 72)
    feed_dd(dd_map, odom_msg(0.2, -0.4, 0.7), ranges, goal_msg(2.0, 1.0))
    ref = dd_map.vector()
    other = load_observation_config(ROOT / "config" / "diff_drive.yaml")
    other.update("/odom", plain_odom(0.2, -0.4, 0.7))
    scan_d = {
        "angle_min": 0.0,
        "angle_increment": 2 * math.pi / 72,
        "range_min": 0.05,
        "range_max": 4.0,
        "ranges": list(ranges),
    }
    other.update("/scan", scan_d)
    other.update("/goal_pose", {"pose": {"position": {"x": 2.0, "y": 1.0, "z": 0.0}}})
    np.testing.assert_allclose(other.vector(), ref, atol=1e-12)


def test_arm_joints_by_name_and_command(arm_map: ObservationMap) -> None:
    js = sensor_msgs.JointState()
    js.name = ["joint3", "joint1", "joint2"]  # order differs from the config on purpose
    js.position, js.velocity = [0.3, 0.1, 0.2], [-3.0, -1.0, -2.0]
    goal = sensor_msgs.JointState()
    goal.position = [1.0, -1.0, 0.5]
    arm_map.update("/joint_states", js)
    arm_map.update("/goal_joints", goal)
    np.testing.assert_allclose(arm_map.vector(), [0.1, 0.2, 0.3, -1.0, -2.0, -3.0, 1.0, -1.0, 0.5])
    np.testing.assert_allclose(arm_map.state(), [0.1, 0.2, 0.3, -1.0, -2.0, -3.0])
    cmd = arm_map.fill_command(std_msgs.Float64MultiArray(), np.array([1.0, -2.0, 3.0]))
    assert list(cmd.data) == [1.0, -2.0, 3.0]
    np.testing.assert_allclose(arm_map.command_from_message(cmd), [1.0, -2.0, 3.0])
    js.name = ["joint1", "joint2", "elbow"]
    arm_map.update("/joint_states", js)  # the same object again, mutated: must be re-read
    with pytest.raises(ObservationError) as e:
        arm_map.vector()
    assert e.value.kind == "bad_message" and "joint3" in str(e.value)


def test_twist_command(dd_map: ObservationMap) -> None:
    tw = dd_map.fill_command(geometry_msgs.Twist(), [0.4, -1.1])
    assert (tw.linear.x, tw.angular.z, tw.linear.y) == (0.4, -1.1, 0.0)
    with pytest.raises(ValueError, match="u: 3 values for 2"):
        dd_map.fill_command(geometry_msgs.Twist(), [0.1, 0.2, 0.3])


def test_bad_data_raises_specific_errors(dd_map: ObservationMap, arm_map: ObservationMap) -> None:
    feed_dd(dd_map, odom_msg(0, 0, 0, v=float("nan")), np.full(72, 2.0), goal_msg(1, 1))
    with pytest.raises(ObservationError) as e:
        dd_map.vector()
    assert e.value.kind == "non_finite" and "'v'" in str(e.value)
    feed_dd(dd_map, odom_msg(0, 0, 0), np.full(5, 2.0), goal_msg(1, 1))  # 5 beams < 8 sectors
    with pytest.raises(ObservationError) as e:
        dd_map.vector()
    assert e.value.kind == "wrong_size"
    goal = sensor_msgs.JointState()
    goal.position = [1.0, 2.0]  # size 3 expected
    js = sensor_msgs.JointState()
    js.name, js.position, js.velocity = ["joint1", "joint2", "joint3"], [0.0] * 3, [0.0] * 3
    arm_map.update("/joint_states", js)
    arm_map.update("/goal_joints", goal)
    with pytest.raises(ObservationError, match="2 values, expected 3") as e:
        arm_map.vector()
    assert e.value.kind == "wrong_size"
    fresh = load_observation_config(ROOT / "config" / "arm.yaml")
    with pytest.raises(ObservationError) as e:
        fresh.state()
    assert e.value.kind == "missing"


def test_stamps_and_dt() -> None:
    m = odom_msg(0, 0, 0, t=2.25)
    assert stamp_seconds(m) == 2.25
    assert stamp_seconds(geometry_msgs.Twist()) is None
    assert ObservationMap.dt(None, 3.0, default=0.02) == 0.02
    assert math.isclose(ObservationMap.dt(2.25, 2.26, default=0.02), 0.01)
    for bad in (2.25, 2.0):
        with pytest.raises(ObservationError) as e:
            ObservationMap.dt(2.25, bad, default=0.02)
        assert e.value.kind == "out_of_order"


BASE = {
    "features": [
        {"name": "x", "topic": "/odom", "type": "nav_msgs/msg/Odometry", "field": "pose.pose.position.x"}
    ],
    "command": {"topic": "/cmd_vel", "type": "geometry_msgs/msg/Twist", "fields": ["linear.x"]},
}


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"features": []}, "non-empty list"),
        ({"features": [{"name": "x", "topic": "/odom", "type": "nav_msgs/msg/Odometry"}]}, "exactly one of"),
        (
            {
                "features": [
                    {"name": "x", "topic": "/odom", "type": "nav_msgs/msg/Odometry", "extractor": "psd"}
                ]
            },
            "extractor 'psd' unknown",
        ),
        (
            {
                "features": [
                    {
                        "name": "s",
                        "topic": "/s",
                        "type": "sensor_msgs/msg/LaserScan",
                        "extractor": "scan_sectors",
                    }
                ]
            },
            r"needs \['sectors'\]",
        ),
        (
            {
                "features": [
                    {
                        "name": "g",
                        "topic": "/g",
                        "type": "geometry_msgs/msg/PoseStamped",
                        "extractor": "goal_in_body",
                        "odom_topic": "/odom",
                    }
                ]
            },
            "needs topic '/odom'",
        ),
        ({"command": {"topic": "/cmd_vel", "type": "geometry_msgs/msg/Twist"}}, "command.fields"),
        ({"features": [{"name": "x", "topic": "/o", "type": "Odometry", "field": "a"}]}, "pkg/msg/Type"),
        (
            {"features": [{"name": "x", "topic": "/o", "type": "a/msg/B", "field": "a..b"}]},
            "not a field name",
        ),
        ({"stamp_topic": "/imu"}, "stamp_topic"),
    ],
)
def test_construction_errors_say_what_to_fix(patch: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ObservationMap({**BASE, **patch})


def test_extractor_registry_and_ros_params_layout(tmp_path: pathlib.Path) -> None:
    assert set(EXTRACTORS) == {
        "yaw",
        "goal_in_body",
        "scan_sectors",
        "scan_points_world",
        "joints",
        "image",
        "float_array",
    }
    import yaml

    p = tmp_path / "node.yaml"
    p.write_text(yaml.safe_dump({"ctl": {"ros__parameters": {"observation": BASE}}}))
    m = load_observation_config(p)
    m.update("/odom", odom_msg(4.5, 0, 0))
    np.testing.assert_allclose(m.vector(), [4.5])
    assert get_field({"data": [1.0, 2.0]}, "data[1]") == 2.0
    (tmp_path / "none.yaml").write_text("a: 1\n")
    with pytest.raises(ValueError, match="no 'observation:' section"):
        load_observation_config(tmp_path / "none.yaml")


def test_filter_config_named_layout() -> None:
    cfg = load_filter_config(ROOT / "config" / "diff_drive.yaml")
    assert [b["name"] for b in cfg["barriers"]] == ["scan", "wall_xp", "wall_xn", "wall_yp", "wall_yn"]
    assert cfg["barriers"][1] == {
        "name": "wall_xp",
        "type": "half_space",
        "normal": [1.0, 0.0],
        "offset": 2.8,
        "margin": 0.05,
        "gains": [1.0],
    }
    assert cfg["controls"]["upper"] == [0.6, 2.0] and cfg["slack"]["penalty"] == 10000.0
    tree = {"barriers": ["a", "b"], "a": {"type": "half_space", "enabled": False}, "b": {"type": "x"}}
    assert expand_filter_config(tree)["barriers"] == [{"name": "b", "type": "x"}]
    with pytest.raises(ValueError, match="'c' names no entry"):
        expand_filter_config({"barriers": ["c"]})


def test_named_entry_errors() -> None:
    with pytest.raises(ValueError, match="'w' names no entry"):
        ObservationMap({**BASE, "state": ["w"]})
    m = ObservationMap(
        {
            **BASE,
            "state": ["x"],
            "x": {"topic": "/odom", "type": "nav_msgs/msg/Odometry", "field": "pose.pose.position.x"},
        }
    )
    assert m.state_names == ["x"] and m.n_state == 1


def _reference_vector(m: ObservationMap, feats) -> np.ndarray:
    """The plain per-feature path (what the compiled plan must reproduce)."""
    return np.concatenate([f.extract(m.latest) for f in feats])


def test_compiled_plan_matches_per_feature_path(dd_map: ObservationMap) -> None:
    rng = np.random.default_rng(11)
    scan = scan_msg(rng.uniform(0.3, 3.9, 72))
    for k in range(50):
        x, y, th, v, w = rng.uniform(-2.5, 2.5, 5)
        odom = odom_msg(x, y, th, v, w, t=1.0 + 0.01 * k)
        if k % 7 == 0:
            scan = scan_msg(rng.uniform(0.3, 3.9, 72))
        dd_map.update("/odom", odom)
        dd_map.update("/scan", scan)
        dd_map.update("/goal_pose", goal_msg(*rng.uniform(-2, 2, 2)))
        o, xs = dd_map.observation(), dd_map.state()
        # bit-identical: the fast path reads the same floats, no arithmetic in between
        np.testing.assert_array_equal(o, _reference_vector(dd_map, dd_map.features))
        np.testing.assert_array_equal(xs, _reference_vector(dd_map, dd_map.state_features))
        np.testing.assert_array_equal(o[2:4], [v, w])
        np.testing.assert_array_equal(xs[:2], [x, y])
        # fresh arrays each call: a caller keeping one (the node's last good state) is never overwritten
        assert dd_map.state() is not xs and not np.shares_memory(dd_map.state(), xs)


def test_compiled_plan_errors_name_first_bad_feature(dd_map: ObservationMap) -> None:
    rng = np.random.default_rng(12)
    feed_dd(dd_map, odom_msg(0.1, 0.2, 0.3), rng.uniform(0.5, 3.0, 72), goal_msg(1, 1))
    for bad in (float("nan"), float("inf"), float("-inf")):
        dd_map.update("/odom", odom_msg(0.1, 0.2, 0.3, w=bad))
        with pytest.raises(ObservationError, match="'omega'") as e:
            dd_map.observation()
        assert e.value.kind == "non_finite"
        dd_map.update("/odom", odom_msg(0.1, bad, 0.3))
        with pytest.raises(ObservationError, match="'py'") as e:
            dd_map.state()
        assert e.value.kind == "non_finite"
    # huge finite values overflow the fast path's check sum: the slow path still accepts them
    dd_map.update("/odom", odom_msg(1e308, 1e308, 0.0, v=1e308, w=1e308))
    np.testing.assert_array_equal(dd_map.state()[:2], [1e308, 1e308])
    np.testing.assert_array_equal(dd_map.observation()[2:4], [1e308, 1e308])
    # a missing topic on a grouped field: 'missing', not a KeyError
    fresh = load_observation_config(ROOT / "config" / "diff_drive.yaml")
    with pytest.raises(ObservationError) as e:
        fresh.state()
    assert e.value.kind == "missing"
    # a message without the field: bad_message naming the feature
    fresh.update("/odom", ns(header=ns(stamp=ns(sec=1, nanosec=0)), pose=ns(pose=ns())))
    with pytest.raises(ObservationError, match="'px'") as e:
        fresh.state()
    assert e.value.kind == "bad_message"


def test_compiled_plan_dicts_ints_and_mutation(dd_map: ObservationMap) -> None:
    ranges = np.linspace(0.5, 3.5, 72)
    feed_dd(dd_map, plain_odom(0.2, -0.4, 0.7), ranges, goal_msg(2.0, 1.0))
    ref = dd_map.vector()
    as_dict = {
        "header": {"stamp": {"sec": 1, "nanosec": 500_000_000}},
        "pose": {"pose": {"position": {"x": 0.2, "y": -0.4, "z": 0.0}, "orientation": {}}},
        "twist": {"twist": {"linear": {"x": 0.3}, "angular": {"z": -0.2}}},
    }
    q = plain_odom(0.2, -0.4, 0.7).pose.pose.orientation
    as_dict["pose"]["pose"]["orientation"] = {"x": q.x, "y": q.y, "z": q.z, "w": q.w}  # type: ignore[index]
    dd_map.update("/odom", as_dict)
    np.testing.assert_allclose(dd_map.vector(), ref, atol=1e-12)
    ints = plain_odom(2, -1, 0.0, v=1, w=0)  # integer fields: the slow path converts them
    dd_map.update("/odom", ints)
    np.testing.assert_array_equal(dd_map.state()[:2], [2.0, -1.0])
    np.testing.assert_array_equal(dd_map.observation()[2:4], [1.0, 0.0])
    ints.twist.twist.linear.x = 0.75  # the same object re-sent after a change is read again
    dd_map.update("/odom", ints)
    assert dd_map.observation()[2] == 0.75


def test_pose_reads_follow_a_mutated_odometry_object(dd_map: ObservationMap) -> None:
    """Extractors share one pose read per odometry message: re-sending the same object after a
    change must give the new pose everywhere (goal in body frame, scan points, yaw)."""
    ranges = np.full(72, np.inf)
    ranges[0] = 1.0
    odom = odom_msg(0.0, 0.0, 0.0)
    feed_dd(dd_map, odom, ranges, goal_msg(1.0, 0.0))
    np.testing.assert_allclose(dd_map.observation()[:2], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(dd_map.env()["scan_points"], [[1.0, 0.0]], atol=1e-12)
    odom.pose.pose.position.x = 0.5
    odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = math.sin(math.pi / 4), math.cos(math.pi / 4)
    dd_map.update("/odom", odom)
    np.testing.assert_allclose(dd_map.observation()[:2], [0.0, -0.5], atol=1e-12)
    np.testing.assert_allclose(dd_map.env()["scan_points"], [[0.5, 1.0]], atol=1e-12)
    np.testing.assert_allclose(dd_map.state(), [0.5, 0.0, math.pi / 2], atol=1e-12)


def test_scan_points_non_finite_geometry_is_reported(dd_map: ObservationMap) -> None:
    scan = scan_msg(np.full(72, 2.0))
    scan.angle_increment = float("nan")
    dd_map.update("/odom", odom_msg(0.0, 0.0, 0.0))
    dd_map.update("/scan", scan)
    with pytest.raises(ObservationError, match="'scan_points'") as e:
        dd_map.env()
    assert e.value.kind == "non_finite"
    dd_map.update("/scan", scan_msg(np.full(72, 2.0)))
    dd_map.update("/odom", odom_msg(1e308, 1e308, 0.3))  # huge but finite: kept
    assert np.isfinite(dd_map.env()["scan_points"]).all()


@pytest.mark.parametrize("beams", [8, 9, 13, 50, 72, 361])
def test_scan_sectors_match_array_split_reference(dd_map: ObservationMap, beams: int) -> None:
    rng = np.random.default_rng(beams)
    ranges = rng.uniform(0.1, 3.9, beams)
    ranges[rng.integers(0, beams, 3)] = np.inf  # no return: free up to range_max
    ranges[rng.integers(0, beams, 2)] = 0.01  # below range_min: invalid too
    feed_dd(dd_map, odom_msg(0.0, 0.0, 0.0), ranges, goal_msg(1, 1))
    scan = dd_map.latest["/scan"]  # float32 fields: the reference reads the message's own values
    r = np.asarray(scan.ranges, dtype=np.float64)
    lo, hi = float(scan.range_min), float(scan.range_max)
    clean = np.where(np.isfinite(r) & (r >= lo) & (r <= hi), r, hi)
    want = [s.min() for s in np.array_split(clean, 8)]
    np.testing.assert_array_equal(dd_map.observation()[4:], want)


def test_scan_reads_follow_a_mutated_scan_object(dd_map: ObservationMap) -> None:
    scan = scan_msg(np.full(72, 3.0))
    feed_dd(dd_map, odom_msg(0.0, 0.0, 0.0), np.full(72, 3.0), goal_msg(1, 1))
    dd_map.update("/scan", scan)
    assert dd_map.observation()[4:].tolist() == [3.0] * 8 and len(dd_map.env()["scan_points"]) == 72
    scan.ranges = [1.0] + [float("inf")] * 71
    dd_map.update("/scan", scan)  # the same object again, changed: every scan feature re-read
    assert dd_map.observation()[4:].tolist() == [1.0] + [4.0] * 7
    np.testing.assert_allclose(dd_map.env()["scan_points"], [[1.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize(
    "quat,kind",
    [
        ({"x": 0.0, "y": 0.0, "z": 0.5, "w": float("inf")}, "non_finite"),
        ({"x": 0.0, "y": 0.0, "z": float("nan"), "w": 1.0}, "non_finite"),
        ({"x": 0.0, "y": 0.0, "z": 0.0, "w": 0.0}, "bad_message"),
    ],
)
def test_yaw_refuses_a_quaternion_that_is_not_a_rotation(quat: dict[str, float], kind: str) -> None:
    from lnn_control.sim import topics as T
    from lnn_control.sim.diff_drive import DiffDriveEnv

    om = load_observation_config(ROOT / "config" / "diff_drive.yaml")
    env = DiffDriveEnv(seed=0)
    ob = env.reset()
    msg = T.odometry(ob, 1_000_000)
    om.update("/odom", msg)
    om.update("/scan", T.laser_scan(ob, 1_000_000, 0.02))
    om.update("/goal_pose", T.pose_stamped(1.0, 1.0, 1_000_000))
    om.observation()  # a valid quaternion maps
    bad = T.odometry(ob, 2_000_000)
    bad["pose"]["pose"]["orientation"] = quat
    om.update("/odom", bad)
    with pytest.raises(ObservationError) as e:
        om.observation()
    assert e.value.kind == kind and "quaternion" in str(e.value)
