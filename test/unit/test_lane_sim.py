"""lane environment: seeded tracks, the ray-cast camera, exact kinematics, the expert's laps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lnn_control.sim.lane import (
    CAMERA_HEIGHT,
    CAMERA_WIDTH,
    HELD_OUT_SEED_START,
    LANE_OMEGA_LIMIT,
    LANE_RADIUS,
    LANE_V_LIMIT,
    LaneEnv,
    LaneExpert,
    make_track,
    track_split,
)


def test_tracks_are_seeded_closed_and_have_both_curve_directions() -> None:
    a, b = make_track(3), make_track(3)
    np.testing.assert_array_equal(a.centre, b.centre)
    assert not np.allclose(make_track(4).centre[:10], a.centre[:10])
    for seed in (0, 1, 2, HELD_OUT_SEED_START, HELD_OUT_SEED_START + 1):
        tr = make_track(seed)
        step = np.linalg.norm(np.roll(tr.centre, -1, 0) - tr.centre, axis=1)
        assert step.max() < 0.06 and step.min() > 0.04  # closed, evenly sampled, incl. last -> first
        assert abs(step.sum() - tr.length) < 0.05
        assert tr.curvature.min() < -0.15 and tr.curvature.max() > 0.15  # right and left curves
        assert (np.abs(tr.curvature) * tr.half_width.max() * 2 <= 1.0 + 1e-9).all()
        # total turning of a closed simple curve is +-2 pi
        assert abs(abs(float(np.sum(tr.curvature * tr.length / len(tr.s)))) - 2 * math.pi) < 0.05
        np.testing.assert_allclose(np.linalg.norm(tr.left - tr.right, axis=1), 2 * tr.half_width)


def test_split_by_seed() -> None:
    assert track_split(0) == "train" and track_split(HELD_OUT_SEED_START - 1) == "train"
    assert track_split(HELD_OUT_SEED_START) == "held_out"
    with pytest.raises(ValueError, match="seed"):
        track_split(-1)


def test_exact_arc_kinematics_and_clipping() -> None:
    env = LaneEnv(0)
    env.reset(start=np.array([0.0, 0.0, 0.0]))
    env.step([0.4, 1.0], 0.5, render=False)
    # circle of radius v / omega = 0.4 m, swept 0.5 rad
    np.testing.assert_allclose(env.pose, [0.4 * math.sin(0.5), 0.4 * (1 - math.cos(0.5)), 0.5], atol=1e-12)
    env.step([10.0, -10.0], 0.05, render=False)
    np.testing.assert_array_equal(env.command, [LANE_V_LIMIT, -LANE_OMEGA_LIMIT])
    with pytest.raises(ValueError, match="command"):
        env.step([np.nan, 0.0], 0.05)
    with pytest.raises(ValueError, match="dt"):
        env.step([0.0, 0.0], 0.0)


def test_camera_sees_road_lines_and_grass_where_expected() -> None:
    env = LaneEnv(1)
    obs = env.reset(seed=2)  # on the centreline, heading along the track
    img = obs.image
    assert img.shape == (CAMERA_HEIGHT, CAMERA_WIDTH, 3) and img.dtype == np.uint8
    bottom = img[-6:].reshape(-1, 3).astype(int)
    grey = (np.abs(bottom[:, 0] - bottom[:, 1]) < 12) & (bottom[:, 0] > 40) & (bottom[:, 0] < 120)
    assert grey.mean() > 0.5  # the road fills the bottom rows
    yellow = (img[..., 0] > 150) & (img[..., 1] > 120) & (img[..., 2] < 80)
    cols = np.nonzero(yellow[CAMERA_HEIGHT // 2 :])[1]
    assert cols.size > 0 and abs(cols.mean() - CAMERA_WIDTH / 2) < 8  # centre line ahead, in the middle
    assert (img[0, :, 2] > img[0, :, 1]).all()  # sky at the top
    mono = LaneEnv(1, mono=True).reset(seed=2).image
    assert mono.shape == (CAMERA_HEIGHT, CAMERA_WIDTH)
    np.testing.assert_allclose(mono, img.astype(float) @ [0.299, 0.587, 0.114], atol=1.0)


def test_camera_changes_with_pose_brightness_and_noise() -> None:
    env = LaneEnv(1, brightness_range=(0.5, 0.5))
    dark = env.reset(seed=2).image
    bright = LaneEnv(1).reset(seed=2).image
    assert dark.mean() < 0.6 * bright.mean()
    noisy = LaneEnv(1, pixel_noise_std=10.0, seed=0).reset(seed=2).image
    assert 3 < np.abs(noisy.astype(int) - bright).mean() < 12
    env2 = LaneEnv(1)
    env2.reset(seed=2)
    turned = env2.reset(start=env2.pose + np.array([0.0, 0.0, 0.6])).image
    assert np.abs(turned.astype(int) - bright).mean() > 10


@pytest.mark.parametrize("seed", [0, 5, HELD_OUT_SEED_START, HELD_OUT_SEED_START + 7])
def test_expert_keeps_the_lane_for_a_full_lap(seed: int) -> None:
    env = LaneEnv(seed)
    env.reset(seed=seed)
    expert = LaneExpert(env.track)
    margins = []
    while env.progress < env.track.length and env.time < 120:
        env.step(expert.command(env.pose), 0.05, render=False)
        margins.append(env.lane_margin())
    assert env.progress >= env.track.length  # a full lap forward
    assert min(margins) > 0.05
    gt = env.ground_truth()
    assert gt[1] == 0.0 and gt[2] == pytest.approx(env.progress)


def test_lane_margin_and_ground_truth_off_the_road() -> None:
    env = LaneEnv(2)
    tr = env.track
    i = 40
    d = tr.half_width[i] - LANE_RADIUS + 0.05  # footprint 5 cm over the left edge line
    start = np.array([*(tr.centre[i] + d * tr.normal[i]), 0.0])
    env.reset(start=start)
    assert env.lane_margin() == pytest.approx(-0.05, abs=2e-3)
    gt = env.ground_truth()
    assert gt[1] == 1.0 and gt[0] < 0


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="brightness_range"):
        LaneEnv(0, brightness_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="start"):
        LaneEnv(0).reset(start=np.array([0.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="speed"):
        LaneExpert(make_track(0), speed=5.0)
