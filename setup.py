"""Builds the data plane's compiled form (everything else is in pyproject.toml): the
modules `haproxyd._build.COMPILED` names, with Cython (a build requirement, so pip brings
it) and the machine's C compiler, all or none. What the two forms are and which one runs
where: haproxyd/_build.py's docstring.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)
from haproxyd._build import (  # noqa: E402
    COMPILED,
    RETIRED,
    inputs,
    source,
    write_scanner_tables,
)

FALLBACK = "haproxyd: could not build the compiled data plane ({}); installing it interpreted"


def fall_back(reason: str) -> None:
    # One line: a compiler's failure names its whole command; its program is enough.
    reason = re.sub(r"\['([^']*)'[^\]]*\]", r"\1 ...", " ".join(reason.split()))
    print(FALLBACK.format(reason), file=sys.stderr)


def remove_retired() -> None:
    """Delete the builds (and their C) of modules that are no longer compiled: in the
    tree, and in setuptools' build/lib* directories, whose copies a wheel would ship."""
    roots = [ROOT, *glob.glob(os.path.join(ROOT, "build", "lib*"))]
    for name in RETIRED:
        for root in roots:
            base = os.path.join(root, *name.split("."))
            for path in glob.glob(base + ".*.so") + glob.glob(base + ".*.pyd") + [base + ".c"]:
                if os.path.exists(path):
                    os.remove(path)


def extensions() -> list[Extension]:
    remove_retired()
    try:
        from Cython.Build import cythonize
    except ImportError:
        fall_back("Cython is not installed")
        return []
    write_scanner_tables()
    modules = [Extension(name, [os.path.relpath(source(name), ROOT)]) for name in COMPILED]
    try:
        return cythonize(
            modules,
            quiet=True,
            compiler_directives={
                "language_level": 3,
                # Types come from the .pxd files only: the modules' annotations are for
                # readers and mypy, and Cython would otherwise enforce some at run time.
                "annotation_typing": False,
            },
        )
    except Exception as exc:  # Cython's CompileError, or any other failure of its own
        fall_back(f"Cython: {type(exc).__name__}: {exc}")
        return []


class BuildDataPlane(build_ext):
    """All the extensions or none, and none built twice."""

    def build_extensions(self) -> None:
        try:
            super().build_extensions()
        except Exception as exc:  # no compiler, a failing one, a missing header, ...
            # Half a compiled data plane cannot run (the compiled client cimports the
            # compiled balancer state): remove what was built, install none of it.
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []
            fall_back(f"C compiler: {type(exc).__name__}: {exc}")

    def build_extension(self, ext: Extension) -> None:
        # An editable install compiles in a temporary directory, then copies the result
        # into the tree: a build there that is newer than its C, or than every source
        # of the data plane (Cython regenerates the C when its own includes are newer,
        # as they are in each new build environment), is that result, so the next
        # `pip install -e .` (the README's second command) reuses it, not compiling.
        in_tree = os.path.join(ROOT, self.get_ext_filename(ext.name))
        target = self.get_ext_fullpath(ext.name)
        if os.path.exists(in_tree) and (
            _older(in_tree, [os.path.join(ROOT, c) for c in ext.sources])
            or _older(in_tree, [str(p) for name in COMPILED for p in inputs(name)])
        ):
            if os.path.abspath(target) != in_tree:
                self.mkpath(os.path.dirname(target))
                shutil.copy2(in_tree, target)
            return
        super().build_extension(ext)


def _older(path: str, than: list[str]) -> bool:
    """Whether every existing file of `than` is older than `path`."""
    built = os.path.getmtime(path)
    return all(os.path.getmtime(p) < built for p in than if os.path.exists(p))


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildDataPlane})
