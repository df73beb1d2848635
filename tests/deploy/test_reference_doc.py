"""docs/reference.md: generated from the code (haproxyd/reference.py), up to date, and
complete against the annotated example config; the docs stand alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from haproxyd import reference

REPO = Path(__file__).resolve().parents[2]


def test_the_reference_is_up_to_date() -> None:
    assert reference.PATH.read_text() == reference.render(), (
        "docs/reference.md is stale: run `python -m haproxyd.reference`"
    )


def _paths(node: Any, prefix: str = "") -> set[str]:
    """The keys of a YAML document as the reference writes them."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            step = "<name>" if prefix == "pools." else str(key)
            if step != "<name>":  # a pool's name is a key of the user's, not the reference's
                found.add(prefix + step)
            found |= _paths(value, f"{prefix}{step}.")
    elif isinstance(node, list):
        for item in node:
            found |= _paths(item, prefix.removesuffix(".") + "[].")
    return found


def test_every_key_of_the_annotated_example_is_in_the_reference() -> None:
    document = yaml.safe_load((REPO / "config" / "haproxyd.yaml").read_text())
    documented = set(re.findall(r"^\| `([^`]+)` \|", reference.PATH.read_text(), re.M))
    keys = {k for k in _paths(document) if not k.startswith("x-")}  # anchors' home
    assert len(keys) > 40  # the example is the full file, not a stub
    assert keys - documented == set()


def test_the_docs_need_nothing_outside_the_repository() -> None:
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "../shared" not in text and "SPEC.md" not in text, doc
    assert "docs/reference.md" in (REPO / "README.md").read_text()
