"""`cluster:`: several nodes sharing state through Redis."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from haproxyd.config.fields import Section, address_host
from haproxyd.config.types import Duration, parse_address


def _peer(value: str) -> str:
    address_host(parse_address(value))
    return value.strip()


class ClusterConfig(Section):
    """Several haproxyd nodes sharing state through Redis."""

    enabled: bool = Field(False, description="Join a cluster (off: one standalone node).")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/1", description="Redis holding the cluster state."
    )
    discovery_servers: list[Annotated[str, AfterValidator(_peer)]] = Field(
        default_factory=list,
        description="host:admin_port of the peers. The environment variable "
        "DISCOVERY_SERVERS (comma list) wins over the file.",
    )
    quorum_size: int = Field(
        2, ge=1, description="Votes needed to elect a leader (env QUORUM_SIZE wins)."
    )
    heartbeat_interval: Duration = Field(
        1.0, gt=0, description="How often a node writes its record and the leader renews."
    )
    lease_ttl: Duration = Field(
        3.0,
        gt=0,
        description="Leadership lease (at least 2 x heartbeat_interval): a dead leader is "
        "replaced within lease_ttl + heartbeat_interval.",
    )
    health_consensus: Literal["local", "majority"] = Field(
        "local", description="Mark a backend down on this node's verdict or on a majority's."
    )
    local_fallback: bool = Field(
        False,
        description="While Redis is unreachable, let every node make the leader's failover "
        "decisions for itself (availability over agreement); off: they pause.",
    )
    key_prefix: str = Field(
        "haproxyd",
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Prefix of this cluster's keys in Redis (several clusters, one Redis).",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        schemes = ("redis://", "rediss://", "unix://", "redis+sentinel://")
        if not value.startswith(schemes):
            raise ValueError(
                "redis_url must start with redis://, rediss://, unix:// or "
                "redis+sentinel://host:port[,host:port]/service"
            )
        if value.startswith("redis+sentinel://"):
            rest = value[len("redis+sentinel://") :]
            hosts, _, service = rest.partition("/")
            if not hosts.rpartition("@")[2] or not service.strip("/"):
                raise ValueError("redis+sentinel:// needs host:port[,host:port]/service")
        return value

    @field_validator("lease_ttl")
    @classmethod
    def _lease_longer_than_heartbeat(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("heartbeat_interval")
        if heartbeat is not None and value < 2 * heartbeat:
            # The leader acts only until 80% of the lease after a renewal and renews
            # once a heartbeat: a shorter lease would lapse between two renewals.
            raise ValueError(
                f"lease_ttl ({value:g}s) must be at least twice heartbeat_interval ({heartbeat:g}s)"
            )
        return value
