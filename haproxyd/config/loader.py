"""Reading the YAML file: parse once, keep the node tree for line numbers.

PyYAML's `safe_load` throws away where things were and silently keeps the last of two
equal keys, which hides exactly the mistakes an operator makes when editing a config
by hand. So the file is composed into nodes (each with its start mark), checked for
duplicate keys, and only then constructed into plain data; the nodes stay around to
map every validation error back to its line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from haproxyd.config.errors import ConfigError, ConfigIssue, YamlPath, format_path
from haproxyd.config.schema import Config, validate_document

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlLines:
    """Line numbers of a composed YAML document, looked up by YAML path."""

    def __init__(self, root: Node | None) -> None:
        self.root = root

    def __call__(self, path: YamlPath) -> int | None:
        """The 1-based line of the node at `path`; when the path leaves the document
        (a missing key), the line of the deepest node on the way. A mapping entry's
        line is its key's line, where an operator looks for `key:`."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in path:
            if isinstance(node, MappingNode):
                entry = _entry(node, part)
                if entry is None:
                    break
                key, node = entry
                line = key.start_mark.line + 1
            elif isinstance(node, SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line


def _entry(node: MappingNode, key: str | int) -> tuple[Node, Node] | None:
    """The last (key, value) pair whose key reads `key`: the one PyYAML keeps."""
    found = None
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == str(key):
            found = (key_node, value_node)
    return found


def _duplicate_keys(root: Node | None, source: str) -> list[ConfigIssue]:
    """Every key written twice in one mapping (merge keys `<<` excepted, since an
    explicit key overriding a merged one is the point of a merge)."""
    issues: list[ConfigIssue] = []
    seen_nodes: set[int] = set()

    def walk(node: Node, path: YamlPath) -> None:
        if id(node) in seen_nodes:  # an alias: the anchor was checked already
            return
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    walk(value_node, path)
                    continue
                key, mark = key_node.value, key_node.start_mark
                if key in first:
                    where = f"line {first[key].start_mark.line + 1}"
                    if first[key].start_mark.line == mark.line:
                        where += f", column {first[key].start_mark.column + 1}"
                    issues.append(
                        ConfigIssue(
                            format_path((*path, key)),
                            mark.line + 1,
                            f"duplicate key {key!r} (first defined on {where})",
                            source,
                        )
                    )
                else:
                    first[key] = key_node
                walk(value_node, (*path, key))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    if root is not None:
        walk(root, ())
    return issues


def _syntax_issue(exc: yaml.YAMLError, source: str) -> ConfigIssue:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        parts = [part for part in (exc.context, exc.problem) if part]
        message = "YAML syntax error: " + ", ".join(parts)
        return ConfigIssue("", mark.line + 1 if mark is not None else None, message, source)
    return ConfigIssue("", None, f"YAML syntax error: {exc}", source)


def parse_yaml(text: str, *, source: str) -> tuple[Any, YamlLines, list[ConfigIssue]]:
    """The document of `text`, its line map, and its duplicate keys as issues.

    Raises ConfigError on a YAML syntax error (nothing can be validated then).
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        duplicates = _duplicate_keys(root, source)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_issue(exc, source)]) from None
    finally:
        loader.dispose()
    return data, YamlLines(root), duplicates


def load_config_text(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate YAML text; every problem (duplicate keys and validation errors) is
    reported at once in a ConfigError, each with its YAML path and line."""
    data, lines, duplicates = parse_yaml(text, source=source)
    try:
        config = validate_document(data, source=source, env=env, base_dir=base_dir, lines=lines)
    except ConfigError as exc:
        raise ConfigError([*duplicates, *exc.issues]) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a configuration file. Relative paths in it (TLS files, access
    log) resolve against the file's directory; `env` defaults to os.environ."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError.single("", f"not UTF-8 text: {exc.reason}", source=str(file)) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError.single("", f"cannot read the file: {reason}", source=str(file)) from None
    return load_config_text(text, source=str(file), env=env, base_dir=file.resolve().parent)
