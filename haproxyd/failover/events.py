"""The failover event log: what the failover machine (and a manual trigger) did, and why.

A bounded ring (HAProxy keeps its last state changes in a fixed-size ring too): old
events fall off the end, but the per-(pool, strategy) totals behind
`haproxyd_failover_events_total` keep counting, so a scrape never sees a counter go
down because the ring wrapped. Everything runs on the event loop of the process that
owns the pools: no locks.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SIZE = 1000


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """One entry. `kind` says what happened (e.g. "failover", "failback", "panic",
    "manual"); `backend` is the backend it concerns, or None for a pool-wide event;
    `details` holds whatever else the author attached (strategy, from/to sets, ...).
    `time` is wall-clock seconds since the epoch; `id` grows by one per event."""

    id: int
    time: float
    kind: str
    pool: str
    backend: str | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def strategy(self) -> str:
        return str(self.details.get("strategy") or "unknown")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "kind": self.kind,
            "pool": self.pool,
            "backend": self.backend,
            "reason": self.reason,
            "strategy": self.strategy,
            "details": dict(self.details),
        }


class EventLog:
    """Bounded, newest-first event log with monotonic per-(pool, strategy) totals.

    `append` is called by the failover state machine and the admin API's manual
    trigger; `list`, `totals` and `__len__` by the admin API, the metrics collector and
    the status page. Subscribers (cluster sync, later) get each event after it is stored.
    """

    def __init__(self, size: int = DEFAULT_SIZE, *, clock: Callable[[], float] = time.time) -> None:
        if size < 1:
            raise ValueError("an event log needs room for at least one event")
        self._events: deque[FailoverEvent] = deque(maxlen=size)
        self._totals: dict[tuple[str, str], int] = {}
        self._ids = itertools.count(1)
        self._clock = clock
        self._subscribers: list[Callable[[FailoverEvent], None]] = []

    @property
    def size(self) -> int:
        return self._events.maxlen or 0

    def append(
        self, kind: str, pool: str, backend: str | None, reason: str, **details: Any
    ) -> FailoverEvent:
        """Record an event; pass `strategy=` in `details` so the metric is labelled."""
        event = FailoverEvent(
            id=next(self._ids),
            time=self._clock(),
            kind=kind,
            pool=pool,
            backend=backend,
            reason=reason,
            details=details,
        )
        self._events.append(event)
        key = (pool, event.strategy)
        self._totals[key] = self._totals.get(key, 0) + 1
        for callback in list(self._subscribers):
            callback(event)
        return event

    def list(
        self, limit: int | None = None, *, pool: str | None = None, kind: str | None = None
    ) -> list[FailoverEvent]:
        """Events newest first, optionally filtered, at most `limit` of them."""
        out: list[FailoverEvent] = []
        for event in reversed(self._events):
            if pool is not None and event.pool != pool:
                continue
            if kind is not None and event.kind != kind:
                continue
            out.append(event)
            if limit is not None and len(out) >= limit:
                break
        return out

    def totals(self) -> dict[tuple[str, str], int]:
        """Events ever appended per (pool, strategy), including those the ring dropped."""
        return dict(self._totals)

    def subscribe(self, callback: Callable[[FailoverEvent], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[FailoverEvent]:
        """Newest first, like `list`."""
        return reversed(self._events)
