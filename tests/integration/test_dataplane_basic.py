"""The data plane end to end: balancing, keep-alive, pipelining, HTTP/1.0, 100-continue,
HEAD/204/304, chunked bodies with trailers, responses read to close, the access log.

Every test runs the real daemon against real stub backends that answer with their id.
"""

from __future__ import annotations

import hashlib
import itertools
import socket

import pytest
from helpers.backends import RawReply, pattern_sha256
from helpers.http1 import build_request, chunked

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("one_client_connection", [False, True], ids=["new-conns", "keepalive"])
def test_round_robin_alternates_between_two_backends(backend, daemon, one_client_connection):
    b1, b2 = backend("b1"), backend("b2")
    d = daemon([b1, b2])
    seen = []
    conn = d.conn() if one_client_connection else None
    try:
        for i in range(8):
            c = conn or d.conn()
            try:
                r = c.request("GET", f"/echo?i={i}")
            finally:
                if conn is None:
                    c.close()
            assert r.status == 200, r
            assert r.json()["backend"] == r.header("X-Backend")
            seen.append(r.header("X-Backend"))
    finally:
        if conn is not None:
            conn.close()
    assert sorted(set(seen)) == ["b1", "b2"], seen
    assert all(a != b for a, b in itertools.pairwise(seen)), f"not alternating: {seen}"
    # each backend saw exactly the requests it answered, in order
    for b in (b1, b2):
        expected = [f"/echo?i={i}" for i, who in enumerate(seen) if who == b.id]
        assert [r.target for r in b.requests] == expected


