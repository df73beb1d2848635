"""What a cluster node learns of its peers over HTTP, and when it is fenced off.

Redis is the cluster's memory; the peers' admin APIs are a second view of it, so that a
node can tell "a peer is down" from "Redis is down" (`probes`) and know whether the
cluster goes on without it (`fencing_reason`, which GET /ready reports). Both are plain
functions of what they are given: `ClusterManager` runs them on its timers.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

PROBE_TIMEOUT = 1.0  # seconds for one peer's status


async def probe_peers(
    http: aiohttp.ClientSession, addresses: list[str], token: str | None
) -> tuple[dict[str, bool], dict[str, str | None]]:
    """Each peer's status, at once: whether it answered (under 500), and the cluster
    role it reported (None: unknown). Every node has the same admin token
    (docs/operations.md): with read_auth the status needs it, and the `role` is what
    `fencing_reason` weighs."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def probe(url: str) -> tuple[bool, str | None]:
        try:
            async with http.get(f"{url}/api/v1/ha/status", headers=headers) as response:
                role = None
                if response.status == 200:
                    with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                        body = await response.json()
                        role = body.get("role") if isinstance(body, dict) else None
                return response.status < 500, role if isinstance(role, str) else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False, None

    results = await asyncio.gather(*(probe(a) for a in addresses))
    probes = {a: ok for a, (ok, _) in zip(addresses, results, strict=True)}
    roles = {a: role for a, (_, role) in zip(addresses, results, strict=True)}
    return probes, roles


def fencing_reason(
    cut_off: float,
    *,
    record_ttl: float,
    lease_ttl: float,
    heartbeat: float,
    peer_roles: dict[str, str | None],
) -> str | None:
    """Why the cluster goes on without a node that Redis has not answered for
    `cut_off` seconds, or None. Fenced: longer than a member record lives (the others
    count it `lost`) while a peer it can reach leads the cluster; its failover
    decisions and config can then be stale, and a VIP belongs on a member. Redis down
    for every node is not fencing: no peer leads then, every node is degraded and
    keeps serving, and so should the VIP's holder.

    The wait also outlasts a leader that lost Redis too (it acts until its lease runs
    out by its own clock) plus one probe round, so such a leader's stale `role` is
    never taken for a cluster that goes on without this node."""
    if cut_off < max(record_ttl, lease_ttl) + heartbeat + PROBE_TIMEOUT:
        return None
    if not any(role == "leader" for role in peer_roles.values()):
        return None
    return (
        f"fenced off the cluster: Redis unreachable from this node for {cut_off:.0f}s "
        "while a peer leads the cluster"
    )
