"""Each `.pxd` declares exactly the fields of its `.py` class, so that the compiled and
the interpreted form of a class cannot drift apart: a field only the `.py` sets raises
AttributeError compiled, and one only the `.pxd` declares is dead or set elsewhere.

The fields of a `.py` class are its `__slots__`, or, without them, the attributes its
`__init__` assigns; a subclass's include its base's (compiled, `cdef class B(A)`
extends A's struct)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from haproxyd._build import COMPILED, source

_CLASS = re.compile(r"^cdef class (\w+)(?:\((\w+)\))?:")
# `cdef [public|readonly] TYPE NAME[, NAME...]` in a class body; not a method (no "(").
_FIELD = re.compile(r"^\s+cdef\s+(?:public\s+|readonly\s+)?[\w.\[\]* ]+?\s+(\w+(?:\s*,\s*\w+)*)$")


def pxd_fields(pxd: Path) -> dict[str, tuple[str | None, set[str]]]:
    classes: dict[str, tuple[str | None, set[str]]] = {}
    current: str | None = None
    for line in pxd.read_text().splitlines():
        line = line.split("#", 1)[0].rstrip()
        header = _CLASS.match(line)
        if header:
            current = header.group(1)
            classes[current] = (header.group(2), set())
        elif line and not line[0].isspace():
            current = None
        elif current and "(" not in line and (field := _FIELD.match(line)):
            names = {n.strip() for n in field.group(1).split(",")}
            classes[current][1].update(n for n in names if not n.startswith("__"))
    return classes


def _self_attributes(function: ast.FunctionDef) -> set[str]:
    """The `self.NAME` that `function` assigns (`a = b`, `a: T = b`, `a, b = c`)."""
    found: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for one in target.elts if isinstance(target, ast.Tuple) else [target]:
                if (
                    isinstance(one, ast.Attribute)
                    and isinstance(one.value, ast.Name)
                    and one.value.id == "self"
                ):
                    found.add(one.attr)
    return found


def py_fields(py: Path) -> dict[str, tuple[str | None, set[str]]]:
    classes: dict[str, tuple[str | None, set[str]]] = {}
    for node in ast.parse(py.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        base = node.bases[0].id if node.bases and isinstance(node.bases[0], ast.Name) else None
        slots: set[str] | None = None
        assigned: set[str] = set()
        for item in node.body:
            if isinstance(item, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in item.targets
            ):
                slots = set(ast.literal_eval(item.value))
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                assigned = _self_attributes(item)
        classes[node.name] = (base, slots if slots is not None else assigned)
    return classes


def _with_bases(classes: dict[str, tuple[str | None, set[str]]], name: str) -> set[str]:
    base, fields = classes[name]
    return fields | (_with_bases(classes, base) if base in classes else set())


def _typed_modules() -> list[str]:
    return [name for name in COMPILED if source(name).suffix == ".py"]


@pytest.mark.parametrize("module", _typed_modules())
def test_each_pxd_class_declares_exactly_the_fields_of_its_py_class(module: str) -> None:
    py = source(module)
    declared = pxd_fields(py.with_suffix(".pxd"))
    defined = py_fields(py)
    # Bases from another module (`Balancer` for `RoundRobin`) are read from theirs.
    for other in _typed_modules():
        if other != module:
            for name, value in pxd_fields(source(other).with_suffix(".pxd")).items():
                declared.setdefault(name, value)
            for name, value in py_fields(source(other)).items():
                defined.setdefault(name, value)
    own = pxd_fields(py.with_suffix(".pxd"))
    assert own, f"{module}: no cdef class in its .pxd"
    for name in own:
        assert name in defined, f"{module}.{name}: in the .pxd, not in the .py"
        assert _with_bases(declared, name) == _with_bases(defined, name), name


def test_the_parser_sees_the_fields() -> None:
    # A parser that finds nothing would make the test above pass on anything.
    state = pxd_fields(source("haproxyd.balancer.state").with_suffix(".pxd"))
    assert {"weight", "effective_weight", "ewma"} <= state["Backend"][1]
    assert "select" not in state["Pool"][1]  # a method, not a field
    assert "weight" in py_fields(source("haproxyd.balancer.state"))["Backend"][1]
