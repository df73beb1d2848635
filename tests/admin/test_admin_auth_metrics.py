"""Auth on and off, and `/metrics` values against the requests actually sent."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)

BACKENDS = "/api/v1/ha/load-balancer/backends"
READS = [
    "/api/v1/ha/status",
    "/api/v1/ha/config",
    "/api/v1/ha/load-balancer/stats",
    BACKENDS,
    f"{BACKENDS}/web-1",
    "/api/v1/ha/health-checks",
    "/api/v1/ha/cluster/status",
    "/api/v1/ha/failover/events",
    "/metrics",
]
WRITES = [
    ("POST", BACKENDS, {"pool": "web", "id": "n1", "address": "127.0.0.1:1"}),
    ("PATCH", f"{BACKENDS}/web-1", {"weight": 2}),
    ("DELETE", f"{BACKENDS}/web-1", None),
    ("POST", "/api/v1/ha/failover/trigger", {"pool": "web"}),
    ("POST", "/api/v1/ha/config/update", {}),
]


async def test_without_a_token_everything_is_open(hap, backend):
    h = await hap([backend("web-1")])
    for path in READS:
        assert (await h.api("GET", path)).status == 200, path
    r = await h.api("PATCH", f"{BACKENDS}/web-1", {"weight": 2})
    assert r.status == 200


async def test_token_guards_mutations_but_not_reads(hap, backend):
    h = await hap([backend("web-1")], admin={"token": "s3cret"})
    for path in READS:
        assert (await h.api("GET", path, token=None)).status == 200, path
    for method, path, body in WRITES:
        for token in (None, "wrong", "s3cret2", "s3cre"):
            r = await h.api(method, path, body, token=token)
            assert r.status == 401, (method, path, token, r)
            assert r.body["error"] == "unauthorized"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await h.api(method, path, body, headers={"Authorization": "Basic czNjcmV0"}, token=None)
        assert r.status == 401
    b = h.backend("web-1")
    assert (b.weight, str(b.state)) == (1, "up")
    assert h.daemon.runtime.find_backend("n1") is None

    r = await h.api("PATCH", f"{BACKENDS}/web-1", {"weight": 2}, token="s3cret")
    assert r.status == 200 and r.body["weight"] == 2
    r = await h.api(
        "PATCH", f"{BACKENDS}/web-1", {"weight": 3}, headers={"Authorization": "bearer s3cret"}
    )
    assert r.status == 200 and r.body["weight"] == 3


async def test_read_auth_closes_reads_but_not_the_page_or_the_api_document(hap, backend):
    h = await hap([backend("web-1")], admin={"token": "s3cret", "read_auth": True})
    for path in READS:
        assert (await h.api("GET", path, token=None)).status == 401, path
        assert (await h.api("GET", path, token="s3cret")).status == 200, path
    assert (await h.api("GET", "/", token=None)).status == 200
    assert (await h.api("GET", "/api/v1/openapi.json", token=None)).status == 200


async def test_token_from_the_environment(hap, backend, monkeypatch):
    monkeypatch.setenv("HAPROXYD_ADMIN_TOKEN", "from-env")
    h = await hap([backend("web-1")])
    r = await h.api("PATCH", f"{BACKENDS}/web-1", {"weight": 2})
    assert r.status == 401
    r = await h.api("PATCH", f"{BACKENDS}/web-1", {"weight": 2}, token="from-env")
    assert r.status == 200


async def test_loud_warning_when_bound_beyond_loopback_without_a_token(hap, backend, caplog):
    caplog.set_level(logging.WARNING, logger="haproxyd.admin")
    # Only with admin.insecure: without it such a config is refused (test_admin_security).
    await hap([backend("web-1")], admin={"address": "0.0.0.0:0", "insecure": True})
    assert any("WITHOUT A TOKEN" in r.getMessage() for r in caplog.records)


async def test_no_warning_on_loopback(hap, backend, caplog):
    caplog.set_level(logging.WARNING, logger="haproxyd.admin")
    await hap([backend("web-1")])
    assert not any("WITHOUT A TOKEN" in r.getMessage() for r in caplog.records)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text_samples, name: str, **labels: str) -> float | None:
    return text_samples.get((name, tuple(sorted(labels.items()))))


async def test_metrics_match_the_requests_sent(hap, backend):
    h = await hap([backend("web-1"), backend("web-2")])
    sent: dict[tuple[str, str], int] = {}
    for path in ["/echo"] * 7 + ["/status/500"] * 3 + ["/status/404"] * 2 + ["/status/201"]:
        r = await h.proxy(path)
        key = (r.body, str(r.status))
        sent[key] = sent.get(key, 0) + 1

    reply = await h.api("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    m = samples(reply.body)
    for (bid, code), n in sent.items():
        got = value(
            m, "haproxyd_requests_total", pool="web", backend=bid, code=code, protocol="http1"
        )
        assert got == n, (bid, code, got, n)
    total = sum(v for (name, _), v in m.items() if name == "haproxyd_requests_total")
    assert total == 13
    for bid in ("web-1", "web-2"):
        n = sum(v for (b, _), v in sent.items() if b == bid)
        assert value(m, "haproxyd_request_duration_seconds_count", pool="web", backend=bid) == n
        assert (
            value(m, "haproxyd_request_duration_seconds_bucket", pool="web", backend=bid, le="+Inf")
            == n
        )
        assert value(m, "haproxyd_request_duration_seconds_sum", pool="web", backend=bid) > 0
        assert value(m, "haproxyd_backend_up", pool="web", backend=bid) == 1
        assert value(m, "haproxyd_backend_active_connections", pool="web", backend=bid) == 0
        assert value(m, "haproxyd_backend_selections_total", pool="web", backend=bid) == n
        # One request at a time: each backend's connection is reused, never reopened.
        assert value(m, "haproxyd_backend_connects_total", pool="web", backend=bid) == 1
    assert value(m, "haproxyd_config_reloads_total", result="ok") == 0
    assert value(m, "haproxyd_config_reloads_total", result="error") == 0
    assert value(m, "haproxyd_cluster_is_leader") == 1
    assert value(m, "haproxyd_cluster_nodes", state="up") == 1
    assert value(m, "haproxyd_pool_selectable_backends", pool="web") == 2

    await h.api("PATCH", f"{BACKENDS}/web-2", {"state": "maint"})
    await h.api("POST", "/api/v1/ha/config/update", {"timeouts": {"connect": "x"}})
    m = samples((await h.api("GET", "/metrics")).body)
    assert value(m, "haproxyd_backend_up", pool="web", backend="web-2") == 0
    assert value(m, "haproxyd_backend_state", pool="web", backend="web-2", state="maint") == 1
    assert value(m, "haproxyd_config_reloads_total", result="error") == 1


async def test_metrics_histogram_buckets_are_cumulative_and_bounded_labels(hap, backend):
    h = await hap([backend("web-1")])
    for i in range(5):
        assert (await h.proxy(f"/echo?unique={i}")).status == 200
    text = (await h.api("GET", "/metrics")).body
    assert "unique" not in text  # no per-URL label
    buckets = [
        (s.labels["le"], s.value)
        for f in text_string_to_metric_families(text)
        if f.name == "haproxyd_request_duration_seconds"
        for s in f.samples
        if s.name.endswith("_bucket")
    ]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == 5 and buckets[-1][0] == "+Inf"


async def test_metrics_in_openmetrics_format_on_request(hap, backend):
    h = await hap([backend("web-1")])
    r = await h.api("GET", "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert r.body.rstrip().endswith("# EOF")
