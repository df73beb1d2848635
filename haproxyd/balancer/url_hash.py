"""url_hash: the request path (+ query unless `hash_query: false`) picks the backend
(HAProxy `balance uri`, Nginx `hash $request_uri`), e.g. to keep each object on one
cache. Lookup: the map-based table of `map_hash.py`, O(1).
"""

from __future__ import annotations

from typing import Any

from haproxyd.balancer.keys import KeyFunc, UrlKeyOptions, url_key
from haproxyd.balancer.map_hash import MapHash
from haproxyd.balancer.registry import register
from haproxyd.balancer.slow_start import SlowStartOptions


class UrlHashOptions(UrlKeyOptions, SlowStartOptions):
    """What url_hash reads."""


@register(UrlHashOptions)
class UrlHash(MapHash):
    name = "url_hash"

    def make_key(self, options: dict[str, Any]) -> KeyFunc:
        hash_query = options.get("hash_query")
        return url_key(True if hash_query is None else bool(hash_query))
