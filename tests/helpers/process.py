"""Helpers for the process-model tests (`workers:`, reload, shutdown).

- `admin_json(daemon, path)` / `wait_status(daemon, ...)`: the admin API, blocking, with
  deadlines; `wait_status` polls until the daemon answers and a predicate holds.
- `spawn_with_args(daemon, *args)`: start a `Daemon` made with `start=False` with extra
  command-line arguments (`-p PIDFILE`), so the `daemon` fixture still stops it.
- `connection_owners(pids, port, local_ports)`: which process holds the server side of
  each client connection (psutil), i.e. which worker accepted it.
- `LoadLoop`: an asyncio HTTP/1.1 load generator, N clients on keep-alive connections
  (or one connection per request), every outcome classified; `Failure` records what
  went wrong, when, and on which client port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from helpers.daemon import Daemon, subprocess_env


def admin_base(daemon: Daemon) -> str:
    return f"http://{daemon.config['admin']['address']}"


def admin_json(daemon: Daemon, path: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(admin_base(daemon) + path, timeout=timeout) as response:
        return json.loads(response.read())


def metrics_text(daemon: Daemon, timeout: float = 5.0) -> str:
    """The admin port's `/metrics`, as Prometheus would scrape it."""
    with urllib.request.urlopen(admin_base(daemon) + "/metrics", timeout=timeout) as response:
        return response.read().decode()


def post_json(d: Daemon, path: str, body: Any, *, query: str = "") -> tuple[int, dict[str, Any]]:
    return admin_call(d, "POST", path, body, query=query)


