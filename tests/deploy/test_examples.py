"""Every configuration the project ships passes `haproxyd check`, as an operator would
run it, and the systemd unit calls commands that exist.

Configs are found by globbing: any YAML file under examples/ or config/ with a
top-level `pools` mapping (a haproxyd config cannot do without one) is checked, so a new
example is covered without touching this file. The other YAML there (Prometheus rules,
Grafana provisioning) is tested where it is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from haproxyd.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _is_haproxyd_config(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return True  # a broken file must fail the check below, not be skipped
    return isinstance(data, dict) and isinstance(data.get("pools"), dict)


CONFIGS = sorted(
    path
    for folder in ("examples", "config")
    for pattern in ("**/*.yaml", "**/*.yml")
    for path in (REPO / folder).glob(pattern)
    if _is_haproxyd_config(path)
)


# docker-compose.ha.yml runs these with HAPROXYD_ADMIN_TOKEN required (their admin API
# faces the compose network): they are checked as it runs them.
COMPOSE_NODES = "cluster-node*.yaml"
COMPOSE_ENV = {"HAPROXYD_ADMIN_TOKEN": "as-docker-compose-requires"}


def check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "haproxyd", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_config_passes_check(path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HAPROXYD_ADMIN_TOKEN"}
    if path.match(COMPOSE_NODES):
        env.update(COMPOSE_ENV)
    result = check(path, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configuration OK"


def test_a_compose_node_without_its_token_is_refused() -> None:
    nodes = [path for path in CONFIGS if path.match(COMPOSE_NODES)]
    assert len(nodes) == 3
    env = {k: v for k, v in os.environ.items() if k != "HAPROXYD_ADMIN_TOKEN"}
    for path in nodes:
        result = check(path, env)
        assert result.returncode == 1, result.stdout
        assert "admin.address" in result.stderr and "admin.token" in result.stderr


def test_there_are_configs_to_check() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "haproxyd.yaml",
        "nginx-migration.yaml",
        "active-passive-postgres.yaml",
        "multi-region.yaml",
        "cluster-node1.yaml",
        "cluster-node2.yaml",
        "cluster-node3.yaml",
    } <= names


def test_examples_show_what_their_names_say() -> None:
    examples = REPO / "examples"
    postgres = load_config(examples / "active-passive-postgres.yaml", env={})
    pool = next(iter(postgres.pools.values()))
    assert pool.failover.strategy == "active_passive"
    assert [b.role for b in pool.backends].count("primary") == 1
    assert any(b.role == "backup" for b in pool.backends)
    databases = [c for c in pool.health_checks if c.type == "database"]
    assert databases and all(c.flavor == "postgresql" for c in databases)

    regions = load_config(examples / "multi-region.yaml", env={})
    pool = next(iter(regions.pools.values()))
    assert pool.failover.strategy == "multi_active" and pool.regions is not None
    assert regions.node.region in {b.region for b in pool.backends}
    assert len({b.region for b in pool.backends}) >= 2
    assert set(pool.regions.weights) == {b.region for b in pool.backends}

    nodes = [load_config(examples / f"cluster-node{n}.yaml", env=COMPOSE_ENV) for n in (1, 2, 3)]
    assert [c.node.id for c in nodes] == ["node-1", "node-2", "node-3"]
    for config in nodes:
        assert config.cluster.enabled and config.cluster.quorum_size == 2
        assert config.cluster.redis_url.startswith("redis://")
        assert len(config.cluster.discovery_servers) == 2
    # The three differ only where a node must (its id, its peers, and its access log's
    # file in the volume the nodes share, named after its id: the `node` label in Loki).
    bodies = []
    for config in nodes:
        data = config.model_dump(mode="json")
        node_id = data["node"].pop("id")
        data["cluster"].pop("discovery_servers")
        assert data["access_log"].pop("path") == f"/var/log/haproxyd/{node_id}.access.log"
        bodies.append(data)
    assert bodies[0] == bodies[1] == bodies[2]


def _unit() -> dict[str, str]:
    unit = (REPO / "examples" / "haproxyd.service").read_text()
    return dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )


def test_systemd_unit_uses_the_real_cli() -> None:
    lines = _unit()
    assert lines["ExecStart"].split()[1:3] == ["-c", "/etc/haproxyd/haproxyd.yaml"]
    # ExecReload runs `haproxyd reload`, which sends SIGHUP and waits for the outcome.
    assert lines["ExecReload"].split()[1] == "reload"
    assert lines["ExecStartPre"].split()[1] == "check"
    # The reload finds the daemon through the pid file ExecStart writes.
    start, reload = lines["ExecStart"].split(), lines["ExecReload"].split()
    assert start[start.index("-p") + 1] == reload[reload.index("-p") + 1]
    # The subcommands the unit relies on exist in the CLI.
    for command in ("check", "reload"):
        result = subprocess.run(
            [sys.executable, "-m", "haproxyd", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify also checks that each Exec* binary exists: point them at the installed CLI.
    haproxyd = shutil.which("haproxyd") or pytest.skip("the haproxyd script is not on PATH")
    unit = (REPO / "examples" / "haproxyd.service").read_text()
    copy = tmp_path / "haproxyd.service"
    copy.write_text(unit.replace("/usr/local/bin/haproxyd", haproxyd))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and bad values are only warnings (exit 0): any output is a finding.
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output
