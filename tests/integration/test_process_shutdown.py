"""SIGTERM under load, with one process and with a master and two workers: requests
accepted before the signal complete, a request on an idle connection within the grace
window is served, idle connections then close, the process exits 0."""

from __future__ import annotations

import signal
import time

import psutil
import pytest
from helpers.http1 import ConnectionClosed, connect_refused, wait_until
from helpers.process import wait_workers

pytestmark = pytest.mark.timeout(60)

SLOW = 10  # requests in flight when SIGTERM arrives
IDLE = 4  # idle keep-alive connections at that moment


GRACE = 4.0  # timeouts.drain_grace: long enough to act in, on a busy machine


def _start(backend, daemon, workers: int, grace: str = f"{GRACE:g}s"):
    b1 = backend("b1")
    d = daemon(
        [b1],
        extra={"workers": workers},
        timeouts={"shutdown": "10s", "drain_grace": grace},
    )
    status = wait_workers(d, workers)
    return b1, d, status


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_completes_accepted_requests_and_exits_0(backend, daemon, workers):
    b1, d, status = _start(backend, daemon, workers)
    idle = [d.conn(timeout=10) for _ in range(IDLE)]
    slow = [d.conn(timeout=10) for _ in range(SLOW)]
    try:
        _drain_under_load(b1, d, idle, slow)
    finally:
        for conn in idle + slow:
            conn.close()
    assert d.wait_exit(15) == 0, d.diag()
    assert connect_refused(d.port)
    for pid in status["workers"]["pids"]:
        assert not psutil.pid_exists(pid), f"worker {pid} outlived the master"
    assert "Traceback" not in d.stderr_text(), d.diag()


def _drain_under_load(b1, d, idle, slow) -> None:
    for conn in idle:
        assert conn.request("GET", "/").status == 200
    for i, conn in enumerate(slow):
        conn.send(f"GET /slow?ms=2000&i={i} HTTP/1.1\r\nHost: test.local\r\n\r\n".encode())
    b1.wait_for_requests(IDLE + SLOW)  # every slow request has reached the backend

    d.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # The drain has begun once the listening sockets are gone.
    wait_until(lambda: connect_refused(d.port), timeout=5, what="the listener to close")
    # A request on an idle keep-alive connection in the grace window is served (and
    # told the connection ends) rather than met by a reset.
    resp = idle[0].request("GET", "/late", timeout=5)
    assert resp.status == 200 and resp.json()["target"] == "/late", resp
    assert resp.has_token("Connection", "close"), resp
    assert idle[0].wait_closed(timeout=2.0)
    # The ones left idle close when the window ends, not at the end of the drain.
    for conn in idle[1:]:
        assert conn.wait_closed(timeout=GRACE + 3.0), "an idle connection stayed open"
    assert time.monotonic() - signalled >= GRACE - 0.5, "idle ones closed before the window"
    assert all(c.is_open() and not c.buf for c in slow), "closed idle ones only at the end"
    for i, conn in enumerate(slow):
        resp = conn.read_response(timeout=10)
        assert resp.status == 200, resp
        assert resp.json()["target"] == f"/slow?ms=2000&i={i}"
        assert resp.has_token("Connection", "close"), resp
        assert conn.wait_closed(timeout=2.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_refuses_new_connections_while_draining(backend, daemon, workers):
    # drain_grace 0: idle connections close at the signal.
    b1, d, _ = _start(backend, daemon, workers, grace="0s")
    with d.conn(timeout=10) as probe, d.conn(timeout=10) as slow:
        assert probe.request("GET", "/").status == 200
        slow.send(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: test.local\r\n\r\n")
        b1.wait_for_requests(2)
        d.send_signal(signal.SIGTERM)
        assert probe.wait_closed(timeout=2.0)  # the drain has begun
        # A connection attempted now is refused, or else served: never accepted, then
        # dropped unanswered.
        if not connect_refused(d.port):
            with d.conn(timeout=5) as late:
                try:
                    resp = late.request("GET", "/", timeout=5)
                except ConnectionClosed:
                    pytest.fail("a connection accepted during the drain was closed unanswered")
                assert resp.status in (200, 503), resp
        assert slow.read_response(timeout=10).status == 200
    assert d.wait_exit(15) == 0
