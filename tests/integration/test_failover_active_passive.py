"""active_passive through the whole daemon: the primary killed under GET load (one and
two worker processes), failback after the hold with `failback: auto`, never by itself
with `failback: manual`, a forced failover to a named backend, a refused one.

The backends are real aiohttp servers that answer with `X-Backend: <id>`; "killing" one
closes its listening socket and its connections (it comes back on the same port)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import pytest
from helpers.backend_process import BackendProcess
from helpers.failover import (
    CHECK,
    events,
    served_by,
    traffic,
    trigger,
    wait_decision,
    wait_state,
    wait_up,
)
from helpers.process import LoadLoop, admin_json, assert_nothing_failed, wait_status

pytestmark = pytest.mark.timeout(90)

CLIENTS = 3  # within the retry budget's floor (min_retries: 3) even if all fail at once
DETECTION = 10.0  # generous bound on "health checks notice" (fall 2 x 200 ms + probes)


def active_passive(primary: Any, standby: Any, **failover: Any) -> dict[str, Any]:
    return {
        "web": {
            "health_checks": [CHECK],
            "failover": {"strategy": "active_passive", **failover},
            "retries": {"attempts": 2},
            "backends": [primary.config(), {**standby.config(), "role": "backup"}],
        }
    }


@pytest.mark.parametrize("workers", [1, 2])
async def test_primary_killed_under_load_moves_all_traffic_to_the_backup_with_no_error(
    backend, daemon, workers
):
    primary, standby = backend("primary"), backend("standby")
    d = daemon(pools=active_passive(primary, standby), extra={"workers": workers})
    await asyncio.to_thread(wait_up, d, "primary", "standby")
    await asyncio.to_thread(wait_decision, d, ["primary"])
    load = LoadLoop(d.port, clients=CLIENTS, path="/echo", duration=40).start()
    try:
        await load.wait_ok(200)
        assert load.stats.backends["standby"] == 0, "the standby took traffic while passive"
        await asyncio.to_thread(primary.stop)
        # Requests keep succeeding before health checks notice (retries go to the
        # standby the machine named as fallback) and after (the standby is active).
        decided = await asyncio.to_thread(wait_decision, d, ["standby"], "web", DETECTION)
        before = Counter(load.stats.backends)
        await load.wait_ok(load.stats.ok + 300)
    finally:
        stats = await load.stop()
    bad = [
        {k: e[k] for k in ("time", "status", "backend", "attempts", "termination", "total_time")}
        for e in d.access_log()
        if e["status"] != 200
    ]
    assert not stats.failures, ([str(f) for f in stats.failures[:10]], bad[:10])
    after = stats.backends - before
    assert after["primary"] == 0 and after["standby"] >= 300, after
    assert decided["kind"] == "failover" and decided["fallback"] is None
    [event] = await asyncio.to_thread(events, d, "web", "failover")
    assert event["backend"] == "standby" and event["details"]["previous"] == ["primary"]
    # Some requests met the dead primary and were retried on the standby: the retry
    # fallback is what kept them from the client.
    retried = [e for e in d.access_log() if e["attempts"] >= 2 and e["backend"] == "standby"]
    assert retried, "no request was retried: the test did not exercise the window"


def test_auto_failback_after_the_hold(backend, daemon):
    primary, standby = backend("primary"), backend("standby")
    hold = 2.0
    d = daemon(pools=active_passive(primary, standby, failback="auto", failback_hold="2s"))
    wait_up(d, "primary", "standby")
    wait_decision(d, ["primary"])
    primary.stop()
    wait_decision(d, ["standby"])
    primary.start()  # same port
    wait_state(d, "primary", "up")
    wait_decision(d, ["primary"], timeout=hold + DETECTION)
    assert served_by(d, 20) == {"primary": 20}
    [failback] = events(d, "web", "failback")
    checks = admin_json(d, "/api/v1/ha/health-checks?backend=primary")["checks"]
    up_since = checks[0]["last_change"]
    # Never before the primary has been healthy for the whole hold (a lower bound only).
    assert failback["time"] - up_since >= hold - 0.05, (failback, checks)
    assert [e["kind"] for e in reversed(events(d))] == ["failover", "failback"]


def test_manual_failback_stays_on_the_backup_until_the_trigger(backend, daemon):
    primary, standby = backend("primary"), backend("standby")
    d = daemon(pools=active_passive(primary, standby, failback="manual", failback_hold=0))
    wait_up(d, "primary", "standby")
    wait_decision(d, ["primary"])
    primary.stop()
    wait_decision(d, ["standby"])
    primary.start()
    wait_state(d, "primary", "up")
    # With failback_hold 0 an automatic failback would happen at the verdict itself;
    # a bounded stretch of traffic after it must all stay on the standby.
    seen = traffic(primary)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert served_by(d, 10) == {"standby": 10}
    assert traffic(primary) == seen
    status, body = trigger(d, {"pool": "web", "to": "primary", "reason": "primary repaired"})
    assert status == 200, body
    assert body["action"] == "failback" and body["active"] == ["primary"]
    assert served_by(d, 10) == {"primary": 10}
    [event] = events(d, "web", "failback")
    assert event["reason"] == "primary repaired" and event["details"]["manual"] is True


def test_forced_failover_to_a_named_backend_and_a_refused_one(backend, daemon):
    p1, p2, standby = backend("p1"), backend("p2"), backend("standby")
    pools = active_passive(p1, standby)
    pools["web"]["backends"].insert(1, {**p2.config(), "priority": 1})
    d = daemon(pools=pools)
    wait_up(d, "p1", "p2", "standby")
    wait_decision(d, ["p1"])
    status, body = trigger(d, {"pool": "web", "backend": "p2", "reason": "patching p1"})
    assert status == 200 and body["active"] == ["p2"], body
    assert body["decision"]["fallback"] == "p1"
    assert served_by(d, 10) == {"p2": 10}
    standby.stop()
    wait_state(d, "standby", "down")
    count = len(events(d))
    version = wait_decision(d, ["p2"])["version"]
    for bad in ({"pool": "web", "backend": "standby"}, {"pool": "web", "backend": "p2"}):
        status, body = trigger(d, bad)
        assert status == 409 and body["error"] == "failover refused", body
    status, body = trigger(d, {"pool": "web", "backend": "nope"})
    assert status == 400, body
    status, body = trigger(d, {"pool": "web", "backend": "p2", "to": "backup"})
    assert status == 400, body
    assert len(events(d)) == count and wait_decision(d, ["p2"])["version"] == version
    assert served_by(d, 10) == {"p2": 10}


def test_a_reload_keeps_the_decision_of_an_unchanged_pool(backend, daemon):
    primary, standby = backend("primary"), backend("standby")
    d = daemon(pools=active_passive(primary, standby))
    wait_up(d, "primary", "standby")
    status, body = trigger(d, {"pool": "web", "to": "backup", "reason": "before a reload"})
    assert status == 200, body
    version = wait_decision(d, ["standby"])["version"]
    d.send_signal(signal.SIGHUP)
    wait_status(d, lambda s: s["config_version"] == 2, what="the reload")
    kept = wait_decision(d, ["standby"])
    assert kept["version"] == version and kept["state"]["pinned"] == "standby"
    assert served_by(d, 10) == {"standby": 10}


@pytest.mark.parametrize("clients", [16, 48])
@pytest.mark.parametrize("upstream", ["keep-alive", "close"])
async def test_primary_sigkilled_under_keepalive_load_costs_no_get(daemon, clients, upstream):
    """The README's promise with the default retry settings: the primary's process is
    killed (SIGKILL: every connection closes at once, mid-request for some) under
    `clients` keep-alive connections, and no GET fails. The requests in flight on it
    all fail at once, more than the retry budget allows: an idempotent request that got
    no byte of a response is resent outside the budget, once, to another backend."""
    close = upstream == "close"  # each request on a new backend connection
    primary = BackendProcess("primary", close=close)
    standby = BackendProcess("standby", close=close)
    try:
        pools = active_passive(primary, standby)
        del pools["web"]["retries"]  # the defaults
        d = daemon(pools=pools)
        await asyncio.to_thread(wait_up, d, "primary", "standby")
        await asyncio.to_thread(wait_decision, d, ["primary"])
        load = LoadLoop(d.port, clients=clients, path="/", duration=40).start()
        try:
            await load.wait_ok(2000)
            primary.kill()
            await asyncio.to_thread(wait_decision, d, ["standby"], "web", DETECTION)
            await load.wait_ok(load.stats.ok + 1000)
        finally:
            stats = await load.stop()
    finally:
        primary.stop()
        standby.stop()
    assert_nothing_failed(stats, d)
    retried = [e for e in d.access_log() if e["attempts"] >= 2 and e["backend"] == "standby"]
    assert retried, "no request was retried: the kill did not meet a request in flight"
