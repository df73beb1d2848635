"""Environment overrides: applied before validation, reported as `env NAME`."""

from __future__ import annotations

import pytest
from config_helpers import MINIMAL, by_path, issues, load

from haproxyd.config import validate_document
from haproxyd.config.env import apply_env_overrides

FILE = (
    MINIMAL
    + """\
node: {id: from-file, region: eu}
admin: {token: file-token}
environment: staging
cluster: {quorum_size: 5, discovery_servers: [a:1]}
"""
)


def test_every_override_wins_over_the_file() -> None:
    cfg = load(
        FILE,
        env={
            "NODE_ID": "node-7",
            "DISCOVERY_SERVERS": "10.0.0.1:9901, 10.0.0.2:9901,,[::1]:9901",
            "QUORUM_SIZE": "3",
            "ENVIRONMENT": "canary",
            "HAPROXYD_ADMIN_TOKEN": "s3cret",
            "HAPROXYD_REDIS_URL": "redis+sentinel://s1:26379,s2:26379/haproxyd",
        },
    )
    assert cfg.node.id == "node-7"
    assert cfg.node.region == "eu"  # the rest of the section is kept
    assert cfg.cluster.discovery_servers == ["10.0.0.1:9901", "10.0.0.2:9901", "[::1]:9901"]
    assert cfg.cluster.quorum_size == 3
    assert cfg.environment == "canary"
    assert cfg.admin.token == "s3cret"
    assert cfg.cluster.redis_url == "redis+sentinel://s1:26379,s2:26379/haproxyd"


def test_without_overrides_the_file_wins() -> None:
    cfg = load(FILE, env={"UNRELATED": "1"})
    assert (cfg.node.id, cfg.admin.token, cfg.environment) == ("from-file", "file-token", "staging")
    assert (cfg.cluster.quorum_size, cfg.cluster.discovery_servers) == (5, ["a:1"])
    assert cfg.cluster.redis_url == "redis://127.0.0.1:6379/1"  # the default


def test_overrides_create_missing_sections() -> None:
    cfg = load(MINIMAL, env={"NODE_ID": "n1", "QUORUM_SIZE": "4", "HAPROXYD_ADMIN_TOKEN": "t"})
    assert (cfg.node.id, cfg.cluster.quorum_size, cfg.admin.token) == ("n1", 4, "t")


def test_empty_variables_count_as_unset() -> None:
    cfg = load(FILE, env={"HAPROXYD_ADMIN_TOKEN": "", "NODE_ID": "  ", "DISCOVERY_SERVERS": ""})
    assert (cfg.admin.token, cfg.node.id) == ("file-token", "from-file")
    assert cfg.cluster.discovery_servers == ["a:1"]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("QUORUM_SIZE", "three", "valid integer"),
        ("QUORUM_SIZE", "0", "greater than or equal to 1"),
        ("DISCOVERY_SERVERS", "10.0.0.1:9901,nohost", "invalid address 'nohost'"),
        ("NODE_ID", "bad id", "pattern"),
        ("HAPROXYD_REDIS_URL", "http://redis:6379", "redis_url must start with"),
    ],
)
def test_invalid_override_names_the_variable(name: str, value: str, fragment: str) -> None:
    found = issues(FILE, env={name: value})
    issue = by_path(found, f"env {name}")
    assert issue.line is None
    assert fragment in issue.message
    assert "it overrides" in issue.message


def test_invalid_override_is_listed_with_file_errors() -> None:
    found = issues(MINIMAL + "workers: -1\n", env={"QUORUM_SIZE": "x"})
    assert [i.path for i in found] == ["workers", "env QUORUM_SIZE"]


def test_the_token_is_not_echoed_in_errors() -> None:
    found = issues(MINIMAL + "admin: {token: ''}\n")
    assert "(got" not in by_path(found, "admin.token").message


def test_override_into_a_malformed_section_leaves_the_error_to_validation() -> None:
    found = issues(MINIMAL + "cluster: 5\n", env={"QUORUM_SIZE": "3"})
    assert by_path(found, "cluster").line == 5


def test_validate_document_applies_the_injected_env() -> None:
    cfg = validate_document({"pools": {"web": {}}}, source="doc", env={"ENVIRONMENT": "dev"})
    assert cfg.environment == "dev"


def test_validate_document_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_ID", "from-os-env")
    assert validate_document({"pools": {"web": {}}}, source="doc").node.id == "from-os-env"


def test_apply_env_overrides_reports_what_it_set() -> None:
    document, applied = apply_env_overrides(
        {"cluster": {"enabled": True}}, {"DISCOVERY_SERVERS": "a:1,b:2", "PATH": "/bin"}
    )
    assert document == {"cluster": {"enabled": True, "discovery_servers": ["a:1", "b:2"]}}
    assert applied == {("cluster", "discovery_servers"): "DISCOVERY_SERVERS"}
