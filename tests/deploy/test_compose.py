"""docker-compose.ha.yml without a Docker engine: valid against the Compose
specification's JSON schema (vendored in data/, see data/README.md), every file it
references exists, and its parts agree with each other (the node configs name the
compose services they talk to, Prometheus scrapes the nodes' admin ports, Grafana's
provisioning points at the mounted dashboard, keepalived sits in each node's network
namespace and checks its /ready, Vector reads the files the nodes write, and Grafana's
Loki and Jaeger data sources link to each other)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from haproxyd.config import load_config
from haproxyd.config.types import parse_address

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.ha.yml"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"
CONFIG_TARGET = "/etc/haproxyd/haproxyd.yaml"

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    # The schema says draft-07 with a URI spelling ("https://...draft-07/schema", no
    # "#") that jsonschema does not look up, so the draft is named here.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_matches_the_compose_spec_schema() -> None:
    errors = sorted(validator().iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{e.json_path}: {e.message[:300]}" for e in errors)


@pytest.mark.parametrize(
    "broken",
    [
        {"services": {"web": {"image": "x", "restart_policy": "always"}}},  # unknown key
        {"services": {"web": {"image": "x", "ports": {"8080": 80}}}},  # not a list
        {"services": {"web": {"image": "x", "depends_on": {"db": {"condition": "up"}}}}},
        {"servics": {}},
    ],
)
def test_schema_rejects_what_compose_would_reject(broken: dict[str, Any]) -> None:
    assert list(validator().iter_errors(broken))


# -- referenced files ---------------------------------------------------------------------


def _is_host_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def referenced_paths() -> list[tuple[str, Path]]:
    """(where, host path) for every file or directory the compose file refers to."""
    refs: list[tuple[str, Path]] = []
    for name, service in SERVICES.items():
        build = service.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if isinstance(build, dict):
            context = REPO / build.get("context", ".")
            refs.append((f"{name}.build.context", context))
            if "dockerfile_inline" not in build:
                dockerfile = context / build.get("dockerfile", "Dockerfile")
                refs.append((f"{name}.build.dockerfile", dockerfile))
        for index, volume in enumerate(service.get("volumes", [])):
            where = f"{name}.volumes[{index}]"
            if isinstance(volume, str):
                source = volume.split(":", 1)[0]
                if _is_host_path(source):
                    refs.append((where, REPO / source))
            elif volume.get("type") == "bind":
                refs.append((where, REPO / volume["source"]))
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            refs.append((f"{name}.env_file", REPO / path))
    for section in ("configs", "secrets"):
        for name, item in (COMPOSE.get(section) or {}).items():
            if "file" in item:
                refs.append((f"{section}.{name}.file", REPO / item["file"]))
    return refs


def test_every_referenced_file_exists() -> None:
    refs = referenced_paths()
    missing = [f"{where}: {path}" for where, path in refs if not path.exists()]
    assert not missing, "\n".join(missing)
    named = {path.resolve().relative_to(REPO).as_posix() for _, path in refs}
    # The references this test is about are really found (it is not vacuously green).
    assert {
        "Dockerfile",
        "examples/cluster-node1.yaml",
        "examples/cluster-node2.yaml",
        "examples/cluster-node3.yaml",
        "examples/prometheus",
        "examples/grafana/haproxyd-dashboard.json",
        "examples/grafana/provisioning/datasources",
        "examples/grafana/provisioning/dashboards",
        "examples/redis/sentinel.conf",
        "examples/keepalived",
        "examples/keepalived/keepalived.conf",
        "examples/vector/vector.yaml",
    } <= named


def test_named_volumes_and_networks_are_declared() -> None:
    volumes = set(COMPOSE.get("volumes") or {})
    networks = set(COMPOSE.get("networks") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and not _is_host_path(source):
                assert source in volumes, f"{name}: volume {source!r} is not declared"
        used = service.get("networks", [])
        for network in used if isinstance(used, list) else list(used):
            assert network in networks, f"{name}: network {network!r} is not declared"
        for dep in service.get("depends_on", []):
            assert dep in SERVICES, f"{name} depends on unknown service {dep!r}"


# -- the parts agree -----------------------------------------------------------------------


def mount_source(service: dict[str, Any], target: str) -> Path:
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2 and parts[1] == target:
                return REPO / parts[0]
    raise AssertionError(f"nothing is mounted at {target}")


HAPROXYD_IMAGE = "haproxyd:local"


def haproxyd_nodes() -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in SERVICES.items()
        if s.get("image") == HAPROXYD_IMAGE and s.get("entrypoint") is None
    }


def host_of(address: str) -> str:
    return parse_address(address).host


# The environment the compose file gives the nodes (it requires a token).
COMPOSE_ENV = {"HAPROXYD_ADMIN_TOKEN": "as-docker-compose-requires"}


def test_three_cluster_nodes_each_with_its_own_config() -> None:
    nodes = haproxyd_nodes()
    assert sorted(nodes) == ["haproxyd-1", "haproxyd-2", "haproxyd-3"]
    configs = {name: mount_source(s, CONFIG_TARGET) for name, s in nodes.items()}
    assert len(set(configs.values())) == 3
    loaded = {name: load_config(path, env=COMPOSE_ENV) for name, path in configs.items()}
    assert len({c.node.id for c in loaded.values()}) == 3
    for name, cfg in loaded.items():
        assert cfg.cluster.enabled and cfg.cluster.quorum_size == 2
        redis_host = re.match(r"redis://([^:/]+)", cfg.cluster.redis_url)
        assert redis_host and redis_host.group(1) in SERVICES, cfg.cluster.redis_url
        assert "redis" in nodes[name]["depends_on"]
        peers = {host_of(p): parse_address(p).port for p in cfg.cluster.discovery_servers}
        assert set(peers) == set(nodes) - {name}, f"{name}: discovery_servers {peers}"
        for peer, port in peers.items():
            assert port == loaded[peer].admin.address.port
        for pool in cfg.pools.values():
            for backend in pool.backends:
                assert host_of(str(backend.address)) in SERVICES, backend.address
        published = {p.rsplit(":", 1)[-1] for p in nodes[name]["ports"]}
        assert str(cfg.listeners[0].address.port) in published
        assert str(cfg.admin.address.port) in published
        token = nodes[name]["environment"]["HAPROXYD_ADMIN_TOKEN"]
        assert token.startswith("${HAPROXYD_ADMIN_TOKEN:?"), "the admin token must be required"
        # Its peers call it by its service name: a Host its admin API must answer.
        assert name in cfg.admin.allowed_hosts, cfg.admin.allowed_hosts


def test_demo_backends_run_the_script_the_image_ships() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    backends = {
        n: s
        for n, s in SERVICES.items()
        if s.get("image") == HAPROXYD_IMAGE and s.get("entrypoint")
    }
    assert sorted(backends) == ["backend-1", "backend-2", "backend-3"]
    for name, service in backends.items():
        script = PurePosixPath(service["entrypoint"][-1])
        assert (REPO / "deploy" / script.name).is_file()
        assert re.search(rf"COPY .*deploy/{script.name}.* {script.parent}/", dockerfile)
        args = service["command"]
        assert args[args.index("--name") + 1] == name
        probe = service["healthcheck"]["test"]
        port = args[args.index("--port") + 1]
        assert probe[-1] == f"http://127.0.0.1:{port}/healthz"


def test_prometheus_scrapes_every_node_and_loads_the_alerts() -> None:
    service = SERVICES["prometheus"]
    config_arg = next(a for a in service["command"] if a.startswith("--config.file="))
    config_path = PurePosixPath(config_arg.split("=", 1)[1])
    folder = mount_source(service, str(config_path.parent))
    prometheus = yaml.safe_load((folder / config_path.name).read_text())
    for rules in prometheus["rule_files"]:
        assert (folder / rules).is_file(), rules
    assert "alerts.yml" in prometheus["rule_files"]
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    expected = set()
    for name, node in haproxyd_nodes().items():
        cfg = load_config(mount_source(node, CONFIG_TARGET), env=COMPOSE_ENV)
        expected.add(f"{name}:{cfg.admin.address.port}")
        assert name in cfg.admin.allowed_hosts  # else each scrape gets 421
    assert targets == expected


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_prometheus_config() -> None:
    folder = mount_source(SERVICES["prometheus"], "/etc/prometheus")
    result = subprocess.run(
        ["promtool", "check", "config", str(folder / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    service = SERVICES["grafana"]
    datasources_dir = mount_source(service, "/etc/grafana/provisioning/datasources")
    dashboards_dir = mount_source(service, "/etc/grafana/provisioning/dashboards")
    datasources = [
        ds
        for path in sorted(datasources_dir.glob("*.yml"))
        for ds in yaml.safe_load(path.read_text())["datasources"]
    ]
    prometheus = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0]["isDefault"]
    url = re.fullmatch(r"http://([^:/]+):(\d+)/?", prometheus[0]["url"])
    assert url and url.group(1) in SERVICES
    assert any(p.endswith(f":{url.group(2)}") for p in SERVICES["prometheus"]["ports"])
    providers = [
        p
        for path in sorted(dashboards_dir.glob("*.yml"))
        for p in yaml.safe_load(path.read_text())["providers"]
    ]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    folder = providers[0]["options"]["path"]
    dashboard = mount_source(service, f"{folder}/haproxyd-dashboard.json")
    assert dashboard == REPO / "examples" / "grafana" / "haproxyd-dashboard.json"
    # File provisioning does not fill `__inputs` placeholders: panels must pick the data
    # source through the dashboard's own variable instead of ${DS_...}.
    document = json.loads(dashboard.read_text())
    body = json.dumps({k: v for k, v in document.items() if k != "__inputs"})
    assert "${DS_" not in body
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == prometheus[0]["type"]


def test_sentinel_is_an_optional_profile() -> None:
    with_profile = {n for n, s in SERVICES.items() if s.get("profiles")}
    assert with_profile == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert all(SERVICES[n]["profiles"] == ["sentinel"] for n in with_profile)
    conf = (REPO / "examples" / "redis" / "sentinel.conf").read_text()
    monitor = re.search(r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", conf, re.M)
    assert monitor and monitor.group(2) in SERVICES and int(monitor.group(4)) == 2


def test_the_sentinel_profile_can_carry_the_nodes_redis() -> None:
    """The `redis+sentinel://` URL the compose file gives names the profile's sentinels
    on the port they listen on and the service they monitor; the nodes take it from
    HAPROXYD_REDIS_URL (empty by default: the files' own `redis://redis`)."""
    found = re.search(r"HAPROXYD_REDIS_URL=(\S+)", COMPOSE_FILE.read_text())
    assert found, "the compose file shows no Sentinel URL for the nodes"
    url = found.group(1)
    conf = (REPO / "examples" / "redis" / "sentinel.conf").read_text()
    port = re.search(r"^port (\d+)$", conf, re.M)
    monitor = re.search(r"^sentinel monitor (\S+) ", conf, re.M)
    assert port and monitor
    parts = urlsplit(url)
    assert parts.scheme == "redis+sentinel" and parts.path.strip("/") == monitor.group(1)
    hosts = [item.rsplit(":", 1) for item in parts.netloc.split(",")]
    sentinels = {
        name
        for name, service in SERVICES.items()
        if "redis-sentinel" in " ".join(service.get("command", []))
    }
    assert {host for host, _ in hosts} == sentinels
    assert {p for _, p in hosts} == {port.group(1)}
    for name, node in haproxyd_nodes().items():
        assert node["environment"]["HAPROXYD_REDIS_URL"] == "${HAPROXYD_REDIS_URL:-}", name
        path = mount_source(node, CONFIG_TARGET)
        unset = {**COMPOSE_ENV, "HAPROXYD_REDIS_URL": ""}
        assert load_config(path, env=unset).cluster.redis_url.startswith("redis://redis:")
        sentinel = {**COMPOSE_ENV, "HAPROXYD_REDIS_URL": url}
        assert load_config(path, env=sentinel).cluster.redis_url == url


# -- traces and logs -----------------------------------------------------------------------


def service_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def test_the_nodes_export_their_spans_to_jaeger() -> None:
    jaeger = SERVICES["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/")
    assert "127.0.0.1:16686:16686" in jaeger["ports"]  # the UI
    for name, node in haproxyd_nodes().items():
        config = yaml.safe_load(mount_source(node, "/etc/haproxyd/haproxyd.yaml").read_text())
        tracing = config["tracing"]
        assert tracing["enabled"] is True, name
        host, port = service_host_port(tracing["endpoint"])
        assert (host, port) == ("jaeger", 4318), name  # Jaeger's OTLP/HTTP receiver
        assert urlsplit(tracing["endpoint"]).path == "/v1/traces", name
        assert set(node["networks"]) & set(jaeger["networks"]), name


def test_vector_reads_the_access_logs_the_nodes_write() -> None:
    vector = SERVICES["vector"]
    config_arg = vector["command"][vector["command"].index("--config") + 1]
    config = yaml.safe_load(mount_source(vector, config_arg).read_text())
    (source,) = config["sources"].values()
    assert source["type"] == "file"
    (pattern,) = source["include"]
    log_volume = next(
        v for v in vector["volumes"] if isinstance(v, str) and v.startswith("haproxyd-logs:")
    )
    log_dir = log_volume.split(":")[1]
    for name, node in haproxyd_nodes().items():
        cfg = load_config(mount_source(node, CONFIG_TARGET), env=COMPOSE_ENV)
        assert cfg.access_log.enabled and cfg.access_log.path, name
        path = PurePosixPath(cfg.access_log.path)
        assert path.match(pattern), (name, path, pattern)
        assert f"haproxyd-logs:{path.parent}" in node["volumes"], name
        assert str(path.parent) == log_dir
        assert path.name == f"{cfg.node.id}.access.log"  # the `node` label
    (sink,) = config["sinks"].values()
    assert sink["type"] == "loki" and sink["inputs"] == list(config["transforms"])
    assert service_host_port(sink["endpoint"])[0] == "loki"
    assert set(sink["labels"]) == {"job", "node", "pool"}  # few, bounded labels
    assert sink["labels"]["job"] == "haproxyd"  # what the dashboard's logs panel asks for
    assert "loki" in vector["depends_on"]


def grafana_datasources() -> dict[str, dict[str, Any]]:
    folder = mount_source(SERVICES["grafana"], "/etc/grafana/provisioning/datasources")
    return {
        ds["type"]: ds
        for path in sorted(folder.glob("*.yml"))
        for ds in yaml.safe_load(path.read_text())["datasources"]
    }


def test_grafana_links_logs_metrics_and_traces() -> None:
    sources = grafana_datasources()
    loki, jaeger, prometheus = sources["loki"], sources["jaeger"], sources["prometheus"]
    for source in (loki, jaeger):
        host, port = service_host_port(source["url"])
        assert host in SERVICES and any(p.endswith(f":{port}") for p in SERVICES[host]["ports"]), (
            source["url"]
        )
    # A log line's trace_id links to Jaeger; a span's logs are found in Loki.
    (field,) = loki["jsonData"]["derivedFields"]
    assert field["datasourceUid"] == jaeger["uid"] and field["url"] == "$${__value.raw}"
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    line = json.dumps({"status": 200, "trace_id": trace_id}, separators=(",", ":"))
    found = re.search(field["matcherRegex"], line)
    assert found and found.group(1) == trace_id
    assert jaeger["jsonData"]["tracesToLogsV2"]["datasourceUid"] == loki["uid"]
    (exemplars,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert exemplars["datasourceUid"] == jaeger["uid"]
    assert "--enable-feature=exemplar-storage" in SERVICES["prometheus"]["command"]
    # The dashboard shows the access log from that Loki.
    document = json.loads((REPO / "examples" / "grafana" / "haproxyd-dashboard.json").read_text())
    logs = [p for p in document["panels"] if p["type"] == "logs"]
    assert logs and all(p["datasource"]["uid"] == loki["uid"] for p in logs)
    assert all('job="haproxyd"' in t["expr"] for p in logs for t in p["targets"])
