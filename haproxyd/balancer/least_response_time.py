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

from haproxyd.balancer.base import RequestContext, register, usable
from haproxyd.balancer.least_connections import ScoredHeap
from haproxyd.balancer.state import Backend

DECAY = 10.0  # seconds: an estimate not refreshed shrinks by e every DECAY (as Linkerd)
DEFAULT_EWMA = 0.1  # seconds: the estimate used before any backend has a sample

_log = math.log
_LOG1P_SIZE = 4096
_LOG1P = [math.log(i + 1) for i in range(_LOG1P_SIZE)]  # log(active + 1), precomputed
_heappush = heapq.heappush
_heappop = heapq.heappop
_heapreplace = heapq.heapreplace


@register
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
        # member -> (its EWMA, log(EWMA) + t_b / DECAY) at its last sample; the sum of
        # those EWMAs, kept O(1).
        self._sample: dict[Backend, tuple[float, float]] = {}
        self._ewma_sum = 0.0
        self._log_mean = _log(DEFAULT_EWMA)
        self._mean_stale = False  # samples changed since `_log_mean` was computed
        # Members without a sample wait in their own heap, scored without the mean's log
        # (common to all of them), so that a new mean needs no re-push.
        self._fresh: list[list[Any]] = []
        super().__init__(slow_start=slow_start, clock=clock, **options)

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        now = self._clock()
        sample: dict[Backend, tuple[float, float]] = {}
        for b in usable(backends):
            if b.ewma > 0.0:
                old = self._sample.get(b)
                base = _log(b.ewma) + now / self._decay
                sample[b] = old if old is not None and old[0] == b.ewma else (b.ewma, base)
        self._sample = sample
        self._ewma_sum = sum(e for e, _ in sample.values())
        self._update_mean()
        self._fresh = []
        super().rebuild(backends)

    def _update_mean(self) -> None:
        count = len(self._sample)
        mean = self._ewma_sum / count if count else 0.0
        self._log_mean = _log(mean) if mean > 0.0 else _log(DEFAULT_EWMA)
        self._mean_stale = False

    def _push(self, backend: Backend, rec: list[Any], base: float | None = None) -> None:
        """`base`: the backend's log(EWMA) + t_b / DECAY when the caller has it."""
        old = rec[2]
        if old is not None:
            old[3] = None
        active = backend.active
        if 0 < backend.max_connections <= active:
            rec[2] = None
            return
        if base is None:
            sample = self._sample.get(backend)
            if sample is not None:
                base = sample[1]
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
        if ewma <= 0.0:
            self._push(backend, rec)
            return
        samples = self._sample
        old = samples.get(backend)
        self._ewma_sum += ewma - (old[0] if old is not None else 0.0)
        base = _log(ewma) + self._clock() * self._inverse_decay
        samples[backend] = (ewma, base)
        self._mean_stale = True
        self._push(backend, rec, base)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["heap_entries"] += len(self._fresh)
        if self._mean_stale:
            self._update_mean()
        stats["mean_ewma"] = math.exp(self._log_mean) if self._sample else None
        return stats
