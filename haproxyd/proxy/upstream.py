"""Connections to backends: the per-backend keep-alive pool and the response parser.

`BackendConnections` keeps idle keep-alive connections to one backend (LIFO, so the warmest
connection is reused and the coldest expire first), capped at `keepalive.max_idle` and
closed after `keepalive.idle_timeout`. A connection goes back to the pool only when its
request was sent whole and its response was read to the end with keep-alive allowed.

`UpstreamConnection` is an asyncio protocol driving an httptools response parser; it
hands the response to the `Exchange` (exchange.py) it currently serves through that
exchange's callbacks (`on_head`, `on_body`, `on_read_end`, `on_complete`, `on_lost`,
and `on_upgraded`, `on_invalid`, `on_backend_full`), by direct method calls: no task,
no queue per request, and none of the exchange's fields written here. Where the
compiled scanner `canonical_head` is built, a response whose head it accepts (the
common, canonical kind, framed by Content-Length) bypasses llhttp: its head and body
go to the exchange through the same callbacks.

`ProxyPool` is one pool as the data plane sees it (its live balancer `state`, one
`BackendConnections` per backend, the retry budget and the queue for a free slot). It is
here, not in runtime.py, to be compiled with the rest.

Compiled (setup.py), the classes here are extension types with the fields `upstream.pxd`
declares: an attribute added here must be declared there too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING

import httptools

from haproxyd.balancer.state import Backend
from haproxyd.proxy.headers import (
    CONNECTION,
    CONTENT_LENGTH,
    CRLF,
    DROP,
    KEEP,
    PLAIN_CONNECTION,
    SEP,
    TRANSFER_ENCODING,
    response_kind,
    response_kind_cached,
    status_line,
)

try:
    from haproxyd.proxy.canonical_head import scan_response_head
except ImportError:  # not compiled: llhttp reads every response
    scan_response_head = None

if TYPE_CHECKING:
    from haproxyd.balancer.state import Pool
    from haproxyd.config.schema import PoolConfig
    from haproxyd.proxy.exchange import Exchange
    from haproxyd.proxy.resolver import Resolver

log = logging.getLogger("haproxyd.upstream")

QUEUE_LIMIT = 10_000  # requests waiting for a backend slot, per pool


class UpstreamConnection:
    """One TCP connection to a backend, serving one exchange at a time (an asyncio
    protocol by its methods, as `ClientProtocol` is)."""

    __slots__ = (
        "_body_left",
        "_got_bytes",
        "_in_message",
        "_keep_alive_after",
        "_parts",
        "_reason",
        "_specials",
        "_trailers",
        "closed",
        "exchange",
        "idle_since",
        "owner",
        "parser",
        "requests",
        "transport",
        "tunnel",
    )

    def __init__(self, owner: BackendConnections) -> None:
        self.owner = owner  # the keep-alive pool of its backend
        self.transport: asyncio.Transport | None = None
        # llhttp's parser, made when a response first needs it (see data_received): the
        # scanner reads canonical responses without it, and each one holds about 450
        # bytes (the parser object, llhttp's state and settings) for as long as the
        # connection lives, so one per request in flight.
        self.parser = None
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self.requests = 0  # requests sent on this connection
        self.closed = False
        self.tunnel: asyncio.Transport | None = None  # client transport once upgraded
        self._got_bytes = False  # any byte of the current response received
        # A response the scanner read: body bytes still to come, and whether the
        # connection may be reused after them.
        self._body_left = 0
        self._keep_alive_after = False
        self._next_message()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # (uvloop has set TCP_NODELAY: see ClientProtocol.connection_made.)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle keep-alive connection: the backend is confused; drop it.
            self.close()
            return
        self._got_bytes = True
        left = self._body_left
        if left:
            self._scanned_body(exchange, data, left)
            return
        if (
            scan_response_head is not None
            and not self._in_message
            and not (exchange.is_head or exchange.upgrade)
        ):
            head = scan_response_head(data)
            if head is not None:
                self._scanned_response(exchange, head)
                return
        self._in_message = True  # llhttp reads this response (on_message_complete ends it)
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpResponseParser(self)
        try:
            parser.feed_data(data)
            if self.exchange is exchange:
                # Still in flight (an exchange that ended has its next deadline).
                exchange.on_read_end()
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if self.exchange is not None:
                self.exchange.on_upgraded(self, data[offset:])
        except httptools.HttpParserError as exc:
            if self.exchange is not None:
                self.exchange.on_invalid("invalid response", str(exc))
            self.close()

    def _scanned_response(self, exchange: Exchange, head: tuple) -> None:
        """A response whose head `scan_response_head` read (with the start of its body,
        or all of it, that came in the same read)."""
        _, status, line, kept, length, length_value, keep_alive, body = head
        # The same call the llhttp path makes: the backend's status line is already
        # the client's, `kept` stands for the forwarded header lines (joined), and the
        # Content-Length is the one special.
        exchange.on_head(status, [line, kept], [(CONTENT_LENGTH, length_value)])
        if self.exchange is not exchange:
            return  # the exchange let this connection go (a retried 5xx)
        self._keep_alive_after = keep_alive
        self._scanned_body(exchange, body, length)

    def _scanned_body(self, exchange: Exchange, data: bytes, left: int) -> None:
        """Body of a scanned response (what came with its head, or a later read);
        `left` bytes of it were still to come."""
        size = len(data)
        if size < left:
            self._body_left = left - size
            if size:  # (none: only the head came in this read)
                exchange.on_body(data)
            exchange.on_read_end()
            return
        keep_alive = self._keep_alive_after
        if size > left:
            # Bytes past the response's end, unasked for: the connection is out of
            # step with its requests, so it is not reused.
            data = data[:left]
            keep_alive = False
        self._body_left = 0
        if left:  # (none: an empty body)
            exchange.on_body(data)
        exchange.on_complete(self, keep_alive, None)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.forget(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
            return
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_lost(self, self._got_bytes)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.on_backend_full(True)
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.on_backend_full(False)
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # -- httptools callbacks --

    # (No `on_message_begin`, a callback fewer per response: the state of the next
    # response is set up when one completes, see `_next_message`.)

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        parts = self._parts
        if parts is None:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name, value))
            return
        kind = response_kind_cached(name)
        if kind is None:
            kind = response_kind(name)
        if kind == KEEP:
            parts += (name, SEP, value, CRLF)
        elif kind != DROP and (kind != CONNECTION or value not in PLAIN_CONNECTION):
            # (`Connection: keep-alive` and the like name no header to remove: the
            # parser reads what they mean for this connection.)
            self._specials.append((kind, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        status = self.parser.get_status_code()
        if exchange is None or (100 <= status < 200 and status != 101):
            return  # interim responses (103 Early Hints...) are not forwarded
        parts = self._parts
        assert parts is not None
        self._parts = None  # what follows the body is trailers
        parts[0] = status_line(status, self._reason)
        specials = self._specials
        if (status == 204 or status == 304) and specials:
            # No body, whatever a backend says (RFC 9110 §8.6, §6.4.1; HAProxy strips
            # them too): a client that believed the framing would read the next
            # response as this one's body. (The scanner takes neither status.)
            specials = [s for s in specials if s[0] != CONTENT_LENGTH and s[0] != TRANSFER_ENCODING]
        exchange.on_head(status, parts, specials)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_body(body)  # written by its `on_read_end`, after this read

    def on_message_complete(self) -> None:
        trailers = self._trailers
        self._next_message()
        exchange = self.exchange
        if exchange is None:
            return
        if 100 <= self.parser.get_status_code() < 200:
            # Interim responses are skipped; a 101 ends in HttpParserUpgrade, which
            # turns this connection into a tunnel (see data_received).
            return
        exchange.on_complete(self, self.parser.should_keep_alive(), trailers)

    def _next_message(self) -> None:
        """Set up the state of the next response."""
        # The response head being parsed, as the client will get it: [status line, then
        # name, ": ", value, CRLF per forwarded header]; None once the head is complete
        # (header callbacks are then trailers). `_specials`: (kind, value) of the
        # headers the proxy acts on (framing, Connection, Upgrade).
        self._parts: list[bytes] | None = [b""]
        self._specials: list[tuple[int, bytes]] = []
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._reason = b""
        self._in_message = False  # llhttp is between responses

    # -- used by the exchange --

    def send(self, exchange: Exchange, head: bytes) -> None:
        self.exchange = exchange
        self.requests += 1
        self._got_bytes = False
        assert self.transport is not None
        self.transport.write(head)

    def finish_head_response(self) -> None:
        """The response to a HEAD request ended with its headers: the next response
        gets a new parser, since llhttp cannot be told, through httptools, that no body
        follows."""
        self.parser = None
        self._next_message()

    def keep_alive(self) -> bool:
        return self.parser.should_keep_alive()

    def close(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()


class BackendConnections:
    """Keep-alive connections to one backend.

    Owned by the data plane of one process; taking an idle connection (`Exchange._use`,
    LIFO) and `release` run on its event loop.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_idle: int,
        idle_timeout: float,
        max_requests: int,
        resolver: Resolver | None = None,
    ) -> None:
        self.backend = backend
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_requests = max_requests
        self.resolver = resolver
        self.idle: collections.deque[UpstreamConnection] = collections.deque()
        self.open = 0  # connections open now (idle or busy)
        self.connects = 0  # connections opened so far (churn: haproxyd_backend_connects)
        self._next_address = 0

    def configure(self, *, max_idle: int, idle_timeout: float, max_requests: int) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_requests = max_requests
        while len(self.idle) > max_idle:
            self.idle.popleft().close()

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        host, port = self.backend.host, self.backend.port
        if self.resolver is not None:
            addresses = self.resolver.addresses(host)
            if addresses:
                # Every address of a name takes its turn (nginx `resolve`, HAProxy
                # server-template): new connections rotate over them.
                self._next_address += 1
                host = addresses[self._next_address % len(addresses)]
        _, conn = await loop.create_connection(
            lambda: UpstreamConnection(self),  # type: ignore[type-var]  # a duck-typed Protocol
            host,
            port,
        )
        self.open += 1
        self.connects += 1
        return conn

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Return a connection whose exchange ended cleanly with keep-alive allowed."""
        conn.exchange = None
        if (
            conn.closed
            or len(self.idle) >= self.max_idle
            or (self.max_requests and conn.requests >= self.max_requests)
        ):
            conn.close()
            return
        conn.idle_since = now
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed (either side): drop it from the idle list if there."""
        self.open -= 1
        if conn in self.idle:  # O(idle); only on close, never per request
            self.idle.remove(conn)

    def expire(self, now: float) -> None:
        idle = self.idle
        limit = now - self.idle_timeout
        while idle and idle[0].idle_since < limit:
            idle.popleft().close()

    def close(self) -> None:
        while self.idle:
            self.idle.popleft().close()


