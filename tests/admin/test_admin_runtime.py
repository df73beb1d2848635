"""Runtime changes through the admin API: add, weight, drain/maint/ready, remove,
failover trigger and config/update, each with its errors, and never a partial change."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from admin_helpers import poll

pytestmark = pytest.mark.timeout(60)

BACKENDS = "/api/v1/ha/load-balancer/backends"


async def spread(h, n: int, path: str = "/echo") -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(n):
        r = await h.proxy(path)
        assert r.status == 200, r
        seen[r.body] = seen.get(r.body, 0) + 1
    return seen


# -- add ---------------------------------------------------------------------------------


async def test_add_backend_takes_traffic(hap, backend):
    h = await hap([backend("web-1")])
    new = backend("web-9")
    r = await h.api("POST", BACKENDS, {"pool": "web", **new.config(), "weight": 2})
    assert r.status == 201, r
    assert r.body["id"] == "web-9" and r.body["pool"] == "web" and r.body["weight"] == 2
    assert r.body["state"] == "up" and r.body["selectable"] is True
    assert "web-9" in (await spread(h, 6))
    listed = await h.get(BACKENDS)
    assert {b["id"] for b in listed["backends"]} == {"web-1", "web-9"}


async def test_add_backend_in_maint_takes_no_traffic(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api(
        "POST", BACKENDS, {"pool": "web", **backend("web-9").config(), "state": "maint"}
    )
    assert r.status == 201, r
    assert r.body["state"] == "maint" and r.body["selectable"] is False
    assert await spread(h, 4) == {"web-1": 4}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"id": "x1", "address": "127.0.0.1:1"}, "pool"),
        ({"pool": "", "id": "x1", "address": "127.0.0.1:1"}, "pool"),
        ({"pool": "web", "address": "127.0.0.1:1"}, "id"),
        ({"pool": "web", "id": "", "address": "127.0.0.1:1"}, "id"),
        ({"pool": "web", "id": "a/b", "address": "127.0.0.1:1"}, "id"),
        ({"pool": "web", "id": "../web-1", "address": "127.0.0.1:1"}, "id"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:0"}, "port"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:65536"}, "port"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:99999"}, "port"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:-1"}, "port"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:1-5"}, "port"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:٨٠"}, "port"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:"}, "port"),
        ({"pool": "web", "id": "x1", "address": "no-port"}, "address"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:1", "weight": 5000}, "weight"),
        ({"pool": "web", "id": "x 1", "address": "127.0.0.1:1"}, "id"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:1", "bogus": 1}, "bogus"),
        ({"pool": "web", "id": "x1", "address": "127.0.0.1:1", "state": "up"}, "state"),
        ({"pool": 5, "id": "x1", "address": "127.0.0.1:1"}, "pool"),
    ],
)
async def test_add_backend_rejects_bad_input_with_400(hap, backend, body, needle):
    h = await hap([backend("web-1")])
    r = await h.api("POST", BACKENDS, body)
    assert r.status == 400, r
    assert r.body["error"] == "invalid backend"
    assert any(needle in d for d in r.body["details"]), r.body
    assert [b["id"] for b in (await h.get(BACKENDS))["backends"]] == ["web-1"]


async def test_add_backend_to_an_unknown_pool_is_404(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api("POST", BACKENDS, {"pool": "nope", "id": "x1", "address": "127.0.0.1:1"})
    assert r.status == 404, r
    assert r.body["error"] == "no such pool" and "nope" in r.body["details"][0]
    assert [b["id"] for b in (await h.get(BACKENDS))["backends"]] == ["web-1"]
    assert h.daemon.runtime.find_backend("x1") is None


@pytest.mark.parametrize("path_id", ["a%2Fb", "web-1%2F..", "%20", "web-1%00"])
async def test_changing_an_id_no_backend_has_is_404(hap, backend, path_id):
    h = await hap([backend("web-1")])
    for method, body in (("PATCH", {"state": "maint"}), ("DELETE", None), ("GET", None)):
        r = await h.api(method, f"{BACKENDS}/{path_id}", body)
        assert r.status == 404, (method, r)
    b = h.backend("web-1")
    assert (b.weight, str(b.state)) == (1, "up")


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_add_backend_rejects_a_body_that_is_not_a_json_object(hap, backend, raw):
    h = await hap([backend("web-1")])
    r = await h.api("POST", BACKENDS, data=raw, headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    assert set(r.body) == {"error", "details"}


async def test_add_backend_with_a_duplicate_id_is_409(hap, backend):
    pools = {
        "web": {"backends": [backend("web-1").config()]},
        "api": {"backends": [backend("api-1").config()]},
    }
    h = await hap(pools=pools)
    r = await h.api("POST", BACKENDS, {"pool": "web", "id": "api-1", "address": "127.0.0.1:1"})
    assert r.status == 409, r
    assert r.body["error"] == "duplicate backend id"
    assert "api" in r.body["details"][0]


# -- weight and state --------------------------------------------------------------------


def registered(algorithm: str) -> bool:
    import haproxyd.balancer.algorithms  # noqa: F401
    from haproxyd.balancer.base import REGISTRY

    return algorithm in REGISTRY


async def test_patch_weight_sets_both_weights_and_zero_takes_it_out(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    r = await h.api("PATCH", f"{BACKENDS}/web-2", {"weight": 3})
    assert r.status == 200, r
    assert r.body["weight"] == 3 and r.body["effective_weight"] == 3
    assert h.backend("web-2").weight == 3
    r = await h.api("PATCH", f"{BACKENDS}/web-2", {"weight": 0})
    assert r.status == 200 and r.body["selectable"] is False
    assert await spread(h, 3) == {"web-1": 3}
    r = await h.api("PATCH", f"{BACKENDS}/web-2", {"weight": 1, "state": "ready"})
    assert r.status == 200 and r.body["selectable"] is True
    assert set(await spread(h, 4)) == {"web-1", "web-2"}


async def test_patch_weight_changes_a_weighted_balancing(hap, backend):
    if not registered("weighted_round_robin"):
        pytest.skip("weighted_round_robin balancer not available yet")
    pools = {
        "web": {
            "balancer": {"algorithm": "weighted_round_robin"},
            "backends": [backend("web-1").config(), backend("web-2").config()],
        }
    }
    h = await hap(pools=pools)
    r = await h.api("PATCH", f"{BACKENDS}/web-2", {"weight": 3})
    assert r.status == 200, r
    assert await spread(h, 8) == {"web-1": 2, "web-2": 6}


async def test_maint_then_ready(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    r = await h.api("PATCH", f"{BACKENDS}/web-2", {"state": "maint"})
    assert r.status == 200 and r.body["state"] == "maint" and r.body["selectable"] is False
    assert await spread(h, 4) == {"web-1": 4}
    r = await h.api("PATCH", f"{BACKENDS}/web-2", {"state": "ready"})
    assert r.status == 200 and r.body["state"] == "up"
    assert set(await spread(h, 4)) == {"web-1", "web-2"}


async def test_ready_on_an_up_backend_changes_nothing(hap, backend):
    h = await hap([backend("web-1")])
    version = h.daemon.runtime.pools["web"].state.version
    r = await h.api("PATCH", f"{BACKENDS}/web-1", {"state": "ready"})
    assert r.status == 200 and r.body["state"] == "up"
    assert h.daemon.runtime.pools["web"].state.version == version


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"weight": -1},
        {"weight": 1001},
        {"weight": "5"},
        {"weight": True},
        {"weight": 1.5},
        {"state": "up"},
        {"state": None, "weight": None},
        {"color": "red"},
        {"weight": 5, "state": "bogus"},  # valid weight + bad state: nothing changes
    ],
)
async def test_patch_rejects_bad_changes_and_changes_nothing(hap, backend, body):
    h = await hap([backend("web-1")])
    r = await h.api("PATCH", f"{BACKENDS}/web-1", body)
    assert r.status == 400, r
    assert r.body["error"] == "invalid change" and r.body["details"]
    b = h.backend("web-1")
    assert (b.weight, b.effective_weight, str(b.state)) == (1, 1, "up")


async def test_patch_unknown_backend_is_404(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api("PATCH", f"{BACKENDS}/nope", {"state": "drain"})
    assert r.status == 404 and r.body["error"] == "no such backend"


async def test_drained_backend_gets_no_new_request_while_its_inflight_one_finishes(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    slow = asyncio.create_task(h.proxy("/slow?ms=1500"))
    try:
        busy = await poll(
            lambda: next((b for b in ("web-1", "web-2") if h.backend(b).active == 1), None),
            5,
            what="the slow request in flight",
        )
        other = "web-2" if busy == "web-1" else "web-1"
        r = await h.api("PATCH", f"{BACKENDS}/{busy}", {"state": "drain"})
        assert r.status == 200 and r.body["state"] == "draining" and r.body["active"] == 1
        assert await spread(h, 6) == {other: 6}

        # removal is refused while the request is in flight...
        r = await h.api("DELETE", f"{BACKENDS}/{busy}")
        assert r.status == 409 and r.body["error"] == "backend busy", r
        # ...and with ?wait= it completes once the request finished
        removal = asyncio.create_task(h.api("DELETE", f"{BACKENDS}/{busy}?wait=10"))
        done = await slow
        assert done.status == 200 and done.body == busy
        r = await removal
        assert r.status == 200, r
        assert r.body["removed"]["id"] == busy and r.body["removed"]["active"] == 0
        assert h.daemon.runtime.find_backend(busy) is None
    finally:
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow


# -- remove ------------------------------------------------------------------------------


async def test_delete_needs_maint_or_drain(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    r = await h.api("DELETE", f"{BACKENDS}/web-2")
    assert r.status == 409 and r.body["error"] == "backend not in maintenance"
    r = await h.api("DELETE", f"{BACKENDS}/web-2?wait=1")
    assert r.status == 409
    assert h.daemon.runtime.find_backend("web-2") is not None

    await h.api("PATCH", f"{BACKENDS}/web-2", {"state": "maint"})
    r = await h.api("DELETE", f"{BACKENDS}/web-2")
    assert r.status == 200 and r.body["removed"]["id"] == "web-2"
    assert [b["id"] for b in (await h.get(BACKENDS))["backends"]] == ["web-1"]
    assert await spread(h, 3) == {"web-1": 3}
    assert (await h.api("DELETE", f"{BACKENDS}/web-2")).status == 404


@pytest.mark.parametrize("wait", ["abc", "-1", "301", "nan"])
async def test_delete_with_a_bad_wait_is_400(hap, backend, wait):
    h = await hap([backend("web-1")])
    await h.api("PATCH", f"{BACKENDS}/web-1", {"state": "maint"})
    r = await h.api("DELETE", f"{BACKENDS}/web-1?wait={wait}")
    assert r.status == 400, r
    assert h.daemon.runtime.find_backend("web-1") is not None


async def test_delete_wait_times_out_with_409(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    b = h.backend("web-2")
    await h.api("PATCH", f"{BACKENDS}/web-2", {"state": "drain"})
    b.active += 1  # a request that will not finish within the wait
    try:
        r = await h.api("DELETE", f"{BACKENDS}/web-2?wait=0.2")
        assert r.status == 409 and r.body["error"] == "backend busy"
    finally:
        b.active -= 1
    assert h.daemon.runtime.find_backend("web-2") is not None


# -- failover trigger --------------------------------------------------------------------


async def test_manual_failover_to_backups_and_back(hap, backend):
    pools = {
        "web": {
            "failover": {"strategy": "active_passive"},
            "backends": [
                backend("web-1").config(),
                {**backend("web-b").config(), "role": "backup"},
            ],
        }
    }
    h = await hap(pools=pools)
    assert await spread(h, 2) == {"web-1": 2}
    r = await h.api("POST", "/api/v1/ha/failover/trigger", {"pool": "web", "reason": "test"})
    assert r.status == 200, r
    assert r.body["action"] == "failover" and r.body["active"] == ["web-b"]
    assert r.body["event"]["strategy"] == "active_passive"
    assert await spread(h, 2) == {"web-b": 2}

    r = await h.api("POST", "/api/v1/ha/failover/trigger", {"pool": "web", "to": "primary"})
    assert r.status == 200 and r.body["action"] == "failback" and r.body["active"] == ["web-1"]
    assert await spread(h, 2) == {"web-1": 2}

    events = (await h.get("/api/v1/ha/failover/events"))["events"]
    assert [e["kind"] for e in events] == ["failback", "failover"]
    assert events[1]["reason"] == "test" and events[1]["pool"] == "web"
    metrics = (await h.api("GET", "/metrics")).body
    assert 'haproxyd_failover_events_total{pool="web",strategy="active_passive"} 2.0' in metrics


async def test_failover_trigger_errors(hap, backend):
    h = await hap([backend("web-1")])
    url = "/api/v1/ha/failover/trigger"
    r = await h.api("POST", url, {"pool": "nope"})
    assert r.status == 404 and r.body["error"] == "no such pool"
    for body in ({}, {"pool": ""}, {"pool": "web", "to": "sideways"}, {"pool": "web", "x": 1}):
        r = await h.api("POST", url, body)
        assert r.status == 400, (body, r)
    r = await h.api("POST", url, {"pool": "web"})  # no backup to go to
    assert r.status == 409 and r.body["error"] == "failover refused"
    assert (await h.get("/api/v1/ha/failover/events"))["events"] == []


# -- config/update -----------------------------------------------------------------------


async def test_config_update_partial_document_is_applied(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    doc = {"pools": {"web": {"retries": {"attempts": 1}}}, "timeouts": {"response": "7s"}}
    r = await h.api("POST", "/api/v1/ha/config/update", doc)
    assert r.status == 200, r
    assert r.body == {"applied": True, "changed": True, "config_version": 2}
    cfg = h.daemon.config
    assert cfg.pools["web"].retries.attempts == 1 and cfg.timeouts.response == 7.0
    assert h.daemon.runtime.cfg is cfg
    # the rest of the running config is kept
    assert [b.id for b in cfg.pools["web"].backends] == ["web-1", "web-2"]
    assert cfg.node.id == "test-node"
    status = await h.get("/api/v1/ha/status")
    assert status["config_version"] == 2 and status["reloads"]["ok"] == 1
    assert set(await spread(h, 4)) == {"web-1", "web-2"}

    same = await h.api("POST", "/api/v1/ha/config/update", doc)
    assert same.body == {"applied": True, "changed": False, "config_version": 2}


async def test_config_update_adds_a_pool_and_a_route(hap, backend):
    h = await hap([backend("web-1")])
    api1 = backend("api-1")
    doc = {
        "pools": {"api": {"backends": [api1.config()]}},
        "routes": [
            {"match": {"path_prefix": "/api"}, "pool": "api"},
            {"match": {"path_prefix": "/"}, "pool": "web"},
        ],
    }
    r = await h.api("POST", "/api/v1/ha/config/update", doc)
    assert r.status == 200, r
    assert (await h.proxy("/api/x")).body == "api-1"
    assert (await h.proxy("/x")).body == "web-1"
    pools = [p["name"] for p in (await h.get("/api/v1/ha/status"))["pools"]]
    assert pools == ["web", "api"]


async def test_config_update_replace_mode_takes_a_whole_document(hap, backend):
    b1, b3 = backend("web-1"), backend("web-3")
    h = await hap([b1])
    doc = (await h.get("/api/v1/ha/config"))["config"]
    doc["admin"]["token"] = None
    doc["pools"]["web"]["backends"] = [b3.config()]
    r = await h.api("POST", "/api/v1/ha/config/update?mode=replace", doc)
    assert r.status == 200, r
    assert await spread(h, 2) == {"web-3": 2}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"pools": {"web": {"backends": [{"id": "x", "address": "nope"}]}}}, "address"),
        ({"timeouts": {"connect": "soon"}}, "timeouts.connect"),
        ({"routes": [{"match": {"path_prefix": "/"}, "pool": "missing"}]}, "missing"),
        ({"no_such_section": 1}, "no_such_section"),
        ({"pools": {"web": {"balancer": {"algorithm": "magic"}}}}, "algorithm"),
    ],
)
async def test_config_update_with_a_bad_document_changes_nothing(hap, backend, doc, needle):
    h = await hap([backend("web-1"), backend("web-2")])
    before_cfg = h.daemon.config
    before_pools = dict(h.daemon.runtime.pools)
    r = await h.api("POST", "/api/v1/ha/config/update", doc)
    assert r.status == 400, r
    assert r.body["error"] == "invalid configuration"
    assert any(needle in d for d in r.body["details"]), r.body
    assert h.daemon.config is before_cfg
    assert h.daemon.config_version == 1
    assert h.daemon.runtime.pools == before_pools
    assert set(await spread(h, 4)) == {"web-1", "web-2"}
    status = await h.get("/api/v1/ha/status")
    assert status["reloads"] == {"ok": 0, "error": 1}


async def test_config_update_rejects_non_objects_and_bad_mode(hap, backend):
    h = await hap([backend("web-1")])
    url = "/api/v1/ha/config/update"
    r = await h.api("POST", url, data=b"[]", headers={"Content-Type": "application/json"})
    assert r.status == 400
    r = await h.api("POST", url, data=b"{", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.body["error"] == "invalid JSON"
    r = await h.api("POST", url + "?mode=sideways", {})
    assert r.status == 400 and r.body["error"] == "invalid mode"
    assert h.daemon.config_version == 1


async def test_config_update_that_cannot_bind_is_rejected(hap, backend):
    h = await hap([backend("web-1")])
    taken = h.daemon.admin.addresses[0]
    doc = {"listeners": [{"address": "127.0.0.1:0"}, {"address": f"{taken[0]}:{taken[1]}"}]}
    before = h.daemon.config
    r = await h.api("POST", "/api/v1/ha/config/update", doc)
    assert r.status == 400, r
    assert r.body["error"] == "configuration not applied"
    assert h.daemon.config is before
    assert (await h.proxy()).status == 200


async def test_runtime_changes_revert_on_reload_but_drain_stays(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    await h.api("POST", BACKENDS, {"pool": "web", **backend("web-9").config()})
    await h.api("PATCH", f"{BACKENDS}/web-1", {"weight": 7})
    await h.api("PATCH", f"{BACKENDS}/web-2", {"state": "drain"})
    r = await h.api("POST", "/api/v1/ha/config/update", {"timeouts": {"response": "9s"}})
    assert r.status == 200 and r.body["changed"] is True
    backends = {b["id"]: b for b in (await h.get(BACKENDS))["backends"]}
    assert set(backends) == {"web-1", "web-2"}
    assert backends["web-1"]["weight"] == 1
    assert backends["web-2"]["state"] == "draining"


async def test_hostile_bodies_are_400_not_500(hap, backend):
    h = await hap([backend("web-1")], admin={"token": "tok"})
    deep = b"[" * 100000 + b"]" * 100000
    for path in (BACKENDS, "/api/v1/ha/config/update", "/api/v1/ha/failover/trigger"):
        r = await h.api("POST", path, data=deep, headers={"Content-Type": "application/json"})
        assert r.status == 400, (path, r)
    r = await h.api(
        "PATCH",
        f"{BACKENDS}/web-1",
        {"weight": 2},
        headers={"Authorization": "Bearer t\u00f6k"},
        token=None,
    )
    assert r.status == 401
