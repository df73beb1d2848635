"""Request metrics as the admin plane shows them: merged snapshots, and the Prometheus
collector.

The data plane counts each request in proxy/stats.py (`RequestStats`, off the admin
plane, compiled with the data plane). At scrape time `HaproxydCollector`
reads those counters and the live state (`Backend`, `Pool`, the health scheduler, the
event log, the daemon) and builds metric families, the way HAProxy's own exporter
(`addons/promex`) walks its live proxies and servers instead of keeping a second copy.

Several worker processes: each worker's counters live in its own process, so they are
exchanged as plain, JSON-serialisable snapshots. `RequestStats.snapshot(pools)` is one
process's state; `merge(snapshots)` sums them (same buckets everywhere); the collector
and the stats endpoint read only merged snapshots, so a master that gathers its workers'
snapshots (a pipe, or a per-worker file written each second) passes them in through
`snapshots=` and nothing else changes.

`HaproxydCollector.collect` yields the families of one function per family group below
(`_request_families`, `_backend_families`, ...), each reading what it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from haproxyd import __version__
from haproxyd.balancer.state import BackendState
from haproxyd.proxy.stats import BACKEND_COUNTER_FIELDS, BUCKETS, SNAPSHOT_VERSION
from haproxyd.tracing.counts import sum_snapshots

if TYPE_CHECKING:
    from haproxyd.admin.host import AdminHost
    from haproxyd.admin.state import AdminState

def sum_backend_counters(
    lists: Iterable[Iterable[dict[str, Any]]],
) -> dict[tuple[str, str], dict[str, Any]]:
    """Several processes' `backend_counters`, summed by (pool, backend)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for items in lists:
        for b in items:
            key = (b["pool"], b["backend"])
            into = out.get(key)
            if into is None:
                out[key] = dict(b)
            else:
                for name in BACKEND_COUNTER_FIELDS:
                    into[name] += b[name]
    return out


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of several processes into one (same shape as a snapshot).
    Raises ValueError when two snapshots use different buckets."""
    bounds: list[float] | None = None
    series: dict[tuple[str, str], dict[str, Any]] = {}
    backend_lists: list[list[dict[str, Any]]] = []
    newest = 0.0
    for snap in snapshots:
        backend_lists.append(snap["backends"])
        if bounds is None:
            bounds = list(snap["bounds"])
        elif list(snap["bounds"]) != bounds:
            raise ValueError("cannot merge snapshots with different histogram buckets")
        newest = max(newest, float(snap.get("time", 0.0)))
        for s in snap["series"]:
            key = (s["pool"], s["backend"])
            into = series.get(key)
            if into is None:
                series[key] = {
                    "pool": s["pool"],
                    "backend": s["backend"],
                    "codes": dict(s["codes"]),
                    "codes_h2": dict(s.get("codes_h2", {})),
                    "buckets": list(s["buckets"]),
                    "sum": s["sum"],
                    "count": s["count"],
                    "backend_5xx": s["backend_5xx"],
                    "exemplars": list(s.get("exemplars") or [None] * len(s["buckets"])),
                }
                continue
            for field in ("codes", "codes_h2"):
                for code, n in s.get(field, {}).items():
                    into[field][code] = into[field].get(code, 0) + n
            into["buckets"] = [a + b for a, b in zip(into["buckets"], s["buckets"], strict=True)]
            into["sum"] += s["sum"]
            into["count"] += s["count"]
            into["backend_5xx"] += s["backend_5xx"]
            # An exemplar is one example, not a sum: any process's will do.
            for i, exemplar in enumerate(s.get("exemplars") or ()):
                if exemplar is not None:
                    into["exemplars"][i] = exemplar
    return {
        "version": SNAPSHOT_VERSION,
        "bounds": bounds if bounds is not None else list(BUCKETS),
        "time": newest,
        "series": list(series.values()),
        "backends": list(sum_backend_counters(backend_lists).values()),
    }


def quantile(q: float, bounds: list[float], buckets: list[int]) -> float | None:
    """The q-quantile of a fixed-bucket histogram (non-cumulative counts, last = +Inf),
    interpolated linearly inside the bucket, as PromQL's `histogram_quantile` does. A
    rank in the +Inf bucket answers the highest finite bound. None without samples."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index >= len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index > 0 else 0.0
            upper = bounds[index]
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
    return bounds[-1]


