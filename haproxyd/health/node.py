"""Node checks of the proxy's own host: `disk_space` and `memory_usage` (psutil).

They make the node unhealthy (`/api/v1/ha/status` says `healthy: false`; with
`on_unhealthy: shed` the data plane refuses new requests), the way a Kubernetes node
reports DiskPressure/MemoryPressure. `statvfs` can block on a hung network file system,
so the disk probe runs in a thread and the scheduler's timeout still applies.
Cost: one `statvfs` or one read of /proc/meminfo per probe.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import psutil

from haproxyd.health.base import Check, CheckResult, register

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.sections.health import DiskSpaceCheck as DiskSpaceConfig
    from haproxyd.config.sections.health import MemoryUsageCheck as MemoryUsageConfig


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}"


@register
class DiskSpaceCheck(Check):
    type = "disk_space"
    node_capable = True
    backend_capable = False

    def __init__(self, config: DiskSpaceConfig) -> None:
        super().__init__(config)
        self.path = config.path
        self.min_free_percent = config.min_free_percent
        self.min_free_bytes = config.min_free_bytes
        if self.min_free_percent is None and self.min_free_bytes is None:
            raise ValueError("disk_space needs min_free_percent or min_free_bytes")

    def describe(self) -> str:
        return f"disk_space {self.path}"

    async def probe(self, backend: Backend | None) -> CheckResult:
        start = time.perf_counter()
        try:
            usage = await asyncio.to_thread(psutil.disk_usage, self.path)
        except OSError as exc:
            return CheckResult(False, f"{self.path}: {exc.strerror or exc}")
        latency = time.perf_counter() - start
        free_percent = 100.0 * usage.free / usage.total if usage.total else 0.0
        summary = f"{self.path}: {_size(usage.free)} free ({free_percent:.1f}%)"
        problems = []
        if self.min_free_percent is not None and free_percent < self.min_free_percent:
            problems.append(f"below {self.min_free_percent:g}%")
        if self.min_free_bytes is not None and usage.free < self.min_free_bytes:
            problems.append(f"below {_size(self.min_free_bytes)}")
        if problems:
            return CheckResult(False, f"{summary}, {' and '.join(problems)}", latency)
        return CheckResult(True, summary, latency)


@register
class MemoryUsageCheck(Check):
    type = "memory_usage"
    node_capable = True
    backend_capable = False

    def __init__(self, config: MemoryUsageConfig) -> None:
        super().__init__(config)
        self.max_percent = config.max_percent

    def describe(self) -> str:
        return f"memory_usage <= {self.max_percent:g}%"

    async def probe(self, backend: Backend | None) -> CheckResult:
        start = time.perf_counter()
        memory = psutil.virtual_memory()
        latency = time.perf_counter() - start
        summary = f"memory {memory.percent:.1f}% used ({_size(memory.available)} available)"
        if memory.percent > self.max_percent:
            return CheckResult(False, f"{summary} > {self.max_percent:g}%", latency)
        return CheckResult(True, summary, latency)
