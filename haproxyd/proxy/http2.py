"""The HTTP/2 server session: one `Http2Session` per client connection speaking h2.

Framing, HPACK and the stream states are the `h2` library's (python-hyper); this module
maps its events onto a narrow interface, so that the exchange that serves HTTP/1.1
requests can serve HTTP/2 streams too (one exchange per stream):

- the session calls `StreamHandler.open_stream(request, writer)` for each valid request
  (`H2Request`: fields already converted to HTTP/1.1, h2convert.py) and feeds the
  returned `StreamSink` with `on_data(bytes)`, `on_end(trailers)`, `on_reset(code)`;
- the handler answers through the `H2Stream` it was given (the *writer*):
  `send_head(status, headers)`, `send_body(data)`, `send_end(trailers)`, `reset(code)`,
  and hands received body bytes back with `ack(n)` once it has passed them on: only
  then does the client get WINDOW_UPDATE, so a slow backend slows the upload;
- `send_body` buffers what the client's window does not take yet, up to
  `Http2Limits.send_buffer`; past that it pauses the writer's `Producer` (the backend
  connection: `pause_producing`) and resumes it once the buffer drained below half.

Why an asyncio protocol and not a sans-IO core with a shell: `h2` already is the
sans-IO core (bytes in, events and bytes out). What is left here is I/O policy (when
to write, to pause a producer, to time a stall out), which is only testable against a
transport anyway; and a protocol with `deadline`/`on_timeout()`/`closed`/`idle()` is
what the runtime's connection set and sweeper already drive for HTTP/1.1
(client.py), so wiring adds no new machinery. The tests drive it over real loopback
sockets, with an injected clock.

The bounds and the attacks they answer: h2limits.py and docs/http2.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from haproxyd.proxy.h2convert import (
    Fields,
    H2Request,
    Malformed,
    fields_to_h2,
    request_from_h2,
    response_to_h2,
    trailers_from_h2,
)
from haproxyd.proxy.h2limits import FrameGuard, Http2Limits
from haproxyd.proxy.hpack_literal import LiteralEncoder

log = logging.getLogger("haproxyd.proxy.http2")

WRITE_NOW = 65536  # see Http2Session.write_soon
LINGER_SECONDS = 5.0  # as client.py's: draining what a refused client still sends


class StreamSink(Protocol):
    """What the handler gives back for a stream: the request's body and end."""

    def on_data(self, data: bytes) -> None:
        """Body bytes; the consumer calls `writer.ack(len(data))` once it passed them on."""

    def on_end(self, trailers: Fields | None) -> None:
        """The request is complete (validated trailers, or None)."""

    def on_reset(self, code: int) -> None:
        """The stream is gone: the client reset it (`code` is its error code), or the
        connection failed or closed (`ErrorCodes.CANCEL` or the GOAWAY's code). The
        writer can no longer be used."""


class Producer(Protocol):
    """The source of a stream's response body (the backend connection)."""

    def pause_producing(self) -> None: ...

    def resume_producing(self) -> None: ...


class StreamHandler(Protocol):
    """The exchange factory: one call per valid request."""

    def open_stream(self, request: H2Request, writer: H2Stream) -> StreamSink: ...


