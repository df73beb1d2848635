"""Passive outlier detection: eject backends that fail live requests.

After Envoy's outlier detection (`consecutive_5xx`, `base_ejection_time` growing with
each ejection, `max_ejection_percent`, the multiplier decaying while the host behaves)
and Nginx's `max_fails`/`fail_timeout`:

* `consecutive_failures` failed requests in a row (a transport error or timeout, and a
  5xx answer when `on_5xx` is set) eject the backend; any success resets the count.
* The ejection lasts `ejection * 2^(offences-1)`, capped at max(`ejection`, 300 s)
  (Envoy's default `max_ejection_time`). One offence is forgiven per full `ejection`
  period the backend stays admitted, so a backend that fails again soon after it came
  back is ejected for twice as long, and one that behaved for a while starts over.
* Never more than `max_ejection_percent` of the pool's backends are ejected at once
  (floor of the share, no exception for small pools: 50% of a one-backend pool is 0,
  so a lone backend is never ejected). A backend over the cap stays admitted and keeps
  counting; it is ejected at its next failure once there is room.

The detector only decides; `on_change(backend_id, ejected, reason, duration)` applies
the decision (the scheduler takes an ejected backend out of balancing). Re-admission
happens in `tick()`, which the scheduler calls when the earliest ejection ends.
Cost: O(1) per report; `tick` is O(ejected backends).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend, Pool
    from haproxyd.config.sections.health import PassiveConfig

MAX_EJECTION_FLOOR = 300.0  # seconds; the cap is max(ejection, this)


@dataclasses.dataclass(slots=True)
class OutlierRecord:
    """What the detector knows about one backend."""

    consecutive: int = 0  # failed requests in a row
    offences: int = 0  # ejections that still count for the doubling
    ejected_until: float | None = None  # clock time; None when admitted
    readmitted_at: float | None = None
    ejections_total: int = 0
    last_reason: str = ""


class PassiveDetector:
    """Outlier detection for one pool.

    `report` is called by the data plane after every request to a backend of the pool
    (on the event loop, hot path: O(1), no I/O). `tick`, `update` and the queries are
    called by the scheduler or the admin API on the same loop.
    """

    def __init__(
        self,
        pool: Pool,
        config: PassiveConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, bool, str, float], None] | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.on_change = on_change
        self.records: dict[str, OutlierRecord] = {}
        self.ejected: dict[str, float] = {}  # backend id -> ejected until (clock time)
        self.capped = 0  # ejections refused by max_ejection_percent
        self.update(config)

    def update(self, config: PassiveConfig) -> None:
        """New thresholds (config reload); records and current ejections are kept."""
        self.config = config
        self.threshold = config.consecutive_failures
        self.base = config.ejection
        self.max_percent = config.max_ejection_percent
        self.on_5xx = config.on_5xx
        self.max_ejection = max(self.base, MAX_EJECTION_FLOOR)

    # -- the data plane's call ---------------------------------------------------------

    def report(self, backend: Backend | str, ok: bool, status: int | None = None) -> None:
        """One live request to `backend` ended. `ok` is False on a transport error or a
        timeout; `status` is the HTTP status when there was an answer."""
        backend_id = backend if isinstance(backend, str) else backend.id
        record = self.records.get(backend_id)
        failed = not ok or (self.on_5xx and status is not None and status >= 500)
        if not failed:
            if record is not None and record.consecutive:
                record.consecutive = 0
            return
        if record is None:
            record = self.records[backend_id] = OutlierRecord()
        if record.ejected_until is not None:
            return  # a request that started before the ejection
        record.consecutive += 1
        if record.consecutive >= self.threshold:
            what = f"HTTP {status}" if ok and status is not None else "transport errors"
            self._eject(backend_id, record, f"{record.consecutive} consecutive failures ({what})")

    # -- the scheduler's calls ---------------------------------------------------------

    def tick(self) -> float | None:
        """Re-admit backends whose ejection is over; seconds until the next one ends."""
        if not self.ejected:
            return None
        now = self.clock()
        for backend_id, until in list(self.ejected.items()):
            if until <= now:
                del self.ejected[backend_id]
                record = self.records.get(backend_id)
                if record is not None:
                    record.ejected_until = None
                    record.readmitted_at = now
                    record.consecutive = 0
                if self.on_change is not None:
                    self.on_change(backend_id, False, "ejection time over, re-admitted", 0.0)
        if not self.ejected:
            return None
        return max(0.0, min(self.ejected.values()) - now)

    def prune(self, backend_ids: set[str]) -> None:
        """Forget backends that left the pool."""
        for backend_id in list(self.records):
            if backend_id not in backend_ids:
                del self.records[backend_id]
                self.ejected.pop(backend_id, None)

    def is_ejected(self, backend_id: str) -> bool:
        return backend_id in self.ejected

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per backend: consecutive failures, offences, seconds of ejection left."""
        now = self.clock()
        return {
            backend_id: {
                "consecutive_failures": record.consecutive,
                "offences": record.offences,
                "ejected": record.ejected_until is not None,
                "ejected_for": (
                    max(0.0, record.ejected_until - now) if record.ejected_until else 0.0
                ),
                "ejections_total": record.ejections_total,
                "last_reason": record.last_reason,
            }
            for backend_id, record in self.records.items()
        }

    # -- internals ---------------------------------------------------------------------

    def _eject(self, backend_id: str, record: OutlierRecord, reason: str) -> None:
        allowed = math.floor(len(self.pool.backends) * self.max_percent / 100.0 + 1e-9)
        if len(self.ejected) >= allowed:
            self.capped += 1
            record.last_reason = f"{reason}; not ejected: max_ejection_percent reached"
            return
        now = self.clock()
        if record.readmitted_at is not None and self.base > 0:
            forgiven = int((now - record.readmitted_at) // self.base)
            record.offences = max(0, record.offences - forgiven)
        record.offences = min(record.offences + 1, 32)  # the cap is reached long before
        duration = min(self.base * 2 ** (record.offences - 1), self.max_ejection)
        record.ejected_until = now + duration
        record.consecutive = 0
        record.ejections_total += 1
        record.last_reason = f"{reason}; ejected for {duration:g}s"
        self.ejected[backend_id] = record.ejected_until
        if self.on_change is not None:
            self.on_change(backend_id, True, record.last_reason, duration)


class PassiveDetectors:
    """The detectors of every pool with a `passive:` section, and the timer that
    re-admits ejected backends when the earliest ejection ends. Owned by the health
    scheduler, on its loop; `on_change(pool, backend_id, ejected, reason)` is its."""

    def __init__(
        self,
        clock: Callable[[], float],
        on_change: Callable[[str, str, bool, str], None],
    ) -> None:
        self.by_pool: dict[str, PassiveDetector] = {}
        self._clock = clock
        self._on_change = on_change
        self._waiter: asyncio.Future[None] | None = None

    def update(self, pool_name: str, pool: Pool, config: PassiveConfig | None) -> None:
        """The pool's (new) `passive:` section; None turns its detection off. Records
        and ejections of backends still in the pool are kept."""
        if config is None:
            self.by_pool.pop(pool_name, None)
            return
        detector = self.by_pool.get(pool_name)
        if detector is None:
            detector = PassiveDetector(
                pool,
                config,
                clock=self._clock,
                on_change=lambda bid, ejected, reason, duration: self._changed(
                    pool_name, bid, ejected, reason
                ),
            )
            self.by_pool[pool_name] = detector
        else:
            detector.pool = pool
            detector.update(config)
        detector.prune(set(pool.backends))

    def keep_only(self, pool_names: Iterable[str]) -> None:
        """Drop the detectors of pools that are gone."""
        keep = set(pool_names)
        for name in [n for n in self.by_pool if n not in keep]:
            del self.by_pool[name]

    def _changed(self, pool_name: str, backend_id: str, ejected: bool, reason: str) -> None:
        self._on_change(pool_name, backend_id, ejected, reason)
        if ejected and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # a new, maybe earlier, deadline

    def tick(self) -> float | None:
        """Re-admit every backend whose ejection is over; seconds until the next ends."""
        delays = [d for det in list(self.by_pool.values()) if (d := det.tick()) is not None]
        return min(delays) if delays else None

    async def run(self) -> None:
        """Tick whenever the earliest ejection ends (or a new one starts), until
        cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            delay = self.tick()
            self._waiter = loop.create_future()
            handle = None
            if delay is not None:
                handle = loop.call_later(delay, _resolve, self._waiter)
            try:
                await self._waiter
            finally:
                if handle is not None:
                    handle.cancel()
                self._waiter = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
