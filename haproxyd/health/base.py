"""What every check type shares: the result record, the base class and the registry.

One module per check type, each registering its class under the config `type` name (the
same pattern as the balancer's `REGISTRY`, after HAProxy's table of `tcpcheck` rulesets
and Envoy's health-checker extension factories). A check object is built once per
(pool, check config) and probes every backend of that pool; it keeps no per-backend
health: rise/fall counting, intervals and timeouts belong to the scheduler
(`haproxyd.health.scheduler`), which enforces `timeout` by cancelling `probe`.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import struct
from typing import TYPE_CHECKING, Any, ClassVar

from haproxyd.config.sections.health import NODE_CHECK_TYPES, CheckBase

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend

# The fields every check config has (the schema's CheckBase) say when and how often to
# probe, not what to probe. A reload that changes only these keeps the probe session's
# state (see `probe_key`).
TIMING_FIELDS = frozenset(CheckBase.model_fields)

# Check types that may run as node checks (checks of the proxy's own host): the ones the
# schema allows in `node_checks`.
NODE_TYPES = frozenset(NODE_CHECK_TYPES)
# Check types that only make sense on the node (they do not look at a backend at all).
NODE_ONLY_TYPES = frozenset({"disk_space", "memory_usage"})

MAX_REASON = 200  # characters of a peer's text kept in a reason


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one probe.

    `ok` is the health verdict of this one probe. `weight_percent` (agent checks) asks
    for the backend's effective weight as a percentage of its configured weight;
    `admin_state` (agent checks) is an administrative request: "drain", "maint" or
    "ready". Both are None when the check has nothing to say about them.
    """

    ok: bool
    reason: str
    latency: float = 0.0
    weight_percent: int | None = None
    admin_state: str | None = None


class Check:
    """Base class of every check type. Subclasses set `type` and implement `probe`.

    `probe(backend)` is called by the scheduler, on the event loop, under the check's
    timeout; `backend` is None for a node check. It must not raise for an ordinary
    failure (refused connection, wrong answer): it returns `CheckResult(ok=False, ...)`
    with a reason an operator can act on. It must clean up after itself when cancelled.
    """

    type: ClassVar[str] = ""
    node_capable: ClassVar[bool] = False  # may run as a node check
    backend_capable: ClassVar[bool] = True  # may run against a pool's backends

    def __init__(self, config: Any) -> None:
        self.config = config
        # The check's `port` override, for the types that have one; None: the backend's.
        self.port: int | None = None

    async def probe(self, backend: Backend | None) -> CheckResult:
        raise NotImplementedError

    def bind(self, node_id: str) -> None:
        """The node that runs this check (an HTTP check names it to the backend)."""

    async def close(self) -> None:
        """Release shared resources (client sessions). Called once, by the scheduler."""

    def describe(self) -> str:
        """A short label for the admin API, e.g. `http GET /healthz`."""
        return self.type

    def target(self, backend: Backend) -> tuple[str, int]:
        """(host, port) to probe: the backend's address, or its host with the check's
        `port` override (HAProxy `port`/`agent-port`)."""
        return backend.host, self.port or backend.port


REGISTRY: dict[str, type[Check]] = {}


def register(cls: type[Check]) -> type[Check]:
    REGISTRY[cls.type] = cls
    return cls


def create_check(config: Any) -> Check:
    """A new check object for one `health_checks`/`node_checks` entry."""
    # Import the check modules so that they register themselves.
    import haproxyd.health.checks  # noqa: F401

    try:
        cls = REGISTRY[config.type]
    except KeyError:
        raise ValueError(f"unknown health check type {config.type!r}") from None
    return cls(config)


def config_fields(config: Any) -> dict[str, Any]:
    """The fields of a check config as a dict: a pydantic model or any plain object."""
    dump = getattr(config, "model_dump", None)
    if dump is not None:
        return dump()
    return dict(vars(config))


def probe_key(config: Any) -> str:
    """Identity of a check config for reloads: everything but the timing fields.

    Two configs with the same key probe the same thing, so a reload that only changes
    the interval or the thresholds keeps the session's counters and verdict.
    """
    fields = {k: v for k, v in config_fields(config).items() if k not in TIMING_FIELDS}
    return json.dumps(fields, sort_keys=True, default=str)


def clip(text: str | bytes, limit: int = MAX_REASON) -> str:
    """A peer's text made safe for a log line or a reason: printable, bounded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tls_context(*, verify: bool, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A client TLS context for a check's `tls`/`verify_tls` options (and ALPN)."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


async def close_writer(writer: Any, *, reset: bool = True) -> None:
    """Close a check connection.

    With `reset` the socket is closed with SO_LINGER 0 (an RST), as HAProxy does for its
    checks: a prober opening thousands of short connections per second would otherwise
    pile up sockets in TIME_WAIT and run out of local ports. Errors while closing say
    nothing about the verdict and are swallowed.
    """
    try:
        if reset:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await writer.wait_closed()
    except (OSError, RuntimeError):
        pass
