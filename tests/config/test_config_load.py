"""Valid configurations: the SPEC example, defaults, scalar forms, paths, routing."""

from __future__ import annotations

import os
import shutil
import typing
from pathlib import Path

import pydantic
import pytest
from config_helpers import MINIMAL, issues, load

from haproxyd.balancer import registry
from haproxyd.config import (
    Address,
    Config,
    default_config,
    load_config,
    schema,
    validate_document,
)

REPO = Path(__file__).resolve().parents[2]


def test_spec_example_loads_as_written() -> None:
    cfg = load_config(REPO / "config" / "haproxyd.yaml", env={})
    assert cfg.node.id == "node-1"
    assert cfg.node.region == "eu-west"
    assert [listener.address for listener in cfg.listeners] == [Address("127.0.0.1", 8080)]
    assert cfg.listeners[0].tls is None
    assert cfg.admin.address == Address("127.0.0.1", 9901)
    assert cfg.admin.token is None
    assert cfg.workers == 1
    assert (cfg.timeouts.connect, cfg.timeouts.response, cfg.timeouts.idle) == (2.0, 30.0, 60.0)
    assert (cfg.timeouts.client_header, cfg.timeouts.shutdown) == (10.0, 15.0)
    assert (cfg.limits.max_header_bytes, cfg.limits.max_body_bytes) == (65536, 0)
    assert cfg.limits.max_connections == 10000
    assert len(cfg.routes) == 1
    assert cfg.routes[0].match.host is None
    assert cfg.routes[0].match.path_prefix == "/"
    assert cfg.routes[0].pool == "web"
    web = cfg.pools["web"]
    assert web.balancer.algorithm == "round_robin"
    assert web.balancer.hash_key is None
    (check,) = web.health_checks
    assert check.type == "http"
    assert (check.path, check.interval, check.timeout) == ("/healthz", 5.0, 1.0)
    assert (check.rise, check.fall, check.expect_status) == (2, 3, [200])
    assert (web.failover.strategy, web.failover.failback) == ("active_active", "auto")
    assert web.retries.attempts == 2
    assert [(b.id, b.address.port, b.weight, b.role) for b in web.backends] == [
        ("web-1", 9001, 1, "primary"),
        ("web-2", 9002, 1, "primary"),
        ("web-3", 9003, 1, "backup"),
    ]
    assert cfg.cluster.enabled is False
    assert cfg.cluster.redis_url == "redis://127.0.0.1:6379/1"
    assert cfg.cluster.discovery_servers == []
    assert cfg.cluster.quorum_size == 2


def test_default_config() -> None:
    cfg = default_config()
    assert [listener.address for listener in cfg.listeners] == [Address("127.0.0.1", 8080)]
    assert cfg.admin.address == Address("127.0.0.1", 9901)
    assert list(cfg.pools) == ["web"]
    assert cfg.pools["web"].balancer.algorithm == "round_robin"
    assert cfg.pools["web"].backends == []
    assert cfg.routes == []
    assert cfg.cluster.enabled is False
    assert cfg.node.id  # the hostname, or a safe fallback


def test_demo_recipe_round_trips() -> None:
    """What `haproxyd demo` does: dump the default, fill backends in, validate again."""
    base = default_config().model_dump(mode="json")
    base["pools"]["web"]["backends"] = [{"id": "demo-1", "address": "127.0.0.1:9001"}]
    cfg = Config.model_validate(base)
    assert cfg.pools["web"].backends[0].address == Address("127.0.0.1", 9001)


