"""Retries and redispatch (issue 5's data-plane part) and the max_connections queue.

Backends are real servers; the stub ones say who they are and record what reached
them, so each test can tell where a request went and how many times."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from helpers.asserts import assert_proxy_error
from helpers.backends import RawReply
from helpers.daemon import free_port

pytestmark = pytest.mark.timeout(60)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"


def sick_and_good(raw_backend, backend, daemon, retries: dict):
    """A backend that always answers 503, a healthy one, and the daemon in front."""
    sick = raw_backend(lambda rec: RawReply(UNAVAILABLE, close=False), backend_id="sick")
    good = backend("good")
    d = daemon([sick, good], extra={"pools": {"web": {"retries": retries}}})
    return sick, good, d


def statuses(d, method: str, paths: list[str], body: bytes = b"") -> list[int]:
    """One request per path, each on a new connection; the statuses in order."""
    out = []
    for path in paths:
        with d.conn() as c:
            out.append(c.request(method, path, body=body).status)
    return out


def test_backend_5xx_on_get_is_retried_elsewhere_before_the_client_sees_it(
    raw_backend, backend, daemon
):
    sick, _, d = sick_and_good(raw_backend, backend, daemon, {"attempts": 2})
    for i in range(6):
        with d.conn() as c:
            r = c.request("GET", f"/echo?{i}")
            assert r.status == 200, r
            assert r.header("X-Backend") == "good"
    assert len(sick.requests) >= 2, "round robin should have tried the sick backend"
    retried = [e for e in d.access_log(6) if e["attempts"] >= 2]
    assert retried, d.access_log(6)


def test_backend_5xx_on_post_is_passed_through_not_retried(raw_backend, backend, daemon):
    _, good, d = sick_and_good(raw_backend, backend, daemon, {"attempts": 2})
    got = statuses(d, "POST", [f"/order/{i}" for i in range(2)], body=b"x")
    assert sorted(got) == [200, 503], got
    assert len([r for r in good.requests if r.method == "POST"]) == 1


def test_idempotent_put_with_body_is_replayed_whole(raw_backend, backend, daemon):
    """A reset after the request was sent: the PUT (idempotent) goes to the other
    backend with its whole body, which the proxy kept for replay."""
    dies = raw_backend(lambda rec: RawReply(b""), backend_id="dies")
    good = backend("good")
    d = daemon([dies, good], extra={"pools": {"web": {"retries": {"attempts": 2}}}})
    body = b"k" * 10_000
    for i in range(2):
        with d.conn() as c:
            r = c.request("PUT", f"/echo/item{i}", body=body)
            assert r.status == 200, r
    puts = [r for r in good.requests if r.method == "PUT"]
    # Each PUT reached the good backend exactly once, whole.
    assert sorted(p.target for p in puts) == ["/echo/item0", "/echo/item1"]
    assert all(p.body == body for p in puts)
    assert dies.requests, "round robin should have sent at least one PUT to `dies` first"


def test_body_past_the_replay_buffer_is_not_retried(raw_backend, backend, daemon):
    dies = raw_backend(lambda rec: RawReply(b""), backend_id="dies")
    good = backend("good")
    d = daemon(
        [dies, good],
        extra={"pools": {"web": {"retries": {"attempts": 2, "buffer_bytes": 1024}}}},
    )
    got = statuses(d, "PUT", [f"/echo/big{i}" for i in range(2)], body=b"b" * 4096)
    assert sorted(got) == [200, 502], got
    assert len([r for r in good.requests if r.method == "PUT"]) == 1


def test_retry_attempts_zero_means_no_retry(raw_backend, backend, daemon):
    _, _, d = sick_and_good(raw_backend, backend, daemon, {"attempts": 0})
    got = statuses(d, "GET", [f"/echo?{i}" for i in range(4)])
    assert sorted(got) == [200, 200, 503, 503], got


def test_retry_budget_caps_retries_under_a_total_outage(raw_backend, daemon):
    """Every backend answers 503: with a budget of 0% and a floor of 0 retries in
    flight, no request is retried: the outage is not multiplied."""
    calls = []

    def sick(rec):
        calls.append(rec.target)
        return RawReply(UNAVAILABLE, close=False)

    a = raw_backend(sick, backend_id="a")
    b = raw_backend(sick, backend_id="b")
    retries = {"attempts": 3, "budget_percent": 0, "min_retries": 0}
    d = daemon([a, b], extra={"pools": {"web": {"retries": retries}}})
    for i in range(5):
        with d.conn() as c:
            assert c.request("GET", f"/x?{i}").status == 503
    assert len(calls) == 5, calls  # one attempt each


def one_slot_daemon(backend, daemon, queue_timeout: str):
    """A pool with one backend that takes one request at a time, and a queue."""
    slow = backend("slow")
    d = daemon(
        [{"id": "slow", "address": slow.address, "max_connections": 1}],
        extra={"pools": {"web": {"queue_timeout": queue_timeout}}},
    )

    def get(path: str) -> int:
        with d.conn(timeout=10) as c:
            return c.request("GET", path).status

    return slow, d, get


def test_requests_queue_for_a_full_backend_then_get_503(backend, daemon):
    slow, d, get = one_slot_daemon(backend, daemon, "600ms")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(get, "/slow?ms=1500")
        slow.wait_for_requests(1)
        # The slot is taken: the next request waits in the queue, then gets 503.
        with d.conn(timeout=10) as c:
            r = c.request("GET", "/echo?queued")
            assert_proxy_error(r, 503)
        assert first.result(timeout=10) == 200
    assert not any(r.target == "/echo?queued" for r in slow.requests)


def test_queued_request_is_served_when_a_slot_frees(backend, daemon):
    slow, _, get = one_slot_daemon(backend, daemon, "5s")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(get, "/slow?ms=500")
        slow.wait_for_requests(1)
        second = pool.submit(get, "/echo?waited")
        assert first.result(timeout=10) == 200
        assert second.result(timeout=10) == 200
    targets = [r.target for r in slow.requests]
    assert targets.index("/echo?waited") > targets.index("/slow?ms=500")


def test_post_that_could_not_be_sent_goes_to_another_backend(backend, daemon):
    """A connect failure means nothing was sent: any method may be redispatched."""
    good = backend("good")
    dead = {"id": "dead", "address": f"127.0.0.1:{free_port()}"}
    d = daemon([dead, good], extra={"pools": {"web": {"retries": {"attempts": 2}}}})
    got = statuses(d, "POST", [f"/order/{i}" for i in range(4)], body=b"buy 1")
    assert got == [200] * 4, got
    posts = sorted(r.target for r in good.requests if r.method == "POST")
    assert posts == [f"/order/{i}" for i in range(4)]  # each exactly once
    assert any(e["attempts"] >= 2 for e in d.access_log(4)), "no POST met the dead backend"


def test_the_same_backend_is_retried_only_after_a_pause(raw_backend, daemon):
    """With no other backend, the retry waits min(connect timeout, 1 s) first (a lower
    bound only: the proxy may be slower, never faster)."""
    seen: list[float] = []

    def first_503(rec):
        seen.append(time.monotonic())
        return RawReply(UNAVAILABLE if len(seen) == 1 else OK, close=False)

    only = raw_backend(first_503, backend_id="only")
    d = daemon(
        [only],
        timeouts={"connect": "400ms"},
        extra={"pools": {"web": {"retries": {"attempts": 1}}}},
    )
    with d.conn(timeout=10) as c:
        assert c.request("GET", "/x").status == 200
    assert len(seen) == 2, seen
    assert seen[1] - seen[0] >= 0.4 - 0.02, seen


async def test_killing_a_backend_under_heavy_load_costs_no_client_an_error(backend, daemon):
    """Many more clients than the retry budget's floor (min_retries: 3): every request
    the dead backend refuses is redispatched, since a refused connection is outside
    the budget (nothing reached the backend)."""
    from helpers.process import LoadLoop

    b1, b2 = backend("b1"), backend("b2")
    d = daemon([b1, b2], extra={"pools": {"web": {"retries": {"attempts": 2}}}})
    load = LoadLoop(d.port, clients=16, path="/echo", close_each=True, duration=30).start()
    try:
        await load.wait_ok(300)
        b1.stop()  # no health checks: only redispatch keeps clients whole
        mark = load.stats.ok
        await load.wait_ok(mark + 600)
    finally:
        stats = await load.stop()
    assert not stats.failures, [str(f) for f in stats.failures[:10]]
    refused = [e for e in d.access_log(1) if e["backend"] == "b2" and e["attempts"] >= 2]
    assert len(refused) >= 16, "the dead backend's share was not redispatched"
    assert stats.backends["b2"] > stats.backends["b1"]
