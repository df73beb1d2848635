"""A timer wheel for the probe loops: one timer a slot, not one per probe.

Every session of the scheduler sleeps between probes. With a timer each (uvloop's
`call_at`: a handle and a libuv timer per call), 1,000 backends probed every second
cost 1,000 timer set-ups a second, a tenth of the prober's CPU. Here a sleeper joins
the slot of a coarse grid (`grid` seconds) its wake-up time falls in, rounded up, and
one timer per occupied slot wakes the whole slot in one loop iteration. Precision is
the grid: a probe starts at most `grid` late, never early.

Runs on the event loop of the scheduler that owns it; not thread-safe.
"""

from __future__ import annotations

import asyncio
import math


class TimerWheel:
    def __init__(self, grid: float) -> None:
        self.grid = grid
        self._slots: dict[int, list[asyncio.Future[None]]] = {}  # a timer armed for each
        self._loop: asyncio.AbstractEventLoop | None = None

    def sleeper(self, delay: float) -> asyncio.Future[None]:
        """A future resolved when the slot holding now + `delay` is due. Resolving or
        cancelling it earlier (a session woken up, or stopped) is fine."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        slot = math.ceil((loop.time() + delay) / self.grid)
        future: asyncio.Future[None] = loop.create_future()
        waiters = self._slots.get(slot)
        if waiters is None:
            self._slots[slot] = [future]
            loop.call_at(slot * self.grid, self._fire, slot)
        else:
            waiters.append(future)
        return future

    def _fire(self, slot: int) -> None:
        for future in self._slots.pop(slot):
            if not future.done():
                future.set_result(None)

    def __len__(self) -> int:
        """Sleepers waiting (including those already woken another way)."""
        return sum(len(w) for w in self._slots.values())