class H2Stream:
    """One stream's state and its response writer. The writer methods are called by the
    handler, on the event loop; after the stream ended or was reset they do nothing."""

    __slots__ = (
        "closed",
        "end_pending",
        "local_ended",
        "paused",
        "pending",
        "pending_bytes",
        "producer",
        "remote_ended",
        "session",
        "sink",
        "stall_since",
        "stream_id",
        "trailers",
    )

    def __init__(self, session: Http2Session, stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self.sink: StreamSink | None = None
        self.producer: Producer | None = None
        # Response bytes the windows did not take yet (bytes, or views of a cut one).
        self.pending: deque[bytes | memoryview] = deque()
        self.pending_bytes = 0
        self.end_pending: Fields | bool | None = None  # send_end called: trailers or True
        self.trailers: Fields | None = None  # the request's, until its end
        self.paused = False  # the producer is paused
        self.local_ended = False  # END_STREAM sent
        self.remote_ended = False
        self.closed = False
        self.stall_since = 0.0  # when buffered output last made progress (0: none buffered)

    def set_producer(self, producer: Producer | None) -> None:
        self.producer = producer

    def send_head(self, status: int, headers: Fields, end_stream: bool = False) -> None:
        """The response head (or a 1xx); `end_stream` for a response without a body."""
        if self.closed or self.local_ended:
            return
        session = self.session
        try:
            session.conn.send_headers(self.stream_id, response_to_h2(status, headers), end_stream)
        except StreamClosedError:
            return  # reset by the client in the read being processed: its event follows
        if end_stream:
            self.local_ended = True
            session.stream_done(self)
        session.write_soon()

    def send_body(self, data: bytes) -> bool:
        """Queue body bytes; False when the producer should stop (it was paused too,
        and `resume_producing` follows)."""
        if self.closed or self.local_ended or self.end_pending is not None:
            return False
        if data:
            self.pending.append(data)
            self.pending_bytes += len(data)
            self.session.flush(self)
        if self.pending_bytes > self.session.limits.send_buffer and not self.closed:
            if not self.paused:
                self.paused = True
                if self.producer is not None:
                    self.producer.pause_producing()
            return False
        return not self.closed

    def send_end(self, trailers: Fields | None = None, data: bytes = b"") -> None:
        """The response is complete, with optional trailers, sent once the buffered body
        has gone out; `data`: its last body bytes (they and the end share a frame)."""
        if self.closed or self.local_ended or self.end_pending is not None:
            return
        if data:
            self.pending.append(data)
            self.pending_bytes += len(data)
        self.end_pending = trailers if trailers else True
        self.session.flush(self)

    def reset(self, code: int = ErrorCodes.CANCEL) -> None:
        """Abandon the stream (RST_STREAM with `code`); the sink is not called."""
        if not self.closed:
            self.session.reset_stream(self, code, notify=False)

    def ack(self, size: int) -> None:
        """The consumer passed on `size` bytes of the request body: give the client that
        much window back."""
        if size and not self.closed:
            self.session.ack(self.stream_id, size)


def _settings(limits: Http2Limits, streams: int) -> Settings:
    """Our settings, in force at once (h2 sends them in the connection preface)."""
    return Settings(
        client=False,
        initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: streams,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window,
            SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
        },
    )


