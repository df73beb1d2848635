"""A differential property test of the request side (issue 18's guard): generated
request streams, each sent in one write to a running daemon, against a model of what a
strict proxy does with them.

A stream is a few requests, each valid (methods known to llhttp or not, origin- or
absolute-form, bodies framed by Content-Length or chunked with trailers, an upgrade the
backend declines) or carrying one defect (ambiguous framing, a bad chunk, obs-fold, a
bad Host or target, a bare CR, an unsupported version). The model: the requests before
the first defect are answered in order, each reaching the backend once, parsed and
rewritten (its method, origin-form target, Host, body, the proxy's Via and
X-Forwarded-For, no denied trailer); the defect gets the proxy's 4xx/5xx and the close;
nothing after it reaches the backend. Every stream must match the model exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from helpers.asserts import assert_all_rewritten
from helpers.backends import RawReply, Recorded
from helpers.http1 import ProtocolError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Spec:
    """One generated request: its bytes, and what the backend must see of it (None
    when it is defective: then `status` is what the client must get)."""

    data: bytes
    method: str | None = None
    target: str | None = None
    host: str | None = None
    body: bytes = b""
    status: int = 200


METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE", "FROB", "MKCOL"]
HOSTS = ["a.example", "B.example:8080", "127.0.0.1", "[::1]:81"]
PATHS = ["/", "/x", "/a/b?c=d", "/%61pi/x", "/x/../y"]


@st.composite
def valid_request(draw: st.DrawFn) -> Spec:
    method = draw(st.sampled_from(METHODS))
    path = draw(st.sampled_from(PATHS))
    host = draw(st.sampled_from(HOSTS))
    absolute = draw(st.booleans())
    target = f"http://{host}{path}" if absolute else path
    sent_host = draw(st.sampled_from(HOSTS)) if absolute else host
    headers = [f"Host: {sent_host}"]
    headers += draw(st.lists(st.sampled_from(["X-A: 1", "Accept: */*", "X-Empty: "]), max_size=2))
    body = draw(st.binary(max_size=40)) if method in ("POST", "PUT", "FROB") else b""
    framing = draw(st.sampled_from(["length", "chunked", "upgrade"]))
    if framing == "upgrade" and not body:
        headers += ["Connection: Upgrade", "Upgrade: websocket"]
        tail = b""
    elif framing == "chunked":
        headers.append("Transfer-Encoding: chunked")
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:7], body[7:]) if p)
        denied = b"Via: 1.0 x\r\nX-Forwarded-For: 6\r\n"
        trailer = draw(st.sampled_from([b"", b"X-Sum: 1\r\n", denied]))
        tail = chunks + b"0\r\n" + trailer + b"\r\n"
    else:
        if body or draw(st.booleans()):
            headers.append(f"Content-Length: {len(body)}")
        tail = body
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return Spec(head.encode() + tail, method, path, host, body)


DEFECTS = [
    (b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nz",
     400),
    (b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET /d HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    (b"GET /d HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET /d HTTP/1.1\r\nHost: \r\n\r\n", 400),
    (b"GET /d#f HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /d HTTP/1.1\r\n\r\n", 400),
    (b"GET /d HTTP/1.1\nHost: x\r\n\r\n", 400),
    (b"\rGET /d HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /d HTTP/1.3\r\nHost: x\r\n\r\n", 505),
    (b"G(T /d HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nConnection: close\r\n"
     b"\r\n", 400),
    (b"GET /d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
     b"Content-Length: 1\r\n\r\nz", 400),
]  # fmt: skip

defective_request = st.sampled_from(DEFECTS).map(lambda d: Spec(d[0], status=d[1]))
streams = st.tuples(
    st.lists(valid_request(), min_size=0, max_size=4),
    st.one_of(st.none(), defective_request),
    st.lists(valid_request(), max_size=2),
).filter(
    # A bare CR before a request line is refused when a read starts with it; llhttp
    # skips one between two requests in the same read, where the proxy cannot see it
    # (docs/edge-refusals.md): the model asks it of a stream's first request only.
    lambda stream: not (stream[0] and stream[1] and stream[1].data[:1] == b"\r")
)


def echo(rec: Recorded) -> RawReply:
    body = rec.target.encode()
    return RawReply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), False)


@pytest.fixture
def proxied(raw_backend, daemon):
    rb = raw_backend(echo)
    return daemon([rb]), rb


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams)
def test_request_streams_match_the_model(proxied, stream):
    d, rb = proxied
    before, defect, after = stream
    rb.clear()
    data = b"".join(s.data for s in before) + (defect.data if defect else b"")
    data += b"".join(s.data for s in after)
    answered = [*before, defect] if defect else before + after
    forwarded = before if defect else before + after
    statuses = []
    with d.conn(timeout=10) as c:
        c.send(data)
        for _ in answered:
            try:
                statuses.append(c.read_response().status)
            except ProtocolError:
                break
        if defect:
            assert c.wait_closed(10), "connection left open after a refusal"
    assert statuses == [s.status for s in answered], (data, statuses)
    got = rb.wait_for_requests(len(forwarded))
    assert len(got) == len(forwarded), (data, got)
    for spec, rec in zip(forwarded, got, strict=True):
        assert (rec.method, rec.target, rec.body) == (spec.method, spec.target, spec.body), (
            data,
            rec.raw,
        )
        assert rec.header_all("Host") == [spec.host], rec.raw
        assert all(name in ("X-Sum",) for name, _ in rec.trailers), rec.raw
    assert_all_rewritten(got)
