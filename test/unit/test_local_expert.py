"""DiffDriveLocalExpert: decisions from the goal in the body frame and scan sector minima only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lnn_control.sim.experts import DiffDriveLocalExpert

OPEN = np.full(8, 4.0)  # nothing within the scan's range


def test_open_room_drives_straight_to_a_goal_ahead() -> None:
    v, w = DiffDriveLocalExpert()(np.array([2.0, 0.0]), OPEN)
    assert v == pytest.approx(0.5) and w == pytest.approx(0.0)


def test_turns_towards_a_goal_behind_without_driving() -> None:
    v, w = DiffDriveLocalExpert()(np.array([-2.0, 0.1]), OPEN)
    assert v == pytest.approx(0.0) and w == pytest.approx(2.0)  # saturated left turn, cos(e) < 0


def test_obstacle_ahead_picks_the_nearest_free_direction() -> None:
    ex = DiffDriveLocalExpert()
    s = OPEN.copy()
    s[[0, 7]] = 0.6  # something 0.6 m away in the two sectors either side of straight ahead
    v, w = ex(np.array([3.0, 0.0]), s)
    # directions less than 52.5 deg from a blocked sector's centre (+-22.5 deg) are not free: the
    # nearest free one is 75 deg off, so a full turn and a crawl (0.5 cos(75 deg)^2 (0.6 - 0.3) / 0.4)
    assert abs(w) == pytest.approx(2.0)
    assert v == pytest.approx(0.5 * math.cos(math.radians(75.0)) ** 2 * 0.75)
    assert ex.clearances(s, np.radians([0.0, 70.0, 80.0])).tolist() == [0.6, 0.6, 4.0]


def test_goal_stop_and_bad_input() -> None:
    ex = DiffDriveLocalExpert()
    assert ex(np.array([0.05, 0.0]), OPEN).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="goal_body"):
        ex(np.array([np.nan, 0.0]), OPEN)
    with pytest.raises(ValueError, match="sectors"):
        ex(np.array([1.0, 0.0]), np.ones(5))
    with pytest.raises(ValueError, match="v_max"):
        DiffDriveLocalExpert(v_max=2.0)
