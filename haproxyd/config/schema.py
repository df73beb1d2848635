"""The configuration as typed, validated, immutable models (pydantic v2).

Everything the daemon reads from its file is checked here, before any part of the
daemon sees it (Envoy validates eagerly in the factory; Traefik documents each field
where it is declared): unknown keys are errors, so a typo such as `algoritm:` cannot
silently fall back to a default; every field carries a description; models are frozen,
so a running component can keep a reference to its section while a reload builds the
next one. `validate_document` is the single entry point that applies environment
overrides, validates, and turns pydantic's errors into `ConfigIssue`s with YAML paths.

Each section's models live in `haproxyd.config.sections` (one module per section);
this module assembles them into `Config` and re-exports every model, so the rest of
the daemon imports them from here. The balancer section is built from the balancer
registry (`haproxyd.balancer.registry`).

Durations accept `250ms`, `5s`, `1m` or seconds; addresses accept `host:port` and
`[v6]:port` (see `types.py`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
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
from haproxyd.config.fields import DEFAULT_ADMIN, DEFAULT_LISTEN, Section
from haproxyd.config.sections.admin import AdminConfig, AdminTLSConfig
from haproxyd.config.sections.balancer import BalancerConfig
from haproxyd.config.sections.cluster import ClusterConfig
from haproxyd.config.sections.dataplane import (
    AccessLogConfig,
    Limits,
    ResolverConfig,
    Timeouts,
)
from haproxyd.config.sections.health import (
    NODE_CHECK_TYPES,
    CustomScriptCheck,
    DatabaseCheck,
    DiskSpaceCheck,
    GrpcCheck,
    HealthCheckConfig,
    HttpCheck,
    MemoryUsageCheck,
    PassiveConfig,
    RedisCheck,
    SystemMetricsCheck,
    TcpCheck,
    node_check,
)
from haproxyd.config.sections.http2 import Http2Config
from haproxyd.config.sections.listeners import ListenerConfig, TLSConfig
from haproxyd.config.sections.node import NodeConfig
from haproxyd.config.sections.pool import (
    BackendConfig,
    ClientRegionConfig,
    FailoverConfig,
    PoolConfig,
    RegionsConfig,
    RetriesConfig,
    UpstreamKeepalive,
)
from haproxyd.config.sections.routes import RouteConfig, RouteMatch
from haproxyd.config.sections.tracing import TracingConfig
from haproxyd.proxy.target import route_host, route_path

__all__ = [
    "DEFAULT_ADMIN",
    "DEFAULT_LISTEN",
    "EXTENSION_PREFIX",
    "NODE_CHECK_TYPES",
    "AccessLogConfig",
    "AdminConfig",
    "AdminTLSConfig",
    "BackendConfig",
    "BalancerConfig",
    "ClientRegionConfig",
    "ClusterConfig",
    "Config",
    "CustomScriptCheck",
    "DatabaseCheck",
    "DiskSpaceCheck",
    "FailoverConfig",
    "GrpcCheck",
    "HealthCheckConfig",
    "HttpCheck",
    "Limits",
    "ListenerConfig",
    "MemoryUsageCheck",
    "NodeConfig",
    "PassiveConfig",
    "PoolConfig",
    "RedisCheck",
    "RegionsConfig",
    "ResolverConfig",
    "RetriesConfig",
    "RouteConfig",
    "RouteMatch",
    "SystemMetricsCheck",
    "TLSConfig",
    "TcpCheck",
    "Timeouts",
    "TracingConfig",
    "UpstreamKeepalive",
    "default_config",
    "validate_document",
]

EXTENSION_PREFIX = "x-"
"""Top-level keys starting with this are ignored (a home for YAML anchors)."""


def _workers(value: Any) -> Any:
    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"workers must be an integer >= 1 or 'auto' (got {value!r})")


class Config(Section):
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
    node_checks: list[Annotated[HealthCheckConfig, AfterValidator(node_check)]] = Field(
        default_factory=list,
        description=f"Checks of this node itself ({', '.join(NODE_CHECK_TYPES)}).",
    )
    on_unhealthy: Literal["ignore", "shed"] = Field(
        "ignore", description="When node_checks fail: keep serving, or shed load with 503."
    )
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Clustering.")
    tracing: TracingConfig = Field(
        default_factory=TracingConfig, description="Trace context and OTLP span export."
    )
    http2: Http2Config = Field(
        default_factory=Http2Config, description="Client HTTP/2 connections."
    )

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
