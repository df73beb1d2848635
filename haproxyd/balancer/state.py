"""Live state of backends and pools: the one place it lives.

Algorithms, the health scheduler, the failover machine and the admin API all read and
change a backend through these objects; nobody keeps a copy. Everything here runs on the
event loop thread of the process that owns the pool, so no locks are needed.

The hot path (one request) touches only `Backend.active`, the counters and the pool's
`balancer.select`; membership and state changes (rare) rebuild the pool's snapshot of
selectable backends and notify the balancer, which rebuilds its own lookup structure
(Envoy's "immutable snapshot, rebuilt on change").

Compiled with the data plane (setup.py), `Backend` and `Pool` are extension types with
the fields `state.pxd` declares (an attribute added here must be declared there too),
and the pool's per-request methods are C calls from the compiled client.
"""

from __future__ import annotations

import enum
import operator
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haproxyd.balancer.base import Balancer, RequestContext


class BackendState(enum.StrEnum):
    CHECKING = "checking"  # added, waiting for its first health-check pass
    UP = "up"
    DOWN = "down"
    DRAINING = "draining"  # no new requests; in-flight ones finish
    MAINT = "maint"  # out of balancing and out of health checks


class Backend:
    """One backend server of one pool, with its live state.

    `weight` is the configured weight; `effective_weight` is what algorithms use (an
    agent check, slow start or the admin API may lower it). Written by the pool's owner
    (health, failover, admin) through `Pool` methods; `active`, `requests`, `failures`
    and `ewma` are written by the data plane on every request.
    """

    __slots__ = (
        "active",
        "address",
        "effective_weight",
        "ewma",
        "failures",
        "group",
        "host",
        "id",
        "max_connections",
        "pool_name",
        "port",
        "priority",
        "region",
        "requests",
        "role",
        "selections",
        "state",
        "state_since",
        "weight",
    )

    def __init__(
        self,
        id: str,
        host: str,
        port: int,
        *,
        weight: int = 1,
        role: str = "primary",
        region: str | None = None,
        group: str | None = None,
        priority: int = 0,
        max_connections: int = 0,
        state: BackendState = BackendState.UP,
        pool_name: str = "",
    ) -> None:
        self.id = id
        self.host = host
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # index(): a fractional weight is refused (TypeError) in both forms, where a C
        # field (effective_weight) would truncate it compiled and keep it interpreted.
        self.weight = operator.index(weight)
        self.effective_weight = self.weight
        self.role = role
        self.region = region
        self.group = group
        self.priority = priority
        self.max_connections = max_connections
        self.state = state
        self.state_since = time.monotonic()
        self.pool_name = pool_name
        self.active = 0  # requests in flight to this backend
        self.requests = 0  # requests sent (completed or not)
        self.failures = 0  # requests that failed at the transport level or timed out
        self.selections = 0  # times a balancer picked it
        self.ewma = 0.0  # smoothed response time in seconds; 0 = no sample yet

    @property
    def is_backup(self) -> bool:
        return self.role == "backup"

    @property
    def full(self) -> bool:
        """True when `max_connections` is set and reached (skip it, do not queue on it)."""
        return self.at_capacity()

    def at_capacity(self) -> bool:
        """`full` as a method: compiled, a C call from the compiled balancers."""
        return 0 < self.max_connections <= self.active

    def __repr__(self) -> str:
        return f"Backend({self.id!r}, {self.address}, {self.state}, w={self.effective_weight})"


EWMA_ALPHA = 0.3  # weight of the newest response time in `Backend.ewma`


class PanicSet(tuple):  # type: ignore[type-arg]
    """A selectable set in panic mode (Envoy's panic threshold): so few backends are
    healthy that the failover machine spreads traffic over all of them, down ones
    included, rather than overload the few. `usable()` recognises it and lets its
    members through whatever their state (weight 0 still excludes). Built by the
    failover machine (or a worker mirroring it), only on change."""

    __slots__ = ()


ActiveFilter = Callable[["Pool"], tuple[Backend, ...]]


