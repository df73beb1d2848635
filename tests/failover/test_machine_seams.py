"""The machine's seams: reloads (re-attach to rebuilt pools, keep decisions), the
cluster seam (publish, follower mode, apply_decision), the worker mirror of a decision
(panic flag and retry fallback travel with the selectable set)."""

from __future__ import annotations

import pytest
from failover_helpers import Harness, make_pool

from haproxyd.balancer.state import PanicSet
from haproxyd.config.schema import FailoverConfig
from haproxyd.failover.base import Decision, TriggerRefused

PAIR = [{"id": "p1"}, {"id": "b1", "role": "backup"}]
AP = {"strategy": "active_passive", "flap_hold": 0}


# -- reload ---------------------------------------------------------------------------


def test_reattach_to_a_rebuilt_pool_keeps_the_decision_and_its_timer(clock):
    h = Harness(clock, PAIR, {**AP, "failback_hold": 30})
    h.set("p1", "down")
    h.set("p1", "up")
    clock.advance(10)
    version = h.decision.version
    # A reload: a new Pool with the same Backend objects, the rule carried over.
    old = h.pool
    new = type(old)("web", old.balancer, old.backends.values(), active_filter=old.active_filter)
    h.machine.attach({"web": new}, {"web": h.settings})
    h.pool = new
    assert h.active == ["b1"] and h.decision.version == version
    h.advance(19.9)
    assert h.active == ["b1"]
    h.advance(0.1)  # the hold counts from p1's recovery, not from the reload
    assert h.active == ["p1"]


def test_reload_with_a_changed_failover_section_drops_an_operator_pin(clock):
    h = Harness(clock, PAIR, {**AP, "failback_hold": 0})
    h.machine.trigger("web", target="backup")
    assert h.active == ["b1"]
    # Same settings: the pin stays.
    h.machine.attach({"web": h.pool}, {"web": h.settings})
    assert h.active == ["b1"]
    changed = FailoverConfig(**{**AP, "failback_hold": 0, "panic_threshold": 10})
    h.machine.attach({"web": h.pool}, {"web": changed})
    assert h.active == ["p1"]


def test_strategy_change_by_reload_starts_from_the_current_set(clock):
    h = Harness(clock, [{"id": "p1"}, {"id": "p2"}], {})
    assert h.active == ["p1", "p2"]
    h.machine.attach({"web": h.pool}, {"web": FailoverConfig(strategy="active_passive")})
    assert h.active == ["p1"]
    assert h.decision.strategy == "active_passive"
    assert h.kinds() == ["config"]
    assert "strategy active_active -> active_passive" in h.events.list()[0].reason


# -- cluster seam ----------------------------------------------------------------------


def two_nodes(clock):
    """A leader and a follower, each with its own pools (its own view of health); the
    leader publishes to the follower. `api` is active_active: node-local in a cluster."""
    leader = Harness(clock, PAIR, AP)
    follower = Harness(clock, PAIR, AP)
    api_pool = make_pool([{"id": "a1"}, {"id": "a2"}], name="api")
    follower.machine.attach(
        {"web": follower.pool, "api": api_pool},
        {"web": follower.settings, "api": FailoverConfig()},
    )
    follower.api = api_pool
    published: list[Decision] = []

    def publish(decision: Decision) -> None:
        published.append(decision)
        # Over the wire and back, as a cluster transport would carry it.
        follower.machine.apply_decision(Decision.from_dict(decision.to_dict()))

    leader.machine.publish = publish
    follower.machine.set_follower(True)
    return leader, follower, published


def test_follower_routes_by_the_leaders_decision_not_its_own_health(clock):
    leader, follower, published = two_nodes(clock)
    leader.set("p1", "down")
    assert leader.active == ["b1"]
    assert [d.active for d in published] == [("b1",)]
    # The follower still sees p1 up locally, yet routes where the leader says.
    assert follower.pool.backends["p1"].state == "up"
    assert follower.active == ["b1"]
    assert follower.machine.describe("web")["mode"] == "follower"
    # Its own health changes do not make it decide.
    follower.set("b1", "down")
    follower.set("b1", "up")
    assert follower.active == ["b1"]


