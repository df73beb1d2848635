"""slow_start: a backend that just came up ramps from a small share to its full share
over the period, in every algorithm; nobody ramps on a cold start."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from balancer_helpers import (
    VARIANTS,
    closed_loop,
    distinct_ctxs,
    fractions,
    make_pool,
    run,
    variant_id,
)

from haproxyd.balancer.base import create
from haproxyd.balancer.state import Backend, BackendState, Pool

PERIOD = 30.0
WINDOW = 3000
CTXS = distinct_ctxs(WINDOW, seed=11)
PARAMS = [pytest.param(*v, id=variant_id(v)) for v in VARIANTS]


def share_of(pool: Pool, backend_id: str, ctxs: list[Any] = CTXS) -> float:
    return run(pool, ctxs)[backend_id] / len(ctxs)


def ramping_pool(algorithm: str, options: dict[str, Any]) -> Pool:
    pool = make_pool(algorithm, (2, 2, 2), since=0.0, slow_start=PERIOD, **options)
    pool.backends["c"].state_since = pool.clock.now  # type: ignore[attr-defined]
    pool.refresh()
    return pool


@pytest.mark.parametrize(("algorithm", "options"), PARAMS)
def test_share_ramps_up_over_the_period(algorithm: str, options: dict[str, Any]) -> None:
    pool = ramping_pool(algorithm, options)
    clock = pool.clock  # type: ignore[attr-defined]
    start = clock.now
    shares = []
    for at in (0.0, 7.5, 15.0, 22.5, 29.0):
        clock.now = start + at
        shares.append(share_of(pool, "c"))
    clock.now = start + PERIOD + 1
    final = share_of(pool, "c")
    fair = 1 / 3
    assert shares[0] < fair / 3, shares
    for earlier, later in itertools.pairwise(shares):
        assert later >= earlier - 0.02, shares
    assert shares[2] < 0.8 * fair, shares  # half-way: clearly below the full share
    tolerance = 0.05 if algorithm == "consistent_hash" else 0.03
    if algorithm == "least_response_time":
        # Sequential requests to equal backends: the full weight ties c with a and b.
        tolerance = 0.01
    assert final == pytest.approx(fair, abs=tolerance), (shares, final)


@pytest.mark.parametrize("algorithm", ["least_connections", "least_response_time"])
def test_load_aware_ramp_under_concurrency(algorithm: str) -> None:
    """60 concurrent clients, equal 1 ms backends: the ramping backend's share follows
    the ramp (about f / (2 + f) for ramp factor f) and ends at a third."""
    pool = ramping_pool(algorithm, {})
    clock = pool.clock  # type: ignore[attr-defined]
    start = clock.now
    for at in (0.0, 7.5, 15.0, 22.5, 31.0):
        clock.now = start + at
        counts = closed_loop(pool, 60, 3000, lambda _b, rnd: 0.001 * rnd.uniform(0.9, 1.1))
        f = max(0.05, at / PERIOD) if at < PERIOD else 1.0
        assert fractions(counts).get("c", 0.0) == pytest.approx(f / (2 + f), abs=0.03)


@pytest.mark.parametrize(("algorithm", "options"), PARAMS)
def test_no_ramp_on_cold_start(algorithm: str, options: dict[str, Any]) -> None:
    """Every backend just came up (process start): nobody is held back."""
    pool = make_pool(algorithm, (2, 2, 2), since=1000.0, slow_start=PERIOD, **options)
    assert pool.clock.now == 1000.0  # type: ignore[attr-defined]
    tolerance = 0.05 if algorithm == "consistent_hash" else 0.03
    assert share_of(pool, "c") == pytest.approx(1 / 3, abs=tolerance)


@pytest.mark.parametrize("algorithm", ["ip_hash", "url_hash", "consistent_hash"])
def test_hash_keys_taken_during_the_ramp_stay(algorithm: str) -> None:
    """The gate admits keys whose hash is below the ramp factor: the set of keys the
    ramping backend takes only grows."""
    pool = ramping_pool(algorithm, {})
    clock = pool.clock  # type: ignore[attr-defined]
    start = clock.now
    taken = []
    for at in (5.0, 15.0, 25.0, 31.0):
        clock.now = start + at
        taken.append({i for i, ctx in enumerate(CTXS) if pool.select(ctx).id == "c"})
    for earlier, later in itertools.pairwise(taken):
        assert earlier <= later
    assert len(taken[0]) < len(taken[-1]) / 3


def test_ramp_uses_state_since_set_by_the_pool() -> None:
    """With the real clock: a backend that goes down and comes back through
    `Pool.set_state` is ramped from its `state_since`."""
    backends = [Backend(x, "127.0.0.1", 9000) for x in "abc"]
    for b in backends:
        b.state_since -= 3600  # up for an hour
    pool = Pool("p", create("round_robin", slow_start=PERIOD), backends)
    assert share_of(pool, "c") == pytest.approx(1 / 3, abs=0.001)
    pool.set_state("c", BackendState.DOWN)
    pool.set_state("c", BackendState.UP)
    assert share_of(pool, "c") < 0.05


def test_invalid_slow_start_rejected() -> None:
    with pytest.raises(ValueError, match="slow_start"):
        create("round_robin", slow_start=-1)
