"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def torch_float64_seeded() -> Iterator[None]:
    """torch in float64 (where correctness is checked) with seed 0; the default dtype is restored
    afterwards so other test modules are unaffected. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("torch_float64_seeded")``."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
