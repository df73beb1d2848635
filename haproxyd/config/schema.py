"""The configuration as typed, validated, immutable models (pydantic v2).

Everything the daemon reads from its file is checked here, before any part of the
daemon sees it (Envoy validates eagerly in the factory; Traefik documents each field
where it is declared): unknown keys are errors, so a typo such as `algoritm:` cannot
silently fall back to a default; every field carries a description; models are frozen,
so a running component can keep a reference to its section while a reload builds the
next one. `validate_document` is the single entry point that applies environment
overrides, validates, and turns pydantic's errors into `ConfigIssue`s with YAML paths.

Durations accept `250ms`, `5s`, `1m` or seconds; addresses accept `host:port` and
`[v6]:port` (see `types.py`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from haproxyd.config.crosscheck import cross_check
from haproxyd.config.env import apply_env_overrides
from haproxyd.config.errors import (
    ConfigError,
    ConfigIssue,
    LineLookup,
    issues_from_validation_error,
)
from haproxyd.config.types import Address, AddressField, Duration, parse_address
from haproxyd.proxy.target import route_host, route_path

DEFAULT_LISTEN = Address("127.0.0.1", 8080)
DEFAULT_ADMIN = Address("127.0.0.1", 9901)

_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_STATUS_RANGE = re.compile(r"\s*(\d{3})\s*-\s*(\d{3})\s*")

EXTENSION_PREFIX = "x-"
"""Top-level keys starting with this are ignored (a home for YAML anchors)."""

NODE_CHECK_TYPES = ("disk_space", "memory_usage", "system_metrics", "custom_script")
"""Health check types that can judge the proxy's own host (allowed in `node_checks`)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- field validators shared by several sections --


def _valid_host(host: str) -> str:
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


def _address_host(address: Address) -> Address:
    _valid_host(address.host)
    return address


HostAddress = Annotated[AddressField, AfterValidator(_address_host)]
"""An address whose host is an IP literal or a well-formed DNS name."""


def _target_port(address: Address) -> Address:
    # Port 0 asks the OS for a free port when listening; as a destination it is no port.
    if address.port == 0:
        raise ValueError(f"invalid port in {str(address)!r}: a backend needs a port of 1-65535")
    return address


TargetAddress = Annotated[HostAddress, AfterValidator(_target_port)]
"""An address to connect to: a HostAddress with a real port (1-65535)."""


def _peer(value: str) -> str:
    _address_host(parse_address(value))
    return value.strip()


def _regex(value: str | None) -> str | None:
    # Health checks match against the bytes read, so compile as bytes, like they do.
    if value is not None:
        try:
            re.compile(value.encode())
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid network {value!r}: expected a CIDR such as 10.0.0.0/8") from None
    return value


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


def _workers(value: Any) -> Any:
    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"workers must be an integer >= 1 or 'auto' (got {value!r})")


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


def _readable_file(value: str, info: ValidationInfo) -> str:
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


def _host_name(value: str) -> str:
    """An `allowed_hosts` entry as Host headers are compared: lower case, no trailing
    dot, IPv6 without brackets."""
    name = value.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return _valid_host(name)


# -- sections --


def _default_node_id() -> str:
    name = socket.gethostname()
    return name if _ID_RE.fullmatch(name) else "haproxyd"


class NodeConfig(_Section):
    """This proxy instance."""

    id: str = Field(
        default_factory=_default_node_id,
        pattern=_ID_RE.pattern,
        description="Node name in the cluster, logs and the admin API; default: the "
        "hostname. The environment variable NODE_ID wins over the file.",
    )
    region: str | None = Field(
        None, min_length=1, description="Region of this node, used by multi-region balancing."
    )


class TLSConfig(_Section):
    """TLS termination on a listener. Relative paths are relative to the config file."""

    cert: str = Field(description="Certificate chain (PEM), leaf first.")
    key: str = Field(description="Private key (PEM, unencrypted) of the certificate.")

    @field_validator("cert", "key")
    @classmethod
    def _existing_file(cls, value: str, info: ValidationInfo) -> str:
        return _readable_file(value, info)

    @model_validator(mode="after")
    def _loads(self) -> TLSConfig:
        # Like `nginx -t`, catch a bad PEM or a key that does not match before startup.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key, password=b"")
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"certificate and key do not load together: {exc}") from None
        return self


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
        path = _readable_file(value, info)
        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"not a PEM CA bundle: {exc}") from None
        return path


