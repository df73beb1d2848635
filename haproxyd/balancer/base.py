"""The balancer interface: what the data plane asks, what it reports back.

`select(ctx)` is the only required method. The hooks are optional notifications (all
no-ops here) modelled on HAProxy's `lb_ops`: algorithms that keep an index over the
backends (a heap, a ring, a lookup table) update it in `rebuild`, which the pool calls
when membership, state or weights change, never per request.

Every algorithm lives in its own module and registers itself here by its config name
(`balancer.algorithm`); `create()` builds one from the pool's `balancer:` section.

Compiled with the data plane (setup.py), `Balancer` is an extension type (base.pxd) and
`select` a C call from the client; an algorithm may still be plain Python (a subclass of
an extension type), and the call then reaches its own `select`. Round robin, the
default, is compiled too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from haproxyd.balancer.state import BackendState, PanicSet

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend, Pool


Hook = Callable[["Backend"], None]


class RequestContext(Protocol):
    """What an algorithm may read about the request being balanced.

    The data plane's exchange object implements it; tests may use any object with
    these attributes.
    """

    client_ip: str  # the socket peer's address
    url: bytes  # request target as received: path and query

    def header(self, name: bytes) -> bytes | None:
        """First value of header `name` (lower-case), or None."""
        ...


class Balancer:
    """Base class of every algorithm. Subclasses set `name` and implement `select`.

    All methods run on the event-loop thread of the process that owns the pool: `select`,
    `on_start` and `on_finish` per request (the data plane, through `Pool`), `rebuild`
    on every change of the pool's selectable set (through `Pool.refresh`).
    """

    name: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.backends: tuple[Backend, ...] = ()

    def attach(self, pool: Pool) -> None:
        """The pool this balancer serves (called once by `Pool.__init__`, before the
        first `rebuild`). Default: nothing; a balancer that needs more than the
        selectable set (the region balancer: each region's whole capacity) keeps it."""

    def rebuild(self, backends: tuple[Backend, ...]) -> None:
        """The selectable set changed (membership, state, weight). Default: remember it."""
        self.backends = usable(backends)

    def select(self, ctx: RequestContext) -> Backend | None:
        """The backend for this request, or None when no backend is available (503)."""
        raise NotImplementedError

    def select_avoiding(self, ctx: RequestContext, tried: list[Backend]) -> Backend | None:
        """For a retry: a backend that is not in `tried` (those this request already
        failed on), or None when every usable one is. The algorithm's own choice when it
        is not in `tried` (a hash keeps its affinity when it can), else the first usable
        one in order that has room. O(n), on the retry path only."""
        backend = self.select(ctx)
        if backend is None or backend not in tried:
            return backend
        for candidate in self.backends:
            if candidate not in tried and not candidate.full:
                return candidate
        return None

    def on_start(self, backend: Backend) -> None:
        """A request to `backend` started (its `active` is already incremented)."""

    def on_finish(self, backend: Backend) -> None:
        """A request to `backend` ended (its `active`, `ewma` already updated)."""

    def request_hooks(self) -> tuple[Hook | None, Hook | None]:
        """`on_start` and `on_finish` where this algorithm overrides them, else None, so
        that the pool skips the base class's no-op calls on every request."""
        cls = type(self)
        start = self.on_start if cls.on_start is not Balancer.on_start else None
        finish = self.on_finish if cls.on_finish is not Balancer.on_finish else None
        return start, finish

    def stats(self) -> dict[str, Any]:
        """Statistics of the lookup structure for the admin API (e.g. ring size)."""
        return {"algorithm": self.name, "backends": len(self.backends)}


def usable(backends: tuple[Backend, ...]) -> tuple[Backend, ...]:
    """The backends an algorithm may ever choose: UP with a positive effective weight.

    The pool's snapshot already holds only those under the default rule; this is the
    safety net for custom active filters (failover), applied at rebuild, not per request.
    The one deliberate way past it is a `PanicSet` (the failover machine's panic mode),
    whose members may be in any state; weight 0 still excludes.
    """
    if isinstance(backends, PanicSet):
        return tuple(b for b in backends if b.effective_weight > 0)
    if all(b.state == BackendState.UP and b.effective_weight > 0 for b in backends):
        return tuple(backends)
    return tuple(b for b in backends if b.state == BackendState.UP and b.effective_weight > 0)


REGISTRY: dict[str, type[Balancer]] = {}

# A string: compiled by Cython 3.1+, `type[Balancer]` would be evaluated as a C-level
# subscript of `type` and fail at import.
B = TypeVar("B", bound="type[Balancer]")


def register(cls: B) -> B:
    REGISTRY[cls.name] = cls
    return cls


def create(algorithm: str, **options: Any) -> Balancer:
    """A new balancer for the config name `algorithm`.

    `options` are the pool's `balancer:` settings (hash_key, virtual_nodes,
    balance_factor, choices, hash_query, trusted_proxies, slow_start; None means the
    default) plus, for tests, `clock` and `rng`. Each algorithm ignores those it does not
    use. Raises ValueError on an unknown algorithm or an invalid option value.
    """
    # Import the algorithm modules so that they register themselves.
    import haproxyd.balancer.algorithms  # noqa: F401

    try:
        cls = REGISTRY[algorithm]
    except KeyError:
        raise ValueError(f"unknown balancing algorithm {algorithm!r}") from None
    return cls(**options)
