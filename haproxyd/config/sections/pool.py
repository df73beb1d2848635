"""`pools:`: backends, and how a pool balances, fails over, retries and reuses
connections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from haproxyd.config.fields import ID_RE, TOKEN_RE, Section, TargetAddress, valid_cidr
from haproxyd.config.sections.balancer import BalancerConfig
from haproxyd.config.sections.health import HealthCheckConfig, PassiveConfig
from haproxyd.config.types import Duration


class FailoverConfig(Section):
    """How a pool reacts when backends go down and come back."""

    strategy: Literal["active_passive", "active_active", "multi_active", "manual"] = Field(
        "active_active", description="Which backends take traffic."
    )
    failback: Literal["auto", "manual"] = Field(
        "auto", description="Return to the primaries by itself, or on an operator's trigger."
    )
    failback_hold: Duration = Field(
        30.0, ge=0, description="A recovered primary must stay healthy this long first."
    )
    panic_threshold: float = Field(
        0.0, ge=0, le=100, description="Below this % healthy, act as on_panic says; 0 = off."
    )
    on_panic: Literal["balance", "fail"] = Field(
        "balance", description="In panic: balance over all backends, or fail requests."
    )
    min_healthy_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="multi_active: a group whose healthy share (by weight) drops below "
        "this is taken out.",
    )
    flap_window: Duration = Field(60.0, gt=0, description="Window for counting flaps.")
    flap_threshold: int = Field(
        3, ge=1, description="State changes within flap_window that mark a backend flapping."
    )
    flap_hold: Duration = Field(
        30.0,
        ge=0,
        description="Hold a flapping backend out of the active set this long, doubling on "
        "each repeat; 0 = no flap damping.",
    )
    flap_hold_max: Duration = Field(
        300.0,
        gt=0,
        description="Longest flap hold; a backend quiet this long after a hold starts again "
        "from flap_hold.",
    )


class RetriesConfig(Section):
    """Retrying a failed request on another backend."""

    attempts: int = Field(
        2,
        ge=0,
        description="Retries after the first try (never once a body was sent, unless idempotent).",
    )
    budget_percent: float = Field(
        20.0, ge=0, le=100, description="Retries in flight: at most this % of requests in flight."
    )
    min_retries: int = Field(
        3, ge=0, description="Retries allowed in flight whatever the budget (Envoy's minimum)."
    )
    buffer_bytes: int = Field(
        65536, ge=0, description="Request body kept to replay on a retry; larger = no retry."
    )


class UpstreamKeepalive(Section):
    """Keep-alive connections to backends."""

    max_idle: int = Field(
        10000,
        ge=0,
        description=(
            "Idle connections kept per backend and process; 0 = no reuse. The default keeps "
            "as many as the peak of requests in flight needed (a lower cap closes a "
            "connection on every release and opens one on every request above it); "
            "those left unused close after idle_timeout (HAProxy's pool-max-conn and "
            "pool-purge-delay)."
        ),
    )
    idle_timeout: Duration = Field(60.0, gt=0, description="Close an idle connection after this.")
    max_requests: int = Field(
        0, ge=0, description="Requests per connection before closing it; 0 = unlimited."
    )


class ClientRegionConfig(Section):
    """How the region of a client is found."""

    header: str | None = Field(
        None, pattern=TOKEN_RE.pattern, description="Request header naming the region."
    )
    cidrs: dict[str, list[Annotated[str, AfterValidator(valid_cidr)]]] = Field(
        default_factory=dict, description="Region -> client networks (CIDRs)."
    )


class RegionsConfig(Section):
    """Multi-region balancing."""

    prefer_local: bool = Field(True, description="Prefer backends in the client's region.")
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="Region -> traffic weight."
    )
    spill_threshold: float = Field(
        0.5, ge=0, le=1, description="Spill to other regions below this healthy share."
    )
    client_region: ClientRegionConfig = Field(
        default_factory=ClientRegionConfig, description="How a client's region is found."
    )


class BackendConfig(Section):
    """One upstream server."""

    id: str = Field(
        pattern=ID_RE.pattern, description="Unique id (across all pools), [A-Za-z0-9_.:-]+."
    )
    address: TargetAddress = Field(description="host:port; the host may be a DNS name.")
    weight: int = Field(1, ge=0, le=1000, description="Relative share of traffic; 0 = none.")
    role: Literal["primary", "backup"] = Field(
        "primary", description="Backups take traffic only on failover."
    )
    region: str | None = Field(None, min_length=1, description="Region of the backend.")
    group: str | None = Field(None, min_length=1, description="Group for multi_active failover.")
    priority: int = Field(
        0, description="active_passive promotion order within its role (lower first)."
    )
    max_connections: int = Field(
        0, ge=0, description="Concurrent requests to this backend; 0 = unlimited."
    )


class PoolConfig(Section):
    """A set of backends serving the same content, and how to use them."""

    balancer: BalancerConfig = Field(
        default_factory=BalancerConfig, description="Backend selection."
    )
    health_checks: list[HealthCheckConfig] = Field(
        default_factory=list, description="Active probes of every backend."
    )
    passive: PassiveConfig | None = Field(
        None, description="Outlier detection from live traffic; None = off."
    )
    failover: FailoverConfig = Field(
        default_factory=FailoverConfig, description="Failover and failback."
    )
    retries: RetriesConfig = Field(default_factory=RetriesConfig, description="Retries.")
    queue_timeout: Duration = Field(
        0.0, ge=0, description="Wait this long for a free backend slot; 0 = 503 at once."
    )
    abort_on_client_close: bool = Field(
        False,
        description=(
            "A client that closes (or half-closes) its side aborts its requests in flight "
            "on this pool's backends even when it sent them whole (nginx's default, "
            "HAProxy's `option abortonclose`). Off: a whole request is still answered "
            "after a half-close (HAProxy's default); one left mid-body is always aborted."
        ),
    )
    keepalive: UpstreamKeepalive = Field(
        default_factory=UpstreamKeepalive, description="Backend connection reuse."
    )
    regions: RegionsConfig | None = Field(None, description="Multi-region balancing; None = off.")
    backends: list[BackendConfig] = Field(
        default_factory=list, description="The servers (may be empty, filled at runtime)."
    )