class ListenerConfig(_Section):
    """One socket accepting client traffic."""

    address: HostAddress = Field(
        description="host:port to listen on ([v6]:port for IPv6; port 0 = any free port)."
    )
    tls: TLSConfig | None = Field(None, description="Terminate TLS on this listener.")


class AdminConfig(_Section):
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


class Timeouts(_Section):
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


class Limits(_Section):
    """Size and concurrency limits of the data plane."""

    max_header_bytes: int = Field(
        65536, ge=1024, description="Largest request head (request line + headers); 431 above."
    )
    max_body_bytes: int = Field(0, ge=0, description="Largest request body; 0 = unlimited.")
    max_connections: int = Field(
        10000, ge=1, description="Concurrent client connections per worker."
    )


class AccessLogConfig(_Section):
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


class ResolverConfig(_Section):
    """DNS resolution of backend host names."""

    interval: Duration = Field(30.0, gt=0, description="Re-resolve DNS names this often.")
    nameservers: list[Annotated[str, AfterValidator(_nameserver)]] = Field(
        default_factory=list, description="Nameserver IPs (ip or ip:port); empty = the system's."
    )
    timeout: Duration = Field(2.0, gt=0, description="One DNS query.")


class RouteMatch(_Section):
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
        return _valid_host(host)

    @field_validator("path_prefix")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        return value


class RouteConfig(_Section):
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


class BalancerConfig(_Section):
    """How a pool picks a backend for each request."""

    algorithm: Literal[
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "least_response_time",
        "ip_hash",
        "url_hash",
        "random",
        "consistent_hash",
    ] = Field("round_robin", description="The balancing algorithm.")
    hash_key: str | None = Field(
        None,
        description='consistent_hash input: "ip", "url", "header:NAME" or "cookie:NAME" '
        '(default "ip" for consistent_hash).',
    )
    virtual_nodes: int = Field(
        160, ge=1, description="consistent_hash ring points per unit of weight."
    )
    balance_factor: float | None = Field(
        None,
        gt=1.0,
        description="Bounded-load consistent hashing: no backend above factor x average load.",
    )
    choices: int = Field(
        1, ge=1, le=2, description="2 = power of two choices (random / least_* algorithms)."
    )
    hash_query: bool = Field(True, description="url_hash / url key: include the query string.")
    trusted_proxies: list[Annotated[str, AfterValidator(_cidr)]] = Field(
        default_factory=list,
        description="CIDRs whose X-Forwarded-For is believed for the client IP of ip hashing.",
    )
    slow_start: Duration = Field(
        0.0, ge=0, description="Ramp a recovered backend's weight up over this time; 0 = off."
    )

    @model_validator(mode="before")
    @classmethod
    def _consistent_hash_default_key(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and data.get("algorithm") == "consistent_hash"
            and data.get("hash_key") is None
        ):
            return {**data, "hash_key": "ip"}
        return data

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, value: str | None) -> str | None:
        if value is None or value in ("ip", "url"):
            return value
        kind, sep, name = value.partition(":")
        if kind in ("header", "cookie") and sep and _TOKEN_RE.fullmatch(name):
            return value
        raise ValueError(
            f"invalid hash_key {value!r}: expected ip, url, header:NAME or cookie:NAME"
        )


class _CheckBase(_Section):
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


class HttpCheck(_CheckBase):
    """An HTTP request; passes on an expected status (and body)."""

    type: Literal["http"] = Field(description="Check type.")
    path: str = Field("/", description="Request path.")
    method: str = Field("GET", pattern=_TOKEN_RE.pattern, description="Request method.")
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
            if not _TOKEN_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            _head_value(name, text)
        return value


class TcpCheck(_CheckBase):
    """A TCP connect, optionally a send and an expected reply."""

    type: Literal["tcp"] = Field(description="Check type.")
    send: str | None = Field(None, description="Bytes to send after connecting.")
    expect: Annotated[str | None, AfterValidator(_regex)] = Field(
        None, description="Regular expression the bytes read must match."
    )
    port: _Port | None = Field(None, description="Probe this port instead of the backend's.")


