"""Edges of HTTP/1.1 where a front proxy is attacked (issue 18), on raw sockets: what the
client sends is bytes, and what a raw backend received is checked as it arrived. Every
request that reaches a backend must be one the proxy parsed and rewrote (it carries
`Via: 1.1 haproxyd`, see `assert_all_rewritten`).

Upgrade requests, trailers, pipelining past an error, a client that leaves mid-request,
lingering close, bodiless responses and transfer codings; the request target, Host and
routing are in test_dataplane_targets.py.
"""

from __future__ import annotations

import socket
import time

import pytest
from helpers.asserts import assert_all_rewritten
from helpers.backends import RawReply, Recorded
from helpers.http1 import Conn, ProtocolError, wait_until

pytestmark = pytest.mark.timeout(60)


def ok_reply(rec: Recorded) -> RawReply:
    """200, keep-alive, the target as the body: says which request it answers."""
    body = rec.target.encode()
    return RawReply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), False)


# -- 1. Upgrade: an ordinary request until a 101 ------------------------------------

SMUGGLE_AFTER_UPGRADE = (
    b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: internal.example\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
)


@pytest.mark.parametrize("protocol", [b"websocket", b"h2c"])
def test_bytes_after_a_declined_upgrade_are_parsed_as_the_next_request(
    raw_backend, daemon, protocol
):
    """The issue's reproduction in one write: the backend answers the upgrade request
    with a 200, so what followed its head is the next request, parsed and rewritten by
    the proxy (its X-Forwarded-For appended to), never raw bytes on the backend."""
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    with d.conn() as c:
        c.send(SMUGGLE_AFTER_UPGRADE % protocol)
        first = c.read_response()
        second = c.read_response()
    assert (first.status, first.body) == (200, b"/first"), first
    assert (second.status, second.body) == (200, b"/smuggled"), second
    assert [r.target for r in rb.requests] == ["/first", "/smuggled"], rb.requests
    assert_all_rewritten(rb.requests)
    smuggled = rb.requests[1]
    assert smuggled.header("X-Forwarded-For") == "6.6.6.6, 127.0.0.1", smuggled.raw
    assert smuggled.header("X-Forwarded-Host") == "internal.example", smuggled.raw
    assert smuggled.header("Upgrade") is None, smuggled.raw


