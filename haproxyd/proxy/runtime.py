"""What the data plane of one process shares: config, pools, routes, connections, timers.

`ProxyRuntime.apply(config)` builds or updates everything from a validated config; a
reload calls it again and it keeps the `Backend` objects (live state, counters) and the
keep-alive connections of backends whose id and address did not change. Connections read
`runtime.cfg` per request, so a reload takes effect on the next request, never mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from haproxyd.balancer import registry
from haproxyd.balancer.base import Balancer
from haproxyd.balancer.base import create as create_balancer
from haproxyd.balancer.regions import RegionBalancer
from haproxyd.balancer.state import ActiveFilter, Backend, BackendState, PanicSet, Pool
from haproxyd.proxy.h2limits import Http2Limits
from haproxyd.proxy.listener import stop_accepting
from haproxyd.proxy.request import ProxyRuntimeBase, RequestIds, TraceIds
from haproxyd.proxy.resolver import Resolver
from haproxyd.proxy.target import route_host, route_path, split_target
from haproxyd.proxy.upstream import BackendConnections, ProxyPool
from haproxyd.tasks import cancel_and_wait
from haproxyd.tracing.counts import SpanCounts

if TYPE_CHECKING:
    from haproxyd.config.schema import BackendConfig, Config, PoolConfig
    from haproxyd.config.sections.tracing import TracingConfig
    from haproxyd.proxy.client import ClientProtocol
    from haproxyd.proxy.exchange import Exchange
    from haproxyd.tracing.export import SpanExport

log = logging.getLogger("haproxyd.runtime")

# Seconds a stopping process gives its queued spans to reach the collector.
SPAN_FLUSH_TIMEOUT = 2.0

def check_buildable(cfg: Config) -> None:
    """What a valid config can still fail on when the data plane builds it (raises
    ValueError naming the field): run before anything running is touched, and before a
    cluster stores a shared config that its nodes would then fail to apply."""
    for name, pool_cfg in cfg.pools.items():
        try:
            create_balancer(pool_cfg.balancer.algorithm)
        except ValueError as exc:
            raise ValueError(f"pools.{name}.balancer.algorithm: {exc}") from None


class Route:
    """One entry of `routes:` as `ProxyRuntime.route` matches it."""

    __slots__ = ("forward", "host", "pool", "prefix")

    def __init__(self, host: bytes | None, prefix: bytes, forward: bool, pool: ProxyPool) -> None:
        self.host = host  # normalised (target.route_host); None: any host
        self.prefix = prefix  # of the normalised path
        self.forward = forward  # send the normalised path rather than the client's
        self.pool = pool


class ProxyRuntime(ProxyRuntimeBase):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # One bound method for every client connection (`loop.time` makes a new one
        # each time it is read).
        self.clock = loop.time
        self.cfg: Config = None  # type: ignore[assignment]
        # The settings the data plane reads per request, as plain attributes (set by
        # `apply`; declared by ProxyRuntimeBase): each step into a pydantic model goes
        # through its `__getattr__` hook, about 500 instructions.
        self.max_header_bytes = 0
        self.max_body_bytes = 0
        self.connect_timeout = 0.0
        self.header_timeout = 0.0
        self.response_timeout = 0.0
        self.idle_timeout = 0.0
        self.pools: dict[str, ProxyPool] = {}
        self.connections: set[ClientProtocol] = set()
        self.connection_limit = 0  # this process's share of limits.max_connections
        self.worker_count = 1  # processes sharing the listeners (for the share above)
        self.draining = False  # shutting down: no new keep-alive
        self.shedding = False  # node unhealthy with on_unhealthy: shed
        # Trace context of each request; None while tracing is off, the one test the
        # data plane makes then.
        self.tracing: TraceIds | None = None
        # The bounds of client HTTP/2 connections (h2front.py), from `http2:`.
        self.http2_limits = Http2Limits()
        # The spans of sampled requests, to the collector (tracing/export.py); None
        # while tracing is off. Its counts outlive it: a reload may swap it.
        self.span_export: SpanExport | None = None
        self.span_counts = SpanCounts()
        self.rejected: dict[int, int] = {}  # malformed requests answered, by status
        self.resolver: Resolver | None = None
        # Each data-plane server's TLS context (None: plain) and protocol factory, for
        # `stop_accepting` (which serves its backlog on the server's own terms).
        self.server_setup: dict[
            asyncio.Server, tuple[ssl.SSLContext | None, Callable[[], asyncio.Protocol]]
        ] = {}
        # Passive health detection: `(backend, ok, status)` after each backend attempt.
        self.passive_report: Callable[[Backend, bool, int | None], None] | None = None
        self._routes: list[Route] = []
        self._default_pool: ProxyPool | None = None
        # `route`'s answer for every request when the config has no routes (the data
        # plane reads it before it calls `route`); None when there are routes.
        self.only_pool: ProxyPool | None = None
        # Unique per process and start: random prefix, then the pid, then a counter.
        self.request_ids = RequestIds(b"%s-%x" % (os.urandom(4).hex().encode(), os.getpid()))
        self._access_log: IO[str] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # Called with every ended exchange, by the data plane itself (one loop in the
        # compiled client, no call through here): metrics, and the access log when on.
        self.exchange_listeners: list[Callable[[Exchange], None]] = []
        # Attached to every pool built from now on (workers fan-out, cluster sync).
        self.pool_listeners: list[Callable[[Pool], None]] = []

    # -- configuration --

    def apply(self, cfg: Config) -> None:
        """Build or update pools, routes and settings from a validated config."""
        old_pools = self.pools
        pools: dict[str, ProxyPool] = {}
        for name, pool_cfg in cfg.pools.items():
            previous = old_pools.get(name)
            pools[name] = self._build_pool(name, pool_cfg, previous, node_region=cfg.node.region)
        for name, previous in old_pools.items():
            if name not in pools:
                for upstream in previous.upstreams.values():
                    upstream.close()
        routes: list[Route] = []
        for route in cfg.routes:
            host = route_host(route.match.host.encode()) if route.match.host else None
            forward = route.normalize_path == "forward"
            routes.append(Route(host, route.match.path_prefix.encode(), forward, pools[route.pool]))
        self.cfg = cfg
        self.max_header_bytes = cfg.limits.max_header_bytes
        self.max_body_bytes = cfg.limits.max_body_bytes
        timeouts = cfg.timeouts
        self.connect_timeout = timeouts.connect
        self.header_timeout = timeouts.client_header
        self.response_timeout = timeouts.response
        self.idle_timeout = timeouts.idle
        self.connection_limit = -(-cfg.limits.max_connections // self.worker_count)
        self.pools = pools
        self._routes = routes
        self._default_pool = next(iter(pools.values()), None)
        self.only_pool = None if routes else self._default_pool
        http2 = cfg.http2
        self.http2_limits = Http2Limits(
            max_concurrent_streams=http2.max_concurrent_streams,
            initial_window=http2.initial_window,
            max_header_list_size=http2.max_header_list_size,
            max_header_block=cfg.limits.max_header_bytes,
            max_requests=http2.max_requests,
            stall_timeout=http2.stall_timeout,
            idle_timeout=timeouts.idle,
        )
        self._sync_tracing(cfg.tracing)
        self._open_access_log(cfg)
        self._configure_resolver(cfg)

    def sync_pool(
        self,
        name: str,
        items: list[dict[str, Any]],
        selectable: list[str],
        *,
        fallback: str | None = None,
        panic: bool = False,
    ) -> None:
        """Make pool `name` mirror the master's: membership, state and weights of every
        backend, and the exact selectable set (the failover decision, with its panic
        flag and retry fallback), in one refresh. A worker process calls this for every
        state message from the master."""
        pool_runtime = self.pools.get(name)
        if pool_runtime is None:
            return
        pool = pool_runtime.state
        wanted: dict[str, Backend] = {}
        for item in items:
            backend = pool.backends.get(item["id"])
            if backend is None or (backend.host, backend.port) != (item["host"], item["port"]):
                old = pool_runtime.upstreams.pop(item["id"], None)
                if old is not None:
                    old.close()
                backend = Backend(item["id"], item["host"], item["port"], pool_name=name)
                pool_runtime.upstreams[backend.id] = self._new_upstream(pool_runtime, backend)
            for field in _SYNCED_FIELDS:
                setattr(backend, field, item[field])
            state = BackendState(item["state"])
            if backend.state != state:
                backend.state = state
                backend.state_since = time.monotonic()
            wanted[backend.id] = backend
        for gone in set(pool.backends) - set(wanted):
            upstream = pool_runtime.upstreams.pop(gone, None)
            if upstream is not None:
                upstream.close()
        pool.backends = wanted
        pool.set_active_filter(_mirror(tuple(selectable), fallback, panic))

    def _new_upstream(self, pool_runtime: ProxyPool, backend: Backend) -> BackendConnections:
        keepalive = pool_runtime.config.keepalive
        return BackendConnections(
            backend,
            max_idle=keepalive.max_idle,
            idle_timeout=keepalive.idle_timeout,
            max_requests=keepalive.max_requests,
            resolver=self.resolver,
        )

    def _build_pool(
        self,
        name: str,
        cfg: PoolConfig,
        previous: ProxyPool | None,
        *,
        node_region: str | None = None,
    ) -> ProxyPool:
        options = registry.options_of(cfg.balancer)
        if cfg.regions is not None:
            # Per-request region routing: built from config in every process (workers
            # too), one inner balancer of the pool's algorithm per region.
            algorithm = cfg.balancer.algorithm
            balancer: Balancer = RegionBalancer(
                lambda: create_balancer(algorithm, **options),
                cfg.regions,
                node_region=node_region,
            )
        else:
            balancer = create_balancer(cfg.balancer.algorithm, **options)
        old_backends = previous.state.backends if previous else {}
        backends: list[Backend] = []
        for bcfg in cfg.backends:
            backend = old_backends.get(bcfg.id)
            host, port = bcfg.address.host, bcfg.address.port
            if backend is not None and (backend.host, backend.port) == (host, port):
                # Same backend: keep its live state and counters across the reload.
                backend.weight = bcfg.weight
                if backend.effective_weight > bcfg.weight or backend.state != BackendState.UP:
                    backend.effective_weight = min(backend.effective_weight, bcfg.weight)
                else:
                    backend.effective_weight = bcfg.weight
                backend.role = bcfg.role
                backend.region = bcfg.region
                backend.group = bcfg.group
                backend.priority = bcfg.priority
                backend.max_connections = bcfg.max_connections
            else:
                backend = _new_backend(bcfg)
            backends.append(backend)
        # The previous pool's active filter (the failover machine, or a worker's mirror
        # of the master's decision) carries over, so the rebuilt pool never serves by
        # the default rule in between.
        active_filter = previous.state.active_filter if previous is not None else None
        pool = Pool(name, balancer, backends, active_filter=active_filter)
        for callback in self.pool_listeners:
            pool.add_listener(callback)
        runtime = ProxyPool(name, cfg, pool)
        keepalive = cfg.keepalive
        old_upstreams = previous.upstreams if previous else {}
        for backend in backends:
            upstream = old_upstreams.get(backend.id)
            if upstream is not None and upstream.backend is backend:
                upstream.configure(
                    max_idle=keepalive.max_idle,
                    idle_timeout=keepalive.idle_timeout,
                    max_requests=keepalive.max_requests,
                )
            else:
                if upstream is not None:
                    upstream.close()
                upstream = self._new_upstream(runtime, backend)
            runtime.upstreams[backend.id] = upstream
        for backend_id, upstream in old_upstreams.items():
            if runtime.upstreams.get(backend_id) is not upstream:
                upstream.close()
        if backends:
            runtime.default_host = backends[0].address.encode()
        return runtime

    # -- runtime changes (admin API); the pool rebuilds its snapshot on each --

    def add_backend(self, pool_name: str, bcfg: BackendConfig) -> Backend:
        """Add a backend to a live pool. Raises KeyError on an unknown pool or a
        duplicate id (in any pool)."""
        pool = self.pools[pool_name]
        if self.find_backend(bcfg.id) is not None:
            raise KeyError(f"backend {bcfg.id!r} already exists")
        backend = _new_backend(bcfg)
        pool.upstreams[backend.id] = self._new_upstream(pool, backend)
        pool.state.add(backend)
        if self.resolver is not None:
            self.resolver.track(self.resolver.names() | {backend.host})
        return backend

    def remove_backend(self, backend_id: str) -> Backend:
        """Remove a backend from its pool and close its idle connections. In-flight
        requests on it finish (they hold their own references)."""
        found = self.find_backend(backend_id)
        if found is None:
            raise KeyError(f"no backend {backend_id!r}")
        pool, backend = found
        pool.state.remove(backend_id)
        pool.upstreams.pop(backend_id).close()
        return backend

    def find_backend(self, backend_id: str) -> tuple[ProxyPool, Backend] | None:
        for pool in self.pools.values():
            backend = pool.state.backends.get(backend_id)
            if backend is not None:
                return pool, backend
        return None

    def _configure_resolver(self, cfg: Config) -> None:
        hosts = {b.host for p in self.pools.values() for b in p.state.backends.values()}
        settings = cfg.resolver
        if self.resolver is None:
            self.resolver = Resolver(
                interval=settings.interval,
                timeout=settings.timeout,
                nameservers=list(settings.nameservers),
            )
            for pool in self.pools.values():
                for upstream in pool.upstreams.values():
                    upstream.resolver = self.resolver
        else:
            self.resolver.interval = settings.interval
        self.resolver.track(hosts)

    def _sync_tracing(self, settings: TracingConfig) -> None:
        """The trace ids of each request (new ones, with the new sample ratio) and the
        span exporter, started, kept, swapped or stopped as `settings` say. The
        exchange listener is the ids' compiled `ended`, which hands only the sampled
        exchanges to the exporter. A retired exporter flushes in a thread of its own
        (SpanExport.close): the loop never waits for a collector."""
        self._unhook_tracing()
        self.tracing = TraceIds(settings.sample_ratio) if settings.enabled else None
        self.echo_trace_id = settings.enabled and settings.echo_trace_id
        current = self.span_export
        if current is not None and not (settings.enabled and current.sends_to(settings)):
            self.span_export = None
            current.close()
        if self.tracing is not None:
            if self.span_export is None:
                from haproxyd.tracing.export import SpanExport  # the optional extra

                self.span_export = SpanExport(settings, self.span_counts, self.loop.time)
            self.tracing.sink = self.span_export.observe
            self.exchange_listeners.append(self.tracing.ended)

    def _unhook_tracing(self) -> None:
        tracing = self.tracing
        if tracing is not None and tracing.sink is not None:
            self.exchange_listeners.remove(tracing.ended)
            tracing.sink = None

    async def _stop_span_export(self, timeout: float) -> None:
        """Flush the spans still queued for up to `timeout` seconds (polled: the
        flushing thread is a daemon thread, which an exiting process does not join)."""
        self._unhook_tracing()
        current, self.span_export = self.span_export, None
        if current is None:
            return
        thread = current.close(grace=timeout)
        deadline = self.loop.time() + timeout + 0.5
        while thread is not None and thread.is_alive() and self.loop.time() < deadline:
            await asyncio.sleep(0.02)

    def _open_access_log(self, cfg: Config) -> None:
        settings = cfg.access_log
        self._close_access_log()
        if settings.enabled:
            if settings.path in (None, "-"):
                self._access_log = sys.stderr
            else:
                self._access_log = open(settings.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            self.exchange_listeners.append(self._write_access_record)

    def _close_access_log(self) -> None:
        if self._write_access_record in self.exchange_listeners:
            self.exchange_listeners.remove(self._write_access_record)
        if self._access_log is not None and self._access_log is not sys.stderr:
            self._access_log.close()
        self._access_log = None

    # -- per request --

    def route(self, host: bytes | None, url: bytes) -> tuple[ProxyPool | None, bytes]:
        """(the pool serving a request, the target to send: `url` itself unless its
        route forwards the normalised path). Routes match the normalised host and path
        (target.route_host, target.route_path); the first match wins."""
        routes = self._routes
        if not routes:
            return self._default_pool, url
        host_name = route_host(host) if host is not None else None
        path, query = split_target(url)
        normal = route_path(path)
        for route in routes:
            if route.host is not None and route.host != host_name:
                continue
            if normal.startswith(route.prefix):
                if route.forward and normal != path:
                    return route.pool, normal + query
                return route.pool, url
        return None, url

    def count_rejected(self, status: int) -> None:
        self.rejected[status] = self.rejected.get(status, 0) + 1

    def add_exchange_listener(self, callback: Callable[[Exchange], None]) -> None:
        """`callback(exchange)` after every request (metrics, passive health checks)."""
        self.exchange_listeners.append(callback)

    def _write_access_record(self, exchange: Exchange) -> None:
        out = self._access_log
        if out is not None:
            pool = exchange.pool
            backend = exchange.backend
            trace = exchange.trace
            now = exchange.ended or self.loop.time()
            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "client": exchange.client_ip,
                "method": exchange.method.decode("latin-1"),
                "path": exchange.url.decode("latin-1"),
                "status": exchange.status,
                "bytes_in": exchange.body_bytes,
                "bytes_out": exchange.bytes_out,
                "pool": pool.name if pool is not None else None,
                "backend": backend.id if backend is not None else None,
                "attempts": exchange.attempts,
                "connect_time": round(exchange.connect_time, 6),
                "header_time": round(exchange.header_time, 6),
                "total_time": round(now - exchange.start, 6) if exchange.start else 0.0,
                "protocol": _protocol(exchange),
                "request_id": exchange.request_id.decode("latin-1"),
                "termination": exchange.termination,
                # null while tracing is off, so the record keeps one shape
                "trace_id": trace[0].decode() if trace is not None else None,
                "span_id": trace[1].decode() if trace is not None else None,
            }
            out.write(json.dumps(record, separators=(",", ":")) + "\n")

    # -- timers --

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep_forever())
        if self.resolver is not None:
            self.resolver.start()

    async def _sweep_forever(self) -> None:
        """One coarse timer for every connection (instead of a timer per request):
        each tick closes what is past its deadline and expires idle backend connections."""
        while True:
            timeouts = self.cfg.timeouts
            tick = max(
                0.05, min(0.5, timeouts.client_header / 4, timeouts.response / 4, timeouts.idle / 4)
            )
            await asyncio.sleep(tick)
            now = self.loop.time()
            for conn in [c for c in self.connections if c.deadline <= now]:
                conn.on_timeout()
            for pool in self.pools.values():
                for upstream in pool.upstreams.values():
                    if upstream.idle:
                        upstream.expire(now)

    async def drain(self, servers: list[asyncio.Server], timeout: float) -> None:
        """Staged shutdown of the data plane: stop accepting; serve what arrives on idle
        keep-alive connections for `timeouts.drain_grace` (each answer carries
        `Connection: close`), then close the ones still idle; let busy ones finish their
        exchange for up to `timeout` seconds in all, then cut what is left.

        The grace window is Envoy's drain period in small: closing an idle connection at
        the very instant of the signal races with a client that is sending on it, and
        that client gets a reset for a request it cannot know was never seen."""
        self.draining = True
        for server in servers:
            await stop_accepting(self, server)
        started = self.loop.time()
        deadline = started + timeout
        close_idle_at = started + min(self.cfg.timeouts.drain_grace, timeout)
        while True:
            now = self.loop.time()
            if now >= close_idle_at:
                for conn in list(self.connections):
                    if conn.idle():
                        conn.close()
            if not self.connections or now >= deadline:
                break
            await asyncio.sleep(0.05)
        if self.connections:
            log.warning("shutdown timeout: cutting %d connections", len(self.connections))
            for conn in list(self.connections):
                conn.abort()
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        await cancel_and_wait(sweeper)
        if self.resolver is not None:
            await self.resolver.stop()
        for pool in self.pools.values():
            for upstream in pool.upstreams.values():
                upstream.close()
        self._close_access_log()
        await self._stop_span_export(SPAN_FLUSH_TIMEOUT)


def _protocol(exchange: Exchange) -> str:
    """The client's protocol, as the access log names it."""
    if exchange.http2:
        return "HTTP/2"
    return "HTTP/1.0" if exchange.http10 else "HTTP/1.1"