class DatabaseCheck(_CheckBase):
    """A database login (and query) through the server's own protocol."""

    type: Literal["database"] = Field(description="Check type.")
    flavor: Literal["postgresql", "mysql"] = Field(description="The database server.")
    user: str | None = Field(None, description="User to log in as.")
    password: str | None = Field(None, repr=False, description="Password of `user`.")
    database: str | None = Field(None, description="Database to open.")
    port: _Port | None = Field(None, description="Probe this port instead of the backend's.")


class RedisCheck(_CheckBase):
    """A Redis PING (and role check)."""

    type: Literal["redis"] = Field(description="Check type.")
    password: str | None = Field(None, repr=False, description="AUTH password.")
    db: int = Field(0, ge=0, description="Database number to SELECT.")
    expect_role: Literal["master", "slave"] | None = Field(
        None, description="Pass only when the server has this replication role."
    )
    port: _Port | None = Field(None, description="Probe this port instead of the backend's.")


class SystemMetricsCheck(_CheckBase):
    """Load reported by an agent on the target (or this host in node_checks)."""

    type: Literal["system_metrics"] = Field(description="Check type.")
    port: _Port | None = Field(None, description="Agent port (default: the backend's port).")
    send: str | None = Field(None, description="Request sent to the agent.")
    max_cpu_percent: float | None = Field(
        None, ge=0, le=100, description="Fail above this CPU use."
    )
    max_load1: float | None = Field(None, ge=0, description="Fail above this 1-minute load.")


class CustomScriptCheck(_CheckBase):
    """An operator's command: exit status 0 passes."""

    type: Literal["custom_script"] = Field(description="Check type.")
    command: Annotated[list[str] | str, BeforeValidator(_command)] = Field(
        description="argv list, or one string split like a shell would (no shell runs)."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")


class DiskSpaceCheck(_CheckBase):
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


class MemoryUsageCheck(_CheckBase):
    """Memory use of this host."""

    type: Literal["memory_usage"] = Field(description="Check type.")
    max_percent: float = Field(90.0, gt=0, le=100, description="Fail above this use.")


HealthCheckConfig = Annotated[
    HttpCheck
    | TcpCheck
    | DatabaseCheck
    | RedisCheck
    | SystemMetricsCheck
    | CustomScriptCheck
    | DiskSpaceCheck
    | MemoryUsageCheck,
    Field(discriminator="type"),
]
"""One health check; `type` selects the kind and its fields."""


def _node_check(check: Any) -> Any:
    if check.type not in NODE_CHECK_TYPES:
        raise ValueError(
            f"type {check.type!r} probes a backend and cannot judge this node; node_checks "
            f"allow {', '.join(NODE_CHECK_TYPES)} (put it in a pool's health_checks)"
        )
    return check


class PassiveConfig(_Section):
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


class FailoverConfig(_Section):
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


class RetriesConfig(_Section):
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


class UpstreamKeepalive(_Section):
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


class ClientRegionConfig(_Section):
    """How the region of a client is found."""

    header: str | None = Field(
        None, pattern=_TOKEN_RE.pattern, description="Request header naming the region."
    )
    cidrs: dict[str, list[Annotated[str, AfterValidator(_cidr)]]] = Field(
        default_factory=dict, description="Region -> client networks (CIDRs)."
    )


class RegionsConfig(_Section):
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


class BackendConfig(_Section):
    """One upstream server."""

    id: str = Field(
        pattern=_ID_RE.pattern, description="Unique id (across all pools), [A-Za-z0-9_.:-]+."
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


class PoolConfig(_Section):
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


class ClusterConfig(_Section):
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


class Config(_Section):
    """The whole configuration file."""

    node: NodeConfig = Field(default_factory=NodeConfig, description="This node.")
    listeners: list[ListenerConfig] = Field(
        default_factory=lambda: [ListenerConfig(address=DEFAULT_LISTEN)],
        min_length=1,
        description="Proxy listeners.",
    )
    admin: AdminConfig = Field(default_factory=AdminConfig, description="The admin API.")
    workers: Annotated[int, BeforeValidator(_workers)] = Field(
        1, ge=1, description="Processes sharing the listeners (SO_REUSEPORT); 'auto' = cores."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Time limits.")
    limits: Limits = Field(default_factory=Limits, description="Size and connection limits.")
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig, description="Access log.")
    resolver: ResolverConfig = Field(default_factory=ResolverConfig, description="DNS.")
    environment: str = Field(
        "production",
        min_length=1,
        description="Deployment name shown by the admin API (env ENVIRONMENT wins).",
    )
    routes: list[RouteConfig] = Field(
        default_factory=list,
        description="Routing rules, first match wins; none = everything to the first pool.",
    )
    pools: dict[str, PoolConfig] = Field(
        min_length=1, description="Backend pools by name; the first is the default."
    )
    node_checks: list[Annotated[HealthCheckConfig, AfterValidator(_node_check)]] = Field(
        default_factory=list,
        description=f"Checks of this node itself ({', '.join(NODE_CHECK_TYPES)}).",
    )
    on_unhealthy: Literal["ignore", "shed"] = Field(
        "ignore", description="When node_checks fail: keep serving, or shed load with 503."
    )
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Clustering.")

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler: ModelWrapValidatorHandler[Config]) -> Config:
        """Run the cross-section checks even when fields fail, and report both at once."""
        if isinstance(data, cls):
            return handler(data)
        if isinstance(data, Mapping):
            # Top-level `x-` keys are extension fields, as in Docker Compose: a place to
            # define YAML anchors; they are dropped, every other unknown key is an error.
            data = {k: v for k, v in data.items() if not str(k).startswith(EXTENSION_PREFIX)}
        problems = cross_check(data, default_listen=DEFAULT_LISTEN, default_admin=DEFAULT_ADMIN)
        if not problems:
            return handler(data)
        line_errors: list[InitErrorDetails] = []
        try:
            handler(data)
        except ValidationError as exc:
            line_errors = [
                InitErrorDetails(
                    type=error["type"],
                    loc=error["loc"],
                    input=error["input"],
                    ctx=error.get("ctx", {}),
                )
                for error in exc.errors(include_url=False)
            ]
        for path, message in problems:
            line_errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("cross_check", message),
                    loc=path,
                    input=data,
                )
            )
        raise ValidationError.from_exception_data(cls.__name__, line_errors)

    def pool_for(self, host: str | None, path: str) -> str:
        """Name of the pool serving a request: the first route whose host (ignoring case
        and a `:port` suffix; None = any) and path prefix match. Without routes, the
        first pool serves everything. Raises LookupError when routes exist and none
        matches: no pool serves that request."""
        if not self.routes:
            return next(iter(self.pools))
        name = route_host(host.strip().encode("latin-1")) if host else None
        normal = route_path(path.encode("latin-1"))
        for route in self.routes:
            wanted = route.match.host
            if wanted is not None and route_host(wanted.encode()) != name:
                continue
            if normal.startswith(route.match.path_prefix.encode()):
                return route.pool
        raise LookupError(f"no route matches host {host!r} and path {path!r}")


