"""The bodies the admin API answers with, as typed dicts: the source of the OpenAPI
document's response schemas (openapi.py generates them with pydantic's TypeAdapter).

The views themselves are built as plain dicts (state.py, the handlers), so a key added
to a view without its field here is answered but undescribed: schemathesis (tests/admin)
fails on it, as it fails on a field described here with the wrong type. Field names are
the API's contract: add fields, never rename them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field

# typing_extensions (a dependency of pydantic): pydantic reads typing.TypedDict only on
# Python 3.12 and later.
from typing_extensions import TypedDict

from haproxyd.config.schema import Config

Count = Annotated[int, Field(ge=0)]
State = Literal["checking", "up", "down", "draining", "maint"]
Role = Literal["standalone", "leader", "follower", "candidate", "degraded"]


def _doc(text: str) -> Any:
    return Field(description=text)


ForwardedTo = Annotated[
    str,
    _doc(
        "Cluster mode: the leader a follower sent the change to (its answer, error or not, "
        "is this one)."
    ),
]


class Error(TypedDict):
    """Every 4xx and 503 (and a 500, which is a bug) has this body."""

    error: str
    details: list[str]
    forwarded_to: NotRequired[ForwardedTo]


class ClusterChange(TypedDict):
    """What a runtime change or config/update made in a cluster adds to its answer."""

    cluster_version: NotRequired[
        Annotated[
            Count,
            _doc(
                "Cluster mode: the version of the shared document (pools, routes) that "
                "holds the change (absent when nothing changed, and outside a cluster)."
            ),
        ]
    ]
    forwarded_to: NotRequired[ForwardedTo]


CodeClasses = TypedDict(
    "CodeClasses",
    {"1xx": Count, "2xx": Count, "3xx": Count, "4xx": Count, "5xx": Count, "other": Count},
)


class Latency(TypedDict):
    """Seconds, from the request-duration histogram (null without samples)."""

    samples: Count
    avg: float | None
    p50: float | None
    p99: float | None


class HealthCheckSummary(TypedDict):
    type: str
    name: str
    status: str
    reason: str


class BackendHealth(TypedDict):
    verdict: str
    ejected: bool
    passive: dict[str, Any] | None
    checks: list[HealthCheckSummary]


class Backend(TypedDict):
    id: str
    pool: str
    address: str
    weight: int
    effective_weight: int
    role: str
    region: str | None
    group: str | None
    priority: int
    max_connections: int
    state: State
    state_age: Annotated[float, _doc("Seconds in the current state.")]
    selectable: Annotated[bool, _doc("The balancer may pick it now.")]
    active: Annotated[int, _doc("Requests in flight.")]
    requests: Annotated[Count, _doc("Requests sent (retries included).")]
    failures: Annotated[Count, _doc("Transport-level failures.")]
    selections: Count
    health: BackendHealth


class ChangedBackend(Backend, ClusterChange):
    """The answer to an add or a change: the backend, in a cluster with the version."""


class BackendList(TypedDict):
    backends: list[Backend]


class Removed(ClusterChange):
    removed: Backend


class Decision(TypedDict):
    """The failover state machine's decision for a pool."""

    pool: str
    strategy: str
    active: Annotated[list[str], _doc("The backends that take traffic, in order.")]
    version: Annotated[Count, _doc("Grows by one per decision of the pool.")]
    reason: str
    since: Annotated[float, _doc("When the active set last changed (epoch).")]
    kind: str
    panic: Annotated[bool, _doc("Panic mode: down backends included on purpose.")]
    state: Annotated[dict[str, Any], _doc("The strategy's memory (pins, ...).")]
    mode: Annotated[
        Literal["leader", "follower", "local"],
        _doc("Who decides: this node, the cluster leader, or this node alone (active_active)."),
    ]
    held: Annotated[list[str], _doc("Backends held out by flap damping.")]
    fallback: Annotated[str | None, _doc("Where a retry goes when the one active backend fails.")]


class PoolStatus(TypedDict):
    name: str
    algorithm: str
    strategy: str
    backends: Count
    up: Count
    selectable: Count
    active: int
    states: dict[str, Count]
    healthy: Annotated[bool, _doc("At least one backend can take traffic.")]
    decision: Decision | None


class NodeHealthSummary(TypedDict):
    healthy: bool
    reasons: list[str]


class Reloads(TypedDict):
    ok: Count
    error: Count


class LastReload(TypedDict):
    result: Literal["ok", "error"] | None
    errors: list[str]
    time: float | None


class Workers(TypedDict):
    mode: Literal["single", "master"]
    count: int
    pids: list[int]
    applied_versions: NotRequired[list[int]]
    restarts: Count


class Status(TypedDict):
    node_id: str
    region: str | None
    role: str
    version: str
    pid: int
    started: Annotated[float, _doc("Seconds since the epoch.")]
    uptime: Annotated[float, _doc("Seconds.")]
    config_version: int
    config_path: str | None
    environment: str
    healthy: bool
    node_health: NodeHealthSummary
    reloads: Reloads
    last_reload: LastReload
    workers: Workers
    connections: Count
    pools: list[PoolStatus]


class BackendStats(TypedDict):
    id: str
    state: State
    weight: int
    effective_weight: int
    requests: Annotated[Count, _doc("Requests answered with this backend last.")]
    errors: Annotated[Count, _doc("5xx from the backend + transport failures.")]
    failures: Count
    attempts: Count
    active: int
    selections: Count
    ewma: float
    latency: Latency
    codes: CodeClasses


