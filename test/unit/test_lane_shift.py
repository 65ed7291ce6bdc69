"""lane evaluation shifts (issue 14 item 6): the lighting/texture shift of the camera and the hard
track family, and lane_compare's model files and options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lnn_control.sim.lane import (
    CAMERA_HEIGHT,
    CAMERA_WIDTH,
    HELD_OUT_SEED_START,
    LaneEnv,
    LaneExpert,
    Lighting,
    make_track,
)


def _pair(track: int, seed: int) -> tuple[LaneEnv, LaneEnv]:
    plain, lit = LaneEnv(track, seed=seed), LaneEnv(track, seed=seed, lighting=True)
    plain.reset(seed=seed)
    lit.reset(seed=seed)
    return plain, lit


def test_lighting_shift_changes_colours_and_texture_but_not_geometry() -> None:
    plain, lit = _pair(HELD_OUT_SEED_START, 100_000)
    np.testing.assert_array_equal(plain.pose, lit.pose)  # the draw of the start is untouched
    assert plain.lighting is None and isinstance(lit.lighting, Lighting)
    a, b = plain.image(), lit.image()
    assert b.dtype == np.uint8 and b.shape == (CAMERA_HEIGHT, CAMERA_WIDTH, 3)
    la, lb = plain.pixel_labels(), lit.pixel_labels()
    np.testing.assert_array_equal(la, lb)  # the same scene seen from the same pose
    assert np.abs(a.astype(int) - b).mean() > 10.0  # a real change of the frame
    road = lb == 2
    assert road.sum() > 200
    # the plain road is one colour faded by distance; the shifted one is textured and shadowed
    plain_rows = [
        a[r][road[r]].astype(float).std(0).mean() for r in range(CAMERA_HEIGHT) if road[r].sum() > 8
    ]
    lit_rows = [b[r][road[r]].astype(float).std(0).mean() for r in range(CAMERA_HEIGHT) if road[r].sum() > 8]
    assert np.mean(plain_rows) < 1.0 < 3.0 < np.mean(lit_rows)
    # the road's colour is the drawn asphalt's, not the training grey
    lt = lit.lighting
    assert lt is not None and 0.2 - 0.05 <= lt.colours[1].mean() <= 0.5 + 0.05
    assert 0.6 <= lt.gain <= 1.4 and 0.6 <= lt.contrast <= 1.3 and np.all(np.abs(lt.cast - 1) <= 0.15)


def test_lighting_strength_interpolates_from_the_training_look() -> None:
    seed, ts = 100_003, HELD_OUT_SEED_START + 3
    frames = {}
    for k in (0.0, 0.5, 1.0):
        env = LaneEnv(ts, seed=seed, lighting=k)
        frames[k] = env.reset(seed=seed).image.astype(int)
        if k == 0.0:
            assert env.lighting is None
    plain = LaneEnv(ts, seed=seed).reset(seed=seed).image.astype(int)
    np.testing.assert_array_equal(frames[0.0], plain)
    d_half, d_full = np.abs(frames[0.5] - plain).mean(), np.abs(frames[1.0] - plain).mean()
    assert 2.0 < d_half < d_full
    lt = Lighting.draw(np.random.default_rng(0))
    same = lt.scaled(1.0)
    np.testing.assert_array_equal(same.colours, lt.colours)
    np.testing.assert_allclose(same.shadow, lt.shadow, rtol=1e-12)
    assert same.gain == pytest.approx(lt.gain, rel=1e-12)
    none = lt.scaled(0.0)
    assert none.gain == 1.0 and none.contrast == 1.0 and none.shadow[4] == 1.0 and none.tiles[1] == 0.0
    with pytest.raises(ValueError, match="lighting"):
        LaneEnv(ts, lighting=1.5)


def test_lighting_is_seeded_per_episode_and_off_by_default() -> None:
    env = LaneEnv(HELD_OUT_SEED_START + 1, seed=3, lighting=True)
    first = env.reset(seed=100_001).image
    again = env.reset(seed=100_001).image
    np.testing.assert_array_equal(first, again)
    other = env.reset(seed=100_002, start=env.pose).image
    assert env.lighting is not None and np.abs(first.astype(int) - other).mean() > 3.0
    # lighting off: bit-identical to an env that never heard of it (training frames unchanged)
    a, b = LaneEnv(5, seed=1), LaneEnv(5, seed=1, lighting=False)
    np.testing.assert_array_equal(a.reset(seed=9).image, b.reset(seed=9).image)
    mono = LaneEnv(5, seed=1, mono=True, lighting=True).reset(seed=9).image
    assert mono.dtype == np.uint8 and mono.shape == (CAMERA_HEIGHT, CAMERA_WIDTH)


def _ground_xy(env: LaneEnv) -> np.ndarray:
    """World (x, y) where each pixel's ray of the last frame hit (H*W, 2)."""
    from lnn_control.sim.lane import CAMERA_POS

    x, y, th = env.state
    c, s = math.cos(th), math.sin(th)
    pnt = np.array([x + c * CAMERA_POS[0] - s * CAMERA_POS[1], y + s * CAMERA_POS[0] + c * CAMERA_POS[1]])
    rot = np.array([[c, -s], [s, c]])
    return pnt + env._dist[:, None] * (env._rays[:, :2] @ rot.T)


