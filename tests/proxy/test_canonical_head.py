"""The canonical-head scanner against llhttp: whatever the scanner accepts, llhttp reads
the same way (status, reason, headers, framing, keep-alive; method, target, Host), and
what it must leave to llhttp it returns None for. Hypothesis mixes well-formed heads
with the irregular bytes a smuggler or a broken backend would send."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haproxyd.proxy import headers
from haproxyd.proxy.target import host_ok

FORMS = ("compiled",)  # the scanner exists only compiled (test_forms.py: where it is not)
canonical_head = pytest.importorskip(
    "haproxyd.proxy.canonical_head",
    reason="the scanner exists only compiled, and this data plane is interpreted",
)
scan_response_head = canonical_head.scan_response_head
scan_request_head = canonical_head.scan_request_head

# What the proxy forwards as received is what the interpreted path (llhttp, then
# headers.py) forwards: the scanner must agree with it, header by header.
_FORWARDED_REQUEST = (headers.KEEP, headers.HOST)


class _Events:
    """What llhttp reports for one message."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | httptools.HttpRequestParser | None = None
        self.keep_alive: list[bool] = []  # as llhttp says at the head's end and the message's
        self.url = b""
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.headers_done = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive.append(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive.append(self.parser.should_keep_alive())


def _lines(block: bytes) -> list[tuple[bytes, bytes]]:
    return [tuple(line.split(b": ", 1)) for line in block.split(b"\r\n") if line]  # type: ignore[misc]


def check_response(data: bytes) -> tuple | None:
    """Scan `data`; where the scanner accepts it, hold its result against llhttp's."""
    head = scan_response_head(data)
    if head is None:
        return None
    end, status, line, kept, length, length_value, keep_alive, body = head
    events = _Events()
    parser = events.parser = httptools.HttpResponseParser(events)
    parser.feed_data(data)  # must not raise: the scanner accepts only what llhttp does
    assert events.headers_done
    assert parser.get_status_code() == status
    assert line == b"HTTP/1.1 %d %s\r\n" % (status, events.reason)
    assert parser.get_http_version() == "1.1"
    assert events.keep_alive and set(events.keep_alive) == {keep_alive}
    forwarded = [(n, v) for n, v in events.headers if headers.response_kind(n) == headers.KEEP]
    assert _lines(kept) == forwarded
    lengths = [v for n, v in events.headers if n.lower() == b"content-length"]
    assert lengths == [length_value] and int(length_value) == length
    assert data[end:] == body == events.body  # the head ends where llhttp's body begins
    assert events.complete == (len(data) - end == length)
    return head


def check_request(data: bytes, limit: int = 65536) -> tuple | None:
    head = scan_request_head(data, 0, limit)
    if head is None:
        return None
    end, method, target, line, host, kept, keep_alive = head
    assert end <= limit
    assert line == b"%s %s HTTP/1.1\r\n" % (method, target)  # what the proxy sends on
    events = _Events()
    parser = events.parser = httptools.HttpRequestParser(events)
    parser.feed_data(data[:end])  # must not raise
    assert events.complete  # a request without a body: its head is all of it
    assert parser.get_method() == method
    assert events.url == target and target.startswith(b"/")
    assert parser.get_http_version() == "1.1"
    assert events.keep_alive == [keep_alive, keep_alive]
    assert not parser.should_upgrade()
    hosts = [v for n, v in events.headers if n.lower() == b"host"]
    assert hosts == [host] and host_ok(host)
    forwarded = [(n, v) for n, v in events.headers if headers.request_kind(n) in _FORWARDED_REQUEST]
    assert _lines(kept) == forwarded
    return head


# -- responses --


def test_a_typical_response_is_scanned() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 01 Dec 2026 15:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
        b'Keep-Alive: timeout=5\r\nETag: "abc"\r\n\r\nhello'
    )
    end, status, line, kept, length, length_value, keep_alive, body = check_response(data)
    assert (status, line, length, length_value, keep_alive, body) == (
        200,
        b"HTTP/1.1 200 OK\r\n",
        5,
        b"5",
        True,
        b"hello",
    )
    assert kept == (
        b"Server: nginx\r\nDate: Tue, 01 Dec 2026 15:00:00 GMT\r\n"
        b'Content-Type: text/plain\r\nETag: "abc"\r\n'
    )
    assert data[end:] == b"hello"


