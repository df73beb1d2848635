"""Builds the data plane's compiled form (everything else is in pyproject.toml).

The modules `haproxyd._build.COMPILED` names are plain Python (`haproxyd/proxy/client.py`,
`upstream.py`, `admin/metrics.py`, and the balancer's `state.py`, `base.py` and
`round_robin.py`), run as they are when they are not compiled, and one that exists only
compiled (`proxy/canonical_head.pyx`, without which llhttp reads every head). With
Cython (a build requirement, so pip brings it) they are compiled to C extensions, typed
by their `.pxd` files: the per-request path then reads and writes its state as C struct
fields and calls its own methods as C calls, and canonical heads skip llhttp: about 73 %
fewer instructions per proxied request (bench/dataplane_cost.py). The
extensions are optional: without Cython or a C compiler the same modules run
interpreted (as they do, installed compiled, under HAPROXYD_PURE_PYTHON=1).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from haproxyd._build import COMPILED, source  # the one list of the compiled modules


def extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    root = os.path.dirname(os.path.abspath(__file__))
    modules = [
        Extension(name, [os.path.relpath(source(name), root)], optional=True)
        for name in COMPILED
    ]
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


setup(ext_modules=extensions())
