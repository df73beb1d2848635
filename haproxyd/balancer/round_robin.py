"""Round robin: strict rotation over the selectable backends, weights ignored.

Source: HAProxy `balance static-rr` / Nginx's unweighted round robin. O(1) per
selection; a full backend (`max_connections` reached) or a ramping one (slow start)
loses its turn, so a selection visits at most n backends when most are full.

The rotation stays even across changes: on `rebuild` (O(n)) the cursor moves to just
after the backend chosen last, wherever it now sits (or to the first backend that
followed it, if it left), instead of keeping a bare index that would point elsewhere
once a backend left or came back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from haproxyd.balancer.base import Balancer, RequestContext, register, usable
from haproxyd.balancer.slow_start import SlowStart
from haproxyd.balancer.state import Backend


class RoundRobin(Balancer):
    name = "round_robin"

    def __init__(
        self,
        *,
        slow_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(slow_start=slow_start, **options)
        self._ramp = SlowStart(slow_start, clock)
        self._next = 0

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        old = self.backends
        members = usable(backends)
        if old and members:
            # Resume right after the backend chosen last; if it left, at the first backend
            # that followed it and is still here.
            position = {b: i for i, b in enumerate(members)}
            last = (self._next - 1) % len(old)
            if old[last] in position:
                self._next = position[old[last]] + 1
            else:
                for step in range(1, len(old)):
                    following = old[(last + step) % len(old)]
                    if following in position:
                        self._next = position[following]
                        break
        self.backends = members
        if members:
            self._next %= len(members)
        else:
            self._next = 0
        self._ramp.plan(members)

    def select(self, ctx: RequestContext | None) -> Backend | None:
        backends = self.backends
        n = len(backends)
        i = self._next
        ramp = self._ramp.since
        fallback = None
        for _ in range(n):
            if i >= n:
                i = 0
            backend = backends[i]
            i += 1
            if backend.at_capacity():
                continue
            if ramp and backend in ramp and not self._ramp.admit(backend):
                if fallback is None:
                    fallback = backend
                continue
            self._next = i
            return backend
        return fallback


# Registered by a call, not a decorator: compiled, this is an extension type, which
# takes no decorators.
register(RoundRobin)
