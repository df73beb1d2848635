"""The HTTP/1.1 client protocol: one `ClientProtocol` per accepted connection.

It parses requests (httptools, or the compiled canonical-head scanner), makes each an
`Exchange` (exchange.py), queues them, and is the exchange's `ClientSide`: the bytes the
exchange writes go out in request order. Flow of a request (all callbacks on the event
loop; a task only to open a new backend connection):

1. httptools parses the client's bytes and calls `on_*`; a new `Exchange` collects the
   request line and headers. It is *dispatched only after `feed_data` returned without
   error*, so a request that is malformed anywhere in the bytes received so far (a bad
   chunk size right after the headers, say) never reaches a backend.
2. The exchange at the head of the queue dispatches itself (exchange.py) and streams
   the body as it arrives (re-framed by the proxy, never copied raw).
3. When its response is complete the exchange calls `exchange_done`, and the next
   pipelined request, if any, starts. Responses therefore leave in request order.

Compiled (setup.py), `ClientProtocol` is an extension type with the fields `client.pxd`
declares: an attribute added here must be declared there too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httptools

from haproxyd.proxy.clientside import ClientSide
from haproxyd.proxy.errors import error_response
from haproxyd.proxy.exchange import Exchange
from haproxyd.proxy.flow import (
    PAUSE_HELD,
    PAUSE_PIPELINE,
    PAUSE_UPSTREAM_FULL,
    PAUSE_WAITING,
    T_HEADER,
    T_IDLE,
    T_QUEUE,
    T_RESPONSE,
    T_TUNNEL,
)
from haproxyd.proxy.h2front import alpn_chose_h2, start_http2, take_h2c_preface
from haproxyd.proxy.headers import (
    CRLF,
    DROP,
    HOST,
    KEEP,
    SEP,
    TRACEPARENT,
    VIA_TOKEN,
    BadRequest,
    forwarded_block,
    request_kind,
    request_kind_cached,
)
from haproxyd.proxy.refusal import linger, reject, send_rejection
from haproxyd.proxy.request import plain_request, request_basics, special_request
from haproxyd.proxy.requestline import (
    PLACEHOLDER,
    extension_method,
    line_start,
    message_start,
    unsupported_version,
)
from haproxyd.proxy.target import host_ok, valid_hosts

try:
    from haproxyd.proxy.canonical_head import scan_request_head
except ImportError:  # not compiled: llhttp reads every request
    scan_request_head = None

if TYPE_CHECKING:
    from haproxyd.proxy.runtime import ProxyRuntime
    from haproxyd.proxy.upstream import UpstreamConnection

log = logging.getLogger("haproxyd.proxy")

_CONNECTION_NAMES = (b"connection", b"proxy-connection")


class ClientProtocol(ClientSide):
    """One client connection: parses requests, queues them, writes responses in order.

    An asyncio protocol by its methods, not by inheritance: compiled (client.pxd), it
    is an extension type, which can derive only from another one (`ClientSide`)."""

    __slots__ = (
        "_begun",
        "_discarding",
        "_eof",
        "_fed_at_start",
        "_forwarded",
        "_head_raw",
        "_header_bytes",
        "_held",
        "_http2",
        "_method",
        "_parsing",
        "_paused",
        "_preface",
        "_rejection",
        "_tunnel",
        "current",
        "deadline",
        "parser",
        "peer_ip_bytes",
        "proto",
        "queue",
        "requests",
        "timeout_kind",
        "transport",
    )

    def __init__(self, runtime: ProxyRuntime, *, tls: bool, http2: bool = False) -> None:
        self.runtime = runtime
        # This listener also speaks HTTP/2 (h2front.py): TLS when ALPN chose `h2`,
        # cleartext when the connection opens with the preface (h2c, prior knowledge).
        self._http2 = http2
        self._preface = b""  # the first bytes, while they may still be the preface
        self.clock = runtime.clock  # the loop's clock: read several times per request
        self.proto = b"https" if tls else b"http"
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        # llhttp's parser, made when a request first needs it: building one looks up
        # each of its callbacks on this protocol (about 4k instructions), and most
        # connections' requests are the canonical heads the scanner reads without it.
        self.parser = None
        self.peer_ip = ""
        self.peer_ip_bytes = b""
        self._forwarded = b""  # see headers.forwarded_block
        self.closed = False
        # A list: a deque allocates 64 slots up front (760 bytes) for one exchange.
        self.queue: list[Exchange] = []
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
        self.peer_ip = self.peer_ip.removeprefix("::ffff:")
        self.peer_ip_bytes = self.peer_ip.encode()
        self._forwarded = forwarded_block(self.peer_ip_bytes, self.proto, VIA_TOKEN)
        # (No TCP_NODELAY here: uvloop sets it on every TCP transport it makes, and
        # asking for the socket to set it again cost a pseudo-socket, a dup'd socket
        # object and a syscall: about 6 % of a new connection's instructions.
        # tests/proxy/test_nodelay.py holds uvloop to it.)
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
        if self._http2 and self.proto == b"https" and alpn_chose_h2(transport):
            start_http2(self, b"")

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
            if self.requests == 0 and self._http2 and self.proto == b"http":
                data = take_h2c_preface(self, data)
                if not data:
                    return  # held, or now the HTTP/2 session's
            if scan_request_head is not None and self._method is None:
                data = self._scan_requests(data)  # (never takes a line that starts CR/LF)
            # (An int, not `data[:1] in b"\r\n"`: bytes-in-bytes first tries the
            # needle as an int, a TypeError raised and swallowed per call.)
            if data and (data[0] == 13 or data[0] == 10) and line_start(data, 0) < 0:
                # llhttp skips a bare CR before a request line; RFC 9112 §2.2 does not.
                reject(self, 400, "bare CR or LF before the request line")
                return
        self._begun = self.requests
        again: bytes | None = None  # an extension method's request, to parse anew
        try:
            if data:
                parser = self.parser
                if parser is None:
                    parser = self.parser = httptools.HttpRequestParser(self)
                parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade_request(data, exc)
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; its own status wins (413, 431...).
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                reject(self, cause.status, cause.reason)
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
                    reject(self, 431, "request header fields too large")
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
            reject(self, 505, "HTTP version not supported")
            return None
        reject(self, 400, str(exc) or "malformed request")
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
            end, method, url, line, host, kept, keep_alive = head
            self.requests += 1
            exchange = Exchange(self)
            exchange.url = url
            exchange.specials = [(HOST, b"host", host)]
            exchange.parts = [line, kept]
            plain_request(exchange, self.runtime, method, keep_alive, host, self._forwarded)
            exchange.request_complete = True
            self._queue_ready(exchange)
            if not keep_alive:
                # The connection's last request: what follows is never read (llhttp
                # refuses bytes after `Connection: close`; nginx and HAProxy ignore
                # them), and the connection closes after the answer.
                self._discarding = True
                return b""
            start = end
        if start == 0:
            return data
        return data[start:] if start < size else b""

    def _on_upgrade_request(self, data: bytes, exc: httptools.HttpParserUpgrade) -> None:
        current = self.queue[-1] if self.queue else None
        if current is None or not current.ready:
            reject(self, 400, "malformed upgrade request")
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
            if exchange.on_client_lost():
                self._report(exchange)
        self.queue.clear()

    def pause_writing(self) -> None:
        if self.queue:
            self.queue[0].pause_response()
        elif self._tunnel is not None:
            self._tunnel.pause_reading()

    def resume_writing(self) -> None:
        self.touch()
        if self.queue:
            self.queue[0].resume_response()
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
            # Read, and forwarded as received (two compares, not `in`: Host is on
            # every request, and compiled a tuple test costs more).
            if kind == HOST or kind == TRACEPARENT:  # noqa: SIM109
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
            plain_request(exchange, self.runtime, method, keep_alive, host, self._forwarded)
        else:
            request_basics(exchange, self.runtime, method, keep_alive)
            version = parser.get_http_version()
            if version != "1.1":
                if version == "1.0":
                    exchange.http10 = True
                elif version == "0.9":  # llhttp's reading of a request line with no version
                    raise BadRequest(400, "missing HTTP version")
                else:
                    raise BadRequest(505, "HTTP version not supported")
            special_request(
                exchange,
                self.runtime,
                method,
                url,
                self.parser.should_upgrade(),
                self.peer_ip_bytes,
                self.proto,
            )
        self._queue_ready(exchange)

    def _queue_ready(self, exchange: Exchange) -> None:
        """The request's head is parsed and checked: it waits for its turn."""
        exchange.ready = True
        self.queue.append(exchange)
        if len(self.queue) > 1:
            # Pipelined: the response to an earlier request is still in flight.
            self.pause_reading_for(PAUSE_PIPELINE)

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

    # -- ClientSide: what the exchange calls --

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        if not self.closed:
            self.transport.writelines(data)

    # (The exchange also calls pause_reading_for, resume_reading_for, touch,
    # set_deadline, set_deadline_at, exchange_done, start_tunnel and abort, below.)

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

    def set_deadline_at(self, kind: int, deadline: float) -> None:
        self.timeout_kind = kind
        self.deadline = deadline

    def on_timeout(self) -> None:
        """The sweeper found this connection past its deadline."""
        kind = self.timeout_kind
        queue = self.queue
        if kind in (T_QUEUE, T_RESPONSE) and queue and queue[0].on_deadline(kind):
            return
        if kind == T_HEADER and self.current is not None and self._header_bytes:
            reject(self, 408, "request header timeout")
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
            del queue[0]
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
                linger(self)  # the client may still be sending the body
            return
        if self._rejection is not None and not queue:
            send_rejection(self, *self._rejection)
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
            del queue[0]
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
