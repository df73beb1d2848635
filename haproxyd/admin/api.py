"""Admin API handlers (SPEC §4): HAProxy's runtime API over JSON.

Every handler validates everything first and changes state only afterwards, in code that
cannot fail half-way, so a rejected call changes nothing. Bad input is a 4xx JSON body
`{"error": ..., "details": [...]}` (`APIError`); a 500 means a bug in this file.

Backend state changes go through `Pool.set_state` / `Pool.set_weight` (the pool rebuilds
its selectable snapshot and the balancer its lookup structure), membership changes
through `ProxyRuntime.add_backend` / `remove_backend`.

Runtime changes are not written to the config file: a reload (SIGHUP or config/update)
rebuilds pools from the config, so backends added or removed here and weights set here
revert to the file, while drain/maint of a backend that stays in the file is kept (the
live `Backend` object survives the reload).

In a cluster (`daemon.cluster` set) membership and weights are configuration of the
whole cluster: adding or removing a backend and setting a weight become a change of
`pools.<pool>.backends` in the shared document, made through `change_config` exactly as
a `config/update` (on a follower: sent to the leader; on the leader: validated, stored
as the next version, applied; every node applies it). Backend *states* (drain, maint,
ready) stay node-local, as with HAProxy's per-process runtime API: they are not
configuration (a reload keeps them), a node may need to take a backend out for itself
(a broken network path from that node), and in-flight requests, which decide whether a
backend may be removed, are per node. `weight: 0` is the cluster-wide "no new traffic".
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from haproxyd.admin.errors import APIError, errors_middleware, pydantic_details
from haproxyd.admin.metrics import HaproxydCollector
from haproxyd.admin.openapi import openapi_document
from haproxyd.admin.ready import READY_PATH, ready_handler
from haproxyd.admin.security import guard_middleware
from haproxyd.admin.state import AdminState
from haproxyd.admin.status_page import STATUS_PAGE
from haproxyd.balancer.state import Backend, BackendState, Pool
from haproxyd.cluster.manager import (
    SHARED_SECTIONS,
    ClusterManager,
    ClusterUnavailable,
    ConfigConflict,
    shared_document,
)
from haproxyd.config.errors import format_path
from haproxyd.config.secrets import REDACTED, UnkeptSecrets, redact_secrets, restore_secrets
from haproxyd.proxy.runtime import check_buildable

if TYPE_CHECKING:
    from haproxyd.config import Config
    from haproxyd.daemon import Daemon

log = logging.getLogger("haproxyd.admin")

API = "/api/v1/ha"
STATE_KEY = web.AppKey("state", AdminState)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)

MAX_WAIT = 300.0  # seconds a DELETE ?wait= may hold the request
WAIT_POLL = 0.05
MAX_EVENTS = 10000
FORWARD_TIMEOUT = 10.0  # a follower waiting on the leader for a config change
FORWARDED_HEADER = "X-Haproxyd-Forwarded-By"  # a change a follower sent to the leader
# The admin server's socket and TLS context are made once, at startup.
RESTART_ONLY_ADMIN_FIELDS = ("address", "tls")


# -- helpers -----------------------------------------------------------------------------


def _state(request: web.Request) -> AdminState:
    return request.app[STATE_KEY]


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise APIError(400, "empty body", ["send a JSON object"])
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise APIError(400, "invalid JSON", [str(exc)[:200]]) from None
    if not isinstance(data, dict):
        raise APIError(400, "invalid body", ["the body must be a JSON object"])
    return data


def _query_number(
    request: web.Request, name: str, default: float, low: float, high: float, *, integer: bool
) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise APIError(400, f"invalid {name}", [f"{name} must be {kind}"]) from None
    if not low <= value <= high or value != value:
        raise APIError(400, f"invalid {name}", [f"{name} must be between {low:g} and {high:g}"])
    return value


def _pool_or_404(state: AdminState, name: str) -> Any:
    pool = state.find_pool(name)
    if pool is None:
        raise APIError(404, "no such pool", [f"no pool named {name!r}"])
    return pool


def _backend_or_404(state: AdminState, backend_id: str) -> tuple[Any, Backend]:
    found = state.find_backend(backend_id)
    if found is None:
        raise APIError(404, "no such backend", [f"no backend with id {backend_id!r}"])
    return found


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
    return web.json_response(await _state(request).status())


async def get_config(request: web.Request) -> web.Response:
    state = _state(request)
    data = redact_secrets(state.daemon.config.model_dump(mode="json"))
    return web.json_response({"config_version": state.daemon.config_version, "config": data})


async def lb_stats(request: web.Request) -> web.Response:
    state = _state(request)
    pool = request.query.get("pool")
    if pool is not None:
        _pool_or_404(state, pool)
    return web.json_response(state.lb_stats(pool))


async def list_backends(request: web.Request) -> web.Response:
    state = _state(request)
    pool = request.query.get("pool")
    if pool is not None:
        _pool_or_404(state, pool)
    return web.json_response({"backends": await state.backends(pool)})


async def get_backend(request: web.Request) -> web.Response:
    state = _state(request)
    pool, backend = _backend_or_404(state, request.match_info["id"])
    counters = await state.live_counters()
    return web.json_response(state.backend_view(pool, backend, counters))


async def health_checks(request: web.Request) -> web.Response:
    state = _state(request)
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
    return web.json_response(_state(request).cluster_status())


async def failover_events(request: web.Request) -> web.Response:
    state = _state(request)
    limit = int(_query_number(request, "limit", 100, 1, MAX_EVENTS, integer=True))
    pool = request.query.get("pool")
    return web.json_response(state.failover_events(limit, pool))


# -- runtime changes ---------------------------------------------------------------------

StateWord = Literal["ready", "drain", "maint"]


class BackendPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: Annotated[int, Strict()] | None = Field(
        None, ge=0, le=1000, description="New configured and effective weight."
    )
    state: StateWord | None = Field(
        None,
        description="ready: back to what health says; drain: no new requests, in-flight "
        "ones finish; maint: out of balancing and out of health checks.",
    )


class FailoverTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool: Annotated[str, Strict()] = Field(min_length=1, description="The pool to fail over.")
    to: Literal["backup", "primary"] | None = Field(
        None,
        description="backup: send traffic to the backups; primary: back to the primaries; "
        "absent: switch to whichever side is not serving now.",
    )
    backend: Annotated[str, Strict()] | None = Field(
        None,
        min_length=1,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="active_passive and manual pools: make this backend the active one "
        "(instead of `to`).",
    )
    reason: Annotated[str, Strict()] = Field(
        "manual failover via the admin API", max_length=500, description="Logged with the event."
    )

    @model_validator(mode="after")
    def _one_target(self) -> FailoverTrigger:
        if self.to is not None and self.backend is not None:
            raise ValueError("give `to` or `backend`, not both")
        return self


def _target_state(state: AdminState, pool: Pool, backend: Backend, word: str) -> BackendState:
    if word == "drain":
        return BackendState.DRAINING
    if word == "maint":
        return BackendState.MAINT
    # ready: end an operator's drain/maint; the health verdict decides what follows.
    if backend.state not in (BackendState.DRAINING, BackendState.MAINT):
        return backend.state
    health = state.health
    if health is not None and hasattr(health, "verdict"):
        return BackendState(health.verdict(pool.name, backend.id))
    return BackendState.UP


async def add_backend(request: web.Request) -> web.Response:
    from haproxyd.config.schema import BackendConfig

    state = _state(request)
    body = await _json_object(request)
    details = []
    pool_name = body.pop("pool", None)
    if not isinstance(pool_name, str) or not pool_name:
        details.append("pool: required, the name of an existing pool")
    word = body.pop("state", None)
    if word is not None and word not in ("ready", "drain", "maint"):
        details.append("state: must be one of ready, drain, maint")
    try:
        bcfg = BackendConfig.model_validate(body)
    except ValidationError as exc:
        details.extend(pydantic_details(exc))
        bcfg = None
    if details or bcfg is None:
        raise APIError(400, "invalid backend", details)
    assert isinstance(pool_name, str)
    pool_runtime = _pool_or_404(state, pool_name)
    existing = state.find_backend(bcfg.id)
    if existing is not None:
        raise APIError(
            409,
            "duplicate backend id",
            [f"backend {bcfg.id!r} exists in pool {existing[0].name!r}"],
        )
    cluster_fields: dict[str, Any] = {}
    if _cluster(state) is not None:
        # A backend of the cluster: a new version of the shared document adds it on
        # every node (a drain/maint `state` stays this node's, see the module docstring).
        entries = [*_configured_backends(state, pool_name), bcfg.model_dump(mode="json")]
        result = await _propose_backends(request, pool_name, entries)
        found = state.find_backend(bcfg.id)
        if found is None:
            return _not_applied_here(result)
        pool_runtime, backend = found
        cluster_fields = _cluster_fields(result)
    else:
        runtime = state.daemon.runtime
        assert runtime is not None
        failover = getattr(state.daemon, "failover", None)
        # Failover decides once, on the state health (and `state`) give the backend, not
        # on the moment it is UP before its first check (FailoverMachine.deferred).
        with failover.deferred() if failover is not None else contextlib.nullcontext():
            backend = runtime.add_backend(pool_name, bcfg)
        pool_runtime.pool.refresh()
    if word in ("drain", "maint"):
        pool_runtime.pool.set_state(bcfg.id, _target_state(state, pool_runtime.pool, backend, word))
    log.info("admin: added backend %s (%s) to pool %s", bcfg.id, backend.address, pool_name)
    view = state.backend_view(pool_runtime, backend, await state.live_counters())
    return web.json_response({**view, **cluster_fields}, status=201)


async def patch_backend(request: web.Request) -> web.Response:
    state = _state(request)
    pool_runtime, backend = _backend_or_404(state, request.match_info["id"])
    body = await _json_object(request)
    try:
        patch = BackendPatch.model_validate(body)
    except ValidationError as exc:
        raise APIError(400, "invalid change", pydantic_details(exc)) from None
    if patch.weight is None and patch.state is None:
        raise APIError(400, "invalid change", ["give weight and/or state"])
    cluster_fields: dict[str, Any] = {}
    if patch.weight is not None and _cluster(state) is not None:
        # The weight is configuration: the cluster's, changed through its leader. Only
        # once that succeeded does the (node-local) state change below happen, so a
        # refused change changes nothing.
        entries = _configured_backends(state, pool_runtime.name)
        entry = next((e for e in entries if e["id"] == backend.id), None)
        if entry is None:
            raise APIError(
                409,
                "backend not in the cluster config",
                [f"backend {backend.id!r} is not in pools.{pool_runtime.name}.backends"],
            )
        entry["weight"] = patch.weight
        result = await _propose_backends(request, pool_runtime.name, entries)
        found = state.find_backend(backend.id)
        if found is None:
            return _not_applied_here(result)
        # The reload rebuilt the pool object (the Backend object is kept).
        pool_runtime, backend = found
        cluster_fields = _cluster_fields(result)
    elif patch.weight is not None:
        pool_runtime.pool.set_weight(backend.id, patch.weight)
    if patch.state is not None:
        pool = pool_runtime.pool
        pool.set_state(backend.id, _target_state(state, pool, backend, patch.state))
    log.info(
        "admin: backend %s: weight=%s state=%s", backend.id, backend.weight, str(backend.state)
    )
    view = state.backend_view(pool_runtime, backend, await state.live_counters())
    return web.json_response({**view, **cluster_fields})


async def delete_backend(request: web.Request) -> web.Response:
    state = _state(request)
    backend_id = request.match_info["id"]
    _backend_or_404(state, backend_id)
    wait = _query_number(request, "wait", 0.0, 0.0, MAX_WAIT, integer=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        pool_runtime, backend = _backend_or_404(state, backend_id)
        admin_state = backend.state in (BackendState.MAINT, BackendState.DRAINING)
        if not admin_state:
            raise APIError(
                409,
                "backend not in maintenance",
                [
                    f"backend {backend_id!r} is {backend.state}: put it in maint or drain "
                    "first (PATCH state=maint|drain)"
                ],
            )
        # In flight on this process and, asked now, on every worker.
        counters = await state.live_counters()
        view = state.backend_view(pool_runtime, backend, counters)
        if view["active"] == 0:
            break
        if loop.time() >= deadline:
            raise APIError(
                409,
                "backend busy",
                [f"backend {backend_id!r} still has {view['active']} request(s) in flight"]
                + (["retry with ?wait=SECONDS"] if wait == 0 else [f"waited {wait:g}s"]),
            )
        await asyncio.sleep(WAIT_POLL)
    cluster_fields: dict[str, Any] = {}
    if _cluster(state) is not None:
        # Idle here (in maint or drained, nothing in flight on this node): every node
        # drops it with the new version; requests other nodes still have on it finish,
        # as with a reload that removes a backend from the file.
        entries = [
            e for e in _configured_backends(state, pool_runtime.name) if e["id"] != backend_id
        ]
        result = await _propose_backends(request, pool_runtime.name, entries)
        if state.find_backend(backend_id) is not None:
            return _not_applied_here(result)
        cluster_fields = _cluster_fields(result)
    else:
        runtime = state.daemon.runtime
        assert runtime is not None
        runtime.remove_backend(backend_id)
    state.stats.forget(pool_runtime.name, backend_id)
    log.info("admin: removed backend %s from pool %s", backend_id, pool_runtime.name)
    return web.json_response({"removed": view, **cluster_fields})


# -- runtime changes in a cluster --------------------------------------------------------


def _cluster(state: AdminState) -> ClusterManager | None:
    cluster: ClusterManager | None = getattr(state.daemon, "cluster", None)
    return cluster


def _configured_backends(state: AdminState, pool_name: str) -> list[dict[str, Any]]:
    """The running config's backends of `pool_name`, as the JSON of a config document.
    In a cluster that is the shared document this node runs: no backend exists there
    but through it."""
    pool = state.daemon.config.pools[pool_name]
    return [b.model_dump(mode="json") for b in pool.backends]


async def _propose_backends(
    request: web.Request, pool_name: str, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """A runtime change of a cluster node: `pools.<pool_name>.backends` becomes
    `entries`, through `change_config` like a config/update. The change was derived
    from the version this node runs, so it is made only against that version: had
    another change been stored meanwhile, merging this one onto it could undo it (409).
    `?version=N` must name that same version."""
    cluster = _cluster(_state(request))
    assert cluster is not None
    current = cluster.cluster_version
    asked = _base_version(request)
    if asked is not None and asked != current:
        detail = (
            f"stale change: based on version {asked}, the cluster is at version {current}"
            if asked < current
            else f"this node runs cluster version {current}, not yet {asked}: retry in a moment"
        )
        raise APIError(409, "cluster config not changed", [detail])
    document = {"pools": {pool_name: {"backends": entries}}}
    return await change_config(request, document, base_version=current)


def _no_longer_leader(cluster: ClusterManager) -> APIError:
    """For a call a follower forwarded here as to the leader, when this node is not the
    leader (any more): the follower passes the 503 on, and its caller retries."""
    return APIError(
        503,
        "no cluster leader",
        [f"{cluster.node_id} is not the cluster leader (any more): retry in a moment"],
    )


def _cluster_fields(result: dict[str, Any]) -> dict[str, Any]:
    """What a runtime change in a cluster adds to its answer: the version that holds it
    and, from a follower, the leader that stored it."""
    return {k: result[k] for k in ("cluster_version", "forwarded_to") if k in result}


def _not_applied_here(result: dict[str, Any]) -> web.Response:
    """The leader stored the change, but this node does not run it yet (it cannot reach
    Redis, or could not apply the version: see its log); it applies the version at its
    next version check. 202 with the config/update result: the change is made."""
    log.warning(
        "admin: cluster version %s stored by %s, not applied on this node yet",
        result.get("cluster_version"),
        result.get("forwarded_to", "this node"),
    )
    return web.json_response(result, status=202)


async def failover_trigger(request: web.Request) -> web.Response:
    """A forced failover through the daemon's failover state machine (the one mechanism
    that decides active sets); refused (409, nothing changed) when it cannot be done."""
    from haproxyd.failover.base import TriggerRefused

    state = _state(request)
    body = await _json_object(request)
    try:
        trigger = FailoverTrigger.model_validate(body)
    except ValidationError as exc:
        raise APIError(400, "invalid failover request", pydantic_details(exc)) from None
    pool_runtime = _pool_or_404(state, trigger.pool)
    if trigger.backend is not None and trigger.backend not in pool_runtime.pool.backends:
        raise APIError(
            400,
            "invalid failover request",
            [f"backend: pool {trigger.pool!r} has no backend {trigger.backend!r}"],
        )
    machine = state.daemon.failover
    cluster = _cluster(state)
    described = machine.describe(trigger.pool)
    if cluster is not None and described is not None and described["mode"] == "follower":
        # The leader decides this pool for the cluster: the trigger is its to carry out.
        if FORWARDED_HEADER in request.headers:
            raise _no_longer_leader(cluster)
        path = f"{API}/failover/trigger"
        return web.json_response(await _call_leader(request, cluster, path, body, {}))
    try:
        result = machine.trigger(
            trigger.pool, target=trigger.to, backend=trigger.backend, reason=trigger.reason
        )
    except KeyError as exc:
        raise APIError(404, "no such pool", [str(exc)]) from None
    except TriggerRefused as exc:
        raise APIError(409, "failover refused", [str(exc)]) from None
    log.warning(
        "admin: forced %s of pool %s onto %s (%s)",
        result["action"],
        trigger.pool,
        result["active"],
        trigger.reason,
    )
    return web.json_response(result)


async def config_update(request: web.Request) -> web.Response:
    mode = request.query.get("mode", "merge")
    if mode not in ("merge", "replace"):
        raise APIError(400, "invalid mode", ["mode must be merge or replace"])
    base_version = _base_version(request)
    document = await _json_object(request)
    return web.json_response(
        await change_config(request, document, mode=mode, base_version=base_version)
    )


async def change_config(
    request: web.Request,
    document: dict[str, Any],
    *,
    mode: str = "merge",
    base_version: int | None = None,
) -> dict[str, Any]:
    """The one way the admin API changes the configuration: `config/update`, and in a
    cluster the runtime changes of backends (add, weight, remove), which are changes of
    `pools`. Validated exactly as a SIGHUP reload; applied whole or not at all.

    In a cluster the shared sections (pools, routes) change only through the leader: a
    follower validates the change, then sends it there (the leader's answer is its
    answer, `forwarded_to` added, and it applies the new version before answering); the
    leader validates it, stores it as the next version (when `base_version` is given it
    must be the current version, else 409) and applies it. The other sections belong to
    the node called: a follower refuses a change of both kinds at once (400), and the
    leader takes only the shared sections of a follower's change. No leader, or Redis
    unreachable: 503. Returns the result body; raises APIError with nothing changed."""
    state = _state(request)
    daemon = state.daemon
    cluster = _cluster(state)
    forwarded = FORWARDED_HEADER in request.headers
    if (
        cluster is not None
        and not cluster.is_leader
        and (mode == "replace" or any(k in document for k in SHARED_SECTIONS))
    ):
        if forwarded:
            raise _no_longer_leader(cluster)
        running, cfg = _validated(daemon, document, mode)
        if _node_local(cfg) != _node_local(running):
            raise APIError(
                400,
                "mixed cluster and node change",
                [
                    f"in a cluster, {' and '.join(SHARED_SECTIONS)} change through the "
                    "leader for every node, the other sections on the node called only: "
                    "send them in separate calls"
                ],
            )
        return await _forward_to_leader(request, cluster, document, mode, base_version)
    async with state.lock:
        # A follower's change is one of the cluster's sections: this node keeps its own
        # node, listeners, admin... (the follower checked it changes nothing else).
        running, cfg = _validated(daemon, document, mode, shared_only=forwarded)
        if cfg == running:
            return {"applied": True, "changed": False, "config_version": daemon.config_version}
        cluster_version = None
        if cluster is not None and shared_document(cfg) != shared_document(running):
            try:
                check_buildable(cfg)  # never store a version the nodes cannot run
            except ValueError as exc:
                raise APIError(400, "configuration not applied", [str(exc)]) from None
            try:
                cluster_version = await cluster.update_config(
                    shared_document(cfg), base_version=base_version
                )
            except ConfigConflict as exc:
                raise APIError(409, "cluster config not changed", [str(exc)]) from None
            except ClusterUnavailable as exc:
                raise APIError(503, "no cluster leader", [str(exc)]) from None
        try:
            errors = await daemon.reload(cfg)
        except (ValueError, KeyError, OSError) as exc:
            # A config the schema accepts but the data plane cannot build (e.g. a
            # balancer that is not available): the daemon refuses it before swapping.
            log.error("admin: config/update not applied: %s", exc)
            daemon.reloads["error"] += 1
            raise APIError(400, "configuration not applied", [str(exc)]) from None
        if errors:
            raise APIError(400, "configuration not applied", errors)
        for name in RESTART_ONLY_ADMIN_FIELDS:
            if getattr(cfg.admin, name) != getattr(running.admin, name):
                log.warning("admin: admin.%s changed; it takes effect at the next restart", name)
    out: dict[str, Any] = {
        "applied": True,
        "changed": True,
        "config_version": daemon.config_version,
    }
    if cluster_version is not None:
        out["cluster_version"] = cluster_version
    return out


def _validated(
    daemon: Daemon, document: dict[str, Any], mode: str, *, shared_only: bool = False
) -> tuple[Config, Config]:
    """(the running config, the config `document` makes of it: merged onto it, or
    replacing it; with `shared_only`, in its shared sections only), validated exactly as
    a SIGHUP reload; 400 with every error (counted as a failed reload) when invalid."""
    from haproxyd.config import ConfigError, validate_document

    running = daemon.config
    current = running.model_dump(mode="json")
    data = deep_merge(current, document) if mode == "merge" else document
    if shared_only:
        data = {
            **{k: v for k, v in current.items() if k not in SHARED_SECTIONS},
            **{k: data[k] for k in SHARED_SECTIONS if k in data},
        }
    source = "admin config/update"
    try:
        # A secret posted back as GET /config showed it keeps its running value.
        data = restore_secrets(data, current)
    except UnkeptSecrets as exc:
        daemon.reloads["error"] += 1
        details = [
            f"{source}: {format_path(path)}: {REDACTED} keeps the running secret only "
            f"where GET {API}/config shows one so (a URL's password: with the same host); "
            "there is none here to keep: send the value itself"
            for path in exc.paths
        ]
        raise APIError(400, "invalid configuration", details) from None
    base_dir = daemon.config_path.parent if daemon.config_path is not None else None
    try:
        cfg = validate_document(data, source=source, base_dir=base_dir)
    except ConfigError as exc:
        daemon.reloads["error"] += 1
        raise APIError(400, "invalid configuration", [str(issue) for issue in exc.issues]) from None
    return running, cfg


def _node_local(cfg: Config) -> dict[str, Any]:
    """The sections of `cfg` that are each node's own in a cluster."""
    return cfg.model_dump(mode="json", exclude=set(SHARED_SECTIONS))


