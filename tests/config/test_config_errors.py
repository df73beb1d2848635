"""Invalid configurations: every error names its YAML path and line, all at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from config_helpers import MINIMAL, by_path, issues, line_of, load

from haproxyd.config import ConfigError, ConfigIssue, load_config, validate_document


def test_issue_and_error_formatting() -> None:
    issue = ConfigIssue("pools.web.backends[1].weight", 12, "too heavy", "haproxyd.yaml")
    assert str(issue) == "haproxyd.yaml:12: pools.web.backends[1].weight: too heavy"
    assert str(ConfigIssue("admin.token", None, "empty", "doc")) == "doc: admin.token: empty"
    assert (
        str(ConfigIssue("", 3, "YAML syntax error: x", "f.yaml"))
        == "f.yaml:3: YAML syntax error: x"
    )
    error = ConfigError([ConfigIssue("b", 9, "second", "f"), ConfigIssue("a", 2, "first", "f")])
    assert [i.line for i in error.issues] == [2, 9]  # file order
    assert str(error) == "f:2: a: first\nf:9: b: second"
    single = ConfigError.single("reload", "no config file to reload")
    assert [(i.path, i.line, i.message) for i in single.issues] == [
        ("reload", None, "no config file to reload")
    ]


def test_unknown_key_names_its_path_line_and_a_suggestion() -> None:
    text = """
    pools:
      web:
        balancer:
          algoritm: least_connections
    """
    issue = by_path(issues(text), "pools.web.balancer.algoritm")
    assert issue.line == line_of(text, "algoritm")
    assert "unknown key 'algoritm'" in issue.message
    assert "did you mean 'algorithm'" in issue.message


def test_http_check_header_that_would_split_the_probe_request_is_rejected() -> None:
    text = """
    pools:
      web:
        health_checks:
          - type: http
            host: "app.example"
            headers:
              X-Probe: "a\\r\\nX-Injected: 1"
    """
    issue = by_path(issues(text), "pools.web.health_checks[0].headers")
    assert issue.line == line_of(text, "headers:")
    assert "'X-Probe': value must not contain CR, LF" in issue.message
    bad_name = text.replace('X-Probe: "a\\r\\nX-Injected: 1"', '"Bad Name": "x"')
    issue = by_path(issues(bad_name), "pools.web.health_checks[0].headers")
    assert "invalid header name 'Bad Name'" in issue.message


def test_unknown_key_without_a_close_match_lists_the_allowed_keys() -> None:
    found = issues(MINIMAL + "zzz: 1\n")
    issue = by_path(found, "zzz")
    assert issue.line == 5
    assert "allowed keys: node, listeners" in issue.message


def test_unknown_key_inside_a_health_check_uses_the_checks_fields() -> None:
    text = """
    pools:
      web:
        health_checks:
          - type: http
            expect_staus: [200]
    """
    issue = by_path(issues(text), "pools.web.health_checks[0].expect_staus")
    assert issue.line == line_of(text, "expect_staus")
    assert "did you mean 'expect_status'" in issue.message


def test_bad_value_in_a_list_item_names_the_index() -> None:
    text = """
    pools:
      web:
        backends:
          - {id: web-1, address: 127.0.0.1:9001, weight: 1}
          - {id: web-2, address: 127.0.0.1:9002, weight: 5000}
    """
    (issue,) = issues(text)
    assert issue.path == "pools.web.backends[1].weight"
    assert issue.line == line_of(text, "web-2")
    assert "less than or equal to 1000" in issue.message
    assert "5000" in issue.message
    assert issue.source == "test.yaml"


def test_missing_key_uses_the_line_of_the_parent_mapping() -> None:
    text = """
    pools:
      web:
        backends:
          - id: web-1
            weight: 2
    """
    (issue,) = issues(text)
    assert issue.path == "pools.web.backends[0].address"
    assert issue.line == line_of(text, "id: web-1")
    assert issue.message == "required key is missing"


def test_missing_pools_section() -> None:
    (issue,) = issues("workers: 2\n")
    assert (issue.path, issue.line) == ("pools", 1)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("5x", "invalid duration '5x'"), ("-1", "cannot be negative"), ("0s", "greater than 0")],
)
def test_bad_durations(value: str, fragment: str) -> None:
    text = MINIMAL + f"timeouts:\n  connect: 2s\n  idle: {value}\n"
    (issue,) = issues(text)
    assert (issue.path, issue.line) == ("timeouts.idle", 7)
    assert fragment in issue.message


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("'::1:8080'", "[addr]:port"),
        ("'[::1]8080'", "[::1]:8080"),
        ("127.0.0.1:99999", "0-65535"),
        ("127.0.0.1", "host:port"),
        ("'*:80'", "0.0.0.0"),
        ("'bad host!:80'", "invalid host"),
    ],
)
def test_bad_addresses(address: str, fragment: str) -> None:
    (issue,) = issues(MINIMAL + f"listeners:\n  - address: {address}\n")
    assert (issue.path, issue.line) == ("listeners[0].address", 6)
    assert fragment in issue.message


def test_health_check_with_an_unknown_type() -> None:
    text = """
    pools:
      web:
        health_checks:
          - type: http
            path: /ok
          - type: htp
            path: /healthz
    """
    (issue,) = issues(text)
    assert issue.path == "pools.web.health_checks[1].type"
    assert issue.line == line_of(text, "type: htp")
    assert "unknown type 'htp'" in issue.message
    assert "http, tcp, database" in issue.message


def test_health_check_without_a_type() -> None:
    text = """
    pools:
      web:
        health_checks:
          - path: /healthz
    """
    (issue,) = issues(text)
    assert issue.path == "pools.web.health_checks[0]"
    assert issue.line == line_of(text, "path: /healthz")
    assert "required key 'type' is missing" in issue.message


def test_health_check_field_error_hides_the_union_tag() -> None:
    """pydantic's loc has the tag (`...[0].http.interval`); the YAML path does not."""
    text = """
    pools:
      web:
        health_checks:
          - type: http
            interval: soon
            expect_status: [200, "500-400", 99]
    """
    found = issues(text)
    assert by_path(found, "pools.web.health_checks[0].interval").line == line_of(text, "soon")
    bad_range = by_path(found, "pools.web.health_checks[0].expect_status[1]")
    assert "500-400" in bad_range.message
    assert (
        "outside 100-599" in by_path(found, "pools.web.health_checks[0].expect_status[2]").message
    )


