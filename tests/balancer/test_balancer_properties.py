"""Property tests: random sequences of membership, weight, state, limit and clock
changes interleaved with requests, for every algorithm. Invariants after every
selection: the result is None exactly when no backend is available, and otherwise is
an available one (selectable, UP, weight > 0, not full); nothing ever raises."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from balancer_helpers import VARIANTS, Ctx, variant_id
from helpers.clock import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haproxyd.balancer.base import create
from haproxyd.balancer.state import Backend, BackendState, Pool

NAMES = ("a", "b", "c", "d", "e", "f")
STATES = tuple(BackendState)

name = st.sampled_from(NAMES)
ops = st.one_of(
    st.tuples(st.just("select"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("select"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("finish"), st.integers(0, 1000)),
    st.tuples(st.just("add"), name, st.integers(0, 5)),
    st.tuples(st.just("remove"), name),
    st.tuples(st.just("state"), name, st.sampled_from(STATES)),
    st.tuples(st.just("weight"), name, st.integers(0, 5)),
    st.tuples(st.just("maxconn"), name, st.integers(0, 3)),
    st.tuples(st.just("backup"), name, st.booleans()),
    st.tuples(st.just("advance"), st.floats(0.0, 20.0)),
)


def available(pool: Pool) -> list[Backend]:
    return [
        b
        for b in pool.selectable
        if b.state == BackendState.UP and b.effective_weight > 0 and not b.full
    ]


def context(i: int, with_key: bool) -> Ctx:
    headers = {b"x-user-id": b"user-%d" % i, b"cookie": b"sid=%d" % i} if with_key else {}
    return Ctx(f"2001:db8::{i:x}" if i % 2 else f"198.51.100.{i}", b"/p/%d" % i, headers)


def apply(pool: Pool, clock: FakeClock, inflight: list[Backend], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "select":
        chosen = pool.select(context(op[1], op[2]))
        allowed = available(pool)
        if chosen is None:
            assert not allowed, f"None while {allowed} are available"
        else:
            assert any(chosen is b for b in allowed), f"{chosen} is not available"
            pool.on_start(chosen)
            inflight.append(chosen)
    elif kind == "finish":
        if inflight:
            pool.on_finish(inflight.pop(op[1] % len(inflight)), 0.001 * (op[1] % 50), True)
    elif kind == "add":
        if op[1] not in pool.backends:
            pool.add(Backend(op[1], "127.0.0.1", 9000, weight=op[2]))
    elif kind == "remove":
        if op[1] in pool.backends:
            pool.remove(op[1])
    elif op[1] in pool.backends:
        backend = pool.backends[op[1]]
        if kind == "state":
            pool.set_state(op[1], op[2])
        elif kind == "weight":
            pool.set_weight(op[1], op[2])
        elif kind == "maxconn":
            backend.max_connections = op[2]
            pool.refresh()
        elif kind == "backup":
            backend.role = "backup" if op[2] else "primary"
            pool.refresh()
    if kind == "advance":
        clock.advance(op[1])


@pytest.mark.parametrize(
    ("algorithm", "options"), [pytest.param(*v, id=variant_id(v)) for v in VARIANTS]
)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    initial=st.lists(st.integers(0, 4), min_size=0, max_size=5),
    steps=st.lists(ops, max_size=60),
    slow_start=st.sampled_from([None, 10.0]),
    seed=st.integers(0, 2**16),
)
def test_random_sequences_keep_the_invariants(
    algorithm: str,
    options: dict[str, Any],
    initial: list[int],
    steps: list[tuple[Any, ...]],
    slow_start: float | None,
    seed: int,
) -> None:
    clock = FakeClock(time.monotonic())
    balancer = create(
        algorithm,
        slow_start=slow_start,
        clock=clock,
        rng=random.Random(seed),
        virtual_nodes=options.get("virtual_nodes", 20),
        **{k: v for k, v in options.items() if k != "virtual_nodes"},
    )
    pool = Pool(
        "prop",
        balancer,
        [Backend(NAMES[i], "127.0.0.1", 9000 + i, weight=w) for i, w in enumerate(initial)],
    )
    inflight: list[Backend] = []
    for op in steps:
        apply(pool, clock, inflight, op)
    # Whatever happened, a final round of selections keeps the invariants too.
    for i in range(5):
        apply(pool, clock, inflight, ("select", i, True))
    while inflight:
        apply(pool, clock, inflight, ("finish", 0))
    for backend in pool.backends.values():
        assert backend.active == 0
