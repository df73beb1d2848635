"""Imports every strategy module so that each registers itself in `STRATEGIES`."""

from haproxyd.failover import active_active, active_passive, manual, multi_active  # noqa: F401
