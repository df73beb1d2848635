"""docs/reference.md, generated from what the program itself holds, so it cannot drift:
the CLI from its argparse parser, the environment overrides from config/env.py, every
configuration key from the pydantic models (config/schema.py and its sections: type,
default, the field's description), the balancing algorithms and the keys each reads
from the balancer registry, the admin API from its OpenAPI document
(admin/openapi.py), and the metrics from the collector's source (admin/metrics.py).
Only the signals are written here by hand. `python -m haproxyd.reference` rewrites the
file; a test fails when it is not up to date.
"""

from __future__ import annotations

import ast
import enum
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
PATH = ROOT / "docs" / "reference.md"
METHODS = ("get", "post", "put", "patch", "delete")

SIGNALS = """\
| signal | effect |
| --- | --- |
| `SIGHUP` | Re-read and validate the file. A valid one applies to the next request on every connection (in-flight requests finish on the config they started with); an invalid one is logged and ignored, the running config stays. `haproxyd reload` sends it and reports the outcome. |
| `SIGTERM`, `SIGINT` | Stop accepting; serve what is in flight (idle keep-alive connections for `timeouts.drain_grace`, busy ones up to `timeouts.shutdown`), then exit 0. |
"""  # noqa: E501 (table rows)


def _cli() -> list[str]:
    from haproxyd.cli import COMMANDS, build_parser

    parser = build_parser()
    out = ["## Command line", "", "```text", _help(parser), "```", ""]
    subparsers = next(a for a in parser._actions if a.choices and "run" in a.choices)
    for name in COMMANDS:
        out += [f"### `haproxyd {name}`", "", "```text", _help(subparsers.choices[name]), "```", ""]
    return out


def _help(parser: Any) -> str:
    # A fixed width: the file must not depend on the terminal that generated it.
    formatter = parser.formatter_class
    parser.formatter_class = lambda prog: formatter(prog, width=88)
    try:
        return parser.format_help().rstrip()
    finally:
        parser.formatter_class = formatter


def _environment() -> list[str]:
    from haproxyd.config.env import ENV_OVERRIDES

    rows = [f"| `{name}` | `{'.'.join(path)}` |" for name, (path, _) in ENV_OVERRIDES.items()]
    return [
        "## Environment",
        "",
        "Each variable overrides one key of the file (an empty one counts as unset), and",
        "goes through the same validation. `HAPROXYD_PURE_PYTHON=1` runs the data plane",
        "interpreted where it is installed compiled.",
        "",
        "| variable | key |",
        "| --- | --- |",
        *rows,
        "",
    ]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        from haproxyd.config.types import parse_address, parse_duration

        named = {parse_duration: "duration", parse_address: "address"}
        for meta in annotation.__metadata__:
            if getattr(meta, "func", None) in named:
                return named[meta.func]
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" if a is not None else "null" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _models_in(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """The models a field holds, each with the path step to its keys: "." for one
    section, "[]." for a list of them, ".<name>." for a map."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [(".", annotation)]
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType):
        return [found for a in args for found in _models_in(a)]
    if origin in (list, tuple):
        return [("[]" + step, m) for step, m in _models_in(args[0])] if args else []
    if origin is dict:
        return [(".<name>" + step, m) for step, m in _models_in(args[1])]
    return []


def _default(field: FieldInfo) -> str:
    factory = field.default_factory
    if inspect.isfunction(factory) and factory.__name__ != "<lambda>":
        return "computed"  # from the machine (node.id: the hostname): the meaning says
    if factory is not None:
        value = factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""  # a section: its keys have their own defaults
    # As the file would say it (durations as `2s`, addresses as `host:port`).
    adapter = TypeAdapter(field.rebuild_annotation())
    value = adapter.dump_python(value, mode="json", exclude_defaults=True)
    text = value if isinstance(value, str) else json.dumps(value)
    return "`{}`".format(text.replace("|", "\\|"))


