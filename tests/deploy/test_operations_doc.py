"""docs/operations.md says only what exists: the files it names are there, the admin API
paths it shows are routes of the admin app, the CLI commands parse, and the config
fragments of its migration tables validate against the schema."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from haproxyd.cli import build_parser
from haproxyd.config.schema import (
    AccessLogConfig,
    BalancerConfig,
    Config,
    PoolConfig,
    ResolverConfig,
)

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "operations.md").read_text()
API_SOURCE = (REPO / "haproxyd" / "admin" / "api.py").read_text()
CODE_SPANS = re.findall(r"`([^`\n]+)`", DOC)


def test_every_file_it_names_exists() -> None:
    pattern = r"(?<![\w/])((?:examples|deploy|bench|config|docs|tests)/[\w./{},-]*\w)"
    names = set(re.findall(pattern, DOC))
    # Files: a dot in the last part (`config/update` is an API path, not a file).
    names = {n for n in names if "." in n.rsplit("/", 1)[-1]}
    names |= {"Dockerfile", "docker-compose.ha.yml", "examples/grafana/provisioning"}
    assert len(names) > 10
    for name in names:
        brace = re.search(r"\{([\w,]+)\}", name)
        variants = (
            [name.replace(brace.group(0), part) for part in brace.group(1).split(",")]
            if brace
            else [name]
        )
        for variant in variants:
            assert (REPO / variant).exists(), f"docs/operations.md names {variant}"


def routes() -> set[str]:
    paths = {m for m in re.findall(r'add_\w+\(f"\{API\}([^"]*)"', API_SOURCE)}
    return {f"/api/v1/ha{p}".replace("{{id}}", "{id}") for p in paths}


def test_every_admin_path_it_shows_is_a_route() -> None:
    known = routes()
    assert "/api/v1/ha/status" in known and "/api/v1/ha/load-balancer/backends/{id}" in known
    shown = set(re.findall(r"/api/v1/ha/[a-z/{}-]*[a-z}]", DOC))
    assert len(shown) >= 8
    for path in shown:
        pattern = re.sub(r"[^/]+$", "{id}", path)
        assert path in known or pattern in known or path.endswith("/ID"), path


@pytest.mark.parametrize(
    "line",
    sorted({s for s in CODE_SPANS if s.startswith("haproxyd ") and "-c" in s}),
)
def test_cli_commands_parse(line: str) -> None:
    args = [("FILE" if a == "..." else a) for a in shlex.split(line)[1:]]
    parsed = build_parser().parse_args(args)
    assert parsed.config


def _fragment(span: str) -> Any:
    return yaml.safe_load(span if span.startswith("{") else "{" + span + "}")


POOL_KEYS = set(PoolConfig.model_fields)
TOP_KEYS = set(Config.model_fields)
PLACEHOLDER_POOLS = {"web": {}, "api": {}, "NAME": {}}


def config_fragments() -> list[str]:
    spans = []
    for span in CODE_SPANS:
        key, colon, _ = span.partition(": ")
        if colon and key in POOL_KEYS | TOP_KEYS:
            if re.search(r"\.\.\.|FILE|tls:|: N\b", span):
                continue  # placeholders, or TLS files that do not exist here
            spans.append(span)
        elif span.startswith("{type: ") or span.startswith("algorithm: "):
            spans.append(span)
    return sorted(set(spans))


def test_there_are_fragments_to_check() -> None:
    assert len(config_fragments()) >= 25


@pytest.mark.parametrize("span", config_fragments())
def test_config_fragment_validates(span: str) -> None:
    data = _fragment(span)
    if span.startswith("{type: "):
        PoolConfig.model_validate({"health_checks": [data]})
        return
    if span.startswith("algorithm: "):
        BalancerConfig.model_validate(data)
        return
    (key,) = data.keys()
    if key in POOL_KEYS:
        PoolConfig.model_validate(data)
    elif key == "access_log":
        AccessLogConfig.model_validate(data[key])
    elif key == "resolver":
        ResolverConfig.model_validate(data[key])
    else:
        Config.model_validate({"pools": PLACEHOLDER_POOLS, **data})


def test_dotted_settings_exist() -> None:
    sections = {
        name: field.annotation
        for name, field in {**Config.model_fields, **PoolConfig.model_fields}.items()
    }
    seen = 0
    for section, key in re.findall(r"`([a-z_]+)\.([a-z_]+)", DOC):
        model = sections.get(section)
        if model is None or not hasattr(model, "model_fields"):
            continue
        seen += 1
        assert key in model.model_fields, f"{section}.{key} is not a setting"
    assert seen >= 10
