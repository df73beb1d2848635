"""Readiness (`haproxyd/admin/ready.py`) against a small fake host that implements
`ReadinessHost`, one condition at a time, and `ClusterManager.fenced` with an injected
clock: the states a daemon reaches only slowly or rarely (a listener that closed, a
cluster config that failed to apply, fencing before and after its wait). The daemon
itself answers /ready in tests/integration/test_ready.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from haproxyd.admin.ready import ReadinessHost, readiness
from haproxyd.cluster.manager import ClusterManager
from haproxyd.cluster.peers import PROBE_TIMEOUT
from haproxyd.config import validate_document
from haproxyd.failover.events import EventLog


@dataclass
class FakeHost:
    stopping: bool = False
    accepting: tuple[int, int] = (1, 1)
    pools: dict[str, int] = field(default_factory=lambda: {"web": 2, "api": 0})
    errors: list[str] = field(default_factory=list)
    fenced_reason: str | None = None

    def listeners_accepting(self) -> tuple[int, int]:
        return self.accepting

    def selectable_backends(self) -> dict[str, int]:
        return self.pools

    def config_errors(self) -> list[str]:
        return self.errors

    def fenced(self) -> str | None:
        return self.fenced_reason


def test_a_serving_host_is_ready_even_with_one_pool_down() -> None:
    host: ReadinessHost = FakeHost()
    assert readiness(host) == {"ready": True, "reasons": []}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"stopping": True}, "shutting down"),
        ({"accepting": (1, 2)}, "listeners not accepting: 1 of 2"),
        ({"accepting": (0, 0)}, "no listener configured"),
        ({"pools": {"web": 0, "api": 0}}, "no selectable backend in any pool"),
        ({"pools": {}}, "no pool configured"),
        ({"errors": ["cannot apply the cluster's shared config version 7"]}, "config: cannot"),
        ({"fenced_reason": "fenced off the cluster: ..."}, "fenced off the cluster"),
    ],
)
def test_each_condition_alone_makes_it_not_ready(change: dict[str, Any], reason: str) -> None:
    body = readiness(FakeHost(**change))
    assert body["ready"] is False
    assert len(body["reasons"]) == 1 and body["reasons"][0].startswith(reason), body


def test_every_failing_condition_is_reported_at_once() -> None:
    host = FakeHost(stopping=True, accepting=(0, 1), pools={"web": 0})
    assert len(readiness(host)["reasons"]) == 3


# -- fencing in a cluster ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ClusterHostStub:
    def __init__(self) -> None:
        self.config = validate_document(
            {
                "node": {"id": "node-3"},
                "pools": {"web": {"backends": [{"id": "b1", "address": "127.0.0.1:9"}]}},
                "cluster": {"enabled": True, "heartbeat_interval": "1s", "lease_ttl": "3s"},
            },
            source="test",
            env={},
        )
        self.config_version = 1
        self.failover = None
        self.events = EventLog()

    def admin_url(self) -> str:
        return "http://127.0.0.1:9901"


async def test_fenced_only_when_cut_off_from_redis_long_enough_while_a_peer_leads() -> None:
    clock = Clock()
    manager = ClusterManager(ClusterHostStub(), clock=clock)  # type: ignore[arg-type]
    try:
        assert manager.fenced is None  # never tried Redis
        manager._redis_down(ConnectionError("connection refused"))
        manager.peer_roles = {"http://node-1:9901": "leader", "http://node-2:9901": "follower"}
        # Record TTL (3 beats) or lease (3 s), whichever is longer, plus a beat and a
        # probe: until then a leader that lost Redis too may still say "leader".
        wait = 3.0 + 1.0 + PROBE_TIMEOUT
        clock.now += wait - 0.1
        assert manager.fenced is None
        clock.now += 0.2
        assert manager.fenced is not None and "while a peer leads" in manager.fenced
        # Redis down for every node: no peer leads, nobody is fenced (all keep serving).
        manager.peer_roles = {"http://node-1:9901": "degraded", "http://node-2:9901": None}
        assert manager.fenced is None
        # Redis answers again: a member, whatever the peers say.
        manager.peer_roles = {"http://node-1:9901": "leader"}
        manager.redis_ok, manager._redis_lost_at = True, None
        assert manager.fenced is None
    finally:
        await manager.store.close()
