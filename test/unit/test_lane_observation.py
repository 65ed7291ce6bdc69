"""The Image extractor (sensor_msgs/Image -> policy inputs) and the lane robot's episodes, map
and filter: garbled, resized, re-encoded or stale images fall back like any other input."""

from __future__ import annotations

import array
import copy

import numpy as np
import pytest

from barriernet.safety_filter import SafetyFilter
from lnn_control.config import config_path, load_filter_config, load_observation_config, read_robot_config
from lnn_control.control.observation import ObservationError, ObservationMap
from lnn_control.control.step import ControlStep, StepSettings
from lnn_control.sim import episodes as E
from lnn_control.sim import topics as T
from lnn_control.sim.lane import LaneEnv, episode_track_seed, lane_map, make_track

CFG = config_path("lane")


def _image_map(**args: object) -> ObservationMap:
    cam = {"name": "cam", "topic": "/cam", "type": "sensor_msgs/msg/Image", "extractor": "image",
           "encoding": "rgb8", "height": 2, "width": 3, **args}  # fmt: skip
    return ObservationMap(
        {
            "features": [cam],
            "command": {"topic": "/cmd", "type": "geometry_msgs/msg/Twist", "fields": ["linear.x"]},
            **({"stamp_topic": "/cam"}),
            "ref": {"topic": "/odom", "type": "nav_msgs/msg/Odometry", "field": "pose.pose.position.x"},
            "state": ["ref"],
        }
    )


PIX = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 14  # (H, W, C) rgb8


def _odom(t_ns: int) -> dict:
    from lnn_control.sim.lane import LaneObservation

    return T.odometry(LaneObservation(t_ns * 1e-9, np.zeros(3), np.zeros(2), np.zeros(0)), t_ns)


def test_image_rgb8_mono8_values_and_normalisation() -> None:
    om = _image_map()
    om.update("/cam", T.image(PIX, 10))
    np.testing.assert_allclose(om.observation(), PIX.reshape(-1) / 255.0, rtol=0, atol=1e-15)
    grey = _image_map(channels=1, scale=2.0, offset=-1.0)
    assert grey.n_inputs == 6 and grey.images[0]["channels"] == 1
    grey.update("/cam", T.image(PIX, 10))
    want = (PIX.astype(float) @ np.array([0.299, 0.587, 0.114])).reshape(-1) * 2.0 - 1.0
    np.testing.assert_allclose(grey.observation(), want, atol=1e-12)
    mono = _image_map(encoding="mono8")
    mono.update("/cam", T.image(PIX[:, :, 0], 10))
    np.testing.assert_allclose(mono.observation(), PIX[:, :, 0].reshape(-1) / 255.0, atol=1e-15)
    # rclpy gives uint8[] as array.array('B'); a padded row step is cropped
    msg = T.image(PIX, 10)
    padded = np.concatenate([PIX.reshape(2, 9), np.full((2, 3), 255, np.uint8)], 1)
    msg.update(step=12, data=array.array("B", padded.tobytes()))
    om.update("/cam", msg)
    np.testing.assert_allclose(om.observation(), PIX.reshape(-1) / 255.0, atol=1e-15)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"encoding": "bgr8"}, "bad_message"),
        ({"encoding": "mono8"}, "bad_message"),
        ({"height": 3}, "wrong_size"),
        ({"width": 2, "step": 6}, "wrong_size"),
        ({"data": PIX.tobytes()[:-1]}, "wrong_size"),
        ({"step": 4}, "bad_message"),
        ({"data": [0, 300] + [0] * 16}, "bad_message"),
        ({"data": None}, "bad_message"),
    ],
)
def test_garbled_images_raise_observation_errors(change: dict, kind: str) -> None:
    om = _image_map()
    msg = T.image(PIX, 10)
    msg.update(change)
    om.update("/cam", msg)
    with pytest.raises(ObservationError) as err:
        om.observation()
    assert err.value.kind == kind


def test_stale_image_against_odometry_and_config_errors() -> None:
    om = _image_map(max_age=0.1, odom_topic="/odom")
    om.update("/cam", T.image(PIX, 1_000_000_000))
    om.update("/odom", _odom(1_050_000_000))
    assert om.observation().shape == (18,)
    om.update("/odom", _odom(1_200_000_000))
    with pytest.raises(ObservationError) as err:
        om.observation()
    assert err.value.kind == "stale" and "0.200 s older" in str(err.value)
    for bad, match in (
        ({"encoding": "yuv422"}, "encoding must be one of"),
        ({"height": 0}, "height must be an int"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"max_age": 0.1}, "needs odom_topic"),
        ({"scale": 0.0}, "scale must not be 0"),
        ({"colour": 1}, "unknown keys"),
    ):
        with pytest.raises(ValueError, match=match):
            _image_map(**bad)


def _lane_step(filter_on: bool = True) -> ControlStep:
    om = load_observation_config(CFG)
    cfg = load_filter_config(CFG)
    if not filter_on:
        cfg["barriers"] = []

    class Forward:  # drive straight at 0.5 m/s whatever the camera shows
        n_inputs = om.n_inputs

        def step(self, o: np.ndarray, dt: float) -> np.ndarray:
            assert o.shape == (om.n_inputs,)
            return np.array([0.5, 0.0])

        def reset(self) -> None:
            pass

    settings = StepSettings.from_params(read_robot_config(CFG), "/odom")
    assert settings.timeout_exempt_topics == ("/lane/map",)
    return ControlStep(om, Forward(), SafetyFilter.from_config(cfg), settings)


