"""least_connections and least_response_time: what they choose and why."""

from __future__ import annotations

from collections import Counter

import pytest
from balancer_helpers import Ctx, closed_loop, fractions, make_pool

from haproxyd.balancer.least_connections import LeastConnections, SampledLeastConnections
from haproxyd.balancer.state import Backend


def test_least_connections_picks_fewest_active_per_weight() -> None:
    pool = make_pool("least_connections", (1, 1, 2))
    a, b, c = (pool.backends[x] for x in "abc")
    for backend, count in ((a, 3), (b, 1), (c, 4)):
        for _ in range(count):
            pool.on_start(backend)
    assert pool.select(Ctx()) is b  # 1/1 < 4/2 < 3/1
    pool.on_start(b)
    pool.on_start(b)
    assert pool.select(Ctx()) is c  # 4/2 = 2 < 3/1 = 3/1 (b)
    for _ in range(3):
        pool.on_finish(a, 0.01, True)
    assert pool.select(Ctx()) is a  # 0


def test_least_connections_ties_rotate() -> None:
    pool = make_pool("least_connections", (1, 1, 1, 1))
    picks = []
    for _ in range(12):
        backend = pool.select(Ctx())
        pool.on_start(backend)
        pool.on_finish(backend, 0.01, True)
        picks.append(backend.id)
    assert "".join(picks) == "abcd" * 3


def test_least_connections_idle_backend_gets_no_burst() -> None:
    """A backend left out for a while (busy) rejoins the rotation, not a burst of ties."""
    pool = make_pool("least_connections", (1, 1, 1))
    a = pool.backends["a"]
    pool.on_start(a)  # a busy while 300 requests go to b and c
    for _ in range(300):
        backend = pool.select(Ctx())
        pool.on_start(backend)
        pool.on_finish(backend, 0.01, True)
    pool.on_finish(a, 0.01, True)
    picks = Counter()
    for _ in range(30):
        backend = pool.select(Ctx())
        pool.on_start(backend)
        pool.on_finish(backend, 0.01, True)
        picks[backend.id] += 1
    assert max(picks.values()) - min(picks.values()) <= 1


def test_least_connections_heap_stays_bounded() -> None:
    pool = make_pool("least_connections", [1] * 10, ids=[f"b{i}" for i in range(10)])
    inflight: list[Backend] = []
    for i in range(20_000):
        backend = pool.select(Ctx())
        pool.on_start(backend)
        inflight.append(backend)
        if len(inflight) > 37:
            pool.on_finish(inflight.pop((i * 31) % len(inflight)), 0.01, True)
        assert len(pool.balancer._heap) <= 2 * 10 + 64 + 1
    spread = [b.active for b in pool.backends.values()]
    assert max(spread) - min(spread) <= 1


def test_least_connections_choices_uses_sampling() -> None:
    pool = make_pool("least_connections", (1, 1, 1), choices=2)
    assert isinstance(pool.balancer, SampledLeastConnections)
    assert pool.balancer.name == "least_connections"
    assert isinstance(make_pool("least_connections", (1,)).balancer, LeastConnections)


def test_least_response_time_prefers_fast_and_retries_slow_after_decay() -> None:
    pool = make_pool("least_response_time", (1, 1))
    clock = pool.clock
    a, b = pool.backends["a"], pool.backends["b"]
    for backend, elapsed in ((a, 0.01), (b, 1.0)):
        pool.on_start(backend)
        pool.on_finish(backend, elapsed, True)

    def pick() -> Backend:
        backend = pool.select(Ctx())
        pool.on_start(backend)
        pool.on_finish(backend, a.ewma if backend is a else 0.01, True)
        return backend

    # For the next 40 s (one request per second) the fast backend takes everything...
    picks = []
    for _ in range(40):
        clock.advance(1.0)
        picks.append(pick())
    assert set(picks) == {a}
    # ...but b's estimate decays (e^-t/10 since its one slow sample): it is retried.
    for _ in range(30):
        clock.advance(1.0)
        picks.append(pick())
    assert b in picks[40:]
    assert b.ewma < 1.0  # its new, fast sample was taken into account


def test_least_response_time_new_backend_gets_a_fair_start() -> None:
    """A backend without samples is scored with the pool's mean latency: under load it
    takes about its share, neither flooded (as an EWMA of 0 would) nor starved."""
    pool = make_pool("least_response_time", (1, 1))
    closed_loop(pool, 60, 5000, lambda _b, rnd: 0.02 * rnd.uniform(0.9, 1.1))
    pool.add(Backend("c", "127.0.0.1", 9100))
    first = closed_loop(pool, 60, 600, lambda _b, rnd: 0.02 * rnd.uniform(0.9, 1.1))
    assert fractions(first)["c"] == pytest.approx(1 / 3, abs=0.05)


def test_least_response_time_sequential_new_backend_is_tried() -> None:
    pool = make_pool("least_response_time", (1, 1))
    for _ in range(10):
        backend = pool.select(Ctx())
        pool.on_start(backend)
        pool.on_finish(backend, 0.05, True)
    pool.add(Backend("c", "127.0.0.1", 9100))
    seen = set()
    for _ in range(3):
        backend = pool.select(Ctx())
        pool.on_start(backend)
        pool.on_finish(backend, 0.05, True)
        seen.add(backend.id)
    assert "c" in seen


def test_least_response_time_counts_active_requests() -> None:
    pool = make_pool("least_response_time", (1, 1))
    a, b = pool.backends["a"], pool.backends["b"]
    for backend, elapsed in ((a, 0.01), (b, 0.03)):
        pool.on_start(backend)
        pool.on_finish(backend, elapsed, True)
    assert pool.select(Ctx()) is a
    for _ in range(2):  # 0.01 * 3 active = 0.03 * 1
        pool.on_start(a)
    pool.on_start(a)  # 0.01 * 4 > 0.03 * 1
    assert pool.select(Ctx()) is b
