"""haproxyd configuration: YAML in, typed and validated frozen models out.

Everything the rest of the daemon needs is re-exported here; the models themselves
live in `schema.py` (one class per section, every field described).
"""

from haproxyd.config.errors import ConfigError, ConfigIssue
from haproxyd.config.loader import load_config, load_config_text
from haproxyd.config.schema import (
    AccessLogConfig,
    AdminConfig,
    BackendConfig,
    BalancerConfig,
    ClusterConfig,
    Config,
    FailoverConfig,
    HealthCheckConfig,
    ListenerConfig,
    PoolConfig,
    RouteConfig,
    default_config,
    validate_document,
)
from haproxyd.config.types import Address, Duration

__all__ = [
    "AccessLogConfig",
    "Address",
    "AdminConfig",
    "BackendConfig",
    "BalancerConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Duration",
    "FailoverConfig",
    "HealthCheckConfig",
    "ListenerConfig",
    "PoolConfig",
    "RouteConfig",
    "default_config",
    "load_config",
    "load_config_text",
    "validate_document",
]
