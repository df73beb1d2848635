"""Key extraction (keys.py) and the ip_hash / url_hash lookups built on it."""

from __future__ import annotations

from collections import Counter

import pytest
from balancer_helpers import Ctx, distinct_ctxs, make_pool

from haproxyd.balancer.keys import ClientAddress, make_key, parse_hash_key


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("ip", ("ip", "")),
        (" URL ", ("url", "")),
        ("header:X-User-Id", ("header", "X-User-Id")),
        ("cookie:session", ("cookie", "session")),
    ],
)
def test_parse_hash_key(spec: str, parsed: tuple[str, str]) -> None:
    assert parse_hash_key(spec) == parsed


@pytest.mark.parametrize("spec", ["", "ip:x", "header:", "cookie", "query:a", "header:a b"])
def test_parse_hash_key_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="hash_key"):
        parse_hash_key(spec)


def test_ip_key_is_the_peer_without_trusted_proxies() -> None:
    key = make_key("ip")
    assert key(Ctx("203.0.113.7")) == b"203.0.113.7"
    assert key(Ctx("2001:db8::1")) == b"2001:db8::1"
    assert key(Ctx("::ffff:203.0.113.7")) == b"203.0.113.7"  # IPv4-mapped folds to v4
    # X-Forwarded-For from an untrusted peer is ignored (anyone can send it).
    assert key(Ctx("203.0.113.7", headers={b"x-forwarded-for": b"1.2.3.4"})) == b"203.0.113.7"
    assert key(Ctx("")) is None


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("10.0.0.5", b"198.51.100.9", "198.51.100.9"),
        ("10.0.0.5", b"198.51.100.9, 10.0.0.7", "198.51.100.9"),  # trusted hops skipped
        ("10.0.0.5", b"6.6.6.6, 198.51.100.9, 10.0.0.7", "198.51.100.9"),  # spoofed left part
        ("10.0.0.5", b"10.0.0.8, 10.0.0.7", "10.0.0.8"),  # all trusted: the leftmost
        ("10.0.0.5", b"198.51.100.9:5555", "198.51.100.9"),  # port stripped
        ("10.0.0.5", b"[2001:db8::7]:443", "2001:db8::7"),
        ("10.0.0.5", b"2001:DB8:0:0::7", "2001:db8::7"),  # canonical form
        ("10.0.0.5", b"::ffff:198.51.100.9", "198.51.100.9"),
        ("10.0.0.5", b"unknown, 10.0.0.7", "10.0.0.7"),  # garbage ends the walk
        ("10.0.0.5", b"", "10.0.0.5"),
        ("fd00::1", b"198.51.100.9", "198.51.100.9"),  # IPv6 trusted range
        ("203.0.113.1", b"198.51.100.9", "203.0.113.1"),  # peer not trusted
    ],
)
def test_ip_key_through_trusted_proxies(peer: str, xff: bytes, client: str) -> None:
    key = ClientAddress(["10.0.0.0/8", "fd00::/8"])
    ctx = Ctx(peer, headers={b"x-forwarded-for": xff} if xff else None)
    assert key.address(ctx) == client
    assert key.address(ctx) == client  # the cached path gives the same answer


def test_invalid_trusted_proxies_rejected() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        ClientAddress(["10.0.0.0/33"])


def test_url_key() -> None:
    with_query = make_key("url")
    without = make_key("url", hash_query=False)
    assert with_query(Ctx(url=b"/a/b?x=1")) == b"/a/b?x=1"
    assert without(Ctx(url=b"/a/b?x=1")) == b"/a/b"
    assert with_query(Ctx(url=b"http://example.com/a?x=1")) == b"/a?x=1"
    assert with_query(Ctx(url=b"http://example.com")) == b"/"
    assert with_query(Ctx(url=b"*")) == b"*"


def test_header_and_cookie_keys() -> None:
    header = make_key("header:X-User-Id")
    cookie = make_key("cookie:sid")
    assert header(Ctx(headers={b"X-User-Id": b" 42 "})) == b"42"
    assert header(Ctx(headers={b"x-user-id": b""})) is None
    assert header(Ctx()) is None
    assert cookie(Ctx(headers={b"cookie": b"a=1; sid=abc; b=2"})) == b"abc"
    assert cookie(Ctx(headers={b"cookie": b'sid="q"'})) == b"q"
    assert cookie(Ctx(headers={b"cookie": b"xsid=abc"})) is None
    assert cookie(Ctx(headers={b"cookie": b"sid="})) is None
    assert cookie(Ctx()) is None


def test_ip_hash_sticks_each_client_v4_and_v6() -> None:
    pool = make_pool("ip_hash", (1, 1, 1, 1))
    for ip in ("198.51.100.1", "2001:db8::42", "::ffff:198.51.100.1"):
        assert len({pool.select(Ctx(ip)).id for _ in range(20)}) == 1
    assert pool.select(Ctx("::ffff:198.51.100.1")) is pool.select(Ctx("198.51.100.1"))


def test_ip_hash_uses_the_forwarded_client_behind_a_trusted_proxy() -> None:
    pool = make_pool("ip_hash", [1] * 8, trusted_proxies=["10.0.0.0/8"])
    clients = [f"198.51.100.{i}" for i in range(50)]
    for client in clients:
        direct = pool.select(Ctx(client))
        via_proxy = {
            pool.select(Ctx(f"10.0.0.{p}", headers={b"x-forwarded-for": client.encode()}))
            for p in range(1, 6)
        }
        assert via_proxy == {direct}


def test_url_hash_with_and_without_query() -> None:
    pool = make_pool("url_hash", [1] * 5)
    spread = Counter(pool.select(Ctx(url=b"/img/logo.png?v=%d" % i)).id for i in range(500))
    assert len(spread) == 5  # the query changes the key
    pool = make_pool("url_hash", [1] * 5, hash_query=False)
    same = {pool.select(Ctx(url=b"/img/logo.png?v=%d" % i)).id for i in range(500)}
    assert len(same) == 1


@pytest.mark.parametrize("algorithm", ["ip_hash", "url_hash"])
def test_map_hash_full_backend_probes_another_deterministically(algorithm: str) -> None:
    pool = make_pool(algorithm, (1, 1, 1))
    ctxs = distinct_ctxs(300)
    home = {id(ctx): pool.select(ctx) for ctx in ctxs}
    a = pool.backends["a"]
    a.max_connections = 1
    pool.refresh()
    pool.on_start(a)
    for ctx in ctxs:
        chosen = pool.select(ctx)
        assert chosen is not a
        assert pool.select(ctx) is chosen  # still deterministic per key
        if home[id(ctx)] is not a:
            assert chosen is home[id(ctx)]  # others keep their backend
