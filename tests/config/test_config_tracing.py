"""`tracing:`: defaults, errors with their YAML path and line, the missing extra."""

from __future__ import annotations

import pytest
from config_helpers import MINIMAL, by_path, issues, line_of, load

from haproxyd.config.sections import tracing as tracing_section


def test_defaults_are_off() -> None:
    cfg = load(MINIMAL).tracing
    assert (cfg.enabled, cfg.sample_ratio, cfg.service_name, cfg.headers) == (
        False,
        1.0,
        "haproxyd",
        {},
    )
    assert cfg.endpoint == "http://127.0.0.1:4318/v1/traces"


def test_a_full_section_loads() -> None:
    cfg = load(
        MINIMAL
        + """\
tracing:
  enabled: true
  endpoint: http://127.0.0.1:4318/v1/traces
  sample_ratio: 0.01
  service_name: edge
  headers: {authorization: Bearer x}
"""
    ).tracing
    assert (cfg.enabled, cfg.sample_ratio) == (True, 0.01)
    assert cfg.headers == {"authorization": "Bearer x"}


def test_errors_name_path_and_line() -> None:
    text = MINIMAL + "tracing:\n  sample_ratio: 2\n  endpoint: collector:4318\n"
    found = issues(text)
    assert by_path(found, "tracing.sample_ratio").line == line_of(text, "sample_ratio")
    assert by_path(found, "tracing.endpoint").line == line_of(text, "endpoint")


def test_enabled_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing_section, "missing_tracing_modules", lambda: ["opentelemetry.sdk"])
    text = MINIMAL + "tracing:\n  enabled: true\n"
    issue = by_path(issues(text), "tracing.enabled")
    assert issue.line == line_of(text, "enabled")
    assert "pip install 'haproxyd[tracing]'" in issue.message