def test_connection_close_and_a_partial_body() -> None:
    head = check_response(
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 10\r\n\r\n12"
    )
    assert head is not None
    assert head[1] == 404 and head[6] is False and head[4] == 10


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",  # HTTP/1.0: its own keep-alive rules
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nto the close",  # no length
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1 \r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nxyz",  # bytes past the body
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: x-private\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close, x\r\n\r\nx",
        # llhttp reads Proxy-Connection as Connection: a close in it ends keep-alive.
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nProxy-Connection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nProxy-Connection: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: b\r\n c\r\n\r\nx",  # obs-fold
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\nX-A: b\r\n\r\nx",  # bare LF
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: b\x00c\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A : b\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A:b\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A:  b\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: b\t\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",  # the head goes on in the next read
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456\r\n\r\n",
    ],
)
def test_what_the_response_scanner_leaves_to_llhttp(data: bytes) -> None:
    assert scan_response_head(data) is None


def test_more_than_64_header_lines_are_left_to_llhttp() -> None:
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(64))
    assert check_response(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 0\r\n\r\n") is None
    assert check_response(
        b"HTTP/1.1 200 OK\r\n" + lines[: -len(b"X-63: v\r\n")] + b"Content-Length: 0\r\n\r\n"
    )


# Each part is usually well formed and sometimes not, so that a good share of the
# heads are accepted and the rest probe the edges of what the scanner may accept.
_COMMON_NAMES = [b"Server", b"Date", b"Content-Type", b"ETag", b"Cache-Control", b"Vary"]
_NAMES = st.sampled_from(
    _COMMON_NAMES * 3
    + [
        b"Server",
        b"Content-Type",
        b"content-length",
        b"Content-Length",
        b"CONTENT-LENGTH",
        b"Connection",
        b"connection",
        b"Keep-Alive",
        b"Transfer-Encoding",
        b"Upgrade",
        b"TE",
        b"Trailer",
        b"Proxy-Connection",
        b"Set-Cookie",
        b"X-Odd_Name!#",
        b"X Bad",
        b"X-\x80",
        b"",
    ]
)
_GOOD_VALUES = st.sampled_from(
    [b"nginx", b"text/html; charset=utf-8", b'"x"', b"a b", b"max-age=0"]
)
_VALUES = st.one_of(
    _GOOD_VALUES,
    _GOOD_VALUES,
    _GOOD_VALUES,
    st.sampled_from(
        [b"close", b"Keep-Alive", b"upgrade", b"1", b"0", b"12", b"007", b"-1", b"chunked"]
    ),
    st.binary(max_size=12),
    st.text(alphabet=' \t!~az09\x7f\x80\xff\r\n\x00;,="', max_size=10).map(
        lambda s: s.encode("latin-1")
    ),
)
_SEPARATORS = st.sampled_from([b": "] * 12 + [b":", b":  ", b" : ", b":\t"])
_ENDS = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r", b" \r\n"])


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(
        st.sampled_from(
            [b"200"] * 6 + [b"201", b"204", b"302", b"304", b"404", b"503", b"101", b"099"]
        )
    )
    version = draw(st.sampled_from([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]))
    reason = draw(st.sampled_from([b"OK"] * 4 + [b"Not Found", b"", b"Odd\tReason", b"Bad\x00"]))
    head = [version + b" " + status + b" " + reason + draw(_ENDS)]
    lines = [
        draw(_NAMES) + draw(_SEPARATORS) + draw(_VALUES) + draw(_ENDS)
        for _ in range(draw(st.integers(0, 5)))
    ]
    length = draw(st.integers(0, 20))
    if draw(st.integers(0, 4)):
        lines.insert(draw(st.integers(0, len(lines))), b"Content-Length: %d\r\n" % length)
    head += lines
    head.append(draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b""])))
    body = draw(st.binary(max_size=length + 2)) if draw(st.integers(0, 4)) else b"x" * length
    return b"".join(head) + body


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(responses())
def test_every_response_the_scanner_accepts_reads_the_same_in_llhttp(data: bytes) -> None:
    check_response(data)


# -- requests --


