"""Fixtures for the health tests: real servers of each kind, schedulers, a fake clock.

Servers: aiohttp backends and raw asyncio TCP servers on pre-bound port-0 sockets,
redis-server processes (a primary and a replica) started here and stopped by PID,
and private PostgreSQL and MariaDB servers (helpers/databases.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from health_helpers import Stub, bound_socket
from helpers.clock import FakeClock
from helpers.redis_server import RedisProcesses


@pytest.fixture
async def http_backend() -> Any:
    """`await http_backend(stub=None, port=0, ssl_context=None) -> Stub` (started);
    `await stop(stub)` kills it; everything is cleaned up at the end."""
    runners: list[web.AppRunner] = []

    async def start(stub: Stub | None = None, port: int = 0, ssl_context: Any = None) -> Stub:
        stub = stub or Stub()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", stub.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        sock = bound_socket(port)
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        stub.port = sock.getsockname()[1]
        stub.runner = runner
        runners.append(runner)
        return stub

    async def stop(stub: Stub) -> None:
        if stub.runner is not None:
            await stub.runner.cleanup()
            runners.remove(stub.runner)
            stub.runner = None

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def tcp_server() -> Any:
    """`await tcp_server(handler) -> port`; handler(reader, writer) is awaited per
    connection; connections and servers are closed at the end."""
    servers: list[asyncio.Server] = []
    writers: set[asyncio.StreamWriter] = set()
    tasks: set[asyncio.Task] = set()

    async def start(handler: Callable[[Any, Any], Awaitable[None]]) -> int:
        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.add(writer)
            tasks.add(asyncio.current_task())
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writers.discard(writer)
                writer.close()

        server = await asyncio.start_server(wrapped, sock=bound_socket())
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()
    for writer in list(writers):
        writer.close()
    for task in list(tasks):
        if not task.done():
            task.cancel()
    await asyncio.gather(
        *[t for t in tasks if t is not asyncio.current_task()], return_exceptions=True
    )
    for server in servers:
        await server.wait_closed()


@pytest.fixture(scope="session")
def redis_pair(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A redis-server primary and a replica of it (`--replicaof`) on free ports."""
    procs = RedisProcesses(tmp_path_factory.mktemp("redis"))
    try:
        primary = procs.spawn("primary")
        replica = procs.spawn("replica", "--replicaof", "127.0.0.1", str(primary))
        yield SimpleNamespace(primary=primary, replica=replica, pids=[p.pid for p in procs.procs])
    finally:
        procs.stop()


@pytest.fixture
def redis_spawn(tmp_path: Any) -> Any:
    """`redis_spawn(name, *args) -> port`: extra redis-servers for one test."""
    procs = RedisProcesses(tmp_path)
    yield procs.spawn
    procs.stop()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def scheduler_factory() -> Any:
    """Build HealthSchedulers that are stopped at the end of the test."""
    from haproxyd.health.scheduler import HealthScheduler

    made: list[HealthScheduler] = []

    def make(**kw: Any) -> HealthScheduler:
        scheduler = HealthScheduler(**kw)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        await scheduler.stop()