def admin_call(
    d: Daemon, method: str, path: str, body: Any = None, *, query: str = ""
) -> tuple[int, dict[str, Any]]:
    """An admin API call (`body` sent as JSON unless None): (status, JSON answer)."""
    request = urllib.request.Request(
        admin_base(d) + path + (f"?{query}" if query else ""),
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_status(
    daemon: Daemon,
    predicate: Callable[[dict[str, Any]], Any] = lambda status: True,
    *,
    timeout: float = 30.0,
    what: str = "",
) -> dict[str, Any]:
    """Poll `GET /api/v1/ha/status` until it answers and `predicate(status)` holds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise AssertionError(f"haproxyd exited while waiting for {what}\n{daemon.diag()}")
        try:
            # Longer than the daemon's own wait for a worker's counters (supervisor's
            # COUNTERS_TIMEOUT, 2 s): a stopped worker makes the status that slow.
            last = admin_json(daemon, "/api/v1/ha/status", timeout=5.0)
            if predicate(last):
                return last
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate}; last status: "
                f"{last}\n{daemon.diag()}"
            )
        time.sleep(0.05)


def wait_workers(daemon: Daemon, count: int, timeout: float = 60.0) -> dict[str, Any]:
    """The status once the daemon is fully started with `count` worker processes."""
    mode = "master" if count > 1 else "single"

    def ready(status: dict[str, Any]) -> bool:
        workers = status["workers"]
        return workers["mode"] == mode and len(workers["pids"]) == count

    return wait_status(daemon, ready, timeout=timeout, what=f"{count} worker(s)")


def total_requests(daemon: Daemon) -> int:
    """Requests over every pool in the merged `load-balancer/stats`."""
    stats = admin_json(daemon, "/api/v1/ha/load-balancer/stats")
    return sum(pool["requests"] for pool in stats["pools"])


def spawn_with_args(daemon: Daemon, *args: str) -> Daemon:
    """Like `Daemon.spawn`, with extra arguments after `-c FILE`; then waits until the
    listener accepts. The daemon must come from the `daemon` fixture (`start=False`)."""
    daemon.write_config()
    with open(daemon.stderr_path, "wb") as err, open(daemon.stdout_path, "wb") as out:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-m", "haproxyd", "-c", str(daemon.config_path), *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=subprocess_env(),
            cwd=daemon.workdir,
        )
    daemon.wait_ready()
    return daemon


def connection_owners(pids: Iterable[int], port: int, local_ports: Iterable[int]) -> dict[int, int]:
    """`{client local port: pid}` for each client connection to `port` whose server side
    one of `pids` holds (the process that accepted it)."""
    wanted = set(local_ports)
    owners: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if (
                    conn.laddr
                    and conn.raddr
                    and conn.laddr.port == port
                    and conn.raddr.port in wanted
                ):
                    owners[conn.raddr.port] = pid
    return owners


# --- load ----------------------------------------------------------------------------


@dataclass
class Failure:
    kind: str  # connect | closed (no complete response) | timeout | status | protocol
    detail: str
    started: float  # time.monotonic() when the request (or connect) began
    ended: float
    local_port: int | None  # the client side of the connection it happened on

    def __str__(self) -> str:
        return f"{self.kind} on port {self.local_port} at {self.started:.3f}: {self.detail}"


@dataclass
class LoadStats:
    ok: int = 0
    failures: list[Failure] = field(default_factory=list)
    backends: Counter[str] = field(default_factory=Counter)
    closes: int = 0  # connections the proxy ended cleanly (Connection: close)
    connections: int = 0  # opened so far
    max_latency: float = 0.0
    ok_times: list[float] = field(default_factory=list)  # completion times (monotonic)

    def ok_after(self, moment: float) -> int:
        return sum(1 for t in self.ok_times if t > moment)


def assert_nothing_failed(stats: LoadStats, daemon: Daemon) -> None:
    """No request of the load failed, as the clients saw it and as the access log says
    (the log's non-200 lines show where it failed: backend, attempts, termination)."""
    bad = [
        {k: e[k] for k in ("status", "backend", "attempts", "termination")}
        for e in daemon.access_log()
        if e["status"] != 200
    ]
    assert not stats.failures and not bad, (
        f"{len(stats.failures)} failed of {stats.ok + len(stats.failures)}",
        [str(f) for f in stats.failures[:5]],
        bad[:5],
    )


class _Closed(Exception):
    """The proxy closed the connection before a complete response."""


class LoadLoop:
    """`clients` concurrent clients sending `GET path` until `stop()` (or `duration`).

    Each client keeps one keep-alive connection and reconnects only when the proxy ends
    it cleanly (`Connection: close`) or after a failure; with `close_each`, every
    request goes on a new connection with `Connection: close`. Only a `200` with a
    complete body counts as ok; everything else is a `Failure`.
    """

    def __init__(
        self,
        port: int,
        *,
        clients: int,
        path: str = "/",
        host: str = "127.0.0.1",
        close_each: bool = False,
        timeout: float = 10.0,
        duration: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.clients = clients
        self.path = path
        self.close_each = close_each
        self.timeout = timeout
        self.duration = duration
        self.stats = LoadStats()
        self.local_ports: set[int] = set()  # client ports of the connections open now
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> LoadLoop:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> LoadStats:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, self.timeout + 5.0)
        return self.stats

    async def wait_ok(self, count: int, timeout: float = 20.0) -> None:
        """Poll until `count` requests in all have succeeded."""
        deadline = time.monotonic() + timeout
        while self.stats.ok < count:
            if self._task is not None and self._task.done():
                self._task.result()
                raise AssertionError(f"load loop ended early with {self.stats.ok} ok")
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"only {self.stats.ok}/{count} requests ok after {timeout}s; "
                    f"failures: {[str(f) for f in self.stats.failures[:10]]}"
                )
            await asyncio.sleep(0.02)

    async def _run(self) -> None:
        end = time.monotonic() + self.duration
        await asyncio.gather(*(self._client(end) for _ in range(self.clients)))

    def _running(self, end: float) -> bool:
        return not self._stop.is_set() and time.monotonic() < end

    async def _client(self, end: float) -> None:
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            + ("Connection: close\r\n" if self.close_each else "")
            + "\r\n"
        ).encode()
        stats = self.stats
        while self._running(end):
            started = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout
                )
            except (OSError, TimeoutError) as exc:
                stats.failures.append(
                    Failure("connect", repr(exc), started, time.monotonic(), None)
                )
                await asyncio.sleep(0.05)  # back off before the next attempt
                continue
            stats.connections += 1
            local_port = writer.get_extra_info("sockname")[1]
            self.local_ports.add(local_port)
            try:
                while self._running(end):
                    started = time.monotonic()
                    try:
                        writer.write(request)
                        keep = await asyncio.wait_for(self._exchange(reader), self.timeout)
                    except (_Closed, ConnectionError, asyncio.IncompleteReadError) as exc:
                        kind, detail = "closed", repr(exc)
                    except TimeoutError:
                        kind, detail = "timeout", f"no response within {self.timeout}s"
                    except _BadStatus as exc:
                        kind, detail = "status", str(exc)
                    except (ValueError, asyncio.LimitOverrunError) as exc:
                        kind, detail = "protocol", repr(exc)
                    else:
                        now = time.monotonic()
                        stats.ok += 1
                        stats.ok_times.append(now)
                        stats.max_latency = max(stats.max_latency, now - started)
                        if keep and not self.close_each:
                            continue
                        stats.closes += not self.close_each
                        break
                    stats.failures.append(
                        Failure(kind, detail, started, time.monotonic(), local_port)
                    )
                    break
            finally:
                self.local_ports.discard(local_port)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader) -> bool:
        """Read one response; whether the connection stays open. Raises `_Closed` when
        the proxy closed before a complete response, `_BadStatus` on anything but 200."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise _Closed(f"closed after {len(exc.partial)} bytes of a response head") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            raise ValueError(f"response without framing: {lines[0]!r}")
        if status != "200":
            raise _BadStatus(f"{lines[0]} from {headers.get('x-backend')}")
        self.stats.backends[headers.get("x-backend", "?")] += 1
        connection = headers.get("connection", "").lower()
        return version == "HTTP/1.1" and "close" not in connection


class _BadStatus(Exception):
    pass