def _base_version(request: web.Request) -> int | None:
    """`?version=N`: the cluster config version the change was made against; a change
    based on an older version than the cluster's is refused (409)."""
    raw = request.query.get("version")
    if raw is None:
        return None
    try:
        version = int(raw)
    except ValueError:
        version = -1
    if version < 0:
        raise APIError(400, "invalid version", ["version must be a non-negative integer"])
    return version


async def _forward_to_leader(
    request: web.Request,
    cluster: ClusterManager,
    document: dict[str, Any],
    mode: str,
    base_version: int | None,
) -> dict[str, Any]:
    """Send a follower's change to the leader's `config/update`; its answer is ours.
    Once the leader has stored a new version this node applies it before answering, so
    that what the caller reads here next already shows the change."""
    params = {"mode": mode}
    if base_version is not None:
        params["version"] = str(base_version)
    body = await _call_leader(request, cluster, f"{API}/config/update", document, params)
    if body.get("changed"):
        await cluster.catch_up()
    return body


async def _call_leader(
    request: web.Request,
    cluster: ClusterManager,
    path: str,
    document: dict[str, Any],
    params: dict[str, str],
) -> dict[str, Any]:
    """POST `document` to the leader's admin API (with the caller's credentials) and
    return its JSON answer with `forwarded_to`; the leader's error is raised as ours,
    with its status and body. No leader, or none that answers: 503."""
    leader_id, leader = cluster.leader_id, cluster.leader_admin_url()
    if leader is None:
        raise APIError(
            503, "no cluster leader", ["the cluster has no leader now: retry in a moment"]
        )
    headers = {FORWARDED_HEADER: cluster.node_id}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)) as http,
            http.post(f"{leader}{path}", params=params, json=document, headers=headers) as response,
        ):
            body = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise APIError(
            503, "cluster leader unreachable", [f"{leader_id} at {leader}: {exc}"]
        ) from None
    forwarded = {"forwarded_to": leader_id}
    if not isinstance(body, dict):
        raise APIError(
            503, "cluster leader unreachable", [f"{leader_id}: not a JSON object"], forwarded
        )
    if status != 200:
        details = body.get("details")
        raise APIError(
            status,
            str(body.get("error") or f"HTTP {status} from the leader"),
            [str(d) for d in details] if isinstance(details, list) else [],
            forwarded,
        )
    return {**body, **forwarded}


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`patch` onto `base`: objects merge key by key, anything else (lists included)
    replaces. `null` sets a field to null (which resets it where the schema allows)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- the app -----------------------------------------------------------------------------


def build_app(state: AdminState) -> web.Application:
    guard = guard_middleware(lambda: state.daemon.config.admin)
    app = web.Application(middlewares=[errors_middleware, guard])
    app[STATE_KEY] = state
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HaproxydCollector(state))
    app[REGISTRY_KEY] = registry
    r = app.router
    r.add_get("/", status_page)
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_get("/metrics", metrics)
    r.add_get(READY_PATH, ready_handler(lambda request: _state(request).daemon))
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