@pytest.mark.parametrize(
    ("check", "path", "fragment"),
    [
        ("{type: disk_space}", "", "min_free_percent or min_free_bytes"),
        ("{type: custom_script, command: []}", ".command", "empty"),
        ('{type: custom_script, command: "a \'b"}', ".command", "cannot split"),
        ("{type: custom_script, command: [a, 1]}", ".command", "must be a string"),
        ("{type: tcp, expect: '(unclosed'}", ".expect", "regular expression"),
        ("{type: http, path: healthz}", ".path", "start with '/'"),
        ("{type: http, port: 70000}", ".port", "less than or equal to 65535"),
        ("{type: database}", ".flavor", "required key is missing"),
        ("{type: memory_usage, max_percent: 0}", ".max_percent", "greater than 0"),
        ("{type: http, jitter: 2}", ".jitter", "less than or equal to 1"),
        ("{type: redis, expect_role: primary}", ".expect_role", "'master' or 'slave'"),
    ],
)
def test_health_check_field_errors(check: str, path: str, fragment: str) -> None:
    (issue,) = issues(f"pools:\n  web:\n    health_checks:\n      - {check}\n")
    assert issue.path == "pools.web.health_checks[0]" + path
    assert issue.line == 4
    assert fragment in issue.message


def test_node_checks_only_accept_node_types() -> None:
    text = MINIMAL + "node_checks:\n  - {type: memory_usage}\n  - {type: http, path: /}\n"
    (issue,) = issues(text)
    assert (issue.path, issue.line) == ("node_checks[1]", 7)
    assert "type 'http'" in issue.message and "disk_space" in issue.message


def test_literal_error_suggests_the_closest_choice() -> None:
    (issue,) = issues("pools:\n  web:\n    balancer: {algorithm: round_robbin}\n")
    assert issue.path == "pools.web.balancer.algorithm"
    assert "did you mean 'round_robin'" in issue.message


@pytest.mark.parametrize("key", ["header:", "cookie:a b", "query:x", "IP"])
def test_bad_hash_keys(key: str) -> None:
    text = f"pools:\n  web:\n    balancer: {{algorithm: consistent_hash, hash_key: '{key}'}}\n"
    (issue,) = issues(text)
    assert (issue.path, issue.line) == ("pools.web.balancer.hash_key", 3)


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("pools: {web: {balancer: {trusted_proxies: [10.0.0.0/33]}}}", "trusted_proxies[0]"),
        ("pools: {web: {balancer: {balance_factor: 1.0}}}", "balance_factor"),
        ("pools: {web: {balancer: {choices: 3}}}", "choices"),
    ],
)
def test_balancer_option_errors(section: str, path: str) -> None:
    (issue,) = issues(section + "\n")
    assert issue.path == "pools.web.balancer." + path


