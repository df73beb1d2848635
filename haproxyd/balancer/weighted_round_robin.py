"""Smooth weighted round robin, the interleaving Nginx uses (weights 5,1,1 give
`a a b a c a a`, not `a a a a a b c`).

Source: Nginx `ngx_http_upstream_get_peer` (src/http/ngx_http_upstream_round_robin.c):
every round each peer's `current_weight` grows by its weight, the largest wins (the
first on ties) and loses the total weight. That loop is O(n) per selection, so here the
whole cycle (sum of weights / their gcd selections, after which the state is back to
zero) is computed once in `rebuild` and a selection is an O(1) step along it.

Computing the cycle: peers of equal weight are picked in turn in list order, so each
distinct weight is one group and a round compares one candidate per group: O(W * d) for
cycle length W and d distinct weights. When W * d is too large (many large distinct
weights) the cycle is replaced by Envoy's EDF scheduler (source/common/upstream/
edf_scheduler.h): same shares and smooth, O(log n) per selection, a different order.

Full backends (`max_connections`) and ramping ones (slow start) lose their turn; the
position along the cycle survives rebuilds so frequent changes do not favour the first
backend of the cycle.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from haproxyd.balancer.base import Balancer, RequestContext, usable
from haproxyd.balancer.registry import register
from haproxyd.balancer.slow_start import SlowStart, SlowStartOptions
from haproxyd.balancer.state import Backend

CYCLE_BUDGET = 1_000_000  # W * d steps allowed to precompute the cycle in `rebuild`


def int_weights(backends: Sequence[Backend]) -> list[int]:
    """Effective weights as positive integers (a fractional weight rounds, 1 at least)."""
    return [max(1, round(b.effective_weight)) for b in backends]


def smooth_cycle(weights: Sequence[int], budget: int = CYCLE_BUDGET) -> list[int] | None:
    """One full cycle of Nginx's smooth weighted round robin, as indexes into `weights`.

    Equal to running Nginx's loop sum(weights)/gcd times from zero current weights.
    None when the cycle would cost more than `budget` steps to compute.
    """
    n = len(weights)
    if n == 0:
        return []
    if any(w <= 0 for w in weights):
        raise ValueError("smooth_cycle needs positive weights")
    g = math.gcd(*weights)
    ws = [w // g for w in weights]
    total = sum(ws)
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(ws):
        groups.setdefault(w, []).append(i)
    if len(groups) == 1:
        return list(range(n))  # equal weights: plain rotation
    if total * len(groups) > budget:
        return None
    gw = list(groups)
    members = [groups[w] for w in gw]
    sizes = [len(m) for m in members]
    picks = [0] * len(gw)  # selections made in each group so far
    order = range(len(gw))
    cycle: list[int] = []
    append = cycle.append
    for t in range(1, total + 1):
        # Candidate of group j: its next member in turn, current weight t*w - total*k.
        best_j = -1
        best_v = 0
        best_i = 0
        for j in order:
            c = picks[j]
            size = sizes[j]
            v = t * gw[j] - total * (c // size)
            i = members[j][c % size]
            if best_j < 0 or v > best_v or (v == best_v and i < best_i):
                best_j, best_v, best_i = j, v, i
        picks[best_j] += 1
        append(best_i)
    return cycle


def nginx_sequence(weights: Sequence[int], count: int) -> list[int]:
    """Nginx's O(n)-per-pick loop, verbatim, for tests and the EDF comparison."""
    current = [0] * len(weights)
    total = sum(weights)
    out: list[int] = []
    for _ in range(count):
        best = -1
        for i, w in enumerate(weights):
            current[i] += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return out


@register(SlowStartOptions)
class WeightedRoundRobin(Balancer):
    name = "weighted_round_robin"
    cycle_budget = CYCLE_BUDGET  # W * d steps allowed in `rebuild` (tests lower it)

    def __init__(
        self,
        *,
        slow_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(slow_start=slow_start, **options)
        self._ramp = SlowStart(slow_start, clock)
        self._cycle: tuple[Backend, ...] = ()
        self._pos = 0
        # EDF fallback: heap of [deadline, rank, backend, 1/weight].
        self._edf: list[list[Any]] | None = None

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        members = usable(backends)
        self.backends = members
        self._ramp.plan(members)
        old_len = len(self._cycle)
        order = smooth_cycle(int_weights(members), self.cycle_budget)
        if order is None:
            self._cycle = ()
            weights = int_weights(members)
            self._edf = [
                [1.0 / w, rank, b, 1.0 / w]
                for rank, (b, w) in enumerate(zip(members, weights, strict=True))
            ]
            heapq.heapify(self._edf)
            return
        self._edf = None
        cycle = tuple(members[i] for i in order)
        # Keep the relative position so that a rebuild does not restart the cycle.
        self._pos = (self._pos * len(cycle)) // old_len if old_len and cycle else 0
        self._cycle = cycle

    def select(self, ctx: RequestContext | None) -> Backend | None:
        cycle = self._cycle
        n = len(cycle)
        if n == 0:
            return self._select_edf() if self._edf else None
        pos = self._pos
        ramp = self._ramp.since
        fallback = None
        for _ in range(n):
            backend = cycle[pos]
            pos += 1
            if pos == n:
                pos = 0
            if backend.full:
                continue
            if ramp and backend in ramp and not self._ramp.admit(backend):
                if fallback is None:
                    fallback = backend
                continue
            self._pos = pos
            return backend
        self._pos = pos
        return fallback

    def _select_edf(self) -> Backend | None:
        heap = self._edf
        assert heap is not None
        ramp = self._ramp.since
        fallback = None
        for _ in range(len(heap)):
            entry = heap[0]
            backend = entry[2]
            entry[0] += entry[3]
            heapq.heapreplace(heap, entry)
            if backend.full:
                continue
            if ramp and backend in ramp and not self._ramp.admit(backend):
                if fallback is None:
                    fallback = backend
                continue
            return backend
        return fallback

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["cycle_length"] = len(self._cycle)
        stats["scheduler"] = "edf" if self._edf is not None else "smooth_cycle"
        return stats
