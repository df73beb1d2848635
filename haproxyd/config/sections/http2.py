"""`http2:`: the bounds of every client HTTP/2 connection (listeners speak HTTP/2 by
ALPN on TLS, `listeners[].tls.alpn`, and by prior knowledge on cleartext,
`listeners[].http2`)."""

from __future__ import annotations

from pydantic import Field

from haproxyd.config.fields import Section
from haproxyd.config.types import Duration, Size

# RFC 9113 §6.5.2: the largest window and the smallest and largest frame.
MAX_WINDOW = 2**31 - 1


class Http2Config(Section):
    """Client HTTP/2 connections (reloadable: new connections take the new values).
    The idle timeout is `timeouts.idle` and the largest header block
    `limits.max_header_bytes`, as for HTTP/1.1."""

    max_concurrent_streams: int = Field(
        100,
        ge=1,
        le=10000,
        description="Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); "
        "one more is refused with REFUSED_STREAM.",
    )
    # Not below the protocol's default: a client may send that much before it reads our
    # SETTINGS (RFC 9113 §6.9.2), and h2 enforces a smaller window from the start.
    initial_window: Size = Field(
        65535,
        ge=65535,
        le=MAX_WINDOW,
        description="Request body bytes a client may send on a stream before the backend "
        "took any (SETTINGS_INITIAL_WINDOW_SIZE; at least 65535); accepts 64KiB-style sizes.",
    )
    max_header_list_size: Size = Field(
        65536,
        ge=1024,
        description="Largest decoded request header list (SETTINGS_MAX_HEADER_LIST_SIZE, "
        "enforced by the HPACK decoder: GOAWAY ENHANCE_YOUR_CALM past it).",
    )
    max_requests: int = Field(
        1000,
        ge=0,
        description="Streams one connection may open in all, then a graceful GOAWAY "
        "(nginx's keepalive_requests); 0 = no bound.",
    )
    stall_timeout: Duration = Field(
        30.0,
        gt=0,
        description="A stream whose response cannot be sent this long (the client's window "
        "stays closed) is reset.",
    )
