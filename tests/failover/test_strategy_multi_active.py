"""multi_active: groups by `group` (else `region`); a group below min_healthy_share is
taken out and its traffic spills to the others in proportion to their weight."""

from __future__ import annotations

GROUPS = [
    {"id": "a1", "group": "A"},
    {"id": "a2", "group": "A"},
    {"id": "a3", "group": "A"},
    {"id": "b1", "group": "B", "weight": 2},
    {"id": "c1", "group": "C", "weight": 3},
]
MA = {"strategy": "multi_active", "min_healthy_share": 0.5}


def test_every_group_is_active_while_healthy_enough(harness):
    h = harness(GROUPS, **MA)
    assert h.active == ["a1", "a2", "a3", "b1", "c1"]
    h.set("a1", "down")  # A: 2/3 healthy, still >= 50%
    assert h.active == ["a2", "a3", "b1", "c1"]
    assert h.kinds() == ["update"]


def test_a_degraded_group_is_taken_out_and_spills_by_capacity(harness):
    h = harness(GROUPS, **MA)
    h.set("a1", "down")
    h.set("a2", "down")  # A: 1/3 < 50%: out, although a3 is healthy
    assert h.active == ["b1", "c1"]
    event = h.events.list()[0]
    assert event.kind == "failover" and "A (33%)" in event.reason
    assert h.decision.state["out"] == ["A"]
    h.set("a1", "up")
    assert h.active == ["a1", "a3", "b1", "c1"]
    assert h.kinds()[-1] == "failback"


def test_spill_proportions_with_a_weighted_balancer(harness):
    hw = harness(GROUPS, algorithm="weighted_round_robin", **MA)
    hw.set("a1", "down")
    hw.set("a2", "down")
    served = hw.served(500)
    assert served["a3"] == 0
    # B and C share A's traffic in proportion to their capacity (weights 2 and 3).
    assert served["b1"] == 200 and served["c1"] == 300


def test_groups_default_to_regions_and_no_qualifying_group_serves_all_healthy(harness):
    h = harness(
        [
            {"id": "e1", "region": "eu"},
            {"id": "e2", "region": "eu"},
            {"id": "u1", "region": "us"},
            {"id": "u2", "region": "us"},
        ],
        strategy="multi_active",
        min_healthy_share=0.75,
    )
    h.set("e1", "down")
    assert h.active == ["u1", "u2"]
    h.set("u1", "down")  # neither region qualifies any more
    assert h.active == ["e2", "u2"]
    h.set("e2", "down")
    h.set("u2", "down")
    assert h.active == []


def test_backups_only_when_no_primary_is_healthy(harness):
    h = harness(
        [{"id": "a1", "group": "A"}, {"id": "z1", "role": "backup"}],
        strategy="multi_active",
    )
    assert h.active == ["a1"]
    h.set("a1", "down")
    assert h.active == ["z1"]
