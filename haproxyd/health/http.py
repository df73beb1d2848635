"""`http` check: an HTTP request per probe, judged on status code and optional body regex.

Modelled on HAProxy's `option httpchk` / `http-check expect` and Envoy's HTTP health
checker (`expected_statuses` as ranges). Each target keeps one keep-alive connection
between probes, so a probe costs one request, not one TCP (and TLS) handshake; a dead
backend still fails at once, because the kernel resets the pooled connection and the
reconnect is refused.

The client is an `asyncio.Protocol` with httptools, as on the data plane, not aiohttp's
`ClientSession`: the request bytes are built once per target, a probe is one write and
one parse. Measured with `bench/health_scale.py` (1,000 backends, 1 s checks) on a
2-core VM: aiohttp's client cost 25 % of a core in the prober, this one a fraction of
that (the issue's bound is 15 %). Cost: O(1) per probe plus the body read, which is
bounded by `MAX_BODY` (searched by `expect_body`) and as much again drained.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httptools

from haproxyd.health.base import Check, CheckResult, clip, register, tls_context

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.sections.health import HttpCheck as HttpCheckConfig

_VISIBLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))
MAX_BODY = 65536  # bytes of the response body searched by `expect_body`
IDLE_TIMEOUT = 30.0  # seconds a probe connection may sit unused before it is reopened


class ProbeFailed(Exception):
    """The request could not be made or the response was not HTTP."""


class _ProbeConnection(asyncio.Protocol):
    """One keep-alive connection to one target; one request at a time."""

    __slots__ = (
        "body",
        "body_bytes",
        "collect",
        "got_bytes",
        "head_only",
        "idle_in",
        "idle_since",
        "interim",
        "parser",
        "reusable",
        "status",
        "transport",
        "waiter",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.collect = False  # keep the body (for `expect_body`)
        self.head_only = False  # a HEAD request: the response ends with its headers
        self.interim = False  # parsing a 1xx interim response (skipped)
        self.got_bytes = False  # any byte of the response to the current request
        self.reusable = False
        self.idle_since = 0.0
        # While kept: the check's idle map and this connection's key in it, so that a
        # connection the backend closes (or a backend removed from the config) does
        # not linger there.
        self.idle_in: tuple[dict[tuple[str, int], _ProbeConnection], tuple[str, int]] | None = None

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def request(self, data: bytes, *, collect: bool, head_only: bool) -> None:
        """Send `data` and wait for the response (its status in `status`, its body,
        if collected, in `body`)."""
        assert self.transport is not None
        self.status = self.body_bytes = 0
        self.body = []
        self.collect, self.head_only = collect, head_only
        self.got_bytes = self.reusable = self.interim = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # an RST, no TIME_WAIT left behind (HAProxy's checks)

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._done(reusable=False)  # a 101: the status is known, the rest is not HTTP
        except httptools.HttpParserError as exc:
            self._failed(ProbeFailed(f"invalid response: {clip(str(exc))}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle_in is not None:
            idle, key = self.idle_in
            self.idle_in = None
            if idle.get(key) is self:
                del idle[key]
        if self.status and not self.interim:
            self._done(reusable=False)  # a response without length ends at the close
        else:
            reason = clip(str(exc)) if exc else "connection closed before the response"
            self._failed(ProbeFailed(reason))

    # -- httptools callbacks --

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.interim = 100 <= status < 200 and status != 101
        if self.interim:
            return
        self.status = status
        if self.head_only:
            # llhttp cannot be told that no body follows: end here, and parse the next
            # response with a new parser.
            self.parser = httptools.HttpResponseParser(self)
            self._done(reusable=True)

    def on_body(self, body: bytes) -> None:
        if self.waiter is None:
            return
        self.body_bytes += len(body)
        if self.collect and self.body_bytes - len(body) < MAX_BODY:
            self.body.append(body)
        if self.body_bytes > 2 * MAX_BODY:
            self._done(reusable=False)  # read enough; closing is cheaper than draining

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self._done(reusable=self.parser.should_keep_alive())

    def _done(self, *, reusable: bool) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            self.reusable = reusable
            waiter.set_result(None)

    def _failed(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def parse_status_ranges(spec: Any) -> tuple[tuple[int, int], ...]:
    """`[200, "300-399"]` -> ((200, 200), (300, 399)); a bare int or string is one item."""
    items = spec if isinstance(spec, list | tuple) else [spec]
    ranges = []
    for item in items:
        if isinstance(item, int):
            ranges.append((item, item))
            continue
        text = str(item).strip()
        low, sep, high = text.partition("-")
        if sep:
            ranges.append((int(low), int(high)))
        else:
            ranges.append((int(text), int(text)))
    return tuple(ranges)


def _format_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


DEFAULT_USER_AGENT = "haproxyd-health/1"
TARGET_CACHE = 100_000  # targets whose request bytes and idle connection a check keeps


@register
class HttpCheck(Check):
    type = "http"

    def __init__(self, config: HttpCheckConfig) -> None:
        super().__init__(config)
        self.port = config.port
        self.config: HttpCheckConfig = config
        self.method = config.method.upper()
        self.path = config.path
        if not self.path.startswith("/"):
            self.path = "/" + self.path
        # The request line carries ASCII: other characters go UTF-8 and percent-encoded
        # (as an HTTP client does); escapes already written stay as they are.
        self._target = quote(self.path, safe=_VISIBLE_ASCII)
        self.ranges = parse_status_ranges(config.expect_status)
        body = config.expect_body
        self.body_re = re.compile(body.encode()) if body else None
        self.tls = config.tls
        self.headers = dict(config.headers)
        if config.host:
            self.headers["Host"] = config.host
        self.headers.setdefault("User-Agent", DEFAULT_USER_AGENT)
        self._ssl: ssl.SSLContext | None = None
        self._requests: dict[tuple[str, int], bytes] = {}  # request bytes per target
        self._idle: dict[tuple[str, int], _ProbeConnection] = {}

    def bind(self, node_id: str) -> None:
        # Which node probes, for the backend's logs (a cluster has several probers);
        # a User-Agent set in the config's headers is kept as it is.
        if self.headers.get("User-Agent") == DEFAULT_USER_AGENT:
            self.headers["User-Agent"] = f"{DEFAULT_USER_AGENT} (node {node_id})"
            self._requests.clear()

    def describe(self) -> str:
        return f"http {self.method} {self.path}"

    def _request_bytes(self, host: str, port: int) -> bytes:
        key = (host, port)
        data = self._requests.get(key)
        if data is None:
            lines = [f"{self.method} {self._target} HTTP/1.1"]
            if not any(name.lower() == "host" for name in self.headers):
                url_host = f"[{host}]" if ":" in host else host
                default_port = 443 if self.tls else 80
                netloc = url_host if port == default_port else f"{url_host}:{port}"
                lines.append(f"Host: {netloc}")
            lines += (f"{name}: {value}" for name, value in self.headers.items())
            lines.append("Accept: */*")
            data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            if len(self._requests) < TARGET_CACHE:
                self._requests[key] = data
        return data

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = tls_context(verify=self.config.verify_tls)
        return self._ssl

    async def _connect(self, host: str, port: int) -> _ProbeConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _ProbeConnection,
            host,
            port,
            ssl=self._context() if self.tls else None,
        )
        return conn

    def _take(self, key: tuple[str, int], now: float) -> _ProbeConnection | None:
        conn = self._idle.pop(key, None)
        if conn is None:
            return None
        conn.idle_in = None
        if conn.closed or now - conn.idle_since > IDLE_TIMEOUT:
            conn.close()
            return None
        return conn

    def _put(self, key: tuple[str, int], conn: _ProbeConnection, now: float) -> None:
        if key in self._idle or len(self._idle) >= TARGET_CACHE:
            conn.close()  # two backends at one address probed at once: keep one
            return
        conn.idle_since = now
        conn.idle_in = (self._idle, key)
        self._idle[key] = conn

    async def _fetch(self, host: str, port: int) -> tuple[int, bytes]:
        """One request on the target's kept connection (or a new one): (status, body)."""
        key = (host, port)
        data = self._request_bytes(host, port)
        collect = self.body_re is not None
        head_only = self.method == "HEAD"
        conn = self._take(key, time.monotonic())
        fresh = conn is None
        if conn is None:
            conn = await self._connect(host, port)
        try:
            try:
                await conn.request(data, collect=collect, head_only=head_only)
            except ProbeFailed:
                if fresh or conn.got_bytes:
                    raise
                # The backend had closed the kept connection (its keep-alive timeout)
                # just as we used it: nothing was answered, so ask once more on a new
                # one (what nginx and HAProxy do for a pooled connection).
                conn = await self._connect(host, port)
                await conn.request(data, collect=collect, head_only=head_only)
        except BaseException:
            conn.close()  # failed, or cancelled at the timeout: in an unknown state
            raise
        if conn.reusable and not conn.closed:
            self._put(key, conn, time.monotonic())
        else:
            conn.close()
        return conn.status, b"".join(conn.body)

    async def probe(self, backend: Backend | None) -> CheckResult:
        if backend is None:
            return CheckResult(False, "http check needs a backend")
        host, port = self.target(backend)
        start = time.perf_counter()
        try:
            status, body = await self._fetch(host, port)
        except ssl.SSLError as exc:
            return CheckResult(False, f"TLS error: {clip(str(exc))}", time.perf_counter() - start)
        except (ProbeFailed, OSError) as exc:
            reason = clip(str(exc)) or type(exc).__name__
            return CheckResult(False, f"HTTP request failed: {reason}", time.perf_counter() - start)
        latency = time.perf_counter() - start
        if not any(lo <= status <= hi for lo, hi in self.ranges):
            return CheckResult(
                False, f"HTTP {status}, expected {_format_ranges(self.ranges)}", latency
            )
        if self.body_re is not None and not self.body_re.search(body[:MAX_BODY]):
            return CheckResult(
                False,
                f"HTTP {status}: body does not match {self.body_re.pattern.decode()!r}",
                latency,
            )
        return CheckResult(True, f"HTTP {status}", latency)

    async def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conn in list(idle.values()):
            conn.close()
