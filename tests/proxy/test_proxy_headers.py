"""Unit tests of the header rewriting (haproxyd/proxy/headers.py), without sockets.

`_request` and `_response` feed header pairs through the classification the protocols
do per header callback (`request_kind`/`response_kind`), then through the same helpers
they call when the head is complete.
"""

from __future__ import annotations

import pytest

from haproxyd.proxy import headers


def _request(pairs: list[tuple[str, str]]) -> tuple[list[bytes], headers.RequestMeta]:
    parts: list[bytes] = [b""]
    specials: list[tuple[int, bytes, bytes]] = []
    for n, v in pairs:
        name, value = n.encode(), v.encode()
        kind = headers.request_kind_cached(name)
        if kind is None:
            kind = headers.request_kind(name)
        if kind in (headers.KEEP, headers.HOST):
            parts += (name, headers.SEP, value, headers.CRLF)
        if kind not in (headers.KEEP, headers.DROP):
            specials.append((kind, name, value))
    meta = headers.RequestMeta(specials)
    named = meta.named_by_connection()
    if named:
        headers.drop_named(parts, 1, named)
    return parts, meta


def _head(pairs, **kw):
    parts, meta = _request(pairs)
    args = {
        "client_ip": b"192.0.2.9",
        "proto": b"http",
        "request_id": b"rid-1",
        "framing": b"Content-Length: 0\r\n",
        "default_host": b"127.0.0.1:8080",
        "upgrade": False,
    }
    args.update(kw)
    head = headers.build_request_head(b"GET /x?y=1 HTTP/1.1\r\n", parts, meta, **args)
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
    out = _head(
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
    names = {n for n, _ in out}
    assert not names & {"x-foo", "keep-alive", "te", "proxy-connection", "connection"}
    assert _values(out, "x-keep") == ["yes"]


def test_connection_named_header_in_any_case_and_position_is_dropped():
    out = _head([("X-Foo", "1"), ("Host", "a"), ("connection", "X-FOO"), ("x-foo", "2")])
    assert _values(out, "x-foo") == []
    assert _values(out, "host") == ["a"]


def test_forwarding_headers_appended_and_set():
    out = _head(
        [
            ("Host", "a.example"),
            ("X-Forwarded-For", "203.0.113.1"),
            ("Via", "1.0 fred"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
        ]
    )
    assert _values(out, "x-forwarded-for") == ["203.0.113.1, 192.0.2.9"]
    assert _values(out, "x-forwarded-proto") == ["http"]
    assert _values(out, "x-forwarded-host") == ["a.example"]
    assert len(_values(out, "via")) == 1 and _values(out, "via")[0].startswith("1.0 fred, 1.1 ")
    assert _values(out, "x-request-id") == ["rid-1"]
    assert _values(out, "host") == ["a.example"]


def test_missing_host_gets_the_default():
    out = _head([])
    assert _values(out, "host") == ["127.0.0.1:8080"]
    assert _values(out, "x-forwarded-for") == ["192.0.2.9"]


def test_two_hosts_are_a_bad_request():
    with pytest.raises(headers.BadRequest) as info:
        _request([("Host", "a"), ("Host", "b")])
    assert info.value.status == 400


def test_connection_naming_host_is_a_bad_request():
    with pytest.raises(headers.BadRequest) as info:
        _request([("Host", "a"), ("Connection", "host")])
    assert info.value.status == 400


def test_expect_other_than_100_continue_is_refused():
    with pytest.raises(headers.BadRequest) as info:
        _request([("Host", "a"), ("Expect", "something")])
    assert info.value.status == 417
    assert _request([("Host", "a"), ("Expect", "100-Continue")])[1].expect_continue


def test_client_request_id_is_collected():
    _, meta = _request([("X-Request-ID", "abc"), ("X-Request-Id", "second")])
    assert meta.xrid == b"abc"


def test_framing_headers_are_read_not_forwarded():
    parts, meta = _request([("Host", "a"), ("Content-Length", "2"), ("X-Keep", "1")])
    assert meta.content_length == b"2"
    assert b"Content-Length" not in parts and b"X-Keep" in parts
    _, meta = _request([("Host", "a"), ("Transfer-Encoding", "chunked")])
    assert meta.chunked


def test_response_kinds():
    kinds = {
        name: headers.response_kind(name.encode())
        for name in (
            "Content-Length",
            "connection",
            "Keep-Alive",
            "Transfer-Encoding",
            "Upgrade",
            "Trailer",
            "X-Keep",
            "Set-Cookie",
        )
    }
    assert kinds["Content-Length"] == headers.CONTENT_LENGTH
    assert kinds["connection"] == headers.CONNECTION
    assert kinds["Transfer-Encoding"] == headers.TRANSFER_ENCODING
    assert kinds["Upgrade"] == headers.UPGRADE
    assert kinds["Keep-Alive"] == kinds["Trailer"] == headers.DROP
    assert kinds["X-Keep"] == kinds["Set-Cookie"] == headers.KEEP
    # The cache answers for a spelling once seen, with the same verdict.
    assert headers.response_kind_cached(b"Keep-Alive") == headers.DROP


def test_connection_named_ignores_plain_options():
    assert headers.connection_named([b"keep-alive", b"Close"]) == set()
    assert headers.connection_named([b"Keep-Alive, X-Secret ,upgrade"]) == {b"x-secret"}


def test_drop_named_keeps_order_of_the_rest():
    parts = [b"HEAD", b"A", b": ", b"1", b"\r\n", b"X-S", b": ", b"2", b"\r\n"]
    parts += [b"B", b": ", b"3", b"\r\n"]
    headers.drop_named(parts, 1, {b"x-s"})
    assert parts == [b"HEAD", b"A", b": ", b"1", b"\r\n", b"B", b": ", b"3", b"\r\n"]


def test_header_in_block_finds_the_first_value_of_a_name_in_any_case():
    block = b"Host: a\r\nX-User-Id: u1\r\nx-user-id: u2\r\nX-User: u3\r\nAccept: */*\r\n"
    assert headers.header_in_block(block, b"x-user-id") == b"u1"
    assert headers.header_in_block(block, b"x-user") == b"u3"  # not a prefix of another
    assert headers.header_in_block(block, b"accept") == b"*/*"  # the last line
    assert headers.header_in_block(block, b"host") == b"a"  # the first
    assert headers.header_in_block(block, b"user-id") is None
    assert headers.header_in_block(b"", b"host") is None
