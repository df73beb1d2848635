"""The admin API of a cluster node: runtime changes (add, weight, remove a backend) made
on any node go through the leader as new versions of the shared document and reach
every node; drain/maint stay node-local; stale changes are 409, changes without a leader
503, and nothing changes then; a cluster node's answers match the OpenAPI document.

Three daemons on one redis-server started by the fixture (heartbeat 200 ms, lease 2 s,
see helpers/cluster.py); every wait polls with a deadline.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from typing import Any

import pytest
from helpers.cluster import (
    HEARTBEAT,
    backend_weights,
    cluster_status,
    make_nodes,
    node_id,
    try_status,
    wait_for,
    wait_leader,
)
from helpers.failover import backend_state, served_by
from helpers.openapi_schema import assert_matches
from helpers.process import admin_base, admin_call, admin_json

pytestmark = pytest.mark.timeout(120)

BACKENDS = "/api/v1/ha/load-balancer/backends"
SYNC = 1.0  # the bound: a change is on every node within 1 s


def openapi(d: Any) -> dict[str, Any]:
    document: dict[str, Any] = admin_json(d, "/api/v1/openapi.json")
    return document


def versions(nodes: list[Any]) -> set[int]:
    return {cluster_status(n)["config_version"] for n in nodes}


def wait_version(nodes: list[Any], version: int) -> None:
    wait_for(f"every node on version {version}", lambda: versions(nodes) == {version}, nodes=nodes)


def wait_weights(nodes: list[Any], weights: dict[str, int], since: float) -> None:
    """Every node shows exactly `weights`, within SYNC of `since` (plus polling slack)."""
    for node in nodes:
        wait_for(
            f"{weights} on {node_id(node)}",
            lambda node=node: backend_weights(node) == weights,
            timeout=max(0.1, SYNC - (time.monotonic() - since)) + 0.5,
            nodes=nodes,
        )
    took = time.monotonic() - since
    assert took < SYNC + 0.5, f"the change took {took:.2f}s to reach every node"


def bootstrap(daemon: Any, redis_port: int, backends: list[Any]) -> tuple[list[Any], Any, int]:
    nodes = make_nodes(daemon, redis_port, backends=backends)
    leader, _ = wait_leader(nodes)
    version = wait_for(
        "the bootstrap config on every node",
        lambda: len(v := versions(nodes)) == 1 and min(v),
        nodes=nodes,
    )
    return nodes, leader, version


def test_runtime_changes_on_any_node_reach_every_node_through_the_leader(
    backend, daemon, redis_port
):
    b1, b2, b3 = backend("b1"), backend("b2"), backend("b3")
    nodes, leader, version = bootstrap(daemon, redis_port, [b1, b2])
    follower, other = (n for n in nodes if n is not leader)
    document = openapi(leader)

    # Added on a follower: forwarded to the leader, stored as the next version, and
    # already running on the follower when it answers (read your writes).
    sent = time.monotonic()
    status, body = admin_call(follower, "POST", BACKENDS, {"pool": "web", **b3.config()})
    assert status == 201, body
    assert_matches(document, "ChangedBackend", body)
    assert body["id"] == "b3" and body["pool"] == "web"
    assert body["forwarded_to"] == node_id(leader) and body["cluster_version"] == version + 1
    assert backend_weights(follower) == {"b1": 1, "b2": 1, "b3": 1}
    wait_weights(nodes, {"b1": 1, "b2": 1, "b3": 1}, sent)
    for node in nodes:  # and every node sends it traffic
        wait_for(
            f"b3 serving through {node_id(node)}",
            lambda node=node: "b3" in served_by(node, 6),
            nodes=nodes,
        )

    # A weight set on the leader itself: stored and applied there, then everywhere.
    sent = time.monotonic()
    status, body = admin_call(leader, "PATCH", f"{BACKENDS}/b3", {"weight": 5})
    assert status == 200, body
    assert_matches(document, "ChangedBackend", body)
    assert body["weight"] == 5 and body["cluster_version"] == version + 2
    assert "forwarded_to" not in body
    wait_weights(nodes, {"b1": 1, "b2": 1, "b3": 5}, sent)
    wait_version(nodes, version + 2)

    # Cluster changes outlive what the file says: a SIGHUP re-reads the file (no b3)
    # but keeps the cluster's pools; a restarted node catches up.
    reloads = admin_json(follower, "/api/v1/ha/status")["reloads"]["ok"]
    follower.send_signal(signal.SIGHUP)
    wait_for(
        "the SIGHUP reload",
        lambda: admin_json(follower, "/api/v1/ha/status")["reloads"]["ok"] > reloads,
        nodes=nodes,
    )
    assert backend_weights(follower) == {"b1": 1, "b2": 1, "b3": 5}
    other.stop()
    other.start()
    wait_for(
        "the restarted node to catch up",
        lambda: backend_weights(other) == {"b1": 1, "b2": 1, "b3": 5},
        nodes=nodes,
    )

    # drain/maint/ready are node-local: maint on one node leaves the others alone.
    status, body = admin_call(other, "PATCH", f"{BACKENDS}/b3", {"state": "maint"})
    assert status == 200 and body["state"] == "maint", body
    assert "cluster_version" not in body
    time.sleep(HEARTBEAT * 3)  # a bounded look: nothing else may move
    assert [backend_state(n, "b3") for n in (leader, follower)] == ["up", "up"]
    assert versions(nodes) == {version + 2}
    assert "b3" not in served_by(other, 6)

    # Removal: refused where b3 is in use (up, not in maint), nothing changes...
    status, body = admin_call(follower, "DELETE", f"{BACKENDS}/b3")
    assert status == 409 and body["error"] == "backend not in maintenance", body
    assert versions(nodes) == {version + 2}
    # ...done from the node where it is in maint and idle: gone from every node.
    sent = time.monotonic()
    status, body = admin_call(other, "DELETE", f"{BACKENDS}/b3")
    assert status == 200, body
    assert_matches(document, "Removed", body)
    assert body["removed"]["id"] == "b3" and body["removed"]["state"] == "maint"
    assert body["forwarded_to"] == node_id(leader) and body["cluster_version"] == version + 3
    assert backend_weights(other) == {"b1": 1, "b2": 1}
    wait_weights(nodes, {"b1": 1, "b2": 1}, sent)
    wait_version(nodes, version + 3)


def test_stale_changes_are_409_and_changes_without_a_leader_503_changing_nothing(
    backend, daemon, redis_port
):
    b1, b2, b3 = backend("b1"), backend("b2"), backend("b3")
    nodes, leader, version = bootstrap(daemon, redis_port, [b1, b2])
    follower = next(n for n in nodes if n is not leader)
    document = openapi(follower)
    before = {"b1": 1, "b2": 1}

    # The same validations and statuses as on a standalone node.
    status, body = admin_call(follower, "POST", BACKENDS, {"pool": "web", **b1.config()})
    assert status == 409 and body["error"] == "duplicate backend id", body
    status, body = admin_call(follower, "POST", BACKENDS, {"pool": "nope", **b3.config()})
    assert status == 404 and body["error"] == "no such pool", body
    status, body = admin_call(follower, "PATCH", f"{BACKENDS}/nope", {"weight": 2})
    assert status == 404, body
    status, body = admin_call(follower, "PATCH", f"{BACKENDS}/b1", {"weight": 1001})
    assert status == 400 and body["error"] == "invalid change", body
    status, body = admin_call(follower, "PATCH", f"{BACKENDS}/b1", {"weight": 2}, query="version=x")
    assert status == 400 and body["error"] == "invalid version", body

    # A change made against an older version: 409, nothing stored.
    status, body = admin_call(follower, "PATCH", f"{BACKENDS}/b1", {"weight": 3})
    assert status == 200 and body["cluster_version"] == version + 1, body
    stale = f"version={version}"
    for node in (follower, leader):
        status, body = admin_call(node, "PATCH", f"{BACKENDS}/b2", {"weight": 9}, query=stale)
        assert status == 409, body
        assert_matches(document, "Error", body)
        assert "stale" in " ".join(body["details"]), body
    # A config/update made against it too, through the follower: the leader's 409.
    change = {"pools": {"web": {"backends": [b1.config(), b2.config()]}}}
    status, body = admin_call(follower, "POST", "/api/v1/ha/config/update", change, query=stale)
    assert status == 409 and body["forwarded_to"] == node_id(leader), body
    assert_matches(document, "Error", body)
    # The current version is accepted.
    status, body = admin_call(
        follower, "PATCH", f"{BACKENDS}/b1", {"weight": 1}, query=f"version={version + 1}"
    )
    assert status == 200 and body["cluster_version"] == version + 2, body
    wait_weights(nodes, before, time.monotonic())

    # Without a leader (two nodes killed, quorum 2): 503, nothing changes.
    survivor = follower
    for node in nodes:
        if node is not survivor:
            node.proc.kill()
    wait_for(
        "the survivor to see no leader",
        lambda: (s := try_status(survivor)) and s["leader"] is None and not s["has_quorum"],
        timeout=HEARTBEAT * 3 + 1.0 + 3.0,
        nodes=[survivor],
    )
    calls = [
        ("POST", BACKENDS, {"pool": "web", **b3.config()}),
        ("PATCH", f"{BACKENDS}/b1", {"weight": 4}),
        ("POST", "/api/v1/ha/config/update", {"pools": {"web": {"retries": {"attempts": 0}}}}),
    ]
    for method, path, payload in calls:
        status, body = admin_call(survivor, method, path, payload)
        assert status == 503 and body["error"] == "no cluster leader", (path, body)
        assert_matches(document, "Error", body)
    status, body = admin_call(survivor, "PATCH", f"{BACKENDS}/b2", {"state": "maint"})
    assert status == 200, body  # node-local: no leader needed
    status, body = admin_call(survivor, "DELETE", f"{BACKENDS}/b2")
    assert status == 503, body
    assert backend_weights(survivor) == before
    assert backend_state(survivor, "b2") == "maint"
    assert cluster_status(survivor)["config_version"] == version + 2
    retries = admin_json(survivor, "/api/v1/ha/config")["config"]["pools"]["web"]["retries"]
    assert retries["attempts"] != 0


def test_a_cluster_nodes_status_matches_the_openapi_document(
    backend, daemon, redis_procs, redis_port
):
    nodes, leader, version = bootstrap(daemon, redis_port, [backend("b1")])
    document = openapi(leader)

    def checked(node: Any) -> dict[str, Any]:
        body = cluster_status(node)
        assert_matches(document, "ClusterStatus", body)
        return body

    status = wait_for(
        "every peer probed and every record on the bootstrap version",
        lambda: (
            (s := cluster_status(leader))
            and len(s["peers"]) == 2
            and all(p["reachable"] for p in s["peers"])
            and all(n["config_version"] == version for n in s["nodes"])
            and s
        ),
        nodes=nodes,
    )
    for node in nodes:
        body = checked(node)
        assert body["mode"] == "cluster" and body["state"] == "ok"
        assert body["config_version"] == version and body["redis"]["reachable"] is True
        assert body["redis"]["url"].startswith("redis://127.0.0.1:")
        assert body["local_fallback"] is False and body["health_consensus"] == "local"
        assert body["stale_writes_refused"] == 0
    by_id = {n["id"]: n for n in status["nodes"]}
    assert sorted(by_id) == ["node-1", "node-2", "node-3"]
    assert all(n["healthy"] and n["state"] == "up" for n in by_id.values())
    assert by_id[node_id(leader)]["role"] == "leader"

    # A lost node (its fields null) and a peer that does not answer.
    lost = next(n for n in nodes if n is not leader)
    lost.proc.kill()
    status = wait_for(
        "a lost node and an unreachable peer",
        lambda: (
            (s := checked(leader))
            and any(n["state"] == "lost" for n in s["nodes"])
            and not all(p["reachable"] for p in s["peers"])
            and s
        ),
        nodes=nodes,
    )
    gone = next(n for n in status["nodes"] if n["state"] == "lost")
    assert gone["id"] == node_id(lost) and gone["address"] is None and gone["reachable"] is None

    # Redis gone: degraded, with the error.
    redis_procs.kill(redis_port)
    status = wait_for(
        "degraded", lambda: (s := checked(leader)) and s["state"] == "degraded" and s, nodes=nodes
    )
    assert status["redis"]["reachable"] is False and status["redis"]["error"]
    assert isinstance(status["redis"]["last_contact"], float)
    # Nothing can be stored now: a change on any node is a 503, and changes nothing.
    alive = [n for n in nodes if n is not lost]
    for node in alive:
        status_code, body = admin_call(node, "PATCH", f"{BACKENDS}/b1", {"weight": 3})
        assert status_code == 503, (node_id(node), body)
        assert_matches(document, "Error", body)
    assert [backend_weights(n) for n in alive] == [{"b1": 1}] * len(alive)
    # The page the operator opens answers too (it polls this same endpoint).
    with urllib.request.urlopen(admin_base(leader) + "/", timeout=5) as response:
        assert response.status == 200


def test_a_follower_sends_the_leader_only_the_clusters_sections(backend, daemon, redis_port):
    b1, b2 = backend("b1"), backend("b2")
    nodes, leader, version = bootstrap(daemon, redis_port, [b1, b2])
    follower = next(n for n in nodes if n is not leader)
    update = "/api/v1/ha/config/update"

    def timeouts(node: Any) -> str:
        return str(admin_json(node, "/api/v1/ha/config")["config"]["timeouts"]["response"])

    before = {n: timeouts(n) for n in nodes}
    # pools (every node's, through the leader) and timeouts (this node's) at once: 400.
    mixed = {
        "pools": {"web": {"backends": [{**b1.config(), "weight": 4}, b2.config()]}},
        "timeouts": {"response": "9s"},
    }
    status, body = admin_call(follower, "POST", update, mixed)
    assert status == 400 and body["error"] == "mixed cluster and node change", body
    assert versions(nodes) == {version}
    assert {n: timeouts(n) for n in nodes} == before
    assert {backend_weights(n)["b1"] for n in nodes} == {1}

    # A node section alone: this node only, nothing sent to the leader.
    status, body = admin_call(follower, "POST", update, {"timeouts": {"response": "9s"}})
    assert status == 200 and body["changed"], body
    assert "forwarded_to" not in body and "cluster_version" not in body
    assert timeouts(follower) == "9s" != before[follower]
    assert timeouts(leader) == before[leader]

    # The follower's whole config, its pools edited (mode=replace can drop a backend):
    # the leader takes the pools and keeps its own node, listeners and timeouts.
    doc = admin_json(follower, "/api/v1/ha/config")["config"]
    doc["pools"]["web"]["backends"] = [b2.config()]
    sent = time.monotonic()
    status, body = admin_call(follower, "POST", update, doc, query="mode=replace")
    assert status == 200, body
    assert body["forwarded_to"] == node_id(leader) and body["cluster_version"] == version + 1
    wait_weights(nodes, {"b2": 1}, sent)
    mine = admin_json(leader, "/api/v1/ha/config")["config"]
    assert mine["node"]["id"] == node_id(leader)
    assert mine["listeners"][0]["address"].endswith(f":{leader.port}")
    assert timeouts(leader) == before[leader] and timeouts(follower) == "9s"
    assert {"b2"} == set(served_by(leader, 4)) == set(served_by(follower, 4))