def test_backend_id_syntax() -> None:
    text = "pools:\n  web:\n    backends:\n      - {id: 'web 1', address: 'h:1'}\n"
    (issue,) = issues(text)
    assert (issue.path, issue.line) == ("pools.web.backends[0].id", 4)


def test_workers_errors() -> None:
    assert by_path(issues(MINIMAL + "workers: lots\n"), "workers").message.startswith(
        "workers must be an integer >= 1 or 'auto'"
    )
    assert (
        "greater than or equal to 1" in by_path(issues(MINIMAL + "workers: 0\n"), "workers").message
    )


def test_cluster_errors() -> None:
    text = MINIMAL + textwrap.dedent(
        """\
        cluster:
          redis_url: http://localhost
          discovery_servers: [10.0.0.2:9901, nowhere]
          heartbeat_interval: 2s
          lease_ttl: 1s
        """
    )
    found = issues(text)
    assert by_path(found, "cluster.redis_url").line == 6
    assert by_path(found, "cluster.discovery_servers[1]").line == 7
    assert "at least twice heartbeat_interval" in by_path(found, "cluster.lease_ttl").message


def test_route_errors() -> None:
    text = """
    pools: {web: {}}
    routes:
      - match: {host: "example.com:8080", path_prefix: api}
        pool: web
    """
    found = issues(text)
    assert "has a port" in by_path(found, "routes[0].match.host").message
    assert "start with '/'" in by_path(found, "routes[0].match.path_prefix").message


# -- cross-section checks --


def test_route_to_an_unknown_pool() -> None:
    text = """
    pools:
      web: {}
    routes:
      - match: {path_prefix: /}
        pool: wbe
    """
    (issue,) = issues(text)
    assert issue.path == "routes[0].pool"
    assert issue.line == line_of(text, "pool: wbe")
    assert "no pool named 'wbe'" in issue.message and "web" in issue.message


def test_duplicate_backend_ids_within_and_across_pools() -> None:
    text = """
    pools:
      web:
        backends:
          - {id: a, address: 127.0.0.1:1}
          - {id: a, address: 127.0.0.1:2}
      api:
        backends:
          - {id: a, address: 127.0.0.1:3}
    """
    found = issues(text)
    within = by_path(found, "pools.web.backends[1].id")
    across = by_path(found, "pools.api.backends[0].id")
    assert within.line == line_of(text, "127.0.0.1:2")
    assert across.line == line_of(text, "127.0.0.1:3")
    assert "already used by pools.web.backends[0]" in across.message


def test_listener_and_admin_socket_clashes() -> None:
    text = """
    pools: {web: {}}
    listeners:
      - address: 0.0.0.0:8080
      - address: 127.0.0.1:8080
      - address: "[::]:8080"
      - address: 127.0.0.1:0
    admin:
      address: 127.0.0.1:0
    """
    (issue,) = issues(text)  # [::] and 0.0.0.0 differ in family; port 0 never clashes
    assert issue.path == "listeners[1].address"
    assert issue.line == line_of(text, "127.0.0.1:8080")
    assert "clashes with listeners[0].address" in issue.message


def test_listener_on_the_default_admin_port() -> None:
    (issue,) = issues(MINIMAL + "listeners: [{address: 127.0.0.1:9901}]\n")
    assert issue.path == "listeners[0].address"
    assert "default admin address" in issue.message


def test_cross_checks_are_reported_with_field_errors() -> None:
    """A field error must not hide a cross-check problem (and vice versa)."""
    text = """
    pools:
      web:
        backends:
          - {id: a, address: 127.0.0.1:1, weight: -1}
          - {id: a, address: 127.0.0.1:2}
    routes:
      - {pool: nope}
    """
    found = issues(text)
    assert {i.path for i in found} == {
        "pools.web.backends[0].weight",
        "pools.web.backends[1].id",
        "routes[0].pool",
    }


def test_cross_checks_also_guard_direct_model_construction() -> None:
    with pytest.raises(ConfigError) as info:
        validate_document(
            {"pools": {"web": {}}, "routes": [{"pool": "api"}]}, source="admin", env={}
        )
    (issue,) = info.value.issues
    assert (issue.path, issue.line, issue.source) == ("routes[0].pool", None, "admin")


# -- many errors at once --


