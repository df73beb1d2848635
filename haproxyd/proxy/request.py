"""A parsed request made ready for its exchange, whichever client protocol read it.

- `plain_request` / `special_request`: the backend's head, once a client protocol has
  read a request's line and headers into an `Exchange` (`parts` and `specials`,
  headers.py). The common request (Host its only special header) takes the first; any
  other the second, which also refuses what the proxy does not forward (BadRequest).
  With `tracing` on (the runtime's `tracing` not None), both add the proxy's
  `traceparent` line (`TraceIds`) in place of the client's.
- `ProxyRuntimeBase`: the runtime's fields read on every request (runtime.py derives
  `ProxyRuntime` from it); `RequestIds`: the process's X-Request-ID values;
  `TraceIds`: its trace context, when tracing is on.

Compiled (setup.py), with the fields and signatures `request.pxd` declares: an attribute
added here must be declared there too, and the client calls the functions as C
functions.
"""

from __future__ import annotations

import os
from binascii import hexlify
from collections.abc import Callable
from typing import TYPE_CHECKING

from haproxyd.proxy.headers import (
    CRLF,
    SEP,
    BadRequest,
    RequestMeta,
    build_request_head,
    drop_named,
    set_value,
)
from haproxyd.proxy.target import host_ok, origin_form
from haproxyd.tracing.context import parse_traceparent

if TYPE_CHECKING:
    from haproxyd.proxy.exchange import Exchange

_HEX3 = tuple(b"%03x" % i for i in range(0x1000))  # see RequestIds.next
_TRACEPARENT = {b"traceparent"}
_DRAW = 26  # random bytes per TraceIds draw
_ZERO_SPAN = b"0" * 16
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def request_basics(
    exchange: Exchange, runtime: ProxyRuntimeBase, method: bytes, keep_alive: bool
) -> None:
    """What every request's head sets, whichever way it is read."""
    exchange.method = method
    exchange.is_head = method == b"HEAD"
    exchange.keep_alive = keep_alive and not runtime.draining
    if method in _IDEMPOTENT:
        exchange.replay = []


def plain_request(
    exchange: Exchange,
    runtime: ProxyRuntimeBase,
    method: bytes,
    keep_alive: bool,
    host: bytes,
    forwarded: bytes,
) -> None:
    """The backend's head for the common request (Host its only special header):
    `exchange.parts` holds the request line to send, then the forwarded header
    lines; `forwarded` is the client connection's `headers.forwarded_block`."""
    request_basics(exchange, runtime, method, keep_alive)
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
    tracing = runtime.tracing
    if tracing is None:
        parts += (b"X-Forwarded-Host: ", host, CRLF, forwarded, request_id, b"\r\n\r\n")
    else:
        # A plain request carries no traceparent (one makes it special): a new trace.
        # Its line's parts join the head's (one join: a line of its own costs another).
        flags = tracing.ids(exchange, None)
        trace = exchange.trace
        parts += (
            b"X-Forwarded-Host: ", host, CRLF, forwarded, request_id,
            b"\r\ntraceparent: 00-", trace[0], b"-", trace[1], flags, CRLF,
        )  # fmt: skip
    exchange.head = b"".join(parts)


def special_request(
    exchange: Exchange,
    runtime: ProxyRuntimeBase,
    method: bytes,
    url: bytes,
    upgrade: bool,
    client_ip: bytes,
    proto: bytes,
) -> None:
    """The backend's head for a request with special headers besides Host (or none):
    framing, Connection, Expect, Upgrade, forwarding headers (`upgrade`: the request
    asks for one, as its parser read it). Raises BadRequest for what is refused."""
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
    tracing = runtime.tracing
    trace_line = None
    if tracing is not None:
        if meta.traceparent is not None:
            # The client's, replaced by the proxy's; before `kept_end`, which
            # Exchange.header reads the forwarded headers up to.
            drop_named(parts, 1, _TRACEPARENT)
        trace_line = tracing.line(exchange, meta.traceparent)
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
    if trace_line is not None:
        framing += trace_line  # (the head's last lines)
    exchange.request_id = request_id = meta.xrid or runtime.request_ids.next()
    pool, url = runtime.route(meta.host, url)
    exchange.pool = pool
    exchange.url = url
    exchange.head = build_request_head(
        b" ".join((method, url, b"HTTP/1.1\r\n")),
        parts,
        meta,
        client_ip=client_ip,
        proto=proto,
        request_id=request_id,
        framing=framing,
        default_host=pool.default_host if pool is not None else b"localhost",
        upgrade=upgrade,
    )


