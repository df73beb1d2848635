"""`http` check against real aiohttp backends (plain and TLS)."""

from __future__ import annotations

import ssl

import pytest
import trustme
from health_helpers import Stub, backend, closed_port, hc, wait_until

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


async def test_a_path_outside_ascii_is_sent_percent_encoded(http_backend):
    # What aiohttp's client did: UTF-8, percent-encoded; escapes already there stay.
    stub = await http_backend(Stub())
    result = await probe(hc("http", path="/santé/健康?q=a%20b"), stub.port)
    assert result.ok, result.reason
    assert stub.requests[0][1] == "/santé/健康"  # aiohttp decodes the path it received


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
        assert len(stub.requests) == 3
        assert len(set(stub.peers)) == 1, stub.peers  # one client connection for all three
    finally:
        await check.close()


async def test_a_kept_connection_the_backend_drops_is_replaced(tcp_server):
    """The backend answers one request per connection and drops the connection at the
    next one without a word (its keep-alive timeout struck as the probe was sent): the
    probe asks again on a new connection and passes."""
    served = []

    async def one_answer_per_connection(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        served.append(writer.get_extra_info("peername"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next probe on this connection: drop it

    port = await tcp_server(one_answer_per_connection)
    check = create_check(hc("http"))
    try:
        for _ in range(3):
            result = await check.probe(backend(port))
            assert result.ok, result.reason
        assert len(served) == 3 and len(set(served)) == 3
    finally:
        await check.close()


def replying(data: bytes, *, close: bool):
    """A raw backend for `tcp_server`: reads one request head, writes `data`, then
    closes (`close`) or waits until the prober closes."""

    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()

    return handler


async def test_a_kept_connection_closed_by_the_backend_leaves_the_idle_map(tcp_server):
    # It closes after the answer, without saying Connection: close.
    port = await tcp_server(
        replying(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)
    )
    check = create_check(hc("http"))
    try:
        assert (await check.probe(backend(port))).ok
        # Kept at first (the response allowed it), then dropped when the close arrives.
        await wait_until(lambda: not check._idle, 3, "closed connection forgotten")
        assert (await check.probe(backend(port))).ok  # and the next probe reconnects
    finally:
        await check.close()


async def test_response_without_length_ends_at_close_and_body_is_searched(tcp_server):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    port = await tcp_server(replying(head + b"all green here", close=True))
    result = await probe(hc("http", expect_body="green"), port)
    assert result.ok, result.reason


async def test_interim_response_is_skipped_and_large_body_bounded(tcp_server):
    body = b"x" * (3 * 65536) + b"needle"  # past what is searched and drained
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    port = await tcp_server(replying(interim + final, close=False))
    assert (await probe(hc("http"), port)).reason == "HTTP 200"
    result = await probe(hc("http", expect_body="needle"), port)
    assert not result.ok and "does not match" in result.reason  # only MAX_BODY is searched


async def test_garbage_instead_of_http_fails(tcp_server):
    port = await tcp_server(replying(b"SSH-2.0-OpenSSH_9.2\r\n", close=False))
    result = await probe(hc("http"), port)
    assert not result.ok
    assert result.reason.startswith("HTTP request failed: invalid response"), result.reason


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
