"""`workers: 2`: the master and its worker processes, seen from outside.

Which worker served a connection is read from the kernel (psutil: the process holding
the server side of the client's TCP connection), never from the daemon's own account.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import time

import psutil
import pytest
from helpers.asserts import assert_proxy_error
from helpers.http1 import Conn, build_request, wait_until
from helpers.process import (
    LoadLoop,
    admin_call,
    admin_json,
    connection_owners,
    metrics_text,
    total_requests,
    wait_status,
    wait_workers,
)

pytestmark = pytest.mark.timeout(60)


def _serve_on_fresh_connections(d, n: int) -> tuple[list[Conn], dict[int, int]]:
    """`n` new keep-alive connections, one `GET /` (200) on each, left open; and which
    process accepted each one (`{client port: pid}`)."""
    conns = []
    for _ in range(n):
        conn = d.conn(timeout=10)
        conns.append(conn)
        resp = conn.request("GET", "/")
        assert resp.status == 200, resp
    ports = [c.sock.getsockname()[1] for c in conns]
    pids = [p.pid for p in psutil.Process(d.pid).children()] + [d.pid]
    owners = connection_owners(pids, d.port, ports)
    assert sorted(owners) == sorted(ports), f"connections nobody holds: {owners} vs {ports}"
    return conns, owners


def test_two_workers_share_the_listener(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1], extra={"workers": 2})
    status = wait_workers(d, 2)
    workers = status["workers"]
    assert workers["count"] == 2 and workers["restarts"] == 0
    pids = set(workers["pids"])
    assert d.pid not in pids and status["pid"] == d.pid
    assert pids == {p.pid for p in psutil.Process(d.pid).children()}, "workers are the children"

    conns, owners = _serve_on_fresh_connections(d, 24)
    try:
        served_by = set(owners.values())
        # The master never serves; with 24 connections hashed over 2 SO_REUSEPORT
        # sockets, both workers get some (a miss has probability 2**-23).
        assert served_by == pids, f"connections per process: {owners}"
    finally:
        for conn in conns:
            conn.close()

    # Counters from both workers are merged by the master (snapshots every second).
    wait_until(lambda: total_requests(d) == 24, timeout=5, what="24 requests in the stats")
    assert len(b1.requests) == 24


async def test_killed_worker_is_restarted_and_only_its_requests_fail(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1], extra={"workers": 2})
    status = await asyncio.to_thread(wait_workers, d, 2)
    pids = status["workers"]["pids"]

    load = LoadLoop(d.port, clients=12, path="/slow?ms=20").start()
    try:
        await load.wait_ok(100)
        owners = connection_owners(pids, d.port, set(load.local_ports))
        on_worker = {pid: {port for port, p in owners.items() if p == pid} for pid in pids}
        victim = max(pids, key=lambda pid: len(on_worker[pid]))
        survivor = next(pid for pid in pids if pid != victim)
        victim_ports = on_worker[victim]
        before = await asyncio.to_thread(total_requests, d)

        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        def restarted(status):
            workers = status["workers"]
            return workers["restarts"] == 1 and len(workers["pids"]) == 2

        status = await asyncio.to_thread(wait_status, d, restarted, what="the restart")
        new_pids = status["workers"]["pids"]
        assert survivor in new_pids and victim not in new_pids, new_pids
        assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == "zombie"
        # Traffic keeps flowing through and after the restart.
        await load.wait_ok(load.stats.ok + 200)
    finally:
        stats = await load.stop()

    assert stats.ok_after(killed_at) >= 200
    # Only requests on connections the dead worker had accepted may fail, one each:
    # connections that arrive meanwhile wait in the slot's backlog for the new worker.
    for failure in stats.failures:
        assert failure.kind == "closed" and failure.local_port in victim_ports, (
            f"{failure}; the victim held {sorted(victim_ports)}"
        )
    ports = [f.local_port for f in stats.failures]
    assert len(ports) == len(set(ports)) <= len(victim_ports)

    # The new worker serves; counters never go down across the restart.
    new_worker = next(pid for pid in new_pids if pid != survivor)

    def both_serve():
        conns, owners = _serve_on_fresh_connections(d, 16)
        for conn in conns:
            conn.close()
        return set(owners.values()) == {survivor, new_worker}

    await asyncio.to_thread(wait_until, both_serve, timeout=10, what="both workers serving")
    assert await asyncio.to_thread(total_requests, d) >= before
    assert d.alive()
    assert "exited with -9" in d.stderr_text()


def test_max_connections_is_shared_by_the_workers(backend, daemon):
    b1 = backend("b1")
    d = daemon(
        [b1],
        extra={"workers": 2},
        limits={"max_connections": 10},
        timeouts={"client_header": "20s", "idle": "20s"},
    )
    wait_workers(d, 2)
    conns = [d.conn(timeout=5) for _ in range(30)]
    opened = time.monotonic()
    try:
        # Idle connections past the limit get a 503 at once (none of them sent anything):
        # wait for the first 20, then a short grace for any more.
        readable: set[Conn] = set()
        deadline = opened + 5.0
        while time.monotonic() < deadline:
            pending = [c for c in conns if c not in readable]
            ready, _, _ = select.select([c.sock for c in pending], [], [], 0.1)
            readable |= {c for c in pending if c.sock in ready}
            if len(readable) >= 20:
                deadline = min(deadline, time.monotonic() + 0.3)
        fast = time.monotonic() - opened
        rejected, admitted = [], []
        for conn in conns:
            if conn in readable:
                resp = conn.read_response(timeout=2)
            else:
                resp = conn.request("GET", "/", timeout=5)
            (admitted if resp.status == 200 else rejected).append((conn, resp))
        for conn, resp in rejected:
            assert_proxy_error(resp, 503)
            assert resp.has_token("Connection", "close"), resp
            assert conn.wait_closed(2), "a rejected connection stays open"
        assert len(rejected) + len(admitted) == 30
        assert len(admitted) <= 10, f"{len(admitted)} connections admitted past the limit"
        assert len(rejected) >= 20 and fast < 3.0, (len(rejected), fast)
        for conn, _ in admitted:  # the admitted ones keep working
            assert conn.request("GET", "/").status == 200
        status = admin_json(d, "/api/v1/ha/status")
        assert status["workers"]["restarts"] == 0
        with d.conn() as extra:  # still full: one more is turned away too
            assert_proxy_error(extra.read_response(timeout=3), 503)
    finally:
        for conn in conns:
            conn.close()

    def serves() -> bool:
        with d.conn() as conn:
            return conn.request("GET", "/").status == 200

    wait_until(serves, timeout=5, what="a 200 once the connections are gone")
    assert d.alive()
    assert admin_json(d, "/api/v1/ha/status")["workers"]["restarts"] == 0


def test_backend_figures_and_drain_wait_count_every_worker(backend, daemon):
    """With workers, a backend's live figures are the sum over the workers, asked now:
    the drain workflow (drain, then `DELETE ?wait=`) waits for every worker's requests."""
    b1, b2 = backend("b1"), backend("b2")
    d = daemon([b1, b2], extra={"workers": 2})
    pids = wait_workers(d, 2)["workers"]["pids"]
    backends = "/api/v1/ha/load-balancer/backends"
    assert admin_call(d, "PATCH", f"{backends}/b2", {"state": "maint"})[0] == 200

    # 16 connections (a GET each), spread over both workers by SO_REUSEPORT, then a
    # slow request on each: 16 in flight on b1, held by both workers.
    conns, owners = _serve_on_fresh_connections(d, 16)
    try:
        assert set(owners.values()) == set(pids), f"one worker got every connection: {owners}"
        for i, conn in enumerate(conns):
            conn.send(build_request("GET", f"/slow?ms=5000&i={i}"))
        sent = time.monotonic()
        b1.wait_for_requests(32)
        view = admin_json(d, f"{backends}/b1")
        assert view["active"] == 16 and view["requests"] == 32, view
        listed = admin_json(d, backends)["backends"]
        assert [b["active"] for b in listed if b["id"] == "b1"] == [16], listed
        assert admin_json(d, "/api/v1/ha/status")["pools"][0]["active"] == 16

        def stats_active() -> int:  # the status page's source: the workers' snapshots
            pool = admin_json(d, "/api/v1/ha/load-balancer/stats")["pools"][0]
            return next(b["active"] for b in pool["backends"] if b["id"] == "b1")

        wait_until(lambda: stats_active() == 16, timeout=3, what="16 active in lb stats")

        code, body = admin_call(d, "PATCH", f"{backends}/b1", {"state": "drain"})
        assert code == 200 and body["active"] == 16, body
        code, body = admin_call(d, "DELETE", f"{backends}/b1")
        assert code == 409 and "16 request(s) in flight" in str(body), body
        # ?wait returns once the last slow request is answered, not before.
        code, body = admin_call(d, "DELETE", f"{backends}/b1", query="wait=30")
        assert code == 200 and body["removed"]["active"] == 0, body
        assert time.monotonic() - sent >= 4.9, "DELETE ?wait returned with requests in flight"
        for i, conn in enumerate(conns):
            resp = conn.read_response(timeout=10)
            assert resp.status == 200 and resp.json()["target"] == f"/slow?ms=5000&i={i}"
        assert [b["id"] for b in admin_json(d, backends)["backends"]] == ["b2"]
    finally:
        for conn in conns:
            conn.close()


def _sample(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_refusals_and_client_connections_count_every_worker(backend, daemon):
    """The master serves nothing: a count of its own would read 0. Malformed requests
    refused by either worker, and the connections they hold, add up in /metrics."""
    b1 = backend("b1")
    d = daemon([b1], extra={"workers": 2})
    wait_workers(d, 2)
    for _ in range(24):  # fresh connections: SO_REUSEPORT spreads them over both workers
        with d.conn(timeout=10) as conn:
            conn.send(b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n")
            assert conn.read_response().status == 400
    wait_until(
        lambda: _sample(metrics_text(d), 'haproxyd_rejected_requests_total{code="400"}') == 24,
        timeout=10,
        what="24 refusals summed over the workers",
    )
    conns, owners = _serve_on_fresh_connections(d, 10)
    try:
        assert len(set(owners.values())) == 2, owners  # (a miss: probability 2**-9)
        wait_until(
            lambda: (_sample(metrics_text(d), "haproxyd_client_connections ") or 0) >= 10,
            timeout=10,
            what="the workers' open connections in the gauge",
        )
    finally:
        for conn in conns:
            conn.close()
    assert b1.requests and all(r.target == "/" for r in b1.requests)