class PoolStats(TypedDict):
    name: str
    algorithm: str
    requests: Count
    errors: Count
    active: int
    selections: Count
    failures: Count
    no_backend: Annotated[Count, _doc("Requests answered 503: no backend.")]
    latency: Latency
    codes: CodeClasses
    backends: list[BackendStats]


class Unrouted(TypedDict):
    requests: Count
    codes: CodeClasses


class LoadBalancerStats(TypedDict):
    time: float
    pools: list[PoolStats]
    unrouted: Unrouted


class HealthCheck(TypedDict):
    pool: str
    backend: str
    target: str
    type: str
    name: str
    status: Literal["checking", "up", "down"]
    state: str | None
    last_result: Literal["pass", "fail"] | None
    last_reason: str
    latency: float
    last_check: float | None
    last_change: float
    consecutive_passes: Count
    consecutive_fails: Count
    checks_total: Count
    failures_total: Count
    paused: bool
    interval: float
    node: bool


class HealthChecks(TypedDict):
    enabled: bool
    node: NodeHealthSummary
    checks: list[HealthCheck]


class ClusterNode(TypedDict):
    id: str
    address: NotRequired[Annotated[str | None, _doc("Admin URL (null: a lost node).")]]
    region: NotRequired[str | None]
    state: Annotated[Literal["up", "lost"], _doc("lost: its heartbeat record expired.")]
    role: Annotated[
        Literal["standalone", "leader", "follower", "candidate", "degraded", "lost"],
        _doc("The role the node published with its last heartbeat."),
    ]
    self: bool
    last_seen: NotRequired[
        Annotated[float | None, _doc("Its last heartbeat (a lost node: when it was lost).")]
    ]
    healthy: NotRequired[Annotated[bool, _doc("Cluster mode: its own node checks pass.")]]
    config_version: NotRequired[
        Annotated[Count, _doc("Cluster mode: the shared document version it runs.")]
    ]
    term: NotRequired[Annotated[Count, _doc("Cluster mode: the newest term it has seen.")]]
    reachable: NotRequired[
        Annotated[
            bool | None,
            _doc(
                "Cluster mode: answered this node's probe of its admin API (null: not "
                "probed yet, or lost)."
            ),
        ]
    ]


class RedisView(TypedDict):
    """Cluster mode: this node's view of the cluster's Redis."""

    url: Annotated[str, _doc("cluster.redis_url, password hidden.")]
    reachable: Annotated[bool | None, _doc("The last beat reached it (null: not tried).")]
    error: str | None
    last_contact: Annotated[float | None, _doc("Epoch of the last successful beat.")]


class Peer(TypedDict):
    address: str
    reachable: bool


class ClusterStatus(TypedDict):
    """A standalone node answers the first ten fields; a cluster node all."""

    enabled: bool
    mode: Literal["standalone", "cluster"]
    node_id: str
    role: Role
    is_leader: Annotated[bool, _doc("Acting leader: holds the lease and sees a quorum.")]
    leader: Annotated[str | None, _doc("The lease holder's id (null: none).")]
    term: Annotated[Count, _doc("The newest leader term this node has seen.")]
    quorum: Count
    has_quorum: bool
    state: NotRequired[
        Annotated[
            Literal["ok", "degraded", "no_quorum"],
            _doc(
                "Cluster mode. degraded: Redis unreachable from this node (serving with "
                "the last known state); no_quorum: fewer live members than quorum_size."
            ),
        ]
    ]
    config_version: NotRequired[
        Annotated[Count, _doc("Cluster mode: the shared document version this node runs.")]
    ]
    redis: NotRequired[RedisView]
    local_fallback: NotRequired[bool]
    health_consensus: NotRequired[Literal["local", "majority"]]
    stale_writes_refused: NotRequired[
        Annotated[Count, _doc("Leader writes of this node that Redis refused (fencing).")]
    ]
    peers: NotRequired[
        Annotated[list[Peer], _doc("Cluster mode: every peer admin API this node probes.")]
    ]
    nodes: list[ClusterNode]


class FailoverEvent(TypedDict):
    id: Count
    time: float
    kind: str
    pool: str
    backend: str | None
    reason: str
    strategy: str
    details: dict[str, Any]


class FailoverEvents(TypedDict):
    events: list[FailoverEvent]
    returned: Count
    stored: Count
    capacity: Count


class FailoverResult(TypedDict):
    pool: str
    action: str
    active: list[str]
    event: FailoverEvent | None
    decision: Decision
    forwarded_to: NotRequired[ForwardedTo]


class ConfigView(TypedDict):
    config_version: int
    config: Annotated[
        Config,
        _doc(
            "The running config as GET shows it: every key, with its default where the "
            "file left it out; secrets (admin.token, passwords, the password of "
            "cluster.redis_url) read <redacted>."
        ),
    ]


class ConfigUpdateResult(ClusterChange):
    applied: bool
    changed: bool
    config_version: Annotated[int, _doc("This node's config version (one more per reload).")]


class Readiness(TypedDict):
    ready: bool
    reasons: Annotated[
        list[str], _doc("Every reason this node is not serving now; empty when ready.")
    ]


RESPONSES: tuple[type, ...] = (
    Error,
    Readiness,
    Backend,
    ChangedBackend,
    BackendList,
    Removed,
    Status,
    LoadBalancerStats,
    HealthChecks,
    ClusterStatus,
    FailoverEvents,
    FailoverResult,
    ConfigView,
    ConfigUpdateResult,
)
"""Every body a path answers with: openapi.py makes each a component schema (and the
typed dicts they hold, by name)."""