def test_a_typical_request_is_scanned() -> None:
    data = (
        b"GET /a/b?c=d&e=%20 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8\r\n"
        b"Accept: */*\r\nKeep-Alive: 300\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    end, method, target, line, host, kept, keep_alive = check_request(data)
    assert keep_alive
    assert (end, method, target, line, host) == (
        len(data),
        b"GET",
        b"/a/b?c=d&e=%20",
        b"GET /a/b?c=d&e=%20 HTTP/1.1\r\n",
        b"example.com:8080",
    )
    assert kept == b"Host: example.com:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n"


@pytest.mark.parametrize(
    ("value", "keep_alive"),
    [(b"close", False), (b"Close", False), (b"CLOSE", False), (b"keep-alive", True),
     (b"Keep-Alive", True)],
)  # fmt: skip
def test_a_plain_connection_header_is_scanned_and_not_forwarded(
    value: bytes, keep_alive: bool
) -> None:
    """A client that opens a connection per request says `Connection: close`: the
    scanner reads it (as llhttp does: check_request holds the two together) and the
    header stays behind, hop-by-hop."""
    data = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: " + value + b"\r\nAccept: */*\r\n\r\n"
    head = check_request(data)
    assert head is not None
    assert head[6] is keep_alive
    assert head[5] == b"Host: a\r\nAccept: */*\r\n"


def test_pipelined_requests_are_scanned_one_after_another() -> None:
    one = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    two = b"HEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    first = scan_request_head(one + two, 0, 65536)
    assert first[0] == len(one)
    second = scan_request_head(one + two, first[0], 65536)
    assert second[:3] == (len(one + two), b"HEAD", b"/2")
    assert scan_request_head(one + two, len(one + two), 65536) is None


def test_a_head_longer_than_the_limit_is_left_to_llhttp() -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert check_request(data, limit=len(data)) is not None
    assert check_request(data, limit=len(data) - 1) is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: abc\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute-form
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x80\r\n\r\n",  # obs-text in a request
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n X-A: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # not complete yet
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",  # hosts that target.host_ok decides
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: %61\r\n\r\n",
    ],
)
def test_what_the_request_scanner_leaves_to_llhttp(data: bytes) -> None:
    assert scan_request_head(data, 0, 65536) is None


_REQUEST_NAMES = st.sampled_from(
    [b"User-Agent", b"Accept", b"Accept-Encoding", b"Cookie", b"Referer"] * 5
    + [
        b"Host",
        b"host",
        b"HOST",
        b"User-Agent",
        b"Accept",
        b"Content-Length",
        b"Transfer-Encoding",
        b"transfer-encoding",
        b"Connection",
        b"Expect",
        b"Upgrade",
        b"X-Forwarded-For",
        b"X-Forwarded-Proto",
        b"X-Forwarded-Host",
        b"Via",
        b"X-Request-Id",
        b"Keep-Alive",
        b"TE",
        b"Cookie",
        b"X Bad",
        b"",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(
        st.sampled_from(
            [b"GET"] * 5
            + [b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"FOO", b"GET "]
        )
    )
    target = draw(
        st.one_of(
            st.sampled_from([b"/", b"/a?b=c", b"/%41"]),
            st.sampled_from([b"/", b"/a?b=c", b"/%41", b"*", b"http://x/", b"/a#b", b""]),
            st.text(alphabet="/az09-._~!$&'()*+,;=:@?%#\"<>\\^`{|} \x00\x7f\x80", max_size=12).map(
                lambda s: b"/" + s.encode("latin-1")
            ),
        )
    )
    version = draw(st.sampled_from([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/1.10", b"HTTP/1.1 "]))
    head = [method + b" " + target + b" " + version + draw(_ENDS)]
    lines = [
        draw(_REQUEST_NAMES) + draw(_SEPARATORS) + draw(_VALUES) + draw(_ENDS)
        for _ in range(draw(st.integers(0, 5)))
    ]
    if draw(st.integers(0, 4)):
        lines.insert(draw(st.integers(0, len(lines))), b"Host: a.example\r\n")
    head += lines
    head.append(draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b""])))
    return b"".join(head) + draw(st.binary(max_size=8))


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(requests())
def test_every_request_the_scanner_accepts_reads_the_same_in_llhttp(data: bytes) -> None:
    check_request(data)