def _new_backend(bcfg: BackendConfig) -> Backend:
    return Backend(
        bcfg.id,
        bcfg.address.host,
        bcfg.address.port,
        weight=bcfg.weight,
        role=bcfg.role,
        region=bcfg.region,
        group=bcfg.group,
        priority=bcfg.priority,
        max_connections=bcfg.max_connections,
        state=BackendState.UP,
    )


# What a worker copies from the master's view of a backend (besides id, address, state).
_SYNCED_FIELDS = (
    "weight",
    "effective_weight",
    "role",
    "region",
    "group",
    "priority",
    "max_connections",
)


def backend_state_message(pool: Pool) -> dict[str, Any]:
    """The master's view of a pool, as `sync_pool` takes it (JSON-serialisable)."""
    items = []
    for backend in pool.backends.values():
        item: dict[str, Any] = {"id": backend.id, "host": backend.host, "port": backend.port}
        for field in _SYNCED_FIELDS:
            item[field] = getattr(backend, field)
        item["state"] = backend.state.value
        items.append(item)
    fallback = pool.retry_fallback
    return {
        "op": "pool",
        "pool": pool.name,
        "backends": items,
        "selectable": [b.id for b in pool.selectable],
        "panic": pool.panic,
        "fallback": fallback.id if fallback is not None else None,
    }


def _mirror(order: tuple[str, ...], fallback: str | None, panic: bool) -> ActiveFilter:
    """A worker's active filter: exactly the master's decision, by backend id."""

    def rule(pool: Pool) -> tuple[Backend, ...]:
        chosen = tuple(pool.backends[i] for i in order if i in pool.backends)
        if panic:
            return PanicSet(chosen)
        if fallback is not None:
            pool.retry_fallback = pool.backends.get(fallback)
        return chosen

    return rule
