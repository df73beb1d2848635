"""Assertions shared by the data-plane tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from helpers.backends import Recorded
from helpers.http1 import Response

MAX_ERROR_BODY = 1024
_LEAKS = (b"Traceback", b'File "', b'.py"', b"haproxyd/")


def assert_proxy_error(resp: Response, status: int, *, request_id: str | None = None) -> None:
    """The proxy's own error page: the status, an X-Request-ID, a short body and no
    internals (traceback, file names) on the wire."""
    assert resp.status == status, f"expected {status}, got {resp}"
    rid = resp.header("X-Request-ID")
    assert rid, f"{status} without X-Request-ID: {resp}"
    if request_id is not None:
        assert rid == request_id, (
            f"{status} carries X-Request-ID {rid!r}, not the client's {request_id!r}"
        )
    assert resp.body_len <= MAX_ERROR_BODY, f"error body of {resp.body_len} bytes: {resp}"
    for leak in _LEAKS:
        assert leak not in resp.body, f"error body leaks {leak!r}: {resp}"


def wait_stable(read: Callable[[], int], *, quiet: float = 0.5, timeout: float = 20.0) -> int:
    """Poll a growing counter until it has not changed for `quiet` seconds; its value."""
    deadline = time.monotonic() + timeout
    last = read()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return value
    return last


VIA = "1.1 haproxyd"


def assert_all_rewritten(requests: list[Recorded]) -> None:
    """Every request a backend received is one the proxy parsed and rewrote: it carries
    the proxy's `Via` and an `X-Forwarded-For` (a request without them went through
    raw, past the proxy's checks)."""
    for rec in requests:
        via = [token.strip() for token in (rec.header("Via") or "").split(",")]
        assert via[-1:] == [VIA] and rec.header("X-Forwarded-For"), (
            f"{rec.method} {rec.target} reached the backend without the proxy's rewrite: "
            f"{rec.raw[:400]!r}"
        )
