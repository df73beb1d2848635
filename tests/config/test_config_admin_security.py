"""The admin section's security settings (allowed_hosts, insecure, tls), backend target
ports, and the secrets table: redaction and restoration of a config document."""

from __future__ import annotations

import textwrap

import pytest
from config_helpers import MINIMAL, by_path, issues, line_of, load

from haproxyd.config.secrets import (
    REDACTED,
    UnkeptSecrets,
    is_secret_key,
    redact_secrets,
    redact_url,
    restore_secrets,
)

OPEN_ADMIN = MINIMAL + "admin:\n  address: 0.0.0.0:9901\n"


# -- an admin API beyond loopback needs a token, or says it is open on purpose ----------


def test_an_admin_address_beyond_loopback_without_a_token_is_refused_at_its_line():
    found = issues(OPEN_ADMIN)
    issue = by_path(found, "admin.address")
    assert issue.line == line_of(OPEN_ADMIN, "0.0.0.0:9901")
    assert "admin.token" in issue.message and "admin.insecure" in issue.message


@pytest.mark.parametrize("address", ["0.0.0.0:9901", "[::]:9901", "10.1.2.3:9901", "admin.lan:1"])
def test_every_non_loopback_admin_address_is_refused_without_a_token(address):
    assert by_path(issues(MINIMAL + f"admin:\n  address: '{address}'\n"), "admin.address")


@pytest.mark.parametrize(
    ("extra", "env"),
    [
        ("  token: s3cret\n", {}),
        ("  insecure: true\n", {}),
        ("", {"HAPROXYD_ADMIN_TOKEN": "from-env"}),
    ],
)
def test_a_token_or_insecure_lets_it_start(extra, env):
    cfg = load(OPEN_ADMIN + extra, env=env)
    assert str(cfg.admin.address) == "0.0.0.0:9901"


@pytest.mark.parametrize("address", ["127.0.0.1:9901", "[::1]:9901", "localhost:9901"])
def test_loopback_needs_neither(address):
    cfg = load(MINIMAL + f"admin:\n  address: '{address}'\n")
    assert cfg.admin.token is None and cfg.admin.insecure is False


def test_allowed_hosts_are_kept_as_host_headers_are_compared():
    cfg = load(MINIMAL + "admin:\n  allowed_hosts: [Admin.Example., '[::1]', 10.0.0.5]\n")
    assert cfg.admin.allowed_hosts == ["admin.example", "::1", "10.0.0.5"]


@pytest.mark.parametrize("bad", ["'*'", "'a b'", "'evil.example/x'", "''"])
def test_allowed_hosts_must_be_host_names(bad):
    found = issues(MINIMAL + f"admin:\n  allowed_hosts: [{bad}]\n")
    assert by_path(found, "admin.allowed_hosts[0]")


def test_admin_tls_files_must_exist_and_load(tls_files, tmp_path):
    ca = tmp_path / "clients-ca.pem"
    tls_files.ca.cert_pem.write_to_path(str(ca))
    files = f"cert: {tls_files.cert}, key: {tls_files.key}"
    ok = load(MINIMAL + f"admin:\n  tls: {{{files}, client_ca: {ca}}}\n")
    assert ok.admin.tls is not None and ok.admin.tls.client_ca == str(ca)
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    text = MINIMAL + f"admin:\n  tls: {{{files}, client_ca: {garbage}}}\n"
    assert "CA bundle" in by_path(issues(text), "admin.tls.client_ca").message
    missing = MINIMAL + f"admin:\n  tls: {{cert: {tmp_path / 'nope.pem'}, key: {tls_files.key}}}\n"
    assert "not found" in by_path(issues(missing), "admin.tls.cert").message


# -- backend addresses are destinations: a port of 1-65535, in ASCII digits -------------


@pytest.mark.parametrize("address", ["127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:1-5", "h:٨٠"])
def test_a_backend_address_needs_a_real_port(address):
    text = textwrap.dedent(
        f"""\
        pools:
          web:
            backends:
              - {{id: web-1, address: '{address}'}}
        """
    )
    assert "port" in by_path(issues(text), "pools.web.backends[0].address").message


