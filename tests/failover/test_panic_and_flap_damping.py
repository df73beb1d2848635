"""Panic mode (Envoy's panic threshold) and flap damping, with a fake clock."""

from __future__ import annotations

from haproxyd.balancer.state import PanicSet

FOUR = [{"id": f"s{i}"} for i in range(1, 5)]


def test_panic_balances_over_every_backend_including_down_ones(harness):
    h = harness(FOUR, panic_threshold=50)
    h.set("s1", "down")
    assert h.active == ["s2", "s3", "s4"]  # 75% healthy: no panic
    h.set("s2", "down")
    assert h.active == ["s3", "s4"]  # 50% is not below 50%
    h.set("s3", "down")  # 25% < 50%: panic
    assert isinstance(h.pool.selectable, PanicSet) and h.decision.panic
    assert h.active == ["s1", "s2", "s3", "s4"]
    served = h.served(400)
    assert all(served[f"s{i}"] == 100 for i in range(1, 5)), served  # down ones too
    h.set("s3", "up")
    assert h.active == ["s3", "s4"] and not h.decision.panic
    assert h.kinds() == ["update", "update", "panic", "panic_end"]


def test_panic_never_includes_drained_or_maintenance_backends(harness):
    h = harness(FOUR, panic_threshold=60)
    h.set("s1", "maint")
    h.set("s2", "down")
    h.set("s3", "down")  # 1 of 3 eligible healthy
    assert h.active == ["s2", "s3", "s4"] and h.decision.panic


def test_on_panic_fail_serves_nothing(harness):
    h = harness(FOUR, panic_threshold=50, on_panic="fail")
    for backend in ("s1", "s2", "s3"):
        h.set(backend, "down")
    assert h.active == [] and h.decision.panic
    assert h.served(10) == {None: 10}
    h.set("s1", "up")
    assert h.active == ["s1", "s4"]


def test_flapping_backend_is_held_out_with_doubling_holds_up_to_the_cap(harness):
    h = harness(
        [{"id": "s1"}, {"id": "s2"}],
        flap_threshold=3,
        flap_window=60,
        flap_hold=10,
        flap_hold_max=40,
    )
    holds = []
    for _ in range(4):
        h.flip("s1", 3)  # down, up, down
        h.set("s1", "up")
        [event] = h.events.list(1, kind="flap_hold")
        holds.append(event.details["hold"])
        assert h.active == ["s2"], "a held backend took traffic"
        assert h.machine.describe("web")["held"] == ["s1"]
        h.advance(event.details["hold"])
        assert h.active == ["s1", "s2"]
    assert holds == [10, 20, 40, 40]
    # Quiet for longer than flap_hold_max: forgiven, back to the first hold.
    h.advance(41)
    h.flip("s1", 3)
    h.set("s1", "up")
    assert h.events.list(1, kind="flap_hold")[0].details["hold"] == 10


def test_still_flapping_at_the_end_of_a_hold_is_held_again(harness):
    h = harness([{"id": "s1"}, {"id": "s2"}], flap_threshold=3, flap_hold=10, flap_window=60)
    h.flip("s1", 3)
    h.flip("s1", 3)  # goes on flapping while held
    h.set("s1", "up")
    h.advance(10)
    [again, first] = h.events.list(2, kind="flap_hold")
    assert again.details["hold"] == 20 and first.details["hold"] == 10
    assert h.active == ["s2"]


def test_a_held_backend_still_serves_when_nothing_else_is_healthy(harness):
    h = harness([{"id": "s1"}, {"id": "s2"}], flap_threshold=3, flap_hold=10)
    h.flip("s1", 3)
    h.set("s1", "up")
    h.set("s2", "down")
    assert h.active == ["s1"]
    assert "flap hold overridden" in h.decision.reason


def test_flap_hold_zero_turns_damping_off(harness):
    h = harness([{"id": "s1"}, {"id": "s2"}], flap_threshold=2, flap_hold=0)
    h.flip("s1", 6)
    assert h.active == ["s1", "s2"]
    assert not h.events.list(kind="flap_hold")


def test_start_up_verdicts_are_not_flaps(harness):
    h = harness([{"id": "s1", "state": "checking"}, {"id": "s2"}], flap_threshold=2)
    h.set("s1", "up")
    h.set("s1", "down")  # one real change
    h.set("s1", "up")  # two: held
    assert h.events.list(kind="flap_hold")
    h2 = harness([{"id": "s1", "state": "checking"}, {"id": "s2"}], flap_threshold=2)
    h2.set("s1", "up")
    h2.set("s1", "down")
    assert not h2.events.list(kind="flap_hold")