class ProxyPool:
    """A pool as the data plane uses it: its live balancer `state` (a `Pool`) plus a
    keep-alive pool per backend (the exchange reads and writes its fields several
    times per request)."""

    __slots__ = (
        "active",
        "config",
        "default_host",
        "name",
        "passive",
        "retries_active",
        "state",
        "upstreams",
        "waiters",
    )

    def __init__(self, name: str, config: PoolConfig, state: Pool) -> None:
        self.name = name
        self.config = config
        self.state = state
        self.upstreams: dict[str, BackendConnections] = {}
        self.default_host = b"localhost"
        self.passive = config.passive is not None  # report outcomes to outlier detection
        self.active = 0  # requests in flight on this pool's backends (this process)
        self.retries_active = 0  # of which retries
        self.waiters: collections.deque[Exchange] = collections.deque()

    def select(self, exchange: Exchange) -> Backend | None:
        """The backend for `exchange` (its first attempt, or a queued one), or None:
        the one way the data plane asks the balancer (retries: `select_retry`)."""
        balancer = self.state.balancer
        return balancer.select(exchange)

    def select_retry(self, exchange: Exchange, tried: list[Backend]) -> Backend | None:
        """The backend for a retry of `exchange`: another one than those of `tried`
        (another region, once all of this one's have failed it), else the failover's
        next in line; when every candidate has failed the request once, the balancer's
        choice again (the exchange then waits before it sends)."""
        backend = self.state.select_retry(exchange, tried)
        if backend is None:
            balancer = self.state.balancer
            backend = balancer.select(exchange)
        return backend

    def retry_allowed(self) -> bool:
        """Envoy's retry budget: retries in flight stay within `budget_percent` of the
        requests in flight, with a floor of `min_retries`, so that retries cannot
        multiply the load on a pool that is already failing."""
        retries = self.config.retries
        budget = max(retries.min_retries, retries.budget_percent * self.active / 100.0)
        return self.retries_active < budget

    def enqueue(self, exchange: Exchange) -> bool:
        if len(self.waiters) >= QUEUE_LIMIT:
            return False
        self.waiters.append(exchange)
        return True

    def dequeue_waiter(self, exchange: Exchange) -> None:
        with contextlib.suppress(ValueError):  # O(queue); only on a timeout or client gone
            self.waiters.remove(exchange)

    def wake_waiters(self) -> None:
        """A backend slot freed: hand it to the longest waiter, in arrival order."""
        waiters = self.waiters
        while waiters:
            exchange = waiters[0]
            if exchange.client.closed or not exchange.queued:
                waiters.popleft()
                continue
            if not exchange.dequeue():
                return
            waiters.popleft()
