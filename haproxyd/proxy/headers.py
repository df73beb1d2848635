"""Header rewriting between client and backend (SPEC §3).

Requests: hop-by-hop headers (RFC 9110 §7.6.1) and every header named in `Connection`
are removed; `X-Forwarded-For` is appended to, `X-Forwarded-Proto`/`X-Forwarded-Host`
are set, `Via` is appended to and an `X-Request-ID` is added when absent. Framing
headers are rebuilt by the proxy, never copied, so that what the backend sees is exactly
what the proxy parsed (a smuggling defence: no second interpretation downstream).

Everything works on `bytes` as httptools hands them over; names are compared in lower
case. One pass over the header list per message, no dict built per request.
"""

from __future__ import annotations

# RFC 9110 §7.6.1 plus the legacy ones every proxy strips. Content-Length is not
# hop-by-hop but the proxy rebuilds it from its own parse, so it is dropped here too.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
_REQUEST_DROPPED: frozenset[bytes] = HOP_BY_HOP | {
    b"content-length",
    b"expect",  # the proxy answers 100-continue itself
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
_RESPONSE_DROPPED: frozenset[bytes] = HOP_BY_HOP | {b"content-length"}

# Tokens of `Connection` that name no header to remove.
_CONNECTION_OPTIONS: frozenset[bytes] = frozenset({b"close", b"keep-alive", b"upgrade"})

VIA_TOKEN = b"1.1 haproxyd"


class BadRequest(Exception):
    """The request is malformed or ambiguous; `status` is what the client gets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def connection_tokens(values: list[bytes]) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def drop_connection_named(
    kept: list[tuple[bytes, bytes]], connection: list[bytes]
) -> tuple[list[tuple[bytes, bytes]], set[bytes]]:
    """Remove the headers that `Connection` names (they are hop-by-hop too); returns
    the remaining headers and the names removed."""
    tokens = connection_tokens(connection) - _CONNECTION_OPTIONS if connection else set()
    if tokens:
        kept = [(n, v) for n, v in kept if n.lower() not in tokens]
    return kept, tokens


class RequestHeaders:
    """What the proxy needs from a request's header list, collected in one pass.

    `kept` holds the headers to forward, in order, without the dropped ones.
    """

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "expect_continue",
        "host",
        "kept",
        "upgrade",
        "via",
        "xff",
        "xrid",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        kept: list[tuple[bytes, bytes]] = []
        host: bytes | None = None
        hosts = 0
        xff: list[bytes] = []
        via: list[bytes] = []
        connection: list[bytes] = []
        xrid: bytes | None = None
        upgrade: bytes | None = None
        content_length: bytes | None = None
        expect_continue = False
        chunked = False
        for name, value in headers:
            lname = name.lower()
            if lname in _REQUEST_DROPPED:
                if lname == b"transfer-encoding":
                    chunked = True  # llhttp accepts only `chunked` as the final coding
                elif lname == b"connection":
                    connection.append(value)
                elif lname == b"upgrade":
                    upgrade = value
                elif lname == b"content-length":
                    content_length = value
                elif lname == b"expect":
                    if value.strip().lower() != b"100-continue":
                        raise BadRequest(417, "unsupported Expect")
                    expect_continue = True
                continue
            if lname == b"host":
                hosts += 1
                host = value
            elif lname == b"x-forwarded-for":
                xff.append(value)
                continue
            elif lname == b"via":
                via.append(value)
                continue
            elif lname == b"x-request-id":
                if xrid is None:
                    xrid = value
                continue
            kept.append((name, value))
        if hosts > 1:
            raise BadRequest(400, "more than one Host header")
        kept, dropped = drop_connection_named(kept, connection)
        if host is not None and b"host" in dropped:
            raise BadRequest(400, "Connection names Host")
        self.kept = kept
        self.host = host
        self.xff = xff
        self.via = via
        self.xrid = xrid
        self.connection = connection
        self.upgrade = upgrade
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue


def build_request_head(
    method: bytes,
    url: bytes,
    parsed: RequestHeaders,
    *,
    client_ip: bytes,
    proto: bytes,
    request_id: bytes,
    framing: bytes,
    default_host: bytes,
    upgrade: bool,
) -> bytes:
    """The request line and headers to send to a backend (always HTTP/1.1)."""
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    for name, value in parsed.kept:
        parts += (name, b": ", value, b"\r\n")
    if parsed.host is None:
        parts += (b"Host: ", default_host, b"\r\n")
    else:
        parts += (b"X-Forwarded-Host: ", parsed.host, b"\r\n")
    if parsed.xff:
        parts += (b"X-Forwarded-For: ", b", ".join(parsed.xff), b", ", client_ip, b"\r\n")
    else:
        parts += (b"X-Forwarded-For: ", client_ip, b"\r\n")
    parts += (b"X-Forwarded-Proto: ", proto, b"\r\n")
    if parsed.via:
        parts += (b"Via: ", b", ".join(parsed.via), b", ", VIA_TOKEN, b"\r\n")
    else:
        parts += (b"Via: ", VIA_TOKEN, b"\r\n")
    parts += (b"X-Request-ID: ", request_id, b"\r\n")
    if upgrade:
        parts += (b"Connection: upgrade\r\nUpgrade: ", parsed.upgrade or b"", b"\r\n")
    parts += (framing, b"\r\n")
    return b"".join(parts)


def filter_response_headers(
    headers: list[tuple[bytes, bytes]], *, keep_upgrade: bool
) -> tuple[list[tuple[bytes, bytes]], bytes | None, bool]:
    """Response headers to forward, the backend's Content-Length (if any) and whether
    its body was chunked."""
    kept: list[tuple[bytes, bytes]] = []
    connection: list[bytes] = []
    content_length: bytes | None = None
    chunked = False
    for name, value in headers:
        lname = name.lower()
        if lname in _RESPONSE_DROPPED:
            if lname == b"connection":
                connection.append(value)
            elif lname == b"content-length":
                content_length = value
            elif lname == b"transfer-encoding":
                chunked = True
            elif keep_upgrade and lname == b"upgrade":
                kept.append((name, value))
            continue
        kept.append((name, value))
    kept, _ = drop_connection_named(kept, connection)
    return kept, content_length, chunked
