"""Admin API handlers (SPEC §4): HAProxy's runtime API over JSON.

Every handler validates everything first and changes state only afterwards, in code that
cannot fail half-way, so a rejected call changes nothing. Bad input is a 4xx JSON body
`{"error": ..., "details": [...]}` (`APIError`); a 500 means a bug in the handlers.

This module holds the read endpoints and the routing table; the changes live beside it:
`backends.py` (add, change, remove a backend), `changes.py` (config/update, failover
trigger), `forwarding.py` (a cluster follower's change sent to the leader), `common.py`
(what they share).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from haproxyd.admin.backends import add_backend, delete_backend, patch_backend
from haproxyd.admin.changes import config_update, deep_merge, failover_trigger
from haproxyd.admin.common import (
    API,
    STATE_KEY,
    backend_or_404,
    pool_or_404,
    query_number,
    request_state,
)
from haproxyd.admin.errors import errors_middleware
from haproxyd.admin.metrics import HaproxydCollector
from haproxyd.admin.openapi import openapi_document
from haproxyd.admin.ready import READY_PATH, ready_handler
from haproxyd.admin.security import guard_middleware
from haproxyd.admin.state import AdminState
from haproxyd.admin.status_page import STATUS_PAGE
from haproxyd.config.secrets import redact_secrets

__all__ = ["API", "build_app", "deep_merge"]

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
MAX_EVENTS = 10000


# -- read endpoints ----------------------------------------------------------------------


async def status_page(request: web.Request) -> web.Response:
    return web.Response(
        text=STATUS_PAGE,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP},
    )


_CSP = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": content_type})


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(await request_state(request).status())


async def get_config(request: web.Request) -> web.Response:
    state = request_state(request)
    data = redact_secrets(state.host.config.model_dump(mode="json"))
    return web.json_response({"config_version": state.host.config_version, "config": data})


async def lb_stats(request: web.Request) -> web.Response:
    state = request_state(request)
    pool = request.query.get("pool")
    if pool is not None:
        pool_or_404(state, pool)
    return web.json_response(state.lb_stats(pool))


async def list_backends(request: web.Request) -> web.Response:
    state = request_state(request)
    pool = request.query.get("pool")
    if pool is not None:
        pool_or_404(state, pool)
    return web.json_response({"backends": await state.backends(pool)})


async def get_backend(request: web.Request) -> web.Response:
    state = request_state(request)
    pool, backend = backend_or_404(state, request.match_info["id"])
    counters = await state.live_counters()
    return web.json_response(state.backend_view(pool, backend, counters))


async def health_checks(request: web.Request) -> web.Response:
    state = request_state(request)
    pool = request.query.get("pool")
    backend = request.query.get("backend")
    checks = state.health_statuses(pool, backend)
    return web.json_response(
        {
            "enabled": state.health is not None,
            "node": state.node_health(),
            "checks": checks,
        }
    )


async def cluster_status(request: web.Request) -> web.Response:
    return web.json_response(request_state(request).cluster_status())


async def failover_events(request: web.Request) -> web.Response:
    state = request_state(request)
    limit = int(query_number(request, "limit", 100, 1, MAX_EVENTS, integer=True))
    pool = request.query.get("pool")
    return web.json_response(state.failover_events(limit, pool))


# -- the app -----------------------------------------------------------------------------


def build_app(state: AdminState) -> web.Application:
    # Generating the OpenAPI schemas takes pydantic a tenth of a second or more: done
    # here, at startup, before a cluster's heartbeats begin, not on the loop of a
    # running leader whose lease a stall that long can cost (cached from then on).
    openapi_document()
    guard = guard_middleware(lambda: state.host.config.admin)
    app = web.Application(middlewares=[errors_middleware, guard])
    app[STATE_KEY] = state
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HaproxydCollector(state))
    app[REGISTRY_KEY] = registry
    r = app.router
    r.add_get("/", status_page)
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_get("/metrics", metrics)
    r.add_get(READY_PATH, ready_handler(lambda request: request_state(request).host))
    r.add_get(f"{API}/status", get_status)
    r.add_get(f"{API}/config", get_config)
    r.add_get(f"{API}/load-balancer/stats", lb_stats)
    r.add_get(f"{API}/load-balancer/backends", list_backends)
    r.add_post(f"{API}/load-balancer/backends", add_backend)
    r.add_get(f"{API}/load-balancer/backends/{{id}}", get_backend)
    r.add_patch(f"{API}/load-balancer/backends/{{id}}", patch_backend)
    r.add_delete(f"{API}/load-balancer/backends/{{id}}", delete_backend)
    r.add_get(f"{API}/health-checks", health_checks)
    r.add_get(f"{API}/cluster/status", cluster_status)
    r.add_get(f"{API}/failover/events", failover_events)
    r.add_post(f"{API}/failover/trigger", failover_trigger)
    r.add_post(f"{API}/config/update", config_update)
    return app
