"""`admin:`: the admin HTTP API's address, access rules and TLS."""

from __future__ import annotations

import ssl
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from haproxyd.config.fields import DEFAULT_ADMIN, HostAddress, Section, readable_file, valid_host
from haproxyd.config.sections.listeners import TLSConfig


def _host_name(value: str) -> str:
    """An `allowed_hosts` entry as Host headers are compared: lower case, no trailing
    dot, IPv6 without brackets."""
    name = value.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return valid_host(name)


class AdminTLSConfig(TLSConfig):
    """HTTPS on the admin port, optionally with client certificates (mutual TLS)."""

    client_ca: str | None = Field(
        None,
        description="CA bundle (PEM): when set, every connection must present a client "
        "certificate signed by it (the TLS handshake fails otherwise).",
    )

    @field_validator("client_ca")
    @classmethod
    def _existing_ca(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = readable_file(value, info)
        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"not a PEM CA bundle: {exc}") from None
        return path


class AdminConfig(Section):
    """The admin HTTP API (HA API, metrics, status page): a port of its own."""

    address: HostAddress = Field(
        DEFAULT_ADMIN, description="host:port of the admin API; keep it on loopback."
    )
    token: str | None = Field(
        None,
        min_length=1,
        repr=False,
        description="Bearer token required by every mutating call (None = no auth). "
        "The environment variable HAPROXYD_ADMIN_TOKEN wins over the file.",
    )
    read_auth: bool = Field(False, description="Require the token for read-only calls too.")
    allowed_hosts: list[Annotated[str, AfterValidator(_host_name)]] = Field(
        default_factory=list,
        description="Host header names the admin API answers besides IP addresses, "
        "localhost and the host of `address` (any other name: 421, which stops DNS "
        "rebinding); e.g. the DNS names peers, Prometheus or a browser use for it.",
    )
    insecure: bool = Field(
        False,
        description="Allow an address beyond loopback without a token (anyone who can reach "
        "it can change the proxy); without it such a config is refused.",
    )
    tls: AdminTLSConfig | None = Field(
        None, description="Serve the admin API over HTTPS (client certificates optional)."
    )
