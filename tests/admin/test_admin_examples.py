"""examples/prometheus/alerts.yml and examples/grafana/haproxyd-dashboard.json.

With `promtool` (Debian package `prometheus`) the rules are checked and unit-tested by
promtool itself; without it, their structure is checked here. Either way every metric
they use must be one the daemon exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "examples" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "examples" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "examples" / "grafana" / "haproxyd-dashboard.json"

# Every family the collector emits (sample names add _total/_bucket/_sum/_count).
EXPORTED = {
    "haproxyd_requests_total",
    "haproxyd_request_duration_seconds_bucket",
    "haproxyd_request_duration_seconds_sum",
    "haproxyd_request_duration_seconds_count",
    "haproxyd_backend_up",
    "haproxyd_backend_state",
    "haproxyd_backend_active_connections",
    "haproxyd_backend_weight",
    "haproxyd_backend_attempts_total",
    "haproxyd_backend_failures_total",
    "haproxyd_backend_selections_total",
    "haproxyd_backend_connects_total",
    "haproxyd_pool_selectable_backends",
    "haproxyd_health_check_duration_seconds",
    "haproxyd_failover_events_total",
    "haproxyd_config_reloads_total",
    "haproxyd_config_version",
    "haproxyd_cluster_is_leader",
    "haproxyd_cluster_nodes",
    "haproxyd_cluster_term",
    "haproxyd_cluster_redis_up",
    "haproxyd_rejected_requests_total",
    "haproxyd_tracing_spans_exported_total",
    "haproxyd_tracing_spans_dropped_total",
    "haproxyd_client_connections",
    "haproxyd_start_time_seconds",
    "haproxyd_build_info",
}
METRIC = re.compile(r"\bhaproxyd_[a-z_]+")
WANTED_ALERTS = {
    "HaproxydBackendDown",
    "HaproxydPoolNoHealthyBackend",
    "HaproxydFailoverHappened",
    "HaproxydClusterNodeLost",
    "HaproxydP99LatencyHigh",
    "HaproxydConfigReloadFailed",
}


def test_alert_rules_structure_and_metrics():
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert names >= WANTED_ALERTS
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        used = set(METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= EXPORTED, (rule["alert"], used - EXPORTED)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_checks_and_unit_tests_the_rules():
    check = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        ["promtool", "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERT_TESTS.parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_grafana_dashboard_is_valid_and_uses_exported_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(METRIC.findall(target["expr"]))
    assert used <= EXPORTED, used - EXPORTED
    assert {
        "haproxyd_requests_total",
        "haproxyd_request_duration_seconds_bucket",
        "haproxyd_backend_up",
        "haproxyd_failover_events_total",
    } <= used


async def test_exported_set_is_what_the_daemon_serves(hap, backend):
    from prometheus_client.parser import text_string_to_metric_families

    h = await hap([backend("web-1")])
    assert (await h.proxy()).status == 200
    h.daemon.admin.state.events.append("failover", "web", None, "x", strategy="manual")
    text = (await h.api("GET", "/metrics")).body
    served = {
        s.name
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("haproxyd_")
    }
    missing_ok = {
        "haproxyd_health_check_duration_seconds",
        "haproxyd_rejected_requests_total",
        "haproxyd_cluster_redis_up",  # cluster mode only (tests/integration/test_cluster.py)
    }
    assert served <= EXPORTED, served - EXPORTED
    assert EXPORTED - served <= missing_ok, EXPORTED - served
