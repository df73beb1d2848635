"""consistent_hash: remapping bounds, the same ring in every process, bounded loads,
rebuilds only on change, the round-robin fallback, ring statistics."""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from balancer_helpers import Ctx, make_pool

from haproxyd.balancer.ring import ConsistentHash, Ring, backend_points
from haproxyd.balancer.state import Backend, BackendState

KEYS = [b"user-%d" % i for i in range(100_000)]
REPO = Path(__file__).resolve().parents[2]


def mapping(pool) -> list[str]:
    ring = pool.balancer._ring
    return [ring.owner(key).id for key in KEYS]


def ring_pool(n: int, **options):
    return make_pool(
        "consistent_hash",
        [1] * n,
        ids=[f"web-{i}" for i in range(n)],
        hash_key="header:X-User-Id",
        **options,
    )


@pytest.mark.parametrize("n", [5, 10, 40])
def test_removing_one_of_n_remaps_at_most_its_share(n: int) -> None:
    pool = ring_pool(n)
    before = mapping(pool)
    pool.remove("web-3")
    after = mapping(pool)
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert len(moved) / len(KEYS) <= 1 / n + 0.02
    # Only the removed backend's keys moved.
    assert all(before[i] == "web-3" for i in moved)


@pytest.mark.parametrize("n", [5, 10, 40])
def test_adding_one_remaps_at_most_its_share(n: int) -> None:
    pool = ring_pool(n)
    before = mapping(pool)
    pool.add(Backend(f"web-{n}", "127.0.0.1", 9999))
    after = mapping(pool)
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert len(moved) / len(KEYS) <= 1 / (n + 1) + 0.02
    # Keys only moved to the new backend.
    assert all(after[i] == f"web-{n}" for i in moved)


def test_down_and_up_restores_the_same_mapping() -> None:
    pool = ring_pool(8)
    before = mapping(pool)
    pool.set_state("web-5", BackendState.DOWN)
    pool.set_state("web-5", BackendState.UP)
    assert mapping(pool) == before


_SCRIPT = """
import hashlib, sys
from haproxyd.balancer.base import create
from haproxyd.balancer.state import Backend, Pool

class Ctx:
    def __init__(self, i):
        self.client_ip = "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)
        self.url = b"/obj/%d" % i
        self._h = {b"x-user-id": b"user-%d" % i}
    def header(self, name):
        return self._h.get(name)

ids = ["web-%d" % i for i in range(12)]
if sys.argv[1] == "reversed":
    ids.reverse()
digest = hashlib.sha256()
for algorithm, options in [
    ("consistent_hash", {"hash_key": "header:X-User-Id"}),
    ("consistent_hash", {"hash_key": "ip", "virtual_nodes": 40}),
    ("ip_hash", {}),
    ("url_hash", {}),
]:
    pool = Pool("p", create(algorithm, **options),
                [Backend(i, "127.0.0.1", 1000, weight=1 + int(i[4:]) % 3) for i in ids])
    for i in range(20000):
        digest.update(pool.select(Ctx(i)).id.encode() + b",")
print(digest.hexdigest())
"""


def test_identical_mapping_in_separate_processes() -> None:
    """Different PYTHONHASHSEEDs and backend orders: the same backend for every key."""
    digests = set()
    for seed, order in (("1", "config"), ("2", "reversed"), ("random", "config")):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", _SCRIPT, order],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests


@pytest.mark.parametrize("n", [1, 3, 200])
def test_bucketed_lookup_finds_what_a_plain_binary_search_finds(n: int) -> None:
    """`Ring.index` narrows the search by the hash's top bits; it must land on the same
    point as a search of the whole ring, at bucket edges, on points and past the end."""
    from bisect import bisect_left

    ring = Ring.build([Backend(f"b{i}", "10.0.0.1", 80, weight=1 + i % 3) for i in range(n)])
    points = [ring.point(i) for i in range(len(ring))]
    rnd = random.Random(n)
    positions = [0, 1, (1 << 32) - 1, points[0], points[-1], points[-1] + 1]
    positions += [p + d for p in rnd.sample(points, min(200, len(points))) for d in (-1, 0, 1)]
    positions += [b << ring.step for b in range(0, 1 << (32 - ring.step), 7)]
    positions += [rnd.randrange(1 << 32) for _ in range(5000)]
    for position in positions:
        position = min(max(position, 0), (1 << 32) - 1)
        expected = bisect_left(points, position)
        expected = 0 if expected == len(points) else expected
        assert ring.index(position) == expected, position
    if n == 200:
        assert ring.step < 32 and len(ring.starts) > 1000  # the buckets are in use


def test_ring_points_derive_from_the_id_only() -> None:
    assert backend_points("web-1", 8) == backend_points("web-1", 16)[:8]
    a = Ring.build([Backend("web-1", "10.0.0.1", 80), Backend("web-2", "10.0.0.2", 80)])
    b = Ring.build([Backend("web-2", "192.168.1.9", 81), Backend("web-1", "::1", 8080)])
    assert a.packed == b.packed
    digest = hashlib.sha256(repr(a.packed).encode()).hexdigest()
    assert digest == hashlib.sha256(repr(b.packed).encode()).hexdigest()


def test_virtual_nodes_are_proportional_to_weight() -> None:
    pool = make_pool("consistent_hash", (5, 3, 1), virtual_nodes=100)
    stats = pool.balancer.stats()
    assert stats["ring_size"] == 900
    assert pool.balancer._ring.counts == {"a": 500, "b": 300, "c": 100}
    assert stats["min_points_per_backend"] == 100
    assert stats["max_points_per_backend"] == 500


