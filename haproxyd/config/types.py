"""Scalar types shared by every config section: durations, addresses, sizes.

They are parsed in exactly one place so that `250ms`, `5s`, `1m`, `host:port` and
`[::1]:port` mean the same thing in every section of the file.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, NamedTuple

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from `250ms`, `5s`, `1.5m`, `2h`, `1d` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number or a string such as 250ms, 5s, 1m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(
        f"invalid duration {value!r}: use a number with ms, s, m, h or d (e.g. 250ms, 5s)"
    )


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration)]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024}
_UNIT_BYTES |= {"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}


def parse_size(value: Any) -> int:
    """Bytes from `65535`, `64KiB`, `64k`, `1MiB` (binary units: a window or a buffer
    is counted in powers of two)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            unit = (match.group(2) or "b").lower()
            return int(match.group(1)) * _UNIT_BYTES[unit]
    raise ValueError(f"invalid size {value!r}: use a number of bytes or KiB, MiB (e.g. 64KiB)")


Size = Annotated[int, BeforeValidator(parse_size)]


class Address(NamedTuple):
    """A `host:port` pair; `host` may be an IPv4/IPv6 literal or a DNS name."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: Any) -> Address:
    """`host:port`, `[v6]:port`; port 0 is allowed (the OS picks one)."""
    if isinstance(value, Address):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("an address must be a string such as 127.0.0.1:8080 or [::1]:8080")
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"invalid address {value!r}: IPv6 needs the form [::1]:8080")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"invalid address {value!r}: expected host:port")
        if ":" in host:
            raise ValueError(f"invalid address {value!r}: write IPv6 addresses as [addr]:port")
    # isdigit() alone takes any script's digits ("٨٠" would be port 80).
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {value!r}: expected 0-65535")
    return Address(host, int(port_text))


ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$"

AddressField = Annotated[
    Address,
    BeforeValidator(parse_address),
    PlainSerializer(str),
    # In JSON (the admin API, its OpenAPI document) an address is its text form.
    WithJsonSchema({"type": "string", "pattern": ADDRESS_PATTERN}),
]


def is_loopback(host: str) -> bool:
    """A host only this machine can reach: `localhost` or a loopback IP (a DNS name
    other than localhost may resolve to anything, so it is not)."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
