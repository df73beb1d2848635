"""What several configuration sections share: the frozen, closed base model, the
address types, the patterns of ids and tokens, and the field validators used by more
than one section (one section's own validators live beside its model).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from haproxyd.config.types import Address, AddressField

DEFAULT_LISTEN = Address("127.0.0.1", 8080)
DEFAULT_ADMIN = Address("127.0.0.1", 9901)

ID_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_STATUS_RANGE = re.compile(r"\s*(\d{3})\s*-\s*(\d{3})\s*")


class Section(BaseModel):
    """Base of every section: unknown keys are errors, and a model is frozen so that a
    running component can keep its section while a reload builds the next one."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# -- field validators shared by several sections --


def valid_host(host: str) -> str:
    """An IP literal or a DNS name (RFC 1123 labels; `_` tolerated as resolvers do)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if host == "*":
        raise ValueError("'*' is not an address: use 0.0.0.0 (all IPv4) or [::] (all IPv6)")
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"invalid host {host!r}: expected an IP address or a DNS name")
    return host


def address_host(address: Address) -> Address:
    valid_host(address.host)
    return address


HostAddress = Annotated[AddressField, AfterValidator(address_host)]
"""An address whose host is an IP literal or a well-formed DNS name."""


def _target_port(address: Address) -> Address:
    # Port 0 asks the OS for a free port when listening; as a destination it is no port.
    if address.port == 0:
        raise ValueError(f"invalid port in {str(address)!r}: a backend needs a port of 1-65535")
    return address


TargetAddress = Annotated[HostAddress, AfterValidator(_target_port)]
"""An address to connect to: a HostAddress with a real port (1-65535)."""


def valid_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid network {value!r}: expected a CIDR such as 10.0.0.0/8") from None
    return value


def readable_file(value: str, info: ValidationInfo) -> str:
    """The absolute path of an existing, readable file (relative to the config file)."""
    base = (info.context or {}).get("base_dir") or Path.cwd()
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(base) / path
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file not readable: {path}")
    return str(path)
