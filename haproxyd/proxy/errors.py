"""The proxy's own error responses (SPEC §3): right status, X-Request-ID, short body."""

from __future__ import annotations

from http import HTTPStatus


def error_body(status: int, reason: str = "") -> tuple[str, bytes]:
    """The reason phrase of `status` and the plain-text body of the proxy's own answer
    with it (`reason`: a short, safe explanation), whichever protocol carries it."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = f"{status} {phrase}: {reason}\n" if reason else f"{status} {phrase}\n"
    return phrase, body.encode("ascii", "replace")


def error_response(
    status: int,
    request_id: bytes,
    reason: str = "",
    *,
    close: bool,
    trace_id: bytes | None = None,
) -> bytes:
    """A complete HTTP/1.1 error response. `reason` is a short, safe explanation;
    `trace_id`, when given, is echoed in `X-Trace-ID`."""
    phrase, body_bytes = error_body(status, reason)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body_bytes)}\r\n"
        "Cache-Control: no-store\r\n"
        f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n"
    ).encode("ascii")
    if trace_id is not None:
        head += b"X-Trace-ID: " + trace_id + b"\r\n"
    return b"".join((head, b"X-Request-ID: ", request_id, b"\r\n\r\n", body_bytes))
