"""Attention of the lane policy: pixel labels of the ray-cast camera, distractors off the road,
VisualBackProp on a conv head, and the attention-share measure on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnn_control.analysis.lane_attention import attention_shares, visual_backprop
from lnn_control.nn.vision import ConvHead
from lnn_control.sim.lane import CAMERA_HEIGHT, CAMERA_WIDTH, LaneEnv, distractor_boxes, make_track


def test_pixel_labels_and_distractors_stay_off_the_road() -> None:
    tr = make_track(1003)
    boxes = distractor_boxes(tr, 20, seed=4)
    assert boxes == distractor_boxes(tr, 20, seed=4) and len(boxes) == 20
    env = LaneEnv(tr, distractors=20, seed=4)
    for x, y, _h, _rgb in boxes:
        _s, d, i = tr.project(np.array([x, y]))
        assert abs(d) - tr.half_width[i] >= 0.4 - 1e-9  # outside the road by 0.4 m at least
    env.reset(seed=0)
    img = env.image()
    lab = env.pixel_labels()
    assert lab.shape == (CAMERA_HEIGHT, CAMERA_WIDTH)
    counts = np.bincount(lab.ravel(), minlength=7)
    assert counts[0] > 0 and counts[1] > 0 and counts[2] > counts[3] > 0 and counts[6] == 0
    # a label's pixels have its colour: edge lines are the brightest, sky the top rows
    grey = img.mean(-1)
    assert grey[lab == 3].mean() > grey[lab == 2].mean() + 80
    assert (lab[0] == 0).all()
    # the same scene without distractors labels no pixel 5
    plain = LaneEnv(tr)
    plain.reset(seed=0)
    plain.image()
    assert (plain.pixel_labels() != 5).all()


def test_visual_backprop_shape_and_support() -> None:
    torch.manual_seed(0)
    head = ConvHead(height=48, width=64, in_channels=1).double()
    img = torch.zeros(1, 48, 64, 1, dtype=torch.float64)
    v = visual_backprop(head, img)
    assert v.shape == (48, 64) and bool((v >= 0).all())
    # the map only reaches pixels some last-layer unit sees: with kernels 5/3/3 and strides 2/2/1,
    # an 8 x 12 map of 15 x 15-pixel receptive fields covers rows 0..45 and columns 0..61
    v = visual_backprop(head, torch.rand(1, 48, 64, 1, dtype=torch.float64) * 255)
    assert float(v.sum()) > 0 and float(v[46:].abs().sum()) == 0.0 and float(v[:, 62:].abs().sum()) == 0.0


def test_attention_shares_known_answers() -> None:
    labels = np.zeros((2, 4, 5), dtype=np.int8) + 2  # all road
    labels[:, :, 0] = 3  # an edge column
    labels[:, 0, 4] = 5  # one distractor pixel
    sal = np.zeros((2, 4, 5))
    sal[0, 2, 0] = 3.0  # frame 0: all on the edge
    sal[0, 0, 4] = 1.0  # and a quarter on the distractor
    sal[1, 3, 3] = 2.0  # frame 1: on the road, 2 columns from the edge (outside the widened mask)
    s = attention_shares(sal, labels)
    assert s["edges"]["saliency_share"] == pytest.approx((0.75 + 0.0) / 2)
    assert s["edges"]["pixel_share"] == pytest.approx(8 / 20)  # the edge column widened by one
    assert s["distractors"]["saliency_share"] == pytest.approx(0.25 / 2)
    assert s["distractors"]["pixel_share"] == pytest.approx(1 / 20)
    assert s["road"]["saliency_share"] == pytest.approx((0.75 + 1.0) / 2)
