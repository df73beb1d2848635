"""Helpers of the failover tests: a fake clock and a pool driven by a real machine.

Backends are given as dicts: `{"id": "p1", "role": "backup", "priority": 1, "weight":
2, "group": "g1", "region": "eu", "state": "checking"}` (only `id` is required; the
state defaults to up). Nothing here sleeps: time moves only by `clock.advance`, and
timers fire only when a test calls `machine.tick()` (via `Harness.advance`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from helpers.clock import FakeClock

from haproxyd.balancer.base import create
from haproxyd.balancer.state import Backend, BackendState, Pool
from haproxyd.config.schema import FailoverConfig
from haproxyd.failover.events import EventLog
from haproxyd.failover.machine import FailoverMachine


class Ctx:
    """A minimal request context for the balancer."""

    __slots__ = ("client_ip", "url")

    def __init__(self, n: int = 0) -> None:
        self.client_ip = f"192.0.2.{n % 250}"
        self.url = f"/r{n}".encode()

    def header(self, name: bytes) -> bytes | None:
        return None


def make_backend(spec: dict[str, Any]) -> Backend:
    return Backend(
        spec["id"],
        "127.0.0.1",
        spec.get("port", 1),
        weight=spec.get("weight", 1),
        role=spec.get("role", "primary"),
        region=spec.get("region"),
        group=spec.get("group"),
        priority=spec.get("priority", 0),
        state=BackendState(spec.get("state", "up")),
    )


def make_pool(
    backends: list[dict[str, Any]], name: str = "web", algorithm: str = "round_robin"
) -> Pool:
    return Pool(name, create(algorithm), [make_backend(s) for s in backends])


class Harness:
    def __init__(
        self,
        clock: FakeClock,
        backends: list[dict[str, Any]],
        settings: dict[str, Any],
        *,
        name: str = "web",
        algorithm: str = "round_robin",
    ) -> None:
        self.clock = clock
        self.events = EventLog(clock=clock)
        self.machine = FailoverMachine(self.events, clock=clock, wall=clock)
        self.settings = FailoverConfig(**settings)
        self.pool = make_pool(backends, name, algorithm)
        self.machine.attach({name: self.pool}, {name: self.settings})

    # -- driving --

    def set(self, backend_id: str, state: str) -> None:
        """What the health scheduler (or the admin API) does to a backend."""
        self.pool.set_state(backend_id, BackendState(state))

    def flip(self, backend_id: str, times: int, step: float = 1.0) -> None:
        """`times` up/down transitions, `step` seconds apart, starting from its state."""
        for _ in range(times):
            self.clock.advance(step)
            now = self.pool.backends[backend_id].state
            self.set(backend_id, "down" if now == BackendState.UP else "up")

    def advance(self, seconds: float) -> None:
        """Move time, firing every timer that falls due on the way, in order."""
        end = self.clock.now + seconds
        while True:
            delay = self.machine.next_delay()
            if delay is None or self.clock.now + delay > end:
                break
            self.clock.advance(delay)
            self.machine.tick()
        self.clock.now = end
        self.machine.tick()

    # -- observing --

    @property
    def active(self) -> list[str]:
        return [b.id for b in self.pool.selectable]

    @property
    def decision(self) -> Any:
        return self.machine.decision(self.pool.name)

    @property
    def fallback(self) -> str | None:
        backend = self.pool.retry_fallback
        return backend.id if backend is not None else None

    def kinds(self) -> list[str]:
        """Event kinds, oldest first."""
        return [e.kind for e in reversed(self.events.list())]

    def served(self, requests: int = 200) -> Counter[str]:
        """Which backends the pool's balancer picks over `requests` selections."""
        out: Counter[str] = Counter()
        for n in range(requests):
            backend = self.pool.select(Ctx(n))
            out[backend.id if backend is not None else None] += 1
        return out