def test_follower_decides_active_active_pools_itself_and_refuses_triggers(clock):
    _, follower, _ = two_nodes(clock)
    follower.api.set_state("a1", "down")
    assert [b.id for b in follower.api.selectable] == ["a2"]
    assert follower.machine.describe("api")["mode"] == "local"
    with pytest.raises(TriggerRefused, match="leader"):
        follower.machine.trigger("web", target="backup")


def test_stale_or_foreign_decisions_are_ignored(clock):
    leader, follower, published = two_nodes(clock)
    leader.set("p1", "down")
    leader.set("p1", "up")
    leader.machine.trigger("web", target="primary")
    current = follower.decision
    assert follower.active == ["p1"]
    assert not follower.machine.apply_decision(published[0])  # older version
    other = Decision("web", "manual", ("b1",), current.version + 1, "x", 0.0)
    assert not follower.machine.apply_decision(other)  # the configs differ
    unknown = Decision("nope", "active_passive", (), 99, "x", 0.0)
    assert not follower.machine.apply_decision(unknown)
    assert follower.decision is current and follower.active == ["p1"]


def test_a_follower_that_becomes_leader_carries_on_from_the_adopted_state(clock):
    leader, follower, _ = two_nodes(clock)
    leader.machine.trigger("web", target="backup")  # pinned on the leader
    assert follower.active == ["b1"]
    follower.machine.set_follower(False)
    assert follower.active == ["b1"], "the new leader forgot the operator's pin"
    assert follower.machine.describe("web")["mode"] == "leader"
    adopted = follower.decision.version
    assert adopted == leader.decision.version
    result = follower.machine.trigger("web", target="primary")
    # Versions go on from the adopted decision, so the old leader's are older.
    assert result["decision"]["version"] == adopted + 1
    assert follower.active == ["p1"]


def test_decision_from_dict_rejects_malformed_input():
    good = Decision("web", "manual", ("a",), 3, "r", 1.0, state={"designated": ["a"]})
    assert Decision.from_dict(good.to_dict()) == good
    for bad in (
        {},
        {**good.to_dict(), "active": "a"},
        {**good.to_dict(), "version": -1},
        {**good.to_dict(), "state": []},
    ):
        with pytest.raises(ValueError):
            Decision.from_dict(bad)


# -- the worker mirror -------------------------------------------------------------------


async def test_workers_mirror_the_decision_with_its_fallback_and_panic_flag(clock):
    import asyncio

    from haproxyd.config import validate_document
    from haproxyd.proxy.runtime import ProxyRuntime, backend_state_message

    h = Harness(clock, [*PAIR, {"id": "b2", "role": "backup"}], {**AP, "panic_threshold": 50})
    doc = {
        "pools": {
            "web": {
                "backends": [{"id": i, "address": "127.0.0.1:1"} for i in ("p1", "b1", "b2")],
            }
        }
    }
    worker = ProxyRuntime(asyncio.get_running_loop())
    worker.apply(validate_document(doc, source="test", env={}))

    def mirror() -> tuple[list[str], str | None, bool]:
        message = backend_state_message(h.pool)
        worker.sync_pool(
            "web",
            message["backends"],
            message["selectable"],
            fallback=message["fallback"],
            panic=message["panic"],
        )
        pool = worker.pools["web"].state
        fallback = pool.retry_fallback.id if pool.retry_fallback is not None else None
        return [b.id for b in pool.selectable], fallback, isinstance(pool.selectable, PanicSet)

    assert mirror() == (["p1"], "b1", False)
    h.set("b1", "down")
    assert mirror() == (["p1"], "b2", False)
    h.set("p1", "down")  # 1 of 3 healthy < 50%: panic over all three
    assert mirror() == (["p1", "b1", "b2"], None, True)
    # The worker's balancer really uses the down backends in panic.
    assert worker.pools["web"].state.select(object()) is not None
    await worker.stop()
