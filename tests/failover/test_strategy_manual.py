"""manual: only the trigger (or the config) moves traffic; health events are recorded
for an operator; within the designated set only healthy backends serve."""

from __future__ import annotations

import pytest

from haproxyd.failover.base import TriggerRefused

MANUAL = {"strategy": "manual"}
BACKENDS = [{"id": "p1"}, {"id": "p2"}, {"id": "b1", "role": "backup"}]


def test_health_events_are_recorded_but_traffic_does_not_move(harness):
    h = harness(BACKENDS, **MANUAL)
    assert h.active == ["p1", "p2"]
    h.set("p1", "down")
    assert h.active == ["p2"]  # within the designated set only healthy ones serve
    h.set("p2", "down")
    assert h.active == [], "a manual pool moved to its backup by itself"
    assert h.fallback is None
    events = h.events.list()
    assert [e.kind for e in events] == ["health", "health"]
    assert all(e.details["needs_operator"] for e in events)
    assert events[0].backend == "p2" and events[0].details["serving"] == []
    h.set("b1", "down")
    h.set("b1", "up")  # even a backup's health changes are reported
    assert h.kinds() == ["health"] * 4


def test_trigger_moves_traffic_and_nothing_moves_it_back(harness):
    h = harness(BACKENDS, **MANUAL, failback="auto", failback_hold=0)
    result = h.machine.trigger("web", target="backup", reason="planned")
    assert result["active"] == ["b1"]
    h.advance(3600)
    assert h.active == ["b1"]
    h.set("b1", "down")
    assert h.active == []  # the designated backup is down: 503, no automatic move
    h.set("b1", "up")
    h.machine.trigger("web", backend="p2")
    assert h.active == ["p2"]
    h.machine.trigger("web", target="primary")
    assert h.active == ["p1", "p2"]


def test_refused_triggers_change_nothing(harness):
    h = harness(BACKENDS, **MANUAL)
    h.set("b1", "down")
    before, count = h.decision, len(h.events)
    for kwargs, match in (
        ({"target": "backup"}, "no healthy backup"),
        ({"target": "primary"}, "already designates"),
        ({"backend": "b1"}, "is down"),
    ):
        with pytest.raises(TriggerRefused, match=match):
            h.machine.trigger("web", **kwargs)
    assert h.decision is before and len(h.events) == count
