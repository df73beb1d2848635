"""Helpers of the cluster integration tests: several daemons on one redis-server.

`make_nodes(daemon, redis_port, count, pools)` builds `count` daemons (`node-1`...),
each naming the others in `discovery_servers`, with a fast heartbeat (200 ms) and a
short lease (2 s) so that a new election takes a couple of seconds; a unique key prefix
keeps tests apart even on a shared Redis. The rest polls the admin API with deadlines.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from helpers.daemon import Daemon
from helpers.process import admin_json

HEARTBEAT = 0.2
# Not 1 s: on a two-core machine under `stress-ng --cpu 2` a leader's loop was once held
# off its renewals for a second, and a test about something else met "no cluster leader".
LEASE = 2.0


def make_nodes(
    daemon: Callable[..., Daemon],
    redis_port: int,
    count: int = 3,
    *,
    pools: dict[str, Any] | None = None,
    backends: list[Any] | None = None,
    cluster: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    start: bool = True,
) -> list[Daemon]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    nodes = []
    for i in range(1, count + 1):
        settings = {
            "enabled": True,
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "quorum_size": 2,
            "heartbeat_interval": f"{int(HEARTBEAT * 1000)}ms",
            "lease_ttl": f"{LEASE:g}s",
            "key_prefix": prefix,
            **(cluster or {}),
        }
        node_extra = {**(extra or {}), "node": {"id": f"node-{i}"}, "cluster": settings}
        nodes.append(daemon(backends, pools=pools, extra=node_extra, start=False))
    for node in nodes:
        node.config["cluster"]["discovery_servers"] = [
            other.config["admin"]["address"] for other in nodes if other is not node
        ]
    if start:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_ready()
    return nodes


def cluster_status(d: Daemon, timeout: float = 2.0) -> dict[str, Any]:
    status: dict[str, Any] = admin_json(d, "/api/v1/ha/cluster/status", timeout=timeout)
    return status


def try_status(d: Daemon) -> dict[str, Any] | None:
    try:
        return cluster_status(d)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def wait_for(
    what: str, probe: Callable[[], Any], *, timeout: float = 10.0, nodes: list[Daemon] = ()
) -> Any:
    """Poll `probe()` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            diag = "\n".join(n.diag(3000) for n in nodes)
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diag}")
        time.sleep(0.05)


def agreed_leader(nodes: list[Daemon]) -> tuple[Daemon, int] | None:
    """(the leader, its term) when every node in `nodes` names the same leader and
    term and exactly that one says it leads; None otherwise."""
    statuses = [try_status(n) for n in nodes]
    if any(s is None for s in statuses):
        return None
    leaders = {(s["leader"], s["term"]) for s in statuses}  # type: ignore[index]
    acting = [n for n, s in zip(nodes, statuses, strict=True) if s["is_leader"]]  # type: ignore[index]
    if len(leaders) != 1 or len(acting) != 1:
        return None
    (leader_id, term) = leaders.pop()
    if acting[0].config["node"]["id"] != leader_id:
        return None
    return acting[0], term


def wait_leader(nodes: list[Daemon], timeout: float = 10.0) -> tuple[Daemon, int]:
    result: tuple[Daemon, int] = wait_for(
        "one leader that every node agrees on", lambda: agreed_leader(nodes),
        timeout=timeout, nodes=nodes,
    )  # fmt: skip
    return result


def node_id(d: Daemon) -> str:
    return str(d.config["node"]["id"])


def backend_weights(d: Daemon) -> dict[str, int] | None:
    try:
        body = admin_json(d, "/api/v1/ha/load-balancer/backends", timeout=2.0)
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return {b["id"]: b["weight"] for b in body["backends"]}
