"""active_active with a backup, multi_active groups, multi-region spill and manual
failover through the whole daemon, with real backends and real health checks.

Spill proportions are measured from the `X-Backend` of each response. The split is
deterministic (weighted round robin within a pool, smooth weighted rotation across
regions), so the stated tolerance (5 percentage points) only absorbs requests that
straddle a state change, not randomness."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers.backend_process import BackendProcess
from helpers.backends import RawReply
from helpers.daemon import free_port
from helpers.failover import (
    CHECK,
    TCP_CHECK,
    events,
    served_by,
    traffic,
    trigger,
    wait_decision,
    wait_state,
    wait_up,
)
from helpers.http1 import wait_until
from helpers.process import LoadLoop, assert_nothing_failed

pytestmark = pytest.mark.timeout(90)

TOLERANCE = 0.05


def shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


def close_to(counts: dict[str, int], expected: dict[str, float]) -> bool:
    got = shares(counts)
    keys = set(got) | set(expected)
    return all(abs(got.get(k, 0.0) - expected.get(k, 0.0)) <= TOLERANCE for k in keys)


# -- active_active with a backup --------------------------------------------------------


async def test_backup_receives_nothing_until_every_primary_is_down(backend, daemon):
    p1, p2, spare = backend("p1"), backend("p2"), backend("spare")
    pools = {
        "web": {
            "health_checks": [CHECK],
            "backends": [p1.config(), p2.config(), {**spare.config(), "role": "backup"}],
        }
    }
    d = daemon(pools=pools)
    await asyncio.to_thread(wait_up, d, "p1", "p2", "spare")
    await asyncio.to_thread(wait_decision, d, ["p1", "p2"])
    load = LoadLoop(d.port, clients=3, path="/echo", duration=40).start()
    try:
        await load.wait_ok(200)
        await asyncio.to_thread(p1.stop)
        await asyncio.to_thread(wait_decision, d, ["p2"])
        await load.wait_ok(load.stats.ok + 200)
        assert traffic(spare) == 0, "the backup took traffic while a primary was healthy"
        await asyncio.to_thread(p2.stop)
        await asyncio.to_thread(wait_decision, d, ["spare"])
        await load.wait_ok(load.stats.ok + 200)
    finally:
        stats = await load.stop()
    assert not stats.failures, [str(f) for f in stats.failures[:10]]
    assert traffic(spare) >= 200
    history = [(e["kind"], e["reason"]) for e in reversed(await asyncio.to_thread(events, d))]
    assert [kind for kind, _ in history] == ["update", "failover"], history


# -- multi_active ----------------------------------------------------------------------------


def test_multi_active_takes_a_degraded_group_out_and_spills_by_capacity(backend, daemon):
    a = [backend(f"a{i}") for i in (1, 2, 3)]
    b1, c1 = backend("b1"), backend("c1")
    pools = {
        "web": {
            "balancer": {"algorithm": "weighted_round_robin"},
            "health_checks": [CHECK],
            "failover": {"strategy": "multi_active", "min_healthy_share": 0.5},
            "backends": [
                *({**s.config(), "group": "A"} for s in a),
                {**b1.config(), "group": "B", "weight": 2},
                {**c1.config(), "group": "C", "weight": 3},
            ],
        }
    }
    d = daemon(pools=pools)
    wait_up(d, "a1", "a2", "a3", "b1", "c1")
    wait_decision(d, ["a1", "a2", "a3", "b1", "c1"])
    a[0].stop()
    wait_decision(d, ["a2", "a3", "b1", "c1"])  # A at 2/3: still in
    a[1].stop()
    decided = wait_decision(d, ["b1", "c1"])  # A at 1/3 < 50%: out, a3 idle
    assert decided["state"]["out"] == ["A"]
    counts = served_by(d, 250)
    assert "a3" not in counts
    # A's traffic went to B and C in proportion to their capacity (2 : 3).
    assert close_to(counts, {"b1": 0.4, "c1": 0.6}), counts
    a[0].start()
    wait_decision(d, ["a1", "a3", "b1", "c1"])
    kinds = [e["kind"] for e in reversed(events(d))]
    assert kinds == ["update", "failover", "failback"], kinds


# -- regions -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])  # region routing is per request: workers too
def test_regions_spill_in_proportion_and_fail_over_when_the_region_is_lost(
    backend, daemon, workers
):
    e1 = backend("e1")
    dead = [
        {"id": f"e{i}", "address": f"127.0.0.1:{free_port()}", "region": "eu"} for i in (2, 3, 4)
    ]
    us = [backend(f"u{i}") for i in (1, 2)]
    ap1 = backend("ap1")
    pools = {
        "web": {
            "health_checks": [TCP_CHECK],
            "regions": {
                "spill_threshold": 0.5,
                "weights": {"us": 3, "ap": 1},
                "client_region": {"header": "X-Region"},
            },
            "backends": [
                {**e1.config(), "region": "eu"},
                *dead,
                *({**u.config(), "region": "us"} for u in us),
                {**ap1.config(), "region": "ap"},
            ],
        }
    }
    d = daemon(pools=pools, extra={"node": {"region": "eu"}, "workers": workers})
    wait_up(d, "e1", "u1", "u2", "ap1")
    for dead_backend in dead:
        wait_state(d, dead_backend["id"], "down")
    wait_decision(d, ["e1", "u1", "u2", "ap1"])
    reached_workers(d, {"e1", "u1", "u2", "ap1"})
    # eu's healthy share is 1/4 < 0.5: it keeps 0.25 / 0.5 = half of its clients'
    # traffic; the other half goes to us and ap by weight (3 : 1). (One connection:
    # one worker, whose rotation is exact over each cycle.)
    counts = served_by(d, 400)
    region = {"e1": "eu", "u1": "us", "u2": "us", "ap1": "ap"}
    by_region: dict[str, int] = {}
    for backend_id, n in counts.items():
        by_region[region[backend_id]] = by_region.get(region[backend_id], 0) + n
    assert close_to(by_region, {"eu": 0.5, "us": 0.375, "ap": 0.125}), by_region
    # A client in us (by header) is served in us only: us is entirely healthy.
    assert served_by(d, 20, headers={"X-Region": "us"}) == {"u1": 10, "u2": 10}
    # The whole of eu lost: all of its clients' traffic fails over, none to eu.
    e1.stop()
    wait_decision(d, ["u1", "u2", "ap1"])
    reached_workers(d, {"u1", "u2", "ap1"})
    counts = served_by(d, 200)
    assert close_to(
        {"us": counts.get("u1", 0) + counts.get("u2", 0), "ap": counts.get("ap1", 0)},
        {"us": 0.75, "ap": 0.25},
    ), counts


def reached_workers(d: Any, serving: set[str]) -> None:
    """The decision the master shows has reached the process that serves this
    connection: a few requests all answered, by nothing but `serving`."""
    wait_until(lambda: set(served_by(d, 8)) <= serving, timeout=10, what=f"only {serving}")


# -- manual --------------------------------------------------------------------------------

OK_PRIMARY = b"HTTP/1.1 200 OK\r\nX-Backend: primary\r\nContent-Length: 2\r\n\r\nok"
SICK = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nsick"


class Switch:
    """A raw backend that keeps serving requests while its /healthz says what the
    test wants: only the health verdict changes, never the reachability."""

    def __init__(self) -> None:
        self.healthy = True

    def __call__(self, rec: Any) -> RawReply:
        if rec.target == "/healthz":
            return RawReply(OK_PRIMARY if self.healthy else SICK, close=False)
        return RawReply(OK_PRIMARY, close=False)


def test_manual_only_the_trigger_moves_traffic(raw_backend, backend, daemon):
    switch = Switch()
    primary = raw_backend(switch, backend_id="primary")
    standby = backend("standby")
    pools = {
        "web": {
            "health_checks": [CHECK],
            "failover": {"strategy": "manual", "failback": "auto", "failback_hold": 0},
            "backends": [primary.config(), {**standby.config(), "role": "backup"}],
        }
    }
    d = daemon(pools=pools)
    wait_up(d, "primary", "standby")
    wait_decision(d, ["primary"])
    switch.healthy = False
    wait_state(d, "primary", "down")
    # The designated primary is unhealthy: it does not serve, and nothing moves to the
    # standby by itself (503 until an operator acts).
    assert served_by(d, 10) == {"error 503": 10}
    assert traffic(standby) == 0
    [health] = events(d, "web", "health")
    assert health["backend"] == "primary" and health["details"]["needs_operator"] is True
    status, body = trigger(d, {"pool": "web", "to": "backup", "reason": "primary sick"})
    assert status == 200 and body["active"] == ["standby"], body
    assert served_by(d, 10) == {"standby": 10}
    switch.healthy = True
    wait_state(d, "primary", "up")
    assert served_by(d, 10) == {"standby": 10}  # health alone never moves it back
    assert len(events(d, "web", "health")) == 2
    status, body = trigger(d, {"pool": "web", "to": "primary"})
    assert status == 200 and body["active"] == ["primary"], body
    assert served_by(d, 10) == {"primary": 10}


@pytest.mark.parametrize("upstream", ["keep-alive", "close"])
async def test_a_whole_region_killed_under_load_costs_no_get(daemon, upstream):
    """The local region's backends all SIGKILLed under load: until health checks mark
    the region down its share still says "stay local", so a retry that stayed in the
    region would go eu-1 -> eu-2 -> eu-1 and fail. Retries leave a region once every
    candidate there has failed the request: no GET sees the loss."""
    close = upstream == "close"
    local = [BackendProcess(f"eu-{i}", close=close) for i in (1, 2)]
    remote = [BackendProcess(f"us-{i}", close=close) for i in (1, 2)]
    try:
        pools = {
            "web": {
                "health_checks": [CHECK],
                "regions": {"spill_threshold": 0.5},
                "backends": [
                    *({**b.config(), "region": "eu"} for b in local),
                    *({**b.config(), "region": "us"} for b in remote),
                ],
            }
        }
        d = daemon(pools=pools, extra={"node": {"region": "eu"}})
        await asyncio.to_thread(wait_up, d, "eu-1", "eu-2", "us-1", "us-2")
        load = LoadLoop(d.port, clients=16, duration=40).start()
        try:
            await load.wait_ok(1000)
            assert set(load.stats.backends) == {"eu-1", "eu-2"}, load.stats.backends
            for backend in local:
                backend.kill()
            killed = load.stats.ok
            for backend in ("eu-1", "eu-2"):
                await asyncio.to_thread(wait_state, d, backend, "down")
            await load.wait_ok(load.stats.ok + 1000)
        finally:
            stats = await load.stop()
    finally:
        for backend in (*local, *remote):
            backend.stop()
    assert_nothing_failed(stats, d)
    assert stats.ok > killed
    # Requests that met the dead region were retried out of it.
    left = [e for e in d.access_log() if e["attempts"] >= 2 and e["backend"].startswith("us-")]
    assert left, "no request was retried into us: the kill met no request in flight"