def test_shadow_bands_are_fixed_on_the_ground() -> None:
    """With the photometric change set to identity, a frame with shadows equals the frame without
    them times ``depth`` exactly on the ground pixels whose world hit point lies in a band
    (sin(k . xy + phase) > threshold), and elsewhere equals it; again after the vehicle moved."""
    import dataclasses

    _, env = _pair(HELD_OUT_SEED_START + 2, 100_002)
    lt = env.lighting
    assert lt is not None
    kx, ky, ph, thr, depth = lt.shadow
    assert 0.45 <= depth <= 0.75
    assert math.isclose(math.atan2(ky, kx) % (2 * math.pi), lt.sun_azimuth % (2 * math.pi), abs_tol=1e-9)
    ident = dataclasses.replace(lt, gain=1.0, contrast=1.0, cast=np.ones(3))
    for move in (0.0, 0.3):
        if move:
            env.step(np.array([0.5, 0.4]), move)
        env.lighting = ident
        shaded = env.image().reshape(-1, 3).astype(float)
        flat = np.isin(env.pixel_labels().reshape(-1), (1, 2, 3, 4))
        env.lighting = dataclasses.replace(ident, shadow=(kx, ky, ph, thr, 1.0))
        bright = env.image().reshape(-1, 3).astype(float)
        xy = _ground_xy(env)
        band = flat & (np.sin(kx * xy[:, 0] + ky * xy[:, 1] + ph) > thr)
        assert 50 < band.sum() < flat.sum() - 50  # some ground in shadow, some in light
        np.testing.assert_allclose(shaded[band], depth * bright[band], atol=1.0)
        np.testing.assert_array_equal(shaded[~band], bright[~band])


def test_hard_family_is_tighter_narrower_seeded_and_drivable() -> None:
    seeds = range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + 8)
    std = [make_track(s) for s in seeds]
    hard = [make_track(s, family="hard") for s in seeds]
    np.testing.assert_array_equal(hard[0].centre, make_track(seeds[0], "hard").centre)
    assert all(h.family == "hard" and t.family == "standard" for h, t in zip(hard, std))
    assert np.mean([np.abs(h.curvature).max() for h in hard]) > 1.2 * np.mean(
        [np.abs(t.curvature).max() for t in std]
    )
    assert max(h.half_width.max() for h in hard) < min(t.half_width.mean() for t in std)
    assert np.mean([h.length for h in hard]) < np.mean([t.length for t in std])
    for h in hard:
        assert h.curvature.min() < -0.5 and h.curvature.max() > 0.5
        assert (np.abs(h.curvature) * h.half_width.max() * 2 <= 1.0 + 1e-9).all()
        # total turning +-2 pi (0.1: make_track's curvature estimate at the lap's seam is coarse on
        # the short hard laps, ~0.06 rad here; the standard tracks stay within 0.05)
        assert abs(abs(float(np.sum(h.curvature * h.length / len(h.s)))) - 2 * math.pi) < 0.1
    with pytest.raises(ValueError, match="family"):
        make_track(3, family="icy")


def test_expert_drives_hard_tracks_without_departure() -> None:
    for seed in (HELD_OUT_SEED_START, HELD_OUT_SEED_START + 4):
        tr = make_track(seed, "hard")
        env, ex = LaneEnv(tr), LaneExpert(tr)
        env.reset(seed=seed)
        worst = math.inf
        while env.ground_truth()[6] < 1.0 and env.time < 60.0:
            env.step(ex.command(env.pose), 0.05, render=False)
            worst = min(worst, env.lane_margin())
        assert env.ground_truth()[6] >= 1.0 and worst > 0.02


def test_lane_compare_models_round_trip_and_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from lnn_control.analysis import lane_compare as LC
    from lnn_control.config import config_path, load_observation_config
    from lnn_control.learn import training

    om = load_observation_config(config_path("lane"))
    torch.manual_seed(0)
    models = {}
    for kind, units in LC.MODELS:
        tc = training.TrainConfig(
            model=kind, cell="cfc", units=units, seed=0, image=om.images[0], progress=False
        )
        names = {"input_names": om.names, "output_names": ["v", "omega"]}
        models[kind] = training._vision_policy(tc, om.n_inputs, 2, names).double()
    LC.save_models(models, tmp_path)
    back = LC.load_models(tmp_path)
    x = torch.rand(1, 4, om.n_inputs, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 255
    dt = torch.full((1, 4, 1), 0.05, dtype=torch.float64)
    for kind in models:
        with torch.no_grad():
            torch.testing.assert_close(back[kind](x, dt)[0], models[kind](x, dt)[0], rtol=0, atol=0)
        assert (tmp_path / f"{kind}.npz").stat().st_size < 1_000_000
    with pytest.raises(ValueError, match="__config__"):
        np.savez(tmp_path / "bad.npz", a=np.zeros(1))
        LC.load_baseline(tmp_path / "bad.npz")
    assert LC.main(["--seed", "99999"]) == 2
    assert LC.main(["--conditions", "clean,foggy"]) == 2
    # the hard-family start is on that track, near its centreline, heading along it
    tr = make_track(HELD_OUT_SEED_START + 5, "hard")
    start = LC._hard_start(tr, 100_005)
    s, d, i = tr.project(start[:2])
    heading = math.atan2(tr.tangent[i, 1], tr.tangent[i, 0])
    assert abs(d) <= 0.05 + 1e-9 and abs(math.remainder(start[2] - heading, 2 * math.pi)) <= 0.1 + 0.02
