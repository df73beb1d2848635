"""HTTP/2 request fields to HTTP/1.1 ones, and HTTP/1.1 response fields to HTTP/2.

`request_from_h2` validates a decoded header block as RFC 9113 §8.2-§8.3 asks and
returns an `H2Request` whose `headers` are HTTP/1.1 field lines: `Host` first (from
`:authority`), cookies joined into one field (§8.2.3), no pseudo-header and no
connection-specific field. A malformed request raises `Malformed`: the session answers
it with RST_STREAM(PROTOCOL_ERROR) on that stream alone (§8.1.1), which is why the
session turns `h2`'s own inbound validation off: `h2` makes every malformed header
block a *connection* error, killing the client's other streams with it.
"""

from __future__ import annotations

from dataclasses import dataclass

Fields = list[tuple[bytes, bytes]]

# RFC 9113 §8.2.2: fields that are specific to an HTTP/1.1 connection.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
# RFC 9110 §5.1 token characters, for field names (lower case only: §8.2.1).
_NAME_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_BAD_VALUE = (b"\x00", b"\r", b"\n")
_WS = (32, 9)


class Malformed(Exception):
    """A malformed request or trailer section (RFC 9113 §8.1.1): a stream error."""


@dataclass(slots=True)
class H2Request:
    """One request as the exchange needs it. `headers` are HTTP/1.1 field lines in
    order, `Host` first; `te_trailers` says the client sent `te: trailers` (dropped from
    `headers` as hop-by-hop, kept here for an h2 or gRPC backend)."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: Fields
    end_stream: bool  # no body follows (END_STREAM on the HEADERS frame)
    te_trailers: bool = False
    content_length: int | None = None


def _check_field(name: bytes, value: bytes) -> None:
    if not name or not _NAME_CHARS.issuperset(name):
        raise Malformed(f"invalid field name {name[:40]!r}")
    if value and (value[0] in _WS or value[-1] in _WS):
        raise Malformed(f"whitespace around the value of {name!r}")
    for bad in _BAD_VALUE:
        if bad in value:
            raise Malformed(f"NUL, CR or LF in the value of {name!r}")


def request_from_h2(fields: Fields, end_stream: bool) -> H2Request:
    """The request of a decoded header block (raw byte pairs from `h2`)."""
    pseudo: dict[bytes, bytes] = {}
    headers: Fields = [(b"host", b"")]  # the slot for Host, filled below
    cookies: list[bytes] = []
    host: bytes | None = None
    te_trailers = False
    content_length: int | None = None
    regular = False
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                raise Malformed(f"pseudo-header {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise Malformed(f"pseudo-header {name!r} is not a request's")
            if name in pseudo:
                raise Malformed(f"pseudo-header {name!r} twice")
            if not value or b" " in value or any(bad in value for bad in _BAD_VALUE):
                raise Malformed(f"empty or invalid {name!r}")
            pseudo[name] = value
            continue
        regular = True
        _check_field(name, value)
        if name in _CONNECTION_SPECIFIC:
            raise Malformed(f"connection-specific field {name!r}")
        if name == b"te":
            if value.lower() != b"trailers":
                raise Malformed("te other than trailers")
            te_trailers = True
        elif name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            if host is not None:
                raise Malformed("two host fields")
            host = value
        else:
            if name == b"content-length":
                if not value.isdigit() or (
                    content_length is not None and int(value) != content_length
                ):
                    raise Malformed("invalid or conflicting content-length")
                if content_length is not None:
                    continue  # a repeated, equal value: one line is enough
                content_length = int(value)
            headers.append((name, value))
    method = pseudo.get(b":method")
    if method is None:
        raise Malformed("no :method")
    authority = pseudo.get(b":authority")
    if method == b"CONNECT":
        # §8.5: only :method and :authority (the proxy answers it, as for HTTP/1.1).
        if b":scheme" in pseudo or b":path" in pseudo or authority is None:
            raise Malformed("CONNECT with :scheme or :path, or without :authority")
        scheme = path = b""
    else:
        scheme = pseudo.get(b":scheme", b"")
        path = pseudo.get(b":path", b"")
        if not scheme or not path:
            raise Malformed("no :scheme or :path")
        if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
            raise Malformed(":path is neither absolute nor * (OPTIONS)")
    if authority is not None:
        if b"@" in authority:
            raise Malformed(":authority with userinfo")  # §8.3.1
        # §8.3.1: a Host that differs from :authority is treated as malformed.
        if host is not None and host.lower() != authority.lower():
            raise Malformed(":authority and host differ")
    elif host is None:
        raise Malformed("neither :authority nor host")
    else:
        authority = host
    headers[0] = (b"host", authority)
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    return H2Request(
        method, scheme, authority, path, headers, end_stream, te_trailers, content_length
    )


def trailers_from_h2(fields: Fields) -> Fields:
    """A request's trailer section: validated; no pseudo-header allowed (§8.1). Which
    trailer fields may be forwarded is the exchange's choice (headers.trailer_allowed)."""
    for name, value in fields:
        if name[:1] == b":":
            raise Malformed(f"pseudo-header {name!r} in trailers")
        _check_field(name, value)
    return list(fields)


def response_to_h2(status: int, headers: Fields) -> Fields:
    """A response head for `h2`: `:status` first, then `fields_to_h2(headers)`."""
    out: Fields = [(b":status", b"%d" % status)]
    fields_to_h2(headers, out)
    return out


def fields_to_h2(headers: Fields, out: Fields) -> Fields:
    """HTTP/1.1 field lines appended to `out` for `h2`: names in lower case, without the
    connection-specific fields and those named in `Connection` (§8.2.2)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(part.strip().lower() for part in value.split(b","))
    for name, value in headers:
        lower = name.lower()
        if lower in _CONNECTION_SPECIFIC or lower in named or lower == b"te":
            continue
        out.append((lower, value))
    return out