def test_port_zero_still_means_any_free_port_for_listeners():
    cfg = load(MINIMAL + "listeners:\n  - address: 127.0.0.1:0\n")
    assert cfg.listeners[0].address.port == 0


# -- secrets: one table, redaction and restoration both from it --------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@127.0.0.1:6379/1", f"redis://:{REDACTED}@127.0.0.1:6379/1"),
        ("redis://user:p%40ss@h:6379/0", f"redis://user:{REDACTED}@h:6379/0"),
        ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/1"),
        ("rediss://user@h:6380", "rediss://user@h:6380"),
        (
            "redis+sentinel://:pw@s1:26379,s2:26379/mymaster",
            f"redis+sentinel://:{REDACTED}@s1:26379,s2:26379/mymaster",
        ),
        (
            "unix:///run/redis.sock?db=1&password=pw",
            f"unix:///run/redis.sock?db=1&password={REDACTED}",
        ),
        ("unix://:pw@/run/redis.sock", f"unix://:{REDACTED}@/run/redis.sock"),
    ],
)
def test_redact_url_hides_only_the_password(url, shown):
    assert redact_url(url) == shown


RUNNING = {
    "admin": {"token": "s3cret", "address": "127.0.0.1:9901"},
    "cluster": {"redis_url": "redis://:pw@10.0.0.9:6379/1"},
    "pools": {
        # a pool may be named like a secret key: only string values are secrets
        "password": {
            "health_checks": [
                {"type": "redis", "password": "redis-pw"},
                {"type": "http", "headers": {"Authorization": "Basic eDp5", "X-Probe": "1"}},
            ]
        }
    },
}


def test_redaction_hides_every_secret_and_nothing_else():
    shown = redact_secrets(RUNNING)
    assert shown["admin"] == {"token": REDACTED, "address": "127.0.0.1:9901"}
    assert shown["cluster"]["redis_url"] == f"redis://:{REDACTED}@10.0.0.9:6379/1"
    checks = shown["pools"]["password"]["health_checks"]
    assert checks[0] == {"type": "redis", "password": REDACTED}
    assert checks[1]["headers"] == {"Authorization": REDACTED, "X-Probe": "1"}
    for secret in ("s3cret", ":pw@", "redis-pw", "eDp5"):
        assert secret not in str(shown)
    assert RUNNING["admin"]["token"] == "s3cret", "the running document was modified"
    assert all(is_secret_key(k) for k in ("token", "Password", "AUTHORIZATION", "redis_url"))


def test_what_was_shown_comes_back_as_the_running_values():
    assert restore_secrets(redact_secrets(RUNNING), RUNNING) == RUNNING


def test_a_changed_secret_is_taken_as_given():
    posted = redact_secrets(RUNNING)
    posted["admin"]["token"] = "new-token"
    posted["cluster"]["redis_url"] = "redis://:new@10.0.0.9:6379/1"
    restored = restore_secrets(posted, RUNNING)
    assert restored["admin"]["token"] == "new-token"
    assert restored["cluster"]["redis_url"] == "redis://:new@10.0.0.9:6379/1"
    assert restored["pools"] == RUNNING["pools"]


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        # the URL now names another host: keeping the password would send it there
        (lambda d: d["cluster"].update(redis_url=f"redis://:{REDACTED}@evil:6379/1"), "redis_url"),
        # a new entry has no running value to keep
        (
            lambda d: d["pools"]["password"]["health_checks"].append(
                {"type": "redis", "password": REDACTED}
            ),
            2,
        ),
        # a renamed pool: nothing ran under the new name
        (lambda d: d["pools"].update(other=d["pools"].pop("password")), "other"),
    ],
)
def test_a_placeholder_with_nothing_to_keep_is_refused(edit, where):
    posted = redact_secrets(RUNNING)
    edit(posted)
    with pytest.raises(UnkeptSecrets) as info:
        restore_secrets(posted, RUNNING)
    assert info.value.paths and all(where in path for path in info.value.paths), info.value.paths


def test_a_placeholder_where_the_running_config_has_no_secret_is_refused():
    with pytest.raises(UnkeptSecrets) as info:
        restore_secrets({"admin": {"token": REDACTED}}, {"admin": {"token": None}})
    assert info.value.paths == [("admin", "token")]
