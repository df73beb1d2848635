"""What the admin API needs from the process it runs in (Envoy hands each component
the interface it needs, not `Server::Instance`; `cluster.manager.ClusterHost` does the
same). `Daemon` implements it; a test may hand any object with these members.

`health`, `failover`, `cluster` and `workers` are None where the part does not run (no
health checks yet, a standalone node, one process): the admin API reads them on every
call, so it picks them up once they exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from haproxyd.admin.ready import ReadinessHost

if TYPE_CHECKING:
    from haproxyd.cluster.manager import ClusterManager
    from haproxyd.config.schema import Config
    from haproxyd.failover.events import EventLog
    from haproxyd.failover.machine import FailoverMachine
    from haproxyd.health.scheduler import HealthScheduler
    from haproxyd.proxy.runtime import ProxyRuntime
    from haproxyd.supervisor import WorkerSet


class AdminHost(ReadinessHost, Protocol):
    """The running configuration, the live parts the views read, the one way to
    change the configuration (`reload`), and what `GET /ready` asks (ReadinessHost)."""

    config: Config
    config_version: int
    config_path: Path | None
    started: float  # time.time() at start
    reloads: dict[str, int]  # "ok" / "error" -> count
    last_reload: dict[str, object]  # result, errors, time of the last one
    runtime: ProxyRuntime | None
    health: HealthScheduler | None
    events: EventLog
    failover: FailoverMachine | None
    cluster: ClusterManager | None
    workers: WorkerSet | None

    async def reload(self, cfg: Config | None = None) -> list[str]:
        """Apply `cfg` (None: re-read the file); the errors, empty when applied."""
        ...
