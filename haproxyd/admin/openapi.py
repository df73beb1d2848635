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
# What a runtime change or config/update made in a cluster adds to its answer.
CLUSTER_CHANGE = {
    "cluster_version": {
        **COUNT,
        "description": "Cluster mode: the version of the shared document (pools, routes) "
        "that holds the change (absent when nothing changed, and outside a cluster).",
    },
    "forwarded_to": {
        **STR,
        "description": "Cluster mode: the leader a follower sent the change to (its "
        "answer, error or not, is this one).",
    },
}


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
    # The answer to an add or a change: a Backend, in a cluster with CLUSTER_CHANGE.
    changed_backend = _obj(
        {**backend["properties"], **CLUSTER_CHANGE}, required=list(backend["properties"])
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
    roles = ["standalone", "leader", "follower", "candidate", "degraded"]
    cluster_node = _obj(
        {
            "id": STR,
            "address": _nullable({**STR, "description": "Admin URL (null: a lost node)."}),
            "region": _nullable(STR),
            "state": {
                "type": "string",
                "enum": ["up", "lost"],
                "description": "lost: its heartbeat record expired.",
            },
            "role": {
                "type": "string",
                "enum": [*roles, "lost"],
                "description": "The role the node published with its last heartbeat.",
            },
            "self": BOOL,
            "last_seen": _nullable(
                {**NUM, "description": "Its last heartbeat (a lost node: when it was lost)."}
            ),
            "healthy": {**BOOL, "description": "Cluster mode: its own node checks pass."},
            "config_version": {
                **COUNT,
                "description": "Cluster mode: the shared document version it runs.",
            },
            "term": {**COUNT, "description": "Cluster mode: the newest term it has seen."},
            "reachable": _nullable(
                {
                    **BOOL,
                    "description": "Cluster mode: answered this node's probe of its admin "
                    "API (null: not probed yet, or lost).",
                }
            ),
        },
        required=["id", "state", "role", "self"],
    )
    cluster = _obj(
        {
            "enabled": BOOL,
            "mode": {"type": "string", "enum": ["standalone", "cluster"]},
            "node_id": STR,
            "role": {"type": "string", "enum": roles},
            "is_leader": {
                **BOOL,
                "description": "Acting leader: holds the lease and sees a quorum.",
            },
            "leader": _nullable({**STR, "description": "The lease holder's id (null: none)."}),
            "term": {**COUNT, "description": "The newest leader term this node has seen."},
            "quorum": COUNT,
            "has_quorum": BOOL,
            "state": {
                "type": "string",
                "enum": ["ok", "degraded", "no_quorum"],
                "description": "Cluster mode. degraded: Redis unreachable from this node "
                "(serving with the last known state); no_quorum: fewer live members "
                "than quorum_size.",
            },
            "config_version": {
                **COUNT,
                "description": "Cluster mode: the shared document version this node runs.",
            },
            "redis": _obj(
                {
                    "url": {**STR, "description": "cluster.redis_url, password hidden."},
                    "reachable": _nullable(
                        {**BOOL, "description": "The last beat reached it (null: not tried)."}
                    ),
                    "error": _nullable(STR),
                    "last_contact": _nullable(
                        {**NUM, "description": "Epoch of the last successful beat."}
                    ),
                },
                description="Cluster mode: this node's view of the cluster's Redis.",
            ),
            "local_fallback": BOOL,
            "health_consensus": {"type": "string", "enum": ["local", "majority"]},
            "stale_writes_refused": {
                **COUNT,
                "description": "Leader writes of this node that Redis refused (fencing).",
            },
            "peers": {
                "type": "array",
                "description": "Cluster mode: every peer admin API this node probes.",
                "items": _obj({"address": STR, "reachable": BOOL}),
            },
            "nodes": {"type": "array", "items": _ref("ClusterNode")},
        },
        required=[
            "enabled",
            "mode",
            "node_id",
            "role",
            "is_leader",
            "leader",
            "term",
            "quorum",
            "has_quorum",
            "nodes",
        ],
        description="A standalone node answers the first ten fields; a cluster node all.",
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
            "forwarded_to": CLUSTER_CHANGE["forwarded_to"],
        },
        required=["pool", "action", "active", "event", "decision"],
    )
    update_result = _obj(
        {
            "applied": BOOL,
            "changed": BOOL,
            "config_version": {
                **INT,
                "description": "This node's config version (one more per reload).",
            },
            **CLUSTER_CHANGE,
        },
        required=["applied", "changed", "config_version"],
    )
    error = _obj(
        {
            "error": STR,
            "details": {"type": "array", "items": STR},
            "forwarded_to": CLUSTER_CHANGE["forwarded_to"],
        },
        required=["error", "details"],
        description="Every 4xx and 503 (and a 500, which is a bug) has this body.",
    )
    return {
        "Error": error,
        "CodeClasses": codes,
        "Latency": latency,
        "BackendHealth": backend_health,
        "Backend": backend,
        "ChangedBackend": changed_backend,
        "BackendList": _obj({"backends": {"type": "array", "items": _ref("Backend")}}),
        "Removed": _obj({"removed": _ref("Backend"), **CLUSTER_CHANGE}, required=["removed"]),
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
        "Readiness": _obj({"ready": BOOL, "reasons": {"type": "array", "items": STR}}),
        "ConfigView": _obj({"config_version": INT, "config": {"type": "object"}}),
        "ConfigUpdateResult": update_result,
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = {
    400: "Invalid input; nothing changed.",
    401: "Missing or wrong bearer token (admin.token set).",
    403: "Sent by a page of another origin (`Origin` is not this admin API's own); "
    "nothing changed.",
    404: "No such pool or backend.",
    409: "Conflicts with the current state; nothing changed. In a cluster also: the "
    "change was based on another version of the shared document than the cluster's "
    "(`?version=`, or another change was stored meanwhile).",
    413: "Body too large.",
    415: "The body is not `Content-Type: application/json`; nothing changed.",
    421: "`Host` is not a name of this admin API (an IP address, localhost, the host of "
    "admin.address or a name in admin.allowed_hosts); nothing changed.",
    503: "Cluster mode: no leader to make the change (none elected, the leader is "
    "unreachable, or Redis is); nothing changed, retry.",
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
    has_body = body is not None or body_schema is not None
    # The guards of security.py answer any call: a foreign Host or Origin, and a body
    # that is not JSON.
    guards = (403, 421, 415) if has_body else (403, 421)
    for code in sorted({*errors, *guards}):
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
    if has_body:
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
VERSION_QUERY = _query(
    "version",
    {"type": "integer", "minimum": 0},
    "Cluster mode: the version of the shared document (pools, routes; `config_version` "
    "of GET /api/v1/ha/cluster/status) the change was made against; 409 unless it is "
    "the cluster's current one. Ignored outside a cluster, and by a change of "
    "drain/maint/ready alone (node-local).",
)
# Cluster mode: the leader stored the change, this node does not run it yet.
NOT_APPLIED_HERE = _json(
    "ConfigUpdateResult",
    "Cluster mode: stored by the leader (`cluster_version`) but not applied on this node "
    "yet (it cannot reach Redis, or failed to apply it: see its log); it applies it at "
    "its next version check.",
)


def _in_cluster(what: str) -> str:
    return (
        f" In a cluster {what} a change of the shared document (pools.<pool>.backends), "
        "made through the leader exactly as a config/update (every node applies it; a "
        "follower answers once it runs it); drain/maint/ready stay this node's."
    )


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
        "/ready": {
            "get": _op(
                "Readiness",
                {
                    200: _json("Readiness", "This node serves: send it traffic."),
                    503: _json(
                        "Readiness",
                        "Not now (shutting down, a listener closed, no pool with a "
                        "selectable backend, fenced off its cluster): see `reasons`.",
                    ),
                },
                (),
                description="For keepalived and orchestrators; open even with "
                "admin.read_auth. The reasons name no pool, backend or address.",
                tag="meta",
            )
        },
        f"{API}/status": {
            "get": _op("Node status", {200: _json("Status", "Node and pools summary.")}, READ)
        },
        f"{API}/config": {
            "get": _op(
                "Running config",
                {
                    200: _json(
                        "ConfigView",
                        "The running config, secrets redacted (admin.token, passwords, "
                        "the password of cluster.redis_url); posted back to config/update "
                        "as shown, a redacted secret keeps its running value.",
                    )
                },
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
                {
                    201: _json("ChangedBackend", "Added; it takes traffic once health allows."),
                    202: NOT_APPLIED_HERE,
                },
                (400, 401, 404, 409, 413, 503),
                params=[VERSION_QUERY],
                body="NewBackend",
                description="400 on an invalid body, 404 when the pool does not exist, 409 "
                "when the id exists in any pool. Standalone, a runtime change: a reload "
                "rebuilds pools from the config."
                + _in_cluster("this is")
                + " To add one that takes no traffic on any node, give it weight 0.",
            ),
        },
        f"{API}/load-balancer/backends/{{id}}": {
            "parameters": [ID_PARAM],
            "get": _op("Get backend", {200: _json("Backend", "The backend.")}, (401, 404)),
            "patch": _op(
                "Change backend",
                {
                    200: _json("ChangedBackend", "The backend after the change."),
                    202: NOT_APPLIED_HERE,
                },
                (400, 401, 404, 409, 413, 503),
                params=[VERSION_QUERY],
                body="BackendPatch",
                description="Standalone, both are runtime changes." + _in_cluster("a weight is"),
            ),
            "delete": _op(
                "Remove backend",
                {
                    200: _json("Removed", "Removed; its in-flight requests had finished."),
                    202: NOT_APPLIED_HERE,
                },
                (400, 401, 404, 409, 503),
                params=[
                    _query(
                        "wait",
                        {"type": "number", "minimum": 0, "maximum": 300},
                        "Seconds to wait for in-flight requests to finish (default 0).",
                    ),
                    VERSION_QUERY,
                ],
                description="Refused (409) unless the backend is in maint or draining "
                "with no request in flight on this node; with ?wait= polls until it is."
                + _in_cluster("this is"),
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
                (400, 401, 404, 409, 413, 503),
                body="FailoverTrigger",
                description="A forced failover through the failover state machine. In a "
                "cluster, a pool the leader decides for every node (active_passive, "
                "multi_active, manual) is triggered on the leader: a follower sends the "
                "call there and answers with the leader's answer (`forwarded_to`); 503 "
                "while there is no leader.",
            )
        },
        f"{API}/config/update": {
            "post": _op(
                "Update config",
                {200: _json("ConfigUpdateResult", "Applied (or nothing to change).")},
                (400, 401, 409, 413, 503),
                params=[
                    _query(
                        "mode",
                        {"type": "string", "enum": ["merge", "replace"]},
                        "merge (default): deep-merge the body onto the running config "
                        "(objects merge, lists replace); replace: the body is the whole "
                        "config.",
                    ),
                    VERSION_QUERY,
                ],
                body_schema={
                    "type": "object",
                    "description": "A full or partial config document, "
                    "the YAML file's structure as JSON (see GET /api/v1/ha/config).",
                    "example": {"timeouts": {"response": "30s"}},
                },
                description="Validated exactly as a SIGHUP reload; applied atomically, or "
                "400 with every error and nothing changed. In a cluster, a change of pools "
                "or routes (the shared document) is made by the leader: a follower sends it "
                "there and answers with the leader's answer (`forwarded_to`), the leader "
                "stores it as the next version (`cluster_version`) and every node applies "
                "it; the other sections apply to the node called only (a follower refuses a "
                "document that changes both kinds with 400).",
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
            "with `admin.read_auth: true`. Bodies are JSON (`Content-Type: "
            "application/json`); a request from a page of another origin (`Origin`) or "
            "for a host name that is not this API's (`Host`) is refused.",
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
