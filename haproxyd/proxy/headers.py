"""Header rewriting between client and backend (SPEC §3), both ways: request heads for
the backend (`build_request_head`), response heads for the client (`build_response_head`).

Requests: hop-by-hop headers (RFC 9110 §7.6.1) and every header named in `Connection`
are removed; `X-Forwarded-For` is appended to, `X-Forwarded-Proto`/`X-Forwarded-Host`
are set, `Via` is appended to and an `X-Request-ID` is added when absent. Framing
headers are rebuilt by the proxy, never copied, so that what the backend sees is exactly
what the proxy parsed (a smuggling defence: no second interpretation downstream).

The hot path is one callback per header from httptools. There, a header is classified
by one dict lookup on its name as received (`request_kind` / `response_kind`, cached
per spelling, so `Content-Type` is lower-cased once per process, not once per request):
an ordinary header is appended at once to the outgoing head (`parts`, a list of byte
strings joined once), and only the few the proxy acts on ("specials": Host, Connection,
framing, forwarding headers) are set aside, as `(kind, name, value)`, for one pass when
the head is complete. No dict and no per-header tuple list is built per request.
"""

from __future__ import annotations

from collections.abc import Iterable

VIA_TOKEN = b"1.1 haproxyd"
SEP = b": "
CRLF = b"\r\n"

# Header kinds. KEEP is forwarded as received; DROP is removed (hop-by-hop, or rebuilt
# by the proxy); the others are specials, read when the head is complete.
KEEP = 0
DROP = 1
HOST = 2
CONNECTION = 3
TRANSFER_ENCODING = 4
CONTENT_LENGTH = 5
EXPECT = 6
UPGRADE = 7
X_FORWARDED_FOR = 8
VIA = 9
X_REQUEST_ID = 10
# Read only when `tracing.enabled`, else forwarded as received; a kind of its own so
# that the canonical scanner leaves a request carrying one to llhttp (whose path
# collects specials) and the common request, without one, keeps its path.
TRACEPARENT = 11

# RFC 9110 §7.6.1 plus the legacy ones every proxy strips.
_HOP_BY_HOP = (
    b"proxy-connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"proxy-authenticate",
    b"proxy-authorization",
)
_REQUEST_KINDS_LOWER: dict[bytes, int] = {
    **dict.fromkeys(_HOP_BY_HOP, DROP),
    b"x-forwarded-proto": DROP,  # set by the proxy
    b"x-forwarded-host": DROP,
    b"host": HOST,
    b"connection": CONNECTION,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"content-length": CONTENT_LENGTH,
    b"expect": EXPECT,  # the proxy answers 100-continue itself
    b"upgrade": UPGRADE,
    b"x-forwarded-for": X_FORWARDED_FOR,
    b"via": VIA,
    b"x-request-id": X_REQUEST_ID,
    b"traceparent": TRACEPARENT,
}
_RESPONSE_KINDS_LOWER: dict[bytes, int] = {
    **dict.fromkeys(_HOP_BY_HOP, DROP),
    b"connection": CONNECTION,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"content-length": CONTENT_LENGTH,
    b"upgrade": UPGRADE,
}

# Trailer fields that are never forwarded, either way (RFC 9110 §6.5.1: a trailer must
# not frame, route, authenticate or control the connection, and a recipient must not
# merge one that does into the header section). Left in a chunked body's trailer
# section, `Connection: close` or a `Content-Length` reaches a backend's parser on a
# pooled connection and poisons it for the next client. Every header the proxy acts on
# or drops is among them, so the list is derived from those tables.
_TRAILER_DENIED = frozenset(
    {
        *_REQUEST_KINDS_LOWER,
        *_RESPONSE_KINDS_LOWER,
        b"forwarded",
        b"authorization",
        b"www-authenticate",
        b"content-encoding",
        b"content-range",
        b"content-type",
    }
)
_TRAILER_DENIED_PREFIXES = (b"proxy-", b"x-forwarded-")


def trailer_allowed(name: bytes) -> bool:
    """Whether a trailer field `name` (any case) may be forwarded (trailers are rare:
    no cache)."""
    lower = name.lower()
    return lower not in _TRAILER_DENIED and not lower.startswith(_TRAILER_DENIED_PREFIXES)


def trailer_block(trailers: list[tuple[bytes, bytes]] | None) -> bytes:
    """The last chunk of a chunked body, with the trailers that may be forwarded (to a
    backend or to the client)."""
    if not trailers:
        return b"0\r\n\r\n"
    parts = [b"0\r\n"]
    for name, value in trailers:
        if trailer_allowed(name):
            parts += (name, b": ", value, CRLF)
    parts.append(CRLF)
    return b"".join(parts)


# Spellings seen so far -> kind. Bounded: past the limit (a peer inventing names) a new
# spelling is classified without being remembered.
_CACHE_LIMIT = 4096
_request_cache: dict[bytes, int] = {}
_response_cache: dict[bytes, int] = {}
request_kind_cached = _request_cache.get  # the hot path's lookup; None on a miss
response_kind_cached = _response_cache.get


