"""`health_checks:` (per pool), `node_checks:` and `passive:`: one model per check type,
selected by `type`."""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from haproxyd.config.fields import TOKEN_RE, Section
from haproxyd.config.types import Duration

NODE_CHECK_TYPES = ("disk_space", "memory_usage", "system_metrics", "custom_script")
"""Health check types that can judge the proxy's own host (allowed in `node_checks`)."""

_STATUS_RANGE = re.compile(r"\s*(\d{3})\s*-\s*(\d{3})\s*")


def _regex(value: str | None) -> str | None:
    # Health checks match against the bytes read, so compile as bytes, like they do.
    if value is not None:
        try:
            re.compile(value.encode())
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


_UNSAFE_IN_HEAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB


def _head_value(name: str, value: str) -> None:
    """A value for a request head: no CR, LF or other control character, Latin-1."""
    if _UNSAFE_IN_HEAD.search(value):
        raise ValueError(f"header {name!r}: value must not contain CR, LF or control characters")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name!r}: value must be Latin-1 text") from None


def _status_spec(value: Any) -> int | str:
    """`200`, `"200"` -> 200; `"200-399"` stays a range string (lowest first)."""
    if isinstance(value, bool):
        raise ValueError("expected a status code such as 200 or a range such as '200-399'")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        code = int(value)
        if not 100 <= code <= 599:
            raise ValueError(f"status code {code} is outside 100-599")
        return code
    match = _STATUS_RANGE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"invalid status {value!r}: expected a code such as 200 or a range such as '200-399'"
        )
    low, high = int(match.group(1)), int(match.group(2))
    if not 100 <= low <= high <= 599:
        raise ValueError(f"invalid status range {value!r}: expected low-high within 100-599")
    return f"{low}-{high}"


def _command(value: Any) -> Any:
    """A non-empty argv list, or a non-empty string split like a shell would."""
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command: {exc}") from None
        if not words:
            raise ValueError("the command is empty")
    elif isinstance(value, list):
        if not value:
            raise ValueError("the command is empty")
        if not all(isinstance(word, str) for word in value):
            raise ValueError("every word of a command list must be a string")
    else:
        raise ValueError("expected a command string or a list of strings")
    return value


class CheckBase(Section):
    """Fields common to every health check."""

    interval: Duration = Field(5.0, gt=0, description="Time between probes.")
    timeout: Duration = Field(1.0, gt=0, description="A probe slower than this fails.")
    rise: int = Field(2, ge=1, description="Consecutive passes that mark a target up.")
    fall: int = Field(3, ge=1, description="Consecutive failures that mark a target down.")
    down_interval: Duration | None = Field(
        None, gt=0, description="Interval while the target is down (default: interval)."
    )
    fast_interval: Duration | None = Field(
        None, gt=0, description="Interval while a state change is being confirmed."
    )
    jitter: float = Field(
        0.1, ge=0, le=1, description="Random spread of each interval, as a fraction of it."
    )
    init_state: Literal["checking", "up"] = Field(
        "checking", description="State before the first verdict ('up' = trust until it fails)."
    )


_Port = Annotated[int, Field(ge=1, le=65535)]


