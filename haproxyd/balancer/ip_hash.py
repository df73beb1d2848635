"""ip_hash: the client address picks the backend (HAProxy `balance source`, Nginx
`ip_hash`).

The address is the socket peer, or, when the peer is in `trusted_proxies`, the first
untrusted hop of `X-Forwarded-For` (see `keys.ClientAddress`); IPv4 and IPv6, the whole
address (not Nginx's /24). Lookup: the map-based table of `map_hash.py`, O(1).
"""

from __future__ import annotations

from typing import Any

from haproxyd.balancer.keys import ClientAddress, ClientAddressOptions, KeyFunc
from haproxyd.balancer.map_hash import MapHash
from haproxyd.balancer.registry import register
from haproxyd.balancer.slow_start import SlowStartOptions


class IpHashOptions(ClientAddressOptions, SlowStartOptions):
    """What ip_hash reads."""


@register(IpHashOptions)
class IpHash(MapHash):
    name = "ip_hash"

    def make_key(self, options: dict[str, Any]) -> KeyFunc:
        return ClientAddress(options.get("trusted_proxies") or ())
