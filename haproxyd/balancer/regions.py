"""Multi-region balancing: serve a request in its client's region, spill when it is
degraded, fail over when it is down (the seed's MultiRegionLoadBalancer).

Source: Envoy's zone-aware routing and priority spill-over (a locality below its
threshold keeps only part of its traffic), with locality weights. It composes: one
inner balancer of the pool's algorithm per region (`make_inner`), so hashing,
least-connections, slow start... work within a region as they do in a plain pool.

The client's region is, first found: the `client_region.header` request header, the
`client_region.cidrs` network the client address is in, the node's `node.region`. A
backend without `region` counts as in the node's region.

Each region `r` has a healthy share `s_r`: the weight of its selectable backends over
the weight of all its backends that are not draining or in maintenance (its capacity).
For a client in region `L` with `prefer_local: true`:

    local = 1                      if s_L >= spill_threshold (or the threshold is 0)
          = s_L / spill_threshold  below it (Envoy's "keep min(1, share / threshold)")
    every other region r gets (1 - local) * w_r * s_r / sum(w_o * s_o, o != L)

with `w_r = weights[r]` (default 1). So at half the threshold half the traffic stays
local; a region with nothing healthy keeps none and everything fails over to the
others. With nowhere to spill (no other healthy region) it all stays local. A client
of unknown region, or `prefer_local: false`, is spread over all regions by
`w_r * s_r`. (When every other region has weight 0, weight-0 regions still take spill
by share alone: a last resort rather than a 503.)

The split is deterministic (smooth weighted round robin over the regions, as Nginx
does over servers), so proportions hold exactly over each cycle. Everything is
computed in `rebuild` (O(n + R^2) for R regions), nothing per request but one header
lookup or one cached address lookup, one dict lookup and an O(R) rotation step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from haproxyd.balancer.base import Balancer, RequestContext, usable
from haproxyd.balancer.state import BackendState, PanicSet

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend, Pool
    from haproxyd.config.schema import RegionsConfig

UNLABELLED = ""  # the region key of backends without a region on a node without one
IP_CACHE_SIZE = 4096
_ADMIN = (BackendState.DRAINING, BackendState.MAINT)


class _Route:
    """Where the requests of one client region go: target regions with their shares,
    picked by smooth weighted round robin (deterministic, exact over a cycle). When the
    picked region's backends are all at `max_connections`, the other targets and then
    the `overflow` regions are tried in order (rather than queue while another region
    has room)."""

    __slots__ = ("balancers", "current", "overflow", "shares", "single", "total")

    def __init__(
        self, targets: list[tuple[Balancer, float]], overflow: list[Balancer] | None = None
    ) -> None:
        targets = [(b, w) for b, w in targets if w > 0]
        targets.sort(key=lambda t: -t[1])
        self.balancers = [b for b, _ in targets]
        self.shares = [w for _, w in targets]
        self.total = sum(self.shares)
        self.current = [0.0] * len(targets)
        self.single = self.balancers[0] if len(targets) == 1 else None
        self.overflow = [b for b in overflow or () if b not in self.balancers]

    def select(self, ctx: RequestContext) -> Backend | None:
        single = self.single
        if single is not None:
            backend = single.select(ctx)
            if backend is not None or not self.overflow:
                return backend
            return self._overflow(ctx, -1)
        balancers = self.balancers
        if not balancers:
            return None
        current = self.current
        shares = self.shares
        best = 0
        for i in range(len(current)):
            current[i] += shares[i]
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        backend = balancers[best].select(ctx)
        if backend is not None:
            return backend
        return self._overflow(ctx, best)

    def _overflow(self, ctx: RequestContext, tried: int) -> Backend | None:
        for i, inner in enumerate(self.balancers):
            if i != tried:
                backend = inner.select(ctx)
                if backend is not None:
                    return backend
        for inner in self.overflow:
            backend = inner.select(ctx)
            if backend is not None:
                return backend
        return None


class RegionBalancer(Balancer):
    """Not in the algorithm registry: the runtime builds it for pools with `regions:`."""

    name = "regions"

    def __init__(
        self,
        make_inner: Callable[[], Balancer],
        config: RegionsConfig,
        *,
        node_region: str | None = None,
    ) -> None:
        super().__init__()
        self._make_inner = make_inner
        self.config = config
        self.node_region = node_region
        header = config.client_region.header
        self._header = header.lower().encode("latin-1") if header else None
        networks = []
        for region, cidrs in config.client_region.cidrs.items():
            for cidr in cidrs:
                networks.append((ipaddress.ip_network(cidr, strict=False), region))
        # Longest prefix first, so the most specific network wins.
        networks.sort(key=lambda item: -item[0].prefixlen)
        self._networks = networks
        self._ip_cache: dict[str, str | None] = {}
        self._pool: Pool | None = None
        self.inner: dict[str, Balancer] = {}  # region -> its balancer (kept across rebuilds)
        self._region_of: dict[Backend, Balancer] = {}
        self.shares: dict[str, float] = {}
        self._routes: dict[str | None, _Route] = {None: _Route([])}

    def attach(self, pool: Pool) -> None:
        self._pool = pool

    def region(self, backend: Backend) -> str:
        return backend.region or self.node_region or UNLABELLED

    # -- rebuild: every share and route is computed here --

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        panic = isinstance(backends, PanicSet)
        members = usable(backends)
        self.backends = members
        by_region: dict[str, list[Backend]] = {}
        for backend in members:
            by_region.setdefault(self.region(backend), []).append(backend)
        capacity: dict[str, int] = {}
        everyone = self._pool.backends.values() if self._pool is not None else members
        for backend in everyone:
            if backend.state not in _ADMIN and backend.effective_weight > 0:
                key = self.region(backend)
                capacity[key] = capacity.get(key, 0) + backend.weight
        self._region_of = {}
        shares: dict[str, float] = {}
        for region in set(self.inner) | set(by_region):
            inner = self.inner.get(region)
            if inner is None:
                inner = self.inner[region] = self._make_inner()
            chosen = by_region.get(region, [])
            inner.rebuild(PanicSet(chosen) if panic else tuple(chosen))
            for backend in chosen:
                self._region_of[backend] = inner
            if chosen:
                weight = sum(b.weight for b in chosen)
                total = capacity.get(region, 0)
                shares[region] = min(1.0, weight / total) if total else 1.0
        self.shares = shares
        routes: dict[str | None, _Route] = {None: _Route(self._spread(None))}
        for region in set(capacity) | set(shares) | set(self.config.weights):
            routes[region] = self._route(region)
        self._routes = routes

    def _weight(self, region: str) -> float:
        return float(self.config.weights.get(region, 1.0))

    def _spread(self, exclude: str | None) -> list[tuple[Balancer, float]]:
        """Every healthy region but `exclude`, by weight x healthy share, summing to 1
        (weight-0 regions only when nothing else has weight)."""
        others = {r: s for r, s in self.shares.items() if r != exclude}
        weighted = {r: self._weight(r) * s for r, s in others.items()}
        total = sum(weighted.values())
        if total <= 0:
            weighted = dict(others)
            total = sum(weighted.values())
        if total <= 0:
            return []
        return [(self.inner[r], w / total) for r, w in weighted.items()]

    def _route(self, region: str) -> _Route:
        if not self.config.prefer_local:
            return _Route(self._spread(None))
        share = self.shares.get(region, 0.0)
        threshold = self.config.spill_threshold
        if share <= 0:
            local = 0.0
        elif threshold <= 0 or share >= threshold:
            local = 1.0
        else:
            local = share / threshold
        others = self._spread(region)
        overflow = [inner for inner, _ in sorted(others, key=lambda t: -t[1])]
        spill = [(inner, (1.0 - local) * share) for inner, share in others] if local < 1 else []
        if not spill:
            return _Route([(self.inner[region], 1.0)] if local > 0 else [], overflow)
        return _Route([(self.inner[region], local), *spill] if local > 0 else spill, overflow)

    # -- per request --

    def client_region(self, ctx: RequestContext) -> str | None:
        if self._header is not None:
            value = ctx.header(self._header)
            if value:
                return value.decode("latin-1").strip()
        if self._networks:
            ip = ctx.client_ip
            cache = self._ip_cache
            if ip in cache:
                found = cache[ip]
            else:
                found = self._lookup(ip)
                if len(cache) >= IP_CACHE_SIZE:
                    cache.clear()
                cache[ip] = found
            if found is not None:
                return found
        return self.node_region

    def _lookup(self, ip: str) -> str | None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for network, region in self._networks:
            if address.version == network.version and address in network:
                return region
        return None

    def select(self, ctx: RequestContext) -> Backend | None:
        region = self.client_region(ctx)
        route = self._routes.get(region)
        if route is None:
            route = self._routes[None]
        return route.select(ctx)

    def select_avoiding(self, ctx: RequestContext, tried: list[Backend]) -> Backend | None:
        """For a retry: stay in the request's region while it has a candidate that has
        not failed this request; once all of them have, leave it, for the regions its
        route would spill to, in order, then any other. Health checks take a while to
        mark a dead region down; until then its share still says "stay local"."""
        backend = self.select(ctx)
        if backend is None or backend not in tried:
            return backend
        route = self._routes.get(self.client_region(ctx)) or self._routes[None]
        seen: list[Balancer] = []
        for inner in (*route.balancers, *route.overflow, *self.inner.values()):
            if inner not in seen:
                seen.append(inner)
                backend = inner.select_avoiding(ctx, tried)
                if backend is not None:
                    return backend
        return None

    def on_start(self, backend: Backend) -> None:
        inner = self._region_of.get(backend)
        if inner is not None:
            inner.on_start(backend)

    def on_finish(self, backend: Backend) -> None:
        inner = self._region_of.get(backend)
        if inner is not None:
            inner.on_finish(backend)

    def stats(self) -> dict[str, Any]:
        return {
            "algorithm": self.name,
            "backends": len(self.backends),
            "regions": {
                region: {
                    "share": round(self.shares.get(region, 0.0), 4),
                    "backends": len(inner.backends),
                }
                for region, inner in sorted(self.inner.items())
            },
        }