def test_keepalive_serves_several_requests_on_one_connection(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        for i in range(5):
            r = c.request("POST", f"/echo?n={i}", body=f"body-{i}".encode())
            assert r.status == 200, r
            assert r.version == "HTTP/1.1"
            assert not r.has_token("Connection", "close"), r
            assert r.json()["body"] == f"body-{i}"
        assert c.is_open()
    assert [r.body for r in b1.requests] == [f"body-{i}".encode() for i in range(5)]


def test_client_connection_close_is_honoured(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        r = c.request("GET", "/echo", {"Connection": "close"})
        assert r.status == 200, r
        assert r.has_token("Connection", "close"), r
        assert c.wait_closed(5), "connection not closed after Connection: close"


def test_backend_connections_are_pooled_and_reused(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    for i in range(6):
        with d.conn() as c:
            assert c.request("GET", f"/echo?n={i}").status == 200
    peers = {r.peer for r in b1.requests}
    assert len(b1.requests) == 6
    assert len(peers) <= 2, f"6 sequential requests used {len(peers)} backend connections"


def test_pipelined_requests_are_answered_in_order(backend, daemon):
    b1, b2 = backend("b1"), backend("b2")
    d = daemon([b1, b2])
    batch = (
        build_request("GET", "/slow?ms=400&n=1")
        + build_request("HEAD", "/echo?n=2")
        + build_request("POST", "/echo?n=3", body=b"third")
        + build_request("GET", "/echo?n=4")
    )
    with d.conn() as c:
        c.send(batch)
        r1 = c.read_response()
        r2 = c.read_response(method="HEAD")
        r3 = c.read_response()
        r4 = c.read_response()
        assert c.is_open()
    assert [r.status for r in (r1, r2, r3, r4)] == [200, 200, 200, 200]
    assert r1.json()["target"] == "/slow?ms=400&n=1"
    assert r2.body == b"" and r2.header("X-Backend") in ("b1", "b2"), r2
    assert r3.json()["target"] == "/echo?n=3" and r3.json()["body"] == "third"
    assert r4.json()["target"] == "/echo?n=4"
    targets = sorted(r.target for r in b1.requests + b2.requests)
    assert targets == sorted(["/slow?ms=400&n=1", "/echo?n=2", "/echo?n=3", "/echo?n=4"])


def test_many_pipelined_requests_keep_their_order(backend, daemon):
    b1, b2 = backend("b1"), backend("b2")
    d = daemon([b1, b2])
    n = 50
    batch = b"".join(
        build_request("GET", f"/slow?ms={(n - i) % 7}&n={i}") if i % 5 == 0
        else build_request("POST", f"/echo?n={i}", body=str(i).encode())
        for i in range(n)
    )  # fmt: skip
    with d.conn(timeout=20) as c:
        c.send(batch)
        targets = [c.read_response().json()["target"] for _ in range(n)]
    assert [t.rsplit("n=", 1)[1] for t in targets] == [str(i) for i in range(n)]


def test_upgrade_request_answered_without_101_stays_http(backend, daemon):
    """An Upgrade the backend declines (a plain 200) is an ordinary exchange: the client
    gets the response, and the connection either goes on as HTTP or is announced as
    closing (`Connection: close`), never dropped unannounced."""
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        r = c.request("GET", "/echo?up", {"Connection": "Upgrade", "Upgrade": "websocket"})
        assert r.status == 200, r
        assert r.json()["target"] == "/echo?up"
        if r.has_token("Connection", "close"):
            assert c.wait_closed(5)
        else:
            r = c.request("GET", "/echo?next", timeout=3)
            assert r.status == 200, r
            assert r.json()["target"] == "/echo?next"


def test_http10_request_without_keepalive_gets_response_then_close(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        r = c.request("GET", "/echo?v=10", version="HTTP/1.0", host=None)
        assert r.status == 200, r
        assert r.framing in ("length", "close"), f"chunked sent to an HTTP/1.0 client: {r}"
        assert r.json()["target"] == "/echo?v=10"
        assert c.wait_closed(5), "HTTP/1.0 connection without keep-alive was not closed"
    assert b1.requests[0].target == "/echo?v=10"


def test_http10_keepalive_when_asked(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        for i in range(2):
            r = c.request(
                "GET", f"/echo?n={i}", {"Connection": "keep-alive"}, version="HTTP/1.0", host=None
            )
            assert r.status == 200, r
            assert r.framing == "length", r
            assert r.has_token("Connection", "keep-alive"), r
        assert c.is_open()


def test_http10_client_never_gets_chunked_framing(raw_backend, daemon):
    parts = [bytes([i]) * 10_000 for i in range(30)]
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(*parts)
    )
    rb = raw_backend(lambda rec: RawReply(reply, close=False))
    d = daemon([rb])
    with d.conn() as c:
        r = c.request("GET", "/chunked", version="HTTP/1.0")
    assert r.status == 200, r
    assert r.framing in ("length", "close"), f"chunked sent to an HTTP/1.0 client: {r}"
    assert r.body == b"".join(parts)


def test_expect_100_continue(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        c.send(
            build_request("POST", "/echo", {"Expect": "100-continue", "Content-Length": "11"}, b"")
        )
        interim = c.read_response(interim=True)
        assert interim.status == 100, interim
        c.send(b"hello world")
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["body"] == "hello world"
        # the connection stays usable
        assert c.request("GET", "/echo?after").status == 200
    assert b1.requests[0].body == b"hello world"


def test_expect_100_continue_with_body_sent_at_once(backend, daemon):
    """Clients may send the body without waiting for the 100 (curl does after 1 s)."""
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        r = c.request("POST", "/echo", {"Expect": "100-continue"}, b"eager body")
        assert r.status == 200, r
        assert r.json()["body"] == "eager body"
        assert all(i.status == 100 for i in r.interim), r.interim
        assert c.request("GET", "/echo?after").status == 200


def test_no_100_continue_for_an_http10_client(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        r = c.request("POST", "/echo", {"Expect": "100-continue"}, b"ten", version="HTTP/1.0")
    assert r.status == 200, r
    assert r.interim == [], "100 Continue sent to an HTTP/1.0 client (RFC 9110 15.2.1)"
    assert r.json()["body"] == "ten"


def test_interim_1xx_from_backend_is_not_taken_as_final(raw_backend, daemon):
    reply = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
    )
    rb = raw_backend(lambda rec: RawReply(reply, close=False))
    d = daemon([rb])
    with d.conn() as c:
        r = c.request("GET", "/hints")
        assert r.status == 200, r
        assert r.body == b"final"
        assert all(i.status == 103 for i in r.interim), r.interim
        r = c.request("GET", "/hints", timeout=3)
        assert r.status == 200 and r.body == b"final", r


def test_client_half_close_still_gets_the_response(backend, daemon):
    """A client that shuts down its sending side after the request (`nc -N`, some
    load balancers' health checks) still gets its answer."""
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        c.send(build_request("GET", "/slow?ms=200"))
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["target"] == "/slow?ms=200"


def test_client_gone_mid_request_leaves_proxy_healthy(backend, daemon):
    """Clients that leave while their request is at the backend do no harm: later
    requests get their own answers (no stray response from a dropped exchange)."""
    b1 = backend()
    d = daemon([b1])
    for i in range(3):
        with d.conn() as c:
            c.send(build_request("GET", f"/slow?ms=300&gone={i}"))
            b1.wait_for_requests(i + 1)  # the request is at the backend: now leave
    with d.conn() as c:
        for i in range(3):
            r = c.request("GET", f"/echo?after={i}")
            assert r.status == 200, r
            assert r.json()["target"] == f"/echo?after={i}"
    assert d.alive(), d.diag()


def test_head_has_headers_but_no_body(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        r = c.request("HEAD", "/download?size=5000")
        assert r.status == 200, r
        assert r.header("Content-Length") == "5000", r
        assert r.body == b""
        # the next response on the connection starts right after the HEAD's headers
        r2 = c.request("GET", "/echo?after-head")
        assert r2.status == 200, r2
        assert r2.json()["target"] == "/echo?after-head"
    assert [r.method for r in b1.requests] == ["HEAD", "GET"]


def test_204_and_304_have_no_body(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        r204 = c.request("DELETE", "/status/204")
        assert r204.status == 204, r204
        assert r204.body == b""
        r304 = c.request("GET", "/status/304", {"If-None-Match": '"v1"'})
        assert r304.status == 304, r304
        assert r304.body == b""
        assert r304.header("ETag") == '"v1"'
        assert r304.header("Transfer-Encoding") is None, r304
        r = c.request("GET", "/echo?after")
        assert r.status == 200, r
        assert r.json()["target"] == "/echo?after"


def test_chunked_request_body_reaches_backend(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    body = chunked(b"hello ", b"chunked ", b"world")
    with d.conn() as c:
        c.send(build_request("POST", "/echo", {"Transfer-Encoding": "chunked"}, body))
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["body"] == "hello chunked world"
        assert c.request("GET", "/echo?after").status == 200
    assert b1.requests[0].body == b"hello chunked world"


def test_chunked_request_trailers_are_forwarded(raw_backend, daemon):
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    rb = raw_backend(lambda rec: RawReply(ok, close=False))
    d = daemon([rb])
    body = chunked(b"part one;", b"part two", trailers={"X-Checksum": "abc123"})
    with d.conn() as c:
        c.send(build_request("POST", "/upload", {"Transfer-Encoding": "chunked"}, body))
        r = c.read_response()
    assert r.status == 200, r
    rec = rb.requests[0]
    assert rec.body == b"part one;part two"
    assert rec.trailer("X-Checksum") == "abc123", f"trailers lost: {rec.raw!r}"


def test_chunked_response_with_trailers(raw_backend, daemon):
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
        b"Trailer: X-Checksum\r\n\r\n"
        b"5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: sha-abc\r\n\r\n"
    )
    rb = raw_backend(lambda rec: RawReply(response, close=False))
    d = daemon([rb])
    with d.conn() as c:
        r = c.request("GET", "/trailers", {"TE": "trailers"})
        assert r.status == 200, r
        assert r.framing == "chunked", r
        assert r.body == b"hello, world"
        assert r.trailer("X-Checksum") == "sha-abc", f"trailers lost: {r} {r.trailers}"
        # framing intact: the connection serves the next request
        r2 = c.request("GET", "/trailers")
        assert r2.body == b"hello, world"


def test_large_chunked_response_streams_through(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    size = 4 * 1024 * 1024 + 123
    digest = hashlib.sha256()
    with d.conn(timeout=20) as c:
        c.send(build_request("GET", f"/download?size={size}&chunked=1"))
        r = c.read_response(sink=digest.update)
    assert r.status == 200, r
    assert r.body_len == size
    assert digest.hexdigest() == pattern_sha256(size)


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_response_without_length_is_read_to_close(raw_backend, daemon, version):
    payload = bytes(range(256)) * 800  # 200 KiB
    rb = raw_backend(
        lambda rec: RawReply(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-test\r\n\r\n" + payload
        )
    )
    d = daemon([rb])
    with d.conn(timeout=10) as c:
        r = c.request("GET", "/no-length", version=version)
        assert r.status == 200, r
        assert r.body_len == len(payload), r
        assert r.body == payload
        if version == "HTTP/1.0":
            assert r.framing in ("length", "close"), r
    # the backend connection was not reused for the next request: it still works
    with d.conn(timeout=10) as c:
        assert c.request("GET", "/no-length").body == payload
    assert len(rb.requests) == 2


def test_access_log_records_each_request(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1])
    with d.conn() as c:
        r = c.request("POST", "/echo?log=1", body=b"12345")
    assert r.status == 200, r
    entry = d.access_log(1)[-1]
    fields = {
        "time", "client", "method", "path", "status", "bytes_in", "bytes_out", "backend",
        "attempts", "connect_time", "header_time", "total_time", "request_id", "termination",
        "protocol",
    }  # fmt: skip
    assert fields <= set(entry), f"missing {fields - set(entry)} in {entry}"
    assert entry["method"] == "POST"
    assert entry["protocol"] == "HTTP/1.1"
    assert entry["path"].startswith("/echo")
    assert entry["status"] == 200
    assert entry["backend"] == "b1"
    assert entry["attempts"] >= 1
    assert entry["request_id"] == b1.requests[0].header("X-Request-ID")
    assert "127.0.0.1" in str(entry["client"])
    assert entry["bytes_out"] > 0
