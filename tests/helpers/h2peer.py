"""HTTP/2 test peers: an asyncio server running `Http2Session` with a test handler, and
a raw-frame client over a real loopback socket (frames built with hyperframe/hpack, so
that malformed and hostile sequences can be sent as bytes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from haproxyd.proxy.h2convert import Fields, H2Request
from haproxyd.proxy.h2limits import Http2Limits
from haproxyd.proxy.http2 import H2Stream, Http2Session

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a.test")]


class EchoSink:
    """Echoes the request body; acks what it received at once unless `hold_acks`."""

    def __init__(self, handler: EchoHandler, request: H2Request, writer: H2Stream) -> None:
        self.handler = handler
        self.request = request
        self.writer = writer
        self.body = bytearray()
        self.trailers: Fields | None = None
        self.ended = False
        self.reset_code: int | None = None
        self.pauses = 0
        self.resumes = 0
        self._resumed = asyncio.Event()
        writer.set_producer(self)

    def on_data(self, data: bytes) -> None:
        self.body += data
        if not self.handler.hold_acks:
            self.writer.ack(len(data))

    def on_end(self, trailers: Fields | None) -> None:
        self.ended = True
        self.trailers = trailers
        path = self.request.path
        if path == b"/hold":
            return
        head = [(b"content-type", b"text/plain"), (b"Connection", b"x-gone"), (b"X-Gone", b"1")]
        if path.startswith((b"/big/", b"/one/")):  # in 16 KiB pieces, or in one
            self.writer.send_head(200, head)
            size = int(path[5:])
            piece = size if path.startswith(b"/one/") else 16384
            asyncio.get_running_loop().create_task(self._big(size, piece))
            return
        self.writer.send_head(200, head)
        if path == b"/stall":
            self.writer.send_body(b"x" * 1000)
            return
        self.writer.send_body(bytes(self.body) or b"ok:" + path)
        self.writer.send_end([(b"x-trailer", b"yes")] if path == b"/trailers" else None)

    async def _big(self, size: int, piece: int) -> None:
        chunk = (bytes(range(256)) * (piece // 256 + 1))[:piece]
        sent = 0
        while sent < size:
            part = chunk[: size - sent]
            sent += len(part)
            if not self.writer.send_body(part):
                self._resumed.clear()
                await self._resumed.wait()
        self.writer.send_end()

    def on_reset(self, code: int) -> None:
        self.reset_code = code
        self.handler.resets.append((self.request.path, code))

    def pause_producing(self) -> None:
        self.pauses += 1

    def resume_producing(self) -> None:
        self.resumes += 1
        self._resumed.set()


class EchoHandler:
    def __init__(self, *, hold_acks: bool = False) -> None:
        self.hold_acks = hold_acks
        self.sinks: list[EchoSink] = []
        self.resets: list[tuple[bytes, int]] = []

    def open_stream(self, request: H2Request, writer: H2Stream) -> EchoSink:
        sink = EchoSink(self, request, writer)
        self.sinks.append(sink)
        return sink


class H2Server:
    """`Http2Session`s on 127.0.0.1, port 0, in the test's own loop."""

    def __init__(self, handler: EchoHandler, limits: Http2Limits, clock: Callable[[], float]):
        self.handler = handler
        self.limits = limits
        self.clock = clock
        self.sessions: list[Http2Session] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    def _session(self) -> Http2Session:
        session = Http2Session(self.handler, self.limits, clock=self.clock)
        self.sessions.append(session)
        return session

    async def start(self) -> H2Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def sweep(self) -> None:
        """What the runtime's sweeper does each tick."""
        now = self.clock()
        for session in self.sessions:
            if session.deadline <= now:
                session.on_timeout()

    async def close(self) -> None:
        assert self.server is not None
        for session in self.sessions:
            session.close()
        self.server.close()
        await self.server.wait_closed()


class RawClient:
    """A client that writes frames as bytes and reads the server's frames one by one."""

    def __init__(self) -> None:
        self.encoder = Encoder()
        self.reader: asyncio.StreamReader = None  # type: ignore[assignment]
        self.writer: asyncio.StreamWriter = None  # type: ignore[assignment]
        self.frames: list[Frame] = []

    async def connect(self, port: int, settings: dict[int, int] | None = None) -> RawClient:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        frame = SettingsFrame(0)
        frame.settings = settings or {}
        self.send(PREFACE + frame.serialize())
        return self

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def block(self, fields: list[tuple[bytes, bytes]]) -> bytes:
        return self.encoder.encode(fields)

    def headers(self, stream_id: int, fields: Any, *, end_stream: bool = True) -> bytes:
        data = fields if isinstance(fields, bytes) else self.block(fields)
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        return HeadersFrame(stream_id, data=data, flags=flags).serialize()

    @staticmethod
    def data(stream_id: int, payload: bytes, *, end_stream: bool = False) -> bytes:
        flags = ["END_STREAM"] if end_stream else []
        return DataFrame(stream_id, data=payload, flags=flags).serialize()

    @staticmethod
    def rst(stream_id: int, code: int = 8) -> bytes:
        return RstStreamFrame(stream_id, error_code=code).serialize()

    @staticmethod
    def ping(n: int) -> bytes:
        return PingFrame(0, opaque_data=n.to_bytes(8, "big")).serialize()

    @staticmethod
    def continuation(stream_id: int, payload: bytes, *, end: bool = False) -> bytes:
        flags = ["END_HEADERS"] if end else []
        return ContinuationFrame(stream_id, data=payload, flags=flags).serialize()

    @staticmethod
    def window_update(stream_id: int, increment: int) -> bytes:
        return WindowUpdateFrame(stream_id, window_increment=increment).serialize()

    async def read_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None at end of stream."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(9), timeout)
        except asyncio.IncompleteReadError:
            return None
        except ConnectionResetError:
            return None
        frame, length = Frame.parse_frame_header(memoryview(head))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        frame.parse_body(memoryview(body))
        self.frames.append(frame)
        return frame

    async def until(self, predicate: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """Read until a frame matches (poll with a deadline; fails at end of stream)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no matching frame within {timeout}s: {self.frames[-5:]}"
            frame = await self.read_frame(left)
            assert frame is not None, f"connection closed first: {self.frames[-5:]}"
            if predicate(frame):
                return frame

    async def goaway(self, timeout: float = 5.0) -> GoAwayFrame:
        frame = await self.until(lambda f: isinstance(f, GoAwayFrame), timeout)
        assert isinstance(frame, GoAwayFrame)
        return frame

    async def closed(self, timeout: float = 5.0) -> bool:
        """Read to end of stream; True when it came within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.read_frame(deadline - time.monotonic()) is None:
                return True
        return False

    def close(self) -> None:
        self.writer.close()
