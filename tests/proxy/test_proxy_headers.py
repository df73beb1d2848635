"""Unit tests of the header rewriting (haproxyd/proxy/headers.py), without sockets."""

from __future__ import annotations

import pytest

headers = pytest.importorskip("haproxyd.proxy.headers")


def _parse(pairs):
    return headers.RequestHeaders([(n.encode(), v.encode()) for n, v in pairs])


def _head(parsed, **kw):
    args = {
        "client_ip": b"192.0.2.9",
        "proto": b"http",
        "request_id": b"rid-1",
        "framing": b"Content-Length: 0\r\n",
        "default_host": b"127.0.0.1:8080",
        "upgrade": False,
    }
    args.update(kw)
    head = headers.build_request_head(b"GET", b"/x?y=1", parsed, **args)
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /x?y=1 HTTP/1.1"
    assert head.endswith(b"\r\n\r\n")
    out = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b": ")
            out.append((name.decode().lower(), value.decode()))
    return out


def _values(pairs, name):
    return [v for n, v in pairs if n == name]


def test_hop_by_hop_and_connection_named_headers_are_dropped():
    parsed = _parse(
        [
            ("Host", "a.example"),
            ("Connection", "keep-alive, X-Foo"),
            ("X-Foo", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Keep", "yes"),
        ]
    )
    out = _head(parsed)
    names = {n for n, _ in out}
    assert not names & {"x-foo", "keep-alive", "te", "proxy-connection"}
    assert _values(out, "x-keep") == ["yes"]
    assert all("x-foo" not in v.lower() for v in _values(out, "connection"))


def test_forwarding_headers_appended_and_set():
    parsed = _parse(
        [
            ("Host", "a.example"),
            ("X-Forwarded-For", "203.0.113.1"),
            ("Via", "1.0 fred"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
        ]
    )
    out = _head(parsed)
    assert _values(out, "x-forwarded-for") == ["203.0.113.1, 192.0.2.9"]
    assert _values(out, "x-forwarded-proto") == ["http"]
    assert _values(out, "x-forwarded-host") == ["a.example"]
    assert len(_values(out, "via")) == 1 and _values(out, "via")[0].startswith("1.0 fred, 1.1 ")
    assert _values(out, "x-request-id") == ["rid-1"]
    assert _values(out, "host") == ["a.example"]


def test_missing_host_gets_the_default():
    out = _head(_parse([]))
    assert _values(out, "host") == ["127.0.0.1:8080"]
    assert _values(out, "x-forwarded-for") == ["192.0.2.9"]


def test_two_hosts_are_a_bad_request():
    with pytest.raises(headers.BadRequest) as info:
        _parse([("Host", "a"), ("Host", "b")])
    assert info.value.status == 400


def test_client_request_id_is_collected():
    parsed = _parse([("X-Request-ID", "abc")])
    assert parsed.xrid == b"abc"


def test_response_hop_by_hop_headers_are_dropped():
    # the result starts with (kept headers, backend Content-Length, ...)
    kept, content_length, *_ = headers.filter_response_headers(
        [
            (b"Content-Length", b"2"),
            (b"Connection", b"X-Secret"),
            (b"X-Secret", b"s"),
            (b"Keep-Alive", b"timeout=9"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Keep", b"yes"),
        ],
        keep_upgrade=False,
    )
    assert content_length == b"2"
    assert [n.lower() for n, _ in kept] == [b"x-keep"]


def test_upgrade_kept_for_a_101():
    kept, *_ = headers.filter_response_headers(
        [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")], keep_upgrade=True
    )
    assert (b"Upgrade", b"websocket") in kept
