"""Configuration errors that point into the operator's file: a YAML path and a line.

pydantic locates an error with a `loc` tuple written in its own terms: it inserts union
member labels (`int`, `list[str]`), discriminator tags (`http`) and `[key]` markers.
An operator thinks in YAML paths (`pools.web.health_checks[0].interval`) and line
numbers, so this module translates one into the other and rewrites the messages that
only make sense to a Python programmer. Every problem is kept: `haproxyd check` lists
them all in one run instead of making the operator fix them one restart at a time.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from haproxyd.config.secrets import is_secret_key

YamlPath = tuple[str | int, ...]
"""A path through the document: mapping keys and list indexes, nothing else."""

LineLookup = Callable[[YamlPath], int | None]
"""Gives the 1-based line of the deepest node along a path (None when unknown)."""

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_QUOTED = re.compile(r"'([^']*)'")
_NO_ECHO_TYPES = frozenset(
    {"missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found", "value_error"}
)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration, located as precisely as the input allows."""

    path: str
    """YAML path such as `pools.web.backends[1].weight`; `env NAME` for an environment
    override; empty for a problem with the file as a whole (e.g. YAML syntax)."""
    line: int | None
    """1-based line in the source file; None when not known (documents, env)."""
    message: str
    source: str = "<string>"
    """The file name, or what the document came from."""

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """An invalid configuration; `issues` holds every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        unique = list(dict.fromkeys(issues))
        # Issues without a line (environment overrides) go last; the order is stable.
        self.issues: list[ConfigIssue] = sorted(
            unique, key=lambda issue: (issue.line is None, issue.line or 0)
        )
        super().__init__("\n".join(str(issue) for issue in self.issues))

    @classmethod
    def single(
        cls, path: str, message: str, *, line: int | None = None, source: str = "<string>"
    ) -> ConfigError:
        """An error with one issue, for callers that find a problem themselves."""
        return cls([ConfigIssue(path, line, message, source)])


def format_path(path: Sequence[str | int]) -> str:
    """`("pools", "web", "backends", 1, "weight")` -> `pools.web.backends[1].weight`.

    Keys that are not plain words are quoted (`pools["api.v1"]`) so the path stays
    unambiguous.
    """
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += '["' + part.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return text


def yaml_path(loc: Sequence[str | int], data: Any, *, keep_last: bool = False) -> YamlPath:
    """The YAML path of a pydantic `loc`: drop the parts that are not in the document.

    Walking the document decides what is real: a mapping key or a list index present
    in the data is kept, anything else (union labels, discriminator tags, `[key]`) is
    pydantic's own. `keep_last` keeps a final key that is absent because it is missing.
    """
    path: list[str | int] = []
    node = data
    last = len(loc) - 1
    for index, part in enumerate(loc):
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            path.append(part)
            node = node[part]
        elif keep_last and index == last and isinstance(node, Mapping):
            path.append(part)
    return tuple(path)


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_strip_annotated(arg) for arg in typing.get_args(tp) if arg is not type(None)]
    return []


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_tags(members: list[Any], discriminator: str) -> list[str]:
    tags: list[str] = []
    for member in members:
        if _is_model(member) and discriminator in member.model_fields:
            tags.extend(typing.get_args(member.model_fields[discriminator].annotation))
    return tags


def _type_at(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    """The annotation pydantic validated at `loc` (a raw loc, tags included), or None."""
    tp: Any = model
    for part in loc:
        tp = _strip_annotated(tp)
        members = _union_members(tp)
        if len(members) == 1:
            tp = members[0]
        elif members:
            chosen = [m for m in members if part in _union_tags([m], "type")]
            if not chosen:
                return None
            tp = chosen[0]
            continue
        origin = typing.get_origin(tp)
        if _is_model(tp):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif origin is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return _strip_annotated(tp)


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _message(error: ErrorDetails, model: type[BaseModel], path: YamlPath) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    value = error["input"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(loc[-1])
        owner = _type_at(model, loc[:-1])
        allowed = list(owner.model_fields) if _is_model(owner) else []
        hint = _suggest(key, allowed)
        if allowed and not hint:
            hint = f"; allowed keys: {', '.join(allowed)}"
        return f"unknown key {key!r}{hint}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(ctx.get("discriminator", "type")).strip("'")
        tags = _union_tags(_union_members(_type_at(model, loc)), discriminator)
        expected = ", ".join(tags)
        if kind == "union_tag_not_found":
            return f"required key {discriminator!r} is missing (one of: {expected})"
        return f"unknown {discriminator} {ctx.get('tag')!r}; expected one of: {expected}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if "[key]" in loc:
        message = f"invalid key: {message}"
    if kind == "literal_error" and isinstance(value, str):
        message += _suggest(value, _QUOTED.findall(str(ctx.get("expected", ""))))
    secret = bool(path) and is_secret_key(path[-1])
    echo = isinstance(value, str | int | float | bool) or value is None
    if echo and not secret and kind not in _NO_ECHO_TYPES:
        message += f" (got {value!r})"
    return message


def issues_from_validation_error(
    exc: ValidationError,
    data: Any,
    *,
    model: type[BaseModel],
    source: str,
    lines: LineLookup | None = None,
    env_paths: Mapping[YamlPath, str] | None = None,
) -> list[ConfigIssue]:
    """Every error of `exc` as a ConfigIssue with its YAML path and line.

    `data` is the document that was validated (it decides which loc parts are real);
    `env_paths` maps the paths set from environment variables to the variable's name,
    so a bad override is reported as `env NAME` rather than at a line that does not
    hold the value.
    """
    issues: list[ConfigIssue] = []
    for error in exc.errors(include_url=False):
        kind = error["type"]
        path = yaml_path(error["loc"], data, keep_last=kind == "missing")
        if kind == "union_tag_invalid":
            path = (*path, str((error.get("ctx") or {}).get("discriminator", "type")).strip("'"))
        message = _message(error, model, path)
        override = next(
            (
                (name, env_path)
                for env_path, name in (env_paths or {}).items()
                if path[: len(env_path)] == env_path
            ),
            None,
        )
        if override is not None:
            name, env_path = override
            issues.append(
                ConfigIssue(
                    f"env {name}", None, f"{message} (it overrides {format_path(env_path)})", source
                )
            )
            continue
        line = lines(path) if lines is not None else None
        issues.append(ConfigIssue(format_path(path), line, message, source))
    return issues
