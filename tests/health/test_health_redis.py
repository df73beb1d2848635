"""`redis` check against redis-server processes: a primary and its replica."""

from __future__ import annotations

from health_helpers import backend, closed_port, hc

from haproxyd.health.base import create_check


async def probe(port, **fields):
    return await create_check(hc("redis", **fields)).probe(backend(port))


async def test_ping_passes_on_both(redis_pair):
    for port in (redis_pair.primary, redis_pair.replica):
        result = await probe(port)
        assert result.ok, result.reason
        assert result.reason == "PONG"


async def test_expect_role_follows_the_primary(redis_pair):
    result = await probe(redis_pair.primary, expect_role="master")
    assert result.ok, result.reason
    assert result.reason == "PONG, role master"
    result = await probe(redis_pair.replica, expect_role="master")
    assert not result.ok
    assert result.reason == "role is slave, expected master"
    assert (await probe(redis_pair.replica, expect_role="slave")).ok


async def test_closed_port_fails():
    result = await probe(closed_port())
    assert not result.ok
    assert result.reason.startswith("redis: ")


async def test_password(redis_spawn):
    port = redis_spawn("protected", "--requirepass", "s3cret")
    assert (await probe(port, password="s3cret")).ok
    result = await probe(port, password="wrong")
    assert not result.ok
    assert "invalid" in result.reason.lower() or "WRONGPASS" in result.reason
    result = await probe(port)
    assert not result.ok
    assert "Authentication required" in result.reason
