"""Map-based hashing, the base of `ip_hash` and `url_hash`.

Source: HAProxy's map-based hash (src/lb_map.c, the default `hash-type map-based` of
`balance source` and `balance uri`): the key's hash picks a slot of a table in which
each backend holds a share proportional to its weight. The table here is an alias table
(see `alias.py`): O(n) to build in `rebuild`, O(1) per lookup (one 32-bit mmh3 hash, one
comparison), whatever the weights. Backends are ordered by id, so every process of a
cluster maps a key to the same backend.

As in HAProxy, a change of the selectable set moves most keys; `consistent_hash` is the
algorithm that moves only about 1/n of them. A key whose backend is full or ramping up
(slow start gate on a second hash of the key) is hashed again with the next seed, up to
MAX_PROBES times, and then takes the first usable backend in id order from a place the
key picks (so it still sticks). A request without a key goes to round robin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mmh3

from haproxyd.balancer.alias import AliasTable
from haproxyd.balancer.base import Balancer, RequestContext, usable
from haproxyd.balancer.keys import KeyFunc
from haproxyd.balancer.slow_start import SlowStart
from haproxyd.balancer.state import Backend
from haproxyd.balancer.weighted_round_robin import WeightedRoundRobin

MAX_PROBES = 8
GATE_SEED = 0x5EED  # seed of the slow-start gate hash, independent of the lookup hash

_hash32 = mmh3.hash


class MapHash(Balancer):
    """Shared by `ip_hash` and `url_hash`; subclasses supply the key function."""

    def __init__(
        self,
        *,
        slow_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(slow_start=slow_start, **options)
        self._key = self.make_key(options)
        self._ramp = SlowStart(slow_start, clock)
        self._fallback = WeightedRoundRobin(slow_start=slow_start, clock=clock)
        self._table: AliasTable[Backend] | None = None

    def make_key(self, options: dict[str, Any]) -> KeyFunc:
        raise NotImplementedError

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        members = usable(backends)
        self.backends = members
        self._ramp.plan(members)
        self._fallback.rebuild(members)
        ordered = sorted(members, key=lambda b: b.id)
        self._table = (
            AliasTable(ordered, [b.effective_weight for b in ordered]) if ordered else None
        )

    def select(self, ctx: RequestContext) -> Backend | None:
        table = self._table
        if table is None:
            return None
        key = self._key(ctx)
        if key is None:
            return self._fallback.select(ctx)
        backend = table.lookup(_hash32(key, 0, False))
        if backend.full or (self._ramp.since and backend in self._ramp.since):
            return self._probe(key, backend, table)
        return backend

    def _probe(self, key: bytes, backend: Backend, table: AliasTable[Backend]) -> Backend | None:
        ramp = self._ramp
        gate = -1
        seed = 0
        while True:
            if not backend.full:
                if not ramp.since or backend not in ramp.since:
                    return backend
                if gate < 0:
                    gate = _hash32(key, GATE_SEED, False)
                if ramp.admit_key(backend, gate):
                    return backend
            seed += 1
            if seed > MAX_PROBES:
                break
            backend = table.lookup(_hash32(key, seed, False))
        # Nearly everything is full: the first usable backend in id order from a place
        # the key chooses, so the key still maps to one backend (O(n), rare).
        ordered = table.first
        start = _hash32(key, MAX_PROBES + 1, False) % len(ordered)
        for step in range(len(ordered)):
            backend = ordered[(start + step) % len(ordered)]
            if not backend.full:
                return backend
        return None
