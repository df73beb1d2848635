"""The data plane's two forms: what they are, which one runs where, and how it is chosen.
This docstring is the one place that says so; README.md, setup.py, haproxyd/__init__.py
and the compiled modules' docstrings point here.

One source, two forms. The modules of `COMPILED` are plain Python (`.py`), each with a
`.pxd` beside it that types its classes' fields and hot methods for Cython; `.pyx`
modules exist only compiled (`proxy/canonical_head.pyx`, the canonical-head scanner).

- The interpreted form is the `.py` files as they are.
- The compiled form is what setup.py builds from the same files: one C extension per
  module of `COMPILED`, beside its `.py` (an editable install builds them in the tree),
  all or none (a missing Cython or compiler installs the interpreted form, saying so in
  one line).

Which form runs:

- `pip install -e .` compiled them: the compiled form, since the import system loads an
  extension module before the `.py` of the same name.
- `HAPROXYD_PURE_PYTHON=1`: the interpreted form, compiled or not. haproxyd/__init__.py
  then installs `_SourceFirst` (below), a meta-path finder that loads each module of
  `COMPILED` from its `.py` and keeps a compiled-only one from loading at all (its
  importers do without it: llhttp then reads every head), before any of them is
  imported. Nothing else selects a form: there is no `module_c`/`module_py` pair, and
  code imports `haproxyd.proxy.exchange` and gets whichever form this process runs.
- No compiler at install time: the interpreted form.
- `haproxyd version` prints the form that runs (`dataplane_form`); the test suite
  refuses to start on a build older than its sources (`stale_builds`).
- Tests: the daemon tests start each form as a process; the in-process tests of
  tests/balancer, tests/proxy and tests/tracing run compiled in pytest and interpreted
  in a child pytest under HAPROXYD_PURE_PYTHON=1 (tests/helpers/forms.py). bench/dataplane_cost.py
  measures the installed form, or the interpreted one under HAPROXYD_PURE_PYTHON=1.

The two forms cannot drift: each `.pxd` declares exactly its `.py` class's fields
(tests/packaging/test_pxd_fields.py), and the same tests pass in both. Compiled, a class
of these modules is an extension type: it derives only from another one (`ClientSide`,
`Balancer`), an attribute missing from its `.pxd` raises AttributeError, and a cpdef
method is a C call from the compiled modules that cimport its `.pxd`.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The modules setup.py compiles (it imports this tuple). A `.py` module runs
# interpreted when it is not compiled; a `.pyx` one exists only compiled, and its
# importers do without it (canonical_head: llhttp then reads every response).
COMPILED = (
    "haproxyd.balancer.state",
    "haproxyd.balancer.base",
    "haproxyd.balancer.round_robin",
    "haproxyd.proxy.request",
    "haproxyd.proxy.clientside",
    "haproxyd.proxy.exchange",
    "haproxyd.proxy.client",
    "haproxyd.proxy.upstream",
    "haproxyd.proxy.stats",
    "haproxyd.proxy.canonical_head",
)
# Modules compiled once and no longer: an editable install's build of one stays in the
# tree, where the import system would take it before its `.py` (setup.py removes it).
RETIRED = ("haproxyd.admin.metrics",)
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)

# The scanner's header tables, generated from proxy/headers.py at build time (setup.py)
# into this file, which canonical_head.pyx includes: the names it acts on are then
# those the interpreted path acts on, stated once.
SCANNER_TABLES = _PACKAGE_ROOT / "haproxyd" / "proxy" / "canonical_head_kinds.pxi"
# Header names llhttp itself acts on although headers.py only drops them: llhttp reads
# `Proxy-Connection: close|keep-alive` as Connection's, so such a head is llhttp's.
_LLHTTP_READS = (b"proxy-connection",)
_LLHTTP_OWN = -1
# The headers.py kinds the scanner names (as KIND_<name>); every kind but KEEP and DROP
# is a header the proxy acts on, which a scanner handles itself or leaves to llhttp.
_KINDS = ("KEEP", "DROP", "HOST", "CONNECTION", "CONTENT_LENGTH")
# Generated files that compiled modules depend on, beside their source and `.pxd`.
_INPUTS = {"haproxyd.proxy.canonical_head": (_PACKAGE_ROOT / "haproxyd/proxy/headers.py",)}


def source(name: str) -> Path:
    """The source file of compiled module `name`: its `.py`, else its `.pyx`."""
    base = _PACKAGE_ROOT.joinpath(*name.split("."))
    py = base.with_suffix(".py")
    return py if py.exists() else base.with_suffix(".pyx")


class _SourceFirst:
    """A meta-path finder that loads `COMPILED` from their `.py` files (the import
    system would otherwise take the extension module beside each one), and keeps a
    compiled-only module from loading at all."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in COMPILED:
            return None
        origin = source(name)
        if origin.suffix != ".py":
            raise ModuleNotFoundError(f"{name} exists only compiled", name=name)
        return importlib.util.spec_from_file_location(name, origin)


