"""Least response time: lowest EWMA response time x (active + 1), per unit of weight.

Sources: Finagle's and Linkerd's "Peak EWMA" balancer (the latency estimate decays with
the time since its last sample, so a backend that was slow once is tried again) and
Nginx Plus `least_time` (latency and active connections together).

Score of backend b at time `now`:

    ewma_b * exp(-(now - t_b) / DECAY) * (active_b + 1) / weight_b

where `ewma_b` is the pool's `Backend.ewma` (the one place latency lives) and `t_b` the
time its last request ended (a failed one too: it brings no latency sample, but a
failing backend should not drift back into favour by decay alone). The decay factor
`exp(-now / DECAY)` is common to every backend, so the ordering only depends on

    log(ewma_b) + t_b / DECAY + log(active_b + 1) - log(weight_b)

which changes only when the backend's own request starts or ends: the heap of
`least_connections.py` applies, O(log n) per request, O(1) per selection. A backend
without a sample yet (new) is scored with the mean EWMA of those that have one: a fair
start, neither flooded (an EWMA of zero would attract everything until its first
answer) nor starved. Those backends wait in a second heap keyed without the mean (the
same term for all of them), so a new mean costs nothing; `select` compares both tops.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import Any

from haproxyd.balancer.base import RequestContext
from haproxyd.balancer.least_connections import ScoredHeap
from haproxyd.balancer.random_choice import ChoicesOptions
from haproxyd.balancer.registry import register
from haproxyd.balancer.state import Backend

DECAY = 10.0  # seconds: an estimate not refreshed shrinks by e every DECAY (as Linkerd)
DEFAULT_EWMA = 0.1  # seconds: the estimate used before any backend has a sample

_log = math.log
_LOG1P_SIZE = 4096
_LOG1P = [math.log(i + 1) for i in range(_LOG1P_SIZE)]  # log(active + 1), precomputed
_heappush = heapq.heappush
_heappop = heapq.heappop
_heapreplace = heapq.heapreplace


@register(ChoicesOptions)
class LeastResponseTime(ScoredHeap):
    name = "least_response_time"

    def __init__(
        self,
        *,
        slow_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        decay: float = DECAY,
        **options: Any,
    ) -> None:
        if decay <= 0:
            raise ValueError("decay must be positive")
        self._decay = float(decay)
        self._inverse_decay = 1.0 / self._decay
        # A member's record (`ScoredHeap._rec`) carries, after its four fields, the EWMA
        # of its last sample (0.0: none yet) and log(EWMA) + t_b / DECAY (None: none).
        # The sum of those EWMAs and the count of members with one, kept O(1).
        self._ewma_sum = 0.0
        self._sampled = 0
        self._now = 0.0  # the clock at the rebuild in progress
        self._log_mean = _log(DEFAULT_EWMA)
        self._mean_stale = False  # samples changed since `_log_mean` was computed
        # Members without a sample wait in their own heap, scored without the mean's log
        # (common to all of them), so that a new mean needs no re-push.
        self._fresh: list[list[Any]] = []
        super().__init__(slow_start=slow_start, clock=clock, **options)

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        self._now = self._clock()
        self._fresh = []
        super().rebuild(backends)
        sampled = [rec[4] for rec in self._rec.values() if rec[5] is not None]
        self._ewma_sum = sum(sampled)
        self._sampled = len(sampled)
        self._update_mean()

    def _extra(self, backend: Backend, prev: list[Any] | None) -> tuple[Any, ...]:
        ewma = backend.ewma
        if ewma <= 0.0:
            return (0.0, None)
        if prev is not None and prev[4] == ewma:
            return (ewma, prev[5])  # the same sample: its age carries over
        return (ewma, _log(ewma) + self._now * self._inverse_decay)

    def _update_mean(self) -> None:
        count = self._sampled
        mean = self._ewma_sum / count if count else 0.0
        self._log_mean = _log(mean) if mean > 0.0 else _log(DEFAULT_EWMA)
        self._mean_stale = False

    def _push(self, backend: Backend, rec: list[Any]) -> None:
        old = rec[2]
        if old is not None:
            old[3] = None
        active = backend.active
        if 0 < backend.max_connections <= active:
            rec[2] = None
            return
        base = rec[5]
        weight_term = (_LOG1P[active] if active < _LOG1P_SIZE else _log(active + 1)) - rec[3]
        self._seq = seq = self._seq + 1
        if base is None:
            heap = self._fresh
            key = self._clock() * self._inverse_decay + weight_term
        else:
            heap = self._heap
            key = base + weight_term
        entry = rec[2] = [key, rec[1], seq, backend]
        if heap and heap[0] is old:
            _heapreplace(heap, entry)  # the top replaced in one sift (least_connections.py)
            return
        _heappush(heap, entry)
        if len(heap) > self._limit:
            heap[:] = [e for e in heap if e[3] is not None]
            heapq.heapify(heap)

    def select(self, ctx: RequestContext | None) -> Backend | None:
        if self._ramp.since and self._ramp.retune_due():
            self._retune()
        heap = self._heap
        while heap and heap[0][3] is None:
            _heappop(heap)
        fresh = self._fresh
        while fresh and fresh[0][3] is None:
            _heappop(fresh)
        if not fresh:
            return heap[0][3] if heap else None
        if not heap:
            return fresh[0][3]
        sampled, new = heap[0], fresh[0]
        if self._mean_stale:
            self._update_mean()  # only when a new backend competes: not per request
        key = new[0] + self._log_mean
        if key < sampled[0] or (key == sampled[0] and new[1] < sampled[1]):
            return new[3]
        return sampled[3]

    def on_finish(self, backend: Backend) -> None:
        rec = self._rec.get(backend)
        if rec is None:
            return  # not a member (any more): nothing to update
        ewma = backend.ewma
        if ewma > 0.0:
            if rec[5] is None:
                self._sampled += 1
            self._ewma_sum += ewma - rec[4]
            rec[4] = ewma
            rec[5] = _log(ewma) + self._clock() * self._inverse_decay
            self._mean_stale = True
        self._push(backend, rec)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["heap_entries"] += len(self._fresh)
        if self._mean_stale:
            self._update_mean()
        stats["mean_ewma"] = math.exp(self._log_mean) if self._sampled else None
        return stats
