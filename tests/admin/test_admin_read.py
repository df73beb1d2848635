"""Read endpoints of the admin API: shapes, live values, filters and their errors."""

from __future__ import annotations

import pytest
from admin_helpers import poll

pytestmark = pytest.mark.timeout(60)


async def test_status_reports_node_pools_and_health(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    status = await h.get("/api/v1/ha/status")
    assert status["node_id"] == "test-node"
    assert status["role"] == "standalone"
    assert status["config_version"] == 1
    assert status["healthy"] is True
    assert status["uptime"] >= 0
    assert status["reloads"] == {"ok": 0, "error": 0}
    [pool] = status["pools"]
    assert pool["name"] == "web"
    assert pool["backends"] == 2 and pool["up"] == 2 and pool["selectable"] == 2
    assert pool["healthy"] is True
    assert pool["states"]["up"] == 2


async def test_status_is_unhealthy_when_a_pool_has_no_backend_left(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api("PATCH", "/api/v1/ha/load-balancer/backends/web-1", {"state": "maint"})
    assert r.status == 200, r
    status = await h.get("/api/v1/ha/status")
    assert status["healthy"] is False
    assert status["pools"][0]["healthy"] is False
    assert status["pools"][0]["states"]["maint"] == 1


async def test_backends_list_live_state_and_filter(hap, backend):
    pools = {
        "web": {"backends": [backend("web-1").config(), backend("web-2").config()]},
        "api": {
            "backends": [{**backend("api-1").config(), "weight": 3, "role": "backup"}],
        },
    }
    h = await hap(pools=pools)
    body = await h.get("/api/v1/ha/load-balancer/backends")
    by_id = {b["id"]: b for b in body["backends"]}
    assert set(by_id) == {"web-1", "web-2", "api-1"}
    api1 = by_id["api-1"]
    assert api1["pool"] == "api" and api1["weight"] == 3 and api1["role"] == "backup"
    assert api1["state"] == "up" and api1["selectable"] is True
    assert api1["health"]["verdict"] == "up"
    assert api1["address"] == h.backend("api-1").address

    only_api = await h.get("/api/v1/ha/load-balancer/backends?pool=api")
    assert [b["id"] for b in only_api["backends"]] == ["api-1"]

    missing = await h.api("GET", "/api/v1/ha/load-balancer/backends?pool=nope")
    assert missing.status == 404
    assert missing.body["error"] == "no such pool"
    assert missing.body["details"]

    # live, not a copy: a change on the Backend object shows at once
    h.backend("web-1").active = 7
    one = await h.get("/api/v1/ha/load-balancer/backends/web-1")
    assert one["active"] == 7
    h.backend("web-1").active = 0

    gone = await h.api("GET", "/api/v1/ha/load-balancer/backends/nope")
    assert gone.status == 404 and gone.body["error"] == "no such backend"


async def test_lb_stats_counts_requests_errors_latency_and_classes(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    sent = {"web-1": 0, "web-2": 0}
    for path in ["/echo"] * 6 + ["/status/503"] * 2 + ["/status/404"] * 2:
        r = await h.proxy(path)
        sent[r.body] += 1
    stats = await h.get("/api/v1/ha/load-balancer/stats")
    [pool] = stats["pools"]
    assert pool["name"] == "web"
    assert pool["requests"] == 10
    assert pool["codes"] == {"1xx": 0, "2xx": 6, "3xx": 0, "4xx": 2, "5xx": 2, "other": 0}
    assert pool["errors"] == 2
    assert pool["latency"]["samples"] == 10
    assert 0 < pool["latency"]["p50"] <= pool["latency"]["p99"]
    by_id = {b["id"]: b for b in pool["backends"]}
    for bid, n in sent.items():
        b = by_id[bid]
        assert b["requests"] == n
        assert b["selections"] == n
        assert b["active"] == 0
        assert b["latency"]["p99"] is not None
    assert sum(b["errors"] for b in by_id.values()) == 2
    assert stats["unrouted"]["requests"] == 0

    assert (await h.api("GET", "/api/v1/ha/load-balancer/stats?pool=nope")).status == 404
    only = await h.get("/api/v1/ha/load-balancer/stats?pool=web")
    assert [p["name"] for p in only["pools"]] == ["web"]


async def test_lb_stats_count_transport_failures_and_no_backend(hap, backend, unused_port):
    dead = {"id": "dead", "address": f"127.0.0.1:{unused_port()}"}
    h = await hap([dead])
    r = await h.proxy("/x")
    assert r.status == 502
    await h.api("PATCH", "/api/v1/ha/load-balancer/backends/dead", {"state": "maint"})
    r = await h.proxy("/x")
    assert r.status == 503
    stats = await h.get("/api/v1/ha/load-balancer/stats")
    [pool] = stats["pools"]
    [b] = pool["backends"]
    assert b["failures"] == 1 and b["errors"] == 1 and b["requests"] == 1
    assert pool["no_backend"] == 1
    assert pool["requests"] == 2 and pool["errors"] == 2
    assert pool["codes"]["5xx"] == 2


async def test_health_checks_without_checks_configured_is_an_empty_list(hap, backend):
    h = await hap([backend("web-1")])
    body = await h.get("/api/v1/ha/health-checks")
    assert body == {"enabled": True, "node": {"healthy": True, "reasons": []}, "checks": []}


async def test_health_checks_without_a_scheduler_is_an_empty_list(hap, backend):
    h = await hap([backend("web-1")])
    health, h.daemon.health = h.daemon.health, None
    try:
        body = await h.get("/api/v1/ha/health-checks")
        assert body == {"enabled": False, "node": {"healthy": True, "reasons": []}, "checks": []}
        one = await h.get("/api/v1/ha/load-balancer/backends/web-1")
        assert one["health"] == {"verdict": "up", "ejected": False, "passive": None, "checks": []}
    finally:
        h.daemon.health = health


async def test_health_checks_report_the_live_probe_sessions(hap, backend):
    pools = {
        "web": {
            "backends": [backend("web-1").config()],
            "health_checks": [
                {"type": "http", "path": "/healthz", "interval": "100ms", "rise": 1, "fall": 1}
            ],
        }
    }
    h = await hap(pools=pools)

    async def probed():
        body = await h.get("/api/v1/ha/health-checks")
        return body if any(c["last_check"] is not None for c in body["checks"]) else None

    body = await poll(probed, 10, what="a first probe")
    assert body["enabled"] is True
    [check] = body["checks"]
    assert check["pool"] == "web" and check["backend"] == "web-1"
    assert check["target"] == h.backend("web-1").address
    assert check["type"] == "http"
    assert check["status"] == "up" and check["last_result"] == "pass"
    assert check["consecutive_passes"] >= 1 and check["consecutive_fails"] == 0
    assert check["latency"] >= 0

    filtered = await h.get("/api/v1/ha/health-checks?pool=web&backend=nope")
    assert filtered["checks"] == []

    one = await h.get("/api/v1/ha/load-balancer/backends/web-1")
    assert one["health"]["verdict"] == "up"
    assert one["health"]["checks"][0]["type"] == "http"

    text = (await h.api("GET", "/metrics")).body
    assert 'haproxyd_health_check_duration_seconds{backend="web-1",pool="web",type="http"}' in (
        text
    )


async def test_cluster_status_of_a_standalone_node(hap, backend):
    h = await hap([backend("web-1")], extra={"cluster": {"quorum_size": 3}})
    body = await h.get("/api/v1/ha/cluster/status")
    assert body["role"] == "standalone"
    assert body["leader"] == "test-node" and body["is_leader"] is True
    assert body["term"] == 0 and body["quorum"] == 3
    [node] = body["nodes"]
    assert node["id"] == "test-node" and node["self"] is True and node["state"] == "up"


async def test_failover_events_empty_and_bad_limit(hap, backend):
    h = await hap([backend("web-1")])
    body = await h.get("/api/v1/ha/failover/events")
    assert body["events"] == [] and body["stored"] == 0
    for bad in ("0", "-1", "abc", "10001", "1.5"):
        r = await h.api("GET", f"/api/v1/ha/failover/events?limit={bad}")
        assert r.status == 400, (bad, r)
        assert r.body["error"] == "invalid limit"


async def test_failover_events_newest_first_with_limit_and_pool(hap, backend):
    h = await hap([backend("web-1")])
    events = h.daemon.admin.state.events
    for i in range(5):
        events.append("failover", "web" if i % 2 else "api", None, f"r{i}", strategy="manual")
    body = await h.get("/api/v1/ha/failover/events?limit=3")
    assert [e["reason"] for e in body["events"]] == ["r4", "r3", "r2"]
    assert body["stored"] == 5 and body["returned"] == 3
    web = await h.get("/api/v1/ha/failover/events?pool=web")
    assert [e["reason"] for e in web["events"]] == ["r3", "r1"]
    assert web["events"][0]["strategy"] == "manual"


async def test_running_config_is_shown_with_the_token_redacted(hap, backend):
    h = await hap([backend("web-1")], admin={"token": "s3cret"})
    body = await h.get("/api/v1/ha/config")
    assert body["config_version"] == 1
    assert body["config"]["admin"]["token"] == "<redacted>"
    assert "s3cret" not in str(body)
    assert body["config"]["pools"]["web"]["backends"][0]["id"] == "web-1"


async def test_unknown_path_and_wrong_method_are_json_errors(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api("GET", "/api/v1/ha/nope")
    assert r.status == 404 and r.body["error"] == "not found"
    r = await h.api("PUT", "/api/v1/ha/status")
    assert r.status == 405 and "error" in r.body


async def test_openapi_describes_every_route(hap, backend):
    h = await hap([backend("web-1")])
    doc = await h.get("/api/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    app = h.daemon.admin.app
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical
        assert path in doc["paths"], path
        assert route.method.lower() in doc["paths"][path], (route.method, path)


async def test_status_page_is_self_contained_html(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api("GET", "/")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/html")
    page = r.body
    assert "<script>" in page and "/load-balancer/stats" in page
    # offline: nothing loaded from elsewhere
    assert "http://" not in page and "https://" not in page
    assert "src=" not in page.replace("script-src", "")
