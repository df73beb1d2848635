"""The admin API against a hostile web page and a careless round trip: foreign Origin,
non-JSON writes, foreign Host (DNS rebinding), and secrets shown redacted then posted
back. Every refused request is checked to have changed nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

API = "/api/v1/ha"
BACKENDS = f"{API}/load-balancer/backends"
UPDATE = f"{API}/config/update"
EVIL = "http://evil.example"


async def snapshot(h) -> dict[str, Any]:
    """What a refused write must leave as it was: members, weights, states, config."""
    return {
        "backends": [
            (b.id, b.weight, str(b.state))
            for pool in h.daemon.runtime.pools.values()
            for b in pool.state.backends.values()
        ],
        "config": h.daemon.config.model_dump(mode="json"),
        "config_version": h.daemon.config_version,
        "reloads": dict(h.daemon.reloads),
    }


def own_origin(h) -> str:
    return h.admin_url  # http://127.0.0.1:PORT: what a browser showing the page sends


async def raw_request(h, head: bytes) -> tuple[int, bytes]:
    """Send `head` as is on a new connection; (status, whole answer)."""
    host, port = h.daemon.admin.addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 20)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]), answer


# -- writes a foreign page can send: refused, nothing changed ------------------------------


async def test_the_text_plain_post_of_a_foreign_page_is_refused(hap, backend):
    h = await hap([backend("web-1")])
    before = await snapshot(h)
    body = '{"pool": "web", "id": "evil-1", "address": "127.0.0.1:1"}'
    r = await h.api(
        "POST", BACKENDS, data=body, headers={"Content-Type": "text/plain", "Origin": EVIL}
    )
    assert r.status == 403, r
    assert r.body["error"] == "cross-origin request" and EVIL in r.body["details"][0]
    assert await snapshot(h) == before


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        (BACKENDS, "text/plain", '{"pool": "web", "id": "evil-1", "address": "127.0.0.1:1"}'),
        (BACKENDS, None, '{"pool": "web", "id": "evil-1", "address": "127.0.0.1:1"}'),
        (UPDATE, "application/x-www-form-urlencoded", "timeouts=1"),
        (UPDATE, "multipart/form-data; boundary=x", '--x\r\n\r\n{"timeouts": {}}\r\n--x--'),
        (UPDATE, "text/plain", '{"admin": {"token": "mine"}}'),
        (f"{BACKENDS}/web-1", "text/plain", '{"state": "maint"}'),
        (f"{API}/failover/trigger", "application/jsonp", '{"pool": "web"}'),
    ],
)
async def test_a_write_that_is_not_json_is_415(hap, backend, path, content_type, body):
    h = await hap([backend("web-1")])
    before = await snapshot(h)
    headers = {"Content-Type": content_type} if content_type else {}
    method = "PATCH" if path.endswith("web-1") else "POST"
    # aiohttp adds application/octet-stream to a bytes body without a Content-Type
    r = await h.api(method, path, data=body.encode(), headers=headers)
    assert r.status == 415, r
    assert r.body["error"] == "unsupported media type"
    assert await snapshot(h) == before


async def test_json_with_a_charset_is_json(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api(
        "PATCH",
        f"{BACKENDS}/web-1",
        data=b'{"weight": 4}',
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert r.status == 200 and h.backend("web-1").weight == 4, r


@pytest.mark.parametrize(
    "origin",
    [
        EVIL,
        "null",
        "http://127.0.0.1:1",  # another port of the same host: another origin
        "https://{own}",  # the same host and port over another scheme
        "http://localhost:{port}",  # a name of this API, but not the one the page used
        "http://{own}/path",  # not an origin at all
    ],
)
async def test_a_foreign_origin_is_refused_even_with_json_and_the_token(hap, backend, origin):
    h = await hap([backend("web-1")], admin={"token": "s3cret"})
    own = own_origin(h).removeprefix("http://")
    origin = origin.format(own=own, port=h.daemon.admin.port)
    before = await snapshot(h)
    body = {"pool": "web", "id": "evil-1", "address": "127.0.0.1:1"}
    r = await h.api("POST", BACKENDS, body, headers={"Origin": origin})
    assert r.status == 403, r
    r = await h.api("GET", f"{API}/config", headers={"Origin": origin})
    assert r.status == 403, r  # nor may it read (it could not, without CORS, anyway)
    assert await snapshot(h) == before


async def test_the_admin_pages_own_origin_may_write(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api(
        "POST",
        BACKENDS,
        {"pool": "web", "id": "web-2", "address": "127.0.0.1:1"},
        headers={"Origin": own_origin(h)},
    )
    assert r.status == 201, r
    r = await h.api(
        "PATCH",
        f"{BACKENDS}/web-1",
        {"weight": 2},
        headers={
            "Origin": f"http://localhost:{h.daemon.admin.port}",
            "Host": f"localhost:{h.daemon.admin.port}",
        },
    )
    assert r.status == 200 and h.backend("web-1").weight == 2, r


# -- Host: DNS rebinding ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9901", "127.0.0.1.evil.example"])
async def test_a_foreign_host_is_misdirected(hap, backend, host):
    h = await hap([backend("web-1")])
    before = await snapshot(h)
    for method, path, body in [
        ("GET", f"{API}/config", None),
        ("GET", "/", None),
        ("PATCH", f"{BACKENDS}/web-1", {"state": "maint"}),
        ("POST", UPDATE, {"timeouts": {"response": "1s"}}),
    ]:
        r = await h.api(method, path, body, headers={"Host": host})
        assert r.status == 421, (method, path, r)
        assert r.body["error"] == "misdirected request"
    assert await snapshot(h) == before


async def test_own_names_are_answered(hap, backend):
    h = await hap([backend("web-1")], admin={"allowed_hosts": ["admin.example"]})
    port = h.daemon.admin.port
    for host in (
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        "LOCALHOST.",
        "admin.example",
        f"Admin.Example.:{port}",
    ):
        r = await h.api("GET", f"{API}/status", headers={"Host": host})
        assert r.status == 200, (host, r)
    for host in ("other.example", "admin.example.evil", "a b", f"127.0.0.1:{port}:1"):
        r = await h.api("GET", f"{API}/status", headers={"Host": host})
        assert r.status == 421, (host, r)


async def test_any_ip_literal_is_a_name_of_this_api(hap, backend):
    # Docker's port publishing: the client's 127.0.0.1:9911 is the container's
    # 172.17.0.2:9901. An IP literal is never a rebound name.
    h = await hap([backend("web-1")], admin={"address": "0.0.0.0:0", "token": "s3cret"})
    port = h.daemon.admin.port
    for host in (f"127.0.0.1:{port}", "0.0.0.0", "172.17.0.2:9901", "[::1]:1", "[fe80::1]"):
        r = await h.api("GET", f"{API}/status", headers={"Host": host})
        assert r.status == 200, (host, r)
    for host in ("172.17.0.2.nip.io", "0x7f000001", "[evil.example]"):
        r = await h.api("GET", f"{API}/status", headers={"Host": host})
        assert r.status == 421, (host, r)


async def test_allowed_hosts_change_with_a_config_update(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api("GET", f"{API}/status", headers={"Host": "admin.example"})
    assert r.status == 421
    r = await h.api("POST", UPDATE, {"admin": {"allowed_hosts": ["admin.example"]}})
    assert r.status == 200, r
    r = await h.api("GET", f"{API}/status", headers={"Host": "admin.example"})
    assert r.status == 200, r


async def test_raw_requests_without_host(hap, backend):
    h = await hap([backend("web-1")])
    before = await snapshot(h)
    body = b'{"state": "maint"}'
    status, _ = await raw_request(
        h,
        b"PATCH /api/v1/ha/load-balancer/backends/web-1 HTTP/1.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (len(body), body),
    )
    assert status == 400  # aiohttp's parser refuses it before the app sees it
    assert await snapshot(h) == before
    # HTTP/1.0 had no Host; no browser sends such a request.
    status, answer = await raw_request(h, b"GET /api/v1/ha/status HTTP/1.0\r\n\r\n")
    assert status == 200, answer[:200]


async def test_two_host_headers_are_misdirected(hap, backend):
    h = await hap([backend("web-1")])
    port = h.daemon.admin.port
    status, _ = await raw_request(
        h,
        b"GET /api/v1/ha/status HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nHost: evil.example\r\n"
        b"Connection: close\r\n\r\n" % port,
    )
    assert status == 400  # aiohttp refuses a repeated Host before the app sees it


# -- the admin API is never opened by a change at runtime -----------------------------------


async def test_a_config_update_cannot_drop_the_token_of_an_exposed_admin_api(hap, backend):
    h = await hap([backend("web-1")], admin={"address": "0.0.0.0:0", "token": "s3cret"})
    before = await snapshot(h)
    r = await h.api("POST", UPDATE, {"admin": {"token": None}})
    assert r.status == 400, r
    assert any("admin.address" in d and "insecure" in d for d in r.body["details"]), r.body
    after = await snapshot(h)
    assert after["config"] == before["config"] and after["config_version"] == 1
    assert (await h.api("PATCH", f"{BACKENDS}/web-1", {"weight": 2}, token=None)).status == 401


# -- secrets: shown redacted, kept when posted back as shown --------------------------------


async def fetch_config(h) -> dict[str, Any]:
    return (await h.get(f"{API}/config"))["config"]


async def test_the_documented_round_trip_keeps_the_token(hap, backend):
    h = await hap([backend("web-1")], admin={"token": "s3cret"})
    shown = await fetch_config(h)
    assert shown["admin"]["token"] == "<redacted>"
    shown["timeouts"]["response"] = "7s"  # the edit the operator came to make
    r = await h.api("POST", f"{UPDATE}?mode=replace", shown)
    assert r.status == 200 and r.body["changed"] is True, r
    assert h.daemon.config.admin.token == "s3cret"
    assert h.daemon.config.timeouts.response == 7.0
    r = await h.api("PATCH", f"{BACKENDS}/web-1", {"weight": 2}, token="<redacted>")
    assert r.status == 401, r
    r = await h.api("PATCH", f"{BACKENDS}/web-1", {"weight": 2}, token="s3cret")
    assert r.status == 200, r
    # merge mode too, and an unedited document changes nothing
    r = await h.api("POST", UPDATE, {"admin": {"token": "<redacted>"}})
    assert r.status == 200 and r.body["changed"] is False, r
    assert h.daemon.config.admin.token == "s3cret"


async def test_every_secret_of_the_config_survives_the_round_trip(hap, backend):
    b1 = backend("web-1")
    secrets = {
        "redis_url": "redis://:redis-s3cret@127.0.0.1:6379/1",
        "check_password": "check-s3cret",
        "authorization": "Basic Y2hlY2s6czNjcmV0",
    }
    checks = [
        {"type": "tcp", "interval": "1h"},
        {
            "type": "http",
            "interval": "1h",
            "path": "/echo",
            "headers": {"Authorization": secrets["authorization"]},
        },
        {"type": "redis", "interval": "1h", "password": secrets["check_password"]},
    ]
    pools = {"web": {"backends": [b1.config()], "health_checks": checks}}
    h = await hap(
        pools=pools,
        admin={"token": "s3cret"},
        extra={"cluster": {"redis_url": secrets["redis_url"]}},
    )
    raw = await h.api("GET", f"{API}/config")
    for value in (*secrets.values(), "s3cret"):
        assert value not in raw.headers.get("Content-Type", "") + str(raw.body)
    shown = raw.body["config"]
    assert shown["cluster"]["redis_url"] == "redis://:<redacted>@127.0.0.1:6379/1"
    before = h.daemon.config.model_dump(mode="json")
    r = await h.api("POST", f"{UPDATE}?mode=replace", shown)
    assert r.status == 200 and r.body["changed"] is False, r
    assert h.daemon.config.model_dump(mode="json") == before

    # An edited URL whose password stayed redacted: the password is not sent elsewhere.
    shown["cluster"]["redis_url"] = "redis://:<redacted>@127.0.0.2:6379/1"
    r = await h.api("POST", f"{UPDATE}?mode=replace", shown)
    assert r.status == 400, r
    assert any("cluster.redis_url" in d for d in r.body["details"]), r.body
    assert h.daemon.config.model_dump(mode="json") == before
    assert h.daemon.config_version == 1


async def test_a_placeholder_with_no_running_secret_is_refused(hap, backend):
    h = await hap([backend("web-1")])  # no token
    before = await snapshot(h)
    r = await h.api("POST", UPDATE, {"admin": {"token": "<redacted>"}})
    assert r.status == 400, r
    assert any("admin.token" in d for d in r.body["details"]), r.body
    after = await snapshot(h)
    assert after["config"] == before["config"] and after["config_version"] == 1
    assert h.daemon.config.admin.token is None
