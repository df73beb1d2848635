"""Header rewriting (SPEC §3): X-Forwarded-*, Via, X-Request-ID; hop-by-hop removal in
both directions, including the headers named in `Connection`."""

from __future__ import annotations

import re

import pytest
from helpers.backends import RawReply

pytestmark = pytest.mark.timeout(60)


def _one_request(backend, daemon, headers, target="/echo"):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        r = c.request("GET", target, headers)
    assert r.status == 200, r
    return b1.wait_for_requests(1)[0], r


def test_forwarding_headers_are_added(backend, daemon):
    rec, _ = _one_request(backend, daemon, {"Host": "shop.example:8443"})
    assert rec.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert rec.header_all("X-Forwarded-Proto") == ["http"]
    assert rec.header_all("X-Forwarded-Host") == ["shop.example:8443"]
    via = rec.header("Via")
    assert via and re.fullmatch(r"1\.1 \S+( \(.*\))?", via), f"Via: {via!r}"
    assert rec.header("X-Request-ID"), rec.headers


def test_x_forwarded_for_is_appended_to(backend, daemon):
    rec, _ = _one_request(
        backend,
        daemon,
        [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.1, 10.0.0.2")],
    )
    assert rec.header("X-Forwarded-For") == "203.0.113.7, 198.51.100.1, 10.0.0.2, 127.0.0.1"


def test_via_is_appended_to(backend, daemon):
    rec, _ = _one_request(backend, daemon, {"Via": "1.0 fred"})
    via = rec.header("Via") or ""
    assert via.startswith("1.0 fred, 1.1 "), f"Via: {via!r}"


def test_client_cannot_spoof_forwarded_proto_or_host(backend, daemon):
    rec, _ = _one_request(
        backend,
        daemon,
        {"Host": "real.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"},
    )
    assert rec.header_all("X-Forwarded-Proto") == ["http"]
    assert rec.header_all("X-Forwarded-Host") == ["real.example"]


def test_request_id_added_when_absent_and_unique(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn() as c:
        for _ in range(3):
            assert c.request("GET", "/echo").status == 200
    ids = [r.header_all("X-Request-ID") for r in b1.requests]
    assert all(len(i) == 1 and i[0] for i in ids), ids
    assert len({i[0] for i in ids}) == 3, f"request ids not unique: {ids}"


def test_request_id_kept_when_present(backend, daemon):
    rec, _ = _one_request(backend, daemon, {"X-Request-ID": "client-chosen-42"})
    assert rec.header_all("X-Request-ID") == ["client-chosen-42"]


def test_hop_by_hop_request_headers_are_stripped(backend, daemon):
    rec, _ = _one_request(
        backend,
        daemon,
        [
            ("Connection", "keep-alive, X-Foo"),
            ("Connection", "x-bar"),
            ("X-Foo", "1"),
            ("X-Bar", "2"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("X-End-To-End", "kept"),
        ],
    )
    names = {n.lower() for n, _ in rec.headers}
    for gone in ("x-foo", "x-bar", "keep-alive", "proxy-connection", "te", "trailer"):
        assert gone not in names, f"{gone} reached the backend: {rec.headers}"
    for value in rec.header_all("Connection"):
        tokens = {t.strip().lower() for t in value.split(",")}
        assert not tokens & {"x-foo", "x-bar"}, f"client's Connection forwarded: {value!r}"
    assert rec.header("X-End-To-End") == "kept"


def test_hop_by_hop_response_headers_are_stripped(raw_backend, daemon):
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret\r\nX-Secret: s3cr3t\r\n"
        b"Keep-Alive: timeout=99\r\nProxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\nok"
    )
    rb = raw_backend(lambda rec: RawReply(reply, close=False))
    d = daemon([rb])
    with d.conn() as c:
        r = c.request("GET", "/hop")
        assert r.status == 200, r
        assert r.body == b"ok"
        names = {n.lower() for n, _ in r.headers}
        assert "x-secret" not in names, r
        assert "proxy-connection" not in names, r
        assert "timeout=99" not in (r.header("Keep-Alive") or ""), r
        assert not r.has_token("Connection", "x-secret"), r
        assert r.header("X-End-To-End") == "kept"
        assert c.request("GET", "/hop").status == 200


def test_end_to_end_headers_and_target_pass_unchanged(backend, daemon):
    target = "/echo/a%2Fb/%7Euser?q=1&q=2&x=%20y"
    headers = [
        ("Accept", "text/html, */*;q=0.1"),
        ("Cookie", "a=1; b=2"),
        ("X-Multi", "one"),
        ("X-Multi", "two"),
        ("Authorization", "Bearer t0ken"),
    ]
    rec, r = _one_request(backend, daemon, headers, target=target)
    assert rec.target == target
    assert r.json()["target"] == target
    assert rec.header_all("X-Multi") == ["one", "two"]
    assert rec.header("Cookie") == "a=1; b=2"
    assert rec.header("Authorization") == "Bearer t0ken"
    assert rec.header("Accept") == "text/html, */*;q=0.1"


_RID = re.compile(rb"(X-Request-ID: )[^\r]*")


def test_common_and_general_request_paths_build_the_same_head(raw_backend, daemon):
    """A request whose only special header is Host takes the proxy's short path; one
    with a Content-Length (and an unknown extension in Connection) takes the general
    one. Apart from that framing, the backend must see the same head from both."""
    rb = raw_backend(lambda rec: RawReply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False))
    d = daemon([rb])
    with d.conn() as c:
        plain = [("Host", "shop.example"), ("X-A", "1"), ("Accept", "*/*")]
        assert c.request("GET", "/p?q=1", plain, host=None).status == 200
        general = [*plain, ("Content-Length", "0"), ("Connection", "keep-alive, X-Gone")]
        assert c.request("GET", "/p?q=1", [*general, ("X-Gone", "x")], host=None).status == 200
    short, long = (rec.raw for rec in rb.wait_for_requests(2))
    long = long.replace(b"Content-Length: 0\r\n", b"")
    assert b"X-Gone" not in long
    assert _RID.sub(rb"\1-", short) == _RID.sub(rb"\1-", long), (short, long)
    assert short.startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: shop.example\r\nX-A: 1\r\n")


def test_common_and_general_response_paths_build_the_same_head(raw_backend, daemon):
    """A response framed by Content-Length alone takes the proxy's short path; one that
    also names a header in Connection takes the general one: the client must see the
    same head from both, once that header is gone."""
    replies = iter(
        [
            b"HTTP/1.1 201 Made\r\nX-B: 2\r\nContent-Length: 2\r\nServer: raw\r\n\r\nok",
            b"HTTP/1.1 201 Made\r\nX-B: 2\r\nContent-Length: 2\r\nConnection: X-Gone\r\n"
            b"X-Gone: x\r\nServer: raw\r\n\r\nok",
        ]
    )
    rb = raw_backend(lambda rec: RawReply(next(replies), close=False))
    d = daemon([rb])
    with d.conn() as c:
        short = c.request("GET", "/r")
        long = c.request("GET", "/r")
    assert (short.status, short.reason, short.body) == (long.status, long.reason, long.body)
    assert (short.status, short.reason, short.body) == (201, "Made", b"ok")
    assert _RID.sub(rb"\1-", short.raw_head) == _RID.sub(rb"\1-", long.raw_head), (
        short.raw_head,
        long.raw_head,
    )
