"""`http` check against real aiohttp backends (plain and TLS)."""

from __future__ import annotations

import ssl

import pytest
import trustme
from health_helpers import Stub, backend, closed_port, hc

from haproxyd.health.base import create_check
from haproxyd.health.http import parse_status_ranges


async def probe(config, port):
    check = create_check(config)
    try:
        return await check.probe(backend(port))
    finally:
        await check.close()


async def test_pass_on_200(http_backend):
    stub = await http_backend()
    result = await probe(hc("http", path="/healthz"), stub.port)
    assert result.ok, result.reason
    assert result.reason == "HTTP 200"
    assert result.latency > 0
    assert stub.requests[0][1] == "/healthz"


async def test_fail_on_unexpected_status(http_backend):
    stub = await http_backend(Stub(status=503))
    result = await probe(hc("http"), stub.port)
    assert not result.ok
    assert result.reason == "HTTP 503, expected 200"


async def test_status_ranges_and_host_header(http_backend):
    stub = await http_backend(Stub(status=302))
    config = hc("http", expect_status=[200, "300-399"], host="app.example", method="HEAD")
    result = await probe(config, stub.port)
    assert result.ok, result.reason
    assert stub.requests[0][2]["Host"] == "app.example"
    assert parse_status_ranges([200, "300-399", "404"]) == ((200, 200), (300, 399), (404, 404))


async def test_expect_body(http_backend):
    stub = await http_backend(Stub(body='{"status": "green", "db": "ok"}'))
    assert (await probe(hc("http", expect_body=r'"status":\s*"green"'), stub.port)).ok
    result = await probe(hc("http", expect_body="red"), stub.port)
    assert not result.ok
    assert "does not match 'red'" in result.reason


async def test_connection_refused_fails():
    result = await probe(hc("http"), closed_port())
    assert not result.ok
    assert result.reason.startswith("HTTP request failed")


async def test_keeps_the_connection_alive_between_probes(http_backend):
    stub = await http_backend()
    check = create_check(hc("http"))
    try:
        for _ in range(3):
            assert (await check.probe(backend(stub.port))).ok
        connector = check._session.connector
        assert len(stub.requests) == 3
        assert sum(len(conns) for conns in connector._conns.values()) == 1
    finally:
        await check.close()


@pytest.fixture(scope="module")
def tls_context():
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


async def test_tls_without_verification_passes(http_backend, tls_context):
    stub = await http_backend(ssl_context=tls_context)
    result = await probe(hc("http", tls=True, verify_tls=False), stub.port)
    assert result.ok, result.reason


async def test_tls_with_verification_rejects_unknown_ca(http_backend, tls_context):
    stub = await http_backend(ssl_context=tls_context)
    result = await probe(hc("http", tls=True, verify_tls=True), stub.port)
    assert not result.ok
    assert result.reason.startswith("TLS error"), result.reason