def request_kind(name: bytes) -> int:
    """The kind of request header `name` (any case); remembers the spelling."""
    kind = _REQUEST_KINDS_LOWER.get(name.lower(), KEEP)
    if len(_request_cache) < _CACHE_LIMIT:
        _request_cache[name] = kind
    return kind


def response_kind(name: bytes) -> int:
    """The kind of response header `name` (any case); remembers the spelling."""
    kind = _RESPONSE_KINDS_LOWER.get(name.lower(), KEEP)
    if len(_response_cache) < _CACHE_LIMIT:
        _response_cache[name] = kind
    return kind


# `Connection` values that name no header to remove, in the spellings peers send.
PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"}
)
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})


class BadRequest(Exception):
    """The request is malformed or ambiguous; `status` is what the client gets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def connection_named(values: Iterable[bytes]) -> set[bytes]:
    """Header names (lower case) that `Connection` values list for removal."""
    tokens: set[bytes] = set()
    for value in values:
        if value in PLAIN_CONNECTION:
            continue
        for token in value.split(b","):
            token = token.strip().lower()
            if token and token not in _CONNECTION_OPTIONS:
                tokens.add(token)
    return tokens


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, reason: bytes) -> bytes:
    """`HTTP/1.1 <status> <reason>` and CRLF, remembered per (status, reason): a backend
    answers with a handful of them, and formatting one costs more than a lookup."""
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_STATUS_LINES) < _CACHE_LIMIT:
            _STATUS_LINES[status, reason] = line
    return line


def header_in_block(block: bytes, name: bytes) -> bytes | None:
    """The value of the first header `name` (lower case) in `block`, header lines
    `Name: value` CRLF as the scanner (canonical_head) keeps them. Walks the block in
    place: only a name of the right length is copied, to compare it."""
    size = len(name)
    start = 0
    end = block.find(CRLF)
    while end >= 0:
        colon = block.find(SEP, start, end)
        if colon - start == size and block[start:colon].lower() == name:
            return block[colon + 2 : end]
        start = end + 2
        end = block.find(CRLF, start)
    return None


def drop_named(parts: list[bytes], start: int, names: set[bytes]) -> None:
    """Remove from `parts` (name, ": ", value, CRLF groups from index `start`) every
    header whose lower-case name is in `names`. Only when `Connection` lists extension
    headers, which is rare: the common path never comes here."""
    kept = parts[:start]
    for i in range(start, len(parts) - 3, 4):
        if parts[i].lower() not in names:
            kept += parts[i : i + 4]
    parts[:] = kept


def split_codings(values: list[bytes]) -> tuple[bool, bytes]:
    """(whether the last transfer coding is chunked, the codings before it, joined)
    of a message's Transfer-Encoding values."""
    codings = [c.strip() for value in values for c in value.split(b",") if c.strip()]
    chunked = bool(codings) and codings[-1].lower() == b"chunked"
    if chunked:
        codings.pop()
    return chunked, b", ".join(codings)


def set_value(parts: list[bytes], name: bytes, value: bytes) -> None:
    """Set the value of the first header `name` (lower case) in `parts` (name, ": ",
    value, CRLF groups from index 1)."""
    for i in range(1, len(parts) - 3, 4):
        if parts[i].lower() == name:
            parts[i + 2] = value
            return


class RequestMeta:
    """What the proxy needs from a request's special headers, read in one pass."""

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "expect_continue",
        "host",
        "traceparent",
        "upgrade",
        "via",
        "xff",
        "xrid",
    )

    def __init__(self, specials: list[tuple[int, bytes, bytes]]) -> None:
        self.host: bytes | None = None
        self.xff: list[bytes] | None = None
        self.via: list[bytes] | None = None
        self.xrid: bytes | None = None
        # The client's traceparent: None when absent, b"" (invalid, so a new trace is
        # started) when sent more than once (W3C Trace Context §3.2).
        self.traceparent: bytes | None = None
        self.connection: list[bytes] | None = None
        self.upgrade: bytes | None = None
        self.content_length: bytes | None = None
        self.chunked = False
        self.expect_continue = False
        for kind, _, value in specials:
            if kind == HOST:
                if self.host is not None:
                    raise BadRequest(400, "more than one Host header")
                self.host = value
            elif kind == CONNECTION:
                if self.connection is None:
                    self.connection = [value]
                else:
                    self.connection.append(value)
            elif kind == X_FORWARDED_FOR:
                if self.xff is None:
                    self.xff = [value]
                else:
                    self.xff.append(value)
            elif kind == VIA:
                if self.via is None:
                    self.via = [value]
                else:
                    self.via.append(value)
            elif kind == X_REQUEST_ID:
                if self.xrid is None:
                    self.xrid = value
            elif kind == TRACEPARENT:
                self.traceparent = value if self.traceparent is None else b""
            elif kind == TRANSFER_ENCODING:
                # llhttp accepts one Transfer-Encoding, ending in `chunked`. A coding
                # before it (gzip, chunked) is refused as nginx does (RFC 9112 §6.1):
                # re-chunked, the body would lose it, and backends rarely decode one.
                if value != b"chunked" and split_codings([value])[1]:
                    raise BadRequest(501, "transfer coding not implemented")
                self.chunked = True
            elif kind == CONTENT_LENGTH:
                self.content_length = value
            elif kind == UPGRADE:
                self.upgrade = value
            elif kind == EXPECT:
                if value.strip().lower() != b"100-continue":
                    raise BadRequest(417, "unsupported Expect")
                self.expect_continue = True

    def named_by_connection(self) -> set[bytes]:
        """Headers `Connection` asks to remove; refuses a request that names Host."""
        names = connection_named(self.connection) if self.connection else set()
        if b"host" in names and self.host is not None:
            raise BadRequest(400, "Connection names Host")
        return names


