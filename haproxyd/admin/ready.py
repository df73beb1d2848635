"""`GET /ready` on the admin port: 200 only while this node serves, else 503 with why.

For keepalived's `vrrp_script` (examples/keepalived/), a Kubernetes readiness probe or
a cloud load balancer's health check: whoever decides where traffic goes. Envoy's admin
`/ready` and HAProxy's `monitor-uri` + `monitor fail` are the models: liveness
(`/api/v1/ha/status`, deploy/healthcheck.py) says the process works; readiness says
traffic sent to this node now will be served. A node is ready when all hold:

- it is not shutting down (SIGTERM starts the drain: the VIP should move at once, not
  when the listeners are gone);
- every configured listener accepts connections;
- it runs a valid config, and in a cluster the cluster's newest shared config;
- at least one pool has a backend the balancer may pick (one pool down of several
  still leaves a node worth sending traffic to; its peers usually see the same
  backends, so moving the VIP would not bring that pool back);
- in a cluster, the cluster has not gone on without it (`ClusterManager.fenced`).

No token, even with `admin.read_auth` (security.PUBLIC_PATHS): the probes that need it
(keepalived, kubelet, a cloud health check) should not have to hold the admin token,
and Envoy's `/ready` is open too. The `Host` and `Origin` checks still apply (the
probes send an IP as Host and no Origin). So the body names no pool, backend, address
or peer: only which condition failed, with counts; `GET /api/v1/ha/status` has the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from haproxyd.admin.views import Readiness

READY_PATH = "/ready"


class ReadinessHost(Protocol):
    """What readiness needs from the daemon (haproxyd/daemon.py), and nothing more:
    tests drive it with a small fake."""

    stopping: bool  # SIGTERM or SIGINT received: draining, then exit

    def listeners_accepting(self) -> tuple[int, int]: ...  # (accepting, configured)
    def selectable_backends(self) -> dict[str, int]: ...  # pool -> backends to pick from
    def config_errors(self) -> list[str]: ...
    def fenced(self) -> str | None: ...  # why the cluster goes on without this node


def readiness(host: ReadinessHost) -> Readiness:
    """`{"ready": bool, "reasons": [...]}`; every reason that holds, not just the first,
    so an operator sees at once everything that keeps the node out."""
    reasons: list[str] = []
    if host.stopping:
        reasons.append("shutting down: draining in-flight requests")
    accepting, configured = host.listeners_accepting()
    if configured == 0:
        reasons.append("no listener configured")
    elif accepting < configured:
        reasons.append(f"listeners not accepting: {configured - accepting} of {configured}")
    reasons.extend(f"config: {error}" for error in host.config_errors())
    pools = host.selectable_backends()
    if not pools:
        reasons.append("no pool configured")
    elif not any(pools.values()):
        reasons.append("no selectable backend in any pool (all down, drained or in maint)")
    fenced = host.fenced()
    if fenced is not None:
        reasons.append(fenced)
    return {"ready": not reasons, "reasons": reasons}


def ready_handler(
    host: Callable[[web.Request], ReadinessHost],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler answering for `host(request)` (the daemon), looked up per
    request: the admin app needs nothing new at build time."""

    async def ready(request: web.Request) -> web.Response:
        body = readiness(host(request))
        return web.json_response(
            body,
            status=200 if body["ready"] else 503,
            # A cached "ready" is exactly what a probe must never see.
            headers={"Cache-Control": "no-store"},
        )

    return ready