class Pool:
    """A named group of backends with one balancer.

    `selectable` is the snapshot the balancer chooses from: backends that are UP with a
    non-zero effective weight, primaries only while any primary is up, else the backups
    (the Nginx/HAProxy `backup` rule). The failover machine replaces the rule by calling
    `set_active_filter` (or passing `active_filter=`, which a reload uses to carry the
    rule over to the rebuilt pool). Rebuilt only on change, never per request.

    `retry_fallback` names the backend a retry goes to when the selectable set has no
    other member (active_passive: the standby the machine would promote next). The
    active filter may set it while it runs; every refresh clears it first, so it never
    outlives the rule that chose it.
    """

    def __init__(
        self,
        name: str,
        balancer: Balancer,
        backends: Iterable[Backend] = (),
        *,
        active_filter: ActiveFilter | None = None,
    ) -> None:
        self.name = name
        self.balancer = balancer
        # The per-request hooks, or None when the algorithm keeps them as the base
        # class's no-ops (most do): two calls per request saved on the hot path.
        self._balancer_on_start, self._balancer_on_finish = balancer.request_hooks()
        self.backends: dict[str, Backend] = {}
        self.selectable: tuple[Backend, ...] = ()
        self.retry_fallback: Backend | None = None
        self.version = 0  # bumped on every membership/state/weight change
        self._active_filter: ActiveFilter | None = active_filter
        self._listeners: list[Callable[[Pool], None]] = []
        for backend in backends:
            backend.pool_name = name
            self.backends[backend.id] = backend
        balancer.attach(self)
        self.refresh()

    # -- change notifications (called by health, failover, admin; never per request) --

    def add_listener(self, callback: Callable[[Pool], None]) -> None:
        """`callback(pool)` runs after every refresh (metrics, admin, cluster sync)."""
        self._listeners.append(callback)

    @property
    def active_filter(self) -> ActiveFilter | None:
        return self._active_filter

    def set_active_filter(self, rule: ActiveFilter | None) -> None:
        self._active_filter = rule
        self.refresh()

    @property
    def panic(self) -> bool:
        """The selectable set is a panic set (down backends included on purpose)."""
        return isinstance(self.selectable, PanicSet)

    def refresh(self) -> None:
        """Rebuild `selectable` and let the balancer rebuild its structures."""
        self.retry_fallback = None
        if self._active_filter is not None:
            selectable = self._active_filter(self)
        else:
            selectable = default_selectable(self.backends.values())
        self.selectable = selectable
        self.version += 1
        self.balancer.rebuild(selectable)
        for callback in self._listeners:
            callback(self)

    def add(self, backend: Backend) -> None:
        if backend.id in self.backends:
            raise KeyError(f"backend {backend.id!r} already exists in pool {self.name!r}")
        backend.pool_name = self.name
        self.backends[backend.id] = backend
        self.refresh()

    def remove(self, backend_id: str) -> Backend:
        backend = self.backends.pop(backend_id)
        self.refresh()
        return backend

    def set_state(self, backend_id: str, state: BackendState, *, refresh: bool = True) -> bool:
        """Returns True when the state changed. `refresh=False`: the caller refreshes
        the pool itself, soon (a batch of verdicts, see HealthScheduler)."""
        backend = self.backends[backend_id]
        if backend.state == state:
            return False
        backend.state = state
        backend.state_since = time.monotonic()
        if refresh:
            self.refresh()
        return True

    def set_weight(self, backend_id: str, weight: int, *, effective_only: bool = False) -> None:
        backend = self.backends[backend_id]
        weight = operator.index(weight)  # as in Backend.__init__
        if not effective_only:
            backend.weight = weight
        backend.effective_weight = weight
        self.refresh()

    # -- the data plane's calls (hot path: keep them cheap) --

    def select(self, ctx: RequestContext) -> Backend | None:
        return self.balancer.select(ctx)

    def select_retry(self, ctx: RequestContext, tried: list[Backend]) -> Backend | None:
        """A backend for a retry: one this request has not failed on (`tried`), else the
        failover machine's next in line, else None (every candidate failed it once)."""
        backend = self.balancer.select_avoiding(ctx, tried)
        if backend is None:
            standby = self.retry_fallback
            if standby is not None and standby not in tried and not standby.full:
                return standby
        return backend

    def on_start(self, backend: Backend) -> None:
        """An attempt on `backend`, which the balancer chose, begins."""
        backend.active += 1
        backend.requests += 1
        backend.selections += 1
        if self._balancer_on_start is not None:
            self._balancer_on_start(backend)

    def on_finish(self, backend: Backend, elapsed: float, ok: bool) -> None:
        """A request to `backend` ended; `elapsed` in seconds, `ok` False on a transport
        failure or timeout (not on an HTTP 5xx, which is the backend's answer)."""
        backend.active -= 1
        if ok:
            backend.ewma = (
                elapsed
                if backend.ewma == 0.0
                else (EWMA_ALPHA * elapsed + (1.0 - EWMA_ALPHA) * backend.ewma)
            )
        else:
            backend.failures += 1
        if self._balancer_on_finish is not None:
            self._balancer_on_finish(backend)


def default_selectable(backends: Iterable[Backend]) -> tuple[Backend, ...]:
    up = [b for b in backends if b.state == BackendState.UP and b.effective_weight > 0]
    primaries = tuple(b for b in up if not b.is_backup)
    return primaries if primaries else tuple(up)
