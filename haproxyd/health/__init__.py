"""Health probing: active checks per pool and per node, passive outlier detection.

The daemon builds one `HealthScheduler` per node (in the main process), calls `update`
with the live pools and their configs, then `start`; see `scheduler.py` for the rules.
"""

from haproxyd.health.base import NODE_TYPES, REGISTRY, Check, CheckResult, create_check
from haproxyd.health.passive import PassiveDetector
from haproxyd.health.scheduler import HealthScheduler
from haproxyd.health.session import CheckStatus, HealthEvent, NodeHealth

__all__ = [
    "NODE_TYPES",
    "REGISTRY",
    "Check",
    "CheckResult",
    "CheckStatus",
    "HealthEvent",
    "HealthScheduler",
    "NodeHealth",
    "PassiveDetector",
    "create_check",
]
