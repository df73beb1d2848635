"""A strict, blocking HTTP/1.1 client on raw sockets, for tests that must see the bytes.

Everything the proxy sends is checked as it is parsed (CRLF line ends, one framing, a
well-formed status line), so a framing bug in the proxy fails the test that met it
instead of corrupting the next response. Every read has a deadline: nothing here can
hang a test.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HeaderList = list[tuple[str, str]]
Headers = Mapping[str, str] | Iterable[tuple[str, str]]

_STATUS_LINE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3})(?: (.*))?$")
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
DEFAULT_TIMEOUT = 5.0


class ProtocolError(AssertionError):
    """What the proxy sent is not valid HTTP/1.1 (an assertion: the proxy is wrong)."""


def _pairs(headers: Headers | None) -> HeaderList:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def build_request(
    method: str,
    target: str,
    headers: Headers | None = None,
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    host: str | None = "test.local",
) -> bytes:
    """Request bytes. Adds `Host` (unless `host` is None or one is given) and, for a
    non-empty body without framing headers, `Content-Length`."""
    pairs = _pairs(headers)
    names = {name.lower() for name, _ in pairs}
    if host is not None and "host" not in names:
        pairs.insert(0, ("Host", host))
    if body and not names & {"content-length", "transfer-encoding"}:
        pairs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in pairs)
    return head.encode("latin-1") + b"\r\n" + body


def chunked(*parts: bytes, trailers: Headers | None = None) -> bytes:
    """A chunked body made of `parts` (empty parts are skipped) and optional trailers."""
    out = bytearray()
    for part in parts:
        if part:
            out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    out += b"0\r\n"
    for name, value in _pairs(trailers):
        out += f"{name}: {value}\r\n".encode("latin-1")
    out += b"\r\n"
    return bytes(out)


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: HeaderList
    body: bytes = b""
    body_len: int = 0
    trailers: HeaderList = field(default_factory=list)
    framing: str = "none"  # none | length | chunked | close
    interim: list[Response] = field(default_factory=list)
    raw_head: bytes = b""

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return ", ".join(values) if values else None

    def trailer(self, name: str) -> str | None:
        lname = name.lower()
        values = [v for n, v in self.trailers if n.lower() == lname]
        return ", ".join(values) if values else None

    def has_token(self, name: str, token: str) -> bool:
        """Whether a comma-list header (e.g. Connection) contains `token`."""
        return any(
            t.strip().lower() == token.lower()
            for value in self.header_all(name)
            for t in value.split(",")
        )

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        body = self.body[:400]
        more = f"... ({self.body_len} bytes)" if self.body_len > len(body) else ""
        return f"{self.raw_head.decode('latin-1')!r} body={body!r}{more} framing={self.framing}"


class Conn:
    """One client connection to the proxy (plain or TLS), blocking, with deadlines."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        self.timeout = timeout
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect((host, port))
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket = sock
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # --- sending -------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: Headers | None = None,
        body: bytes = b"",
        *,
        version: str = "HTTP/1.1",
        host: str | None = "test.local",
        timeout: float | None = None,
    ) -> Response:
        self.send(build_request(method, target, headers, body, version=version, host=host))
        return self.read_response(method=method, timeout=timeout)

    # --- receiving -----------------------------------------------------------------

    def _fill(self, deadline: float, what: str) -> bool:
        """Read more bytes into the buffer; False at end of stream (FIN or RST)."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out waiting for {what}; received so far: {self._so_far()}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            raise TimeoutError(
                f"timed out waiting for {what}; received so far: {self._so_far()}"
            ) from None
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _so_far(self) -> str:
        return repr(bytes(self.buf[:600])) + (" ..." if len(self.buf) > 600 else "")

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _line(self, deadline: float, what: str) -> bytes:
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                if not line.endswith(b"\r\n"):
                    raise ProtocolError(f"bare LF in {what}: {line!r}")
                return line[:-2]
            if not self._fill(deadline, what):
                raise ProtocolError(f"connection closed in {what}; pending: {self._so_far()}")

    def read_exact(
        self, n: int, *, timeout: float | None = None, sink: Callable[[bytes], None] | None = None
    ) -> bytes:
        """Read exactly n bytes; with `sink`, hand them over piecewise and return b''."""
        deadline = self._deadline(timeout)
        out = bytearray()
        while n > 0:
            if not self.buf and not self._fill(deadline, f"{n} more body bytes"):
                raise ProtocolError(f"connection closed with {n} body bytes missing")
            piece = bytes(self.buf[:n])
            del self.buf[: len(piece)]
            n -= len(piece)
            if sink is None:
                out += piece
            else:
                sink(piece)
        return bytes(out)

    def read_head(self, *, method: str = "GET", timeout: float | None = None) -> Response:
        """The next response's status line and headers; the framing is decided here."""
        deadline = self._deadline(timeout)
        while self.buf[:2] == b"\r\n":  # a stray CRLF between messages is tolerated
            del self.buf[:2]
        while not self.buf:
            if not self._fill(deadline, "a status line"):
                raise ConnectionClosed("connection closed before a response")
        start = bytes(self.buf[:4000])
        status_line = self._line(deadline, "the status line")
        match = _STATUS_LINE.match(status_line)
        if not match:
            raise ProtocolError(f"bad status line {status_line!r}")
        headers: HeaderList = []
        raw = [status_line]
        while True:
            line = self._line(deadline, "the response headers")
            raw.append(line)
            if not line:
                break
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.match(name):
                raise ProtocolError(f"bad header line {line!r} in {start!r}")
            if b"\0" in value or b"\r" in value:
                raise ProtocolError(f"bad header value {line!r}")
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        resp = Response(
            version=f"HTTP/{match[1].decode()}.{match[2].decode()}",
            status=int(match[3]),
            reason=(match[4] or b"").decode("latin-1"),
            headers=headers,
            raw_head=b"\r\n".join(raw) + b"\r\n",
        )
        resp.framing = _framing(resp, method)
        return resp

    def read_body(
        self,
        resp: Response,
        *,
        timeout: float | None = None,
        sink: Callable[[bytes], None] | None = None,
    ) -> Response:
        deadline = self._deadline(timeout)
        out = bytearray()

        def take(piece: bytes) -> None:
            resp.body_len += len(piece)
            if sink is None:
                out.extend(piece)
            else:
                sink(piece)

        if resp.framing == "length":
            self.read_exact(int(resp.header("Content-Length") or 0), timeout=timeout, sink=take)
        elif resp.framing == "chunked":
            self._read_chunked(resp, deadline, take)
        elif resp.framing == "close":
            while True:
                if self.buf:
                    take(bytes(self.buf))
                    self.buf.clear()
                if not self._fill(deadline, "a close-delimited body"):
                    break
        resp.body = bytes(out)
        return resp

    def _read_chunked(self, resp: Response, deadline: float, take: Callable[[bytes], None]) -> None:
        while True:
            line = self._line(deadline, "a chunk size")
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                raise ProtocolError(f"bad chunk size line {line!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            remaining = deadline - time.monotonic()
            self.read_exact(size, timeout=max(remaining, 0.001), sink=take)
            if self._line(deadline, "a chunk's CRLF") != b"":
                raise ProtocolError("chunk data not followed by CRLF")
        while True:
            line = self._line(deadline, "the trailer section")
            if not line:
                return
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.match(name):
                raise ProtocolError(f"bad trailer line {line!r}")
            resp.trailers.append((name.decode("latin-1"), value.strip().decode("latin-1")))

    def read_response(
        self,
        *,
        method: str = "GET",
        timeout: float | None = None,
        interim: bool = False,
        sink: Callable[[bytes], None] | None = None,
    ) -> Response:
        """The next complete response. Interim 1xx responses (not 101) are returned as
        they come when `interim`, otherwise collected in `.interim` of the final one."""
        deadline = self._deadline(timeout)
        seen: list[Response] = []
        while True:
            resp = self.read_head(method=method, timeout=max(deadline - time.monotonic(), 0.001))
            if 100 <= resp.status < 200 and resp.status != 101:
                if interim:
                    return resp
                seen.append(resp)
                continue
            resp.interim = seen
            return self.read_body(resp, timeout=max(deadline - time.monotonic(), 0.001), sink=sink)

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once the peer has closed (FIN or RST) within `timeout`. Bytes received
        meanwhile stay in `self.buf`."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline, "the connection to close"):
                pass
        except TimeoutError:
            return False
        return True

    def is_open(self) -> bool:
        """Whether the connection is still open right now (no EOF pending)."""
        if self.eof:
            return False
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536, socket.MSG_PEEK)
        except (BlockingIOError, ssl.SSLWantReadError):
            return True
        except OSError:
            return False
        finally:
            self.sock.setblocking(True)
        return bool(data)