def test_minimal_file_gets_contract_defaults() -> None:
    cfg = load(MINIMAL)
    assert cfg.workers == 1
    assert cfg.environment == "production"
    assert cfg.on_unhealthy == "ignore"
    assert cfg.access_log.enabled is False and cfg.access_log.path is None
    assert (cfg.resolver.interval, cfg.resolver.timeout, cfg.resolver.nameservers) == (30, 2, [])
    pool = cfg.pools["web"]
    assert pool.passive is None and pool.regions is None
    assert pool.queue_timeout == 0
    # Idle backend connections: as many as the peak in flight needed (not 64: churn).
    assert (pool.keepalive.max_idle, pool.keepalive.idle_timeout) == (
        10000,
        60.0,
    )  # the peak in flight, not 64 (churn)
    assert pool.keepalive.max_requests == 0
    assert pool.balancer.virtual_nodes == 160
    assert pool.balancer.choices == 1
    assert pool.balancer.hash_query is True
    assert pool.failover.panic_threshold == 0
    assert pool.failover.on_panic == "balance"
    assert pool.failover.failback_hold == 30
    retries = pool.retries
    assert (retries.budget_percent, retries.min_retries, retries.buffer_bytes) == (20, 3, 65536)
    backend = pool.backends[0]
    assert (backend.weight, backend.role, backend.priority, backend.max_connections) == (
        1,
        "primary",
        0,
        0,
    )
    cluster = cfg.cluster
    assert (cluster.heartbeat_interval, cluster.lease_ttl) == (1.0, 3.0)
    assert cluster.health_consensus == "local" and cluster.local_fallback is False
    assert cfg.admin.read_auth is False


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1m", 60.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("7", 7.0),
        ("0.5", 0.5),
    ],
)
def test_duration_forms(text: str, seconds: float) -> None:
    cfg = load(MINIMAL + f"timeouts: {{connect: {text}}}\n")
    assert cfg.timeouts.connect == pytest.approx(seconds)


def test_duration_dumps_back_to_a_loadable_form() -> None:
    cfg = load(MINIMAL + "timeouts: {connect: 250ms, response: 1m}\n")
    dumped = cfg.model_dump(mode="json")["timeouts"]
    assert dumped["connect"] == "250ms"
    assert dumped["response"] == "60s"


@pytest.mark.parametrize(
    ("written", "host", "port"),
    [
        ("'[::1]:8080'", "::1", 8080),
        ("'[::]:80'", "::", 80),
        ("'[2001:db8::10]:0'", "2001:db8::10", 0),
        ("0.0.0.0:443", "0.0.0.0", 443),
        ("localhost:8080", "localhost", 8080),
    ],
)
def test_listener_addresses(written: str, host: str, port: int) -> None:
    cfg = load(MINIMAL + f"listeners: [{{address: {written}}}]\n")
    assert cfg.listeners[0].address == Address(host, port)


def test_ipv6_and_dns_backends_and_str_form() -> None:
    cfg = load(
        """
        pools:
          web:
            backends:
              - {id: v6, address: "[fe80::1]:9000"}
              - {id: dns, address: app-1.internal.example:9000}
        """
    )
    v6, dns = cfg.pools["web"].backends
    assert v6.address == Address("fe80::1", 9000)
    assert str(v6.address) == "[fe80::1]:9000"
    assert dns.address.host == "app-1.internal.example"


def test_workers_auto_is_the_core_count() -> None:
    assert load(MINIMAL + "workers: auto\n").workers == (os.cpu_count() or 1)
    assert load(MINIMAL + "workers: 4\n").workers == 4


def test_consistent_hash_defaults_its_key_to_ip() -> None:
    cfg = load(
        """
        pools:
          a: {balancer: {algorithm: consistent_hash}}
          b: {balancer: {algorithm: consistent_hash, hash_key: "header:X-User"}}
          c: {balancer: {algorithm: round_robin}}
        """
    )
    assert cfg.pools["a"].balancer.hash_key == "ip"
    assert cfg.pools["b"].balancer.hash_key == "header:X-User"
    assert cfg.pools["c"].balancer.hash_key is None


def test_every_health_check_type_loads() -> None:
    cfg = load(
        """
        pools:
          web:
            health_checks:
              - {type: http, path: /hz, expect_status: [200, "300-399", "204"], expect_body: "ok$",
                 headers: {X-Probe: "1"}, port: 8081, method: HEAD, tls: true}
              - {type: tcp, send: "PING\\r\\n", expect: "^\\\\+PONG"}
              - {type: database, flavor: mysql, user: root}
              - {type: redis, expect_role: master, db: 2}
              - {type: system_metrics, max_cpu_percent: 90, max_load1: 8}
              - {type: custom_script, command: "check-db --fast", env: {A: b}}
              - {type: custom_script, command: [/bin/true]}
              - {type: disk_space, min_free_bytes: 1}
              - {type: memory_usage, max_percent: 95, interval: 30s, jitter: 0}
        node_checks:
          - {type: disk_space, path: /var, min_free_percent: 10}
          - {type: memory_usage}
          - {type: system_metrics}
          - {type: custom_script, command: [/bin/true]}
        on_unhealthy: shed
        """
    )
    checks = cfg.pools["web"].health_checks
    assert [c.type for c in checks] == [
        "http",
        "tcp",
        "database",
        "redis",
        "system_metrics",
        "custom_script",
        "custom_script",
        "disk_space",
        "memory_usage",
    ]
    http = checks[0]
    assert http.expect_status == [200, "300-399", 204]
    assert (http.port, http.method, http.tls, http.headers) == (
        8081,
        "HEAD",
        True,
        {"X-Probe": "1"},
    )
    assert checks[1].send == "PING\r\n"
    assert checks[5].command == "check-db --fast"
    assert checks[6].command == ["/bin/true"]
    assert (checks[8].interval, checks[8].jitter) == (30.0, 0.0)
    assert [c.type for c in cfg.node_checks] == [
        "disk_space",
        "memory_usage",
        "system_metrics",
        "custom_script",
    ]
    assert cfg.on_unhealthy == "shed"


