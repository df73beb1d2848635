"""The probe loops' timer wheel (haproxyd/health/wheel.py) on a real event loop:
sleepers of one grid slot wake together, never early and at most one slot late;
resolving or cancelling a sleeper early is harmless."""

from __future__ import annotations

import asyncio
import math

from haproxyd.health.wheel import TimerWheel

GRID = 0.02


async def test_sleepers_of_one_slot_wake_in_one_loop_iteration_never_early():
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(GRID)
    now = loop.time()
    boundary = math.ceil((now + 0.05) / GRID) * GRID  # a slot ends here
    delays = [boundary - now - gap for gap in (0.015, 0.01, 0.005, 0.001)]  # all in it
    futures = [wheel.sleeper(d) for d in delays]
    together: list[bool] = []
    # When the first wakes, so have the others: one loop iteration, not four timers.
    futures[0].add_done_callback(lambda _f: together.append(all(f.done() for f in futures)))
    await asyncio.gather(*futures)
    assert together == [True]
    assert loop.time() >= boundary - 0.001, "woke before the slot's end (early)"
    assert loop.time() - now <= max(delays) + GRID + 0.05, "woke more than a slot late"
    assert len(wheel) == 0


async def test_a_later_slot_waits_for_its_own_time():
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(GRID)
    start = loop.time()
    early, late = wheel.sleeper(0.01), wheel.sleeper(0.2)
    await early
    assert not late.done()
    await late
    assert loop.time() - start >= 0.2 - 0.001


async def test_resolving_or_cancelling_early_is_harmless():
    wheel = TimerWheel(GRID)
    woken, cancelled, kept = wheel.sleeper(0.05), wheel.sleeper(0.05), wheel.sleeper(0.05)
    woken.set_result(None)
    cancelled.cancel()
    await kept  # the slot still fires for the one left
    assert woken.done() and cancelled.cancelled() and kept.done()
    assert len(wheel) == 0
