"""The OpenAPI 3.0 document of the admin API, served at `/api/v1/openapi.json`.

Written by hand next to the handlers (`api.py`) and the views (`state.py`); a test runs
schemathesis against a live server with this document, so a field added to a view
without its schema here (or a status code a handler may answer that is not listed)
fails the build.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from haproxyd import __version__

API = "/api/v1/ha"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], *, required: list[str] | None = None, **extra: Any) -> dict:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        **extra,
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
STATE = {"type": "string", "enum": ["checking", "up", "down", "draining", "maint"]}
COUNT = {"type": "integer", "minimum": 0}


def _schemas() -> dict[str, Any]:
    codes = _obj({name: COUNT for name in ("1xx", "2xx", "3xx", "4xx", "5xx", "other")})
    latency = _obj(
        {
            "samples": COUNT,
            "avg": _nullable(NUM),
            "p50": _nullable(NUM),
            "p99": _nullable(NUM),
        },
        description="Seconds, from the request-duration histogram (null without samples).",
    )
    health_check_summary = _obj({"type": STR, "name": STR, "status": STR, "reason": STR})
    backend_health = _obj(
        {
            "verdict": STR,
            "ejected": BOOL,
            "passive": _nullable({"type": "object"}),
            "checks": {"type": "array", "items": health_check_summary},
        }
    )
    backend = _obj(
        {
            "id": STR,
            "pool": STR,
            "address": STR,
            "weight": INT,
            "effective_weight": INT,
            "role": STR,
            "region": _nullable(STR),
            "group": _nullable(STR),
            "priority": INT,
            "max_connections": INT,
            "state": STATE,
            "state_age": {**NUM, "description": "Seconds in the current state."},
            "selectable": {**BOOL, "description": "The balancer may pick it now."},
            "active": {**INT, "description": "Requests in flight."},
            "requests": {**COUNT, "description": "Requests sent (retries included)."},
            "failures": {**COUNT, "description": "Transport-level failures."},
            "selections": COUNT,
            "health": _ref("BackendHealth"),
        }
    )
    pool_status = _obj(
        {
            "name": STR,
            "algorithm": STR,
            "strategy": STR,
            "backends": COUNT,
            "up": COUNT,
            "selectable": COUNT,
            "active": INT,
            "states": {"type": "object", "additionalProperties": COUNT},
            "healthy": {**BOOL, "description": "At least one backend can take traffic."},
            "decision": _nullable(_ref("Decision")),
        }
    )
    decision = _obj(
        {
            "pool": STR,
            "strategy": STR,
            "active": {
                "type": "array",
                "items": STR,
                "description": "The backends that take traffic, in order.",
            },
            "version": {**COUNT, "description": "Grows by one per decision of the pool."},
            "reason": STR,
            "since": {**NUM, "description": "When the active set last changed (epoch)."},
            "kind": STR,
            "panic": {**BOOL, "description": "Panic mode: down backends included on purpose."},
            "state": {"type": "object", "description": "The strategy's memory (pins, ...)."},
            "mode": {
                "type": "string",
                "enum": ["leader", "follower", "local"],
                "description": "Who decides: this node, the cluster leader, or this node "
                "alone (active_active).",
            },
            "held": {
                "type": "array",
                "items": STR,
                "description": "Backends held out by flap damping.",
            },
            "fallback": _nullable(
                {**STR, "description": "Where a retry goes when the one active backend fails."}
            ),
        },
        description="The failover state machine's decision for a pool.",
    )
    status = _obj(
        {
            "node_id": STR,
            "region": _nullable(STR),
            "role": STR,
            "version": STR,
            "pid": INT,
            "started": {**NUM, "description": "Seconds since the epoch."},
            "uptime": {**NUM, "description": "Seconds."},
            "config_version": INT,
            "config_path": _nullable(STR),
            "environment": STR,
            "healthy": BOOL,
            "node_health": _obj({"healthy": BOOL, "reasons": {"type": "array", "items": STR}}),
            "reloads": _obj({"ok": COUNT, "error": COUNT}),
            "last_reload": _obj(
                {
                    "result": _nullable({"type": "string", "enum": ["ok", "error"]}),
                    "errors": {"type": "array", "items": STR},
                    "time": _nullable(NUM),
                }
            ),
            "workers": _obj(
                {
                    "mode": {"type": "string", "enum": ["single", "master"]},
                    "count": INT,
                    "pids": {"type": "array", "items": INT},
                    "applied_versions": {"type": "array", "items": INT},
                    "restarts": COUNT,
                },
                required=["mode", "count", "pids", "restarts"],
            ),
            "connections": COUNT,
            "pools": {"type": "array", "items": _ref("PoolStatus")},
        }
    )
    backend_stats = _obj(
        {
            "id": STR,
            "state": STATE,
            "weight": INT,
            "effective_weight": INT,
            "requests": {**COUNT, "description": "Requests answered with this backend last."},
            "errors": {**COUNT, "description": "5xx from the backend + transport failures."},
            "failures": COUNT,
            "attempts": COUNT,
            "active": INT,
            "selections": COUNT,
            "ewma": NUM,
            "latency": _ref("Latency"),
            "codes": _ref("CodeClasses"),
        }
    )
    pool_stats = _obj(
        {
            "name": STR,
            "algorithm": STR,
            "requests": COUNT,
            "errors": COUNT,
            "active": INT,
            "selections": COUNT,
            "failures": COUNT,
            "no_backend": {**COUNT, "description": "Requests answered 503: no backend."},
            "latency": _ref("Latency"),
            "codes": _ref("CodeClasses"),
            "backends": {"type": "array", "items": _ref("BackendStats")},
        }
    )
    lb_stats = _obj(
        {
            "time": NUM,
            "pools": {"type": "array", "items": _ref("PoolStats")},
            "unrouted": _obj({"requests": COUNT, "codes": _ref("CodeClasses")}),
        }
    )
    health_check = _obj(
        {
            "pool": STR,
            "backend": STR,
            "target": STR,
            "type": STR,
            "name": STR,
            "status": {"type": "string", "enum": ["checking", "up", "down"]},
            "state": _nullable(STR),
            "last_result": _nullable({"type": "string", "enum": ["pass", "fail"]}),
            "last_reason": STR,
            "latency": NUM,
            "last_check": _nullable(NUM),
            "last_change": NUM,
            "consecutive_passes": COUNT,
            "consecutive_fails": COUNT,
            "checks_total": COUNT,
            "failures_total": COUNT,
            "paused": BOOL,
            "interval": NUM,
            "node": BOOL,
        }
    )
    cluster_node = _obj(
        {
            "id": STR,
            "address": _nullable(STR),
            "region": _nullable(STR),
            "state": STR,
            "role": STR,
            "self": BOOL,
            "last_seen": _nullable(NUM),
        },
        required=["id", "state", "role", "self"],
    )
    cluster = _obj(
        {
            "enabled": BOOL,
            "mode": STR,
            "node_id": STR,
            "role": STR,
            "is_leader": BOOL,
            "leader": _nullable(STR),
            "term": COUNT,
            "quorum": COUNT,
            "has_quorum": BOOL,
            "nodes": {"type": "array", "items": _ref("ClusterNode")},
        }
    )
    event = _obj(
        {
            "id": COUNT,
            "time": NUM,
            "kind": STR,
            "pool": STR,
            "backend": _nullable(STR),
            "reason": STR,
            "strategy": STR,
            "details": {"type": "object"},
        }
    )
    events = _obj(
        {
            "events": {"type": "array", "items": _ref("FailoverEvent")},
            "returned": COUNT,
            "stored": COUNT,
            "capacity": COUNT,
        }
    )
    new_backend = _obj(
        {
            "pool": {**STR, "minLength": 1, "description": "An existing pool."},
            "id": {**STR, "pattern": "^[A-Za-z0-9_.:-]+$", "description": "Unique in all pools."},
            "address": {
                **STR,
                "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
                "description": "host:port or [v6]:port",
            },
            "weight": {**INT, "minimum": 0, "maximum": 1000},
            "role": {"type": "string", "enum": ["primary", "backup"]},
            "region": _nullable(STR),
            "group": _nullable(STR),
            "priority": INT,
            "max_connections": {**INT, "minimum": 0},
            "state": {
                "type": "string",
                "enum": ["ready", "drain", "maint"],
                "description": "Start drained or in maintenance (default: ready).",
            },
        },
        required=["pool", "id", "address"],
        additionalProperties=False,
        example={"pool": "web", "id": "web-4", "address": "127.0.0.1:9004", "weight": 1},
    )
    patch = _obj(
        {
            "weight": {**INT, "minimum": 0, "maximum": 1000},
            "state": {
                "type": "string",
                "enum": ["ready", "drain", "maint"],
                "description": "ready: end a drain/maint (health decides up or down); "
                "drain: no new requests, in-flight ones finish, health checks go on; "
                "maint: out of balancing and out of health checks.",
            },
        },
        required=[],
        additionalProperties=False,
        minProperties=1,
        example={"state": "drain"},
    )
    trigger = _obj(
        {
            "pool": {**STR, "minLength": 1},
            "to": {
                "type": "string",
                "enum": ["backup", "primary"],
                "description": "backup: onto the backups; primary: back to the primaries; "
                "absent: switch sides.",
            },
            "backend": {
                **STR,
                "pattern": "^[A-Za-z0-9_.:-]+$",
                "description": "active_passive and manual pools: this backend (not with `to`).",
            },
            "reason": {**STR, "maxLength": 500},
        },
        required=["pool"],
        additionalProperties=False,
        example={"pool": "web", "to": "backup", "reason": "planned maintenance"},
    )
    trigger_result = _obj(
        {
            "pool": STR,
            "action": STR,
            "active": {"type": "array", "items": STR},
            "event": _nullable(_ref("FailoverEvent")),
            "decision": _ref("Decision"),
        }
    )
    update_result = _obj({"applied": BOOL, "changed": BOOL, "config_version": INT})
    error = _obj(
        {"error": STR, "details": {"type": "array", "items": STR}},
        description="Every 4xx (and a 500, which is a bug) has this body.",
    )
    return {
        "Error": error,
        "CodeClasses": codes,
        "Latency": latency,
        "BackendHealth": backend_health,
        "Backend": backend,
        "BackendList": _obj({"backends": {"type": "array", "items": _ref("Backend")}}),
        "Removed": _obj({"removed": _ref("Backend")}),
        "PoolStatus": pool_status,
        "Decision": decision,
        "Status": status,
        "BackendStats": backend_stats,
        "PoolStats": pool_stats,
        "LoadBalancerStats": lb_stats,
        "HealthCheck": health_check,
        "HealthChecks": _obj(
            {
                "enabled": BOOL,
                "node": _obj({"healthy": BOOL, "reasons": {"type": "array", "items": STR}}),
                "checks": {"type": "array", "items": _ref("HealthCheck")},
            }
        ),
        "ClusterNode": cluster_node,
        "ClusterStatus": cluster,
        "FailoverEvent": event,
        "FailoverEvents": events,
        "NewBackend": new_backend,
        "BackendPatch": patch,
        "FailoverTrigger": trigger,
        "FailoverResult": trigger_result,
        "ConfigView": _obj({"config_version": INT, "config": {"type": "object"}}),
        "ConfigUpdateResult": update_result,
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = {
    400: "Invalid input; nothing changed.",
    401: "Missing or wrong bearer token (admin.token set).",
    404: "No such pool or backend.",
    409: "Conflicts with the current state; nothing changed.",
    413: "Body too large.",
}


def _op(
    summary: str,
    ok: dict[int, dict[str, Any]],
    errors: tuple[int, ...] = (401,),
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    body_schema: dict[str, Any] | None = None,
    description: str = "",
    tag: str = "ha",
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(code): spec for code, spec in ok.items()}
    for code in errors:
        responses[str(code)] = _json("Error", _ERRORS[code])
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": summary.lower().replace(" ", "_").replace("/", "_"),
        "tags": [tag],
        "responses": responses,
    }
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None or body_schema is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema or _ref(body or "")}},
        }
    return op


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "example": "web-1",
    "description": "Backend id.",
}
POOL_QUERY = _query("pool", STR, "Only this pool (404 if there is none).")
BAD = (400, 401)
READ = (401,)


@cache
def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/": {
            "get": _op(
                "Status page",
                {
                    200: {
                        "description": "HTML status page.",
                        "content": {"text/html": {"schema": STR}},
                    }
                },
                (),
                tag="ui",
            )
        },
        "/api/v1/openapi.json": {
            "get": _op(
                "OpenAPI document",
                {
                    200: {
                        "description": "This document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                (),
                tag="meta",
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {
                    200: {
                        "description": "Prometheus text exposition (OpenMetrics if asked).",
                        "content": {
                            "text/plain": {"schema": STR},
                            "application/openmetrics-text": {"schema": STR},
                        },
                    }
                },
                READ,
                tag="meta",
            )
        },
        f"{API}/status": {
            "get": _op("Node status", {200: _json("Status", "Node and pools summary.")}, READ)
        },
        f"{API}/config": {
            "get": _op(
                "Running config",
                {200: _json("ConfigView", "The running config (admin.token redacted).")},
                READ,
            )
        },
        f"{API}/load-balancer/stats": {
            "get": _op(
                "Load balancer stats",
                {200: _json("LoadBalancerStats", "Per pool and backend counters.")},
                (401, 404),
                params=[POOL_QUERY],
            )
        },
        f"{API}/load-balancer/backends": {
            "get": _op(
                "List backends",
                {200: _json("BackendList", "Every backend with its live state.")},
                (401, 404),
                params=[POOL_QUERY],
            ),
            "post": _op(
                "Add backend",
                {201: _json("Backend", "Added; it takes traffic once health allows.")},
                (400, 401, 409, 413),
                body="NewBackend",
                description="400 on an invalid body or an unknown pool, 409 when the id "
                "exists in any pool. A runtime change: a reload rebuilds pools from "
                "the config.",
            ),
        },
        f"{API}/load-balancer/backends/{{id}}": {
            "parameters": [ID_PARAM],
            "get": _op("Get backend", {200: _json("Backend", "The backend.")}, (401, 404)),
            "patch": _op(
                "Change backend",
                {200: _json("Backend", "The backend after the change.")},
                (400, 401, 404, 413),
                body="BackendPatch",
            ),
            "delete": _op(
                "Remove backend",
                {200: _json("Removed", "Removed; its in-flight requests had finished.")},
                (400, 401, 404, 409),
                params=[
                    _query(
                        "wait",
                        {"type": "number", "minimum": 0, "maximum": 300},
                        "Seconds to wait for in-flight requests to finish (default 0).",
                    )
                ],
                description="Refused (409) unless the backend is in maint or draining "
                "with no request in flight; with ?wait= polls until it is.",
            ),
        },
        f"{API}/health-checks": {
            "get": _op(
                "Health checks",
                {200: _json("HealthChecks", "Every probe session.")},
                READ,
                params=[
                    _query("pool", STR, "Only this pool."),
                    _query("backend", STR, "Only this backend."),
                ],
            )
        },
        f"{API}/cluster/status": {
            "get": _op("Cluster status", {200: _json("ClusterStatus", "Cluster view.")}, READ)
        },
        f"{API}/failover/events": {
            "get": _op(
                "Failover events",
                {200: _json("FailoverEvents", "Newest first.")},
                BAD,
                params=[
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 10000},
                        "At most this many (default 100).",
                    ),
                    _query("pool", STR, "Only this pool."),
                ],
            )
        },
        f"{API}/failover/trigger": {
            "post": _op(
                "Trigger failover",
                {200: _json("FailoverResult", "What the pool serves from now.")},
                (400, 401, 404, 409, 413),
                body="FailoverTrigger",
            )
        },
        f"{API}/config/update": {
            "post": _op(
                "Update config",
                {200: _json("ConfigUpdateResult", "Applied (or nothing to change).")},
                (400, 401, 413),
                params=[
                    _query(
                        "mode",
                        {"type": "string", "enum": ["merge", "replace"]},
                        "merge (default): deep-merge the body onto the running config "
                        "(objects merge, lists replace); replace: the body is the whole "
                        "config.",
                    )
                ],
                body_schema={
                    "type": "object",
                    "description": "A full or partial config document, "
                    "the YAML file's structure as JSON (see GET /api/v1/ha/config).",
                    "example": {"timeouts": {"response": "30s"}},
                },
                description="Validated exactly as a SIGHUP reload; applied atomically, or "
                "400 with every error and nothing changed.",
            )
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "haproxyd admin API",
            "version": __version__,
            "description": "HA/admin API of haproxyd. Mutating calls need "
            "`Authorization: Bearer <admin.token>` when a token is configured; reads too "
            "with `admin.read_auth: true`.",
        },
        "paths": paths,
        # The token is optional (no admin.token configured: no auth at all).
        "security": [{}, {"bearer": []}],
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_document() -> dict[str, Any]:
    return copy.deepcopy(_document())
