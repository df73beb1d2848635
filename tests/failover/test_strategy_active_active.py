"""active_active: every healthy primary; the backups only when no primary is healthy."""

from __future__ import annotations

import pytest

from haproxyd.failover.base import TriggerRefused

BACKENDS = [{"id": "p1"}, {"id": "p2"}, {"id": "b1", "role": "backup"}]


def test_backup_gets_nothing_until_every_primary_is_down(harness):
    h = harness(BACKENDS)
    assert h.active == ["p1", "p2"]
    assert h.served()["b1"] == 0
    h.set("p1", "down")
    assert h.active == ["p2"]
    assert h.fallback == "b1"  # the last primary standing: a retry may use the backup
    assert h.served()["b1"] == 0
    h.set("p2", "down")
    assert h.active == ["b1"]
    h.set("p1", "up")
    assert h.active == ["p1"]
    assert h.kinds() == ["update", "failover", "failback"]


def test_several_primaries_have_no_retry_fallback(harness):
    h = harness(BACKENDS)
    assert h.fallback is None  # redispatch among the primaries, never the backup


def test_forced_onto_the_backups_and_back(harness):
    h = harness(BACKENDS)
    result = h.machine.trigger("web", target="backup", reason="canary")
    assert result["active"] == ["b1"] and result["action"] == "failover"
    h.set("p1", "down")
    h.set("p1", "up")
    assert h.active == ["b1"]
    with pytest.raises(TriggerRefused, match="already forced"):
        h.machine.trigger("web", target="backup")
    result = h.machine.trigger("web", target="primary")
    assert result["active"] == ["p1", "p2"] and result["action"] == "failback"


def test_forced_backups_yield_when_they_fail(harness):
    h = harness(BACKENDS)
    h.machine.trigger("web", target="backup")
    h.set("b1", "down")
    assert h.active == ["p1", "p2"]


def test_trigger_refused_without_a_healthy_backup_or_with_a_backend_id(harness):
    h = harness([{"id": "p1"}])
    for kwargs, match in (({}, "no healthy backup"), ({"backend": "p1"}, "not a backend")):
        with pytest.raises(TriggerRefused, match=match):
            h.machine.trigger("web", **kwargs)
    assert h.kinds() == [] and h.decision.version == 1


def test_start_up_does_not_start_on_the_backup(harness):
    h = harness(
        [
            {"id": "p1", "state": "checking"},
            {"id": "b1", "role": "backup", "state": "checking"},
        ]
    )
    h.set("b1", "up")
    assert h.active == []
    h.set("p1", "down")
    assert h.active == ["b1"]
