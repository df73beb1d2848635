"""A settable monotonic clock to inject where the code under test takes `clock=`."""

from __future__ import annotations


class FakeClock:
    """`clock()` reads the time; it moves only by `advance(seconds)`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
