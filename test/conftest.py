"""Test-wide environment: ROS 2 traffic stays on loopback in a domain of its own, logs in a temp dir."""

from __future__ import annotations

import os
import tempfile

# Chosen per test run so that parallel runs on one machine cannot cross-talk.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="lnn_control_roslog_"))
os.environ.setdefault("MPLBACKEND", "Agg")
