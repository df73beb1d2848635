"""The OpenAPI 3.0 document of the admin API, served at `/api/v1/openapi.json`.

The component schemas are generated, not written: the request bodies from the pydantic
models the handlers validate with (`NewBackend`, `BackendPatch`, `FailoverTrigger`),
the responses from the typed dicts of views.py, through pydantic's JSON Schema
(`TypeAdapter.json_schema`), turned into OpenAPI 3.0's dialect by `openapi30`. What is
written here is the paths: each operation in a few lines (its bodies by component name,
its parameters, its status codes). A test runs schemathesis against a live server with
this document, so a field added to a view without its type in views.py (or a status
code a handler may answer that is not listed) fails the build.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter

from haproxyd import __version__
from haproxyd.admin import views
from haproxyd.admin.backends import BackendPatch, NewBackend
from haproxyd.admin.changes import FailoverTrigger

API = "/api/v1/ha"
REF = "#/components/schemas/{model}"
STR = {"type": "string"}

REQUESTS: tuple[type[BaseModel], ...] = (NewBackend, BackendPatch, FailoverTrigger)
"""Every request body with a schema of its own (config/update takes a config document)."""


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def openapi30(node: Any) -> Any:
    """pydantic's JSON Schema (draft 2020-12) as an OpenAPI 3.0 Schema Object: `X | None`
    (`anyOf` with `null`) becomes `nullable`, `const` a one-value `enum`, `examples`
    `example`, a numeric `exclusiveMinimum`/`exclusiveMaximum` the 3.0 boolean form; the
    generated `title`s go (the component's name is its title)."""
    if isinstance(node, list):
        return [openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi30(v) for k, v in node.items() if k not in ("title", "$defs")}
    variants = out.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        rest = [v for v in variants if v != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "examples" in out:
        out["example"] = out.pop("examples")[0]
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(key), int | float) and not isinstance(out[key], bool):
            out[bound], out[key] = out[key], True
    return out


def component(source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI schema of a model or typed dict, and the schemas of the named types
    it holds (by name, referenced as components)."""
    if isinstance(source, type) and issubclass(source, BaseModel):
        schema = source.model_json_schema(ref_template=REF, mode="validation")
    else:
        schema = TypeAdapter(source).json_schema(ref_template=REF, mode="serialization")
    nested = {name: openapi30(s) for name, s in schema.get("$defs", {}).items()}
    return openapi30(schema), nested


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for source in (*REQUESTS, *views.RESPONSES):
        schema, nested = component(source)
        for name, found in {source.__name__: schema, **nested}.items():
            # One name, one schema: two types of one name would make the refs ambiguous.
            assert schemas.setdefault(name, found) == found, f"two schemas named {name}"
    return schemas


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
