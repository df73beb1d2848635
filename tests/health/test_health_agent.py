"""`system_metrics` check: HAProxy agent protocol against raw TCP agents; node mode."""

from __future__ import annotations

import pytest
from health_helpers import backend, closed_port, hc

from haproxyd.health.agent import parse_agent_reply
from haproxyd.health.base import create_check


def agent(reply: bytes, expect_send: bytes | None = None):
    async def handler(reader, writer):
        if expect_send is not None:
            assert await reader.readexactly(len(expect_send)) == expect_send
        writer.write(reply)
        await writer.drain()

    return handler


@pytest.mark.parametrize(
    ("line", "status", "weight", "admin", "reason"),
    [
        ("up 75%", "up", 75, None, None),
        ("75%", None, 75, None, None),
        ("drain", None, None, "drain", None),
        ("maint,50%", None, 50, "maint", None),
        ("ready up", "up", None, "ready", None),
        ("down#disk full", "down", None, None, "disk full"),
        ("stopped", "down", None, None, None),
        ("up maxconn:30 100%", "up", 100, None, None),
    ],
)
def test_parse_agent_reply(line, status, weight, admin, reason):
    parsed = parse_agent_reply(line)
    assert (parsed["status"], parsed["weight_percent"], parsed["admin_state"]) == (
        status,
        weight,
        admin,
    )
    assert parsed["reason"] == reason


async def test_up_with_weight_passes(tcp_server):
    port = await tcp_server(agent(b"up 75%\n"))
    result = await create_check(hc("system_metrics")).probe(backend(port))
    assert result.ok, result.reason
    assert result.weight_percent == 75
    assert result.admin_state is None


async def test_down_fails_with_the_agents_reason(tcp_server):
    port = await tcp_server(agent(b"down#disk full\n"))
    result = await create_check(hc("system_metrics")).probe(backend(port))
    assert not result.ok
    assert result.reason == "agent says down: disk full"


async def test_send_and_admin_request(tcp_server):
    port = await tcp_server(agent(b"drain\r\n", expect_send=b"status\n"))
    result = await create_check(hc("system_metrics", send="status\n")).probe(backend(port))
    assert result.ok and result.admin_state == "drain"


async def test_agent_cpu_extension(tcp_server):
    port = await tcp_server(agent(b"up cpu:97% load1:0.5\n"))
    result = await create_check(hc("system_metrics", max_cpu_percent=90)).probe(backend(port))
    assert not result.ok
    assert result.reason == "cpu 97.0% > 90%"


async def test_unreachable_or_silent_agent_fails(tcp_server):
    result = await create_check(hc("system_metrics")).probe(backend(closed_port()))
    assert not result.ok and result.reason.startswith("agent connect failed")
    port = await tcp_server(agent(b""))
    result = await create_check(hc("system_metrics")).probe(backend(port))
    assert not result.ok and "without a reply" in result.reason
    port = await tcp_server(agent(b"hello there\n"))
    result = await create_check(hc("system_metrics")).probe(backend(port))
    assert not result.ok and "unrecognised" in result.reason


async def test_node_mode_reads_this_host():
    check = create_check(hc("system_metrics", max_cpu_percent=100.0, max_load1=10_000.0))
    result = await check.probe(None)
    assert result.ok, result.reason
    assert result.reason.startswith("cpu ")


async def test_node_mode_thresholds():
    check = create_check(hc("system_metrics", max_cpu_percent=80.0, max_load1=4.0))
    check.read_metrics = lambda: {"cpu": 95.0, "load1": 6.5}
    result = await check.probe(None)
    assert not result.ok
    assert result.reason == "cpu 95.0% > 80%; load1 6.50 > 4"
