"""`grpc` check: the standard gRPC health protocol (`grpc.health.v1.Health/Check`).

What Envoy's `grpc_health_check` and Kubernetes' gRPC probes call, and what
`grpc_health_probe` does: one unary call over HTTP/2, cleartext with prior knowledge
(h2c) or TLS with ALPN `h2`; the verdict is the `status` of the `HealthCheckResponse`
(SERVING passes) once the trailers say `grpc-status: 0`. The protobuf messages are two
fields, encoded here by hand, so the product needs no grpcio nor generated code; the
`h2` library does the framing and HPACK.

Each probe opens one connection and closes it (GOAWAY, then an RST like HAProxy's
checks, so the prober leaves no TIME_WAIT behind): a probe also proves the server
accepts connections, and a connection kept between probes would need its own keepalive
and reconnect rules for a once-per-interval request. The check's `timeout` goes to the
server as `grpc-timeout` (so it gives up too); the scheduler enforces it by cancelling
the probe. Cost: one connect (and TLS handshake), the preface and one round trip.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from haproxyd.health.base import Check, CheckResult, clip, close_writer, register, tls_context

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.sections.health import GrpcCheck as GrpcCheckConfig

HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
USER_AGENT = "haproxyd-health/1"
MAX_MESSAGE = 4096  # bytes of response a health answer may take (it needs a handful)

# grpc.health.v1.HealthCheckResponse.ServingStatus
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING = 1

# The gRPC status codes (grpc/doc/statuscodes.md), for reasons an operator can read.
GRPC_STATUS = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


class ProbeFailed(Exception):
    """The call could not be made or its answer was not gRPC over HTTP/2."""


# -- protobuf: the two messages of grpc.health.v1, by hand ----------------------------


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def encode_request(service: str) -> bytes:
    """`HealthCheckRequest{service = 1 (string)}`; proto3 leaves out an empty string."""
    if not service:
        return b""
    raw = service.encode()
    return b"\x0a" + encode_varint(len(raw)) + raw


def decode_response(data: bytes) -> int:
    """`HealthCheckResponse.status` (field 1, varint); 0 (UNKNOWN) when absent.

    Fields this check does not know are skipped by wire type, as any protobuf reader
    must (a newer server may add some); the last occurrence of field 1 wins.
    """
    status = 0
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            if number == 1:
                status = value
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated protobuf field")
    return status


def frame_message(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe_message(body: bytes) -> bytes:
    """The one message of a unary response body."""
    if len(body) < 5:
        raise ValueError(f"a body of {len(body)} bytes is no gRPC message")
    if body[0] != 0:
        raise ValueError("the message is compressed (none was offered)")
    size = int.from_bytes(body[1:5], "big")
    if len(body) < 5 + size:
        raise ValueError(f"the message is cut short ({len(body) - 5} of {size} bytes)")
    return body[5 : 5 + size]


def grpc_timeout(seconds: float) -> str:
    """The `grpc-timeout` header value: at most 8 digits and a unit."""
    millis = max(1, round(seconds * 1000))
    return f"{millis}m" if millis < 10**8 else f"{min(round(seconds), 10**8 - 1)}S"


# -- the call ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Reply:
    """What came back on the call's stream."""

    status: int = 0  # HTTP :status
    content_type: str = ""
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False


def _fields(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}


