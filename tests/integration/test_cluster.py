"""Three haproxyd nodes on one redis-server (started by the fixture, on its own port):
leader election and replacement, fencing of a paused leader, config sync through the
leader with stale changes refused, one failover decision for the whole cluster under
load, quorum loss, and a Redis outage under load.

Heartbeats every 200 ms and a 2 s lease keep each test to a few seconds; every wait is
a poll with a deadline, and the deadlines the issue sets (a leader within 3 s, a new one
within lease + 1 s, config on every node within 1 s) are asserted as measured here.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from helpers.cluster import (
    HEARTBEAT,
    LEASE,
    backend_weights,
    cluster_status,
    make_nodes,
    node_id,
    try_status,
    wait_for,
    wait_leader,
)
from helpers.failover import CHECK, decision, wait_decision, wait_up
from helpers.process import LoadLoop, post_json

from haproxyd.cluster.store import ClusterStore, Lease, StaleWrite, connect

pytestmark = pytest.mark.timeout(120)


def active_passive(primary: Any, standby: Any) -> dict[str, Any]:
    return {
        "web": {
            "health_checks": [CHECK],
            "failover": {"strategy": "active_passive", "failback": "manual"},
            "backends": [primary.config(), {**standby.config(), "role": "backup"}],
        }
    }


def test_a_leader_is_elected_and_a_killed_one_replaced_with_a_higher_term(
    backend, daemon, redis_port
):
    nodes = make_nodes(daemon, redis_port, backends=[backend("b1")])
    # Within 3 s of the nodes being up (make_nodes returns once each one listens): the
    # time to start three Python processes on a loaded machine is not the election's.
    leader, term = wait_leader(nodes, timeout=3.0)
    status = wait_for(
        "every node registered",
        lambda: (
            (s := cluster_status(leader))
            and sorted(n["id"] for n in s["nodes"] if n["state"] == "up")
            == ["node-1", "node-2", "node-3"]
            and s
        ),
        nodes=nodes,
    )
    assert status["state"] == "ok" and status["has_quorum"] and status["quorum"] == 2
    followers = [n for n in nodes if n is not leader]
    assert {cluster_status(n)["role"] for n in followers} == {"follower"}
    # Every peer also answers over HTTP (so "peer down" can be told from "Redis down").
    wait_for(
        "peer probes",
        lambda: all(p["reachable"] for p in cluster_status(leader)["peers"]),
        nodes=nodes,
    )

    leader.proc.kill()  # SIGKILL: no clean leave, the lease must run out
    killed = time.monotonic()
    new_leader, new_term = wait_leader(followers, timeout=LEASE + 1.0 + 1.0)
    took = time.monotonic() - killed
    assert new_term > term
    assert took < LEASE + 1.0, f"a new leader after {took:.2f}s"
    lost = wait_for(
        "the dead node reported lost",
        lambda: [n for n in cluster_status(new_leader)["nodes"] if n["state"] == "lost"],
        nodes=followers,
    )
    assert [n["id"] for n in lost] == [node_id(leader)]
    metrics = _metrics(new_leader)
    assert 'haproxyd_cluster_nodes{state="lost"} 1.0' in metrics
    assert "haproxyd_cluster_is_leader 1.0" in metrics
    assert f"haproxyd_cluster_term {float(new_term)}" in metrics


async def serve_more(loads: list[LoadLoop], count: int) -> None:
    """Wait until every load loop has had `count` more requests answered."""
    marks = [load.stats.ok for load in loads]
    for load, mark in zip(loads, marks, strict=True):
        await load.wait_ok(mark + count)


def assert_no_failures(nodes: list[Any], stats: list[Any]) -> None:
    for node, result in zip(nodes, stats, strict=True):
        assert not result.failures, (node_id(node), [str(f) for f in result.failures[:5]])


def _metrics(d: Any) -> str:
    import urllib.request

    address = d.config["admin"]["address"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_a_paused_leader_is_fenced_and_steps_down(backend, daemon, redis_port):
    primary, standby = backend("primary"), backend("standby")
    nodes = make_nodes(daemon, redis_port, pools=active_passive(primary, standby))
    leader, term = await asyncio.to_thread(wait_leader, nodes)
    for node in nodes:
        await asyncio.to_thread(wait_up, node, "primary", "standby")
        await asyncio.to_thread(wait_decision, node, ["primary"])
    followers = [n for n in nodes if n is not leader]
    old_lease = Lease(f"{node_id(leader)}|{term}", term)
    leader.send_signal(signal.SIGSTOP)
    try:
        new_leader, new_term = await asyncio.to_thread(wait_leader, followers, LEASE + 1.0 + 2.0)
        assert new_term > term
        # While the old leader is frozen the cluster fails over under the new one.
        primary.stop()
        for node in followers:
            await asyncio.to_thread(wait_decision, node, ["standby"])
        # A write the old leader had in flight, with its old term and lease, is refused
        # by Redis itself.
        store = ClusterStore(
            connect(f"redis://127.0.0.1:{redis_port}/0", timeout=1.0),
            leader.config["cluster"]["key_prefix"],
        )
        try:
            with pytest.raises(StaleWrite) as info:
                stale = {"pool": "web", "strategy": "active_passive", "active": ["primary"],
                         "version": 999, "reason": "stale", "since": 0.0}  # fmt: skip
                await store.write_decision(old_lease, stale)
            assert "stale term" in info.value.reason
            stored = (await store.decisions(["web"]))["web"]
            assert stored["active"] == ["standby"] and stored["term"] == new_term
        finally:
            await store.close()
    finally:
        leader.send_signal(signal.SIGCONT)
    # Awake again: it must not act as leader, and must route by the new leader's decision.
    status = await asyncio.to_thread(
        wait_for,
        "the old leader to step down",
        lambda: (s := try_status(leader)) and not s["is_leader"] and s["term"] >= new_term and s,
        nodes=nodes,
    )
    assert status["leader"] == node_id(new_leader)
    for node in nodes:
        await asyncio.to_thread(wait_decision, node, ["standby"])
    # One leader again, never the paused one in its old term (on a loaded machine the
    # lease may have moved once more meanwhile: only a newer term may lead).
    current, current_term = await asyncio.to_thread(wait_leader, nodes)
    assert current_term >= new_term and (current is not leader or current_term > new_term)
    assert decision(leader)["active"] == ["standby"]


def test_config_change_on_a_follower_reaches_every_node_and_a_stale_one_is_refused(
    backend, daemon, redis_port
):
    b1, b2 = backend("b1"), backend("b2")
    nodes = make_nodes(daemon, redis_port, backends=[b1, b2])
    leader, _ = wait_leader(nodes)
    follower = next(n for n in nodes if n is not leader)
    version = wait_for(
        "the bootstrap config", lambda: cluster_status(follower)["config_version"], nodes=nodes
    )
    change = {"pools": {"web": {"backends": [{**b1.config(), "weight": 7}, b2.config()]}}}
    sent = time.monotonic()
    status, body = post_json(follower, "/api/v1/ha/config/update", change)
    assert status == 200, body
    assert body["forwarded_to"] == node_id(leader) and body["cluster_version"] == version + 1
    for node in nodes:
        wait_for(
            f"the new weight on {node_id(node)}",
            lambda node=node: (backend_weights(node) or {}).get("b1") == 7,
            timeout=1.0 - (time.monotonic() - sent) + 0.5,
            nodes=nodes,
        )
    assert time.monotonic() - sent < 1.0 + 0.5
    for node in nodes:
        wait_for(
            "every node on the new version",
            lambda node=node: cluster_status(node)["config_version"] == version + 1,
            nodes=nodes,
        )
    # Another change made against the version before: refused, nothing changes.
    stale = {"pools": {"web": {"backends": [{**b1.config(), "weight": 1}, b2.config()]}}}
    status, body = post_json(
        follower, "/api/v1/ha/config/update", stale, query=f"version={version}"
    )
    assert status == 409, body
    assert "stale" in " ".join(body["details"])
    time.sleep(HEARTBEAT * 3)  # a bounded look: nothing may have moved
    assert {node_id(n): backend_weights(n)["b1"] for n in nodes} == dict.fromkeys(
        map(node_id, nodes), 7
    )
    # The current version is accepted.
    status, body = post_json(
        leader, "/api/v1/ha/config/update", stale, query=f"version={version + 1}"
    )
    assert status == 200 and body["cluster_version"] == version + 2, body


async def test_primary_killed_under_load_every_node_switches_to_the_same_backup(
    backend, daemon, redis_port
):
    primary, standby = backend("primary"), backend("standby")
    nodes = make_nodes(daemon, redis_port, pools=active_passive(primary, standby))
    await asyncio.to_thread(wait_leader, nodes)
    for node in nodes:
        await asyncio.to_thread(wait_up, node, "primary", "standby")
        await asyncio.to_thread(wait_decision, node, ["primary"])
    loads = [LoadLoop(n.port, clients=3, path="/echo", duration=40).start() for n in nodes]
    try:
        for load in loads:
            await load.wait_ok(100)
        primary.stop()
        decided = [await asyncio.to_thread(wait_decision, n, ["standby"]) for n in nodes]
        await serve_more(loads, 100)
    finally:
        stats = [await load.stop() for load in loads]
    assert_no_failures(nodes, stats)
    # One decision for the cluster: the same version and reason everywhere.
    assert len({(d["version"], d["reason"]) for d in decided}) == 1, decided


def test_without_quorum_the_survivor_stops_making_decisions(backend, daemon, redis_port):
    primary, standby = backend("primary"), backend("standby")
    nodes = make_nodes(daemon, redis_port, pools=active_passive(primary, standby))
    wait_leader(nodes)
    survivor = nodes[0]
    wait_decision(survivor, ["primary"])
    for node in nodes[1:]:
        node.proc.kill()
    status = wait_for(
        "the survivor to notice the lost quorum",
        lambda: (s := try_status(survivor)) and not s["has_quorum"] and s,
        timeout=HEARTBEAT * 3 + LEASE + 2.0,
        nodes=[survivor],
    )
    assert status["state"] == "no_quorum" and not status["is_leader"]
    assert status["role"] != "leader"
    before = decision(survivor)
    primary.stop()
    # Its own checks see the primary down, but nobody may fail the cluster over now.
    wait_for(
        "the local verdict",
        lambda: any(c["backend"] == "primary" and c["status"] == "down" for c in _checks(survivor)),
        nodes=[survivor],
    )
    time.sleep(HEARTBEAT * 3)
    after = decision(survivor)
    assert after["active"] == ["primary"] and after["version"] == before["version"], after


def _checks(d: Any) -> list[dict[str, Any]]:
    from helpers.process import admin_json

    return admin_json(d, "/api/v1/ha/health-checks")["checks"]


async def test_redis_outage_under_load_costs_nothing_and_the_cluster_reconverges(
    backend, daemon, redis_procs, redis_port
):
    b1, b2 = backend("b1"), backend("b2")
    nodes = make_nodes(daemon, redis_port, pools=active_passive(b1, b2))
    _, term = await asyncio.to_thread(wait_leader, nodes)
    for node in nodes:
        # Start-up over on every node first: a node whose own first checks have not
        # passed yet answers 503 by design (init_state), which is not the outage's cost.
        await asyncio.to_thread(wait_up, node, "b1", "b2")
        await asyncio.to_thread(wait_decision, node, ["b1"])
    loads = [LoadLoop(n.port, clients=2, path="/echo", duration=60).start() for n in nodes]
    try:
        for load in loads:
            await load.wait_ok(50)
        redis_procs.kill(redis_port)
        for node in nodes:
            await asyncio.to_thread(
                wait_for,
                "degraded",
                lambda node=node: (s := try_status(node)) and s["state"] == "degraded",
                nodes=nodes,
            )
        assert "haproxyd_cluster_redis_up 0.0" in _metrics(nodes[0])
        # The leader's lease runs out by its own clock: leader-only decisions pause.
        await asyncio.to_thread(
            wait_for,
            "no node acting as leader",
            lambda: not any(cluster_status(n)["is_leader"] for n in nodes),
            timeout=LEASE + 1.0,
            nodes=nodes,
        )
        await serve_more(loads, 100)  # still serving, by the last decision
        redis_procs.spawn("cluster", port=redis_port)  # back, empty (no persistence)
        _, new_term = await asyncio.to_thread(wait_leader, nodes, 10.0)
        assert new_term > term, "a Redis that lost its data handed out an old term"
        for node in nodes:
            await asyncio.to_thread(
                wait_for,
                "ok again",
                lambda node=node: (s := try_status(node)) and s["state"] == "ok",
                nodes=nodes,
            )
            await asyncio.to_thread(wait_decision, node, ["b1"])
        await serve_more(loads, 50)
    finally:
        stats = [await load.stop() for load in loads]
    assert_no_failures(nodes, stats)


def test_majority_consensus_ignores_one_node_that_sees_the_primary_down(
    backend, daemon, redis_port
):
    primary, standby = backend("primary"), backend("standby")
    nodes = make_nodes(
        daemon,
        redis_port,
        pools=active_passive(primary, standby),
        cluster={"health_consensus": "majority"},
    )
    leader, _ = wait_leader(nodes)
    for node in nodes:
        wait_up(node, "primary", "standby")
        wait_decision(node, ["primary"])
    # A broken path from the leader alone: its checks fail, the others' pass.
    primary.sick_for.add(f"(node {node_id(leader)})")
    wait_for(
        "the leader's own verdict",
        lambda: any(c["backend"] == "primary" and c["status"] == "down" for c in _checks(leader)),
        nodes=nodes,
    )
    time.sleep(HEARTBEAT * 5)  # several beats with the votes in: still no failover
    for node in nodes:
        assert decision(node)["active"] == ["primary"], node_id(node)
    # When a majority sees it down, the cluster fails over.
    others = [n for n in nodes if n is not leader]
    primary.sick_for.add(f"(node {node_id(others[0])})")
    for node in nodes:
        wait_decision(node, ["standby"])


def test_a_trigger_on_a_follower_is_carried_out_by_the_leader(backend, daemon, redis_port):
    primary, standby = backend("primary"), backend("standby")
    nodes = make_nodes(daemon, redis_port, pools=active_passive(primary, standby))
    leader, _ = wait_leader(nodes)
    for node in nodes:
        wait_up(node, "primary", "standby")
        wait_decision(node, ["primary"])
    follower = next(n for n in nodes if n is not leader)
    status, body = post_json(
        follower, "/api/v1/ha/failover/trigger", {"pool": "web", "to": "backup", "reason": "t"}
    )
    assert status == 200, body
    assert body["forwarded_to"] == node_id(leader) and body["active"] == ["standby"]
    for node in nodes:
        wait_decision(node, ["standby"])
    # A refusal on the leader is the follower's answer too (nothing to fail back to).
    primary.stop()
    wait_for(
        "the primary down everywhere",
        lambda: all(
            any(c["backend"] == "primary" and c["status"] == "down" for c in _checks(n))
            for n in nodes
        ),
        nodes=nodes,
    )
    status, body = post_json(
        follower, "/api/v1/ha/failover/trigger", {"pool": "web", "to": "primary"}
    )
    assert status == 409 and body["forwarded_to"] == node_id(leader), body
    for node in nodes:
        assert decision(node)["active"] == ["standby"]
