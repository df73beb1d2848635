"""TLS termination on a listener, with certificates made by trustme."""

from __future__ import annotations

import ssl

import pytest

pytestmark = pytest.mark.timeout(60)


def test_https_request_through_tls_listener(backend, daemon, tls_files):
    b1 = backend()
    d = daemon([b1], tls=(tls_files.cert, tls_files.key))
    with d.tls_conn(tls_files.client_context) as c:
        r = c.request("GET", "/echo?tls=1", {"X-Forwarded-Proto": "http"})
        assert r.status == 200, r
        assert r.json()["target"] == "/echo?tls=1"
        r = c.request("POST", "/echo", body=b"over tls")  # keep-alive over TLS
        assert r.status == 200, r
        assert r.json()["body"] == "over tls"
    first, second = b1.wait_for_requests(2)
    assert first.header_all("X-Forwarded-Proto") == ["https"]
    assert second.header_all("X-Forwarded-Proto") == ["https"]
    assert second.body == b"over tls"


def test_tls_listener_presents_the_configured_certificate(backend, daemon, tls_files):
    b1 = backend()
    d = daemon([b1], tls=(tls_files.cert, tls_files.key))
    untrusting = ssl.create_default_context()  # does not trust the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        d.tls_conn(untrusting)
    with d.tls_conn(tls_files.client_context) as c:
        assert c.request("GET", "/echo").status == 200


def test_plain_http_on_tls_listener_does_not_reach_backend(backend, daemon, tls_files):
    b1 = backend()
    d = daemon([b1], tls=(tls_files.cert, tls_files.key))
    with d.conn() as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: test.local\r\n\r\n")
        assert c.wait_closed(5) or c.buf, "plain HTTP on a TLS port neither closed nor answered"
    with d.tls_conn(tls_files.client_context) as c:
        assert c.request("GET", "/echo?after").status == 200
    assert [r.target for r in b1.requests] == ["/echo?after"]
