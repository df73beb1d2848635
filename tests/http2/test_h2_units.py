"""The pieces of the HTTP/2 session without a socket: field conversion and FrameGuard."""

from __future__ import annotations

import random

import pytest
from h2.errors import ErrorCodes
from helpers.clock import FakeClock
from helpers.h2peer import PREFACE, RawClient

from haproxyd.proxy.h2convert import Malformed, request_from_h2, response_to_h2
from haproxyd.proxy.h2limits import FrameGuard, Http2Limits

BASE = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/p")]


def test_host_comes_from_authority_first_and_cookies_are_joined_last():
    request = request_from_h2(
        [*BASE, (b":authority", b"A.test"), (b"cookie", b"a=1"), (b"x", b"1"),
         (b"host", b"a.test"), (b"cookie", b"b=2"), (b"content-length", b"3")],
        end_stream=False,
    )
    assert request.headers == [(b"host", b"A.test"), (b"x", b"1"), (b"content-length", b"3"),
                               (b"cookie", b"a=1; b=2")]
    assert request.content_length == 3 and not request.te_trailers


def test_host_alone_serves_as_authority():
    request = request_from_h2([*BASE, (b"host", b"h.test")], end_stream=True)
    assert request.authority == b"h.test" and request.headers == [(b"host", b"h.test")]


@pytest.mark.parametrize(
    "extra",
    [
        [(b"content-length", b"1"), (b"content-length", b"2")],
        [(b"content-length", b"-1")],
        [(b"host", b"a"), (b"host", b"a")],
        [(b"x", b" padded")],
    ],
)
def test_refused_fields(extra):
    with pytest.raises(Malformed):
        request_from_h2([*BASE, (b":authority", b"a"), *extra], end_stream=True)


def test_no_authority_nor_host_is_malformed():
    with pytest.raises(Malformed):
        request_from_h2(BASE, end_stream=True)


def test_connect_takes_only_method_and_authority():
    request = request_from_h2([(b":method", b"CONNECT"), (b":authority", b"a:443")], True)
    assert (request.method, request.path, request.scheme) == (b"CONNECT", b"", b"")
    with pytest.raises(Malformed):
        request_from_h2([(b":method", b"CONNECT"), (b":authority", b"a"), (b":path", b"/")], True)


def test_response_fields_lose_connection_specific_and_named_ones():
    assert response_to_h2(
        204,
        [(b"Connection", b"close, X-Hop"), (b"X-Hop", b"1"), (b"Keep-Alive", b"5"),
         (b"Transfer-Encoding", b"chunked"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")],
    ) == [(b":status", b"204"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def _stream(client: RawClient, frames: int) -> bytes:
    return PREFACE + b"".join(
        client.headers(2 * n + 1, [*BASE, (b":authority", b"a")]) + client.rst(2 * n + 1)
        + client.ping(n) for n in range(frames)
    )


@pytest.mark.parametrize("seed", range(5))
def test_guard_reads_frame_headers_split_anywhere(seed):
    """The same stream cut into random pieces trips at the same frame as when whole
    (up to the first bytes of its header, fed with an earlier piece: h2 holds an
    incomplete frame header and never acts on it)."""
    limits = Http2Limits(max_resets=20, max_pings=1000)
    data = _stream(RawClient(), 60)
    whole = FrameGuard(limits, FakeClock())
    cut = whole.check(data)
    assert whole.violation is not None and whole.violation[0] == ErrorCodes.ENHANCE_YOUR_CALM
    rng = random.Random(seed)
    guard = FrameGuard(limits, FakeClock())
    fed = pos = 0
    while pos < len(data) and guard.violation is None:
        size = rng.randint(1, 40)
        piece = data[pos : pos + size]
        fed += guard.check(piece)
        pos += len(piece)
    assert cut <= fed < cut + 9


def test_guard_windows_restart_on_the_clock():
    clock = FakeClock()
    guard = FrameGuard(Http2Limits(max_resets=3, reset_window=10.0), clock)
    assert guard.check(PREFACE) == len(PREFACE)
    for _ in range(5):  # three resets a window, five windows: never over
        for stream_id in (1, 3, 5):
            frame = RawClient.rst(stream_id)
            assert guard.check(frame) == len(frame)
        clock.advance(10.0)
    assert guard.violation is None
    assert guard.check(RawClient.rst(7) * 4) == 3 * 13 and guard.violation is not None
