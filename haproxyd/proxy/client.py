"""The client side: one `ClientProtocol` per accepted connection, one `Exchange` per request.

Flow of a request (all callbacks on the event loop; a task only to open a new backend
connection):

1. httptools parses the client's bytes and calls `on_*`; a new `Exchange` collects the
   request line and headers. It is *dispatched only after `feed_data` returned without
   error*, so a request that is malformed anywhere in the bytes received so far (a bad
   chunk size right after the headers, say) never reaches a backend.
2. The exchange at the head of the queue asks the pool's balancer for a backend, takes a
   pooled keep-alive connection or opens one, and sends the rewritten head, then streams
   the body as it arrives (re-framed by the proxy, never copied raw).
3. The backend's response streams back through `on_response_*`; back-pressure pauses
   reading on the side whose peer cannot keep up.
4. When the response is complete the backend connection returns to its pool (if it can
   be reused) and the next pipelined request, if any, starts. Responses therefore leave
   in request order.

Compiled (setup.py), the classes here are extension types with the fields `client.pxd`
declares: an attribute added here must be declared there too (the test suite runs the
data plane in both forms, so a missing one fails there).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING

import httptools

from haproxyd.balancer.state import BackendState
from haproxyd.proxy.errors import error_response
from haproxyd.proxy.flow import (
    PAUSE_HELD,
    PAUSE_PIPELINE,
    PAUSE_REJECTED,
    PAUSE_UPSTREAM_FULL,
    PAUSE_WAITING,
)
from haproxyd.proxy.headers import (
    CONNECTION,
    CONTENT_LENGTH,
    CRLF,
    DROP,
    HOST,
    KEEP,
    SEP,
    TRANSFER_ENCODING,
    UPGRADE,
    VIA_TOKEN,
    BadRequest,
    RequestMeta,
    build_request_head,
    connection_named,
    drop_named,
    forwarded_block,
    header_in_block,
    request_kind,
    request_kind_cached,
    set_value,
    split_codings,
    trailer_allowed,
)
from haproxyd.proxy.requestline import (
    PLACEHOLDER,
    extension_method,
    line_start,
    message_start,
    unsupported_version,
)
from haproxyd.proxy.target import host_ok, origin_form, valid_hosts

try:
    from haproxyd.proxy.canonical_head import scan_request_head
except ImportError:  # not compiled: llhttp reads every request
    scan_request_head = None

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.proxy.runtime import ProxyRuntime
    from haproxyd.proxy.upstream import PoolRuntime, UpstreamConnection, UpstreamPool

log = logging.getLogger("haproxyd.proxy")

# Timeout kinds of a client connection (one deadline at a time, checked by the sweeper).
T_IDLE = 0  # between requests (keep-alive)
T_HEADER = 1  # a request's headers are arriving
T_RESPONSE = 2  # waiting on, or streaming, a backend's response
T_TUNNEL = 3  # upgraded connection
T_QUEUE = 4  # waiting for a backend slot
T_LINGER = 5  # after an error answer: draining what the client still sends

LINGER_SECONDS = 5.0  # nginx's lingering_timeout; its lingering_time is 30 s

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_RETRY_STATUSES = frozenset({502, 503, 504})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNK_END = b"0\r\n\r\n"
_CONNECTION_NAMES = (b"connection", b"proxy-connection")
_CRLF = b"\r\n"
_HEX3 = tuple(b"%03x" % i for i in range(0x1000))  # see RequestIds.next


class ProxyRuntimeBase:
    """The fields of `ProxyRuntime` (runtime.py) that the data plane reads on every
    request or connection. `ProxyRuntime` derives from this class and sets them;
    compiled (client.pxd), they are C fields, read without a lookup, while the rest
    of the runtime stays an ordinary Python object."""

    __slots__ = (
        "connect_timeout",
        "connection_limit",
        "connections",
        "draining",
        "exchange_listeners",
        "header_timeout",
        "idle_timeout",
        "loop",
        "max_body_bytes",
        "max_header_bytes",
        "only_pool",
        "passive_report",
        "request_ids",
        "response_timeout",
        "shedding",
    )


class RequestIds:
    """The X-Request-ID values of one process: `prefix`, then a counter in hex."""

    __slots__ = ("_counter", "_high", "prefix")

    def __init__(self, prefix: bytes, counter: int = 0) -> None:
        self.prefix = prefix
        self._counter = counter  # the last value given out
        self._high = b""

    def next(self) -> bytes:
        n = self._counter = self._counter + 1
        low = n & 0xFFF
        if low == 0 or not self._high:
            self._high = b"%s-%05x" % (self.prefix, n >> 12)
        # = b"%s-%08x" % (prefix, n): the last three hex digits come from a table, the
        # rest is formatted once per 4,096 requests (formatting costs more than a concat).
        return self._high + _HEX3[low]


class Exchange:
    """One request and its response. Implements the balancer's `RequestContext`."""

    __slots__ = (
        "attempts",
        "backend",
        "body_buffer",
        "body_bytes",
        "bytes_out",
        "chunked_in",
        "chunked_out",
        "client",
        "client_ip",
        "close_after",
        "conn",
        "connect_time",
        "continue_sent",
        "counted",
        "dispatched",
        "ended",
        "expect_continue",
        "head",
        "header_time",
        "http10",
        "is_head",
        "keep_alive",
        "kept_end",
        "method",
        "out",
        "parts",
        "pool",
        "queued",
        "read_to_close",
        "ready",
        "replay",
        "replay_bytes",
        "request_complete",
        "request_id",
        "response_started",
        "retrying",
        "reused",
        "specials",
        "start",
        "status",
        "termination",
        "trailers",
        "tried",
        "upgrade",
        "upstream",
        "upstream_paused",
        "url",
    )

    def __init__(self, client: ClientProtocol) -> None:
        self.client = client
        self.client_ip = client.peer_ip
        self.url = b""
        self.method = b""
        # The head for the backend as it is parsed: [request line, then name, ": ",
        # value, CRLF per forwarded header]; the headers the proxy acts on wait in
        # `specials` as (kind, name, value) (see headers.py).
        self.parts: list[bytes] = [b""]
        self.specials: list[tuple[int, bytes, bytes]] = []
        self.kept_end = 0  # parts[1:kept_end] are the client's forwarded headers
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.head = b""  # rewritten request head for the backend
        self.ready = False  # headers parsed and validated
        self.dispatched = False
        self.request_complete = False
        self.keep_alive = True
        self.http10 = False
        self.is_head = False
        self.upgrade = False
        self.expect_continue = False
        self.continue_sent = False
        self.chunked_in = False
        self.chunked_out = False
        self.read_to_close = False
        self.close_after = False
        self.body_buffer: list[bytes] | None = None  # body received before a backend is attached
        self.body_bytes = 0
        self.bytes_out = 0
        # Response bytes for the client, written in one `writelines` per backend read
        # (or at the end of the exchange): one syscall where a naive proxy makes two.
        self.out: list[bytes] = []
        self.pool: PoolRuntime | None = None
        self.backend: Backend | None = None
        self.counted = False  # `pool.on_start(backend)` called, `on_finish` not yet
        self.upstream: UpstreamPool | None = None
        self.conn: UpstreamConnection | None = None
        self.upstream_paused = False
        self.request_id = b""
        self.response_started = False
        self.reused = False
        self.queued = False  # waiting for a free backend slot (max_connections)
        # What was sent of the body, kept so that an idempotent request can be resent
        # to another backend; None once it outgrew `retries.buffer_bytes`.
        self.replay: list[bytes] | None = None
        self.replay_bytes = 0
        self.retrying = False  # this attempt counts against the pool's retry budget
        self.tried: list[Backend] | None = None  # backends this request failed on
        self.attempts = 0
        self.status = 0
        self.start = 0.0
        self.ended = 0.0  # loop time the response ended (0 until it has)
        self.connect_time = -1.0
        self.header_time = -1.0
        self.termination = ""

    # -- RequestContext --

    def header(self, name: bytes) -> bytes | None:
        for _, hname, value in self.specials:
            if hname.lower() == name:
                return value
        parts = self.parts
        if self.kept_end == 0:
            # A scanned request: parts[1] is its forwarded header lines, joined.
            return header_in_block(parts[1], name)
        for i in range(1, self.kept_end, 4):
            if parts[i].lower() == name:
                return parts[i + 2]
        return None

    # -- request side --

    def dispatch(self) -> None:
        """Choose a backend and send the request (head of the client's queue only)."""
        self.dispatched = True
        client = self.client
        runtime = client.runtime
        self.start = start = client.clock()
        client.timeout_kind = T_RESPONSE
        client.deadline = start + runtime.response_timeout
        pool = self.pool
        if pool is None:
            self.fail(404, "no route for this request", "no_route")
            return
        if runtime.shedding:
            self.fail(503, "node unhealthy", "shed")
            return
        state = pool.pool
        balancer = state.balancer
        backend = balancer.select(self)
        if backend is None:
            standby = state.retry_fallback
            if standby is not None and standby.state == BackendState.UP and not standby.full:
                # The one active backend is down here while the decision stands (a
                # cluster follower waits for its leader): serve from the standby the
                # machine named rather than answer 503.
                self._use(standby)
                return
            if pool.config.queue_timeout > 0 and state.selectable and pool.enqueue(self):
                # Every candidate is at its max_connections: wait for a slot (HAProxy's
                # server queue) until queue_timeout, then 503.
                self.queued = True
                client.timeout_kind = T_QUEUE
                client.deadline = self.start + pool.config.queue_timeout
                return
            self.fail(503, "no backend available", "no_backend")
            return
        self._use(backend)

    def dequeue(self) -> bool:
        """A backend slot freed up: try again. False if still nothing is free."""
        pool = self.pool
        assert pool is not None
        backend = pool.pool.select(self)
        if backend is None:
            return False
        self.queued = False
        self.client.set_deadline(T_RESPONSE)
        self._use(backend)
        return True

    def _use(self, backend: Backend) -> None:
        pool = self.pool
        assert pool is not None
        self.backend = backend
        self.attempts += 1
        upstream = pool.upstreams[backend.id]
        self.upstream = upstream
        state = pool.pool
        state.on_start(backend)
        pool.active += 1
        self.counted = True
        idle = upstream.idle
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection
            if not conn.closed:
                self.reused = True
                self.connect_time = 0.0
                self._attach(conn)
                return
        self.reused = False
        self.client.runtime.loop.create_task(self._connect(upstream))

    async def _connect(self, upstream: UpstreamPool) -> None:
        client = self.client
        runtime = client.runtime
        begin = client.clock()
        try:
            async with asyncio.timeout(runtime.connect_timeout):
                conn = await upstream.connect()
        except TimeoutError:
            self._connect_failed(504, "backend connect timeout", "connect_timeout")
            return
        except OSError as exc:
            self._connect_failed(
                502, f"backend connect failed: {exc.strerror or exc}", "connect_error"
            )
            return
        if client.closed or not self.counted:
            # The exchange ended (client gone, timeout) while we were connecting.
            upstream.release(conn, client.clock())
            return
        self.connect_time = client.clock() - begin
        self._attach(conn)

    def _connect_failed(self, status: int, reason: str, termination: str) -> None:
        """Nothing was sent: another backend may take the request (any method)."""
        if not self.counted:
            return  # the exchange already ended
        backend = self.backend
        pool = self.pool
        assert backend is not None and pool is not None
        self._finish_backend(ok=False)
        if self.client.closed:
            return
        # A refused connection is outside the retry budget: nothing reached the dead
        # backend, so its redispatch cannot feed a retry storm against it (HAProxy's
        # `option redispatch` has no budget at all); a timeout, maybe an overloaded
        # backend, stays within it.
        if not self._retry(backend, reason, budget=termination != "connect_error"):
            self.fail(status, reason, termination)

    def _retry(
        self, failed: Backend, reason: str, *, sent: bool = False, budget: bool = True
    ) -> bool:
        """Try the request again, on a backend it has not failed on if there is one
        (redispatch; `Pool.select_retry`), else on one it failed on after min(connect
        timeout, 1 s). `sent`: the request
        reached the failed backend, so only idempotent requests whose body is still
        held for replay may go again. Bounded by `retries.attempts` and (unless
        `budget` is False) the pool's retry budget. Returns False when no retry
        happens."""
        pool = self.pool
        assert pool is not None
        if self.attempts > pool.config.retries.attempts or self.response_started:
            return False
        if sent and self.replay is None:
            return False
        if budget and not pool.retry_allowed():
            return False
        tried = self.tried
        if tried is None:
            tried = self.tried = []
        if failed not in tried:
            tried.append(failed)
        state = pool.pool
        # Another backend (another region, once all of this one's have failed it),
        # else the failover's next in line; when every candidate has failed the
        # request once, the balancer's choice again, after a pause.
        choice = state.select_retry(self, tried)
        if choice is None:
            choice = state.select(self)
            if choice is None:
                return False
        if log.isEnabledFor(logging.INFO):
            log.info("retry %s -> %s: %s", failed.id, choice.id, reason)
        pool.retries_active += 1
        self.retrying = True
        self.reused = False
        if sent:
            self.body_buffer = list(self.replay) if self.replay else None
        self.client.set_deadline(T_RESPONSE)
        if choice in tried:
            delay = min(self.client.runtime.connect_timeout, 1.0)
            self.client.runtime.loop.call_later(delay, self._retry_same, choice)
        else:
            self._use(choice)
        return True

    def _retry_same(self, backend: Backend) -> None:
        if not self.client.closed and not self.status and not self.counted:
            self._use(backend)

    def _attach(self, conn: UpstreamConnection) -> None:
        client = self.client
        self.conn = conn
        conn.send(self, self.head)
        transport = conn.transport
        assert transport is not None
        if self.body_buffer:
            transport.writelines(self.body_buffer)
            self.body_buffer = None
        if client._paused & PAUSE_WAITING:
            client.resume_reading_for(PAUSE_WAITING)
        if self.request_complete:
            if self.chunked_in:
                transport.write(self._trailer_block(self.trailers))
        elif self.expect_continue and not self.continue_sent:
            self.continue_sent = True
            client.transport.write(_CONTINUE)

    @staticmethod
    def _trailer_block(trailers: list[tuple[bytes, bytes]] | None) -> bytes:
        """The last chunk of a chunked body, with the trailers that may be forwarded
        (to a backend or to the client)."""
        if not trailers:
            return _CHUNK_END
        parts = [b"0\r\n"]
        for name, value in trailers:
            if trailer_allowed(name):
                parts += (name, b": ", value, _CRLF)
        parts.append(_CRLF)
        return b"".join(parts)

    def on_request_body(self, body: bytes) -> None:
        conn = self.conn
        replay = self.replay
        if replay is not None:
            self.replay_bytes += len(body)
            if self.replay_bytes > self.pool.config.retries.buffer_bytes:  # type: ignore[union-attr]
                self.replay = None  # streamed past the buffer: never resent
            else:
                replay.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked_in else body)
        if self.chunked_in:
            frame = (b"%x\r\n" % len(body), body, _CRLF)
            if conn is not None:
                conn.transport.writelines(frame)  # type: ignore[union-attr]
                self.client.touch()  # a slow upload is activity, not a stalled backend
                return
            data = b"".join(frame)
        else:
            if conn is not None:
                conn.transport.write(body)  # type: ignore[union-attr]
                self.client.touch()
                return
            data = body
        if self.body_buffer is None:
            self.body_buffer = [data]
        else:
            self.body_buffer.append(data)
        # Hold further reads until a backend takes what is buffered (bounded memory).
        self.client.pause_reading_for(PAUSE_WAITING)

    def on_request_complete(self) -> None:
        self.request_complete = True
        conn = self.conn
        if conn is not None and self.chunked_in:
            conn.transport.write(self._trailer_block(self.trailers))  # type: ignore[union-attr]

    # -- response side (called by UpstreamConnection) --

    def on_response_head(
        self, status: int, parts: list[bytes], specials: list[tuple[int, bytes]]
    ) -> None:
        """The backend's response head: `parts` are the status line for the client and
        the forwarded headers (from index 1), `specials` the (kind, value) of its
        framing, Connection and Upgrade headers (see headers.py)."""
        client = self.client
        runtime = client.runtime
        if status in _RETRY_STATUSES and self.replay is not None and self.conn is not None:
            # Resend to another backend before a byte of this answer reaches the client.
            backend = self.backend
            conn = self.conn
            assert backend is not None
            if self.attempts <= self.pool.config.retries.attempts and self.pool.retry_allowed():  # type: ignore[union-attr]
                self.conn = None
                conn.close()
                self.status = status
                self._finish_backend(ok=True)  # passive detection sees the 5xx
                self.status = 0
                if self._retry(backend, f"backend answered {status}", sent=True):
                    return
                self.status = status
                self.fail(status, f"backend answered {status}", "bad_status")
                return
        self.status = status
        self.header_time = client.clock() - self.start
        self.response_started = True
        if (
            len(specials) == 1
            and specials[0][0] == CONTENT_LENGTH
            and self.keep_alive
            and not (self.upgrade or self.http10 or self.is_head or self.close_after)
            and not runtime.draining
        ):
            # The common response: framed by Content-Length alone, to a keep-alive
            # HTTP/1.1 client (what the general path below would build, in fewer steps).
            parts += (
                b"Content-Length: ",
                specials[0][1],
                b"\r\nX-Request-ID: ",
                self.request_id,
                b"\r\n\r\n",
            )
            self.out = [b"".join(parts)]
            return
        content_length: bytes | None = None
        codings: list[bytes] | None = None
        connection: list[bytes] | None = None
        upgrade_value: bytes | None = None
        for kind, value in specials:
            if kind == CONTENT_LENGTH:
                content_length = value
            elif kind == CONNECTION:
                if connection is None:
                    connection = [value]
                else:
                    connection.append(value)
            elif kind == TRANSFER_ENCODING:
                if codings is None:
                    codings = [value]
                else:
                    codings.append(value)
            elif kind == UPGRADE:
                upgrade_value = value
        if connection is not None:
            named = connection_named(connection)
            if named:
                drop_named(parts, 1, named)
        if status == 101 and self.upgrade:
            if upgrade_value is not None:
                parts += (b"Upgrade: ", upgrade_value, CRLF)
            parts.append(b"Connection: upgrade\r\n")
        else:
            no_body = self.is_head or status == 204 or status == 304
            if content_length is not None:
                parts += (b"Content-Length: ", content_length, CRLF)
            elif not no_body:
                chunked, other = split_codings(codings) if codings else (False, b"")
                self.read_to_close = not chunked
                if self.http10:
                    self.close_after = True  # HTTP/1.0 client: the body ends when we close
                else:
                    # Codings before chunked (gzip, chunked) stay: the body bytes are
                    # in them, only the chunking is the proxy's own.
                    if other:
                        parts += (b"Transfer-Encoding: ", other, b", chunked\r\n")
                    else:
                        parts.append(b"Transfer-Encoding: chunked\r\n")
                    self.chunked_out = True
            if runtime.draining:
                self.close_after = True
            if self.close_after or not self.keep_alive:
                parts.append(b"Connection: close\r\n")
            elif self.http10:
                parts.append(b"Connection: keep-alive\r\n")
        parts += (b"X-Request-ID: ", self.request_id, b"\r\n\r\n")
        self.out = [b"".join(parts)]  # one buffer: the kernel copies one iovec, not 25
        if self.is_head:
            head_conn = self.conn
            assert head_conn is not None
            keep_alive = head_conn.keep_alive()
            head_conn.finish_head_response()
            self.complete(head_conn, keep_alive, None)

    def flush(self) -> None:
        """Write what the response has produced so far (the upstream calls this after
        each read; the exchange's end calls it too)."""
        out = self.out
        if out:
            self.out = []
            if not self.client.closed:
                self.client.transport.writelines(out)

    def complete(
        self,
        conn: UpstreamConnection,
        keep_alive: bool,
        trailers: list[tuple[bytes, bytes]] | None,
    ) -> None:
        """The response ended (`conn`'s parser says whether it may be reused)."""
        client = self.client
        now = self.ended = client.clock()
        self.conn = None
        out = self.out
        if self.chunked_out:
            out.append(self._trailer_block(trailers))
        if out:
            self.out = []
            if not client.closed:
                client.transport.writelines(out)
        upstream = self.upstream
        assert upstream is not None
        if self.request_complete and keep_alive and not conn.closed:
            if self.upstream_paused and conn.transport is not None:
                conn.transport.resume_reading()
            upstream.release(conn, now)
        else:
            # The backend answered before the request body was sent whole: the rest of
            # the body would be taken for a new request, so neither side is reusable.
            conn.close()
            if not self.request_complete:
                self.close_after = True
        self.termination = "ok"
        self._finish_backend(ok=True)
        client.exchange_done(self)

    def on_upstream_upgraded(self, conn: UpstreamConnection, rest: bytes) -> None:
        """The backend answered 101: both connections become a raw byte tunnel."""
        self.conn = None
        conn.exchange = None
        self.flush()  # the 101 head
        self.termination = "upgraded"
        self._finish_backend(ok=True)
        self.client.start_tunnel(conn, self, rest)

    def on_upstream_failed(self, conn: UpstreamConnection, reason: str, detail: str) -> None:
        if log.isEnabledFor(logging.WARNING):
            log.warning(
                "backend %s: %s (%s)", self.backend.id if self.backend else "?", reason, detail
            )
        self.fail(502, "invalid response from backend", "bad_response")

    def on_upstream_lost(self, conn: UpstreamConnection, got_bytes: bool) -> None:
        """The backend closed while this exchange was on it."""
        self.conn = None
        if self.response_started and self.read_to_close:
            # A response without length ends when the backend closes: that is success.
            if self.chunked_out:
                self.out.append(_CHUNK_END)
            self.flush()
            self.termination = "ok"
            self._finish_backend(ok=True)
            self.client.exchange_done(self)
            return
        if not got_bytes and self.reused and self.body_bytes == 0 and not self.upgrade:
            # A pooled connection the backend had already closed: nothing was processed,
            # so resend on a new connection (what nginx and HAProxy do for keep-alive).
            backend = self.backend
            assert backend is not None
            self._finish_backend(ok=True)
            self.attempts -= 1  # a dead pooled connection is not an attempt on the backend
            self._use(backend)
            return
        backend = self.backend
        self._finish_backend(ok=False)
        # Closed before a byte of the response: an idempotent request (held for replay)
        # is resent outside the retry budget (HAProxy's retry on a connection failure,
        # Envoy's reset before response), each time to a backend it has not failed on,
        # within `retries.attempts`. A backend that dies fails every request in flight
        # on it at once, more than the budget allows, while none of them can have had
        # an effect a replay would repeat.
        if (
            not got_bytes
            and backend is not None
            and not self.upgrade
            and self._retry(backend, "backend closed the connection", sent=True, budget=False)
        ):
            return
        self.fail(502, "backend closed the connection", "upstream_closed")

    # -- endings --

    def _finish_backend(self, ok: bool) -> None:
        """One attempt on `self.backend` ended; `ok` False on a transport failure."""
        if self.counted:
            self.counted = False
            pool = self.pool
            backend = self.backend
            assert pool is not None and backend is not None
            runtime = self.client.runtime
            state = pool.pool
            state.on_finish(backend, (self.ended or self.client.clock()) - self.start, ok)
            pool.active -= 1
            if self.retrying:
                self.retrying = False
                pool.retries_active -= 1
            report = runtime.passive_report
            if report is not None and pool.passive:
                report(backend, ok, self.status if ok else None)
            if pool.waiters:
                pool.wake_waiters()

    def fail(self, status: int, reason: str, termination: str) -> None:
        """End the exchange with the proxy's own error (or a cut if the response began)."""
        client = self.client
        self.termination = termination
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.close()
        self._finish_backend(ok=False)
        if self.response_started:
            # Headers already went out: the only honest signal left is to cut the
            # connection (the client sees a truncated body, not a spliced error).
            client.abort()
            client.exchange_done(self)
            return
        self.status = status
        if not self.request_complete:
            self.close_after = True
        if not client.closed:
            client.transport.write(
                error_response(
                    status, self.request_id, reason, close=self.close_after or not self.keep_alive
                )
            )
        client.exchange_done(self)


