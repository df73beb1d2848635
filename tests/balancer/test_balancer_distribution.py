"""Distribution: over 100k sequential selections each algorithm gives every backend its
expected share, weights 5:3:1 and equal weights, within the tolerance stated per
algorithm. Load-aware algorithms are also run as a closed loop of concurrent clients.
"""

from __future__ import annotations

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

SELECTIONS = 100_000
WEIGHTS = ((5, 3, 1), (1, 1, 1), (2, 2, 1, 1))

# Absolute tolerance on each backend's share, by algorithm.
TOLERANCE = {
    # Deterministic rotations: exact up to one unfinished cycle.
    "round_robin": 0.001,
    "weighted_round_robin": 0.001,
    "least_connections": 0.001,  # idle backends share by EDF on weights: exact
    "choices": 0.01,  # least_connections with choices: 2 samples like random
    # Sampling and hashing over 100k distinct keys: the standard deviation of a share is
    # about 0.0016, so 0.01 is over 6 sigma.
    "random": 0.01,
    "ip_hash": 0.01,
    "url_hash": 0.01,
    # A ring of 160 points per unit of weight splits the key space unevenly: the
    # relative standard deviation of an arc sum is about 1/sqrt(points), 8% of a share
    # of 1/3 for 160 points; these rings are deterministic (ids a, b, c...).
    "consistent_hash": 0.04,
}


def expected(algorithm: str, weights: tuple[int, ...]) -> dict[str, float]:
    ids = [chr(ord("a") + i) for i in range(len(weights))]
    if algorithm == "round_robin":  # strict rotation: weights are ignored
        return {i: 1 / len(ids) for i in ids}
    total = sum(weights)
    return {i: w / total for i, w in zip(ids, weights, strict=True)}


@pytest.fixture(scope="module")
def ctxs() -> list[Any]:
    return distinct_ctxs(SELECTIONS)


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: ":".join(map(str, w)))
@pytest.mark.parametrize(
    ("algorithm", "options"),
    [pytest.param(*v, id=variant_id(v)) for v in VARIANTS if v[0] != "least_response_time"],
)
def test_sequential_shares(
    algorithm: str, options: dict[str, Any], weights: tuple[int, ...], ctxs: list[Any]
) -> None:
    pool = make_pool(algorithm, weights, **options)
    got = fractions(run(pool, ctxs))
    want = expected(algorithm, weights)
    tolerance = TOLERANCE["choices" if "choices" in options else algorithm]
    for backend_id, share in want.items():
        assert got.get(backend_id, 0.0) == pytest.approx(share, abs=tolerance), (got, want)


@pytest.mark.parametrize("weights", [(5, 3, 1), (1, 1, 1)], ids=lambda w: ":".join(map(str, w)))
@pytest.mark.parametrize("algorithm", ["least_connections", "least_response_time"])
def test_concurrent_shares_follow_weights(algorithm: str, weights: tuple[int, ...]) -> None:
    """300 concurrent clients, equal service times (10 ms +-10%): the load-aware
    algorithms spread requests in proportion to the weights, within 0.01."""
    pool = make_pool(algorithm, weights)
    got = fractions(
        closed_loop(pool, 300, SELECTIONS, lambda _b, rnd: 0.01 * rnd.uniform(0.9, 1.1))
    )
    for backend_id, share in expected("weighted", weights).items():
        assert got[backend_id] == pytest.approx(share, abs=0.01), got


def test_least_response_time_sequential_equal_backends_rotate(ctxs: list[Any]) -> None:
    pool = make_pool("least_response_time", (1, 1, 1))
    got = fractions(run(pool, ctxs))
    for share in got.values():
        assert share == pytest.approx(1 / 3, abs=0.001)


def test_least_response_time_favours_fast_backends() -> None:
    """Latencies 10, 20, 40 ms, 300 clients. Equalising ewma * (active + 1) predicts
    active + 1 proportional to 1/latency, i.e. shares of about 0.763, 0.190, 0.047; the
    simulation must match that within 0.02."""
    latency = {"a": 0.01, "b": 0.02, "c": 0.04}
    pool = make_pool("least_response_time", (1, 1, 1))
    got = fractions(
        closed_loop(pool, 300, SELECTIONS, lambda b, rnd: latency[b] * rnd.uniform(0.8, 1.2))
    )
    # Fluid model: active_i + 1 = x / s_i with sum(active) = 300.
    x = (300 + 3) / sum(1 / s for s in latency.values())
    rates = {b: (x / s - 1) / s for b, s in latency.items()}
    total = sum(rates.values())
    for backend_id, rate in rates.items():
        assert got[backend_id] == pytest.approx(rate / total, abs=0.02), got


@pytest.mark.parametrize("algorithm", ["least_connections", "random"])
def test_power_of_two_choices_balances_active_requests(algorithm: str) -> None:
    """With `choices: 2` the busiest of 20 equal backends holds far fewer than the
    pure random maximum; in-flight requests stay within a few of the mean."""
    pool = make_pool(algorithm, [1] * 20, ids=[f"b{i:02}" for i in range(20)], choices=2)
    peaks = []
    inflight = []
    for i in range(20_000):
        backend = pool.select(None)
        assert backend is not None
        pool.on_start(backend)
        inflight.append(backend)
        if len(inflight) > 200:  # mean 10 in flight per backend
            pool.on_finish(inflight.pop(i * 7919 % len(inflight)), 0.01, True)
        if i > 1000:
            peaks.append(max(b.active for b in pool.backends.values()))
    assert max(peaks) <= 16  # p2c: the mean (10) + O(log log n)
