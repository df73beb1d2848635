"""Fixtures for the balancer tests (helpers live in balancer_helpers.py).

- `clock` -> `FakeClock`: a clock to inject into balancers (`clock=`) and pools.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
