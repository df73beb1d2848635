"""Weighted random, and power-of-d-choices on active requests (`choices: 2`).

Sources: weighted draws by Vose's alias method (see `alias.py`), O(1) per draw. With
`choices: d >= 2`, d backends are drawn (distinct when possible) and the one with the
fewest active requests per unit of weight wins: M. Mitzenmacher, "The Power of Two
Choices in Randomized Load Balancing", IEEE TPDS 12(10), 2001; as in Nginx's
`random two least_conn` and Traefik's `p2c`. O(d) per selection.

A full backend is drawn again (up to MAX_DRAWS times, then one O(n) scan, which only
happens when nearly every backend is full); a ramping one is admitted with probability
equal to its ramp factor. The generator is injected (`rng`) so tests are deterministic.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from pydantic import Field

from haproxyd.balancer.alias import AliasTable
from haproxyd.balancer.base import Balancer, RequestContext, usable
from haproxyd.balancer.registry import register
from haproxyd.balancer.slow_start import SlowStart, SlowStartOptions
from haproxyd.balancer.state import Backend

MAX_DRAWS = 8


def parse_choices(choices: int | None) -> int:
    if choices is None:
        return 1
    if isinstance(choices, bool) or not isinstance(choices, int) or choices < 1:
        raise ValueError(f"choices must be a positive integer, not {choices!r}")
    return choices


class ChoicesOptions(SlowStartOptions):
    """The options of random and of the least_* algorithms (power of two choices)."""

    choices: int = Field(
        1, ge=1, le=2, description="2 = power of two choices (random / least_* algorithms)."
    )


@register(ChoicesOptions)
class RandomChoice(Balancer):
    name = "random"

    def __init__(
        self,
        *,
        choices: int | None = None,
        slow_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        super().__init__(choices=choices, slow_start=slow_start, **options)
        self.choices = parse_choices(choices)
        self._rng = rng if rng is not None else random.Random()
        self._ramp = SlowStart(slow_start, clock)
        self._table: AliasTable[Backend] | None = None

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        members = usable(backends)
        self.backends = members
        self._ramp.plan(members)
        self._table = (
            AliasTable(members, [b.effective_weight for b in members]) if members else None
        )

    def select(self, ctx: RequestContext | None) -> Backend | None:
        table = self._table
        if table is None:
            return None
        first, second, prob, n = table.first, table.second, table.prob, table.n
        rnd = self._rng.random
        ramp = self._ramp.since
        best = None
        draws = 0
        wanted = self.choices if n > 1 else 1
        # Up to `wanted` usable distinct draws (a few extra draws are allowed to skip full
        # or gated backends and repeats); the fewest active requests per weight wins.
        while wanted and draws < MAX_DRAWS + self.choices:
            draws += 1
            x = rnd() * n
            i = int(x)
            backend = first[i] if x - i < prob[i] else second[i]
            if backend is best or 0 < backend.max_connections <= backend.active:
                continue
            if ramp and backend in ramp and not self._ramp.admit_random(backend, self._rng):
                continue
            wanted -= 1
            if best is None or (
                backend.active * best.effective_weight < best.active * backend.effective_weight
            ):
                best = backend
        return best if best is not None else self._scan()

    def _scan(self) -> Backend | None:
        """Nearly everything is full: the least loaded backend that is not, if any."""
        best = None
        for backend in self.backends:
            if not backend.full and (
                best is None
                or backend.active * best.effective_weight < best.active * backend.effective_weight
            ):
                best = backend
        return best