def test_pool_options_load() -> None:
    cfg = load(
        """
        pools:
          web:
            balancer:
              algorithm: least_connections
              choices: 2
              trusted_proxies: [10.0.0.0/8, "2001:db8::/32", 192.168.1.7]
              slow_start: 30s
            passive: {consecutive_failures: 3, ejection: 10s, on_5xx: true}
            failover: {strategy: multi_active, panic_threshold: 25, on_panic: fail}
            queue_timeout: 500ms
            keepalive: {max_idle: 0, max_requests: 100}
            regions:
              weights: {eu-west: 2, us-east: 1}
              client_region: {header: X-Region, cidrs: {eu-west: [10.1.0.0/16]}}
            backends:
              - {id: a, address: "10.0.0.1:80", region: eu-west, group: g1, priority: 1,
                 max_connections: 100, weight: 0}
        """
    )
    pool = cfg.pools["web"]
    assert pool.balancer.choices == 2
    assert pool.balancer.slow_start == 30.0
    assert pool.passive is not None and pool.passive.ejection == 10.0
    assert pool.failover.strategy == "multi_active"
    assert pool.queue_timeout == 0.5
    assert pool.regions is not None
    assert pool.regions.weights == {"eu-west": 2.0, "us-east": 1.0}
    assert pool.regions.client_region.cidrs == {"eu-west": ["10.1.0.0/16"]}
    assert pool.backends[0].weight == 0


def write_tls(folder: Path) -> tuple[Path, Path]:
    import trustme

    server = trustme.CA().issue_cert("localhost")
    cert, key = folder / "server.pem", folder / "server.key"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    return cert, key


def test_tls_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    (conf_dir / "tls").mkdir(parents=True)
    write_tls(conf_dir / "tls")
    file = conf_dir / "haproxyd.yaml"
    file.write_text(
        MINIMAL
        + "listeners:\n  - address: 127.0.0.1:8443\n"
        + "    tls: {cert: tls/server.pem, key: tls/server.key}\n"
    )
    monkeypatch.chdir(tmp_path)  # not the config directory: resolution must not use the cwd
    cfg = load_config(file.relative_to(tmp_path), env={})
    tls = cfg.listeners[0].tls
    assert tls is not None
    assert Path(tls.cert) == conf_dir / "tls" / "server.pem"
    assert Path(tls.key) == conf_dir / "tls" / "server.key"
    assert Path(tls.cert).is_absolute()


def test_tls_missing_files_are_errors(tmp_path: Path) -> None:
    text = MINIMAL + "listeners:\n  - address: 127.0.0.1:8443\n    tls: {cert: a.pem, key: a.key}\n"
    found = issues(text, base_dir=tmp_path)
    assert {i.path for i in found} == {"listeners[0].tls.cert", "listeners[0].tls.key"}
    assert all(i.line == 7 for i in found)  # the `tls:` line
    assert str(tmp_path / "a.pem") in found[0].message + found[1].message


def test_tls_key_that_does_not_match_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write_tls(tmp_path / "one")
    _, other_key = write_tls(tmp_path / "two")
    shutil.copy(other_key, tmp_path / "one" / "other.key")
    text = MINIMAL + "listeners:\n  - address: 127.0.0.1:8443\n"
    text += "    tls: {cert: one/server.pem, key: one/other.key}\n"
    (issue,) = issues(text, base_dir=tmp_path)
    assert issue.path == "listeners[0].tls"
    assert "do not load together" in issue.message


