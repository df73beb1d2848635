"""The data plane's settings that are not per pool: `timeouts:`, `limits:`,
`access_log:`, `resolver:`."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from haproxyd.config.fields import Section
from haproxyd.config.types import Duration, parse_address


def _nameserver(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        try:
            ipaddress.ip_address(parse_address(value).host)
        except ValueError:
            raise ValueError(
                f"invalid nameserver {value!r}: expected an IP address, optionally with :port"
            ) from None
    return value


class Timeouts(Section):
    """Time limits of the data plane."""

    connect: Duration = Field(2.0, gt=0, description="Connecting to a backend.")
    response: Duration = Field(
        30.0, gt=0, description="Waiting for a backend's response headers (504 after)."
    )
    idle: Duration = Field(60.0, gt=0, description="An idle client keep-alive connection.")
    client_header: Duration = Field(
        10.0, gt=0, description="Receiving a client's request headers (slowloris guard)."
    )
    shutdown: Duration = Field(
        15.0, gt=0, description="Draining in-flight requests on SIGTERM/SIGINT."
    )
    drain_grace: Duration = Field(
        1.0,
        ge=0,
        description=(
            "On stop (or a worker's retirement), how long an idle client connection stays "
            "open: a request that arrives meanwhile is served, with `Connection: close`, "
            "instead of meeting a closed connection; 0 closes idle connections at once."
        ),
    )


class Limits(Section):
    """Size and concurrency limits of the data plane."""

    max_header_bytes: int = Field(
        65536, ge=1024, description="Largest request head (request line + headers); 431 above."
    )
    max_body_bytes: int = Field(0, ge=0, description="Largest request body; 0 = unlimited.")
    max_connections: int = Field(
        10000, ge=1, description="Concurrent client connections per worker."
    )


class AccessLogConfig(Section):
    """One line per request."""

    enabled: bool = Field(False, description="Write the access log.")
    path: str | None = Field(
        None,
        min_length=1,
        description="File to append to (relative to the config file); None or '-' = stderr.",
    )

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "-":
            return value
        path = Path(value).expanduser()
        base = (info.context or {}).get("base_dir")
        return str(path if path.is_absolute() or base is None else Path(base) / path)


class ResolverConfig(Section):
    """DNS resolution of backend host names."""

    interval: Duration = Field(30.0, gt=0, description="Re-resolve DNS names this often.")
    nameservers: list[Annotated[str, AfterValidator(_nameserver)]] = Field(
        default_factory=list, description="Nameserver IPs (ip or ip:port); empty = the system's."
    )
    timeout: Duration = Field(2.0, gt=0, description="One DNS query.")