def test_bytes_after_an_accepted_upgrade_go_through_the_tunnel(raw_backend, daemon):
    """After a 101 the connection is a tunnel: the bytes the client sent after its
    upgrade request reach the backend as they were, after the 101."""
    switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    tunnelled = b"GET /inside HTTP/1.1\r\nHost: tunnel\r\n\r\n"

    def handler(rec: Recorded) -> RawReply:
        if rec.target == "/up":
            return RawReply(switch, close=False)
        return RawReply(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ninside", close=False)

    rb = raw_backend(handler)
    d = daemon([rb])
    with d.conn() as c:
        c.send(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
               + tunnelled)  # fmt: skip
        r = c.read_response()
        assert r.status == 101, r
        inner = c.read_response()
        assert (inner.status, inner.body) == (200, b"inside"), inner
    assert [r.target for r in rb.requests] == ["/up", "/inside"]
    assert_all_rewritten(rb.requests[:1])
    assert rb.requests[1].raw == tunnelled  # byte for byte, as the client sent it


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_upgrade_request_with_a_body_is_refused(raw_backend, daemon, framing):
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    with d.conn() as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n" + framing)
        r = c.read_response()
        assert r.status == 400, r
        assert c.wait_closed(5)
    with Conn(d.port) as c:
        assert c.request("GET", "/barrier").status == 200
    assert [r.target for r in rb.requests] == ["/barrier"]


# -- 5. Trailers that frame, route or control the connection are never forwarded -----

DENIED_TRAILERS = (
    b"Host: internal.example\r\nTE: trailers\r\nTrailer: X-Ok\r\n"
    b"Upgrade: websocket\r\nExpect: 100-continue\r\nKeep-Alive: timeout=5\r\n"
    b"Proxy-Authorization: Basic eA==\r\nProxy-Anything: 1\r\nX-Forwarded-For: 6.6.6.6\r\n"
    b"X-Forwarded-Anything: 1\r\nForwarded: for=6.6.6.6\r\nVia: 1.1 evil\r\n"
)
# One trailer section with every denied field llhttp lets through, then the two it
# refuses in a request's trailers (each alone, or llhttp's refusal hides the rest).
TRAILER_CASES = {
    "controlling-fields": DENIED_TRAILERS,
    "transfer-encoding": b"Transfer-Encoding: chunked\r\n",
    "content-length": b"Content-Length: 5\r\n",
    "connection": b"Connection: close\r\n",  # llhttp would take it as the connection's
    "proxy-connection": b"Proxy-Connection: close\r\n",
}


@pytest.mark.parametrize("denied", list(TRAILER_CASES.values()), ids=list(TRAILER_CASES))
def test_request_trailers_that_control_the_message_are_dropped(raw_backend, daemon, denied):
    """The backend receives the body and the harmless trailer, byte for byte, and its
    pooled connection serves the next request (the issue: `Connection: close` in a
    trailer poisoned it). llhttp itself refuses a trailer section with
    Transfer-Encoding or Content-Length, and the proxy one with Connection or
    Proxy-Connection (llhttp would close the client connection after the request):
    then the request gets 400 and never reaches the backend whole."""
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    with d.conn() as c:
        c.send(
            b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Ok: 1\r\n" + denied + b"\r\n"
        )
        status = c.read_response().status
    with d.conn() as c:
        assert c.request("GET", "/next").status == 200
    if denied.startswith((b"Transfer-Encoding", b"Content-Length", b"Connection", b"Proxy-C")):
        assert status == 400
        assert [r.target for r in rb.requests] == ["/next"], rb.requests
        return
    assert status == 200
    first, second = rb.requests
    assert first.raw.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\nX-Ok: 1\r\n\r\n"), first.raw
    assert first.trailers == [("X-Ok", "1")]
    assert second.target == "/next" and second.peer == first.peer  # the same connection
    assert_all_rewritten(rb.requests)


@pytest.mark.parametrize("denied", list(TRAILER_CASES.values()), ids=list(TRAILER_CASES))
def test_response_trailers_that_control_the_message_are_dropped(raw_backend, daemon, denied):
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Ok: 1\r\n" + denied + b"\r\n"
    )
    """As for requests; llhttp refuses a trailer section with Content-Length as an
    invalid response, which arrives after the head went out: the client's connection
    is cut, so its body never ends as if complete."""
    rb = raw_backend(lambda rec: RawReply(reply, close=False))
    d = daemon([rb])
    if denied.startswith(b"Content-Length"):
        with d.conn() as c, pytest.raises(ProtocolError):
            c.request("GET", "/t", {"TE": "trailers"})
        return
    with d.conn() as c:
        r = c.request("GET", "/t", {"TE": "trailers"})
        assert (r.status, r.body) == (200, b"hello"), r
        assert r.trailers == [("X-Ok", "1")], r.trailers
        assert c.request("GET", "/again").status == 200


# -- 2. Pipelined requests before garbage are answered, then the 400 ----------------


def test_complete_request_before_garbage_is_answered_then_400(raw_backend, daemon):
    """The issue's reproduction: a valid POST (Content-Length 4) and garbage after it
    in one write. The POST runs once and its answer arrives, then the 400, then the
    close; the garbage never reaches the backend."""
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    with d.conn() as c:
        c.send(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n1\r\nZ\r\n0\r\n\r\n")
        first = c.read_response()
        second = c.read_response()
        assert c.wait_closed(5)
    assert (first.status, first.body) == (200, b"/p"), first
    assert second.status == 400, second
    assert [(r.target, r.body) for r in rb.requests] == [("/p", b"1\r\nZ")]
    assert_all_rewritten(rb.requests)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
        b"GET /bad HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    ],
    ids=["double-content-length", "bad-chunk-size", "obs-fold"],
)
def test_pipelined_requests_are_answered_in_order_before_the_400(raw_backend, daemon, garbage):
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    good = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"
    with d.conn() as c:
        c.send(good + garbage)
        answers = [c.read_response() for _ in range(3)]
        assert c.wait_closed(5)
    assert [(r.status, r.body) for r in answers[:2]] == [(200, b"/one"), (200, b"/two")]
    assert answers[2].status == 400, answers[2]
    assert answers[2].has_token("Connection", "close"), answers[2]
    assert [r.target for r in rb.requests] == ["/one", "/two"]
    assert_all_rewritten(rb.requests)