class ClientProtocol:
    """One client connection: parses requests, queues them, writes responses in order.

    An asyncio protocol by its methods, not by inheritance: compiled (client.pxd), it
    is an extension type, which cannot derive from a Python class."""

    __slots__ = (
        "_begun",
        "_discarding",
        "_eof",
        "_fed_at_start",
        "_forwarded",
        "_head_raw",
        "_header_bytes",
        "_held",
        "_method",
        "_parsing",
        "_paused",
        "_rejection",
        "_tunnel",
        "clock",
        "closed",
        "current",
        "deadline",
        "parser",
        "peer_ip",
        "peer_ip_bytes",
        "proto",
        "queue",
        "requests",
        "runtime",
        "timeout_kind",
        "transport",
    )

    def __init__(self, runtime: ProxyRuntime, *, tls: bool) -> None:
        self.runtime = runtime
        self.clock = runtime.loop.time  # the loop's clock: read several times per request
        self.proto = b"https" if tls else b"http"
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.peer_ip = ""
        self.peer_ip_bytes = b""
        self._forwarded = b""  # see headers.forwarded_block
        self.closed = False
        self.queue: deque[Exchange] = deque()
        self.current: Exchange | None = None  # the exchange being parsed
        self.deadline = 0.0
        self.timeout_kind = T_HEADER
        self._paused = 0
        self._header_bytes = 0  # request line and headers parsed so far
        self._head_raw = 0  # bytes received while a request's head was incomplete
        self._tunnel: asyncio.Transport | None = None
        # After an upgrade request, until its response: the bytes that followed it.
        self._held: list[bytes] | None = None
        # A malformed request's (status, reason, request id), answered once the
        # complete requests before it are; then `_discarding` while the connection lingers.
        self._rejection: tuple[int, str, bytes] | None = None
        self._discarding = False
        self._method: bytes | None = None  # an extension method, while llhttp reads
        # its request with requestline.PLACEHOLDER in its place
        self._fed_at_start = False
        self._begun = 0
        self._eof = False  # the client half-closed
        self._parsing = False  # llhttp is inside a request (begun, not complete)
        self.requests = 0  # requests begun on this connection

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        runtime = self.runtime
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else "unix"
        if self.peer_ip.startswith("::ffff:"):
            self.peer_ip = self.peer_ip[7:]
        self.peer_ip_bytes = self.peer_ip.encode()
        self._forwarded = forwarded_block(self.peer_ip_bytes, self.proto, VIA_TOKEN)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(runtime.connections) >= runtime.connection_limit:
            self.transport.write(
                error_response(503, runtime.request_ids.next(), "too many connections", close=True)
            )
            self.transport.close()
            self.closed = True
            return
        runtime.connections.add(self)
        now = self.clock()
        self.deadline = now + runtime.header_timeout
        self.timeout_kind = T_HEADER

    def data_received(self, data: bytes) -> None:
        if self._discarding or self._rejection is not None:
            return  # after a refusal: read, never parsed
        if self._tunnel is not None:
            self._tunnel.write(data)
            self.touch()
            return
        held = self._held
        if held is not None:
            # Bytes after an upgrade request, before its response: the tunnel's after a
            # 101, the next request's otherwise; neither is known yet.
            held.append(data)
            self.pause_reading_for(PAUSE_HELD)
            return
        current = self.current
        partial_head = current is not None and not current.ready
        # For _parse_failed: whether a request starts `data`, and how many had begun.
        self._fed_at_start = current is None and not self._parsing
        if self._fed_at_start:
            if scan_request_head is not None and self._method is None:
                data = self._scan_requests(data)  # (never takes a line that starts CR/LF)
            # (An int, not `data[:1] in b"\r\n"`: bytes-in-bytes first tries the
            # needle as an int, a TypeError raised and swallowed per call.)
            if data and (data[0] == 13 or data[0] == 10) and line_start(data, 0) < 0:
                # llhttp skips a bare CR before a request line; RFC 9112 §2.2 does not.
                self._reject(400, "bare CR or LF before the request line")
                return
        self._begun = self.requests
        again: bytes | None = None  # an extension method's request, to parse anew
        try:
            if data:
                self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade_request(data, exc)
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; its own status wins (413, 431...).
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                self._reject(cause.status, cause.reason)
                return
            again = self._parse_failed(data, exc)
            if again is None:
                return
        if again is not None:
            # Fed outside the `except` above: an error raised in this parse (a 501 from
            # a callback) must not have the failure it follows as its context, which is
            # how the handler above tells a callback's status from llhttp's own.
            self.data_received(again)
            return
        # Dispatch what this data made ready, now that all of it parsed cleanly.
        if self.queue:
            self._dispatch_head()
        current = self.current
        if current is not None and not current.ready:
            # httptools buffers a header line until its end: bound what a peer can make
            # it hold (one read's worth of slack past the limit).
            if partial_head:
                self._head_raw += len(data)
                if self._head_raw > self.runtime.max_header_bytes:
                    self._reject(431, "request header fields too large")
                    return
            if self.timeout_kind == T_IDLE:
                self.set_deadline(T_HEADER)

    def _parse_failed(self, data: bytes, exc: httptools.HttpParserError) -> bytes | None:
        """llhttp refused `data` (see requestline.py for what the proxy decides
        instead): an extension method is parsed again with a placeholder in its place
        (returns what to feed a new parser), an unsupported version gets 505, anything
        else 400."""
        if (
            isinstance(exc, httptools.HttpParserInvalidMethodError)
            and self._fed_at_start
            and self.current is None
        ):
            # (The requests begun in `data` before the failure all ended.)
            start = line_start(data, message_start(data, self.requests - self._begun))
            method = extension_method(data, start) if start >= 0 else None
            if method is not None:
                self.parser = httptools.HttpRequestParser(self)  # llhttp stops at an error
                self._parsing = False
                self._method = method  # put back by on_headers_complete
                return PLACEHOLDER + data[start + len(method) :]
        elif self.current is not None and unsupported_version(data):
            self._reject(505, "HTTP version not supported")
            return None
        self._reject(400, str(exc) or "malformed request")
        return None

    def _scan_requests(self, data: bytes) -> bytes:
        """Take the canonical requests at the start of `data` (see canonical_head) as
        llhttp would; returns the rest, for llhttp."""
        limit = self.runtime.max_header_bytes
        start = 0
        size = len(data)
        while start < size:
            head = scan_request_head(data, start, limit)
            if head is None:
                break
            end, method, url, line, host, kept = head
            self.requests += 1
            exchange = Exchange(self)
            exchange.url = url
            exchange.specials = [(HOST, b"host", host)]
            exchange.parts = [line, kept]
            self._plain_request(exchange, method, True, host)
            exchange.request_complete = True
            self._queue_ready(exchange)
            start = end
        if start == 0:
            return data
        return data[start:] if start < size else b""

    def _on_upgrade_request(self, data: bytes, exc: httptools.HttpParserUpgrade) -> None:
        current = self.queue[-1] if self.queue else None
        if current is None or not current.ready:
            self._reject(400, "malformed upgrade request")
            return
        # (CONNECT, which llhttp also reads as an upgrade, was refused with its head.)
        # An upgrade request is an ordinary request until its backend answers 101 (RFC
        # 9110 §7.8): what follows its head is held, unread and unsent, until then, and
        # read as the next request if the answer is anything else. (httptools has llhttp
        # resume after the upgrade, so the same parser reads on; it never reads an
        # upgrade request's body, which is why one with a body is refused.)
        offset = exc.args[0] if exc.args else len(data)
        rest = data[offset:]
        current.upgrade = True
        self._held = [rest] if rest else []
        self.pause_reading_for(PAUSE_HELD)
        self._dispatch_head()

    def eof_received(self) -> bool | None:
        """The client half-closed. Requests it sent whole are still answered (it may be
        waiting for them: HTTP/1.0 tools, `shutdown(SHUT_WR)`), unless their pool says
        `abort_on_client_close`; then we close. One it
        left mid-body can never complete: closing at once aborts its backend exchange
        (`connection_lost`), where the backend would otherwise wait for the rest of
        the body until the response timeout."""
        if self._tunnel is not None:
            if self._tunnel.can_write_eof():
                self._tunnel.write_eof()
                return True
            return None
        queue = self.queue
        # (TLS cannot stay half-open.)
        if (
            queue
            and self.proto == b"http"
            and queue[-1].request_complete
            and not any(e.pool is not None and e.pool.config.abort_on_client_close for e in queue)
        ):
            self._eof = True
            if self.current is not None and not self.current.ready:
                self.current = None  # a partial request can never complete now
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        runtime = self.runtime
        runtime.connections.discard(self)
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None
        for exchange in self.queue:
            if exchange.queued and exchange.pool is not None:
                exchange.pool.dequeue_waiter(exchange)
                exchange.queued = False
            conn = exchange.conn
            if conn is not None:
                # The client left mid-exchange: the backend connection is in an unknown
                # state, so it is closed, not pooled.
                exchange.conn = None
                conn.close()
            if exchange.counted:
                exchange.termination = (
                    "client_closed" if exchange.request_complete else "client_aborted"
                )
                exchange._finish_backend(ok=True)
                self._report(exchange)
        self.queue.clear()

    def pause_writing(self) -> None:
        if self.queue:
            head = self.queue[0]
            conn = head.conn
            if conn is not None and conn.transport is not None:
                head.upstream_paused = True
                conn.transport.pause_reading()
        elif self._tunnel is not None:
            self._tunnel.pause_reading()

    def resume_writing(self) -> None:
        self.touch()
        if self.queue:
            head = self.queue[0]
            conn = head.conn
            if conn is not None and conn.transport is not None and head.upstream_paused:
                head.upstream_paused = False
                conn.transport.resume_reading()
        elif self._tunnel is not None:
            self._tunnel.resume_reading()

    # -- httptools request callbacks --

    # (`on_message_begin` only marks llhttp as inside a request, which keeps the
    # scanner out until the request completes: a request's first event with content is
    # its URL, so `on_url` begins the exchange.)

    def on_message_begin(self) -> None:
        self._parsing = True

    def on_url(self, url: bytes) -> None:
        exchange = self.current
        if exchange is None:
            self.requests += 1
            self.current = exchange = Exchange(self)
            exchange.url = url
            self._head_raw = 0
            size = len(url)
        else:
            exchange.url += url  # the request line arrived in pieces
            size = self._header_bytes + len(url)
        self._header_bytes = size
        if size > self.runtime.max_header_bytes:
            raise BadRequest(431, "request header fields too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.current
        assert exchange is not None
        size = self._header_bytes + len(name) + len(value) + 4
        self._header_bytes = size
        if size > self.runtime.max_header_bytes:
            raise BadRequest(431, "request header fields too large")
        if exchange.ready:
            if name.lower() in _CONNECTION_NAMES:
                # llhttp takes a `close` here as the connection's, whatever comes next:
                # refused, as llhttp refuses a framing header in a trailer section.
                raise BadRequest(400, "Connection in a trailer section")
            if exchange.trailers is None:
                exchange.trailers = []
            exchange.trailers.append((name, value))
            return
        kind = request_kind_cached(name)
        if kind is None:
            kind = request_kind(name)
        if kind == KEEP:
            exchange.parts += (name, SEP, value, CRLF)
        elif kind != DROP:
            exchange.specials.append((kind, name, value))
            if kind == HOST:  # read by the proxy, and forwarded as received
                exchange.parts += (name, SEP, value, CRLF)

    def on_headers_complete(self) -> None:
        exchange = self.current
        assert exchange is not None
        parser = self.parser
        method = parser.get_method()
        if self._method is not None:  # an extension method (see _parse_failed)
            method = self._method
            self._method = None
        keep_alive = parser.should_keep_alive()
        specials = exchange.specials
        url = exchange.url
        if (
            keep_alive
            and len(specials) == 1
            and specials[0][0] == HOST
            and method != b"CONNECT"
            and url[0] == 47  # "/": origin-form (target.origin_form reads the others)
            and 35 not in url  # "#", as an int (see data_received)
        ):
            # The common request: Host is its only header the proxy acts on (no body
            # framing, no Connection, no Upgrade, no forwarding headers to append to).
            # It is HTTP/1.1 without asking (`get_http_version` formats a str): with
            # no Connection header only 1.1 keeps alive, and llhttp accepts no other
            # 1.x version.
            host = specials[0][2]
            if host not in valid_hosts and not host_ok(host):
                raise BadRequest(400, "invalid Host header")
            exchange.kept_end = len(exchange.parts)
            exchange.parts[0] = b" ".join((method, url, b"HTTP/1.1\r\n"))
            self._plain_request(exchange, method, keep_alive, host)
        else:
            self._request_basics(exchange, method, keep_alive)
            version = parser.get_http_version()
            if version != "1.1":
                if version == "1.0":
                    exchange.http10 = True
                elif version == "0.9":  # llhttp's reading of a request line with no version
                    raise BadRequest(400, "missing HTTP version")
                else:
                    raise BadRequest(505, "HTTP version not supported")
            self._head_with_specials(exchange, method, url)
        self._queue_ready(exchange)

    def _request_basics(self, exchange: Exchange, method: bytes, keep_alive: bool) -> None:
        exchange.method = method
        exchange.is_head = method == b"HEAD"
        exchange.keep_alive = keep_alive and not self.runtime.draining
        if method in _IDEMPOTENT:
            exchange.replay = []

    def _plain_request(
        self, exchange: Exchange, method: bytes, keep_alive: bool, host: bytes
    ) -> None:
        """The backend's head for the common request (Host its only special header):
        `exchange.parts` holds the request line to send, then the forwarded header
        lines."""
        self._request_basics(exchange, method, keep_alive)
        runtime = self.runtime
        url = exchange.url
        exchange.request_id = request_id = runtime.request_ids.next()
        pool = runtime.only_pool
        parts = exchange.parts
        if pool is None:
            pool, target = runtime.route(host, url)
            if target is not url:  # the route forwards the normalised path
                exchange.url = target
                parts[0] = b" ".join((method, target, b"HTTP/1.1\r\n"))
        exchange.pool = pool
        parts += (b"X-Forwarded-Host: ", host, CRLF, self._forwarded, request_id, b"\r\n\r\n")
        exchange.head = b"".join(parts)

    def _queue_ready(self, exchange: Exchange) -> None:
        """The request's head is parsed and checked: it waits for its turn."""
        exchange.ready = True
        self.queue.append(exchange)
        if len(self.queue) > 1:
            # Pipelined: the response to an earlier request is still in flight.
            self.pause_reading_for(PAUSE_PIPELINE)

    def _head_with_specials(self, exchange: Exchange, method: bytes, url: bytes) -> None:
        """The backend's head for a request with special headers besides Host (or
        none): framing, Connection, Expect, Upgrade, forwarding headers."""
        runtime = self.runtime
        upgrade = self.parser.should_upgrade()
        meta = RequestMeta(exchange.specials)
        if meta.host is None:
            if not exchange.http10:
                raise BadRequest(400, "missing Host header")
        elif not host_ok(meta.host):
            raise BadRequest(400, "invalid Host header")
        parts = exchange.parts
        if method == b"CONNECT":
            raise BadRequest(405, "CONNECT is not supported")  # (authority-form target)
        url, authority = origin_form(method, url)
        if authority is not None:
            # Absolute-form: its authority is the host (RFC 9112 §3.2.2), for the
            # route, the backend's Host and X-Forwarded-Host alike.
            if meta.host is None:
                parts += (b"Host", SEP, authority, CRLF)
            else:
                set_value(parts, b"host", authority)
            meta.host = authority
            exchange.url = url
        if meta.connection is not None:
            named = meta.named_by_connection()
            if named:
                drop_named(parts, 1, named)
        if upgrade and (meta.chunked or (meta.content_length or b"0").strip(b"0")):
            # llhttp reads no body of an upgrade request (httptools has it skip one),
            # and a WebSocket handshake never has one (RFC 6455 §4.1).
            raise BadRequest(400, "upgrade request with a body")
        exchange.kept_end = len(parts)
        exchange.expect_continue = meta.expect_continue and not exchange.http10
        if meta.content_length is not None:
            max_body = runtime.max_body_bytes
            if max_body and int(meta.content_length) > max_body:
                raise BadRequest(413, "request body too large")
            framing = b"Content-Length: " + meta.content_length + CRLF
        elif meta.chunked:
            exchange.chunked_in = True
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b""  # no body (llhttp reads none without a length or chunked)
        exchange.request_id = request_id = meta.xrid or runtime.request_ids.next()
        pool, url = runtime.route(meta.host, url)
        exchange.pool = pool
        exchange.url = url
        exchange.head = build_request_head(
            b" ".join((method, url, b"HTTP/1.1\r\n")),
            parts,
            meta,
            client_ip=self.peer_ip_bytes,
            proto=self.proto,
            request_id=request_id,
            framing=framing,
            default_host=pool.default_host if pool is not None else b"localhost",
            upgrade=upgrade,
        )

    def on_body(self, body: bytes) -> None:
        exchange = self.current
        assert exchange is not None
        exchange.body_bytes += len(body)
        max_body = self.runtime.max_body_bytes
        if max_body and exchange.body_bytes > max_body:
            raise BadRequest(413, "request body too large")
        exchange.on_request_body(body)

    def on_message_complete(self) -> None:
        exchange = self.current
        assert exchange is not None
        self.current = None
        self._parsing = False
        exchange.on_request_complete()

    # -- flow control and timers --

    def pause_reading_for(self, reason: int) -> None:
        if not self._paused and not self.closed:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading_for(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.closed:
                self.transport.resume_reading()

    def touch(self) -> None:
        """Activity on an exchange in flight or a tunnel: push its inactivity deadline."""
        kind = self.timeout_kind
        if kind == T_RESPONSE:
            self.deadline = self.clock() + self.runtime.response_timeout
        elif kind == T_TUNNEL:
            self.deadline = self.clock() + self.runtime.idle_timeout

    def set_deadline(self, kind: int) -> None:
        runtime = self.runtime
        if kind == T_RESPONSE:
            seconds = runtime.response_timeout
        elif kind == T_HEADER:
            seconds = runtime.header_timeout
        else:
            seconds = runtime.idle_timeout
        self.timeout_kind = kind
        self.deadline = self.clock() + seconds

    def on_timeout(self) -> None:
        """The sweeper found this connection past its deadline."""
        kind = self.timeout_kind
        if kind == T_QUEUE and self.queue and self.queue[0].queued:
            head = self.queue[0]
            if head.pool is not None:
                head.pool.dequeue_waiter(head)
            head.queued = False
            head.fail(503, "no backend slot free within queue_timeout", "queue_timeout")
            return
        if kind == T_RESPONSE and self.queue:
            head = self.queue[0]
            if head.conn is not None or head.backend is not None:
                head.fail(504, "backend response timeout", "response_timeout")
                return
        if kind == T_HEADER and self.current is not None and self._header_bytes:
            self._reject(408, "request header timeout")
            return
        self.close()

    # -- exchange lifecycle --

    def _dispatch_head(self) -> None:
        """The exchange at the head of the queue goes to a backend, unless it has already."""
        head = self.queue[0]
        if not head.dispatched:
            head.dispatch()

    def _report(self, exchange: Exchange) -> None:
        """An exchange ended: the runtime's listeners (metrics, access log) see it."""
        for callback in self.runtime.exchange_listeners:
            callback(exchange)

    def exchange_done(self, exchange: Exchange) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        ended = exchange.ended
        if not ended:
            ended = exchange.ended = self.clock()
        self._report(exchange)
        if self.closed:
            return
        if exchange.close_after or not exchange.keep_alive:
            if exchange.request_complete:
                self.close()
            else:
                self.linger()  # the client may still be sending the body
            return
        if self._rejection is not None and not queue:
            self._send_rejection(*self._rejection)
            return
        if self._paused:
            self.resume_reading_for(PAUSE_UPSTREAM_FULL | PAUSE_WAITING)
            if len(queue) <= 1:
                self.resume_reading_for(PAUSE_PIPELINE)
        if exchange.upgrade and self._held is not None:
            self._release_held()  # (nothing after an upgrade request is queued yet)
            return
        if self._eof and not queue:
            self.close()
            return
        if queue:
            self._dispatch_head()
            return
        if self.current is not None:
            self.set_deadline(T_HEADER)
        else:
            self.timeout_kind = T_IDLE
            self.deadline = ended + self.runtime.idle_timeout
            if self.runtime.draining:
                self.close()

    def _release_held(self) -> None:
        """An upgrade request was answered without a 101: what the client sent after
        it is HTTP again, read now as if it had just arrived."""
        held = self._held
        self._held = None
        self.timeout_kind = T_IDLE
        self.deadline = self.clock() + self.runtime.idle_timeout
        self.resume_reading_for(PAUSE_HELD)
        if held:
            self.data_received(b"".join(held))
        if self._eof and not self.queue:
            self.close()  # half-closed: nothing more can come

    def start_tunnel(self, conn: UpstreamConnection, exchange: Exchange, rest: bytes) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        self._report(exchange)
        transport = conn.transport
        assert transport is not None
        self._tunnel = transport
        conn.tunnel = self.transport
        self.timeout_kind = T_TUNNEL
        self.touch()
        held = self._held
        self._held = None
        if held:
            transport.writelines(held)  # sent after the upgrade request: now the tunnel's
        if rest:
            self.transport.write(rest)
        self._paused = 0
        self.transport.resume_reading()

    def _reject(self, status: int, reason: str) -> None:
        """A malformed request: make sure none of it reaches a backend, answer the
        complete requests before it in order, then the error, then close."""
        if log.isEnabledFor(logging.INFO):
            log.info("rejected request from %s: %d %s", self.peer_ip, status, reason)
        queue = self.queue
        current = self.current
        # The client's X-Request-ID, when the bad request's head got that far.
        request_id = current.request_id if current is not None else b""
        self.current = None
        if queue and not queue[-1].request_complete:
            # The bad bytes are in this request's body (a bad chunk): if it is already
            # streaming to a backend, cut that connection so it never sees a complete,
            # reinterpreted request.
            bad = queue.pop()
            conn = bad.conn
            if conn is not None:
                bad.conn = None
                conn.close()
                bad._finish_backend(ok=False)
            if bad.response_started:
                self.abort()  # its response began: a cut is the only signal left
                return
        if queue and not self.closed:
            # Complete requests before the bad bytes: each gets its answer first (a
            # retried POST dropped here would run twice), then the error (RFC 9112 §9.3.2).
            self._rejection = (status, reason, request_id)
            self.pause_reading_for(PAUSE_REJECTED)
            self._dispatch_head()
            return
        self._send_rejection(status, reason, request_id)

    def _send_rejection(self, status: int, reason: str, request_id: bytes) -> None:
        """The error answer to a malformed request, once nothing is before it."""
        self._rejection = None
        if not self.closed:
            request_id = request_id or self.runtime.request_ids.next()
            self.transport.write(error_response(status, request_id, reason, close=True))
            self.runtime.count_rejected(status)
        self.queue.clear()
        self.linger()

    def linger(self) -> None:
        """Close after an error answer so that the client can read it: half-close, then
        read and discard what it still sends (the rest of a refused body, say) until it
        closes or LINGER_SECONDS pass. A plain close with unread bytes would send a
        reset, and the client's stack would drop the answer unread (nginx's
        lingering_close, HAProxy's lingering)."""
        if self.closed:
            return
        transport = self.transport
        if not transport.can_write_eof():  # TLS: no half-close
            self.close()
            return
        self._discarding = True
        self.queue.clear()
        self.current = None
        transport.write_eof()  # after what is buffered
        self.timeout_kind = T_LINGER
        self.deadline = self.clock() + LINGER_SECONDS
        self._paused = 0
        transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.runtime.connections.discard(self)
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.runtime.connections.discard(self)
            self.transport.abort()

    def idle(self) -> bool:
        """No request in flight or being received (safe to close on shutdown)."""
        return not self.queue and self.current is None and self._tunnel is None