class ConnectionClosed(ProtocolError):
    """The proxy closed the connection where a response was expected."""


def _framing(resp: Response, method: str) -> str:
    """RFC 9112 §6.3, strictly: a proxy must never send an ambiguous message."""
    te = resp.header_all("Transfer-Encoding")
    cl = resp.header_all("Content-Length")
    if method.upper() == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
        if (resp.status in (204,) or 100 <= resp.status < 200) and (te or cl):
            raise ProtocolError(f"{resp.status} with framing headers: {resp.raw_head!r}")
        return "none"
    if te and cl:
        raise ProtocolError(f"both Transfer-Encoding and Content-Length: {resp.raw_head!r}")
    if te:
        codings = [c.strip().lower() for v in te for c in v.split(",")]
        if codings[-1:] != ["chunked"]:
            raise ProtocolError(f"Transfer-Encoding not ending in chunked: {te}")
        return "chunked"
    if cl:
        values = {c.strip() for v in cl for c in v.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise ProtocolError(f"bad Content-Length {cl}")
        return "length"
    return "close"


def read_all_responses(conn: Conn, n: int, *, method: str = "GET") -> list[Response]:
    return [conn.read_response(method=method) for _ in range(n)]


def connect_refused(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connect to the port is refused right now."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((host, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
