"""A blocking HTTP/2 client for the daemon tests, on the `h2` library: several streams
at once on one connection, request bodies and trailers, raw frames when a test needs
them, and every frame the server sent kept for the test to look at.

Deliberately not a client library's: the tests need to see frames (RST_STREAM codes,
GOAWAY, trailers as their own HEADERS) and to misbehave on purpose.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

Fields = list[tuple[bytes, bytes]]


@dataclass
class H2Response:
    stream_id: int
    status: int = 0
    headers: Fields = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: Fields | None = None
    ended: bool = False
    reset: int | None = None  # the server's RST_STREAM code

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class H2Client:
    """One HTTP/2 connection: `h2c` (prior knowledge) unless `tls_context` is given, in
    which case ALPN must choose `h2`."""

    def __init__(
        self,
        port: int,
        *,
        tls_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        validate: bool = True,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls_context is not None:
            tls_context.set_alpn_protocols(["h2", "http/1.1"])
            sock = tls_context.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.timeout = timeout
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=validate,
                normalize_outbound_headers=validate,
            )
        )
        self.conn.initiate_connection()
        self.responses: dict[int, H2Response] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.authority = f"{host}:{port}".encode()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --

    def send_request(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: Fields | None = None,
        body: bytes | None = None,
        end: bool = True,
        authority: bytes | None = None,
    ) -> int:
        """Open a stream; `end` False leaves the request open (send_data later)."""
        stream_id = self.conn.get_next_available_stream_id()
        fields: Fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority or self.authority),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.responses[stream_id] = H2Response(stream_id)
        self.conn.send_headers(stream_id, fields, end_stream=end and not body)
        self.flush()
        if body:
            self.send_data(stream_id, body, end=end)
        return stream_id

    def send_data(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Send `data` as the windows allow (reading the server's frames meanwhile)."""
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                assert time.monotonic() < deadline, "the server never reopened its window"
                self.read_once()
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(stream_id, bytes(chunk))
            self.flush()
        if end:
            self.conn.end_stream(stream_id)
            self.flush()

    def send_trailers(self, stream_id: int, trailers: Fields) -> None:
        self.conn.send_headers(stream_id, trailers, end_stream=True)
        self.flush()

    def reset(self, stream_id: int, code: int = 8) -> None:
        self.conn.reset_stream(stream_id, code)
        self.flush()

    def request(self, path: str, **kwargs: Any) -> H2Response:
        return self.wait(self.send_request(path, **kwargs))

    # -- reading --

    def read_once(self, timeout: float | None = None) -> bool:
        """Read what the server sent (one recv); False at end of stream."""
        self.sock.settimeout(timeout or self.timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._on_event(event)
        self.flush()
        return True

    def _on_event(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            response = self.responses[event.stream_id]
            for name, value in event.headers:
                if name == b":status":
                    response.status = int(value)
                else:
                    response.headers.append((name, value))
        elif isinstance(event, h2.events.InformationalResponseReceived):
            pass
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.responses[event.stream_id].trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id in self.responses:
                self.responses[event.stream_id].reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def wait(self, stream_id: int, timeout: float | None = None) -> H2Response:
        """Read until `stream_id` ended or was reset (deadline: the client's timeout)."""
        response = self.responses[stream_id]
        deadline = time.monotonic() + (timeout or self.timeout)
        while not (response.ended or response.reset is not None):
            left = deadline - time.monotonic()
            assert left > 0, f"stream {stream_id} did not end: {response}"
            if not self.read_once(left):
                break
        return response

    def wait_goaway(self, timeout: float | None = None) -> h2.events.ConnectionTerminated:
        deadline = time.monotonic() + (timeout or self.timeout)
        while self.goaway is None:
            left = deadline - time.monotonic()
            assert left > 0, "no GOAWAY"
            if not self.read_once(left):
                break
        assert self.goaway is not None, "closed without GOAWAY"
        return self.goaway
