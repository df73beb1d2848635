"""The interface every algorithm shares: registry, options, availability, limits."""

from __future__ import annotations

import random
from typing import Any

import pytest
from balancer_helpers import ALGORITHMS, VARIANTS, Ctx, distinct_ctxs, make_pool, variant_id

from haproxyd.balancer.base import REGISTRY, Balancer, create
from haproxyd.balancer.state import Backend, BackendState, Pool

PARAMS = [pytest.param(*v, id=variant_id(v)) for v in VARIANTS]
CONFIG_DEFAULTS = {
    "hash_key": None,
    "virtual_nodes": None,
    "balance_factor": None,
    "choices": None,
    "hash_query": None,
    "trusted_proxies": None,
    "slow_start": None,
}


def test_every_algorithm_is_registered() -> None:
    create("round_robin")  # imports the algorithm modules
    assert set(ALGORITHMS) <= set(REGISTRY)
    for name in ALGORITHMS:
        assert REGISTRY[name].name == name
        assert REGISTRY[name].__module__.startswith("haproxyd.balancer.")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_create_accepts_every_config_option(algorithm: str) -> None:
    """The data plane passes the whole `balancer:` section to every algorithm."""
    balancer = create(algorithm, **CONFIG_DEFAULTS)
    assert balancer.name == algorithm
    balancer = create(
        algorithm,
        hash_key="header:X-User-Id",
        virtual_nodes=50,
        balance_factor=1.5,
        choices=2,
        hash_query=False,
        trusted_proxies=["10.0.0.0/8"],
        slow_start=30.0,
        clock=lambda: 0.0,
        rng=random.Random(0),
    )
    assert isinstance(balancer, Balancer)
    assert balancer.name == algorithm


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="unknown balancing algorithm"):
        create("fastest")


@pytest.mark.parametrize(
    ("algorithm", "options", "match"),
    [
        ("consistent_hash", {"hash_key": "body"}, "hash_key"),
        ("consistent_hash", {"balance_factor": 0.5}, "balance_factor"),
        ("consistent_hash", {"virtual_nodes": -3}, "virtual_nodes"),
        ("random", {"choices": 0}, "choices"),
        ("least_connections", {"choices": "two"}, "choices"),
        ("ip_hash", {"trusted_proxies": ["not-a-cidr"]}, "trusted_proxies"),
        ("weighted_round_robin", {"slow_start": -5}, "slow_start"),
    ],
)
def test_invalid_options(algorithm: str, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create(algorithm, **options)


@pytest.mark.parametrize(("algorithm", "options"), PARAMS)
def test_none_when_no_backend_is_available(algorithm: str, options: dict[str, Any]) -> None:
    pool = make_pool(algorithm, (1, 1), **options)
    ctx = Ctx(headers={b"x-user-id": b"u1", b"cookie": b"sid=1"})
    assert pool.select(ctx) is not None
    pool.set_state("a", BackendState.DOWN)
    pool.set_state("b", BackendState.DRAINING)
    assert pool.select(ctx) is None
    pool.set_state("b", BackendState.UP)
    assert pool.select(ctx).id == "b"
    pool.remove("b")
    assert pool.select(ctx) is None
    empty = Pool("empty", create(algorithm, **options))
    assert empty.select(ctx) is None


@pytest.mark.parametrize(("algorithm", "options"), PARAMS)
def test_zero_weight_and_unavailable_never_chosen(algorithm: str, options: dict[str, Any]) -> None:
    pool = make_pool(algorithm, (1, 0, 1, 1), **options)
    pool.set_state("c", BackendState.MAINT)
    pool.set_weight("d", 0)
    chosen = {pool.select(ctx).id for ctx in distinct_ctxs(2000)}
    assert chosen == {"a"}


@pytest.mark.parametrize(("algorithm", "options"), PARAMS)
def test_custom_active_filter_cannot_smuggle_in_unavailable_backends(
    algorithm: str, options: dict[str, Any]
) -> None:
    """The failover machine may replace the selectable rule; the balancer still never
    picks a backend that is not UP or has weight 0."""
    pool = make_pool(algorithm, (1, 1, 1), **options)
    pool.set_state("b", BackendState.DOWN)
    pool.set_weight("c", 0)
    pool.set_active_filter(lambda p: tuple(p.backends.values()))
    assert {pool.select(ctx).id for ctx in distinct_ctxs(500)} == {"a"}


@pytest.mark.parametrize(("algorithm", "options"), PARAMS)
def test_full_backends_are_skipped(algorithm: str, options: dict[str, Any]) -> None:
    pool = make_pool(algorithm, (3, 1, 1), **options)
    for backend in pool.backends.values():
        backend.max_connections = 2
    pool.refresh()
    ctxs = distinct_ctxs(200)
    started: list[Backend] = []
    for ctx in ctxs[:6]:
        backend = pool.select(ctx)
        assert backend is not None and not backend.full
        pool.on_start(backend)
        started.append(backend)
    assert all(b.full for b in pool.backends.values())
    assert all(pool.select(ctx) is None for ctx in ctxs)
    freed = started[0]
    pool.on_finish(freed, 0.01, True)
    assert {pool.select(ctx).id for ctx in ctxs} == {freed.id}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_stats(algorithm: str) -> None:
    stats = make_pool(algorithm, (1, 2)).balancer.stats()
    assert stats["algorithm"] == algorithm
    assert stats["backends"] == 2


@pytest.mark.parametrize(("algorithm", "options"), PARAMS)
def test_finish_of_a_removed_backend_is_harmless(algorithm: str, options: dict[str, Any]) -> None:
    pool = make_pool(algorithm, (1, 1, 1), **options)
    ctx = Ctx(headers={b"x-user-id": b"u1", b"cookie": b"sid=1"})
    backend = pool.select(ctx)
    pool.on_start(backend)
    pool.remove(backend.id)
    pool.on_finish(backend, 0.01, True)
    assert pool.select(ctx) is not backend


@pytest.mark.parametrize(("algorithm", "options"), PARAMS)
def test_a_retry_avoids_the_backends_the_request_failed_on(
    algorithm: str, options: dict[str, Any]
) -> None:
    pool = make_pool(algorithm, (1, 1, 1), **options)
    ctx = Ctx(headers={b"x-user-id": b"u1", b"cookie": b"sid=1"})
    tried: list[Backend] = []
    for _ in range(3):  # each retry meets a backend not yet tried, whatever the key
        backend = pool.select_retry(ctx, tried)
        assert backend is not None and backend not in tried, (backend, tried)
        tried.append(backend)
    assert pool.select_retry(ctx, tried) is None  # every candidate failed it once
    # The failover machine's next in line, when it has not failed the request.
    standby = Backend("z", "127.0.0.1", 9999, role="backup")
    pool.retry_fallback = standby
    assert pool.select_retry(ctx, tried) is standby
    assert pool.select_retry(ctx, [*tried, standby]) is None
