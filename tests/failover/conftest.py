"""Fixtures for the failover machine tests (helpers live in failover_helpers.py).

- `clock` -> `FakeClock`: the machine's monotonic clock; `advance(seconds)`.
- `harness(backends, algorithm=..., **settings)` -> `Harness`: a real `Pool` of real
  `Backend` objects (round robin unless said), a `FailoverMachine` on the fake clock
  attached to it, and its `EventLog`; `set(id, state)` changes a backend as the
  health scheduler would.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from failover_helpers import Harness
from helpers.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def harness(clock: FakeClock) -> Callable[..., Harness]:
    def make(
        backends: list[dict[str, Any]], *, algorithm: str = "round_robin", **settings: Any
    ) -> Harness:
        return Harness(clock, backends, settings, algorithm=algorithm)

    return make
