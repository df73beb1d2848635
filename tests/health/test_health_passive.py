"""Passive outlier detection: ejection, doubling, re-admission, max percent."""

from __future__ import annotations

from health_helpers import make_pool, passive, pool_config, wait_until

from haproxyd.balancer.state import BackendState
from haproxyd.health.passive import PassiveDetector


def detector(clock, n=4, **fields):
    pool = make_pool("p", list(range(9000, 9000 + n)))
    changes = []
    det = PassiveDetector(
        pool,
        passive(**fields),
        clock=clock,
        on_change=lambda bid, ejected, reason, duration: changes.append((bid, ejected, duration)),
    )
    return det, pool, changes


def fail(det, backend_id, times, ok=False, status=None):
    for _ in range(times):
        det.report(backend_id, ok, status)


def test_ejects_after_consecutive_failures_and_readmits(fake_clock):
    det, _, changes = detector(fake_clock, consecutive_failures=3, ejection=30)
    fail(det, "p-0", 2)
    det.report("p-0", True)  # a success resets the count
    fail(det, "p-0", 2)
    assert changes == []
    fail(det, "p-0", 1)
    assert changes == [("p-0", True, 30.0)]
    assert det.is_ejected("p-0")
    fake_clock.advance(29.9)
    assert det.tick() is not None and det.is_ejected("p-0")
    fake_clock.advance(0.1)
    assert det.tick() is None
    assert not det.is_ejected("p-0")
    assert changes[-1] == ("p-0", False, 0.0)


def test_ejection_time_doubles_on_repeat_offences_and_decays(fake_clock):
    det, _, changes = detector(fake_clock, consecutive_failures=2, ejection=10)
    durations = []
    for _ in range(4):
        fail(det, "p-0", 2)
        durations.append(changes[-1][2])
        fake_clock.advance(changes[-1][2])
        det.tick()
        fake_clock.advance(1)  # fails again soon after coming back
    assert durations == [10, 20, 40, 80]
    # Behaving for three ejection periods forgives three offences: 4 - 3 + 1 = 2.
    fake_clock.advance(30)
    fail(det, "p-0", 2)
    assert changes[-1][2] == 20


def test_ejection_time_is_capped(fake_clock):
    det, _, changes = detector(fake_clock, consecutive_failures=1, ejection=100)
    for _ in range(5):
        fail(det, "p-0", 1)
        fake_clock.advance(changes[-1][2])
        det.tick()
    assert [c[2] for c in changes if c[1]] == [100, 200, 300, 300, 300]


def test_never_ejects_more_than_max_percent(fake_clock):
    det, _, _changes = detector(fake_clock, n=4, consecutive_failures=1, max_ejection_percent=50)
    for backend_id in ("p-0", "p-1", "p-2", "p-3"):
        fail(det, backend_id, 1)
    assert sorted(det.ejected) == ["p-0", "p-1"]
    assert det.capped == 2
    # Once one is re-admitted, the next failure of a capped backend ejects it.
    fake_clock.advance(30)
    det.tick()
    fail(det, "p-2", 1)
    assert sorted(det.ejected) == ["p-2"]


def test_lone_backend_is_never_ejected_under_fifty_percent(fake_clock):
    det, _, changes = detector(fake_clock, n=1, consecutive_failures=1)
    fail(det, "p-0", 10)
    assert changes == []


def test_5xx_counts_only_with_on_5xx(fake_clock):
    det, _, changes = detector(fake_clock, consecutive_failures=2)
    fail(det, "p-0", 5, ok=True, status=503)
    assert changes == []
    det, _, changes = detector(fake_clock, consecutive_failures=2, on_5xx=True)
    fail(det, "p-0", 2, ok=True, status=503)
    assert changes and changes[0][:2] == ("p-0", True)
    assert "HTTP 503" in det.records["p-0"].last_reason


async def test_scheduler_applies_ejection_and_readmission(scheduler_factory):
    pool = make_pool("web", [9001, 9002, 9003, 9004])
    scheduler = scheduler_factory()
    events = []
    scheduler.subscribe(events.append)
    config = passive(consecutive_failures=3, ejection=0.2, max_ejection_percent=50)
    scheduler.update({"web": pool}, {"web": pool_config([], config)})
    await scheduler.start()
    b0 = pool.backends["web-0"]
    assert b0.state == BackendState.UP
    for _ in range(3):
        scheduler.report(b0, False)
    assert b0.state == BackendState.DOWN
    assert b0 not in pool.selectable
    assert events[-1].check == "passive" and events[-1].new == "ejected"
    assert scheduler.backend_health("web", "web-0")["ejected"]
    await wait_until(lambda: b0.state == BackendState.UP, 3.0, "re-admission")
    assert events[-1].new == "up" and b0 in pool.selectable