def validate_document(
    data: Any,
    *,
    source: str,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    lines: LineLookup | None = None,
) -> Config:
    """Validate a configuration document (parsed YAML or JSON) into a Config.

    Environment overrides from `env` (default: os.environ) are applied first; relative
    file paths resolve against `base_dir` (default: the working directory); `lines`
    maps YAML paths to line numbers when the document came from a file. Raises
    ConfigError listing every problem.
    """
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            [
                ConfigIssue(
                    "",
                    lines(()) if lines is not None and data is not None else None,
                    f"the configuration must be a mapping of sections (node, listeners, "
                    f"pools, ...), not {kind}",
                    source,
                )
            ]
        )
    document, overridden = apply_env_overrides(data, os.environ if env is None else env)
    context = {"base_dir": Path(base_dir) if base_dir is not None else None}
    try:
        return Config.model_validate(document, context=context)
    except ValidationError as exc:
        issues = issues_from_validation_error(
            exc, document, model=Config, source=source, lines=lines, env_paths=overridden
        )
        raise ConfigError(issues) from None


def default_config() -> Config:
    """The embedded default: one listener on 127.0.0.1:8080, the admin API on
    127.0.0.1:9901 and one round-robin pool `web` without backends (the demo adds them).
    Environment overrides do not apply: it is the same everywhere."""
    return Config.model_validate(
        {"pools": {"web": {"balancer": {"algorithm": "round_robin"}, "backends": []}}}
    )
