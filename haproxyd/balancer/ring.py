"""consistent_hash: an mmh3 ring with virtual nodes, optionally with bounded loads.

Sources: D. Karger et al., "Consistent Hashing and Random Trees", STOC 1997, with
virtual nodes as in libketama and Envoy's ring hash (source/extensions/load_balancing_
policies/ring_hash/: an immutable ring rebuilt on host changes, points looked up by
binary search, ring statistics exported); bounded loads from V. Mirrokni, M. Thorup,
M. Zadimoghaddam, "Consistent Hashing with Bounded Loads", SODA 2018 (HAProxy's
`hash-balance-factor`).

- Ring: each backend gets `virtual_nodes` (default 160) points per unit of effective
  weight, 32-bit pieces of mmh3 hashes of `"<id>-<j>"`: derived from the backend id only, so every
  process, every node of a cluster and every restart builds the same ring. Equal points
  are ordered by id. The ring is rebuilt only when the membership or a weight changes
  (O(P log P) for P points, per-backend points cached: about 0.05 s of CPU for 1000
  backends of weight 1), never per request; at most MAX_POINTS points (virtual nodes
  per unit of weight are scaled down beyond that).
- Lookup: the key (`hash_key`, see `keys.py`; default `ip`) is hashed with mmh3 and the
  first point at or after it owns the request: O(log P) by binary search.
- Bounded load (`balance_factor` c >= 1): a backend of weight share s may hold at most
  ceil(c * (A + 1) * s) active requests, A being the pool's active requests (at most
  c * (A + 1) * s once the pool is loaded enough for that to be always possible, see
  `ConsistentHash.select`); a backend at its bound, full (`max_connections`) or ramping (slow
  start gate on a second hash of the key) passes the key to the next distinct backend
  along the ring. The walk is
  short while loads are bounded; it visits at most the whole ring when nearly every
  backend is full.
- A request without the key (header or cookie absent) goes to round robin instead of
  piling onto one backend.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import mmh3
from pydantic import Field, field_validator, model_validator

from haproxyd.balancer.base import Balancer, RequestContext, usable
from haproxyd.balancer.keys import ClientAddressOptions, UrlKeyOptions, make_key
from haproxyd.balancer.registry import register
from haproxyd.balancer.slow_start import SlowStart, SlowStartOptions
from haproxyd.balancer.state import Backend
from haproxyd.balancer.weighted_round_robin import WeightedRoundRobin
from haproxyd.config.fields import TOKEN_RE

DEFAULT_VIRTUAL_NODES = 160
MAX_POINTS = 1 << 19
GATE_SEED = 0x5EED

_hash32 = mmh3.hash
_hash128 = mmh3.hash128


def key_hash(key: bytes) -> int:
    """The ring position of a key: its 32-bit mmh3 hash (seed 0)."""
    return _hash32(key, 0, False)


def backend_points(backend_id: str, count: int) -> list[int]:
    """The first `count` ring points of a backend, a function of its id alone.

    Four 32-bit points per 128-bit mmh3 hash of `"<id>-<j>"` (libketama takes four per
    MD5 digest the same way); the points of a smaller count are a prefix of those of a
    larger one, so a weight change only adds or removes that backend's own points.
    """
    base = backend_id.encode()
    points: list[int] = []
    for j in range((count + 3) // 4):
        h = _hash128(base + b"-%d" % j, seed=0, signed=False)
        points += (h & 0xFFFFFFFF, (h >> 32) & 0xFFFFFFFF, (h >> 64) & 0xFFFFFFFF, h >> 96)
    del points[count:]
    return points


class Ring:
    """An immutable sorted ring of 32-bit points.

    Stored as one sorted list of integers `point << shift | rank`, `rank` being the owner's
    index in `backends` (sorted by id): a single integer sort orders the points, equal
    points by owner id, and a lookup is one binary search with no second list to read.

    The search is narrowed first by the top `32 - step` bits of the key's hash: `starts[b]`
    is the index of the first point of bucket b, with 4 to 8 points per bucket on
    average, so the binary search covers a handful of points instead of all of them: at
    1,000 backends (480,000 points at weights 1-5) that is 3 probes of the list instead of
    19, most of which would miss the CPU caches.
    """

    __slots__ = ("backends", "counts", "mask", "packed", "shift", "starts", "step")

    def __init__(
        self, packed: list[int], backends: list[Backend], shift: int, counts: dict[str, int]
    ) -> None:
        self.packed = packed
        self.backends = backends
        self.shift = shift
        self.mask = (1 << shift) - 1
        self.counts = counts  # backend id -> number of points
        bits = min(20, max(0, len(packed).bit_length() - 3))
        self.step = 32 - bits  # bucket of a 32-bit hash h: h >> step
        total = shift + self.step
        self.starts = [bisect_left(packed, b << total) for b in range(1 << bits)]
        self.starts.append(len(packed))

    @classmethod
    def build(
        cls,
        backends: Sequence[Backend],
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
        *,
        cache: dict[tuple[str, int], list[int]] | None = None,
    ) -> Ring:
        """A ring of `backends` with `virtual_nodes` points per unit of effective weight.

        `cache` maps (id, count) to points, kept by the caller across rebuilds.
        """
        ordered = sorted(backends, key=lambda b: b.id)
        total_weight = sum(b.effective_weight for b in ordered)
        per_weight = float(virtual_nodes)
        if total_weight * per_weight > MAX_POINTS:
            per_weight = MAX_POINTS / total_weight
        shift = max(1, len(ordered).bit_length())
        packed: list[int] = []
        counts: dict[str, int] = {}
        for rank, backend in enumerate(ordered):
            count = max(1, round(per_weight * backend.effective_weight))
            ident = (backend.id, count)
            points = cache.get(ident) if cache is not None else None
            if points is None:
                points = backend_points(backend.id, count)
                if cache is not None:
                    cache[ident] = points
            counts[backend.id] = count
            packed += [(p << shift) | rank for p in points]
        packed.sort()
        return cls(packed, ordered, shift, counts)

    def __len__(self) -> int:
        return len(self.packed)

    def index(self, position: int) -> int:
        """Index of the first point at or after `position` (wrapping): O(log P), and
        O(1) in the mean through the buckets."""
        bucket = position >> self.step
        starts = self.starts
        i = bisect_left(self.packed, position << self.shift, starts[bucket], starts[bucket + 1])
        return 0 if i == len(self.packed) else i

    def point(self, i: int) -> int:
        return self.packed[i] >> self.shift

    def owner_at(self, i: int) -> Backend:
        return self.backends[self.packed[i] & self.mask]

    def owner(self, key: bytes) -> Backend:
        return self.owner_at(self.index(key_hash(key)))

    def stats(self) -> dict[str, Any]:
        counts = self.counts.values()
        return {
            "ring_size": len(self.packed),
            "min_points_per_backend": min(counts, default=0),
            "max_points_per_backend": max(counts, default=0),
        }


def _positive_int(name: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


class ConsistentHashOptions(ClientAddressOptions, UrlKeyOptions, SlowStartOptions):
    """What consistent_hash reads: its key, the ring's density and the load bound (plus
    the options of the `ip` and `url` keys)."""

    hash_key: str | None = Field(
        None,
        description='consistent_hash input: "ip", "url", "header:NAME" or "cookie:NAME" '
        '(default "ip" for consistent_hash).',
    )
    virtual_nodes: int = Field(
        DEFAULT_VIRTUAL_NODES, ge=1, description="consistent_hash ring points per unit of weight."
    )
    balance_factor: float | None = Field(
        None,
        gt=1.0,
        description="Bounded-load consistent hashing: no backend above factor x average load.",
    )

    @model_validator(mode="before")
    @classmethod
    def _consistent_hash_default_key(cls, data: Any) -> Any:
        # The `balancer:` section holds every algorithm's options: the default key
        # applies only where this algorithm is the one chosen.
        if (
            isinstance(data, Mapping)
            and data.get("algorithm") == ConsistentHash.name
            and data.get("hash_key") is None
        ):
            return {**data, "hash_key": "ip"}
        return data

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, value: str | None) -> str | None:
        if value is None or value in ("ip", "url"):
            return value
        kind, sep, name = value.partition(":")
        if kind in ("header", "cookie") and sep and TOKEN_RE.fullmatch(name):
            return value
        raise ValueError(
            f"invalid hash_key {value!r}: expected ip, url, header:NAME or cookie:NAME"
        )


@register(ConsistentHashOptions)
class ConsistentHash(Balancer):
    name = "consistent_hash"

    def __init__(
        self,
        *,
        hash_key: str | None = None,
        virtual_nodes: int | None = None,
        balance_factor: float | None = None,
        hash_query: bool | None = None,
        trusted_proxies: Sequence[str] | None = None,
        slow_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(
            hash_key=hash_key,
            virtual_nodes=virtual_nodes,
            balance_factor=balance_factor,
            slow_start=slow_start,
            **options,
        )
        self._key = make_key(
            hash_key or "ip",
            hash_query=True if hash_query is None else bool(hash_query),
            trusted_proxies=trusted_proxies or (),
        )
        self.virtual_nodes = _positive_int("virtual_nodes", virtual_nodes, DEFAULT_VIRTUAL_NODES)
        if balance_factor is not None and (
            isinstance(balance_factor, bool)
            or not isinstance(balance_factor, int | float)
            or balance_factor < 1.0
        ):
            raise ValueError(f"balance_factor must be a number >= 1, not {balance_factor!r}")
        self.balance_factor = None if balance_factor is None else float(balance_factor)
        self._factor = self.balance_factor or 1.0
        self._ramp = SlowStart(slow_start, clock)
        self._fallback = WeightedRoundRobin(slow_start=slow_start, clock=clock)
        self._ring: Ring | None = None
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._cache: dict[tuple[str, int], list[int]] = {}
        self.ring_builds = 0
        # Bounded load: each member's weight share times the factor, and the pool's load.
        self._bound: dict[Backend, float] = {}
        self._load = 0

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        members = usable(backends)
        self.backends = members
        self._ramp.plan(members)
        self._fallback.rebuild(members)
        signature = tuple(sorted((b.id, b.effective_weight, id(b)) for b in members))
        if signature != self._signature:
            self._signature = signature
            if members:
                self._ring = Ring.build(members, self.virtual_nodes, cache=self._cache)
                # Keep only the points of current members (the cache stays bounded).
                counts = self._ring.counts
                self._cache = {k: v for k, v in self._cache.items() if counts.get(k[0]) == k[1]}
            else:
                self._ring = None
            self.ring_builds += 1
        factor = self.balance_factor
        if factor is not None and members:
            total = sum(b.effective_weight for b in members)
            self._bound = {b: factor * b.effective_weight / total for b in members}
            self._load = sum(b.active for b in members)
        else:
            self._bound = {}

    def select(self, ctx: RequestContext) -> Backend | None:
        ring = self._ring
        if ring is None:
            return None
        key = self._key(ctx)
        if key is None:
            return self._fallback.select(ctx)
        packed = ring.packed
        position = _hash32(key, 0, False)
        bucket = position >> ring.step
        starts = ring.starts  # `Ring.index`, inlined on the hot path
        i = bisect_left(packed, position << ring.shift, starts[bucket], starts[bucket + 1])
        if i == len(packed):
            i = 0
        backend = ring.backends[packed[i] & ring.mask]
        if (0 < backend.max_connections <= backend.active) or (
            self._ramp.since and backend in self._ramp.since
        ):
            return self._walk(key, i, ring)
        bound = self._bound
        if bound:
            # The load bound. The paper's rule is `active < ceil(c * (A + 1) * share)`.
            # Once the pool holds enough requests that some backend is sure to have a
            # whole request of room (c * (A + 1) - A >= n), the stricter
            # `active + 1 <= c * (A + 1) * share` is used: then after every placement
            # the chosen backend holds at most c times its share of the mean, not c
            # times plus a rounding. (`_walk` applies the same rule.)
            demand = self._load + 1
            limit = bound[backend] * demand
            if self._factor * demand - demand + 1 >= len(self.backends):
                if backend.active + 1 > limit:
                    return self._walk(key, i, ring)
            elif backend.active >= limit:
                return self._walk(key, i, ring)
        return backend

    def _walk(self, key: bytes, i: int, ring: Ring) -> Backend | None:
        """From point `i` on, the first distinct backend that may take the key; failing
        that, the first under the paper's (rounded) bound; failing that, the first that
        is not full. (The bound test of `select` is inlined: a quarter of the requests
        walk when the pool is loaded.)"""
        packed = ring.packed
        owners = ring.backends
        mask = ring.mask
        size = len(packed)
        members = len(owners)
        ramp = self._ramp
        bound = self._bound
        demand = self._load + 1
        strict = self._factor * demand - demand + 1 >= len(self.backends)
        seen: set[int] = set()
        fallback = None
        rounded = None
        gate = -1
        for step in range(size):
            rank = packed[(i + step) % size] & mask
            if rank in seen:
                continue
            seen.add(rank)
            backend = owners[rank]
            active = backend.active
            if not 0 < backend.max_connections <= active:
                if fallback is None:
                    fallback = backend
                admitted = True
                if ramp.since and backend in ramp.since:
                    if gate < 0:
                        gate = _hash32(key, GATE_SEED, False)
                    admitted = ramp.admit_key(backend, gate)
                if admitted:
                    if not bound:
                        return backend
                    limit = bound[backend] * demand
                    if active + 1 <= limit if strict else active < limit:
                        return backend
                    if rounded is None and active < limit:
                        rounded = backend
            if len(seen) == members:
                break
        return rounded if rounded is not None else fallback

    def on_start(self, backend: Backend) -> None:
        if self._bound and backend in self._bound:
            self._load += 1

    def on_finish(self, backend: Backend) -> None:
        if self._bound and backend in self._bound:
            self._load -= 1

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        if self._ring is not None:
            stats.update(self._ring.stats())
        stats["ring_builds"] = self.ring_builds
        stats["active"] = self._load if self._bound else None
        return stats