def _config_rows(model: type[BaseModel], prefix: str, seen: tuple[type, ...]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        annotation = field.rebuild_annotation()  # with its Annotated metadata
        rows.append(f"| `{key}` | {_type_name(annotation)} | {_default(field)} | {description} |")
        for step, nested in _models_in(annotation):
            if nested not in seen:  # a model that holds itself is listed once
                rows += _config_rows(nested, key + step, (*seen, nested))
    return rows


def _config() -> list[str]:
    from haproxyd.config.schema import Config

    return [
        "## Configuration",
        "",
        "YAML. Unknown keys are errors; durations take `250ms`, `5s`, `1m`; addresses",
        "`host:port` or `[::1]:port`. `config/haproxyd.yaml` is an annotated example.",
        "`<name>` stands for a map's key, `[]` for each item of a list.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
        *_config_rows(Config, "", (Config,)),
        "",
        *_algorithms(),
    ]


def _algorithms() -> list[str]:
    """Which `balancer:` keys each algorithm reads, from the balancer registry (the
    section accepts every algorithm's keys; the others are ignored)."""
    from haproxyd.balancer.registry import algorithms

    rows = []
    for algorithm in algorithms().values():
        summary = (inspect.getdoc(inspect.getmodule(algorithm.cls)) or "").split("\n\n")[0]
        keys = ", ".join(f"`{name}`" for name in algorithm.options.model_fields)
        rows.append(f"| `{algorithm.name}` | {' '.join(summary.split())} | {keys} |")
    return [
        "### Balancing algorithms",
        "",
        "`pools.<name>.balancer.algorithm` and the keys each one reads (a key of another",
        "algorithm is accepted and ignored).",
        "",
        "| algorithm | what | reads |",
        "| --- | --- | --- |",
        *rows,
        "",
    ]


def _admin_api() -> list[str]:
    from haproxyd.admin.openapi import openapi_document

    document = openapi_document()
    out = [
        "## Admin API",
        "",
        " ".join(document["info"]["description"].split()),
        "",
        "The full schema of every body is the OpenAPI document, served at",
        '`GET /api/v1/openapi.json`. Errors are JSON `{"error": ...}`.',
        "",
    ]
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            out += [f"### `{method.upper()} {path}`", "", operation["summary"] + "."]
            if operation.get("description"):
                out += ["", " ".join(operation["description"].split())]
            out.append("")
            for parameter in shared + operation.get("parameters", []):
                text = " ".join(parameter.get("description", "").split())
                out.append(f"- `{parameter['name']}` ({parameter['in']}): {text}")
            for code, response in operation["responses"].items():
                out.append(f"- {code}: {' '.join(response['description'].split())}")
            out.append("")
    return out


def _metrics() -> list[str]:
    source = (ROOT / "haproxyd" / "admin" / "metrics.py").read_text()
    rows = []
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.endswith("MetricFamily")
            and len(node.args) >= 2
            and all(isinstance(a, ast.Constant) for a in node.args[:2])
        ):
            continue
        kind = node.func.id.removesuffix("MetricFamily").lower()
        name = node.args[0].value + ("_total" if kind == "counter" else "")
        labels = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "labels"), [])
        text = " ".join(str(node.args[1].value).split()).replace("|", "\\|")
        label_text = ", ".join(f"`{label}`" for label in labels)
        rows.append((name, f"| `{name}` | {kind} | {label_text} | {text} |"))
    return [
        "## Metrics",
        "",
        "Prometheus text at `GET /metrics` on the admin port (histograms add `_bucket`,",
        "`_sum` and `_count`).",
        "",
        "| metric | type | labels | meaning |",
        "| --- | --- | --- | --- |",
        *(row for _, row in sorted(rows)),
        "",
    ]


def render() -> str:
    lines = [
        "# haproxyd reference",
        "",
        "<!-- Generated by `python -m haproxyd.reference` from the code (haproxyd/reference.py):",
        "     edit the code, not this file. -->",
        "",
        "Contents: [Command line](#command-line), [Signals](#signals),",
        "[Environment](#environment), [Configuration](#configuration),",
        "[Admin API](#admin-api), [Metrics](#metrics).",
        "",
        *_cli(),
        "## Signals",
        "",
        SIGNALS,
        *_environment(),
        *_config(),
        *_admin_api(),
        *_metrics(),
    ]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
    print(f"wrote {PATH.relative_to(ROOT)}", file=sys.stderr)
