"""`tcp` check against raw asyncio TCP servers."""

from __future__ import annotations

import asyncio

from health_helpers import backend, closed_port, hc

from haproxyd.health.base import create_check


async def probe(config, port):
    check = create_check(config)
    return await check.probe(backend(port))


async def test_connect_passes(tcp_server):
    port = await tcp_server(lambda reader, writer: reader.read())
    result = await probe(hc("tcp"), port)
    assert result.ok
    assert result.reason == "connected"


async def test_connect_refused_fails():
    result = await probe(hc("tcp"), closed_port())
    assert not result.ok
    assert result.reason.startswith("connect failed")


async def echo_ping(reader, writer):
    line = await reader.readline()
    writer.write(b"+PONG\r\n" if line == b"PING\r\n" else b"-ERR\r\n")
    await writer.drain()


async def test_send_and_expect_passes(tcp_server):
    port = await tcp_server(echo_ping)
    result = await probe(hc("tcp", send="PING\r\n", expect=r"^\+PONG"), port)
    assert result.ok, result.reason


async def test_expect_mismatch_fails(tcp_server):
    port = await tcp_server(echo_ping)
    result = await probe(hc("tcp", send="HELLO\r\n", expect=r"^\+PONG"), port)
    assert not result.ok
    assert "does not match" in result.reason and "-ERR" in result.reason


async def test_port_override(tcp_server):
    port = await tcp_server(lambda reader, writer: reader.read())
    result = await create_check(hc("tcp", port=port)).probe(backend(closed_port()))
    assert result.ok


async def test_silent_server_is_left_to_the_scheduler_timeout(tcp_server):
    port = await tcp_server(lambda reader, writer: asyncio.sleep(30))
    check = create_check(hc("tcp", expect="x"))
    try:
        async with asyncio.timeout(0.1):
            await check.probe(backend(port))
        raise AssertionError("probe returned")
    except TimeoutError:
        pass
