"""Helpers for the balancer tests: request contexts, a fake clock, pools, simulations.

- `Ctx(client_ip, url, headers)`: a `RequestContext`.
- `FakeClock`: `clock()` returns `now`; `advance(seconds)`.
- `make_pool(algorithm, weights, **options)`: a `Pool` of backends `a`, `b`, `c`, ...
  (ids from `ids` when given) with the algorithm built by `create()`, a fake clock and a
  seeded generator (`pool.clock` is the clock).
- `shares(pool, count, ctxs)`: selections per backend id over `count` sequential
  requests (select, start, finish), as fractions.
- `closed_loop(pool, clients, requests, service)`: a discrete-event simulation where
  `clients` callers each send a request as soon as their previous one ended; the
  service time of backend id `x` is `service(x, rng)`. Returns selections per id.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, get_args

from helpers.clock import FakeClock

from haproxyd.balancer.base import create
from haproxyd.balancer.state import Backend, Pool
from haproxyd.config.schema import BalancerConfig

# Every algorithm the config accepts (one source: the schema's `algorithm` field).
ALGORITHMS: tuple[str, ...] = get_args(BalancerConfig.model_fields["algorithm"].annotation)
# Each algorithm plus the option variants worth running through generic tests.
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    *((name, {}) for name in ALGORITHMS),
    ("least_connections", {"choices": 2}),
    ("random", {"choices": 2}),
    ("consistent_hash", {"hash_key": "header:X-User-Id"}),
    ("consistent_hash", {"hash_key": "cookie:sid", "balance_factor": 1.25}),
)


def variant_id(variant: tuple[str, dict[str, Any]]) -> str:
    name, options = variant
    return name + "".join(f"[{k}={v}]" for k, v in options.items())


class Ctx:
    __slots__ = ("client_ip", "headers", "url")

    def __init__(
        self,
        client_ip: str = "192.0.2.1",
        url: bytes = b"/",
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        self.client_ip = client_ip
        self.url = url
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)


def distinct_ctxs(count: int, seed: int = 1) -> list[Ctx]:
    """Requests with distinct client addresses, URLs, user ids and session cookies."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        ip = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
        out.append(
            Ctx(
                ip,
                b"/item/%d?page=%d" % (rnd.randrange(1 << 40), i),
                {b"x-user-id": b"u%d" % rnd.randrange(1 << 40), b"cookie": b"sid=s%d" % i},
            )
        )
    return out


def make_pool(
    algorithm: str,
    weights: Sequence[int] = (1, 1, 1),
    *,
    ids: Sequence[str] | None = None,
    clock: FakeClock | None = None,
    seed: int = 1,
    since: float = 0.0,
    **options: Any,
) -> Pool:
    clock = clock or FakeClock()
    ids = list(ids) if ids is not None else [chr(ord("a") + i) for i in range(len(weights))]
    balancer = create(algorithm, clock=clock, rng=random.Random(seed), **options)
    backends = []
    for i, (backend_id, weight) in enumerate(zip(ids, weights, strict=True)):
        backend = Backend(backend_id, "127.0.0.1", 9000 + i, weight=weight)
        backend.state_since = since
        backends.append(backend)
    pool = Pool("test", balancer, backends)
    pool.clock = clock  # type: ignore[attr-defined]
    return pool


def run(pool: Pool, ctxs: Iterable[Any]) -> Counter[str]:
    """Sequential requests: select, start and finish each; counts per backend id."""
    counts: Counter[str] = Counter()
    for ctx in ctxs:
        backend = pool.select(ctx)
        assert backend is not None
        pool.on_start(backend)
        pool.on_finish(backend, 0.01, True)
        counts[backend.id] += 1
    return counts


def fractions(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())}


def closed_loop(
    pool: Pool,
    clients: int,
    requests: int,
    service: Callable[[str, random.Random], float],
    *,
    ctxs: Sequence[Any] | None = None,
    seed: int = 3,
) -> Counter[str]:
    """Selections per backend id; the pool's fake clock follows the simulated time."""
    clock: FakeClock = pool.clock  # type: ignore[attr-defined]
    rnd = random.Random(seed)
    ctxs = ctxs or [Ctx()]
    counts: Counter[str] = Counter()
    events: list[tuple[float, int, Backend, float]] = []
    seq = 0

    def send() -> None:
        nonlocal seq
        backend = pool.select(ctxs[seq % len(ctxs)])
        assert backend is not None
        pool.on_start(backend)
        counts[backend.id] += 1
        elapsed = service(backend.id, rnd)
        seq += 1
        heapq.heappush(events, (clock.now + elapsed, seq, backend, elapsed))

    for _ in range(clients):
        send()
    while seq < requests:
        when, _, backend, elapsed = heapq.heappop(events)
        clock.now = when
        pool.on_finish(backend, elapsed, True)
        send()
    while events:  # drain: leave no request in flight
        when, _, backend, elapsed = heapq.heappop(events)
        clock.now = when
        pool.on_finish(backend, elapsed, True)
    return counts
