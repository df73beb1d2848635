"""Which form of the data plane runs: compiled (setup.py builds `COMPILED` with Cython
where it can) or interpreted (the same `.py` files)."""

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
    "haproxyd.proxy.client",
    "haproxyd.proxy.upstream",
    "haproxyd.proxy.canonical_head",
    "haproxyd.admin.metrics",
)
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)


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


def stale_builds() -> list[str]:
    """The compiled modules older than their source or `.pxd` (an editable install whose
    sources were edited after `pip install -e .`: the old build is what would run)."""
    stale = []
    for name in COMPILED:
        built = _extension(name)
        if built is None:
            continue
        sources = (source(name), source(name).with_suffix(".pxd"))
        if any(p.exists() and p.stat().st_mtime > built.stat().st_mtime for p in sources):
            stale.append(name)
    return stale


def dataplane_form() -> str:
    """What this process runs: "compiled" or "interpreted"."""
    return "compiled" if all(_extension(name) for name in COMPILED) else "interpreted"
