"""Least connections: fewest active requests divided by weight; ties rotate.

Source: HAProxy `balance leastconn` (src/lb_fwlc.c keeps servers in a tree keyed by
their load and reinserts one on every `take_conn/drop_conn`); Nginx `least_conn`
(compares `conns / weight` and breaks ties by weighted round robin).

Here the tree is a binary heap with lazy deletion: `on_start`/`on_finish` push the
backend's new entry and mark the old one stale, O(log n); `select` reads the top, O(1)
amortised (stale tops are popped; the heap is compacted when stale entries outnumber
live ones). A full backend (`max_connections`) leaves the heap until a request ends.

Entries are `[score, tag, seq, backend]`. Ties on the score go to the smaller tag, an
EDF deadline that advances by 1/weight each time the backend takes a request (start-time
fair queueing, Goyal et al., SIGCOMM 1996), so idle backends (score 0) share requests in
proportion to their weights, as Nginx's tie-breaking does; equal tags fall to the entry
pushed first, so equal backends rotate.

With `choices: d >= 2` the heap is replaced by power-of-d-choices sampling (see
`random_choice.py`): O(d) per selection and nothing to update per request, for very
large pools or many processes.

Slow start: the weight in the score is the ramped weight, refreshed RAMP_STEPS times
over the ramp (`SlowStart.retune_due`), not per request.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import Any

from haproxyd.balancer.base import Balancer, RequestContext, usable
from haproxyd.balancer.random_choice import ChoicesOptions, RandomChoice, parse_choices
from haproxyd.balancer.registry import register
from haproxyd.balancer.slow_start import SlowStart
from haproxyd.balancer.state import Backend

_heappush = heapq.heappush
_heappop = heapq.heappop
_heapreplace = heapq.heapreplace


class ScoredHeap(Balancer):
    """A heap of backends ordered by a score, lowest first, ties by EDF tag then age.

    The score is least connections' `active / weight` (computed in `_push`, not by a
    method call: it runs twice per request); `least_response_time.py` overrides `_push`
    with its own. A backend's score may change only when its own request starts or
    ends, at a rebuild or at a ramp step, when its entry is pushed again. Per member,
    `_rec` holds `[weight, tag, live entry or None, log(weight)]`.
    """

    def __init__(
        self,
        *,
        slow_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(slow_start=slow_start, **options)
        self._clock = clock
        self._ramp = SlowStart(slow_start, clock)
        self._heap: list[list[Any]] = []
        self._rec: dict[Backend, list[Any]] = {}
        self._vtime = 0.0
        self._seq = 0
        self._limit = 64

    # -- structure (rebuild and ramp steps) --

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        members = usable(backends)
        self.backends = members
        self._ramp.plan(members)
        old = self._rec
        self._rec = {}
        self._heap = []
        self._limit = 2 * len(members) + 64
        for b in members:
            weight = b.effective_weight * self._ramp.factor(b)
            prev = old.get(b)
            tag = prev[1] if prev is not None else self._vtime + 1.0 / weight
            rec = self._rec[b] = [weight, tag, None, math.log(weight), *self._extra(b, prev)]
            self._push(b, rec)

    def _extra(self, backend: Backend, prev: list[Any] | None) -> tuple[Any, ...]:
        """More per-member fields for a subclass, after the four of `_rec` (`prev`: the
        member's record before this rebuild, if it was one)."""
        return ()

    def _retune(self) -> None:
        """A ramp step: push ramping backends again with their current ramped weight."""
        for backend in list(self._ramp.since):
            rec = self._rec.get(backend)
            if rec is not None:
                rec[0] = backend.effective_weight * self._ramp.factor(backend)
                rec[3] = math.log(rec[0])
                self._push(backend, rec)

    def _push(self, backend: Backend, rec: list[Any]) -> None:
        """Replace `backend`'s heap entry, O(log n); a full backend gets none."""
        old = rec[2]
        if old is not None:
            old[3] = None
        active = backend.active
        if 0 < backend.max_connections <= active:
            rec[2] = None
            return
        self._seq = seq = self._seq + 1
        entry = rec[2] = [active / rec[0], rec[1], seq, backend]
        heap = self._heap
        if heap and heap[0] is old:
            # The usual case at a request's start: the backend just selected is the top.
            # One sift replaces it, where a push would leave a stale top for the next
            # `select` to pop (two O(log n) passes instead of one).
            _heapreplace(heap, entry)
            return
        _heappush(heap, entry)
        if len(heap) > self._limit:
            self._heap = heap = [e for e in heap if e[3] is not None]
            heapq.heapify(heap)

    # -- per request --

    def select(self, ctx: RequestContext | None) -> Backend | None:
        if self._ramp.since and self._ramp.retune_due():
            self._retune()
        heap = self._heap
        while heap:
            backend = heap[0][3]
            if backend is not None:
                return backend
            _heappop(heap)
        return None

    def on_start(self, backend: Backend) -> None:
        rec = self._rec.get(backend)
        if rec is None:
            return  # not a member (any more): nothing to update
        tag = rec[1]
        if tag < self._vtime:
            tag = self._vtime  # idle for a while: no burst to catch up
        self._vtime = tag
        rec[1] = tag + 1.0 / rec[0]
        self._push(backend, rec)

    def on_finish(self, backend: Backend) -> None:
        rec = self._rec.get(backend)
        if rec is not None:
            self._push(backend, rec)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["heap_entries"] = len(self._heap)
        return stats


@register(ChoicesOptions)
class LeastConnections(ScoredHeap):
    name = "least_connections"

    def __new__(cls, *, choices: int | None = None, **options: Any) -> Any:
        # `choices: d >= 2` selects the sampling variant: a different class, so neither
        # variant pays a per-request test for the other.
        if parse_choices(choices) >= 2:
            return SampledLeastConnections(choices=choices, **options)
        return super().__new__(cls)

    def __init__(self, *, choices: int | None = None, **options: Any) -> None:
        super().__init__(choices=choices, **options)


class SampledLeastConnections(RandomChoice):
    """`least_connections` with `choices: d >= 2`: power-of-d-choices, O(d)."""

    name = "least_connections"
