"""The proxy's own errors: 502 (backend failed or answered garbage), 503 (no backend),
504 (timeout, see test_dataplane_timeouts). Never a hang, never a traceback on the wire;
each carries an X-Request-ID and a short body."""

from __future__ import annotations

import pytest
from helpers.asserts import assert_proxy_error
from helpers.backends import RawReply
from helpers.daemon import free_port
from helpers.http1 import ProtocolError

pytestmark = pytest.mark.timeout(60)


def test_backend_refusing_connections_gives_502(daemon):
    d = daemon([{"id": "dead", "address": f"127.0.0.1:{free_port()}"}])
    with d.conn() as c:
        r = c.request("GET", "/echo")
        assert_proxy_error(r, 502)
        # an error is a response like any other: the client connection can go on
        if not r.has_token("Connection", "close"):
            assert_proxy_error(c.request("GET", "/echo"), 502)


def test_error_keeps_the_clients_request_id(daemon):
    d = daemon([{"id": "dead", "address": f"127.0.0.1:{free_port()}"}])
    with d.conn() as c:
        r = c.request("GET", "/echo", {"X-Request-ID": "trace-me-123"})
    assert_proxy_error(r, 502, request_id="trace-me-123")


def test_pool_without_backends_gives_503(daemon):
    d = daemon([])
    with d.conn() as c:
        r = c.request("GET", "/echo")
    assert_proxy_error(r, 503)


@pytest.mark.parametrize(
    "reply",
    [
        b"this is not http\r\n\r\n",
        b"HTTP/1.1 abc Bad\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"\x00\x01\x02\x03garbage",
        b"",  # closes without a byte
    ],
    ids=["text", "bad-status", "double-cl", "binary", "empty"],
)
def test_backend_answering_garbage_gives_502(raw_backend, daemon, reply):
    rb = raw_backend(lambda rec: RawReply(reply))
    d = daemon([rb])
    with d.conn() as c:
        r = c.request("GET", "/garbage")
    assert_proxy_error(r, 502)
    assert len(rb.requests) >= 1


def test_backend_response_with_cl_and_te_is_refused_or_reframed(raw_backend, daemon):
    """RFC 9112 §6.3: Transfer-Encoding wins; a proxy either refuses (502) or forwards
    with the Content-Length removed. Never both headers, never the 3 bytes as a body."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    rb = raw_backend(lambda rec: RawReply(reply))
    d = daemon([rb])
    with d.conn() as c:
        r = c.request("GET", "/cl-te")  # the client's parser rejects CL+TE itself
    if r.status != 502:
        assert r.status == 200 and r.body == b"", r
    else:
        assert_proxy_error(r, 502)


def test_backend_dying_mid_body_is_not_passed_off_as_complete(raw_backend, daemon):
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100
    rb = raw_backend(lambda rec: RawReply(reply))
    d = daemon([rb])
    with d.conn() as c:
        c.send(b"GET /truncated HTTP/1.1\r\nHost: test.local\r\n\r\n")
        head = c.read_head()
        assert head.status == 200, head
        with pytest.raises(ProtocolError):
            # the proxy must close the connection: 900 bytes never come
            c.read_body(head)


def test_proxy_survives_errors(raw_backend, backend, daemon):
    """After backend failures the proxy still serves (and did not crash)."""
    rb = raw_backend(lambda rec: RawReply(b"garbage\r\n\r\n"))
    good = backend("good")
    d = daemon([rb, good])
    statuses = []
    for _ in range(6):
        with d.conn() as c:
            statuses.append(c.request("GET", "/echo").status)
    assert set(statuses) <= {200, 502}
    assert 200 in statuses
    assert d.alive(), d.diag()


def test_error_is_in_the_access_log(daemon):
    d = daemon([{"id": "dead", "address": f"127.0.0.1:{free_port()}"}])
    with d.conn() as c:
        r = c.request("GET", "/echo?err")
    assert_proxy_error(r, 502)
    entry = d.access_log(1)[-1]
    assert entry["status"] == 502
    assert entry["request_id"] == r.header("X-Request-ID")
    assert entry["termination"], entry
