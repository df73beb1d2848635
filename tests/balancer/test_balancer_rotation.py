"""round_robin and weighted_round_robin: the exact orders, evenness across changes."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from balancer_helpers import Ctx, make_pool
from hypothesis import given, settings
from hypothesis import strategies as st

from haproxyd.balancer.state import BackendState
from haproxyd.balancer.weighted_round_robin import (
    WeightedRoundRobin,
    nginx_sequence,
    smooth_cycle,
)


def order(pool, count: int) -> str:
    return "".join(pool.select(Ctx()).id for _ in range(count))


def test_round_robin_is_a_strict_rotation() -> None:
    pool = make_pool("round_robin", (5, 1, 1))
    assert order(pool, 9) == "abcabcabc"


def test_round_robin_stays_even_when_a_backend_goes_down_and_comes_back() -> None:
    pool = make_pool("round_robin", (1, 1, 1, 1))
    assert order(pool, 2) == "ab"
    pool.set_state("c", BackendState.DOWN)
    assert order(pool, 3) == "dab"  # c skipped, the rotation goes on after b
    pool.set_state("c", BackendState.UP)
    assert order(pool, 8) == "cdabcdab"  # back in its place, right after b
    counts = Counter(order(pool, 4000))
    assert set(counts.values()) == {1000}


def test_round_robin_continues_after_removal_of_the_last_chosen() -> None:
    pool = make_pool("round_robin", (1, 1, 1, 1))
    assert order(pool, 2) == "ab"
    pool.remove("b")
    assert order(pool, 3) == "cda"  # resumes with the backend that followed b


def test_weighted_round_robin_is_nginx_smooth_order() -> None:
    pool = make_pool("weighted_round_robin", (5, 1, 1))
    assert order(pool, 14) == "aabacaa" * 2
    assert order(make_pool("weighted_round_robin", (5, 3, 1)), 9) == "".join(
        "abc"[i] for i in nginx_sequence([5, 3, 1], 9)
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=9))
def test_smooth_cycle_equals_nginx_loop(weights: list[int]) -> None:
    cycle = smooth_cycle(weights)
    assert cycle is not None
    length = sum(weights) // math.gcd(*weights)
    assert cycle == nginx_sequence(weights, length)
    # The cycle repeats: Nginx's state is back to zero after it.
    assert nginx_sequence(weights, 2 * length)[length:] == cycle


def test_edf_fallback_keeps_exact_shares_and_smoothness() -> None:
    """Past the precompute budget the cycle gives way to EDF: same shares per period,
    and never a long run of the heaviest backend."""
    pool = make_pool("weighted_round_robin", (5, 3, 1))
    balancer = pool.balancer
    assert isinstance(balancer, WeightedRoundRobin)
    balancer.cycle_budget = 0
    pool.refresh()
    assert balancer.stats()["scheduler"] == "edf"
    seq = order(pool, 9 * 100)
    assert Counter(seq) == {"a": 500, "b": 300, "c": 100}
    assert "aaaa" not in seq
    for start in range(0, 900, 9):
        assert Counter(seq[start : start + 9]) == {"a": 5, "b": 3, "c": 1}


def test_weighted_round_robin_follows_weight_changes() -> None:
    pool = make_pool("weighted_round_robin", (1, 1))
    assert Counter(order(pool, 10)) == {"a": 5, "b": 5}
    pool.set_weight("a", 3)
    assert Counter(order(pool, 400)) == {"a": 300, "b": 100}
    pool.set_weight("b", 0)
    assert set(order(pool, 20)) == {"a"}


def test_weighted_round_robin_position_survives_rebuilds() -> None:
    """Frequent unrelated changes must not restart the cycle at its first backend."""
    pool = make_pool("weighted_round_robin", (5, 3, 1, 1), ids=["a", "b", "c", "bk"])
    pool.backends["bk"].role = "backup"
    pool.refresh()
    counts: Counter[str] = Counter()
    for _ in range(900):
        counts[pool.select(Ctx()).id] += 1
        pool.set_state("bk", BackendState.DOWN)  # a backup flaps: a rebuild each time
        pool.set_state("bk", BackendState.UP)
    assert counts == {"a": 500, "b": 300, "c": 100}


@pytest.mark.parametrize("algorithm", ["round_robin", "weighted_round_robin"])
def test_rotation_skips_full_backends(algorithm: str) -> None:
    pool = make_pool(algorithm, (1, 1, 1))
    pool.backends["b"].max_connections = 1
    pool.refresh()
    pool.on_start(pool.backends["b"])
    assert set(order(pool, 30)) == {"a", "c"}
    pool.on_finish(pool.backends["b"], 0.01, True)
    assert set(order(pool, 30)) == {"a", "b", "c"}