def forwarded_block(xff: bytes, proto: bytes, via: bytes) -> bytes:
    """The forwarding headers of a backend's head, up to the request id's value. For a
    request with no X-Forwarded-For or Via of its own it is the same for every request
    of a client connection, which builds it once (`ClientProtocol._forwarded`)."""
    # One join, not six concatenations (each a new bytes object): it runs for every new
    # client connection, and the adds were 5 % of a new connection's instructions.
    return b"".join(
        (
            b"X-Forwarded-For: ",
            xff,
            b"\r\nX-Forwarded-Proto: ",
            proto,
            b"\r\nVia: ",
            via,
            b"\r\nX-Request-ID: ",
        )
    )


def build_request_head(
    request_line: bytes,
    parts: list[bytes],
    meta: RequestMeta,
    *,
    client_ip: bytes,
    proto: bytes,
    request_id: bytes,
    framing: bytes,
    default_host: bytes,
    upgrade: bool,
) -> bytes:
    """The head to send to a backend (always HTTP/1.1). `parts` holds the forwarded
    headers from index 1, those named by `Connection` already removed; index 0 is
    overwritten with `request_line`."""
    parts[0] = request_line
    host = meta.host
    if host is None:
        parts += (b"Host: ", default_host, CRLF)
    else:
        parts += (b"X-Forwarded-Host: ", host, CRLF)
    xff = b", ".join((*meta.xff, client_ip)) if meta.xff else client_ip
    via = b", ".join((*meta.via, VIA_TOKEN)) if meta.via else VIA_TOKEN
    parts += (forwarded_block(xff, proto, via), request_id, CRLF)
    if upgrade:
        parts += (b"Connection: upgrade\r\nUpgrade: ", meta.upgrade or b"", CRLF)
    parts += (framing, CRLF)
    return b"".join(parts)


class ResponseHead:
    """A response head for the client (`build_response_head`) and what it says about
    the body that follows."""

    __slots__ = ("chunked_out", "close_after", "head", "read_to_close")

    def __init__(
        self, head: bytes, chunked_out: bool, read_to_close: bool, close_after: bool
    ) -> None:
        self.head = head
        self.chunked_out = chunked_out  # the proxy chunks the body itself
        self.read_to_close = read_to_close  # the body ends when the backend closes
        self.close_after = close_after  # the client connection closes after it


def build_response_head(
    status: int,
    parts: list[bytes],
    specials: list[tuple[int, bytes]],
    request_id: bytes,
    *,
    upgrade: bool,
    is_head: bool,
    http10: bool,
    keep_alive: bool,
    close_after: bool,
    draining: bool,
) -> ResponseHead:
    """The head to send to the client, for any response but the common one (framed by
    Content-Length alone, to a keep-alive HTTP/1.1 client: the exchange builds that one
    itself, in fewer steps). `parts` holds the status line and the forwarded headers
    (from index 1), `specials` the (kind, value) of the response's framing, Connection
    and Upgrade headers; the flags are the request's (`close_after`: the client
    connection already closes after this exchange)."""
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
    chunked_out = read_to_close = False
    if status == 101 and upgrade:
        if upgrade_value is not None:
            parts += (b"Upgrade: ", upgrade_value, CRLF)
        parts.append(b"Connection: upgrade\r\n")
    else:
        no_body = is_head or status == 204 or status == 304
        if content_length is not None:
            parts += (b"Content-Length: ", content_length, CRLF)
        elif not no_body:
            chunked, other = split_codings(codings) if codings else (False, b"")
            read_to_close = not chunked
            if http10:
                close_after = True  # HTTP/1.0 client: the body ends when we close
            else:
                # Codings before chunked (gzip, chunked) stay: the body bytes are in
                # them, only the chunking is the proxy's own.
                if other:
                    parts += (b"Transfer-Encoding: ", other, b", chunked\r\n")
                else:
                    parts.append(b"Transfer-Encoding: chunked\r\n")
                chunked_out = True
        if draining:
            close_after = True
        if close_after or not keep_alive:
            parts.append(b"Connection: close\r\n")
        elif http10:
            parts.append(b"Connection: keep-alive\r\n")
    parts += (b"X-Request-ID: ", request_id, b"\r\n\r\n")
    # One buffer: the kernel copies one iovec, not 25.
    return ResponseHead(b"".join(parts), chunked_out, read_to_close, close_after)