def code_class(code: int | str) -> str:
    """The class of a status code ("2xx" for 204); "other" when no status was sent."""
    text = str(code)
    if len(text) == 3 and text[0] in "12345":
        return text[0] + "xx"
    return "other"


class HaproxydCollector(Collector):
    """Builds every `haproxyd_*` family from live state at scrape time."""

    def __init__(self, state: AdminState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        # Tell the registry up front that we describe nothing fixed (it must not call
        # `collect` at registration: the daemon may not be running yet).
        return []

    def collect(self) -> Iterator[Metric]:
        state = self.state
        snap = state.merged_snapshot()
        yield from _request_families(snap)
        yield from _backend_families(state, snap)
        yield from _health_families(state)
        yield from _failover_families(state)
        yield from _config_families(state.host)
        yield from _cluster_families(state)
        yield from _tracing_families(state)
        yield from _process_families(state)


def _exemplar(exemplar: list[Any] | None) -> tuple[Exemplar, ...]:
    """A bucket's exemplar (a sampled traced request's trace id and duration), shown in
    the OpenMetrics exposition only; none: an empty tuple."""
    if exemplar is None:
        return ()
    return (Exemplar({"trace_id": exemplar[0]}, exemplar[1]),)


# A series' status counts by the client's protocol: (snapshot field, `protocol` label).
_PROTOCOL_CODES = (("codes", "http1"), ("codes_h2", "http2"))


def _request_families(snap: dict[str, Any]) -> Iterator[Metric]:
    """Requests and their durations, from the merged snapshot's series."""
    bounds = snap["bounds"]
    requests = CounterMetricFamily(
        "haproxyd_requests",
        "Requests answered, by pool, final backend, status code and the client's protocol "
        '(backend "" = no backend was available; code 0 = the client left first; '
        "protocol http1 or http2).",
        labels=["pool", "backend", "code", "protocol"],
    )
    duration = HistogramMetricFamily(
        "haproxyd_request_duration_seconds",
        "Time from dispatch to the end of the response, by pool and backend.",
        labels=["pool", "backend"],
    )
    for s in sorted(snap["series"], key=lambda s: (s["pool"], s["backend"])):
        labels = [s["pool"], s["backend"]]
        for field, protocol in _PROTOCOL_CODES:
            for code, n in sorted(s.get(field, {}).items()):
                requests.add_metric([*labels, code, protocol], n)
        if s["count"]:
            cumulative = 0
            buckets: list[Any] = []
            exemplars = s.get("exemplars") or [None] * len(s["buckets"])
            for bound, count, exemplar in zip(bounds, s["buckets"], exemplars, strict=False):
                cumulative += count
                buckets.append((_le(bound), cumulative, *_exemplar(exemplar)))
            buckets.append(("+Inf", s["count"], *_exemplar(exemplars[-1])))
            duration.add_metric(labels, buckets, s["sum"])
    yield requests
    yield duration


def _backend_families(state: AdminState, snap: dict[str, Any]) -> Iterator[Metric]:
    """Each live backend's state and weight, and its data-plane counters (summed over
    the processes, from the snapshot); each pool's selectable set."""
    up = GaugeMetricFamily(
        "haproxyd_backend_up",
        "1 when the backend is healthy (up or draining), 0 when down, checking or in maint.",
        labels=["pool", "backend"],
    )
    backend_state = GaugeMetricFamily(
        "haproxyd_backend_state",
        "1 for the backend's current state (checking, up, down, draining, maint).",
        labels=["pool", "backend", "state"],
    )
    active = GaugeMetricFamily(
        "haproxyd_backend_active_connections",
        "Requests in flight to the backend.",
        labels=["pool", "backend"],
    )
    weight = GaugeMetricFamily(
        "haproxyd_backend_weight",
        "Effective weight the balancer uses.",
        labels=["pool", "backend"],
    )
    sent = CounterMetricFamily(
        "haproxyd_backend_attempts",
        "Requests sent to the backend, retries included.",
        labels=["pool", "backend"],
    )
    failures = CounterMetricFamily(
        "haproxyd_backend_failures",
        "Attempts that failed at the transport level (connect, reset, timeout).",
        labels=["pool", "backend"],
    )
    selections = CounterMetricFamily(
        "haproxyd_backend_selections",
        "Times the balancer picked the backend.",
        labels=["pool", "backend"],
    )
    connects = CounterMetricFamily(
        "haproxyd_backend_connects",
        "Connections opened to the backend (its rate is connection churn: with enough "
        "idle connections kept, it stays near zero under steady load).",
        labels=["pool", "backend"],
    )
    selectable = GaugeMetricFamily(
        "haproxyd_pool_selectable_backends",
        "Backends the pool's balancer may currently choose from.",
        labels=["pool"],
    )
    counts = {(b["pool"], b["backend"]): b for b in snap["backends"]}
    for proxy_pool in state.pools():
        pool = proxy_pool.state
        selectable.add_metric([pool.name], len(pool.selectable))
        for b in pool.backends.values():
            labels = [pool.name, b.id]
            healthy = b.state in (BackendState.UP, BackendState.DRAINING)
            up.add_metric(labels, 1 if healthy else 0)
            for s in BackendState:
                backend_state.add_metric([*labels, str(s)], 1 if b.state == s else 0)
            weight.add_metric(labels, b.effective_weight)
            c = counts.get((pool.name, b.id))
            if c is None:
                continue
            active.add_metric(labels, c["active"])
            sent.add_metric(labels, c["sent"])
            failures.add_metric(labels, c["failures"])
            selections.add_metric(labels, c["selections"])
            connects.add_metric(labels, c["connects"])
    yield from (up, backend_state, active, weight, sent, failures, selections, connects)
    yield selectable


def _health_families(state: AdminState) -> Iterator[Metric]:
    """The latest probe duration of each check."""
    health = GaugeMetricFamily(
        "haproxyd_health_check_duration_seconds",
        "Duration of the latest probe of each check (the slowest when a backend has "
        'several checks of one type; pool "" = node checks).',
        labels=["pool", "backend", "type"],
    )
    latest: dict[tuple[str, str, str], float] = {}
    for check in state.health_statuses():
        if check.get("last_check") is None:
            continue
        key = (check["pool"], check["backend"], check["type"])
        latest[key] = max(latest.get(key, 0.0), float(check["latency"]))
    for key, seconds in sorted(latest.items()):
        health.add_metric(list(key), seconds)
    yield health


def _failover_families(state: AdminState) -> Iterator[Metric]:
    """The failover machine's events, counted by pool and strategy."""
    failover = CounterMetricFamily(
        "haproxyd_failover_events",
        "Failover state machine events (failover, failback, manual, panic), by pool.",
        labels=["pool", "strategy"],
    )
    for (pool_name, strategy), n in sorted(state.events.totals().items()):
        failover.add_metric([pool_name, strategy], n)
    yield failover


def _config_families(daemon: AdminHost) -> Iterator[Metric]:
    """Reloads by result, and the running config's version."""
    reloads = CounterMetricFamily(
        "haproxyd_config_reloads",
        "Configuration reloads (SIGHUP and admin config/update), by result.",
        labels=["result"],
    )
    for result in ("ok", "error"):
        reloads.add_metric([result], daemon.reloads.get(result, 0))
    yield reloads
    yield GaugeMetricFamily(
        "haproxyd_config_version", "Version of the running config.", daemon.config_version
    )


def _cluster_families(state: AdminState) -> Iterator[Metric]:
    """Leadership, the nodes by state, Redis and the term (a standalone node: itself)."""
    cluster = state.cluster_status()
    yield GaugeMetricFamily(
        "haproxyd_cluster_is_leader",
        "1 when this node is the cluster leader (a standalone node leads itself).",
        value=1 if cluster["is_leader"] else 0,
    )
    nodes = GaugeMetricFamily("haproxyd_cluster_nodes", "Cluster nodes by state.", labels=["state"])
    by_state: dict[str, int] = {"up": 0, "lost": 0}
    for node in cluster["nodes"]:
        by_state[node["state"]] = by_state.get(node["state"], 0) + 1
    for name, n in sorted(by_state.items()):
        nodes.add_metric([name], n)
    yield nodes
    redis = cluster.get("redis")
    if redis is not None:  # cluster mode only
        yield GaugeMetricFamily(
            "haproxyd_cluster_redis_up",
            "1 when this node's last heartbeat reached the cluster's Redis.",
            value=1 if redis.get("reachable") else 0,
        )
    yield GaugeMetricFamily(
        "haproxyd_cluster_term",
        "The newest leader term this node has seen (0: standalone).",
        value=cluster["term"],
    )


def _tracing_families(state: AdminState) -> Iterator[Metric]:
    """Spans exported and dropped, summed over this process and its workers (each
    process exports the spans of the requests it served: tracing/export.py)."""
    runtime = state.host.runtime
    snapshots = [runtime.span_counts.snapshot()] if runtime is not None else []
    if state.worker_snapshots is not None:
        snapshots.extend(s["tracing"] for s in state.worker_snapshots() if "tracing" in s)
    counts = sum_snapshots(snapshots)
    yield CounterMetricFamily(
        "haproxyd_tracing_spans_exported",
        "Spans the collector accepted (OTLP/HTTP).",
        value=counts["exported"],
    )
    dropped = CounterMetricFamily(
        "haproxyd_tracing_spans_dropped",
        "Spans of sampled requests that never reached the collector, by reason: "
        "queue_full (the export queue was full), export_failed (the collector refused "
        "or did not answer in time).",
        labels=["reason"],
    )
    for reason, n in sorted(counts["dropped"].items()):  # type: ignore[attr-defined]
        dropped.add_metric([reason], n)
    yield dropped


def _process_families(state: AdminState) -> Iterator[Metric]:
    """The data plane's refused requests and client connections, summed over this
    process and its workers (their last reports, and those of workers gone: counters
    never go down), and the build."""
    daemon = state.host
    runtime = daemon.runtime
    if runtime is not None:
        rejected = CounterMetricFamily(
            "haproxyd_rejected_requests",
            "Malformed requests the proxy answered itself, by status.",
            labels=["code"],
        )
        totals: dict[int, int] = {}
        sources = [runtime.rejected]
        if daemon.workers is not None:
            sources += [s.get("rejected", {}) for s in daemon.workers.snapshots()]
        for source in sources:
            for code, n in source.items():  # (a worker's keys came through JSON: str)
                totals[int(code)] = totals.get(int(code), 0) + n
        for code, n in sorted(totals.items()):
            rejected.add_metric([str(code)], n)
        yield rejected
        yield GaugeMetricFamily(
            "haproxyd_client_connections",
            "Open client connections.",
            value=state.client_connections(),
        )
    yield GaugeMetricFamily(
        "haproxyd_start_time_seconds",
        "When the daemon started (seconds since the epoch).",
        value=daemon.started,
    )
    info = GaugeMetricFamily(
        "haproxyd_build_info", "Always 1; the labels say what runs.", labels=["version"]
    )
    info.add_metric([__version__], 1)
    yield info


def _le(bound: float) -> str:
    return repr(float(bound))
