"""The Redis side of the cluster (haproxyd/cluster/store.py) against a real redis-server:
the lease, the terms, fenced writes, membership records and config versions."""

from __future__ import annotations

import asyncio
import json

import pytest

from haproxyd.cluster.store import ClusterStore, StaleWrite, connect


async def test_lease_is_exclusive_and_each_grant_takes_a_new_term(make_store):
    a, b = make_store(), make_store()
    lease_a, holder = await a.acquire("a", ttl=5)
    assert lease_a is not None and holder is None
    assert lease_a.value == f"a|{lease_a.term}"
    lease_b, holder = await b.acquire("b", ttl=5)
    assert lease_b is None and holder == lease_a.value
    assert not await b.renew(type(lease_a)(f"b|{lease_a.term}", lease_a.term), ttl=5)
    assert await a.renew(lease_a, ttl=5)
    await b.release(type(lease_a)("b|999", 999))  # not b's: nothing happens
    assert await a.leader() == lease_a.value
    await a.release(lease_a)
    lease_b, _ = await b.acquire("b", ttl=5)
    assert lease_b is not None and lease_b.term == lease_a.term + 1
    assert await b.term() == lease_b.term


async def test_lease_expires_without_renewal(make_store):
    a, b = make_store(), make_store()
    lease_a, _ = await a.acquire("a", ttl=0.2)
    deadline = asyncio.get_running_loop().time() + 5
    while await b.leader() is not None:
        assert asyncio.get_running_loop().time() < deadline, "the lease never expired"
        await asyncio.sleep(0.05)
    lease_b, _ = await b.acquire("b", ttl=5)
    assert lease_b is not None and lease_b.term > lease_a.term
    assert not await a.renew(lease_a, ttl=5), "an expired holder renewed a lease not its own"


async def test_fenced_write_refuses_an_older_term_and_a_lost_lease(make_store):
    a, b = make_store(), make_store()
    old, _ = await a.acquire("a", ttl=5)
    decision = {"pool": "web", "strategy": "active_passive", "active": ["p"], "version": 3}
    await a.write_decision(old, decision)
    await a.release(old)  # as if the lease ran out while `a` was paused
    new, _ = await b.acquire("b", ttl=5)
    await b.write_decision(new, {**decision, "active": ["s"], "version": 4})
    with pytest.raises(StaleWrite) as info:
        await a.write_decision(old, {**decision, "active": ["p"], "version": 5})
    assert "stale term" in info.value.reason
    stored = await b.decisions(["web", "other"])
    assert stored == {"web": {**decision, "active": ["s"], "version": 4, "term": new.term}}
    # Same term but not the holder (the lease expired and nobody took it yet): refused.
    await b.release(new)
    with pytest.raises(StaleWrite) as info:
        await b.write_decision(new, {**decision, "version": 6})
    assert info.value.reason == "lease not held"


async def test_config_versions_are_compare_and_set(make_store):
    a = make_store()
    lease, _ = await a.acquire("a", ttl=5)
    assert await a.config() is None
    await a.write_config(lease, 1, {"pools": {}}, origin="a")
    await a.write_config(lease, 2, {"pools": {"x": {}}}, origin="a")
    with pytest.raises(StaleWrite) as info:
        await a.write_config(lease, 2, {"pools": {"y": {}}}, origin="a")
    assert info.value.reason == "version 2"
    stored = await a.config()
    assert stored is not None
    assert (stored["version"], stored["term"]) == (2, lease.term)
    assert stored["doc"] == {"pools": {"x": {}}}


async def test_writes_notify_subscribers(make_store):
    a = make_store()
    pubsub = a.client.pubsub()
    await pubsub.subscribe(a.channel)
    assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
    lease, _ = await a.acquire("a", ttl=5)
    await a.write_decision(lease, {"pool": "web", "active": [], "version": 1})
    message = await pubsub.get_message(timeout=2)
    assert json.loads(message["data"]) == {"type": "decision", "pool": "web", "term": lease.term}
    await pubsub.aclose()


async def test_members_live_lost_and_left(make_store):
    a = make_store()
    await a.heartbeat("n1", {"id": "n1"}, {"web/b1": "up"}, ttl=5)
    await a.heartbeat("n2", {"id": "n2"}, {}, ttl=0.2)
    await a.heartbeat("n3", {"id": "n3"}, {}, ttl=5)
    live, lost = await a.members()
    assert set(live) == {"n1", "n2", "n3"} and lost == set()
    await a.leave("n3")
    deadline = asyncio.get_running_loop().time() + 5
    while "n2" in (await a.members())[0]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    live, lost = await a.members()
    assert set(live) == {"n1"} and lost == {"n2"}  # n3 left: neither live nor lost
    assert await a.health_votes(["n1", "n2"]) == {"n1": {"web/b1": "up"}, "n2": {}}


async def test_prefixes_keep_clusters_apart(make_store):
    a, b = make_store("one"), make_store("two")
    lease_a, _ = await a.acquire("a", ttl=5)
    lease_b, _ = await b.acquire("b", ttl=5)
    assert lease_a is not None and lease_b is not None


def test_sentinel_url():
    client = connect("redis+sentinel://127.0.0.1:26379,[::1]:26380/mymaster/2", timeout=1)
    pool = client.connection_pool
    assert pool.service_name == "mymaster"
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [("127.0.0.1", 26379), ("::1", 26380)]
    with pytest.raises(ValueError):
        connect("redis+sentinel://127.0.0.1:26379", timeout=1)


async def test_a_sentinel_url_finds_the_primary(redis_procs):
    """`redis+sentinel://` through redis-py's own Sentinel support, against a real
    Sentinel (redis-server --sentinel) watching a real primary."""
    primary = redis_procs.spawn("primary")
    sentinel = redis_procs.spawn_sentinel("sentinel", primary)
    store = ClusterStore(
        connect(f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0", timeout=1.0), "s"
    )
    direct = ClusterStore(connect(f"redis://127.0.0.1:{primary}/0", timeout=1.0), "s")
    try:
        lease, _ = await store.acquire("a", ttl=5)
        assert lease is not None
        assert await direct.leader() == lease.value  # it was written on the primary
    finally:
        await store.close()
        await direct.close()
