"""`listeners:`: the sockets accepting client traffic, and their TLS."""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from haproxyd.config.fields import HostAddress, Section, readable_file


class TLSConfig(Section):
    """TLS termination on a listener. Relative paths are relative to the config file."""

    cert: str = Field(description="Certificate chain (PEM), leaf first.")
    key: str = Field(description="Private key (PEM, unencrypted) of the certificate.")
    alpn: list[Literal["h2", "http/1.1"]] = Field(
        default_factory=lambda: ["h2", "http/1.1"],
        min_length=1,
        description="Protocols offered by ALPN, in order of preference; without `h2` the "
        "listener speaks HTTP/1.1 only (a client that offers no ALPN gets HTTP/1.1).",
    )

    @field_validator("cert", "key")
    @classmethod
    def _existing_file(cls, value: str, info: ValidationInfo) -> str:
        return readable_file(value, info)

    @field_validator("alpn")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"alpn lists a protocol twice: {value}")
        return value

    @model_validator(mode="after")
    def _loads(self) -> TLSConfig:
        # Like `nginx -t`, catch a bad PEM or a key that does not match before startup.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key, password=b"")
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"certificate and key do not load together: {exc}") from None
        return self


class ListenerConfig(Section):
    """One socket accepting client traffic."""

    address: HostAddress = Field(
        description="host:port to listen on ([v6]:port for IPv6; port 0 = any free port)."
    )
    tls: TLSConfig | None = Field(None, description="Terminate TLS on this listener.")
    http2: bool = Field(
        True,
        description="On a cleartext listener, accept HTTP/2 with prior knowledge (h2c: a "
        "connection that opens with the HTTP/2 preface); TLS listeners choose by "
        "`tls.alpn`. false: HTTP/1.1 only.",
    )
