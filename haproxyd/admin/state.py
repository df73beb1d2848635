"""Read side of the admin API: JSON views built from live state on every call.

Nothing here is cached: each view walks the process's live objects (`ProxyRuntime`,
`Pool`, `Backend`, the health scheduler, the event log) when asked, so the admin API,
the status page and `/metrics` never drift from what the data plane does. The field
names are the API's contract (see `openapi.py`); add fields, never rename them.

The process is reached through `AdminHost` (host.py), not the daemon class: its optional
parts are None until they run, and every view reads them per call:

* `host.health`: a `HealthScheduler` (statuses, backend_health, verdict, node_status);
* `host.events`: the failover `EventLog`;
* `host.cluster`: the `ClusterManager`, whose `status()` is the cluster view (see
  `cluster_status`); None on a standalone node;
* `host.failover`: the failover state machine (`FailoverMachine`): `describe(pool)`
  for the pool summaries, `trigger(...)` for `POST failover/trigger`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from haproxyd import __version__
from haproxyd.admin.metrics import code_class, merge, quantile, sum_backend_counters
from haproxyd.balancer.state import Backend, BackendState
from haproxyd.failover.events import EventLog
from haproxyd.proxy.stats import BACKEND_COUNTER_FIELDS, RequestStats, backend_counters

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from haproxyd.admin.host import AdminHost
    from haproxyd.proxy.upstream import ProxyPool

CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")

# (pool, backend id) -> {"active", "sent", "failures", "selections", ...}
BackendCounters = dict[tuple[str, str], dict[str, Any]]


class AdminState:
    """What the admin handlers and the collector share: the host, the request
    counters, the event log. Created by `AdminServer.start` on the host's loop."""

    def __init__(self, host: AdminHost, loop: asyncio.AbstractEventLoop) -> None:
        self.host = host
        self.stats = RequestStats(loop.time)
        self.events: EventLog = host.events
        # Snapshots of other worker processes (a master sets this once workers exist).
        self.worker_snapshots: Callable[[], list[dict[str, Any]]] | None = None
        # Their backend counters, asked now (`WorkerSet.live_counters`; same owner).
        self.worker_counters: Callable[[], Awaitable[list[list[dict[str, Any]]]]] | None = None
        self.lock = asyncio.Lock()  # serialises config updates
        self.admin_address: str | None = None  # the bound admin address, once listening

    # -- live objects ----------------------------------------------------------------

    @property
    def health(self) -> Any:
        return self.host.health

    def pools(self) -> list[ProxyPool]:
        runtime = self.host.runtime
        return list(runtime.pools.values()) if runtime is not None else []

    def find_pool(self, name: str) -> ProxyPool | None:
        runtime = self.host.runtime
        return runtime.pools.get(name) if runtime is not None else None

    def find_backend(self, backend_id: str) -> tuple[ProxyPool, Backend] | None:
        runtime = self.host.runtime
        return runtime.find_backend(backend_id) if runtime is not None else None

    def merged_snapshot(self) -> dict[str, Any]:
        snapshots = [self.stats.snapshot(self.pools())]
        if self.worker_snapshots is not None:
            snapshots.extend(self.worker_snapshots())
        return merge(snapshots)

    async def live_counters(self) -> BackendCounters:
        """Per (pool, backend): requests in flight, sent, failures and selections of
        this process and every worker, as they are now (what a drain waits on)."""
        lists = [backend_counters(self.pools())]
        if self.worker_counters is not None:
            lists.extend(await self.worker_counters())
        return sum_backend_counters(lists)

    # -- views -------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        cfg = self.host.config
        node_health = self.node_health()
        counters = await self.live_counters()
        pools = []
        for pool_runtime in self.pools():
            pool = pool_runtime.state
            states = {str(s): 0 for s in BackendState}
            for b in pool.backends.values():
                states[str(b.state)] += 1
            pools.append(
                {
                    "name": pool.name,
                    "algorithm": pool_runtime.config.balancer.algorithm,
                    "strategy": pool_runtime.config.failover.strategy,
                    "backends": len(pool.backends),
                    "up": states["up"],
                    "selectable": len(pool.selectable),
                    "active": sum(
                        counters.get((pool.name, b.id), _NO_COUNTERS)["active"]
                        for b in pool.backends.values()
                    ),
                    "states": states,
                    "healthy": bool(pool.selectable),
                    "decision": self.decision(pool.name),
                }
            )
        cluster = self.cluster_status()
        now = time.time()
        return {
            "node_id": cfg.node.id,
            "region": cfg.node.region,
            "role": cluster["role"],
            "version": __version__,
            "pid": os.getpid(),
            "started": self.host.started,
            "uptime": round(now - self.host.started, 3),
            "config_version": self.host.config_version,
            "config_path": str(self.host.config_path) if self.host.config_path else None,
            "environment": cfg.environment,
            "healthy": node_health["healthy"] and all(p["healthy"] for p in pools),
            "node_health": node_health,
            "reloads": dict(self.host.reloads),
            "last_reload": dict(self.host.last_reload),
            "workers": self._workers_view(),
            "connections": self.client_connections(),
            "pools": pools,
        }

    def _workers_view(self) -> dict[str, Any]:
        workers = self.host.workers
        if workers is None:
            return {"mode": "single", "count": 1, "pids": [os.getpid()], "restarts": 0}
        return {
            "mode": "master",
            "count": workers.count,
            "pids": workers.pids(),
            "applied_versions": workers.applied_versions(),
            "restarts": workers.restarts,
        }

    def client_connections(self) -> int:
        """Open client connections, this process's and its workers' (last reports)."""
        runtime = self.host.runtime
        count = len(runtime.connections) if runtime is not None else 0
        if self.host.workers is not None:
            count += sum(s.get("connections", 0) for s in self.host.workers.snapshots())
        return count

    def node_health(self) -> dict[str, Any]:
        health = self.health
        if health is None or not hasattr(health, "node_status"):
            return {"healthy": True, "reasons": []}
        node = health.node_status()
        return {"healthy": bool(node.healthy), "reasons": [str(r) for r in node.reasons]}

    def backend_view(
        self, pool_runtime: ProxyPool, backend: Backend, counters: BackendCounters
    ) -> dict[str, Any]:
        """`counters`: `live_counters()` (summed over the workers)."""
        pool = pool_runtime.state
        counts = counters.get((pool.name, backend.id), _NO_COUNTERS)
        return {
            "id": backend.id,
            "pool": pool.name,
            "address": backend.address,
            "weight": backend.weight,
            "effective_weight": backend.effective_weight,
            "role": backend.role,
            "region": backend.region,
            "group": backend.group,
            "priority": backend.priority,
            "max_connections": backend.max_connections,
            "state": str(backend.state),
            "state_age": round(max(0.0, time.monotonic() - backend.state_since), 3),
            "selectable": backend in pool.selectable,
            "active": counts["active"],
            "requests": counts["sent"],
            "failures": counts["failures"],
            "selections": counts["selections"],
            "health": self.backend_health(pool.name, backend),
        }

    def backend_health(self, pool_name: str, backend: Backend) -> dict[str, Any]:
        health = self.health
        if health is None or not hasattr(health, "backend_health"):
            verdict = "down" if backend.state == BackendState.DOWN else "up"
            return {"verdict": verdict, "ejected": False, "passive": None, "checks": []}
        data = health.backend_health(pool_name, backend.id)
        return {
            "verdict": str(data.get("verdict", "up")),
            "ejected": bool(data.get("ejected", False)),
            "passive": data.get("passive"),
            "checks": [
                {
                    "type": str(c.get("type", "")),
                    "name": str(c.get("name", "")),
                    "status": str(c.get("status", "")),
                    "reason": str(c.get("reason", "")),
                }
                for c in data.get("checks", ())
            ],
        }

    async def backends(self, pool_name: str | None = None) -> list[dict[str, Any]]:
        counters = await self.live_counters()
        out = []
        for pool_runtime in self.pools():
            if pool_name is not None and pool_runtime.name != pool_name:
                continue
            for backend in pool_runtime.state.backends.values():
                out.append(self.backend_view(pool_runtime, backend, counters))
        return out

    def lb_stats(self, pool_name: str | None = None) -> dict[str, Any]:
        snap = self.merged_snapshot()
        bounds = snap["bounds"]
        series = {(s["pool"], s["backend"]): s for s in snap["series"]}
        counts = {(b["pool"], b["backend"]): b for b in snap["backends"]}
        pools = []
        for pool_runtime in self.pools():
            pool = pool_runtime.state
            if pool_name is not None and pool.name != pool_name:
                continue
            backends = []
            pool_buckets = [0] * (len(bounds) + 1)
            pool_sum = 0.0
            pool_codes = dict.fromkeys(CODE_CLASSES, 0)
            totals = {"requests": 0, "errors": 0, "active": 0, "selections": 0, "failures": 0}
            for b in pool.backends.values():
                s = series.get((pool.name, b.id))
                c = counts.get((pool.name, b.id), {})
                view = _series_view(s, bounds)
                failures = int(c.get("failures", b.failures))
                backends.append(
                    {
                        "id": b.id,
                        "state": str(b.state),
                        "weight": b.weight,
                        "effective_weight": b.effective_weight,
                        "requests": view["requests"],
                        # 5xx the backend answered + attempts that failed in transport
                        # (the proxy's own 502/504 for such a failure counted once).
                        "errors": view["backend_5xx"] + failures,
                        "failures": failures,
                        "attempts": int(c.get("sent", b.requests)),
                        "active": int(c.get("active", b.active)),
                        "selections": int(c.get("selections", b.selections)),
                        "ewma": round(b.ewma, 6),
                        "latency": view["latency"],
                        "codes": view["codes"],
                    }
                )
                row = backends[-1]
                for name in totals:
                    totals[name] += row[name]
                if s is not None:
                    pool_buckets = [x + y for x, y in zip(pool_buckets, s["buckets"], strict=True)]
                    pool_sum += s["sum"]
                for name, n in view["codes"].items():
                    pool_codes[name] += n
            # Requests for which no backend was available (503) belong to the pool only.
            orphan = _series_view(series.get((pool.name, "")), bounds)
            totals["requests"] += orphan["requests"]
            totals["errors"] += orphan["codes"]["5xx"]
            for name, n in orphan["codes"].items():
                pool_codes[name] += n
            pools.append(
                {
                    "name": pool.name,
                    "algorithm": pool_runtime.config.balancer.algorithm,
                    **totals,
                    "no_backend": orphan["requests"],
                    "latency": _latency(bounds, pool_buckets, pool_sum),
                    "codes": pool_codes,
                    "backends": backends,
                }
            )
        unrouted = _series_view(series.get(("", "")), bounds)
        return {
            "time": time.time(),
            "pools": pools,
            "unrouted": {"requests": unrouted["requests"], "codes": unrouted["codes"]},
        }

    def health_statuses(
        self, pool: str | None = None, backend: str | None = None
    ) -> list[dict[str, Any]]:
        health = self.health
        if health is None:
            return []
        out = []
        for c in health.statuses(pool, backend):
            last_ok = c.last_ok
            out.append(
                {
                    "pool": c.pool,
                    "backend": c.backend,
                    "target": c.address,
                    "type": c.type,
                    "name": c.name,
                    "status": c.status,
                    "state": c.state,
                    "last_result": None if last_ok is None else ("pass" if last_ok else "fail"),
                    "last_reason": c.last_reason,
                    "latency": round(float(c.last_latency), 6),
                    "last_check": c.last_check,
                    "last_change": c.last_change,
                    "consecutive_passes": c.consecutive_passes,
                    "consecutive_fails": c.consecutive_fails,
                    "checks_total": c.checks_total,
                    "failures_total": c.failures_total,
                    "paused": c.paused,
                    "interval": c.interval,
                    "node": c.node,
                }
            )
        return out

    def cluster_status(self) -> dict[str, Any]:
        cluster = self.host.cluster
        if cluster is not None and hasattr(cluster, "status"):
            return cluster.status()
        cfg = self.host.config
        node_id = cfg.node.id
        return {
            "enabled": bool(cfg.cluster.enabled),
            "mode": "standalone",
            "node_id": node_id,
            "role": "standalone",
            "is_leader": True,
            "leader": node_id,
            "term": 0,
            "quorum": cfg.cluster.quorum_size,
            "has_quorum": True,
            "nodes": [
                {
                    "id": node_id,
                    "address": self.admin_address or str(cfg.admin.address),
                    "region": cfg.node.region,
                    "state": "up",
                    "role": "standalone",
                    "self": True,
                    "last_seen": time.time(),
                }
            ],
        }

    def decision(self, pool: str) -> dict[str, Any] | None:
        """The failover machine's decision for `pool` (None without a machine)."""
        machine = self.host.failover
        return machine.describe(pool) if machine is not None else None

    def failover_events(self, limit: int, pool: str | None = None) -> dict[str, Any]:
        events = self.events.list(limit, pool=pool)
        return {
            "events": [e.to_dict() for e in events],
            "returned": len(events),
            "stored": len(self.events),
            "capacity": self.events.size,
        }