async def _unary_call(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    scheme: str,
    authority: str,
    path: str,
    message: bytes,
    timeout: float,
) -> _Reply:
    """One unary gRPC call on a fresh connection (stream 1); the reply as received."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [
            (":method", "POST"),
            (":scheme", scheme),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", grpc_timeout(timeout)),
            ("user-agent", USER_AGENT),
        ],
    )
    conn.send_data(stream_id, frame_message(message), end_stream=True)
    writer.write(conn.data_to_send())
    await writer.drain()

    reply = _Reply()
    first = True
    while not reply.ended:
        data = await reader.read(65536)
        if not data:
            what = "before any HTTP/2 frame" if first else "before the end of the call"
            raise ProbeFailed(f"connection closed {what}")
        if first and data.startswith(b"HTTP/"):
            # An HTTP/1.x server answering the preface as a bad request: say so rather
            # than report a frame-size error.
            status_line = data.split(b"\r\n", 1)[0]
            raise ProbeFailed(f"not HTTP/2: the backend answered {clip(status_line, 60)!r}")
        first = False
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            reason = clip(str(exc)) or type(exc).__name__
            raise ProbeFailed(f"HTTP/2 protocol error: {reason}") from None
        for event in events:
            _apply(conn, stream_id, event, reply)
        pending = conn.data_to_send()
        if pending:  # SETTINGS and PING acks, window updates
            writer.write(pending)
    conn.close_connection()
    writer.write(conn.data_to_send())
    return reply


def _apply(conn: h2.connection.H2Connection, stream_id: int, event: object, reply: _Reply) -> None:
    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
        head = _fields(event.headers)
        reply.status = int(head.get(":status", "0"))
        reply.content_type = head.get("content-type", "")
        if event.stream_ended is not None:  # trailers-only: the status is in the head
            reply.trailers = head
            reply.ended = True
    elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
        reply.body += event.data
        conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        if len(reply.body) > MAX_MESSAGE:
            raise ProbeFailed(f"response body over {MAX_MESSAGE} bytes")
    elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == stream_id:
        reply.trailers = _fields(event.headers)
    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
        reply.ended = True
    elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
        raise ProbeFailed(f"stream reset by the backend (error code {event.error_code!s})")
    elif isinstance(event, h2.events.ConnectionTerminated):
        note = f": {clip(event.additional_data)}" if event.additional_data else ""
        raise ProbeFailed(f"backend sent GOAWAY ({event.error_code!s}){note}")


def judge(reply: _Reply) -> tuple[bool, str]:
    """The verdict on a complete reply: (ok, reason)."""
    if reply.status != 200:
        return False, f"HTTP {reply.status}, not a gRPC response"
    code_text = reply.trailers.get("grpc-status")
    if code_text is None:
        return False, "no grpc-status in the response"
    try:
        code = int(code_text)
    except ValueError:
        return False, f"invalid grpc-status {clip(code_text, 20)!r}"
    if code != 0:
        name = GRPC_STATUS.get(code, "?")
        message = unquote(reply.trailers.get("grpc-message", ""))
        return False, f"grpc-status {code} {name}" + (f": {clip(message)}" if message else "")
    try:
        status = decode_response(unframe_message(bytes(reply.body)))
    except ValueError as exc:
        return False, f"invalid HealthCheckResponse: {exc}"
    name = SERVING_STATUS.get(status, f"status {status}")
    return status == SERVING, name


@register
class GrpcCheck(Check):
    type = "grpc"

    def __init__(self, config: GrpcCheckConfig) -> None:
        super().__init__(config)
        self.config: GrpcCheckConfig = config
        self.port = config.port
        self.message = encode_request(config.service)
        self._ssl: ssl.SSLContext | None = None

    def describe(self) -> str:
        return f"grpc health {self.config.service or '(server)'}"

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = tls_context(verify=self.config.verify_tls, alpn=("h2",))
        return self._ssl

    def _authority(self, host: str, port: int) -> str:
        if self.config.authority:
            return self.config.authority
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def probe(self, backend: Backend | None) -> CheckResult:
        if backend is None:
            return CheckResult(False, "grpc check needs a backend")
        host, port = self.target(backend)
        start = time.perf_counter()
        try:
            reply = await self._call(host, port)
        except ssl.SSLError as exc:
            return CheckResult(False, f"TLS error: {clip(str(exc))}", _since(start))
        except ProbeFailed as exc:
            return CheckResult(False, f"gRPC call failed: {exc}", _since(start))
        except OSError as exc:
            reason = exc.strerror or clip(str(exc)) or type(exc).__name__
            return CheckResult(False, f"gRPC call failed: {reason}", _since(start))
        ok, reason = judge(reply)
        return CheckResult(ok, reason, _since(start))

    async def _call(self, host: str, port: int) -> _Reply:
        tls = self.config.tls
        reader, writer = await asyncio.open_connection(
            host, port, ssl=self._context() if tls else None
        )
        try:
            if tls:
                chosen = writer.get_extra_info("ssl_object").selected_alpn_protocol()
                if chosen != "h2":
                    raise ProbeFailed(f"TLS: the backend chose ALPN {chosen or 'none'}, not h2")
            return await _unary_call(
                reader,
                writer,
                scheme="https" if tls else "http",
                authority=self._authority(host, port),
                path=HEALTH_CHECK_PATH,
                message=self.message,
                timeout=self.config.timeout,
            )
        finally:
            await close_writer(writer)


def _since(start: float) -> float:
    return time.perf_counter() - start