def test_every_error_is_reported_in_file_order() -> None:
    text = """
    node: {id: "bad id"}
    listeners:
      - address: nowhere
    workers: 0
    timeouts: {connect: fast}
    pools:
      web:
        balancer: {algoritm: random}
        health_checks:
          - {type: nope}
        backends:
          - {id: a, address: 127.0.0.1:1, role: spare}
    routes:
      - {pool: missing}
    cluster: {quorum_size: 0}
    """
    found = issues(text)
    assert [i.path for i in found] == [
        "node.id",
        "listeners[0].address",
        "workers",
        "timeouts.connect",
        "pools.web.balancer.algoritm",
        "pools.web.health_checks[0].type",
        "pools.web.backends[0].role",
        "routes[0].pool",
        "cluster.quorum_size",
    ]
    lines = [i.line for i in found]
    assert lines == sorted(lines)
    assert all(line is not None for line in lines)


def test_check_output_lists_every_issue(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("pools:\n  web:\n    retries: {attempts: -1}\n    queue_timeout: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert str(info.value).splitlines() == [
        f"{file}:3: pools.web.retries.attempts: "
        "Input should be greater than or equal to 0 (got -1)",
        f"{file}:4: pools.web.queue_timeout: invalid duration 'x': use a number with ms, s, m, h "
        "or d (e.g. 250ms, 5s)",
    ]


# -- YAML level --


def test_duplicate_keys_are_errors() -> None:
    text = """
    pools:
      web:
        balancer: {algorithm: random}
        backends:
          - {id: a, address: 127.0.0.1:1, weight: 1, weight: 2}
        balancer: {algorithm: round_robin}
    """
    found = issues(text)
    balancer = by_path(found, "pools.web.balancer")
    assert balancer.line == line_of(text, "balancer:", occurrence=2)
    assert f"first defined on line {line_of(text, 'balancer:')}" in balancer.message
    weight = by_path(found, "pools.web.backends[0].weight")
    assert weight.line == line_of(text, "weight: 2")
    assert "column" in weight.message


def test_duplicate_keys_are_reported_with_validation_errors() -> None:
    found = issues("pools:\n  web: {}\nworkers: 1\nworkers: -2\n")
    assert [(i.path, i.line) for i in found] == [("workers", 4), ("workers", 4)]
    assert "duplicate key" in found[0].message
    assert "greater than or equal to 1" in found[1].message


def test_merge_keys_may_be_overridden() -> None:
    cfg = load(
        """
        x-base: &base {weight: 3, address: 127.0.0.1:1}
        pools:
          web:
            backends:
              - {<<: *base, id: a, weight: 4}
        """
    )
    assert cfg.pools["web"].backends[0].weight == 4


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("pools:\n  web: {\n", 3, "expected the node content"),
        ("pools:\n\tweb: {}\n", 2, "'\\t'"),
        ("pools: {web: {}}\n---\nworkers: 2\n", 2, "single document"),
        ("pools: [a\n  b: c\n", 2, "YAML syntax error"),
    ],
)
def test_yaml_syntax_errors_have_lines(text: str, line: int, fragment: str) -> None:
    (issue,) = issues(text)
    assert issue.path == ""
    assert issue.line == line
    assert fragment in issue.message


def test_unsafe_yaml_tags_are_rejected() -> None:
    (issue,) = issues("pools: !!python/object:os.system {}\n")
    assert issue.line == 1
    assert "YAML syntax error" in issue.message


@pytest.mark.parametrize(
    ("text", "kind"), [("", "empty"), ("# nothing\n", "empty"), ("- a\n", "a list")]
)
def test_document_that_is_not_a_mapping(text: str, kind: str) -> None:
    (issue,) = issues(text)
    assert issue.path == ""
    assert kind in issue.message


def test_non_string_pool_name() -> None:
    (issue,) = issues("pools:\n  web: {}\n  7: {}\n")
    assert (issue.path, issue.line) == ("pools[7]", 3)
    assert issue.message.startswith("invalid key")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml", env={})
    (issue,) = info.value.issues
    assert "cannot read the file" in issue.message
    assert issue.source == str(tmp_path / "absent.yaml")


def test_validate_document_has_paths_but_no_lines() -> None:
    with pytest.raises(ConfigError) as info:
        validate_document(
            {"pools": {"web": {"backends": [{"id": "a", "address": "h:1", "weight": "x"}]}}},
            source="admin config/update",
            env={},
        )
    (issue,) = info.value.issues
    assert (issue.path, issue.line) == ("pools.web.backends[0].weight", None)
    assert str(issue).startswith("admin config/update: pools.web.backends[0].weight: ")


def test_dotted_pool_names_are_quoted_in_paths() -> None:
    (issue,) = issues('pools:\n  "api.v1":\n    backends: [{id: a}]\n')
    assert issue.path == 'pools["api.v1"].backends[0].address'