class HttpCheck(CheckBase):
    """An HTTP request; passes on an expected status (and body)."""

    type: Literal["http"] = Field(description="Check type.")
    path: str = Field("/", description="Request path.")
    method: str = Field("GET", pattern=TOKEN_RE.pattern, description="Request method.")
    host: str | None = Field(None, description="Host header (default: the backend address).")
    expect_status: list[Annotated[int | str, BeforeValidator(_status_spec)]] = Field(
        default_factory=lambda: [200],
        min_length=1,
        description='Passing statuses: codes or "low-high" ranges, e.g. [200, "300-399"].',
    )
    expect_body: Annotated[str | None, AfterValidator(_regex)] = Field(
        None, description="Regular expression the body must match."
    )
    tls: bool = Field(False, description="Probe over HTTPS.")
    verify_tls: bool = Field(True, description="Verify the backend's certificate.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    port: _Port | None = Field(None, description="Probe this port instead of the backend's.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with '/'")
        if _UNSAFE_IN_HEAD.search(value) or " " in value:
            raise ValueError("path must not contain spaces or control characters")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None:
            _head_value("host", value)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        # The probe's request is built from these bytes as they are: nothing may end a
        # header line early or smuggle another one in.
        for name, text in value.items():
            if not TOKEN_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            _head_value(name, text)
        return value


class TcpCheck(CheckBase):
    """A TCP connect, optionally a send and an expected reply."""

    type: Literal["tcp"] = Field(description="Check type.")
    send: str | None = Field(None, description="Bytes to send after connecting.")
    expect: Annotated[str | None, AfterValidator(_regex)] = Field(
        None, description="Regular expression the bytes read must match."
    )
    port: _Port | None = Field(None, description="Probe this port instead of the backend's.")


class DatabaseCheck(CheckBase):
    """A database login (and query) through the server's own protocol."""

    type: Literal["database"] = Field(description="Check type.")
    flavor: Literal["postgresql", "mysql"] = Field(description="The database server.")
    user: str | None = Field(None, description="User to log in as.")
    password: str | None = Field(None, repr=False, description="Password of `user`.")
    database: str | None = Field(None, description="Database to open.")
    port: _Port | None = Field(None, description="Probe this port instead of the backend's.")


class RedisCheck(CheckBase):
    """A Redis PING (and role check)."""

    type: Literal["redis"] = Field(description="Check type.")
    password: str | None = Field(None, repr=False, description="AUTH password.")
    db: int = Field(0, ge=0, description="Database number to SELECT.")
    expect_role: Literal["master", "slave"] | None = Field(
        None, description="Pass only when the server has this replication role."
    )
    port: _Port | None = Field(None, description="Probe this port instead of the backend's.")


class GrpcCheck(CheckBase):
    """A gRPC health check (grpc.health.v1 `Check`) over HTTP/2; passes on SERVING."""

    type: Literal["grpc"] = Field(description="Check type.")
    service: str = Field(
        "",
        description='Service name asked about; "" asks about the server as a whole.',
    )
    authority: str | None = Field(
        None, description=":authority of the call (default: the backend address)."
    )
    tls: bool = Field(False, description="Probe over TLS (h2 by ALPN) instead of cleartext h2c.")
    verify_tls: bool = Field(True, description="Verify the backend's certificate.")
    port: _Port | None = Field(None, description="Probe this port instead of the backend's.")

    @field_validator("authority")
    @classmethod
    def _authority(cls, value: str | None) -> str | None:
        if value is not None:
            _head_value("authority", value)
        return value


class SystemMetricsCheck(CheckBase):
    """Load reported by an agent on the target (or this host in node_checks)."""

    type: Literal["system_metrics"] = Field(description="Check type.")
    port: _Port | None = Field(None, description="Agent port (default: the backend's port).")
    send: str | None = Field(None, description="Request sent to the agent.")
    max_cpu_percent: float | None = Field(
        None, ge=0, le=100, description="Fail above this CPU use."
    )
    max_load1: float | None = Field(None, ge=0, description="Fail above this 1-minute load.")


class CustomScriptCheck(CheckBase):
    """An operator's command: exit status 0 passes."""

    type: Literal["custom_script"] = Field(description="Check type.")
    command: Annotated[list[str] | str, BeforeValidator(_command)] = Field(
        description="argv list, or one string split like a shell would (no shell runs)."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")


class DiskSpaceCheck(CheckBase):
    """Free space of a filesystem on this host."""

    type: Literal["disk_space"] = Field(description="Check type.")
    path: str = Field("/", description="A path on the filesystem to watch.")
    min_free_percent: float | None = Field(
        None, ge=0, le=100, description="Fail below this share free."
    )
    min_free_bytes: int | None = Field(None, ge=0, description="Fail below this many bytes free.")

    @model_validator(mode="after")
    def _has_threshold(self) -> DiskSpaceCheck:
        if self.min_free_percent is None and self.min_free_bytes is None:
            raise ValueError("set min_free_percent or min_free_bytes (or both)")
        return self


class MemoryUsageCheck(CheckBase):
    """Memory use of this host."""

    type: Literal["memory_usage"] = Field(description="Check type.")
    max_percent: float = Field(90.0, gt=0, le=100, description="Fail above this use.")


HealthCheckConfig = Annotated[
    HttpCheck
    | TcpCheck
    | DatabaseCheck
    | RedisCheck
    | GrpcCheck
    | SystemMetricsCheck
    | CustomScriptCheck
    | DiskSpaceCheck
    | MemoryUsageCheck,
    Field(discriminator="type"),
]
"""One health check; `type` selects the kind and its fields."""


def node_check(check: Any) -> Any:
    if check.type not in NODE_CHECK_TYPES:
        raise ValueError(
            f"type {check.type!r} probes a backend and cannot judge this node; node_checks "
            f"allow {', '.join(NODE_CHECK_TYPES)} (put it in a pool's health_checks)"
        )
    return check


class PassiveConfig(Section):
    """Outlier detection from live traffic (Envoy's outlier detection, HAProxy observe)."""

    consecutive_failures: int = Field(
        5, ge=1, description="Consecutive failed requests that eject a backend."
    )
    ejection: Duration = Field(
        30.0, gt=0, description="Base ejection time (grows with repeated ejections)."
    )
    max_ejection_percent: float = Field(
        50.0, ge=0, le=100, description="Never eject more than this share of a pool."
    )
    on_5xx: bool = Field(False, description="Count 5xx responses as failures too.")
