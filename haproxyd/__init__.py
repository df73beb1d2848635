"""haproxyd: an L7 HTTP/1.1 reverse proxy and load-balancing daemon."""

__version__ = "0.1.0"
