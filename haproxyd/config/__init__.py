"""haproxyd configuration: YAML in, typed and validated frozen models out.

Everything the rest of the daemon needs is re-exported here; the models themselves
live in `schema.py` and the section modules it assembles (`sections/`).

The names are resolved on first use (PEP 562), not at import: the balancer modules
declare their options with this package's field types (`config.types`,
`config.fields`), while the schema builds the balancer section from the balancer
registry; importing the package eagerly would make that a cycle whenever a balancer
module is imported first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Where the names live (the imports above say which module holds which).
_MODULES = ("errors", "loader", "types", "schema")

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name, None)
            if value is not None:
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
