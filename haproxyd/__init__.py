"""haproxyd: an L7 HTTP/1.1 reverse proxy and load-balancing daemon."""

import os

__version__ = "0.1.0"

if os.environ.get("HAPROXYD_PURE_PYTHON") == "1":
    # Run the data plane interpreted even where its compiled form is installed: for a
    # traceback through its lines, a profiler, or a comparison (haproxyd/_build.py).
    from haproxyd._build import prefer_source

    prefer_source()
