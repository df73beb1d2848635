"""Runtime changes of backends: add, change (weight, drain/maint/ready), remove.

Backend state changes go through `Pool.set_state` / `Pool.set_weight` (the pool rebuilds
its selectable snapshot and the balancer its lookup structure), membership changes
through `ProxyRuntime.add_backend` / `remove_backend`.

Runtime changes are not written to the config file: a reload (SIGHUP or config/update)
rebuilds pools from the config, so backends added or removed here and weights set here
revert to the file, while drain/maint of a backend that stays in the file is kept (the
live `Backend` object survives the reload).

In a cluster (`host.cluster` set) membership and weights are configuration of the
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
import logging
from typing import Annotated, Any, Literal, get_args

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from haproxyd.admin.changes import change_config
from haproxyd.admin.common import (
    backend_or_404,
    json_object,
    pool_or_404,
    query_number,
    request_state,
)
from haproxyd.admin.errors import APIError, pydantic_details
from haproxyd.admin.forwarding import (
    base_version_of,
    cluster_fields_of,
    cluster_of,
    not_applied_here,
)
from haproxyd.admin.state import AdminState
from haproxyd.balancer.state import Backend, BackendState, Pool
from haproxyd.config.schema import BackendConfig

log = logging.getLogger("haproxyd.admin")

MAX_WAIT = 300.0  # seconds a DELETE ?wait= may hold the request
WAIT_POLL = 0.05

StateWord = Literal["ready", "drain", "maint"]
STATE_WORDS: tuple[str, ...] = get_args(StateWord)


class BackendPatch(BaseModel):
    """A change of a backend: its weight, its state, or both."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"minProperties": 1, "example": {"state": "drain"}}
    )

    weight: Annotated[int, Strict()] | None = Field(
        None, ge=0, le=1000, description="New configured and effective weight."
    )
    state: StateWord | None = Field(
        None,
        description="ready: end a drain/maint (health decides up or down); drain: no new "
        "requests, in-flight ones finish, health checks go on; maint: out of balancing and "
        "out of health checks.",
    )


