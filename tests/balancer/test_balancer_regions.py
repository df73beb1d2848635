"""The region balancer: local while the client's region is healthy enough, a
proportional spill below `spill_threshold`, full failover when the region is down.

The split is a deterministic smooth weighted rotation, so the shares below are exact
over a whole number of cycles (the integration test measures them through the proxy)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from balancer_helpers import Ctx

from haproxyd.balancer.base import create
from haproxyd.balancer.regions import RegionBalancer
from haproxyd.balancer.state import Backend, BackendState, PanicSet, Pool
from haproxyd.config.schema import RegionsConfig

# eu: 4 backends, us: 2, ap: 1 (weights 1).
LAYOUT = {"eu": 4, "us": 2, "ap": 1}


def region_pool(
    layout: dict[str, int] = LAYOUT,
    *,
    node_region: str | None = "eu",
    algorithm: str = "round_robin",
    **regions: Any,
) -> Pool:
    backends = [
        Backend(f"{region}-{i}", "127.0.0.1", 9000 + n * 10 + i, region=region)
        for n, (region, count) in enumerate(layout.items())
        for i in range(1, count + 1)
    ]
    balancer = RegionBalancer(
        lambda: create(algorithm), RegionsConfig(**regions), node_region=node_region
    )
    return Pool("geo", balancer, backends)


def spread(pool: Pool, requests: int, ctx: Ctx | None = None) -> Counter[str]:
    """Requests per region."""
    out: Counter[str] = Counter()
    for _ in range(requests):
        backend = pool.select(ctx or Ctx())
        out[backend.region if backend is not None else None] += 1
    return out


def down(pool: Pool, *ids: str) -> None:
    for backend_id in ids:
        pool.set_state(backend_id, BackendState.DOWN)


def test_a_healthy_local_region_takes_everything():
    pool = region_pool()
    assert spread(pool, 100) == {"eu": 100}
    # Inside the region, the inner algorithm (round robin) rotates over its backends.
    ids = Counter(pool.select(Ctx()).id for _ in range(40))
    assert ids == {f"eu-{i}": 10 for i in range(1, 5)}


def test_at_the_threshold_everything_stays_local():
    pool = region_pool(spill_threshold=0.5)
    down(pool, "eu-1", "eu-2")  # share 0.5
    assert spread(pool, 100) == {"eu": 100}


def test_below_the_threshold_a_proportional_part_spills_by_weight():
    pool = region_pool(spill_threshold=0.5, weights={"us": 3, "ap": 1})
    down(pool, "eu-1", "eu-2", "eu-3")  # share 0.25: keep 0.25 / 0.5 = half
    # The other half by weight x healthy share: us 3 x 1, ap 1 x 1.
    assert spread(pool, 800) == {"eu": 400, "us": 300, "ap": 100}


def test_spill_weighs_the_other_regions_by_their_own_health():
    pool = region_pool(spill_threshold=0.5)
    down(pool, "eu-1", "eu-2", "eu-3", "us-1")  # eu 0.25, us 0.5, ap 1.0
    assert spread(pool, 600) == {"eu": 300, "us": 100, "ap": 200}


def test_a_dead_region_fails_over_entirely():
    pool = region_pool(weights={"us": 1, "ap": 1})
    down(pool, "eu-1", "eu-2", "eu-3", "eu-4")
    assert spread(pool, 100) == {"us": 50, "ap": 50}
    down(pool, "us-1", "us-2", "ap-1")
    assert spread(pool, 5) == {None: 5}


def test_nowhere_to_spill_keeps_the_traffic_local():
    pool = region_pool({"eu": 4, "us": 1})
    down(pool, "eu-1", "eu-2", "eu-3", "us-1")
    assert spread(pool, 10) == {"eu": 10}


def test_client_region_from_header_then_cidr_then_node():
    pool = region_pool(
        client_region={"header": "X-Region", "cidrs": {"us": ["10.0.0.0/8"], "ap": ["10.9.0.0/16"]}}
    )
    assert spread(pool, 10, Ctx("192.0.2.1")) == {"eu": 10}  # the node's region
    assert spread(pool, 10, Ctx("10.1.2.3")) == {"us": 10}
    assert spread(pool, 10, Ctx("10.9.2.3")) == {"ap": 10}  # the longest prefix wins
    header = Ctx("10.1.2.3", headers={b"X-Region": b"ap"})
    assert spread(pool, 10, header) == {"ap": 10}


def test_unknown_client_region_or_prefer_local_false_spreads_by_weight():
    for pool in (
        region_pool(node_region=None, weights={"eu": 2, "us": 1, "ap": 1}),
        region_pool(prefer_local=False, weights={"eu": 2, "us": 1, "ap": 1}),
    ):
        assert spread(pool, 400) == {"eu": 200, "us": 100, "ap": 100}
    pool = region_pool(client_region={"header": "X-Region"})
    assert spread(pool, 30, Ctx(headers={b"X-Region": b"mars"})) == {"eu": 10, "us": 10, "ap": 10}


def test_backends_without_a_region_are_in_the_nodes_region():
    pool = region_pool({"us": 1})
    pool.add(Backend("local", "127.0.0.1", 9999))
    assert Counter(pool.select(Ctx()).id for _ in range(10)) == {"local": 10}


def test_full_region_falls_back_to_the_next_region():
    pool = region_pool({"eu": 1, "us": 1})
    eu = pool.backends["eu-1"]
    eu.max_connections = 1
    pool.on_start(eu)
    assert pool.select(Ctx()).id == "us-1"
    pool.on_finish(eu, 0.01, True)
    assert pool.select(Ctx()).id == "eu-1"


def test_panic_set_passes_through_to_the_inner_balancers():
    pool = region_pool({"eu": 2})
    down(pool, "eu-1")
    pool.set_active_filter(lambda p: PanicSet(p.backends.values()))
    assert Counter(pool.select(Ctx()).id for _ in range(10)) == {"eu-1": 5, "eu-2": 5}


@pytest.mark.parametrize(
    "algorithm", ["weighted_round_robin", "least_connections", "consistent_hash"]
)
def test_composes_with_other_algorithms(algorithm: str):
    pool = region_pool(algorithm=algorithm, spill_threshold=0.5)
    down(pool, "eu-1", "eu-2", "eu-3")
    counts = spread(pool, 400)
    assert counts["eu"] == 200 and counts["us"] + counts["ap"] == 200
    stats = pool.balancer.stats()
    assert stats["regions"]["eu"]["share"] == 0.25


def test_a_retry_leaves_the_region_once_all_its_backends_failed_the_request():
    """Health checks have not yet marked eu down (its share still says "stay local"):
    a retry tries the rest of eu, then leaves for the region the route spills to."""
    pool = region_pool({"eu": 2, "us": 2}, spill_threshold=0.5)
    tried = [pool.select(Ctx())]
    assert tried[0].region == "eu"
    second = pool.select_retry(Ctx(), tried)
    assert second.region == "eu" and second not in tried
    tried.append(second)
    third = pool.select_retry(Ctx(), tried)
    assert third.region == "us", third
    tried.append(third)
    fourth = pool.select_retry(Ctx(), tried)
    assert fourth.region == "us" and fourth not in tried
    assert pool.select_retry(Ctx(), [*tried, fourth]) is None