# -- 8. A client that leaves mid-request frees its backend ---------------------------


@pytest.mark.parametrize("how", ["shutdown", "close"])
def test_client_leaving_mid_body_aborts_the_backend_exchange(raw_backend, daemon, how):
    """Content-Length 1000, 7 bytes, then the client goes: the backend connection is
    closed at once (not at the 30 s response timeout) and the access log says
    `client_aborted`."""
    rb = raw_backend(ok_reply)
    d = daemon([rb], timeouts={"response": "30s"})
    c = d.conn()
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n1234567")
    wait_until(lambda: rb.connections == 1 and rb.open_connections == 1, what="backend connect")
    if how == "shutdown":
        c.sock.shutdown(socket.SHUT_WR)
    else:
        c.close()
    wait_until(lambda: rb.open_connections == 0, timeout=3, what="the backend connection closed")
    entry = d.access_log(1)[-1]
    assert entry["termination"] == "client_aborted", entry
    assert rb.requests == []  # never a complete request
    c.close()


def test_client_half_close_after_a_whole_request_still_gets_its_answer(raw_backend, daemon):
    """The other side of the above: a request sent whole is answered after a half-close
    (HAProxy's default; what `nc -N` and HTTP/1.0 tools rely on)."""
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    with d.conn() as c:
        c.send(b"POST /whole HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
        assert (r.status, r.body) == (200, b"/whole"), r
        assert c.wait_closed(5)


# -- 11. Lingering close: the client can read the error answer ------------------------


def test_refused_body_is_drained_so_the_client_reads_the_413(raw_backend, daemon):
    """The client sends its whole 64 MB body before it reads (curl does, without
    `Expect`), far more than the socket buffers hold. The 413 comes after the head;
    closing then, with the body's bytes unread, would reset the connection, and the
    client would get the reset while still sending, not the 413. The proxy
    half-closes and drains instead."""
    rb = raw_backend(ok_reply)
    d = daemon([rb], limits={"max_body_bytes": 1000})
    body = b"x" * (64 << 20)
    with d.conn(timeout=20) as c:
        c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        r = c.read_response()
        assert r.status == 413, r
        assert c.wait_closed(10)
    assert rb.requests == []


def test_lingering_ends_when_the_client_keeps_sending(raw_backend, daemon):
    """The drain is bounded: a client that never stops sending is closed after it."""
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    with d.conn(timeout=20) as c:
        c.send(b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, r
        deadline = time.monotonic() + 15
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                c.sock.sendall(b"y" * 65536)
            except OSError:
                closed = True
        assert closed, "the proxy kept draining past its lingering time"


# -- 9. Responses with no body carry no framing ---------------------------------------


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
@pytest.mark.parametrize(
    "framing", [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"], ids=["cl", "te"]
)
def test_bodiless_responses_lose_their_framing_headers(raw_backend, daemon, status, framing):
    """A 204/304 has no body whatever its headers say (RFC 9110 §8.6, §6.4.1): the
    client gets neither header (one that believed them would take the next response
    for this one's body), and the connection goes on."""
    reply = b"HTTP/1.1 " + status + b'\r\nETag: "v"\r\n' + framing + b"\r\n"
    rb = raw_backend(lambda rec: RawReply(reply if rec.target == "/empty" else ok_reply(rec).data,
                                          close=False))  # fmt: skip
    d = daemon([rb])
    with d.conn() as c:
        c.send(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == int(status[:3]), r
        assert r.header("Content-Length") is None and r.header("Transfer-Encoding") is None, r
        assert r.header("ETag") == '"v"'
        after = c.request("GET", "/after")
        assert (after.status, after.body) == (200, b"/after"), after


# -- 6. Transfer codings --------------------------------------------------------------


def test_request_transfer_coding_before_chunked_gets_501(raw_backend, daemon):
    """Kept or refused, never lost: the proxy refuses `gzip, chunked` as nginx does."""
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    with d.conn() as c:
        c.send(b"POST /z HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n")  # fmt: skip
        r = c.read_response()
        assert r.status == 501, r
        assert c.wait_closed(10)
    with d.conn() as c:
        assert c.request("GET", "/barrier").status == 200
    assert [r.target for r in rb.requests] == ["/barrier"]


def test_response_transfer_codings_are_kept(raw_backend, daemon):
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    rb = raw_backend(lambda rec: RawReply(reply, close=False))
    d = daemon([rb])
    with d.conn() as c:
        r = c.request("GET", "/z")
    assert r.status == 200 and r.body == b"abc", r
    assert r.header("Transfer-Encoding") == "gzip, chunked", r


def test_abort_on_client_close_aborts_even_a_whole_request(raw_backend, daemon):
    """`abort_on_client_close: true` (nginx's default): a whole request in flight is
    aborted when the client half-closes, its backend connection closed at once, and the
    access log says `client_closed`."""
    rb = raw_backend(lambda rec: RawReply(b"", close=False))  # never answers
    d = daemon(
        [rb],
        extra={"pools": {"web": {"abort_on_client_close": True}}},
        timeouts={"response": "30s"},
    )
    with d.conn() as c:
        c.send(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: len(rb.requests) == 1, timeout=5, what="the request at the backend")
        c.sock.shutdown(socket.SHUT_WR)
        wait_until(lambda: rb.open_connections == 0, timeout=3, what="the backend closed")
        assert c.wait_closed(5)
    entry = d.access_log(1)[-1]
    assert entry["termination"] == "client_closed", entry


# -- A client's Connection: close, read by the scanner or by llhttp -------------------


@pytest.mark.parametrize("value", [b"close", b"Close", b"CLOSE"])
def test_nothing_after_a_connection_close_request_reaches_a_backend(raw_backend, daemon, value):
    """The request that says `Connection: close` is the connection's last: it is
    answered with `Connection: close`, what was pipelined after it is never forwarded
    (nginx and HAProxy ignore it too), and the backend's copy carries no Connection
    header from the client (hop-by-hop: the proxy's own connection to the backend stays
    keep-alive)."""
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    last = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: " + value + b"\r\n\r\n"
    with d.conn() as c:
        after = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
        c.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + last + after)
        answers = [c.read_response(), c.read_response()]
        assert c.wait_closed(5)
    assert [(r.status, r.body) for r in answers] == [(200, b"/first"), (200, b"/last")]
    assert not answers[0].has_token("Connection", "close"), answers[0]
    assert answers[1].has_token("Connection", "close"), answers[1]
    assert [r.target for r in rb.requests] == ["/first", "/last"]
    for rec in rb.requests:
        assert not any(name.lower() == "connection" for name, _ in rec.headers), rec.raw
    assert_all_rewritten(rb.requests)
    assert rb.connections == 1  # one backend connection served both


def test_a_connection_keep_alive_request_keeps_the_connection(raw_backend, daemon):
    rb = raw_backend(ok_reply)
    d = daemon([rb])
    with d.conn() as c:
        c.send(
            b"GET /one HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = [c.read_response(), c.read_response()]
        assert c.is_open()
    assert [(r.status, r.body) for r in answers] == [(200, b"/one"), (200, b"/two")]
    assert [r.target for r in rb.requests] == ["/one", "/two"]
    for rec in rb.requests:
        assert not any(name.lower() == "connection" for name, _ in rec.headers), rec.raw
