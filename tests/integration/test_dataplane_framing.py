"""Request framing is rebuilt from the proxy's own parse for every method, so a body on
a GET (unusual but legal) reaches the backend framed, never as loose bytes that the
backend would read as the start of a next request."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(30)


def test_chunked_body_on_a_get_is_forwarded_framed(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1])
    with d.conn() as c:
        c.send(
            b"GET /echo/with-body HTTP/1.1\r\nHost: test.local\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"GET /echo/next HTTP/1.1\r\nHost: test.local\r\n\r\n"
        )
        first = c.read_response()
        second = c.read_response()
    assert first.status == 200 and second.status == 200
    targets = [r.target for r in b1.requests]
    assert targets == ["/echo/with-body", "/echo/next"], targets
    assert b1.requests[0].body == b"abc"
