"""The balancer end to end: the real daemon (`python -m haproxyd -c FILE`) in front of
stub backends that answer with their id (`X-Backend`), one test per algorithm."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from helpers.http1 import build_request

pytestmark = pytest.mark.timeout(60)


def start(daemon, backends, weights, **balancer: Any):
    entries = [{**b.config(), "weight": w} for b, w in zip(backends, weights, strict=True)]
    return daemon(pools={"web": {"balancer": balancer, "backends": entries}})


def get(d, target: str = "/", headers: dict[str, str] | None = None) -> str:
    with d.conn() as c:
        r = c.request("GET", target, headers=headers)
    assert r.status == 200, r
    return r.header("X-Backend")


def test_round_robin(backend, daemon) -> None:
    bs = [backend(f"b{i}") for i in (1, 2, 3)]
    d = start(daemon, bs, (5, 1, 1), algorithm="round_robin")
    assert [get(d) for _ in range(6)] == ["b1", "b2", "b3"] * 2


def test_weighted_round_robin_is_smooth(backend, daemon) -> None:
    bs = [backend(f"b{i}") for i in (1, 2, 3)]
    d = start(daemon, bs, (5, 1, 1), algorithm="weighted_round_robin")
    seen = [get(d) for _ in range(7)]
    assert seen == ["b1", "b1", "b2", "b1", "b3", "b1", "b1"]


@pytest.mark.parametrize("algorithm", ["least_connections", "least_response_time"])
def test_load_aware_avoids_busy_backends(backend, daemon, algorithm: str) -> None:
    """Two slow requests occupy two backends; the quick requests sent meanwhile all go
    to the idle third one (round robin would send two thirds of them to busy ones)."""
    bs = [backend(f"b{i}") for i in (1, 2, 3)]
    d = start(daemon, bs, (1, 1, 1), algorithm=algorithm)
    slow = [d.conn() for _ in range(2)]
    try:
        for i, c in enumerate(slow):
            c.send(build_request("GET", f"/slow?ms=1500&i={i}", host="test.local"))
            _wait_total(bs, i + 1)  # in flight at a backend before the next one is sent
        busy = {b.id for b in bs if b.requests}
        quick = [get(d, f"/quick/{i}") for i in range(10)]
        answered = {c.read_response(method="GET").header("X-Backend") for c in slow}
    finally:
        for c in slow:
            c.close()
    assert answered == busy and len(busy) == 2
    (idle,) = {"b1", "b2", "b3"} - busy
    assert quick == [idle] * 10


def _wait_total(backends, n: int) -> None:
    deadline = time.monotonic() + 10
    while sum(len(b.requests) for b in backends) < n:
        assert time.monotonic() < deadline, "request did not reach a backend"
        time.sleep(0.01)


def test_least_connections_weighted_when_idle(backend, daemon) -> None:
    bs = [backend(f"b{i}") for i in (1, 2, 3)]
    d = start(daemon, bs, (5, 1, 1), algorithm="least_connections")
    assert Counter(get(d) for _ in range(14)) == {"b1": 10, "b2": 2, "b3": 2}


def test_ip_hash_sticks_and_believes_trusted_proxies(backend, daemon) -> None:
    bs = [backend(f"b{i}") for i in (1, 2, 3)]
    d = start(daemon, bs, (1, 1, 1), algorithm="ip_hash", trusted_proxies=["127.0.0.0/8"])
    clients = [f"198.51.100.{i}" for i in range(30)]
    first = {ip: get(d, headers={"X-Forwarded-For": ip}) for ip in clients}
    again = {ip: get(d, headers={"X-Forwarded-For": f"{ip}, 127.0.0.9"}) for ip in clients}
    assert first == again
    assert len(set(first.values())) == 3  # 30 clients spread over the three
    assert len({get(d) for _ in range(5)}) == 1  # no header: the peer, 127.0.0.1


def test_url_hash(backend, daemon) -> None:
    bs = [backend(f"b{i}") for i in (1, 2, 3)]
    d = start(daemon, bs, (1, 1, 1), algorithm="url_hash", hash_query=False)
    paths = [f"/obj/{i}" for i in range(30)]
    first = {p: get(d, p + "?v=1") for p in paths}
    assert first == {p: get(d, p + "?v=2") for p in paths}
    assert len(set(first.values())) == 3


def test_random_weighted(backend, daemon) -> None:
    bs = [backend(f"b{i}") for i in (1, 2, 3)]
    d = start(daemon, bs, (5, 3, 1), algorithm="random")
    with d.conn() as c:
        counts = Counter(c.request("GET", "/").header("X-Backend") for _ in range(450))
    assert counts["b1"] > counts["b2"] > counts["b3"] > 0


def test_consistent_hash_header_sticks_a_user_to_one_backend(backend, daemon) -> None:
    bs = [backend(f"b{i}") for i in (1, 2, 3)]
    d = start(daemon, bs, (1, 1, 1), algorithm="consistent_hash", hash_key="header:X-User-Id")
    users = [f"user-{i}" for i in range(40)]
    home = {u: get(d, headers={"X-User-Id": u}) for u in users}
    for u in users:
        assert get(d, f"/other?{u}", headers={"X-User-Id": u}) == home[u]
    assert len(set(home.values())) == 3
    # Without the header: round robin, not one backend.
    assert sorted(get(d) for _ in range(3)) == ["b1", "b2", "b3"]