def test_access_log_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    text = MINIMAL + "access_log: {enabled: true, path: logs/access.log}\n"
    assert load(text, base_dir=tmp_path).access_log.path == str(tmp_path / "logs/access.log")
    assert load(MINIMAL + "access_log: {path: '-'}\n").access_log.path == "-"


def test_dump_and_validate_document_round_trip() -> None:
    """The admin API's config/update merges into a dump and validates it again."""
    cfg = load_config(REPO / "config" / "haproxyd.yaml", env={})
    again = validate_document(cfg.model_dump(mode="json"), source="admin", env={})
    assert again == cfg


def test_validate_document_does_not_modify_its_input() -> None:
    document = {"pools": {"web": {}}}
    validate_document(document, source="doc", env={"NODE_ID": "n9", "QUORUM_SIZE": "3"})
    assert document == {"pools": {"web": {}}}


def test_models_are_frozen() -> None:
    cfg = load(MINIMAL)
    with pytest.raises(pydantic.ValidationError):
        cfg.workers = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        cfg.pools["web"].backends[0].weight = 5  # type: ignore[misc]


def _models() -> list[type[pydantic.BaseModel]]:
    # The schema re-exports every section model (each lives in a module of
    # haproxyd.config.sections); the balancer's options are declared by the algorithms.
    option_models = {a.options for a in registry.algorithms().values()}
    exported = {
        value
        for value in vars(schema).values()
        if isinstance(value, type)
        and issubclass(value, pydantic.BaseModel)
        and value.__module__.startswith("haproxyd.config")
        and not value.__name__.startswith("_")
    }
    return sorted(exported | option_models, key=lambda m: m.__name__)


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_model_forbids_extras_is_frozen_and_describes_fields(
    model: type[pydantic.BaseModel],
) -> None:
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("frozen") is True
    undocumented = [name for name, f in model.model_fields.items() if not f.description]
    assert undocumented == []


def test_health_check_union_covers_the_contract_types() -> None:
    union = typing.get_args(schema.HealthCheckConfig)[0]
    types = {typing.get_args(m.model_fields["type"].annotation)[0] for m in typing.get_args(union)}
    assert types == {
        "http",
        "tcp",
        "database",
        "redis",
        "grpc",
        "system_metrics",
        "custom_script",
        "disk_space",
        "memory_usage",
    }


def test_extension_keys_hold_yaml_anchors() -> None:
    cfg = load(
        """
        x-check: &check {type: tcp, interval: 2s}
        pools:
          web:
            health_checks:
              - *check
              - {<<: *check, interval: 3s}
        """
    )
    assert [c.interval for c in cfg.pools["web"].health_checks] == [2.0, 3.0]


# -- routing --

ROUTED = """
pools:
  web: {}
  api: {}
  admin: {}
  v6: {}
routes:
  - match: {host: API.example.com, path_prefix: /v1}
    pool: api
  - match: {host: "[::1]"}
    pool: v6
  - match: {path_prefix: /admin}
    pool: admin
  - match: {path_prefix: /}
    pool: web
"""


@pytest.mark.parametrize(
    ("host", "path", "pool"),
    [
        ("api.example.com", "/v1/users", "api"),
        ("API.EXAMPLE.COM:8443", "/v1", "api"),  # case and port ignored
        ("api.example.com", "/v2", "web"),
        ("api.example.com", "/v1x", "api"),  # a plain prefix, not a path segment
        ("other.example.com", "/v1/users", "web"),
        ("[::1]:8080", "/anything", "v6"),
        (None, "/admin/x", "admin"),
        (None, "/", "web"),
    ],
)
def test_pool_for(host: str | None, path: str, pool: str) -> None:
    assert load(ROUTED).pool_for(host, path) == pool


def test_pool_for_without_routes_is_the_first_pool() -> None:
    cfg = load("pools: {first: {}, second: {}}\n")
    assert cfg.pool_for("example.com", "/x") == "first"


def test_pool_for_without_a_match_raises() -> None:
    cfg = load("pools: {web: {}}\nroutes: [{match: {path_prefix: /api}, pool: web}]\n")
    with pytest.raises(LookupError):
        cfg.pool_for("example.com", "/other")


def test_route_hosts_are_stored_normalised() -> None:
    cfg = load(
        """
        pools: {web: {}}
        routes:
          - {match: {host: WWW.Example.com}, pool: web}
          - {match: {host: "::1"}, pool: web}
        """
    )
    assert [r.match.host for r in cfg.routes] == ["www.example.com", "[::1]"]
