"""Malformed and ambiguous requests on raw sockets (SPEC §3, request smuggling).

Each case must get a 400 (431 for oversized headers, 413 for a body over the limit), the
connection must be closed, and *nothing* of the request may reach the backend. After
each case a good request on a fresh connection acts as a barrier: once it has been
answered, anything the bad request might have leaked would have been recorded too.

One daemon and one backend serve the whole module (they are stateless between cases:
the backend's record is cleared per test).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.backends import Backend, BackendLoop
from helpers.daemon import Daemon, attach_daemon, free_ports, make_config
from helpers.http1 import Conn, build_request, chunked

pytestmark = pytest.mark.timeout(30)

MAX_BODY = 1000
H = b"Host: test.local\r\n"


@pytest.fixture(scope="module")
def shared(
    backend_loop: BackendLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Daemon, Backend]]:
    b1 = Backend(backend_loop, "b1").start()
    workdir = tmp_path_factory.mktemp("malformed")
    port, admin_port = free_ports(2)
    config = make_config(
        port=port,
        admin_port=admin_port,
        workdir=workdir,
        backends=[b1.config()],
        limits={"max_header_bytes": 8192, "max_body_bytes": MAX_BODY},
    )
    d = Daemon(config, workdir)
    try:
        d.start()
        yield d, b1
    finally:
        d.stop()
        b1.stop()


@pytest.fixture
def proxy(shared: tuple[Daemon, Backend], request: pytest.FixtureRequest):
    d, b1 = shared
    attach_daemon(request.node, d)
    assert d.alive(), f"the shared daemon died in an earlier case\n{d.diag()}"
    b1.clear()
    return d, b1


def barrier(d: Daemon, b1: Backend) -> None:
    """Send a good request and wait for its answer; afterwards only it may be recorded."""
    with d.conn() as c:
        r = c.request("GET", "/echo?barrier")
        assert r.status == 200, r
    targets = [f"{r.method} {r.target}" for r in b1.requests]
    assert targets == ["GET /echo?barrier"], f"a rejected request reached the backend: {targets}"


def expect_rejected(d: Daemon, b1: Backend, data: bytes, statuses: tuple[int, ...] = (400,)):
    with d.conn() as c:
        c.send(data)
        r = c.read_response()
        assert r.status in statuses, f"sent {data[:300]!r}, got {r}"
        assert c.wait_closed(5), f"connection left open after {r.status} for {data[:300]!r}"
    barrier(d, b1)
    return r


CHUNKED_POST = b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
BAD_REQUESTS = {
    # framing ambiguity
    "cl-and-te": b"POST /echo HTTP/1.1\r\n" + H
    + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
    "te-and-cl": b"POST /echo HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
    "cl-and-te-get": b"GET /echo HTTP/1.1\r\n" + H
    + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "double-cl-differing": b"POST /echo HTTP/1.1\r\n" + H
    + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-list-differing": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!",
    "te-space-before-colon": b"POST /echo HTTP/1.1\r\n" + H
    + b"Transfer-Encoding : chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
    # chunk sizes
    "chunk-size-not-hex": CHUNKED_POST + b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": CHUNKED_POST + b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-0x": CHUNKED_POST + b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNKED_POST + b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk-size-empty": CHUNKED_POST + b"\r\nhello\r\n0\r\n\r\n",
    "chunk-data-overruns-size": CHUNKED_POST + b"3\r\nhello\r\n0\r\n\r\n",
    # line endings and bytes
    "bare-lf-request-line": b"GET /echo HTTP/1.1\n" + H + b"\r\n",
    "bare-lf-header": b"GET /echo HTTP/1.1\r\nHost: test.local\nX-A: b\r\n\r\n",
    "bare-lf-everywhere": b"GET /echo HTTP/1.1\nHost: test.local\nX-A: b\n\n",
    "nul-in-header-value": b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "nul-in-header-name": b"GET /echo HTTP/1.1\r\n" + H + b"X-\x00A: b\r\n\r\n",
    "obs-fold-space": b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "obs-fold-tab": b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n",
    "space-before-colon": b"GET /echo HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n",
    "header-without-colon": b"GET /echo HTTP/1.1\r\n" + H + b"X-A b\r\n\r\n",
    # request line
    "request-line-garbage": b"HELLO\r\n\r\n",
    "request-line-no-version": b"GET /echo\r\n" + H + b"\r\n",
    "request-line-extra-token": b"GET /echo HTTP/1.1 extra\r\n" + H + b"\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "bad-method-chars": b"G(E)T /echo HTTP/1.1\r\n" + H + b"\r\n",
    "binary-request-line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    + b"\x8a" * 40 + b"\r\n\r\n",
    # Content-Length values
    "cl-alpha": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\nhello",
    "cl-negative": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: -5\r\n\r\nhello",
    "cl-plus": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
    "cl-hex": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello",
    "cl-empty": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\nhello",
    "cl-huge": b"POST /echo HTTP/1.1\r\n" + H
    + b"Content-Length: 99999999999999999999999\r\n\r\nhello",
    # Transfer-Encoding other than a final chunked
    "te-gzip-only": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello",
    "te-chunked-then-gzip": b"POST /echo HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-xchunked": b"POST /echo HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-chunked-twice": b"POST /echo HTTP/1.1\r\n" + H
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # Host
    "double-host": b"GET /echo HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
}  # fmt: skip

# RFC 9112 also allows 505 for an unknown version and 501 for an unknown coding.
OTHER_ACCEPTED = {
    "te-gzip-only": (400, 501),
    "te-chunked-then-gzip": (400, 501),
    "te-xchunked": (400, 501),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_malformed_request_is_rejected_and_never_forwarded(proxy, name):
    d, b1 = proxy
    expect_rejected(d, b1, BAD_REQUESTS[name], OTHER_ACCEPTED.get(name, (400,)))


# HTTP/1.2 and HTTP/3.1: a keep-alive-by-default version other than 1.1 (the proxy's
# common-request path relies on llhttp refusing every such version).
@pytest.mark.parametrize(
    "version", [b"HTTP/7.1", b"HTTP/1.10", b"HTTP/2.0", b"http/1.1", b"HTTP/1.2", b"HTTP/3.1"]
)
def test_bad_http_version_is_rejected(proxy, version):
    d, b1 = proxy
    expect_rejected(d, b1, b"GET /echo " + version + b"\r\n" + H + b"\r\n", (400, 505))


def test_header_too_large_gives_431(proxy):
    d, b1 = proxy
    data = build_request("GET", "/echo", {"X-Big": "a" * 10_000})
    expect_rejected(d, b1, data, (431,))


def test_many_headers_too_large_gives_431(proxy):
    d, b1 = proxy
    headers = [(f"X-H{i}", "v" * 30) for i in range(300)]  # ~12 KB > 8192
    expect_rejected(d, b1, build_request("GET", "/echo", headers), (431,))


def test_headers_just_under_the_limit_pass(proxy):
    d, b1 = proxy
    with d.conn() as c:
        r = c.request("GET", "/echo", {"X-Big": "a" * 6000})
    assert r.status == 200, r
    assert b1.requests[0].header("X-Big") == "a" * 6000


def test_pipelined_good_then_bad_request(proxy):
    """A good request followed, in the same packet, by a smuggling attempt: the bad one
    never reaches the backend and the connection ends with a 400 (or is closed)."""
    d, b1 = proxy
    good = build_request("GET", "/echo?first")
    bad = BAD_REQUESTS["cl-and-te"]
    with d.conn() as c:
        c.send(good + bad)
        statuses = []
        while True:
            try:
                statuses.append(c.read_response().status)
            except AssertionError:
                break
        assert c.wait_closed(5)
    assert statuses in ([200, 400], [400]), statuses
    assert all(r.target == "/echo?first" for r in b1.requests), b1.requests


def test_body_over_max_body_bytes_gives_413(proxy):
    d, b1 = proxy
    body = b"x" * (MAX_BODY + 1)
    with d.conn() as c:
        r = c.request("POST", "/echo", body=body)
    assert r.status == 413, r
    barrier(d, b1)


def test_body_at_max_body_bytes_passes(proxy):
    d, b1 = proxy
    body = b"y" * MAX_BODY
    with d.conn() as c:
        r = c.request("POST", "/echo", body=body)
    assert r.status == 200, r
    assert b1.requests[0].body == body


def test_expect_continue_over_limit_gets_413_without_100(proxy):
    d, b1 = proxy
    with d.conn() as c:
        c.send(
            build_request(
                "POST", "/echo", {"Expect": "100-continue", "Content-Length": str(MAX_BODY * 10)}
            )
        )
        r = c.read_response(interim=True)
        assert r.status == 413, r
    barrier(d, b1)


def test_chunked_body_over_max_body_bytes_gives_413(proxy):
    d, b1 = proxy
    body = chunked(b"a" * 600, b"b" * 600)
    with d.conn() as c:
        c.send(build_request("POST", "/echo", {"Transfer-Encoding": "chunked"}, body))
        r = c.read_response()
    assert r.status == 413, r
    # the backend may have seen the head, but never a complete request
    with d.conn() as c:
        assert c.request("GET", "/echo?barrier").status == 200
    assert all(r.body is None or len(r.body) <= MAX_BODY for r in b1.requests)


def test_error_responses_to_bad_requests_are_short_and_clean(proxy):
    d, b1 = proxy
    r = expect_rejected(d, b1, BAD_REQUESTS["cl-and-te"])
    assert r.body_len <= 1024, r
    assert b"Traceback" not in r.body


def test_proxy_still_serves_after_all_that(proxy):
    d, _b1 = proxy
    with Conn(d.port) as c:
        for i in range(3):
            assert c.request("GET", f"/echo?{i}").status == 200
    assert d.alive()
