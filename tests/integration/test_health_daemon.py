"""Health checking through the whole daemon: active checks take a failing backend out of
rotation and bring it back after `rise` passes, a new backend waits for its first pass,
passive detection ejects a backend that fails live traffic, and a node check sheds load.

Backends are real servers; the "flaky" one is a raw server whose health endpoint the
test flips, while it keeps answering everything else (so the only reason it stops
getting traffic is the health verdict, not a dead socket)."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error

import pytest
from helpers.backends import RawReply
from helpers.http1 import wait_until
from helpers.process import admin_call, admin_json

pytestmark = pytest.mark.timeout(90)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SICK = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nsick"

CHECK = {
    "type": "http",
    "path": "/healthz",
    "interval": "200ms",
    "timeout": "200ms",
    "rise": 2,
    "fall": 2,
    "jitter": 0,
}


class Switch:
    """A raw backend whose /healthz answers 200 or 503 as the test says."""

    def __init__(self) -> None:
        self.healthy = True

    def __call__(self, rec):
        if rec.target == "/healthz":
            return RawReply(OK if self.healthy else SICK, close=False)
        return RawReply(OK, close=False)


def admin_or_none(d, path: str):
    """The admin API's answer, or None while it is not listening yet (the proxy
    listener can accept before the admin server is up)."""
    try:
        return admin_json(d, path, timeout=2.0)
    except (urllib.error.URLError, ConnectionError):
        return None


def backend_state(d, backend_id: str) -> str | None:
    backends = admin_or_none(d, "/api/v1/ha/load-balancer/backends")
    if backends is None:
        return None
    items = backends["backends"] if isinstance(backends, dict) else backends
    return next(b["state"] for b in items if b["id"] == backend_id)


def traffic_to(backend) -> list[str]:
    return [r.target for r in backend.requests if r.target != "/healthz"]


def test_failing_check_takes_a_backend_out_and_rise_brings_it_back(raw_backend, backend, daemon):
    steady = backend("steady")
    switch = Switch()
    flaky = raw_backend(switch, backend_id="flaky")
    d = daemon([steady, flaky], extra={"pools": {"web": {"health_checks": [CHECK]}}})
    wait_until(lambda: backend_state(d, "flaky") == "up", timeout=10, what="flaky up")

    errors: list[int] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            i += 1
            with d.conn(timeout=5) as c:
                status = c.request("GET", f"/load/{i}").status
            if status != 200:
                errors.append(status)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_until(lambda: len(traffic_to(flaky)) >= 5, timeout=10, what="traffic on flaky")
        switch.healthy = False
        wait_until(lambda: backend_state(d, "flaky") == "down", timeout=5, what="flaky down")
        seen = len(traffic_to(flaky))
        served_before = len(traffic_to(steady))
        wait_until(
            lambda: len(traffic_to(steady)) >= served_before + 30,
            timeout=10,
            what="more traffic after the flaky backend went down",
        )
        assert len(traffic_to(flaky)) == seen, "a down backend still received requests"

        switch.healthy = True
        wait_until(lambda: backend_state(d, "flaky") == "up", timeout=5, what="flaky up again")
        wait_until(lambda: len(traffic_to(flaky)) > seen, timeout=10, what="traffic on flaky")
    finally:
        stop.set()
        worker.join(timeout=10)
    assert errors == [], errors
    checks = admin_json(d, "/api/v1/ha/health-checks")
    flaky_checks = [c for c in checks["checks"] if c["backend"] == "flaky"]
    assert flaky_checks and flaky_checks[0]["status"] == "up"


def test_new_backend_takes_traffic_only_after_its_first_pass(raw_backend, backend, daemon):
    steady = backend("steady")
    switch = Switch()
    switch.healthy = False
    late = raw_backend(switch, backend_id="late")
    d = daemon([steady, late], extra={"pools": {"web": {"health_checks": [CHECK]}}})
    wait_until(lambda: backend_state(d, "steady") == "up", timeout=10, what="steady up")
    assert backend_state(d, "late") in ("checking", "down")
    for i in range(10):
        with d.conn() as c:
            assert c.request("GET", f"/early/{i}").status == 200
    assert traffic_to(late) == []
    switch.healthy = True
    wait_until(lambda: backend_state(d, "late") == "up", timeout=5, what="late up")
    for i in range(10):
        with d.conn() as c:
            assert c.request("GET", f"/later/{i}").status == 200
    assert traffic_to(late), "the backend never got traffic after passing its check"


def test_passive_detection_ejects_a_backend_failing_live_traffic(raw_backend, backend, daemon):
    steady = backend("steady")
    broken = raw_backend(lambda rec: RawReply(SICK, close=False), backend_id="broken")
    passive = {
        "consecutive_failures": 3,
        "ejection": "30s",
        "on_5xx": True,
        "max_ejection_percent": 50,
    }
    d = daemon(
        [steady, broken],
        extra={"pools": {"web": {"passive": passive, "retries": {"attempts": 0}}}},
    )
    for i in range(12):
        with d.conn() as c:
            c.request("GET", f"/p/{i}")
    wait_until(lambda: backend_state(d, "broken") == "down", timeout=5, what="broken ejected")
    before = len(broken.requests)
    for i in range(10):
        with d.conn() as c:
            assert c.request("GET", f"/after/{i}").status == 200
    assert len(broken.requests) == before, "an ejected backend still received requests"


def test_unhealthy_node_sheds_load(backend, daemon):
    steady = backend("steady")
    node_check = {
        "type": "disk_space",
        "path": "/",
        "min_free_percent": 100,
        "interval": "200ms",
        "rise": 1,
        "fall": 1,
    }
    d = daemon([steady], extra={"node_checks": [node_check], "on_unhealthy": "shed"})
    wait_until(
        lambda: (admin_or_none(d, "/api/v1/ha/status") or {}).get("healthy") is False,
        timeout=10,
        what="node unhealthy",
    )
    with d.conn() as c:
        r = c.request("GET", "/shed")
    assert r.status == 503, r
    assert not any(rec.target == "/shed" for rec in steady.requests)


def test_one_log_line_per_health_change_and_no_flip_flop_when_a_reload_re_adds(backend, daemon):
    """A health change is one log line (the scheduler's), and a reload that brings a
    backend back decides once, when its health is known: no `[b2] -> [b1, b2] -> [b2]`
    in the same instant because the re-added backend looked UP before its first check."""
    b1, b2 = backend("b1"), backend("b2")
    d = daemon([b1, b2], pools=None)
    d.config["pools"]["web"]["health_checks"] = [CHECK]
    d.write_config()
    signal_reload(d, 1)
    wait_backend(d, "b1", "up")
    wait_backend(d, "b2", "up")

    b1.stop()
    wait_backend(d, "b1", "down")
    lines = [
        line
        for line in d.stderr_text().splitlines()
        if "b1" in line and "up -> down" in line and "haproxyd.failover" not in line
    ]
    assert len(lines) == 1 and "haproxyd.health" in lines[0], lines

    d.config["pools"]["web"]["backends"] = [b2.config()]
    signal_reload(d, 2)
    b1.start()
    d.config["pools"]["web"]["backends"] = [b1.config(), b2.config()]
    signal_reload(d, 3)
    wait_backend(d, "b1", "up")
    wait_until(lambda: "['b2'] -> ['b1', 'b2']" in d.stderr_text(), timeout=10, what="b1 back in")
    failover = [line for line in d.stderr_text().splitlines() if "haproxyd.failover" in line]
    back_in = [line for line in failover if "-> ['b1', 'b2']" in line]
    out_again = [line for line in failover if "['b1', 'b2'] -> ['b2']" in line]
    assert len(back_in) == 1 and len(out_again) == 1, failover  # out when b1 died only
    events = admin_json(d, "/api/v1/ha/failover/events?pool=web")["events"]
    moves = [(e["details"].get("previous"), e["details"].get("active")) for e in events]
    assert moves.count((["b2"], ["b1", "b2"])) == 1, moves

    # The same through the admin API: one decision, once b3's first checks pass.
    b3 = backend("b3")
    code, _ = admin_call(
        d, "POST", "/api/v1/ha/load-balancer/backends", {"pool": "web", **b3.config()}
    )
    assert code == 201
    wait_backend(d, "b3", "up")
    wait_until(lambda: "-> ['b1', 'b2', 'b3']" in d.stderr_text(), timeout=10, what="b3 in")
    events = admin_json(d, "/api/v1/ha/failover/events?pool=web")["events"]
    moves = [(e["details"].get("previous"), e["details"].get("active")) for e in events]
    assert [m for m in moves if "b3" in (m[0] or []) + (m[1] or [])] == [
        (["b1", "b2"], ["b1", "b2", "b3"])
    ], moves


def signal_reload(d, count: int) -> None:
    d.write_config()
    os.kill(d.pid, signal.SIGHUP)
    wait_until(
        lambda: admin_json(d, "/api/v1/ha/status")["reloads"]["ok"] == count,
        timeout=15,
        what=f"reload {count}",
    )


def wait_backend(d, backend_id: str, state: str) -> None:
    wait_until(
        lambda: admin_json(d, f"/api/v1/ha/load-balancer/backends/{backend_id}")["state"] == state,
        timeout=15,
        what=f"{backend_id} {state}",
    )


def test_grpc_check_follows_the_health_service(grpc_backend, daemon):
    # Two real grpcio servers as a pool's backends, probed with grpc.health.v1: the one
    # whose status the test flips to NOT_SERVING leaves the selectable set (state down,
    # the status named as the reason) while the other stays, and SERVING brings it back.
    steady, flaky = grpc_backend("g-steady"), grpc_backend("g-flaky")
    check = {**CHECK, "type": "grpc", "service": "test.Echo"}
    del check["path"]
    d = daemon([steady, flaky], extra={"pools": {"web": {"health_checks": [check]}}})
    for b in (steady, flaky):
        wait_until(lambda b=b: backend_state(d, b.id) == "up", timeout=10, what=f"{b.id} up")

    flaky.set_health("test.Echo", "NOT_SERVING")
    wait_until(lambda: backend_state(d, "g-flaky") == "down", timeout=5, what="g-flaky down")
    checks = {c["backend"]: c for c in admin_json(d, "/api/v1/ha/health-checks")["checks"]}
    assert checks["g-flaky"]["last_reason"] == "NOT_SERVING"
    assert checks["g-flaky"]["type"] == "grpc"
    assert backend_state(d, "g-steady") == "up"

    flaky.set_health("test.Echo", "SERVING")
    wait_until(lambda: backend_state(d, "g-flaky") == "up", timeout=5, what="g-flaky up again")
    checks = {c["backend"]: c for c in admin_json(d, "/api/v1/ha/health-checks")["checks"]}
    assert checks["g-flaky"]["last_reason"] == "SERVING"
