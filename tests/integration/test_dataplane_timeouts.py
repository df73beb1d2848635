"""Client header and idle timeouts (slowloris gets closed) and the backend response
timeout (504). Short timeouts in each daemon's config keep these tests quick; waiting is
always a poll with a deadline, except the slowloris sender, whose slowness is the test."""

from __future__ import annotations

import time

import pytest
from helpers.asserts import assert_proxy_error

pytestmark = pytest.mark.timeout(60)


def test_slowloris_is_closed_after_client_header_timeout(backend, daemon):
    b1 = backend()
    d = daemon([b1], timeouts={"client_header": "1s", "idle": "30s"})
    with d.conn() as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: test.local\r\nX-Slow: ")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 10:
            try:
                c.send(b"a")  # one byte every 200 ms: never a complete header
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if c.wait_closed(0.2):
                closed = True
                break
        elapsed = time.monotonic() - start
        assert closed, "a request trickling its headers was never closed"
        assert elapsed < 6, f"closed only after {elapsed:.1f}s with client_header=1s"
        if c.buf:
            assert c.buf.startswith(b"HTTP/1.1 408"), bytes(c.buf[:200])
    assert b1.requests == []


def test_silent_connection_is_closed(backend, daemon):
    b1 = backend()
    d = daemon([b1], timeouts={"client_header": "1s", "idle": "1s"})
    with d.conn() as c:
        assert c.wait_closed(6), "a connection that never sent a byte was not closed"


def test_idle_keepalive_connection_is_closed_after_idle_timeout(backend, daemon):
    b1 = backend()
    d = daemon([b1], timeouts={"idle": "1s", "client_header": "5s"})
    with d.conn() as c:
        r = c.request("GET", "/echo")
        assert r.status == 200, r
        assert c.is_open()
        start = time.monotonic()
        assert c.wait_closed(8), "idle keep-alive connection not closed"
        assert time.monotonic() - start >= 0.5, "closed long before the idle timeout"
        assert not c.buf, f"unexpected bytes on an idle connection: {bytes(c.buf)!r}"


def test_backend_response_timeout_gives_504(backend, daemon):
    b1 = backend()
    d = daemon([b1], timeouts={"response": "1s"})
    with d.conn(timeout=4) as c:
        r = c.request("GET", "/slow?ms=5000")
    assert_proxy_error(r, 504)
    assert b1.requests[0].target == "/slow?ms=5000"
    # the proxy is fine afterwards
    with d.conn() as c:
        assert c.request("GET", "/slow?ms=10").status == 200
