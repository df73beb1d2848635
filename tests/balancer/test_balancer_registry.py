"""The balancer registry is the one place that names the algorithms and their options:
the config schema, the data plane's factory and docs/reference.md follow it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from haproxyd.balancer import base, registry
from haproxyd.config import load_config_text, schema
from haproxyd.proxy import runtime

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
ALGORITHMS = list(registry.algorithms().values())


def test_the_schema_accepts_exactly_the_registered_names_in_order() -> None:
    annotation = schema.BalancerConfig.model_fields["algorithm"].annotation
    assert typing.get_args(annotation) == tuple(registry.algorithms())


def test_every_registered_name_builds_its_class() -> None:
    for algorithm in ALGORITHMS:
        assert base.REGISTRY[algorithm.name] is algorithm.cls
    assert set(base.REGISTRY) == set(registry.algorithms())


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_each_option_is_a_key_of_the_balancer_section_as_declared(
    algorithm: registry.Algorithm,
) -> None:
    section = schema.BalancerConfig.model_fields
    for name, field in algorithm.options.model_fields.items():
        assert name in section
        assert section[name].description == field.description
        assert section[name].default == field.default
        assert section[name].annotation == field.annotation


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_each_algorithm_and_its_options_are_in_the_reference(
    algorithm: registry.Algorithm,
) -> None:
    text = REFERENCE.read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| `{algorithm.name}` |"))
    for name in algorithm.options.model_fields:
        assert f"`{name}`" in row.rsplit("|", 2)[1]
        assert f"| `pools.<name>.balancer.{name}` |" in text


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_option_models_are_closed_frozen_and_described(algorithm: registry.Algorithm) -> None:
    config = algorithm.options.model_config
    assert config.get("extra") == "forbid"
    assert config.get("frozen") is True
    assert all(f.description for f in algorithm.options.model_fields.values())


def test_the_data_plane_builds_balancers_with_the_registrys_options() -> None:
    cfg = load_config_text(
        "pools:\n  web:\n    balancer: {algorithm: consistent_hash, virtual_nodes: 7}\n"
        "    backends:\n      - {id: b1, address: 127.0.0.1:9}\n"
    )
    options = registry.options_of(cfg.pools["web"].balancer)
    assert set(options) == set(registry.option_names()) and options["virtual_nodes"] == 7
    loop = asyncio.new_event_loop()
    try:
        proxy = runtime.ProxyRuntime(loop)
        proxy.apply(cfg)
        assert proxy.pools["web"].state.balancer.virtual_nodes == 7
    finally:
        loop.close()


def test_every_algorithm_builds_from_its_section_defaults() -> None:
    for algorithm in ALGORITHMS:
        section = schema.BalancerConfig.model_validate({"algorithm": algorithm.name})
        balancer = base.create(algorithm.name, **registry.options_of(section))
        assert isinstance(balancer, algorithm.cls)


@pytest.mark.parametrize(
    "first",
    ["haproxyd.balancer.ring", "haproxyd.balancer.keys", "haproxyd.config", "haproxyd.cli"],
)
def test_the_registry_and_the_schema_import_in_any_order(first: str) -> None:
    # The algorithm modules declare their options with config field types while the
    # schema builds its balancer section from them: no import order may be a cycle.
    code = f"import {first}; from haproxyd.config.schema import BalancerConfig; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
