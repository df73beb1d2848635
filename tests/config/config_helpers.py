"""Helpers of the config tests: load YAML text, collect issues, find line numbers."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import pytest

from haproxyd.config import Config, ConfigError, ConfigIssue, load_config_text

MINIMAL = """\
pools:
  web:
    backends:
      - {id: web-1, address: 127.0.0.1:9001}
"""


def load(text: str, *, env: Mapping[str, str] | None = None, **kw: object) -> Config:
    """Load dedented YAML text with an empty environment unless one is given."""
    return load_config_text(textwrap.dedent(text), source="test.yaml", env=env or {}, **kw)


def issues(text: str, *, env: Mapping[str, str] | None = None, **kw: object) -> list[ConfigIssue]:
    """The issues of an invalid document (fails the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        load(text, env=env, **kw)
    return info.value.issues


def by_path(found: list[ConfigIssue], path: str) -> ConfigIssue:
    matching = [issue for issue in found if issue.path == path]
    assert len(matching) == 1, f"expected one issue at {path}, got: {[str(i) for i in found]}"
    return matching[0]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line of dedented `text` containing `needle`."""
    seen = 0
    for number, line in enumerate(textwrap.dedent(text).splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in the text")
