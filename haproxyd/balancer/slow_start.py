"""Slow start: ramp a backend that just came up from a small weight to its full weight.

After HAProxy's `slowstart` (weight grows linearly from a small value to 100% over the
period; never applied when the process starts) and Nginx's `slow_start`. The ramp of
backend `b` at time `now` is `max(RAMP_FLOOR, (now - b.state_since) / duration)`.

Which backends ramp is decided in `plan` (called from each algorithm's `rebuild`): those
whose `state_since` is within `duration` of now, unless every selectable backend is
ramping (a cold start or a recovery from a total outage: there is nobody to protect, so
nobody is held back). A ramping backend leaves the plan once its period is over, so the
cost per selection is one dict membership test while nothing ramps.

How each algorithm applies the ramp factor `f`:
- rotations (round robin, weighted round robin, the hash fallback): `admit` lets the
  backend take about `f` of its turns (a deterministic credit counter);
- hashing (map and ring): `admit_key` admits the keys whose gate hash is below `f`, so
  the set of keys a backend takes only grows during the ramp;
- random: `admit_random` with the injected generator;
- least connections / response time: the weight in the score becomes `f * weight`,
  refreshed every `duration / RAMP_STEPS` (`retune_due`).

O(1) per call; `plan` is O(n).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pydantic import Field

from haproxyd.config.fields import Section
from haproxyd.config.types import Duration

if TYPE_CHECKING:
    import random

    from haproxyd.balancer.state import Backend

RAMP_FLOOR = 0.05  # the share of its weight a backend gets the moment it comes up
RAMP_STEPS = 20  # score-based algorithms refresh ramping weights this many times
_GATE_SCALE = float(1 << 32)


class SlowStartOptions(Section):
    """The `balancer:` option every algorithm reads (see `registry.py`)."""

    slow_start: Duration = Field(
        0.0, ge=0, description="Ramp a recovered backend's weight up over this time; 0 = off."
    )


class SlowStart:
    """The ramp state of one balancer. Only its balancer calls it (loop thread)."""

    __slots__ = ("_credit", "_next_retune", "clock", "duration", "since")

    def __init__(self, duration: float | None, clock: Callable[[], float]) -> None:
        duration = float(duration or 0.0)
        if duration < 0:
            raise ValueError("slow_start cannot be negative")
        self.duration = duration
        self.clock = clock
        # Ramping backends -> the time they came up. Empty while nothing ramps.
        self.since: dict[Backend, float] = {}
        self._credit: dict[Backend, float] = {}
        self._next_retune = 0.0

    def plan(self, backends: Iterable[Backend]) -> None:
        """Decide which of the selectable `backends` ramp (from `rebuild`)."""
        members = list(backends)
        self.since = {}
        if self.duration <= 0 or not members:
            self._credit = {}
            return
        now = self.clock()
        ramping = {b: b.state_since for b in members if now - b.state_since < self.duration}
        if len(ramping) < len(members):
            self.since = ramping
        self._credit = {b: c for b, c in self._credit.items() if b in self.since}
        self._next_retune = now

    def factor(self, backend: Backend) -> float:
        """The share of its weight `backend` may use now: 1.0 unless ramping."""
        since = self.since.get(backend)
        if since is None:
            return 1.0
        elapsed = self.clock() - since
        if elapsed >= self.duration:
            del self.since[backend]
            self._credit.pop(backend, None)
            return 1.0
        return max(RAMP_FLOOR, elapsed / self.duration)

    def admit(self, backend: Backend) -> bool:
        """Rotation gate: admits a ramping backend on about `factor` of its turns."""
        f = self.factor(backend)
        if f >= 1.0:
            return True
        credit = self._credit.get(backend, 0.0) + f
        if credit >= 1.0:
            self._credit[backend] = credit - 1.0
            return True
        self._credit[backend] = credit
        return False

    def admit_key(self, backend: Backend, gate_hash: int) -> bool:
        """Hashing gate: admits the keys whose 32-bit `gate_hash` is below the factor."""
        f = self.factor(backend)
        return f >= 1.0 or gate_hash < f * _GATE_SCALE

    def admit_random(self, backend: Backend, rng: random.Random) -> bool:
        f = self.factor(backend)
        return f >= 1.0 or rng.random() < f

    def retune_due(self) -> bool:
        """True (once per step) when ramping weights should be refreshed in a score."""
        if not self.since:
            return False
        now = self.clock()
        if now < self._next_retune:
            return False
        self._next_retune = now + self.duration / RAMP_STEPS
        return True
