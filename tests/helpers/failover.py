"""Helpers of the failover integration tests: the admin API's view of decisions and
events, the forced-failover call, and the health check they all use.

All waiting polls with a deadline (`wait_decision`); blocking calls, so async tests run
them with `asyncio.to_thread` while a load loop runs on their event loop.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from helpers.daemon import Daemon
from helpers.process import admin_json, post_json

# Fast, deterministic probes: a backend is judged down after 2 failures 200 ms apart.
# A killed backend refuses at once; the timeout is generous so that a machine loaded
# by other tests (a daemon's loop stalled for a moment) does not fail healthy ones.
CHECK = {
    "type": "http",
    "path": "/healthz",
    "interval": "200ms",
    "timeout": "1s",
    "rise": 2,
    "fall": 2,
    "jitter": 0,
}
TCP_CHECK = {
    "type": "tcp",
    "interval": "200ms",
    "timeout": "200ms",
    "rise": 1,
    "fall": 1,
    "jitter": 0,
}


def decision(d: Daemon, pool: str = "web") -> dict[str, Any] | None:
    """The pool's decision as `GET /api/v1/ha/status` shows it (None while the admin
    API is not up yet)."""
    try:
        status = admin_json(d, "/api/v1/ha/status", timeout=2.0)
    except (OSError, urllib.error.URLError, ValueError):
        return None
    for item in status["pools"]:
        if item["name"] == pool:
            return item["decision"]
    raise AssertionError(f"no pool {pool!r} in {status['pools']}")


def wait_decision(
    d: Daemon, active: list[str], pool: str = "web", timeout: float = 10.0
) -> dict[str, Any]:
    """Poll until the pool's active set is `active`; return the decision."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if d.proc is not None and d.proc.poll() is not None:
            raise AssertionError(f"haproxyd exited while waiting for {active}\n{d.diag()}")
        last = decision(d, pool)
        if last is not None and last["active"] == active:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"pool {pool}: active set not {active} after {timeout}s; last decision: "
                f"{last}\n{d.diag()}"
            )
        time.sleep(0.05)


def events(d: Daemon, pool: str = "web", kind: str | None = None) -> list[dict[str, Any]]:
    """The pool's failover events, newest first (optionally of one kind)."""
    items = admin_json(d, f"/api/v1/ha/failover/events?pool={pool}&limit=1000")["events"]
    return [e for e in items if kind is None or e["kind"] == kind]


def trigger(d: Daemon, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """`POST /api/v1/ha/failover/trigger`: (status, JSON body)."""
    return post_json(d, "/api/v1/ha/failover/trigger", body)


def backend_state(d: Daemon, backend_id: str) -> str | None:
    try:
        items = admin_json(d, "/api/v1/ha/load-balancer/backends", timeout=2.0)["backends"]
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return next(b["state"] for b in items if b["id"] == backend_id)


def wait_state(d: Daemon, backend_id: str, state: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while backend_state(d, backend_id) != state:
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"backend {backend_id} not {state} after {timeout}s "
                f"(is {backend_state(d, backend_id)})\n{d.diag()}"
            )
        time.sleep(0.05)


def wait_up(d: Daemon, *backend_ids: str, timeout: float = 10.0) -> None:
    """Every named backend has passed its first checks (start-up is over)."""
    for backend_id in backend_ids:
        wait_state(d, backend_id, "up", timeout)


def traffic(backend: Any) -> int:
    """Requests a stub backend received, health probes not counted."""
    return sum(1 for r in backend.requests if r.path != "/healthz")


def served_by(
    d: Daemon, count: int, path: str = "/echo", headers: dict[str, str] | None = None
) -> dict[str, int]:
    """`count` GETs on one keep-alive connection: how many each backend answered
    (by `X-Backend`; "error <status>" for anything but 200)."""
    out: dict[str, int] = {}
    with d.conn(timeout=5) as c:
        for i in range(count):
            r = c.request("GET", f"{path}?n={i}", headers=headers)
            key = r.header("X-Backend") if r.status == 200 else f"error {r.status}"
            out[str(key)] = out.get(str(key), 0) + 1
    return out