class NewBackend(BackendConfig):
    """A backend to add: a backend of the config (`pools.<pool>.backends[]`), the pool
    it joins, and the state it starts in. `add_backend` reads `pool` and `state` and
    validates the rest as the `BackendConfig` it is."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"pool": "web", "id": "web-4", "address": "127.0.0.1:9004", "weight": 1}
        }
    )

    pool: str = Field(min_length=1, description="An existing pool.")
    state: StateWord | None = Field(
        None, description="Start drained or in maintenance (default: ready)."
    )


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
    state = request_state(request)
    body = await json_object(request)
    details = []
    pool_name = body.pop("pool", None)
    if not isinstance(pool_name, str) or not pool_name:
        details.append("pool: required, the name of an existing pool")
    word = body.pop("state", None)
    if word is not None and word not in STATE_WORDS:
        details.append(f"state: must be one of {', '.join(STATE_WORDS)}")
    try:
        bcfg = BackendConfig.model_validate(body)
    except ValidationError as exc:
        details.extend(pydantic_details(exc))
        bcfg = None
    if details or bcfg is None:
        raise APIError(400, "invalid backend", details)
    assert isinstance(pool_name, str)
    pool_runtime = pool_or_404(state, pool_name)
    existing = state.find_backend(bcfg.id)
    if existing is not None:
        raise APIError(
            409,
            "duplicate backend id",
            [f"backend {bcfg.id!r} exists in pool {existing[0].name!r}"],
        )
    cluster_fields: dict[str, Any] = {}
    if cluster_of(state) is not None:
        # A backend of the cluster: a new version of the shared document adds it on
        # every node (a drain/maint `state` stays this node's, see the module docstring).
        entries = [*_configured_backends(state, pool_name), bcfg.model_dump(mode="json")]
        result = await _propose_backends(request, pool_name, entries)
        found = state.find_backend(bcfg.id)
        if found is None:
            return not_applied_here(result)
        pool_runtime, backend = found
        cluster_fields = cluster_fields_of(result)
    else:
        runtime = state.host.runtime
        assert runtime is not None
        failover = state.host.failover
        # Failover decides once, on the state health (and `state`) give the backend, not
        # on the moment it is UP before its first check (FailoverMachine.deferred).
        with failover.deferred() if failover is not None else contextlib.nullcontext():
            backend = runtime.add_backend(pool_name, bcfg)
        pool_runtime.state.refresh()
    if word in ("drain", "maint"):
        live = pool_runtime.state
        live.set_state(bcfg.id, _target_state(state, live, backend, word))
    log.info("admin: added backend %s (%s) to pool %s", bcfg.id, backend.address, pool_name)
    view = state.backend_view(pool_runtime, backend, await state.live_counters())
    return web.json_response({**view, **cluster_fields}, status=201)


async def patch_backend(request: web.Request) -> web.Response:
    state = request_state(request)
    pool_runtime, backend = backend_or_404(state, request.match_info["id"])
    body = await json_object(request)
    try:
        patch = BackendPatch.model_validate(body)
    except ValidationError as exc:
        raise APIError(400, "invalid change", pydantic_details(exc)) from None
    if patch.weight is None and patch.state is None:
        raise APIError(400, "invalid change", ["give weight and/or state"])
    cluster_fields: dict[str, Any] = {}
    if patch.weight is not None and cluster_of(state) is not None:
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
            return not_applied_here(result)
        # The reload rebuilt the pool object (the Backend object is kept).
        pool_runtime, backend = found
        cluster_fields = cluster_fields_of(result)
    elif patch.weight is not None:
        pool_runtime.state.set_weight(backend.id, patch.weight)
    if patch.state is not None:
        pool = pool_runtime.state
        pool.set_state(backend.id, _target_state(state, pool, backend, patch.state))
    log.info(
        "admin: backend %s: weight=%s state=%s", backend.id, backend.weight, str(backend.state)
    )
    view = state.backend_view(pool_runtime, backend, await state.live_counters())
    return web.json_response({**view, **cluster_fields})


async def delete_backend(request: web.Request) -> web.Response:
    state = request_state(request)
    backend_id = request.match_info["id"]
    backend_or_404(state, backend_id)
    wait = query_number(request, "wait", 0.0, 0.0, MAX_WAIT, integer=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        pool_runtime, backend = backend_or_404(state, backend_id)
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
    if cluster_of(state) is not None:
        # Idle here (in maint or drained, nothing in flight on this node): every node
        # drops it with the new version; requests other nodes still have on it finish,
        # as with a reload that removes a backend from the file.
        entries = [
            e for e in _configured_backends(state, pool_runtime.name) if e["id"] != backend_id
        ]
        result = await _propose_backends(request, pool_runtime.name, entries)
        if state.find_backend(backend_id) is not None:
            return not_applied_here(result)
        cluster_fields = cluster_fields_of(result)
    else:
        runtime = state.host.runtime
        assert runtime is not None
        runtime.remove_backend(backend_id)
    state.stats.forget(pool_runtime.name, backend_id)
    log.info("admin: removed backend %s from pool %s", backend_id, pool_runtime.name)
    return web.json_response({"removed": view, **cluster_fields})


# -- in a cluster: a change of the shared document --


def _configured_backends(state: AdminState, pool_name: str) -> list[dict[str, Any]]:
    """The running config's backends of `pool_name`, as the JSON of a config document.
    In a cluster that is the shared document this node runs: no backend exists there
    but through it."""
    pool = state.host.config.pools[pool_name]
    return [b.model_dump(mode="json") for b in pool.backends]


async def _propose_backends(
    request: web.Request, pool_name: str, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """A runtime change of a cluster node: `pools.<pool_name>.backends` becomes
    `entries`, through `change_config` like a config/update. The change was derived
    from the version this node runs, so it is made only against that version: had
    another change been stored meanwhile, merging this one onto it could undo it (409).
    `?version=N` must name that same version."""
    cluster = cluster_of(request_state(request))
    assert cluster is not None
    current = cluster.cluster_version
    asked = base_version_of(request)
    if asked is not None and asked != current:
        detail = (
            f"stale change: based on version {asked}, the cluster is at version {current}"
            if asked < current
            else f"this node runs cluster version {current}, not yet {asked}: retry in a moment"
        )
        raise APIError(409, "cluster config not changed", [detail])
    document = {"pools": {pool_name: {"backends": entries}}}
    return await change_config(request, document, base_version=current)
