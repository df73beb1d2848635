"""One request and its response, whatever client protocol carried it: the `Exchange`.

A client protocol (HTTP/1.1: client.py's `ClientProtocol`; HTTP/2: h2front.py's
`StreamClient`, one per stream) reads a request, fills an `Exchange` with its head and
dispatches it (HTTP/1.1: once it heads its connection's queue), and from then on the
exchange talks to two narrow interfaces:

- its client, through `ClientSide` (clientside.py): send the response (`send_head`, the
  body's bytes, `send_end`, or the proxy's own `send_error`), pause and resume reading
  the request, push its deadline, and say when the exchange ended.
- the backend connection serving it (upstream.py's `UpstreamConnection`), which never
  touches the exchange's fields but calls it back: `on_head`, `on_body`, `on_read_end`,
  `on_complete`, `on_lost` (and, rarer, `on_upgraded`, `on_invalid`, `on_backend_full`).

The exchange's own work: choose a backend (through its `ProxyPool`, the one way: `select`
for the first attempt and a queued one, `select_retry` for a retry), take a pooled
connection or open one, stream the request body, retry or queue, hand the response to
its client side, and finish: the backend's counters, the pool's queue
and retry budget, the client's next request.

Compiled (setup.py), the classes here are extension types with the fields
`exchange.pxd` declares: an attribute added here must be declared there too (the test
suite runs the data plane in both forms, so a missing one fails there).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from haproxyd.balancer.state import BackendState
from haproxyd.proxy.clientside import ClientSide
from haproxyd.proxy.flow import (
    PAUSE_UPSTREAM_FULL,
    PAUSE_WAITING,
    T_QUEUE,
    T_RESPONSE,
)
from haproxyd.proxy.headers import CRLF, header_in_block, trailer_block

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.proxy.upstream import (
        BackendConnections,
        ProxyPool,
        UpstreamConnection,
    )

log = logging.getLogger("haproxyd.proxy")

_RETRY_STATUSES = frozenset({502, 503, 504})


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
        "http2",
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
        "retry_log",
        "retrying",
        "reused",
        "specials",
        "start",
        "status",
        "termination",
        "trace",
        "trailers",
        "tried",
        "upgrade",
        "upstream",
        "upstream_paused",
        "url",
    )

    def __init__(self, client: ClientSide) -> None:
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
        self.http2 = False  # the request came on an HTTP/2 stream (h2front.py)
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
        self.pool: ProxyPool | None = None
        self.backend: Backend | None = None
        self.counted = False  # `pool.state.on_start(backend)` called, `on_finish` not yet
        self.upstream: BackendConnections | None = None
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
        # Each retry: (loop time, failed backend, next backend, reason), for its span.
        self.retry_log: list[tuple[float, Backend, Backend, str]] | None = None
        self.attempts = 0
        self.status = 0
        self.start = 0.0
        self.ended = 0.0  # loop time the response ended (0 until it has)
        self.connect_time = -1.0
        self.header_time = -1.0
        self.termination = ""
        # Set when tracing is on (request.TraceIds.line): (trace id, span id, the
        # client's span id or None, sampled), ids as lower-case hex.
        self.trace: tuple[bytes, bytes, bytes | None, bool] | None = None

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

    # -- request side: dispatch, queue, retry --

    def dispatch(self) -> None:
        """Choose a backend and send the request (head of the client's queue only)."""
        self.dispatched = True
        client = self.client
        runtime = client.runtime
        self.start = start = client.clock()
        client.set_deadline_at(T_RESPONSE, start + runtime.response_timeout)
        pool = self.pool
        if pool is None:
            self.fail(404, "no route for this request", "no_route")
            return
        if runtime.shedding:
            self.fail(503, "node unhealthy", "shed")
            return
        backend = pool.select(self)
        if backend is None:
            state = pool.state
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
                client.set_deadline_at(T_QUEUE, start + pool.config.queue_timeout)
                return
            self.fail(503, "no backend available", "no_backend")
            return
        self._use(backend)

    def dequeue(self) -> bool:
        """A backend slot freed up: try again. False if still nothing is free."""
        pool = self.pool
        assert pool is not None
        backend = pool.select(self)
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
        state = pool.state
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

    async def _connect(self, upstream: BackendConnections) -> None:
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
        timeout, 1 s). `sent`: the request reached the failed backend, so only
        idempotent requests whose body is still held for replay may go again. Bounded
        by `retries.attempts` and (unless `budget` is False) the pool's retry budget.
        Returns False when no retry happens."""
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
        choice = pool.select_retry(self, tried)
        if choice is None:
            return False
        if log.isEnabledFor(logging.INFO):
            log.info("retry %s -> %s: %s", failed.id, choice.id, reason)
        if self.retry_log is None:
            self.retry_log = []
        self.retry_log.append((self.client.clock(), failed, choice, reason))
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
            # (Reads pause for PAUSE_WAITING only while body bytes are buffered here.)
            client.resume_reading_for(PAUSE_WAITING)
        if self.request_complete:
            if self.chunked_in:
                transport.write(trailer_block(self.trailers))
        elif self.expect_continue and not self.continue_sent:
            self.continue_sent = True
            client.send_continue()

    # -- request body (called by the client protocol) --

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
            frame = (b"%x\r\n" % len(body), body, CRLF)
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
            conn.transport.write(trailer_block(self.trailers))  # type: ignore[union-attr]

    # -- response side: called by the UpstreamConnection serving this exchange --

    def on_head(self, status: int, parts: list[bytes], specials: list[tuple[int, bytes]]) -> None:
        """The backend's response head: `parts` are the status line for the client and
        the forwarded headers (from index 1), `specials` the (kind, value) of its
        framing, Connection and Upgrade headers (see headers.py)."""
        client = self.client
        if status in _RETRY_STATUSES and self.replay is not None and self.conn is not None:
            # Resend to another backend before a byte of this answer reaches the client.
            backend = self.backend
            assert backend is not None
            if self.attempts <= self.pool.config.retries.attempts and self.pool.retry_allowed():  # type: ignore[union-attr]
                self.cut_backend()
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
        client.send_head(self, status, parts, specials)
        if self.is_head:
            head_conn = self.conn
            assert head_conn is not None
            keep_alive = head_conn.keep_alive()
            head_conn.finish_head_response()
            self.on_complete(head_conn, keep_alive, None)

    def on_body(self, body: bytes) -> None:
        """Bytes of the response body (one backend read, or one chunk of it): held in
        `out` until `on_read_end` writes them all at once."""
        self.bytes_out += len(body)
        if self.chunked_out:
            if body:
                self.out += (b"%x\r\n" % len(body), body, CRLF)
        else:
            self.out.append(body)

    def on_read_end(self) -> None:
        """A read from the backend ended with this exchange still in flight: it was
        activity (the response timeout counts from the last one), and what it produced
        goes to the client in one write."""
        client = self.client
        client.touch()
        out = self.out
        if out:
            self.out = []
            client.writelines(out)

    def flush(self) -> None:
        """Write what the response has produced so far."""
        out = self.out
        if out:
            self.out = []
            self.client.writelines(out)

    def on_complete(
        self,
        conn: UpstreamConnection,
        keep_alive: bool,
        trailers: list[tuple[bytes, bytes]] | None,
    ) -> None:
        """The response ended (`conn`'s parser says whether it may be reused)."""
        client = self.client
        now = self.ended = client.clock()
        self.conn = None
        client.send_end(self, trailers)
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

    def on_upgraded(self, conn: UpstreamConnection, rest: bytes) -> None:
        """The backend answered 101: both connections become a raw byte tunnel."""
        self.conn = None
        conn.exchange = None
        self.flush()  # the 101 head
        self.termination = "upgraded"
        self._finish_backend(ok=True)
        self.client.start_tunnel(conn, self, rest)

    def on_invalid(self, reason: str, detail: str) -> None:
        """The backend's response could not be parsed (it closes the connection)."""
        if log.isEnabledFor(logging.WARNING):
            log.warning(
                "backend %s: %s (%s)", self.backend.id if self.backend else "?", reason, detail
            )
        self.fail(502, "invalid response from backend", "bad_response")

    def on_backend_full(self, full: bool) -> None:
        """The backend's socket buffer filled (True) or drained (False): stop, then
        resume, reading the request body from the client."""
        if full:
            self.client.pause_reading_for(PAUSE_UPSTREAM_FULL)
        else:
            self.client.resume_reading_for(PAUSE_UPSTREAM_FULL)

    def on_lost(self, conn: UpstreamConnection, got_bytes: bool) -> None:
        """The backend closed while this exchange was on it."""
        self.conn = None
        if self.response_started and self.read_to_close:
            # A response without length ends when the backend closes: that is success.
            self.client.send_end(self, None)
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

    # -- called by the client protocol, besides the request's own events --

    def on_client_lost(self) -> bool:
        """The client connection closed with this exchange queued or in flight: leave
        the pool's queue, close the backend connection (in an unknown state, so not
        pooled) and end the attempt. True when there was one (the exchange is then to
        be reported)."""
        if self.queued and self.pool is not None:
            self.pool.dequeue_waiter(self)
            self.queued = False
        self.cut_backend()
        if not self.counted:
            return False
        self.termination = "client_closed" if self.request_complete else "client_aborted"
        self._finish_backend(ok=True)
        return True

    def on_deadline(self, kind: int) -> bool:
        """The client connection's deadline of `kind` (flow.T_*) passed with this
        exchange first in its queue: a wait for a backend slot ends in 503, one for
        the backend in 504. False: the deadline was not this exchange's."""
        if kind == T_QUEUE and self.queued:
            if self.pool is not None:
                self.pool.dequeue_waiter(self)
            self.queued = False
            self.fail(503, "no backend slot free within queue_timeout", "queue_timeout")
            return True
        if kind == T_RESPONSE and (self.conn is not None or self.backend is not None):
            self.fail(504, "backend response timeout", "response_timeout")
            return True
        return False

    def pause_response(self) -> None:
        """The client cannot take more: stop reading the backend's response."""
        conn = self.conn
        if conn is not None and conn.transport is not None:
            self.upstream_paused = True
            conn.transport.pause_reading()

    def resume_response(self) -> None:
        conn = self.conn
        if conn is not None and conn.transport is not None and self.upstream_paused:
            self.upstream_paused = False
            conn.transport.resume_reading()

    # -- endings --

    def cut_backend(self) -> None:
        """Close the backend connection this exchange is on, if any: in the middle of
        an exchange its state is unknown, so it is closed, never pooled."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.close()

    def _finish_backend(self, ok: bool) -> None:
        """One attempt on `self.backend` ended; `ok` False on a transport failure."""
        if self.counted:
            self.counted = False
            pool = self.pool
            backend = self.backend
            assert pool is not None and backend is not None
            runtime = self.client.runtime
            state = pool.state
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
        self.cut_backend()
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
        client.send_error(self, status, reason)
        client.exchange_done(self)
