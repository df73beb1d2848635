"""ClusterManager's view of the other nodes, without Redis (its store is never used)."""

from __future__ import annotations

from types import SimpleNamespace

from haproxyd.cluster.manager import ClusterManager
from haproxyd.config import load_config_text


class _Events:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def append(self, kind: str, *args: object, **kwargs: object) -> None:
        self.kinds.append(kind)


def _manager() -> ClusterManager:
    cfg = load_config_text(
        "node: {id: n1}\n"
        "cluster: {enabled: true, redis_url: 'redis://127.0.0.1:9/0', quorum_size: 1}\n"
        "pools:\n  web:\n    backends:\n      - {id: b1, address: 127.0.0.1:9}\n"
    )
    host = SimpleNamespace(config=cfg, events=_Events())
    return ClusterManager(host)  # type: ignore[arg-type]


def test_a_leader_whose_record_lapsed_is_still_reached_while_it_leads() -> None:
    """A member record lives a few heartbeats, a lease several times that: a leader
    held off its loop for a moment loses its record first. Followers forward changes
    to it all the same (CI once met 'no cluster leader' there, the lease still held)."""
    m = _manager()
    m.leader_id = "n2"
    m._set_members({"n2": {"admin": "http://127.0.0.1:9902"}, "n1": {}}, set())
    assert m.leader_admin_url() == "http://127.0.0.1:9902"
    m._set_members({"n1": {}}, {"n2"})  # n2's record expired; the lease says n2 leads
    assert m.host.events.kinds == ["node_lost"]  # type: ignore[attr-defined]
    assert m.leader_admin_url() == "http://127.0.0.1:9902"
    m.leader_id = None  # no lease: no leader, whatever was known
    assert m.leader_admin_url() is None
    m.leader_id = "n3"  # a leader never seen: nothing to forward to yet
    assert m.leader_admin_url() is None
