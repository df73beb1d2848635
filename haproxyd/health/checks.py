"""Imports every check-type module so that each registers itself in `base.REGISTRY`."""

from haproxyd.health import (  # noqa: F401
    agent,
    database,
    grpc,
    http,
    node,
    redis_check,
    script,
    tcp,
)
