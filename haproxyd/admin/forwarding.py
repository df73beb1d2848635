"""Cluster forwarding: a change a follower cannot make itself goes to the leader.

In a cluster (`host.cluster` set) `pools` and `routes` change only through the leader
(see `changes.change_config`): a follower validates a change, then posts it to the
leader's admin API with the caller's credentials and `FORWARDED_HEADER`; the leader's
answer, error or not, becomes the follower's, with `forwarded_to`. A forwarded call that
reaches a node which is no longer the leader gets 503, so that the caller retries.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from aiohttp import web

from haproxyd.admin.common import API
from haproxyd.admin.errors import APIError
from haproxyd.admin.state import AdminState
from haproxyd.cluster.manager import ClusterManager

log = logging.getLogger("haproxyd.admin")

FORWARD_TIMEOUT = 10.0  # a follower waiting on the leader for a config change
FORWARDED_HEADER = "X-Haproxyd-Forwarded-By"  # a change a follower sent to the leader


def cluster_of(state: AdminState) -> ClusterManager | None:
    cluster: ClusterManager | None = state.host.cluster
    return cluster


def no_longer_leader(cluster: ClusterManager) -> APIError:
    """For a call a follower forwarded here as to the leader, when this node is not the
    leader (any more): the follower passes the 503 on, and its caller retries."""
    return APIError(
        503,
        "no cluster leader",
        [f"{cluster.node_id} is not the cluster leader (any more): retry in a moment"],
    )


def cluster_fields_of(result: dict[str, Any]) -> dict[str, Any]:
    """What a runtime change in a cluster adds to its answer: the version that holds it
    and, from a follower, the leader that stored it."""
    return {k: result[k] for k in ("cluster_version", "forwarded_to") if k in result}


def not_applied_here(result: dict[str, Any]) -> web.Response:
    """The leader stored the change, but this node does not run it yet (it cannot reach
    Redis, or could not apply the version: see its log); it applies the version at its
    next version check. 202 with the config/update result: the change is made."""
    log.warning(
        "admin: cluster version %s stored by %s, not applied on this node yet",
        result.get("cluster_version"),
        result.get("forwarded_to", "this node"),
    )
    return web.json_response(result, status=202)


def base_version_of(request: web.Request) -> int | None:
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


async def forward_to_leader(
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
    body = await call_leader(request, cluster, f"{API}/config/update", document, params)
    if body.get("changed"):
        await cluster.catch_up()
    return body


async def call_leader(
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
