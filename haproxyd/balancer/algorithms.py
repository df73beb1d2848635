"""Imports every algorithm module so that each registers itself in `REGISTRY`."""

from haproxyd.balancer import (  # noqa: F401
    ip_hash,
    least_connections,
    least_response_time,
    random_choice,
    ring,
    round_robin,
    url_hash,
    weighted_round_robin,
)
