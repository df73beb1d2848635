"""The OpenAPI document's component schemas are the models' own JSON Schemas: the
request bodies the handlers validate with, the typed dicts of the views."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers.openapi_schema import assert_matches
from pydantic import BaseModel, TypeAdapter

from haproxyd.admin import views
from haproxyd.admin.backends import NewBackend
from haproxyd.admin.openapi import REF, REQUESTS, openapi30, openapi_document
from haproxyd.config.schema import BackendConfig, Config

SOURCES = [*REQUESTS, *views.RESPONSES]
DOCUMENT = openapi_document()
COMPONENTS = DOCUMENT["components"]["schemas"]


def _json_schema(source: Any) -> dict[str, Any]:
    if issubclass(source, BaseModel):
        return source.model_json_schema(ref_template=REF, mode="validation")
    return TypeAdapter(source).json_schema(ref_template=REF, mode="serialization")


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.__name__)
def test_each_component_is_its_models_json_schema(source: Any) -> None:
    schema = _json_schema(source)
    assert COMPONENTS[source.__name__] == openapi30(schema)
    for name, nested in schema.get("$defs", {}).items():
        assert COMPONENTS[name] == openapi30(nested)


def test_the_new_backend_body_is_a_config_backend_plus_pool_and_state() -> None:
    properties = COMPONENTS["NewBackend"]["properties"]
    assert set(properties) == {*BackendConfig.model_fields, "pool", "state"}
    for name, field in BackendConfig.model_fields.items():
        assert properties[name].get("description") == field.description
    assert set(COMPONENTS["NewBackend"]["required"]) == {"pool", "id", "address"}
    assert issubclass(NewBackend, BackendConfig)


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def test_the_document_speaks_openapi_3_0_and_every_ref_resolves() -> None:
    assert DOCUMENT["openapi"].startswith("3.0.")
    for node in _walk(DOCUMENT):
        # JSON Schema keywords that OpenAPI 3.0's Schema Object does not have.
        assert not {"const", "$defs", "prefixItems", "examples"} & set(node), node
        assert {"type": "null"} not in node.get("anyOf", []), node
        assert not isinstance(node.get("type"), list), node
        if "$ref" in node:
            assert node["$ref"].removeprefix("#/components/schemas/") in COMPONENTS
    # The document is plain JSON.
    assert json.loads(json.dumps(DOCUMENT)) == DOCUMENT


def test_the_config_view_holds_the_config_models_schema() -> None:
    config = COMPONENTS["ConfigView"]["properties"]["config"]
    assert config["$ref"] == "#/components/schemas/Config"
    schema = Config.model_json_schema(ref_template=REF, mode="serialization")
    assert COMPONENTS["Config"] == openapi30(schema)


async def test_what_the_read_endpoints_answer_matches_the_document_strictly(hap, backend):
    # Strict: an object's undescribed key fails too (schemathesis lets it through).
    h = await hap(
        pools={"web": {"backends": [backend("web-1").config()], "passive": {}}},
        extra={"node_checks": [{"type": "memory_usage", "max_percent": 99}]},
    )
    document = await h.get("/api/v1/openapi.json")
    for path, name in [
        ("/api/v1/ha/config", "ConfigView"),
        ("/api/v1/ha/status", "Status"),
        ("/api/v1/ha/load-balancer/backends", "BackendList"),
        ("/api/v1/ha/load-balancer/stats", "LoadBalancerStats"),
        ("/api/v1/ha/health-checks", "HealthChecks"),
        ("/api/v1/ha/cluster/status", "ClusterStatus"),
        ("/api/v1/ha/failover/events", "FailoverEvents"),
    ]:
        assert_matches(document, name, await h.get(path))
