"""active_passive with a fake clock: one active backend, promotion in rank order,
failback after a continuous hold (auto) or never by itself (manual), forced failover."""

from __future__ import annotations

import pytest

from haproxyd.failover.base import TriggerRefused

AP = {"strategy": "active_passive"}
PAIR = [{"id": "p1"}, {"id": "b1", "role": "backup"}]


def test_the_primary_is_the_one_active_backend_and_the_backup_is_the_retry_fallback(harness):
    h = harness(PAIR, **AP)
    assert h.active == ["p1"]
    assert h.fallback == "b1"
    assert set(h.served()) == {"p1"}
    assert h.kinds() == []  # the initial decision is not an event


def test_primary_failure_promotes_the_backup_at_once(harness):
    h = harness(PAIR, **AP)
    version = h.decision.version
    h.set("p1", "down")
    assert h.active == ["b1"]
    assert h.fallback is None  # nothing else is healthy
    assert h.decision.version == version + 1
    [event] = h.events.list()
    assert (event.kind, event.backend) == ("failover", "b1")
    assert event.details["previous"] == ["p1"] and event.details["active"] == ["b1"]
    assert "p1 up -> down" in event.reason


def test_promotion_follows_priority_then_config_order(harness):
    h = harness(
        [
            {"id": "p1", "priority": 5},
            {"id": "p2", "priority": 1},
            {"id": "b1", "role": "backup", "priority": 2},
            {"id": "b2", "role": "backup", "priority": 0},
            {"id": "b3", "role": "backup", "priority": 0},
        ],
        **AP,
    )
    order = []
    for _ in range(5):
        [active] = h.active
        order.append(active)
        h.set(active, "down")
    assert order == ["p2", "p1", "b2", "b3", "b1"]
    assert h.active == []
    assert h.kinds()[-1] == "outage"


def test_auto_failback_waits_for_failback_hold_of_continuous_health(harness):
    h = harness(PAIR, **AP, failback="auto", failback_hold=30, flap_hold=0)
    h.set("p1", "down")
    h.advance(5)
    h.set("p1", "up")
    h.advance(29)
    assert h.active == ["b1"], "failed back before the hold"
    # A relapse restarts the hold: health must be continuous.
    h.set("p1", "down")
    h.advance(1)
    h.set("p1", "up")
    h.advance(29.5)
    assert h.active == ["b1"]
    h.advance(0.5)  # the timer fires exactly at the end of the hold
    assert h.active == ["p1"]
    assert h.kinds() == ["failover", "failback"]
    assert h.fallback == "b1"


def test_manual_failback_never_returns_by_itself_only_on_trigger(harness):
    h = harness(PAIR, **AP, failback="manual", failback_hold=0)
    h.set("p1", "down")
    h.set("p1", "up")
    h.advance(3600)
    assert h.active == ["b1"]
    result = h.machine.trigger("web", target="primary", reason="primary repaired")
    assert result["active"] == ["p1"] and result["action"] == "failback"
    assert h.active == ["p1"]
    assert h.events.list()[0].reason == "primary repaired"
    assert h.events.list()[0].details["manual"] is True


def test_start_up_waits_for_the_primarys_first_verdict_instead_of_starting_on_the_backup(
    harness,
):
    h = harness(
        [{"id": "p1", "state": "checking"}, {"id": "b1", "role": "backup", "state": "checking"}],
        **AP,
        failback="manual",
    )
    h.set("b1", "up")  # the backup's probe answered first
    assert h.active == []
    h.set("p1", "up")
    assert h.active == ["p1"]
    assert h.kinds() == []  # start-up is not a failover


def test_start_up_with_a_dead_primary_goes_to_the_backup_once_the_verdict_is_in(harness):
    h = harness(
        [{"id": "p1", "state": "checking"}, {"id": "b1", "role": "backup", "state": "checking"}],
        **AP,
    )
    h.set("b1", "up")
    h.set("p1", "down")
    assert h.active == ["b1"]


def test_forced_failover_pins_the_backup_against_auto_failback(harness):
    h = harness(PAIR, **AP, failback="auto", failback_hold=0)
    result = h.machine.trigger("web", reason="maintenance of p1")
    assert result["action"] == "failover" and result["active"] == ["b1"]
    assert result["event"]["details"]["manual"] is True
    h.advance(3600)
    h.set("p1", "down")
    h.set("p1", "up")
    assert h.active == ["b1"], "auto failback undid an operator's failover"
    # The pin ends when the pinned backend fails.
    h.set("b1", "down")
    assert h.active == ["p1"]
    h.set("b1", "up")
    assert h.active == ["p1"]


def test_forced_failover_to_a_named_backend(harness):
    h = harness([{"id": "p1"}, {"id": "p2"}, {"id": "b1", "role": "backup"}], **AP)
    h.machine.trigger("web", backend="p2", reason="drain p1 soon")
    assert h.active == ["p2"]
    assert h.fallback == "p1"
    with pytest.raises(TriggerRefused, match="already the active"):
        h.machine.trigger("web", backend="p2")


@pytest.mark.parametrize(
    ("trigger", "match"),
    [
        ({"target": "backup"}, "no healthy backup"),
        ({"backend": "b1"}, "not healthy"),
        ({"backend": "nope"}, "no backend"),
        ({"target": "primary"}, "already the active"),
    ],
)
def test_refused_trigger_changes_nothing(harness, trigger, match):
    h = harness(PAIR, **AP)
    h.set("b1", "down")
    before = h.decision
    events = len(h.events)
    with pytest.raises(TriggerRefused, match=match):
        h.machine.trigger("web", **trigger)
    assert h.decision is before
    assert len(h.events) == events
    assert h.active == ["p1"]


def test_unknown_pool_is_a_key_error(harness):
    h = harness(PAIR, **AP)
    with pytest.raises(KeyError):
        h.machine.trigger("nope")


def test_drained_active_backend_hands_over(harness):
    h = harness(PAIR, **AP)
    h.set("p1", "draining")
    assert h.active == ["b1"]
    h.set("p1", "up")  # the operator's "ready": back like any recovered primary
    assert h.active == ["b1"]
    h.advance(30)  # the default failback_hold
    assert h.active == ["p1"]
