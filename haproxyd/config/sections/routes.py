"""`routes:`: which pool serves a request."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from haproxyd.config.fields import Section, valid_host


class RouteMatch(Section):
    """What a request must look like to take a route (both conditions must hold)."""

    host: str | None = Field(
        None,
        description=(
            "Host to match (the Host header, or the authority of an absolute-form "
            "target), case-insensitive, without port, a trailing dot ignored; "
            "None = any host."
        ),
    )
    path_prefix: str = Field(
        "/", description="Plain prefix the normalised request path must start with."
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = value.strip().lower()
        if host.startswith("[") and host.endswith("]"):
            inner = host[1:-1]
        elif host.count(":") > 1:
            inner = host
        elif ":" in host:
            raise ValueError(
                f"host {value!r} has a port: the port is ignored when matching, leave it out"
            )
        else:
            inner = None
        if inner is not None:
            try:
                return f"[{ipaddress.IPv6Address(inner)}]"
            except ValueError:
                raise ValueError(f"invalid IPv6 host {value!r}") from None
        return valid_host(host)

    @field_validator("path_prefix")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        return value


class RouteConfig(Section):
    """A routing rule; the first matching route wins."""

    match: RouteMatch = Field(default_factory=RouteMatch, description="The condition.")
    pool: str = Field(description="Name of the pool that serves the matching requests.")
    normalize_path: Literal["match", "forward"] = Field(
        "match",
        description=(
            "Routes always match the normalised path (percent-encoded unreserved "
            "characters decoded, dot segments removed, repeated '/' merged); 'match' "
            "forwards the path as received, 'forward' forwards the normalised one "
            "(as nginx does)."
        ),
    )
