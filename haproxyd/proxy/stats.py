"""Per-request counters of one process: what the data plane counts as each request ends.

`RequestStats.observe(exchange)` runs once per finished request (one exchange listener
of the runtime). It touches only plain ints in a per-(pool, backend) `Series`: a
status-code table and a fixed-bucket latency histogram (`BUCKETS`, upper bounds). No
prometheus-client object is touched per request: the admin plane (admin/metrics.py)
reads these counters at scrape time.

Several worker processes: each worker's counters live in its own process, so they are
exchanged as plain, JSON-serialisable snapshots. `RequestStats.snapshot(pools)` is one
process's state (with `backend_counters`, its data-plane gauges); admin/metrics.py's
`merge` sums them.

Compiled (setup.py), `Series` and `RequestStats` are extension types with the fields
`stats.pxd` declares (an attribute added here must be declared there too), and
`observe` takes only a real `Exchange`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haproxyd.proxy.exchange import Exchange
    from haproxyd.proxy.upstream import ProxyPool

# Upper bounds (seconds) of the latency buckets: Prometheus' defaults widened at both
# ends (a proxy sees sub-millisecond local answers and multi-second slow ones).
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

SNAPSHOT_VERSION = 1


class Series:
    """Counters of one (pool, backend). `backend` is "" for requests that never got a
    backend (503 no backend available); pool "" for requests that matched no route."""

    __slots__ = ("backend_5xx", "buckets", "codes", "codes_h2", "count", "exemplars", "sum")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}  # final status sent to the client -> count
        self.codes_h2: dict[int, int] = {}  # the same, of requests that came over HTTP/2
        self.buckets = [0] * (len(BUCKETS) + 1)  # non-cumulative; the last is +Inf
        # Per bucket, the last sampled traced request that fell in it: (trace id, its
        # duration), or None. OpenMetrics exemplars: a latency panel links to a trace.
        self.exemplars: list[tuple[bytes, float] | None] = [None] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0  # observations in the histogram (dispatched requests)
        self.backend_5xx = 0  # 5xx answered by the backend itself (not the proxy's own)


class RequestStats:
    """Per-process request counters. `observe` is the exchange listener (hot path);
    the rest is for the admin API, on the same loop."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.series: dict[tuple[str, str], Series] = {}
        # The hot path's index: the exchange's Backend object (or, for a request that
        # got none, its ProxyPool, or None without a route) -> its Series, so that
        # `observe` builds no key. Rebuilt from `series` when it may have gone stale.
        self._by_object: dict[object, Series] = {}
        self._bounds = BUCKETS  # a typed field when compiled: `observe` reads it in C

    def observe(self, exchange: Exchange) -> None:
        backend = exchange.backend
        series = self._by_object.get(backend if backend is not None else exchange.pool)
        if series is None:
            series = self._series_of(exchange)
        status = exchange.status
        codes = series.codes_h2 if exchange.http2 else series.codes
        if status in codes:
            codes[status] += 1
        else:
            codes[status] = 1
        if status >= 500 and exchange.termination == "ok":
            series.backend_5xx += 1
        start = exchange.start
        if start:
            elapsed = (exchange.ended or self._clock()) - start
            # bisect_left(BUCKETS, elapsed), as a C loop when compiled (a call to
            # bisect costs ten times more); most requests stop at the first bounds.
            bounds = self._bounds
            n = len(bounds)
            i = 0
            while i < n:
                bound = bounds[i]
                if bound >= elapsed:
                    break
                i += 1
            series.buckets[i] += 1
            series.sum += elapsed
            series.count += 1
            trace = exchange.trace
            if trace is not None and trace[3]:  # tracing on, and this request sampled
                series.exemplars[i] = (trace[0], elapsed)

    def _series_of(self, exchange: Exchange) -> Series:
        pool = exchange.pool
        backend = exchange.backend
        key = (pool.name if pool is not None else "", backend.id if backend is not None else "")
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        index = self._by_object
        if len(index) > 2 * len(self.series) + 64:
            index.clear()  # objects of removed or reloaded backends: drop them
        index[backend if backend is not None else pool] = series
        return series

    def forget(self, pool: str, backend: str) -> None:
        """Drop a removed backend's series (so label sets stay bounded under churn)."""
        if self.series.pop((pool, backend), None) is not None:
            self._by_object.clear()

    def snapshot(self, pools: Iterable[ProxyPool] = ()) -> dict[str, Any]:
        """This process's counters plus its data-plane gauges of the live backends of
        `pools`, as plain JSON-serialisable data (see `merge`)."""
        series = []
        for (pool, backend), s in self.series.items():
            series.append(
                {
                    "pool": pool,
                    "backend": backend,
                    "codes": {str(code): n for code, n in s.codes.items()},
                    "codes_h2": {str(code): n for code, n in s.codes_h2.items()},
                    "buckets": list(s.buckets),
                    "sum": s.sum,
                    "count": s.count,
                    "backend_5xx": s.backend_5xx,
                    "exemplars": [
                        None if e is None else [e[0].decode(), e[1]] for e in s.exemplars
                    ],
                }
            )
        return {
            "version": SNAPSHOT_VERSION,
            "bounds": list(BUCKETS),
            "time": time.time(),
            "series": series,
            "backends": backend_counters(pools),
        }


BACKEND_COUNTER_FIELDS = ("active", "sent", "failures", "selections", "connects")


def backend_counters(pools: Iterable[ProxyPool]) -> list[dict[str, Any]]:
    """This process's data-plane counters of every live backend of `pools` (the
    `backends` of a snapshot, and what a worker answers when the master asks now)."""
    return [
        {
            "pool": runtime.name,
            "backend": b.id,
            "active": b.active,
            "sent": b.requests,
            "failures": b.failures,
            "selections": b.selections,
            "connects": runtime.upstreams[b.id].connects,
        }
        for runtime in pools
        for b in runtime.state.backends.values()
    ]