class Http2Session:
    """One client connection speaking HTTP/2 (an asyncio protocol by its methods).

    `deadline` and `on_timeout()` are for the runtime's sweeper (as ClientProtocol's):
    the sweeper calls `on_timeout()` once `clock()` passes `deadline`."""

    def __init__(
        self,
        handler: StreamHandler,
        limits: Http2Limits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.limits = limits = limits or Http2Limits()
        self.clock = clock
        self.conn = H2Connection(
            config=H2Configuration(
                client_side=False,
                header_encoding=None,
                # h2convert validates, as stream errors (see its docstring).
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
                validate_outbound_headers=True,
                normalize_outbound_headers=False,
            )
        )
        self.conn.encoder = LiteralEncoder()  # static table only (hpack_literal.py)
        self.guard = FrameGuard(limits, clock)
        self.streams: dict[int, H2Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False  # no more protocol work (lingering, or gone)
        self.lingering = False
        self.going_away = False  # GOAWAY sent: no new stream
        self.write_paused = False
        self._write_queued = False  # write_soon's call is pending
        self._unwritten = 0  # body bytes framed by h2 since the last write
        self.loop: asyncio.AbstractEventLoop | None = None  # set by connection_made
        self.requests = 0  # streams opened in all
        self.last_stream_id = 0  # highest stream handed to the handler
        self.last_active = clock()
        self.deadline = self.last_active + limits.idle_timeout

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        limits = self.limits
        conn = self.conn
        conn.local_settings = _settings(limits, limits.max_concurrent_streams)
        conn.initiate_connection()
        # The SETTINGS frame above advertises the limit; `h2` would enforce the same value
        # as a *connection* error (PROTOCOL_ERROR), where a client that has not yet seen
        # our SETTINGS deserves REFUSED_STREAM on the one stream (`_request` does that).
        # So h2 keeps a backstop at twice the limit.
        conn.local_settings = _settings(limits, 2 * limits.max_concurrent_streams)
        # The HPACK decoder takes the list bound from the *acknowledged* settings only;
        # until the client's ACK it would allow h2's default (64 KiB).
        conn.decoder.max_header_list_size = limits.max_header_list_size
        # Per-stream windows bound what each stream buffers; the connection window is
        # opened to cover all of them, so one slow consumer does not stall the others.
        extra = limits.initial_window * limits.max_concurrent_streams - 65535
        if extra > 0:
            conn.increment_flow_control_window(min(extra, 2**31 - 1 - 65535))
        self.write()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_active = self.clock()
        fit = self.guard.check(data)
        if fit:
            try:
                events = self.conn.receive_data(data if fit == len(data) else data[:fit])
            except ProtocolError as exc:
                # h2 has queued GOAWAY with the error's code.
                log.info("http2 connection error: %s", exc)
                self._fail(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR))
                return
            for event in events:
                if self.closed:
                    return
                self._dispatch(event)
        violation = self.guard.violation
        if violation is not None:
            log.info("http2 client refused: %s", violation[1])
            self.goaway(violation[0], violation[1])
            return
        self.write()
        self._update_deadline()

    def eof_received(self) -> bool | None:
        return None  # the transport closes (a lingering one too); connection_lost resets

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._reset_all(ErrorCodes.CANCEL)

    def pause_writing(self) -> None:
        # The client does not read: stop moving buffered bodies into the transport;
        # they pile up in the streams, whose producers then pause (send_buffer).
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flush_all()

    # -- events --

    def _dispatch(self, event: object) -> None:
        if isinstance(event, DataReceived):
            self._data(event)
        elif isinstance(event, RequestReceived):
            self._request(event)
        elif isinstance(event, StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.closed:
                stream.remote_ended = True
                trailers, stream.trailers = stream.trailers, None
                if stream.sink is not None:
                    stream.sink.on_end(trailers)
                self.stream_done(stream)
        elif isinstance(event, TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                try:
                    stream.trailers = trailers_from_h2(event.headers)
                except Malformed as exc:
                    self._malformed(stream, str(exc))
        elif isinstance(event, WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None and stream.pending:
                    self.flush(stream)
            else:
                self._flush_all()
        elif isinstance(event, RemoteSettingsChanged):
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._flush_all()
        elif isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.closed:
                stream.closed = True
                self._forget(stream)
                if stream.sink is not None:
                    stream.sink.on_reset(event.error_code)
        elif isinstance(event, ConnectionTerminated):
            self._fail(event.error_code)

    def _request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        limits = self.limits
        if self.going_away or len(self.streams) >= limits.max_concurrent_streams:
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        stream = H2Stream(self, stream_id)
        try:
            request = request_from_h2(event.headers, event.stream_ended is not None)
        except Malformed as exc:
            self._malformed(stream, str(exc))
            return
        self.streams[stream_id] = stream
        self.requests += 1
        self.last_stream_id = stream_id
        if limits.max_requests and self.requests >= limits.max_requests:
            # nginx's keepalive_requests: this stream is served, then the client opens
            # a new connection (which also caps what a rapid-reset client gets).
            self.goaway(ErrorCodes.NO_ERROR, "max_requests", graceful=True)
        stream.sink = self.handler.open_stream(request, stream)

    def _data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        size = event.flow_controlled_length
        data = event.data
        if stream is None or stream.closed or stream.sink is None:
            self.conn.acknowledge_received_data(size, event.stream_id)
            return
        if size > len(data):  # padding: nobody consumes it
            self.conn.acknowledge_received_data(size - len(data), event.stream_id)
        if data:
            stream.sink.on_data(data)

    def _malformed(self, stream: H2Stream, reason: str) -> None:
        log.info("http2 stream %d malformed: %s", stream.stream_id, reason)
        self.reset_stream(stream, ErrorCodes.PROTOCOL_ERROR, notify=True)
        if self.guard.count_reset():
            violation = self.guard.violation
            assert violation is not None
            self.goaway(violation[0], violation[1])

    # -- called by H2Stream --

    def ack(self, stream_id: int, size: int) -> None:
        self.conn.acknowledge_received_data(size, stream_id)
        self.write_soon()

    def flush(self, stream: H2Stream) -> None:
        """Move `stream`'s buffered body into frames as far as the windows allow, then
        its end once the buffer is empty."""
        self._flush_one(stream)
        self.write_soon()

    def _flush_one(self, stream: H2Stream) -> None:
        if stream.closed or self.write_paused:
            if stream.pending and not stream.stall_since:
                stream.stall_since = self.clock()
                self._stall_deadline(stream.stall_since)
            return
        conn = self.conn
        stream_id = stream.stream_id
        pending = stream.pending
        sent = 0
        try:
            while pending:
                window = min(
                    conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
                )
                if window <= 0:
                    break
                chunk = pending[0]
                if len(chunk) <= window:
                    pending.popleft()
                    if not pending and stream.end_pending is True:
                        # The last bytes and the end in one DATA frame.
                        conn.send_data(stream_id, chunk, end_stream=True)
                        sent += len(chunk)
                        stream.end_pending = None
                        stream.local_ended = True
                        break
                else:
                    # A view, so that a large body is cut into frames without copying
                    # the rest of it once per frame.
                    view = memoryview(chunk)
                    pending[0] = view[window:]
                    chunk = view[:window]
                conn.send_data(stream_id, chunk)
                sent += len(chunk)
        except StreamClosedError:
            # h2 closed the stream in the read being processed (the client reset it, a
            # frame before the RST_STREAM made us flush): nothing more goes out on it,
            # and its StreamReset event follows.
            pending.clear()
            stream.pending_bytes = 0
            stream.end_pending = None
            return
        stream.pending_bytes -= sent
        self._unwritten += sent
        if stream.local_ended:
            stream.stall_since = 0.0
            self.stream_done(stream)
        elif pending:
            if sent or not stream.stall_since:
                stream.stall_since = self.clock()
                self._stall_deadline(stream.stall_since)
        else:
            stream.stall_since = 0.0
            end = stream.end_pending
            if end is not None:
                try:
                    if end is True:
                        conn.send_data(stream_id, b"", end_stream=True)
                    else:
                        conn.send_headers(stream_id, fields_to_h2(end, []), end_stream=True)
                except StreamClosedError:
                    stream.end_pending = None  # (as above)
                    return
                stream.local_ended = True
                self.stream_done(stream)
        if stream.paused and stream.pending_bytes <= self.limits.send_buffer // 2:
            stream.paused = False
            if stream.producer is not None and not stream.closed:
                stream.producer.resume_producing()

    def _flush_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.pending or stream.end_pending is not None:
                self._flush_one(stream)
        self.write()

    def stream_done(self, stream: H2Stream) -> None:
        """Forget a stream once both sides ended it."""
        if stream.local_ended and stream.remote_ended and not stream.closed:
            stream.closed = True
            self._forget(stream)

    def _forget(self, stream: H2Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        if not self.streams:
            if self.going_away:
                self.close()
            self.last_active = now = self.clock()
            self.deadline = now + self.limits.idle_timeout

    def reset_stream(self, stream: H2Stream, code: int, *, notify: bool) -> None:
        stream.closed = True
        with contextlib.suppress(ProtocolError):  # already closed on h2's side
            self.conn.reset_stream(stream.stream_id, code)
        if notify and stream.sink is not None:
            stream.sink.on_reset(code)
        self.write()
        self._forget(stream)

    # -- connection --

    def write(self) -> None:
        """Write what h2 has queued, now."""
        self._write_queued = False
        self._unwritten = 0
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def write_soon(self) -> None:
        """Write what h2 has queued on the loop's next turn: the frames of
        every stream answered meanwhile (a head, its body, its end; other streams'
        frames; window updates) leave in one write instead of one each. Past
        WRITE_NOW body bytes framed since the last write, now: the transport's own
        buffer (and its pause_writing) must see a fast producer's bytes."""
        if self._unwritten >= WRITE_NOW:
            self.write()
        elif not self._write_queued:
            self._write_queued = True
            self.loop.call_soon(self._write_queued_frames)

    def _write_queued_frames(self) -> None:
        if self._write_queued:
            self.write()

    def goaway(self, code: int, reason: str = "", *, graceful: bool = False) -> None:
        """Send GOAWAY. Graceful (NO_ERROR): the streams open go on, the connection
        closes when the last ends. Otherwise every stream is reset and the connection
        lingers, then closes."""
        if self.going_away and graceful:
            return
        self.going_away = True
        if graceful:
            # Written by hand: h2's close_connection() moves its state machine to
            # CLOSED, after which it refuses to send on the streams still open.
            frame = GoAwayFrame(0)
            frame.last_stream_id = self.last_stream_id
            frame.error_code = code
            self.write()
            if self.transport is not None and not self.closed:
                self.transport.write(frame.serialize())
            if not self.streams:
                self.close()
            return
        self.conn.close_connection(
            error_code=code,
            additional_data=reason.encode()[:64] if reason else None,
            last_stream_id=self.last_stream_id,
        )
        self._fail(code)

    def _fail(self, code: int) -> None:
        """A connection error: write what h2 queued (its GOAWAY), reset every stream,
        then linger: half-close and read (discarding) what the client still sends, so
        that it reads the GOAWAY instead of a TCP reset, as the HTTP/1.1 side does
        after an error answer (client.py, LINGER_SECONDS)."""
        self.write()
        self._reset_all(code)
        self.closed = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering = True
        self.deadline = self.clock() + LINGER_SECONDS

    def _reset_all(self, code: int) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            if not stream.closed:
                stream.closed = True
                if stream.sink is not None:
                    stream.sink.on_reset(code)

    def close(self) -> None:
        """Close after what h2 queued (transport.close flushes its buffer)."""
        if self.transport is not None and not self.transport.is_closing():
            self.write()
            self.transport.close()
        self.closed = True

    def shutdown(self) -> None:
        """Graceful stop (drain, reload): no new stream, the open ones finish."""
        self.goaway(ErrorCodes.NO_ERROR, graceful=True)

    def idle(self) -> bool:
        return not self.streams

    # -- timers --

    def _stall_deadline(self, since: float) -> None:
        deadline = since + self.limits.stall_timeout
        if deadline < self.deadline:
            self.deadline = deadline

    def _update_deadline(self) -> None:
        limits = self.limits
        deadline = self.last_active + limits.idle_timeout if not self.streams else float("inf")
        for stream in self.streams.values():
            since = stream.stall_since
            if since and since + limits.stall_timeout < deadline:
                deadline = since + limits.stall_timeout
        self.deadline = deadline

    def on_timeout(self) -> None:
        """The sweeper found the deadline passed: reset stalled streams, or close an
        idle connection; otherwise just move the deadline."""
        if self.lingering:
            self.lingering = False
            if self.transport is not None:
                self.transport.close()
            return
        if self.closed:
            return
        now = self.clock()
        limits = self.limits
        if not self.streams and now >= self.last_active + limits.idle_timeout:
            self.goaway(ErrorCodes.NO_ERROR, graceful=True)
            return
        for stream in list(self.streams.values()):
            since = stream.stall_since
            if since and now >= since + limits.stall_timeout:
                log.info("http2 stream %d stalled (zero window)", stream.stream_id)
                # The client may still be reading other streams: this one alone goes.
                self.reset_stream(stream, ErrorCodes.CANCEL, notify=True)
        if not self.closed:
            self._update_deadline()
