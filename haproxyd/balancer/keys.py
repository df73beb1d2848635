"""Key extraction for the hashing algorithms, apart from the lookup structures.

After HAProxy's `get_server_sh/uh/hh` in `src/backend.c`: the key is extracted here and
fed to any lookup (the ip_hash/url_hash tables, the consistent-hash ring). A key
function takes the request context and returns the key bytes, or None when the request
has no such key (header or cookie absent): the caller then falls back to round robin.

Key specs (`hash_key`):
- `ip`: the client address. The socket peer, or, when the peer is in `trusted_proxies`,
  the first untrusted hop of `X-Forwarded-For` read from the right (Nginx's
  `real_ip_recursive on`). IPv4 and IPv6; the key is the canonical text form, with
  IPv4-mapped IPv6 (`::ffff:a.b.c.d`) folded into IPv4.
- `url`: the request target's path, plus the query unless `hash_query` is false.
- `header:NAME`: the first value of header NAME (case-insensitive).
- `cookie:NAME`: the value of cookie NAME in the `Cookie` header.

Each key function is O(length of the input); client addresses behind trusted proxies
are parsed once and cached.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Annotated

from pydantic import AfterValidator, Field

from haproxyd.balancer.base import RequestContext
from haproxyd.config.fields import Section, valid_cidr

KeyFunc = Callable[[RequestContext], bytes | None]

KEY_KINDS = ("ip", "url", "header:NAME", "cookie:NAME")
_CACHE_LIMIT = 4096
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_hash_key(spec: str) -> tuple[str, str]:
    """(`kind`, `name`) from a `hash_key` spec; ValueError when it is not one of KEY_KINDS."""
    text = spec.strip()
    kind, sep, name = text.partition(":")
    kind = kind.strip().lower()
    name = name.strip()
    if kind in ("ip", "url") and not sep:
        return kind, ""
    if kind in ("header", "cookie") and name and all(33 <= ord(c) < 127 for c in name):
        return kind, name
    raise ValueError(f"invalid hash_key {spec!r}: use ip, url, header:NAME or cookie:NAME")


class ClientAddressOptions(Section):
    """The option of the `ip` key (ip_hash, consistent_hash with `hash_key: ip`)."""

    trusted_proxies: list[Annotated[str, AfterValidator(valid_cidr)]] = Field(
        default_factory=list,
        description="CIDRs whose X-Forwarded-For is believed for the client IP of ip hashing.",
    )


class UrlKeyOptions(Section):
    """The option of the `url` key (url_hash, consistent_hash with `hash_key: url`)."""

    hash_query: bool = Field(True, description="url_hash / url key: include the query string.")


def make_key(
    spec: str,
    *,
    hash_query: bool = True,
    trusted_proxies: Iterable[str] = (),
) -> KeyFunc:
    """The key function for a `hash_key` spec."""
    kind, name = parse_hash_key(spec)
    if kind == "ip":
        return ClientAddress(trusted_proxies)
    if kind == "url":
        return url_key(hash_query)
    if kind == "header":
        return header_key(name)
    return cookie_key(name)


class ClientAddress:
    """The `ip` key: the client's address, through trusted proxies."""

    __slots__ = ("_hops", "_trusted", "networks")

    def __init__(self, trusted_proxies: Iterable[str] | None = ()) -> None:
        networks: list[_Network] = []
        for cidr in trusted_proxies or ():
            try:
                networks.append(ipaddress.ip_network(str(cidr).strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"invalid trusted_proxies entry {cidr!r}: expected a CIDR"
                ) from None
        self.networks = tuple(networks)
        self._trusted: dict[str, bool] = {}  # peer address -> in a trusted network
        self._hops: dict[bytes, tuple[str, bool] | None] = {}  # X-F-F hop -> (addr, trusted)

    def __call__(self, ctx: RequestContext) -> bytes | None:
        peer = ctx.client_ip
        if not peer:
            return None
        if peer.startswith("::ffff:") and "." in peer:
            peer = peer[7:]
        if self.networks and self._is_trusted(peer):
            forwarded = ctx.header(b"x-forwarded-for")
            if forwarded:
                peer = self._from_forwarded(forwarded, peer)
        return peer.encode()

    def address(self, ctx: RequestContext) -> str | None:
        """The client address as text (for logs and tests)."""
        key = self(ctx)
        return key.decode() if key is not None else None

    def _is_trusted(self, peer: str) -> bool:
        trusted = self._trusted.get(peer)
        if trusted is None:
            try:
                trusted = self._in_networks(ipaddress.ip_address(peer))
            except ValueError:
                trusted = False
            if len(self._trusted) >= _CACHE_LIMIT:
                self._trusted.clear()
            self._trusted[peer] = trusted
        return trusted

    def _in_networks(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr.version == net.version and addr in net for net in self.networks)

    def _from_forwarded(self, forwarded: bytes, peer: str) -> str:
        # Right to left: each hop was appended by the proxy to its right. Stop at the first
        # hop that is not a trusted proxy; that is the client. An unparsable hop ends the
        # walk at the last address a trusted proxy vouched for.
        client = peer
        for raw in reversed(forwarded.split(b",")):
            hop = self._parse_hop(raw)
            if hop is None:
                break
            client, trusted = hop
            if not trusted:
                break
        return client

    def _parse_hop(self, raw: bytes) -> tuple[str, bool] | None:
        if raw in self._hops:
            return self._hops[raw]
        hop: tuple[str, bool] | None = None
        text = raw.strip().decode("latin-1")
        if text.startswith("["):  # [v6]:port
            text = text[1 : text.find("]")] if "]" in text else ""
        elif text.count(":") == 1:  # v4:port
            text = text.partition(":")[0]
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            addr = None
        if addr is not None:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            hop = (str(addr), self._in_networks(addr))
        if len(self._hops) >= _CACHE_LIMIT:
            self._hops.clear()
        self._hops[raw] = hop
        return hop


def url_key(hash_query: bool = True) -> KeyFunc:
    """The `url` key: path, plus the query unless `hash_query` is false."""

    def key(ctx: RequestContext) -> bytes | None:
        url = ctx.url
        if url[:1] != b"/":
            url = _origin_form(url)
        if not hash_query:
            q = url.find(b"?")
            if q >= 0:
                url = url[:q]
        return url or None

    return key


def _origin_form(url: bytes) -> bytes:
    """`/path?query` from an absolute-form target (`http://host/path?query`)."""
    scheme_end = url.find(b"://")
    if scheme_end < 0:
        return url  # `*` or authority-form: hash as received
    slash = url.find(b"/", scheme_end + 3)
    if slash >= 0:
        return url[slash:]
    q = url.find(b"?", scheme_end + 3)
    return b"/" + url[q:] if q >= 0 else b"/"


def header_key(name: str) -> KeyFunc:
    """The `header:NAME` key: the header's first value; absent or empty is no key."""
    lname = name.lower().encode("ascii")

    def key(ctx: RequestContext) -> bytes | None:
        value = ctx.header(lname)
        if value:
            value = value.strip()
        return value or None

    return key


def cookie_key(name: str) -> KeyFunc:
    """The `cookie:NAME` key: the value of that cookie; absent or empty is no key."""
    bname = name.encode("ascii")

    def key(ctx: RequestContext) -> bytes | None:
        header = ctx.header(b"cookie")
        if not header or bname not in header:
            return None
        for part in header.split(b";"):
            cname, sep, value = part.partition(b"=")
            if sep and cname.strip() == bname:
                value = value.strip().strip(b'"')
                return value or None
        return None

    return key