def prefer_source() -> None:
    if not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def _extension(name: str) -> Path | None:
    """The extension module an import of `name` loads (or has loaded), if it is one."""
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:  # compiled-only, and kept out (HAPROXYD_PURE_PYTHON=1)
        return None
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(_EXTENSIONS) else None


def inputs(name: str) -> tuple[Path, ...]:
    """What compiled module `name` is built from, in this tree: its source, its `.pxd`,
    and what its generated include is made from."""
    return (source(name), source(name).with_suffix(".pxd"), *_INPUTS.get(name, ()))


def stale_builds() -> list[str]:
    """The compiled modules older than their source, `.pxd` or what their generated
    include is made from (an editable install whose sources were edited after
    `pip install -e .`: the old build is what would run)."""
    stale = []
    for name in COMPILED:
        built = _extension(name)
        if built is None:
            continue
        if any(p.exists() and p.stat().st_mtime > built.stat().st_mtime for p in inputs(name)):
            stale.append(name)
    return stale


def _kind_function(name: str, kinds: dict[bytes, int]) -> list[str]:
    """`name(p, n)`: the kind of the header name at `p` (`n` bytes, any case), compared
    only against the names that start with its first letter."""
    from haproxyd.proxy.headers import KEEP

    lines = [
        f"cdef inline int {name}(const unsigned char* p, Py_ssize_t n):",
        "    cdef unsigned char c = p[0] | 0x20",
    ]
    for index, letter in enumerate(sorted({header[0] for header in kinds})):
        lines.append(f"    {'elif' if index else 'if'} c == {letter}:  # {chr(letter)}")
        for header in sorted(kinds):
            if header[0] == letter:
                lines.append(f"        if _named(p, n, {header!r}, {len(header)}):")
                lines.append(f"            return {kinds[header]}")
    lines.append(f"    return {KEEP}")
    return lines


def scanner_tables() -> str:
    """canonical_head.pyx's header tables, as Cython source, from proxy/headers.py."""
    from haproxyd.proxy import headers

    out = [
        "# Generated from haproxyd/proxy/headers.py by haproxyd/_build.py (setup.py runs",
        "# it before Cython): do not edit, and do not commit.",
        "cdef enum:",
        *(f"    KIND_{kind} = {getattr(headers, kind)}" for kind in _KINDS),
        # Not a headers.py kind (those are >= 0): one no scanner handles, so llhttp's.
        f"    KIND_LLHTTP_OWN = {_LLHTTP_OWN}",
    ]
    for function, kinds in (
        ("_request_kind", headers._REQUEST_KINDS_LOWER),
        ("_response_kind", headers._RESPONSE_KINDS_LOWER),
    ):
        out += ["", ""]
        out += _kind_function(function, {**kinds, **dict.fromkeys(_LLHTTP_READS, _LLHTTP_OWN)})
    return "\n".join(out) + "\n"


def write_scanner_tables() -> None:
    """(Re)writes SCANNER_TABLES when its content changed (an unchanged file keeps its
    time, so Cython does not regenerate the scanner's C for nothing)."""
    text = scanner_tables()
    if not SCANNER_TABLES.exists() or SCANNER_TABLES.read_text() != text:
        SCANNER_TABLES.write_text(text)


def dataplane_form() -> str:
    """What this process runs: "compiled" or "interpreted"."""
    return "compiled" if all(_extension(name) for name in COMPILED) else "interpreted"
