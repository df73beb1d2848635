"""Validate admin API answers against the OpenAPI document the daemon serves.

schemathesis checks a standalone daemon; answers only a cluster node gives (its cluster
status, the answers of changes made through the leader) are checked with this:
`assert_matches(document, "ClusterStatus", body)`. The OpenAPI 3.0 schemas become JSON
Schema draft 7 (`nullable` as a `null` type), and objects that list their properties get
`additionalProperties: false`, so a field the API returns but the document does not
describe fails the test too.
"""

from __future__ import annotations

from typing import Any

import jsonschema


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k not in ("nullable", "example")}
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    if node.get("nullable"):
        if "$ref" in out:
            return {"anyOf": [out, {"type": "null"}]}
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def validator(document: dict[str, Any], name: str) -> jsonschema.Draft7Validator:
    """A strict validator of `components.schemas.<name>` of the OpenAPI `document`."""
    schemas = _convert(document["components"]["schemas"])
    assert name in schemas, f"the OpenAPI document has no schema {name!r}"
    root = {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "components": {"schemas": schemas}}
    jsonschema.Draft7Validator.check_schema(root)
    return jsonschema.Draft7Validator(root)


def assert_matches(document: dict[str, Any], name: str, body: Any) -> None:
    errors = sorted(validator(document, name).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "\n".join(f"{e.json_path}: {e.message[:300]}" for e in errors)
