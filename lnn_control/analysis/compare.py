"""``lnn-control compare`` is the study: :mod:`lnn_control.analysis.study` (the one recipe, the one
closed-loop evaluation, run through Dask). This name is kept so that old commands keep working."""

from __future__ import annotations

from lnn_control.analysis.study_cli import main

__all__ = ["main"]