class ProxyRuntimeBase:
    """The fields of `ProxyRuntime` (runtime.py) that the data plane reads on every
    request or connection. `ProxyRuntime` derives from this class and sets them;
    compiled (request.pxd), they are C fields, read without a lookup, while the rest
    of the runtime stays an ordinary Python object."""

    __slots__ = (
        "connect_timeout",
        "connection_limit",
        "connections",
        "draining",
        "echo_trace_id",
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
        "tracing",
    )


class TraceIds:
    """The W3C trace context of each request of one process, when tracing is on (the
    runtime's `tracing`; None, and never called, when off).

    `line` returns the `traceparent` line a request's backend gets (`ids` its parts,
    for a caller that joins them into the head itself) and keeps what it decided on
    the exchange (`exchange.trace`: trace id, span id, the client's span id
    or None, sampled), which the access log and the span exporter read once it ended.
    Ids are lower-case hex sliced from one block of random bytes drawn and hex-encoded
    per `block` requests (os.urandom by default, injectable for tests): a slice costs
    far less than formatting a number per request, and trace ids must be unique, not
    secret. A new trace is sampled when two more of those bytes fall under
    `sample_ratio` (a resolution of 1/65,536); a client's valid trace keeps its flags."""

    __slots__ = (
        "_at",
        "_block",
        "_hex",
        "_random",
        "_raw",
        "_size",
        "_step",
        "_threshold",
        "sink",
    )

    def __init__(
        self,
        sample_ratio: float,
        random: Callable[[int], bytes] = os.urandom,
        block: int = 1024,
    ) -> None:
        self._random = random
        self._block = block
        self._threshold = int(sample_ratio * 65536)
        self._raw = b""
        self._hex = b""
        self._at = 0
        # _DRAW and len(_raw) as fields: compiled, C integers (request.pxd), where the
        # module global would box every sum and comparison of `_draw` into ints.
        self._step = _DRAW
        self._size = 0
        # Where `ended` sends a sampled exchange (the span exporter's `observe`); None
        # while spans are not exported.
        self.sink: Callable[[Exchange], None] | None = None

    def _draw(self) -> int:
        """The offset in `_raw` of 26 fresh random bytes: trace id (16), span id (8),
        sampling (2); their hex is at twice that offset in `_hex`."""
        at = self._at
        if at + self._step > self._size:
            self._raw = self._random(self._block * _DRAW)
            self._hex = hexlify(self._raw)
            self._size = len(self._raw)
            at = 0
        self._at = at + self._step
        return at

    def ended(self, exchange: Exchange) -> None:
        """The exchange listener while spans are exported (runtime.py): hands each
        sampled exchange to `sink`; the others cost only this test, compiled, where a
        listener in Python costs a call into the interpreter (about 1,100 instructions)
        for every request."""
        trace = exchange.trace
        if trace is not None and trace[3]:
            self.sink(exchange)  # type: ignore[misc]

    def line(self, exchange: Exchange, traceparent: bytes | None) -> bytes:
        """The `traceparent` line (CRLF included) for the backend of a request whose
        client sent `traceparent` (None: none; b"": several, invalid); sets
        `exchange.trace`."""
        flags = self.ids(exchange, traceparent)
        trace = exchange.trace
        return b"".join((b"traceparent: 00-", trace[0], b"-", trace[1], flags))

    def ids(self, exchange: Exchange, traceparent: bytes | None) -> bytes:
        """Sets `exchange.trace` for a request whose client sent `traceparent` (as
        `line`); returns the end of its line: "-", the flags, CRLF."""
        at = self._draw()
        hexed = self._hex
        # `text` and `noise` are `hexed` and `_raw` themselves, typed as C pointers
        # compiled (request.pxd): a slice is then one PyBytes_FromStringAndSize and an
        # index a C byte, where a bytes object's slice boxes both bounds into ints and
        # builds a slice object (about 700 instructions per request).
        text = hexed
        span = text[2 * at + 32 : 2 * at + 48]
        while span == _ZERO_SPAN:  # all zeros is not a span id (1 in 2**64)
            at = self._draw()
            hexed = self._hex
            text = hexed
            span = text[2 * at + 32 : 2 * at + 48]
        parsed = parse_traceparent(traceparent) if traceparent is not None else None
        if parsed is not None:
            trace, parent, flags = parsed
            sampled = (flags & 1) == 1
            flag_line = b"-%02x\r\n" % flags
        else:
            trace = text[2 * at : 2 * at + 32]
            parent = None
            raw = self._raw
            noise = raw
            sampled = (noise[at + 24] << 8 | noise[at + 25]) < self._threshold
            flag_line = b"-01\r\n" if sampled else b"-00\r\n"
            # (an all-zero trace id, 1 in 2**128, is left to chance)
        exchange.trace = (trace, span, parent, sampled)
        return flag_line


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
