"""The upstream side: the keep-alive pool per backend (reuse, idle expiry, never a stale
or half-read connection), `Connection: close` from a backend, retries (never once a
non-idempotent request's body was sent), and `limits.max_connections`."""

from __future__ import annotations

import pytest
from helpers.asserts import assert_proxy_error
from helpers.backends import RawReply
from helpers.daemon import free_port
from helpers.http1 import ConnectionClosed, ProtocolError, build_request, wait_until
from helpers.process import metrics_text

pytestmark = pytest.mark.timeout(60)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_idle_backend_connections_expire(raw_backend, daemon):
    rb = raw_backend(lambda rec: RawReply(OK, close=False))
    d = daemon([rb], extra={"pools": {"web": {"keepalive": {"idle_timeout": "1s"}}}})
    with d.conn() as c:
        assert c.request("GET", "/one").status == 200
        assert rb.open_connections == 1
        # the proxy closes its idle pooled connection after keepalive.idle_timeout
        wait_until(lambda: rb.open_connections == 0, timeout=6, what="pooled conn closed")
        assert c.request("GET", "/two").status == 200
    assert rb.connections == 2


def test_max_idle_zero_disables_reuse(backend, daemon):
    b1 = backend()
    d = daemon([b1], extra={"pools": {"web": {"keepalive": {"max_idle": 0}}}})
    with d.conn() as c:
        for i in range(3):
            assert c.request("GET", f"/echo?{i}").status == 200
    assert len({r.peer for r in b1.requests}) == 3


def test_backend_connection_close_is_honoured(raw_backend, daemon):
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    rb = raw_backend(lambda rec: RawReply(reply, close=True))
    d = daemon([rb])
    with d.conn() as c:
        for i in range(4):
            r = c.request("GET", f"/close/{i}")
            assert r.status == 200, r
            assert r.body == b"ok"
    assert rb.connections == 4


def test_stale_pooled_connection_is_not_used(raw_backend, daemon):
    """The backend closes its keep-alive connection 100 ms after answering (its own
    keep-alive timeout is shorter than the proxy's): the next request must not fail."""
    rb = raw_backend(lambda rec: RawReply(OK, close=False, close_after=0.1))
    d = daemon([rb])
    with d.conn() as c:
        for i in range(3):
            r = c.request("GET", f"/stale/{i}")
            assert r.status == 200, f"request {i} after the backend closed its side: {r}"
            wait_until(lambda: rb.open_connections == 0, what="backend closed its side")
    assert len(rb.requests) == 3


def test_head_response_does_not_poison_the_backend_connection(raw_backend, daemon):
    """A HEAD answer announcing a length has no body: the upstream connection must be
    reusable right after its headers."""

    def handler(rec):
        if rec.method == "HEAD":
            return RawReply(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", close=False)
        return RawReply(OK, close=False)

    rb = raw_backend(handler)
    d = daemon([rb])
    with d.conn() as c:
        r = c.request("HEAD", "/h")
        assert r.status == 200 and r.header("Content-Length") == "5000", r
        r = c.request("GET", "/g", timeout=3)
        assert r.status == 200 and r.body == b"ok", r


def test_idempotent_request_is_retried_on_another_backend(backend, daemon):
    good = backend("good")
    dead = {"id": "dead", "address": f"127.0.0.1:{free_port()}"}
    d = daemon([dead, good], extra={"pools": {"web": {"retries": {"attempts": 2}}}})
    for i in range(4):
        with d.conn() as c:
            r = c.request("GET", f"/echo?{i}")
            assert r.status == 200, r
            assert r.header("X-Backend") == "good"
    entries = d.access_log(4)
    assert any(e["attempts"] >= 2 for e in entries), entries


def test_non_idempotent_request_is_not_retried_once_sent(raw_backend, backend, daemon):
    """A backend that read the POST and died: the POST must not be replayed elsewhere."""
    dies = raw_backend(lambda rec: RawReply(b""), backend_id="dies")
    good = backend("good")
    d = daemon([dies, good], extra={"pools": {"web": {"retries": {"attempts": 2}}}})
    statuses = []
    for i in range(2):  # round robin: one of the two starts on `dies`
        with d.conn() as c:
            statuses.append(c.request("POST", f"/order/{i}", body=b"buy 1").status)
    assert sorted(statuses) == [200, 502], statuses
    posts = [r for r in good.requests if r.method == "POST"]
    assert len(posts) == 1, f"a POST was replayed: {[r.target for r in posts]}"
    assert len(dies.requests) == 1


def test_max_connections_is_enforced(backend, daemon):
    b1 = backend()
    d = daemon([b1], limits={"max_connections": 2})
    c1, c2 = d.conn(), d.conn()
    try:
        assert c1.request("GET", "/echo?1").status == 200
        assert c2.request("GET", "/echo?2").status == 200
        with d.conn() as c3:
            c3.send(b"GET /echo?third HTTP/1.1\r\nHost: test.local\r\n\r\n")
            try:
                r = c3.read_response(timeout=1.5)
                assert_proxy_error(r, 503)
            except (ConnectionClosed, ProtocolError, TimeoutError):
                pass  # refused by closing, or left waiting in the accept queue
            assert not any(r.target == "/echo?third" for r in b1.requests)
        c1.close()

        def served() -> bool:
            with d.conn(timeout=2) as c:
                try:
                    return c.request("GET", "/echo?after").status == 200
                except (ConnectionClosed, ProtocolError, TimeoutError):
                    return False

        wait_until(served, timeout=10, what="a connection slot to free up")
    finally:
        c1.close()
        c2.close()


def test_backend_address_may_be_a_host_name(backend, daemon):
    b1 = backend()
    d = daemon([{"id": "named", "address": f"localhost:{b1.port}"}])
    with d.conn() as c:
        for i in range(3):
            r = c.request("GET", f"/echo?{i}")
            assert r.status == 200, r
            assert r.json()["backend"] == b1.id
    assert len(b1.requests) == 3


def test_backend_connections_do_not_churn_above_64_in_flight(backend, daemon):
    """Rounds of 120 requests in flight at once, all answered together: the pool keeps
    what the peak needed, so each round reuses the connections of the one before. (A
    cap of 64 idle closed 56 on each burst of releases and opened 56 for the next
    round's requests: TIME_WAIT build-up and a connect per request under load.)"""
    b1 = backend("b1")
    d = daemon([b1])
    clients = [d.conn(timeout=10) for _ in range(120)]
    try:
        for round_ in range(6):
            for i, conn in enumerate(clients):
                conn.send(build_request("GET", f"/slow?ms=300&r={round_}&i={i}"))
            for conn in clients:
                assert conn.read_response(timeout=20).status == 200
    finally:
        for conn in clients:
            conn.close()
    requests = list(b1.requests)
    assert len(requests) == 720
    first = {r.peer for r in requests[:120]}
    later = {r.peer for r in requests[120:]} - first
    assert len(first) == 120 and len(later) <= 5, f"{len(later)} connections opened after round 1"
    # The churn metric counts exactly the connections the backend saw.
    line = next(
        x for x in metrics_text(d).splitlines() if x.startswith("haproxyd_backend_connects_total")
    )
    assert 'backend="b1"' in line and float(line.rsplit(" ", 1)[1]) == len(first | later), line