def _series_view(s: dict[str, Any] | None, bounds: list[float]) -> dict[str, Any]:
    codes = dict.fromkeys(CODE_CLASSES, 0)
    if s is None:
        return {
            "requests": 0,
            "backend_5xx": 0,
            "codes": codes,
            "latency": _latency(bounds, [], 0.0),
        }
    requests = 0
    for field in ("codes", "codes_h2"):  # (either protocol's answers)
        for code, n in s.get(field, {}).items():
            codes[code_class(code)] += n
            requests += n
    return {
        "requests": requests,
        "backend_5xx": s["backend_5xx"],
        "codes": codes,
        "latency": _latency(bounds, s["buckets"], s["sum"]),
    }


def _latency(bounds: list[float], buckets: list[int], total: float) -> dict[str, Any]:
    count = sum(buckets)
    p50 = quantile(0.5, bounds, buckets) if count else None
    p99 = quantile(0.99, bounds, buckets) if count else None
    return {
        "samples": count,
        "avg": round(total / count, 6) if count else None,
        "p50": round(p50, 6) if p50 is not None else None,
        "p99": round(p99, 6) if p99 is not None else None,
    }


# A backend that no process has counted yet (added a moment ago).
_NO_COUNTERS: dict[str, Any] = dict.fromkeys(BACKEND_COUNTER_FIELDS, 0)
