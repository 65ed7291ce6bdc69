"""Helpers shared by the ROS tests (a plain module: pytest puts test/ros on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def spin_until(spin_once: Callable[[], Any], cond: Callable[[], bool], timeout: float) -> bool:
    """Call ``spin_once`` until ``cond()`` holds or ``timeout`` seconds pass; returns ``cond()``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        spin_once()
    return cond()
