"""Changes of the configuration (`config/update`) and forced failovers: validated
exactly as a SIGHUP reload, applied whole or not at all; in a cluster, made through the
leader (`forwarding.py`)."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from haproxyd.admin.common import API, json_object, pool_or_404, request_state
from haproxyd.admin.errors import APIError, pydantic_details
from haproxyd.admin.forwarding import (
    FORWARDED_HEADER,
    base_version_of,
    call_leader,
    cluster_of,
    forward_to_leader,
    no_longer_leader,
)
from haproxyd.cluster.manager import (
    SHARED_SECTIONS,
    ClusterUnavailable,
    ConfigConflict,
    shared_document,
)
from haproxyd.config.errors import format_path
from haproxyd.config.secrets import REDACTED, UnkeptSecrets, restore_secrets
from haproxyd.proxy.runtime import check_buildable

if TYPE_CHECKING:
    from haproxyd.admin.host import AdminHost
    from haproxyd.config import Config

log = logging.getLogger("haproxyd.admin")

# The admin server's socket and TLS context are made once, at startup.
RESTART_ONLY_ADMIN_FIELDS = ("address", "tls")


class FailoverTrigger(BaseModel):
    """A forced failover of one pool."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"pool": "web", "to": "backup", "reason": "planned maintenance"}
        },
    )

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


async def failover_trigger(request: web.Request) -> web.Response:
    """A forced failover through the daemon's failover state machine (the one mechanism
    that decides active sets); refused (409, nothing changed) when it cannot be done."""
    from haproxyd.failover.base import TriggerRefused

    state = request_state(request)
    body = await json_object(request)
    try:
        trigger = FailoverTrigger.model_validate(body)
    except ValidationError as exc:
        raise APIError(400, "invalid failover request", pydantic_details(exc)) from None
    pool_runtime = pool_or_404(state, trigger.pool)
    if trigger.backend is not None and trigger.backend not in pool_runtime.state.backends:
        raise APIError(
            400,
            "invalid failover request",
            [f"backend: pool {trigger.pool!r} has no backend {trigger.backend!r}"],
        )
    machine = state.host.failover
    cluster = cluster_of(state)
    described = machine.describe(trigger.pool)
    if cluster is not None and described is not None and described["mode"] == "follower":
        # The leader decides this pool for the cluster: the trigger is its to carry out.
        if FORWARDED_HEADER in request.headers:
            raise no_longer_leader(cluster)
        path = f"{API}/failover/trigger"
        return web.json_response(await call_leader(request, cluster, path, body, {}))
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
    base_version = base_version_of(request)
    document = await json_object(request)
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
    state = request_state(request)
    host = state.host
    cluster = cluster_of(state)
    forwarded = FORWARDED_HEADER in request.headers
    if (
        cluster is not None
        and not cluster.is_leader
        and (mode == "replace" or any(k in document for k in SHARED_SECTIONS))
    ):
        if forwarded:
            raise no_longer_leader(cluster)
        running, cfg = _validated(host, document, mode)
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
        return await forward_to_leader(request, cluster, document, mode, base_version)
    async with state.lock:
        # A follower's change is one of the cluster's sections: this node keeps its own
        # node, listeners, admin... (the follower checked it changes nothing else).
        running, cfg = _validated(host, document, mode, shared_only=forwarded)
        if cfg == running:
            return {"applied": True, "changed": False, "config_version": host.config_version}
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
            errors = await host.reload(cfg)
        except (ValueError, KeyError, OSError) as exc:
            # A config the schema accepts but the data plane cannot build (e.g. a
            # balancer that is not available): the daemon refuses it before swapping.
            log.error("admin: config/update not applied: %s", exc)
            host.reloads["error"] += 1
            raise APIError(400, "configuration not applied", [str(exc)]) from None
        if errors:
            raise APIError(400, "configuration not applied", errors)
        for name in RESTART_ONLY_ADMIN_FIELDS:
            if getattr(cfg.admin, name) != getattr(running.admin, name):
                log.warning("admin: admin.%s changed; it takes effect at the next restart", name)
    out: dict[str, Any] = {
        "applied": True,
        "changed": True,
        "config_version": host.config_version,
    }
    if cluster_version is not None:
        out["cluster_version"] = cluster_version
    return out


def _validated(
    host: AdminHost, document: dict[str, Any], mode: str, *, shared_only: bool = False
) -> tuple[Config, Config]:
    """(the running config, the config `document` makes of it: merged onto it, or
    replacing it; with `shared_only`, in its shared sections only), validated exactly as
    a SIGHUP reload; 400 with every error (counted as a failed reload) when invalid."""
    from haproxyd.config import ConfigError, validate_document

    running = host.config
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
        host.reloads["error"] += 1
        details = [
            f"{source}: {format_path(path)}: {REDACTED} keeps the running secret only "
            f"where GET {API}/config shows one so (a URL's password: with the same host); "
            "there is none here to keep: send the value itself"
            for path in exc.paths
        ]
        raise APIError(400, "invalid configuration", details) from None
    base_dir = host.config_path.parent if host.config_path is not None else None
    try:
        cfg = validate_document(data, source=source, base_dir=base_dir)
    except ConfigError as exc:
        host.reloads["error"] += 1
        raise APIError(400, "invalid configuration", [str(issue) for issue in exc.issues]) from None
    return running, cfg


def _node_local(cfg: Config) -> dict[str, Any]:
    """The sections of `cfg` that are each node's own in a cluster."""
    return cfg.model_dump(mode="json", exclude=set(SHARED_SECTIONS))


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