def test_lane_control_step_falls_back_on_a_bad_image_and_filters_good_ones() -> None:
    spec = E.draw("lane", 7)
    env = E.make_env("lane", track_seed=episode_track_seed(7))
    ob = spec.reset(env)
    step = _lane_step()
    step.reset(0.0)
    step.receive("/lane/map", E.goal_message("lane", spec.goal, 0), 0.0)
    step.receive("/camera/image_raw", T.image(ob.image, 0), 0.0)
    step.receive("/odom", T.odometry(ob, 0), 0.0)
    out = step.step(0.0, 0.0)
    assert out is not None and out.reason is None and out.report.status == "optimal"
    # a resized frame: the fallback (zero velocity), counted as wrong_size
    small = T.image(ob.image[:24], 50_000_000)
    small_odom = T.odometry(ob, 50_000_000)
    step.receive("/camera/image_raw", small, 0.05)
    step.receive("/odom", small_odom, 0.05)
    out = step.step(0.05, 0.05)
    assert out is not None and out.status == "invalid_input" and "wrong_size" in out.reason
    np.testing.assert_array_equal(out.command, [0.0, 0.0])
    assert step.counters["wrong_size"] == 1
    # a frozen camera driver re-sending its last frame: the image's stamp falls behind odometry
    old = T.image(ob.image, 50_000_000)
    for k in range(2, 7):
        step.receive("/camera/image_raw", old, 0.05 * k)
        step.receive("/odom", T.odometry(ob, k * 50_000_000), 0.05 * k)
        out = step.step(0.05 * k, 0.05 * k)
        assert out is not None and (out.reason is None) == (k <= 5)  # lag 0.05 (k - 1) s vs max_age 0.2 s
    assert out.status == "invalid_input" and out.reason.startswith("stale"), out.reason
    assert step.counters["stale"] == 1
    # no map: the barrier cannot be built -> the filter's own fallback
    bare = _lane_step()
    bare.reset(0.0)
    bare.receive("/camera/image_raw", T.image(ob.image, 0), 0.0)
    bare.receive("/odom", T.odometry(ob, 0), 0.0)
    assert bare.step(0.0, 0.0) is None  # /lane/map not seen yet


def test_lane_episodes_tracks_scoring_and_the_map_barrier() -> None:
    assert episode_track_seed(0) == 0 and episode_track_seed(1234) == 234
    assert episode_track_seed(100000) == 1000 and episode_track_seed(100049) == 1049
    a, b = E.draw("lane", 100003), E.draw("lane", 100003)
    np.testing.assert_array_equal(a.start, b.start)
    tr = make_track(1003)
    np.testing.assert_array_equal(a.goal, lane_map(tr))
    s, d, _ = tr.project(a.start[:2])
    assert abs(d) <= 0.05 + 1e-9 and E.TIME_LIMIT["lane"] == 60.0
    # scoring: a departure is the footprint crossing an edge; success a full lap
    env = LaneEnv(tr)
    env.reset(start=a.start)
    gt = env.ground_truth()
    fields = E.GROUND_TRUTH_FIELDS["lane"]
    row = dict(zip(fields, gt))
    assert E.margin("lane", gt) == row["lane_margin"] > 0
    bad = gt.copy()
    bad[fields.index("lane_margin")] = -0.01
    assert E.violations("lane", bad)["lane_departure"] and not E.violations("lane", gt)["lane_departure"]
    lap = gt.copy()
    lap[fields.index("lap")] = 1.0
    sc = E.score("lane", 100003, np.stack([gt, bad, lap]), [0.0, 0.05, 0.1])
    assert sc.reached and sc.time_s == 0.1 and sc.violations == {"lane_departure": 1} and not sc.safe_success
    # the barrier from the map in env equals the one from the same edges inline
    cfg = copy.deepcopy(load_filter_config(CFG))
    via_env = SafetyFilter.from_config(cfg)
    cfg["barriers"][0] = {k: v for k, v in cfg["barriers"][0].items() if k != "env_key"}
    cfg["barriers"][0].update(left=tr.left.tolist(), right=tr.right.tolist())
    inline = SafetyFilter.from_config(cfg)
    x = np.array([*a.start])
    env_map = {"lane_map": a.goal}
    for u in ([0.8, 3.0], [0.5, -3.0], [0.3, 0.0]):
        ue, re = via_env.filter(x, np.array(u), env=env_map)
        ui, ri = inline.filter(x, np.array(u))
        np.testing.assert_allclose(ue, ui, atol=1e-12)
        np.testing.assert_allclose(re.barrier_values, ri.barrier_values, atol=1e-12)
    u, rep = via_env.filter(x, np.array([0.5, 0.0]), env={})
    assert rep.fallback_used and "lane_map" in rep.fallback_reason
    u, rep = via_env.filter(x, np.array([0.5, 0.0]), env={"lane_map": np.zeros(10)})
    assert rep.fallback_used and "4 N values" in rep.fallback_reason
