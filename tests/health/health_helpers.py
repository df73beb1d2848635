"""Helpers shared by the health tests (imported by name: pytest puts this directory on
sys.path). Fixtures live in conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from haproxyd.balancer.base import create as create_balancer
from haproxyd.balancer.state import Backend, Pool
from haproxyd.config.schema import HealthCheckConfig, PassiveConfig

PG_ADDR = ("127.0.0.1", 5432)
MYSQL_ADDR = ("127.0.0.1", 3306)

def hc(type: str, **fields: Any) -> HealthCheckConfig:
    """A health check config, validated as the file's would be."""
    return TypeAdapter(HealthCheckConfig).validate_python({"type": type, **fields})


def passive(**fields: Any) -> PassiveConfig:
    """A passive outlier-detection config."""
    return PassiveConfig(**fields)


def pool_config(checks: list[Any] = (), passive_config: Any = None) -> Any:
    """What the scheduler reads of a PoolConfig."""
    return SimpleNamespace(health_checks=list(checks), passive=passive_config)


def make_pool(name: str, ports: list[int], host: str = "127.0.0.1", **kw: Any) -> Pool:
    backends = [
        Backend(f"{name}-{i}", host, port, pool_name=name, **kw) for i, port in enumerate(ports)
    ]
    return Pool(name, create_balancer("round_robin"), backends)


def backend(port: int, host: str = "127.0.0.1", id: str = "b1", pool: str = "p") -> Backend:
    return Backend(id, host, port, pool_name=pool)


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
) -> Any:
    """Poll `predicate` until it is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    return free_port()


def port_open(addr: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(addr, timeout=0.5):
        return True
    return False


@dataclasses.dataclass
class Stub:
    """A controllable HTTP backend: answers `status` with `body`, records requests."""

    status: int = 200
    body: str = "ok"
    delay: float = 0.0
    requests: list[tuple[float, str, dict[str, str]]] = dataclasses.field(default_factory=list)
    peers: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # per request
    active: int = 0
    max_active: int = 0
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((time.monotonic(), request.path, dict(request.headers)))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(tuple(peer[:2]) if peer else ("", 0))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.Response(status=self.status, text=self.body)
        finally:
            self.active -= 1
