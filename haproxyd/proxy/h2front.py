"""HTTP/2 client connections in front of the exchange: one `Exchange` per stream.

A listener's `ClientProtocol` (client.py) hands its connection over (`start_http2`) when
TLS's ALPN chose `h2`, or when a cleartext connection opens with the HTTP/2 preface
(h2c by prior knowledge). From then on:

- `ProxyHttp2Session` is the connection: http2.py's `Http2Session` (framing, HPACK,
  flow control, the limits against the known attacks) plus what the runtime needs of a
  client connection (its connection set, drain, the sweeper's deadline);
- `StreamClient` is one stream as the exchange sees its client: a `ClientSide`, as
  `ClientProtocol` is. The request's fields (already HTTP/1.1 field lines, h2convert.py)
  go through the same classification and the same `special_request` as an HTTP/1.1
  request's, so routing, X-Forwarded-*, X-Request-ID, tracing, the balancer, retries,
  queueing, health and the access log are the ones HTTP/1.1 has. The response comes
  back through `send_head`/`writelines`/`send_end`/`send_error`, which become HEADERS
  and DATA frames instead of HTTP/1.1 bytes.

Back-pressure both ways: request body bytes are acknowledged to the client (its window
reopened) only once the exchange passed them to a backend, and the backend connection is
the stream's `Producer`, paused while the client's windows and the stream's send buffer
are full.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from haproxyd.proxy.clientside import ClientSide
from haproxyd.proxy.errors import error_body
from haproxyd.proxy.exchange import Exchange
from haproxyd.proxy.flow import T_RESPONSE
from haproxyd.proxy.h2convert import Fields, H2Request
from haproxyd.proxy.h2limits import PREFACE_LEN
from haproxyd.proxy.headers import (
    CONNECTION,
    CONTENT_LENGTH,
    CRLF,
    DROP,
    HOST,
    KEEP,
    SEP,
    TRACEPARENT,
    TRANSFER_ENCODING,
    BadRequest,
    connection_named,
    request_kind,
    request_kind_cached,
    split_codings,
    trailer_allowed,
)
from haproxyd.proxy.http2 import H2Stream, Http2Session
from haproxyd.proxy.request import request_basics, special_request

if TYPE_CHECKING:
    from haproxyd.proxy.client import ClientProtocol
    from haproxyd.proxy.runtime import ProxyRuntime
    from haproxyd.proxy.upstream import UpstreamConnection

log = logging.getLogger("haproxyd.proxy.http2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
assert len(PREFACE) == PREFACE_LEN

_NEVER = float("inf")
_CHUNKED = (TRANSFER_ENCODING, b"transfer-encoding", b"chunked")


def alpn_chose_h2(transport: asyncio.BaseTransport) -> bool:
    """Whether the TLS handshake of `transport` chose HTTP/2."""
    ssl_object = transport.get_extra_info("ssl_object")
    return ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"


def take_h2c_preface(client: ClientProtocol, data: bytes) -> bytes:
    """The first bytes of a cleartext connection whose listener speaks h2c: the HTTP/2
    preface hands the connection to an HTTP/2 session; a prefix of it is held (in
    `client._preface`) until the next bytes tell it from an HTTP/1.1 request. Returns
    what `client` is to read as HTTP/1.1 (empty: nothing, now)."""
    if client._preface:
        data = client._preface + data
        client._preface = b""
    size = min(len(data), PREFACE_LEN)
    if data[:size] != PREFACE[:size]:
        return data
    if size < PREFACE_LEN:
        client._preface = data
    else:
        start_http2(client, data)
    return b""


def start_http2(client: ClientProtocol, data: bytes) -> None:
    """Hand `client`'s connection to a new HTTP/2 session (`data`: what was received so
    far, the preface first; empty after an ALPN handshake). The HTTP/1.1 protocol
    object is done with: it read no request."""
    runtime = client.runtime
    transport = client.transport
    client.closed = True
    runtime.connections.discard(client)
    session = ProxyHttp2Session(runtime, client.peer_ip, client.peer_ip_bytes, client.proto)
    runtime.connections.add(session)
    transport.set_protocol(session)
    session.connection_made(transport)
    if data:
        session.data_received(data)


def _response_fields(
    parts: list[bytes], specials: list[tuple[int, bytes]], extra: Fields
) -> tuple[Fields, bool]:
    """The response head's fields for HTTP/2, and whether its body ends only when the
    backend closes (no Content-Length, not chunked). `parts` are the HTTP/1.1 lines the
    upstream read: `Name: value` and CRLF each, from index 1 (one joined block when the
    scanner read the head); `extra` the fields naming the request (`StreamClient._ids`)."""
    fields: Fields = []
    for line in b"".join(parts[1:]).split(CRLF):
        if line:
            name, _, value = line.partition(SEP)
            fields.append((name, value))
    length = None
    codings: list[bytes] = []
    connection: list[bytes] = []
    for kind, value in specials:
        if kind == CONTENT_LENGTH:
            length = value
        elif kind == TRANSFER_ENCODING:
            codings.append(value)
        elif kind == CONNECTION:
            connection.append(value)
    if connection:
        named = connection_named(connection)
        if named:
            fields = [f for f in fields if f[0].lower() not in named]
    if length is not None:
        fields.append((b"content-length", length))
    fields += extra
    # (HTTP/2 has no transfer codings: llhttp already took the chunking off.)
    chunked = bool(codings) and split_codings(codings)[0]
    return fields, length is None and not chunked


class StreamClient(ClientSide):
    """One HTTP/2 stream as its exchange's client (and the stream's sink and producer
    for the session): see the module docstring."""

    __slots__ = (
        "_done",
        "_head",
        "_paused",
        "_unacked",
        "deadline",
        "exchange",
        "session",
        "timeout_kind",
        "writer",
    )

    def __init__(self, session: ProxyHttp2Session, writer: H2Stream) -> None:
        self.runtime = session.runtime
        self.clock = session.clock
        self.closed = False
        self.peer_ip = session.peer_ip
        self.session = session
        self.writer = writer
        self.exchange: Exchange | None = None
        self.deadline = _NEVER
        self.timeout_kind = T_RESPONSE
        self._paused = 0  # flow.PAUSE_* reasons to hold the request body's acks
        self._unacked = 0  # body bytes passed on while paused: acknowledged on resume
        self._done = False  # the exchange ended (reported)
        # The response head, held until its first body bytes or its end: a response
        # without a body (a gRPC trailers-only answer, a 204, a HEAD's) is then one
        # HEADERS frame carrying END_STREAM, as its backend sent it.
        self._head: tuple[int, Fields] | None = None

    def start(self, request: H2Request) -> None:
        """Read `request` into an exchange, as client.py reads an HTTP/1.1 head, and
        dispatch it; a request the proxy refuses is answered on its stream."""
        runtime = self.runtime
        exchange = self.exchange = Exchange(self)
        exchange.http2 = True
        method = request.method
        exchange.url = request.path
        parts = exchange.parts
        specials = exchange.specials
        size = len(request.path)
        for name, value in request.headers:
            size += len(name) + len(value) + 4
            kind = request_kind_cached(name)
            if kind is None:
                kind = request_kind(name)
            if kind == KEEP:
                parts += (name, SEP, value, CRLF)
            elif kind != DROP:
                specials.append((kind, name, value))
                if kind == HOST or kind == TRACEPARENT:  # noqa: SIM109 (as client.py)
                    parts += (name, SEP, value, CRLF)
        if not request.end_stream and request.content_length is None:
            # A body of unknown length: chunked to an HTTP/1.1 backend.
            specials.append(_CHUNKED)
        self.writer.set_producer(self)
        try:
            if size > runtime.max_header_bytes:
                raise BadRequest(431, "request header fields too large")
            request_basics(exchange, runtime, method, True)
            special_request(
                exchange,
                runtime,
                method,
                exchange.url,
                False,
                self.session.peer_ip_bytes,
                self.session.proto,
            )
        except BadRequest as exc:
            self._refuse(exc.status, exc.reason)
            return
        exchange.ready = True
        if request.end_stream:
            exchange.request_complete = True
        exchange.dispatch()

    def _refuse(self, status: int, reason: str) -> None:
        """A request the proxy will not forward (the HTTP/1.1 side's `refusal.reject`): nothing
        of it reaches a backend, and it is answered with `status` on its stream."""
        if log.isEnabledFor(logging.INFO):
            log.info("rejected http2 request from %s: %d %s", self.peer_ip, status, reason)
        exchange = self.exchange
        self._done = True
        self.deadline = _NEVER
        if exchange is not None:
            exchange.cut_backend()
            exchange._finish_backend(ok=False)
            if exchange.response_started:
                self.abort()
                return
        if exchange is not None and exchange.request_id:
            ids = self._ids(exchange)
        else:
            ids = [(b"x-request-id", self.runtime.request_ids.next())]
        self._send_plain(status, ids, reason)
        self.runtime.count_rejected(status)

    # -- the stream's sink (called by the session) --

    def on_data(self, data: bytes) -> None:
        size = len(data)
        exchange = self.exchange
        if self._done or exchange is None:
            self.writer.ack(size)  # the exchange ended: read and dropped
            return
        exchange.body_bytes += size
        max_body = self.runtime.max_body_bytes
        if max_body and exchange.body_bytes > max_body:
            self.writer.ack(size)
            self._refuse(413, "request body too large")
            return
        exchange.on_request_body(data)
        if self._paused:
            self._unacked += size
        else:
            self.writer.ack(size)

    def on_end(self, trailers: Fields | None) -> None:
        exchange = self.exchange
        if self._done or exchange is None or exchange.request_complete:
            return
        exchange.trailers = trailers
        exchange.on_request_complete()

    def on_reset(self, code: int) -> None:
        """The client reset the stream, or the connection went: the backend attempt is
        cut (`termination: client_aborted` or `client_closed`, as for HTTP/1.1)."""
        self.closed = True
        self.deadline = _NEVER
        exchange = self.exchange
        if exchange is not None and not self._done:
            self._done = True
            if exchange.on_client_lost():
                if not exchange.ended:
                    exchange.ended = self.clock()
                self._report(exchange)

    def on_timeout(self) -> None:
        """The stream's deadline passed (the session's `on_timeout` calls this)."""
        self.deadline = _NEVER
        exchange = self.exchange
        if exchange is not None and not self._done and exchange.on_deadline(self.timeout_kind):
            return
        self.abort()

    # -- the stream's producer (the session pauses it while the client cannot take more) --

    def pause_producing(self) -> None:
        if self.exchange is not None and not self._done:
            self.exchange.pause_response()

    def resume_producing(self) -> None:
        if self.exchange is not None and not self._done:
            self.exchange.resume_response()

    # -- ClientSide: the response as frames --

    def send_head(
        self,
        exchange: Exchange,
        status: int,
        parts: list[bytes],
        specials: list[tuple[int, bytes]],
    ) -> None:
        fields, read_to_close = _response_fields(parts, specials, self._ids(exchange))
        exchange.read_to_close = read_to_close and not (
            exchange.is_head or status == 204 or status == 304
        )
        # An empty first piece: the exchange's `on_read_end` then calls `writelines`,
        # which sends the held head, at the end of the backend read that brought it
        # (as the HTTP/1.1 side writes its head), body or not.
        exchange.out = [b""]
        self._head = (status, fields)

    def _send_held_head(self, end_stream: bool = False) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self.writer.send_head(head[0], head[1], end_stream)

    def send_end(self, exchange: Exchange, trailers: list[tuple[bytes, bytes]] | None) -> None:
        out = exchange.out
        exchange.out = []
        if trailers:
            trailers = [(n.lower(), v) for n, v in trailers if trailer_allowed(n)]
        data = (out[0] if len(out) == 1 else b"".join(out)) if out else b""
        if not data and not trailers and self._head is not None:
            self._send_held_head(end_stream=True)
            return
        self._send_held_head()
        self.writer.send_end(trailers or None, data)

    def send_error(self, exchange: Exchange, status: int, reason: str) -> None:
        self._send_plain(status, self._ids(exchange), reason)

    def _ids(self, exchange: Exchange) -> Fields:
        """The response fields naming the request: its id, and its trace id when the
        runtime echoes it (as the HTTP/1.1 side's X-Request-ID and X-Trace-ID)."""
        ids = [(b"x-request-id", exchange.request_id)]
        if self.runtime.echo_trace_id and exchange.trace is not None:
            ids.append((b"x-trace-id", exchange.trace[0]))
        return ids

    def _send_plain(self, status: int, ids: Fields, reason: str) -> None:
        """The proxy's own answer (the HTTP/1.1 side's errors.error_response)."""
        body = error_body(status, reason)[1]
        writer = self.writer
        writer.send_head(
            status,
            [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
                (b"cache-control", b"no-store"),
                *ids,
            ],
        )
        writer.send_body(body)
        writer.send_end()

    def send_continue(self) -> None:
        self.writer.send_head(100, [])

    def write(self, data: bytes) -> None:
        if data and not self.closed:
            self._send_held_head()
            self.writer.send_body(data)

    def writelines(self, data: list[bytes]) -> None:
        if not self.closed:
            self._send_held_head()
            self.writer.send_body(data[0] if len(data) == 1 else b"".join(data))

    # -- ClientSide: flow control, deadlines, endings --

    def pause_reading_for(self, reason: int) -> None:
        self._paused |= reason

    def resume_reading_for(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self._unacked:
                size, self._unacked = self._unacked, 0
                self.writer.ack(size)

    def touch(self) -> None:
        if self.timeout_kind == T_RESPONSE and self.deadline != _NEVER:
            self.deadline = self.clock() + self.runtime.response_timeout

    def set_deadline(self, kind: int) -> None:
        runtime = self.runtime
        seconds = runtime.response_timeout if kind == T_RESPONSE else runtime.idle_timeout
        self.set_deadline_at(kind, self.clock() + seconds)

    def set_deadline_at(self, kind: int, deadline: float) -> None:
        self.timeout_kind = kind
        self.deadline = deadline
        session = self.session
        if deadline < session.deadline:
            session.deadline = deadline

    def _report(self, exchange: Exchange) -> None:
        for callback in self.runtime.exchange_listeners:
            callback(exchange)

    def exchange_done(self, exchange: Exchange) -> None:
        if not exchange.ended:
            exchange.ended = self.clock()
        self._done = True
        self.deadline = _NEVER
        self._report(exchange)
        if self._unacked:  # (held while a backend was being attached)
            size, self._unacked = self._unacked, 0
            self.writer.ack(size)

    def start_tunnel(self, conn: UpstreamConnection, exchange: Exchange, rest: bytes) -> None:
        # Never asked for: an HTTP/2 request carries no Upgrade (RFC 9113 §8.2.2), and
        # extended CONNECT (RFC 8441, WebSockets over HTTP/2) is not offered.
        conn.close()
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.reset(ErrorCodes.INTERNAL_ERROR)


class ProxyHttp2Session(Http2Session):
    """A client connection speaking HTTP/2, as the runtime holds it: in its connection
    set (limits, drain, the sweeper), with each stream's exchange deadline folded into
    the connection's one deadline."""

    def __init__(
        self, runtime: ProxyRuntime, peer_ip: str, peer_ip_bytes: bytes, proto: bytes
    ) -> None:
        super().__init__(self, runtime.http2_limits, clock=runtime.loop.time)
        self.runtime = runtime
        self.peer_ip = peer_ip
        self.peer_ip_bytes = peer_ip_bytes
        self.proto = proto

    # StreamHandler
    def open_stream(self, request: H2Request, writer: H2Stream) -> StreamClient:
        client = StreamClient(self, writer)
        client.start(request)
        if self.runtime.draining:
            # Stopping: this stream is served, the client takes the next elsewhere (as
            # the HTTP/1.1 side answers with `Connection: close`).
            self.shutdown()
        return client

    def connection_lost(self, exc: Exception | None) -> None:
        self.runtime.connections.discard(self)
        super().connection_lost(exc)

    def close(self) -> None:
        if not self.going_away and not self.closed:
            self.goaway(ErrorCodes.NO_ERROR, graceful=True)  # closes once no stream is left
            return
        self.runtime.connections.discard(self)
        super().close()

    def abort(self) -> None:
        self.closed = True
        self.runtime.connections.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def _update_deadline(self) -> None:
        super()._update_deadline()
        deadline = self.deadline
        for stream in self.streams.values():
            sink = stream.sink  # (a StreamClient: open_stream made it)
            if sink is not None and sink.deadline < deadline:
                deadline = sink.deadline
        self.deadline = deadline

    def on_timeout(self) -> None:
        if not self.closed:
            now = self.clock()
            for stream in list(self.streams.values()):
                sink = stream.sink
                if sink is not None and sink.deadline <= now:
                    sink.on_timeout()
        super().on_timeout()