def test_ring_is_rebuilt_only_when_membership_or_weights_change() -> None:
    pool = make_pool("consistent_hash", (1, 1, 1, 1), ids=["a", "b", "c", "bk"])
    pool.backends["bk"].role = "backup"
    pool.refresh()
    balancer = pool.balancer
    assert isinstance(balancer, ConsistentHash)
    builds = balancer.ring_builds
    for i in range(1000):
        backend = pool.select(Ctx(f"10.0.0.{i % 250}"))
        pool.on_start(backend)
        pool.on_finish(backend, 0.01, True)
    pool.set_state("bk", BackendState.DOWN)  # not selectable either way: same members
    pool.refresh()
    assert balancer.ring_builds == builds
    pool.set_weight("a", 2)
    assert balancer.ring_builds == builds + 1
    pool.set_state("b", BackendState.MAINT)
    assert balancer.ring_builds == builds + 2


def test_missing_key_falls_back_to_round_robin() -> None:
    pool = make_pool("consistent_hash", (1, 1, 1), hash_key="cookie:sid")
    ids = "".join(pool.select(Ctx(headers={b"cookie": b"other=1"})).id for _ in range(9))
    assert ids == "abcabcabc"
    sticky = {pool.select(Ctx(headers={b"cookie": b"a=1; sid=xyz"})).id for _ in range(20)}
    assert len(sticky) == 1


def test_full_backend_passes_the_key_to_the_next_on_the_ring() -> None:
    pool = make_pool("consistent_hash", (1, 1, 1), hash_key="header:X-User-Id")
    ctx = Ctx(headers={b"x-user-id": b"alice"})
    home = pool.select(ctx)
    home.max_connections = 1
    pool.refresh()
    pool.on_start(home)
    other = pool.select(ctx)
    assert other is not home and other is not None
    assert {pool.select(ctx).id for _ in range(10)} == {other.id}  # still sticky
    pool.on_finish(home, 0.01, True)
    assert pool.select(ctx) is home


def _skewed_keys(rnd: random.Random, count: int) -> list[bytes]:
    # Zipf-like: key k with probability ~ 1/k over 1000 keys, so key 1 is ~13%.
    keys = [b"user-%d" % k for k in range(1, 1001)]
    weights = [1 / k for k in range(1, 1001)]
    return rnd.choices(keys, weights, k=count)


def _warm(factor: float, n: int) -> int:
    """In-flight requests from which the strict bound c * mean is always satisfiable."""
    return math.ceil((n - factor) / (factor - 1))


@pytest.mark.parametrize("factor", [1.1, 1.25, 2.0])
def test_bounded_load_arrivals_only(factor: float) -> None:
    """Place 10,000 requests of a skewed key stream, none finishing: after every
    placement no backend holds more than ceil(c * mean); the backend just chosen holds
    at most c * mean unless the pool holds too few requests for that to be possible;
    at the end max/mean <= c."""
    n = 10
    pool = ring_pool(n, balance_factor=factor)
    keys = _skewed_keys(random.Random(5), 10_000)
    backends = list(pool.backends.values())
    for placed, key in enumerate(keys, start=1):
        backend = pool.select(Ctx(headers={b"x-user-id": key}))
        pool.on_start(backend)
        mean = placed / n
        assert max(b.active for b in backends) <= math.ceil(factor * mean)
        if placed > _warm(factor, n):
            assert backend.active <= factor * mean + 1e-9
    loads = [b.active for b in backends]
    assert max(loads) / (sum(loads) / n) <= factor


@pytest.mark.parametrize("inflight_target", [200, 500, 2000])
@pytest.mark.parametrize("factor", [1.1, 1.25, 2.0])
def test_bounded_load_steady_state_with_departures(factor: float, inflight_target: int) -> None:
    """A skewed stream (Zipf over 1000 keys) with requests finishing in random order:
    right after every placement max/mean <= c. Without a bound the same stream
    overloads one backend."""
    n = 10

    def simulate(pool) -> list[float]:
        rnd = random.Random(9)
        backends = list(pool.backends.values())
        inflight = []
        ratios = []
        for key in _skewed_keys(rnd, 20_000):
            backend = pool.select(Ctx(headers={b"x-user-id": key}))
            pool.on_start(backend)
            inflight.append(backend)
            if len(inflight) > inflight_target:
                loads = [b.active for b in backends]
                ratios.append(max(loads) / (sum(loads) / n))
                pool.on_finish(inflight.pop(rnd.randrange(len(inflight))), 0.01, True)
        return ratios

    ratios = simulate(ring_pool(n, balance_factor=factor))
    assert max(ratios) <= factor + 1e-9
    assert max(simulate(ring_pool(n))) > 2.5


def test_bounded_load_respects_weights() -> None:
    pool = make_pool("consistent_hash", (3, 1), hash_key="header:X-User-Id", balance_factor=1.1)
    for key in [b"hot"] * 4000:  # one key: the bound alone spreads it
        pool.on_start(pool.select(Ctx(headers={b"x-user-id": key})))
    counts = Counter({b.id: b.active for b in pool.backends.values()})
    assert counts["a"] / 4000 == pytest.approx(0.75, abs=0.03)
    assert counts["a"] <= math.ceil(1.1 * 4000 * 3 / 4)


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="balance_factor"):
        ConsistentHash(balance_factor=0.9)
    with pytest.raises(ValueError, match="virtual_nodes"):
        ConsistentHash(virtual_nodes=0)
    with pytest.raises(ValueError, match="hash_key"):
        ConsistentHash(hash_key="query:x")
