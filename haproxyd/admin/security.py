"""What the admin API trusts, checked before any handler runs: one middleware.

The admin port changes live traffic, so a request must prove it comes from someone
allowed to, and not from a web page that someone's browser happens to be showing:

1. **Host** (421 Misdirected Request). A page on an attacker's domain can re-point
   that domain at 127.0.0.1 (DNS rebinding) and then talk to the admin port as its own
   origin; its requests still carry the attacker's name in `Host`. Accepted: any IP
   literal (rebinding needs a name; and behind Docker's port publishing or other NAT
   the address a client used is not one this process has), `localhost`, the host of
   `admin.address`, and the names in `admin.allowed_hosts`. The port is not compared:
   the name is what rebinding forges. HTTP/1.0 may omit `Host` (browsers never do).
2. **Origin** (403). A browser names the page that sent a request in `Origin` (every
   POST, PATCH and DELETE, and cross-origin reads); anything but the admin API's own
   origin (its scheme, and the `Host` the request was sent to) is a foreign page, and
   `Origin: null` (a sandboxed frame, a file) is too. Clients that are not browsers
   send none.
3. **Token** (401), when `admin.token` is set: writes, and with `admin.read_auth`
   reads, need `Authorization: Bearer <token>` (constant-time comparison).
4. **Content-Type** (415). A write's body must be `application/json`: a form or
   `text/plain` is what a foreign page can send without asking (a CORS "simple"
   request), JSON is not.

Nothing here answers CORS preflights, so a browser never lets another origin send a
JSON write or read an answer. Each refusal is the admin API's JSON error, and the
request changes nothing.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from haproxyd.admin.errors import error_response
from haproxyd.proxy.resolver import is_ip_literal

if TYPE_CHECKING:
    from haproxyd.config import AdminConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # DELETE reads no body
# Never behind auth: they show no state (the page asks the API, with the token), or,
# /ready, only which readiness condition fails, for probes that hold no token (ready.py).
PUBLIC_PATHS = frozenset({"/", "/api/v1/openapi.json", "/favicon.ico", "/ready"})
DEFAULT_PORTS = {"http": 80, "https": 443}

_HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?")


def _split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header (or an origin's authority) as (name, port): the name in lower
    case, without a trailing dot or IPv6 brackets. None when it is not host[:port]."""
    match = _HOST_HEADER.fullmatch(value.strip())
    if match is None:
        return None
    name, port = match.group(1).lower().rstrip("."), match.group(2)
    if port is not None and not 0 < int(port) <= 65535:
        return None
    return name.strip("[]"), int(port) if port is not None else None


def _misdirected(request: web.Request, admin: AdminConfig) -> web.Response | None:
    values = request.headers.getall("Host", [])
    if not values:
        return None  # HTTP/1.0 (aiohttp answers 400 to HTTP/1.1 without Host); no browser
    host = _split_host(values[0]) if len(values) == 1 else None
    if host is None:
        return _refuse(421, "invalid Host header", f"Host must be host[:port], got {values!r}")
    name = host[0]
    if name == "localhost" or name in admin.allowed_hosts or is_ip_literal(name):
        return None
    if name == admin.address.host.lower().rstrip("."):
        return None
    return _refuse(
        421,
        "misdirected request",
        f"this admin API does not answer for the host {name!r}; add it to "
        "admin.allowed_hosts if it is a name of this admin API",
    )


def _cross_origin(request: web.Request) -> web.Response | None:
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    scheme = "https" if request.secure else "http"
    own = _split_host(request.headers.get("Host", ""))
    theirs = _origin(origin)
    if own is not None and theirs is not None:
        own_origin = (scheme, own[0], own[1] or DEFAULT_PORTS[scheme])
        if theirs == own_origin:
            return None
    return _refuse(
        403,
        "cross-origin request",
        f"a page from {origin!r} may not call this admin API (only its own origin may)",
    )


def _origin(value: str) -> tuple[str, str, int] | None:
    """An Origin header as (scheme, host name, port); None for `null` or garbage."""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.fragment:
        return None
    host = _split_host(parts.netloc)
    if host is None:
        return None
    return parts.scheme, host[0], host[1] or DEFAULT_PORTS[parts.scheme]


def _unauthorized(request: web.Request, admin: AdminConfig) -> web.Response | None:
    token = admin.token
    if not token or request.path in PUBLIC_PATHS:
        return None
    if request.method in SAFE_METHODS and not admin.read_auth:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.encode()
    ):
        return None
    return error_response(
        401,
        "unauthorized",
        ["this call needs the header 'Authorization: Bearer <admin token>'"],
        headers={"WWW-Authenticate": 'Bearer realm="haproxyd"'},
    )


def _not_json(request: web.Request) -> web.Response | None:
    if request.method not in BODY_METHODS or request.match_info.http_exception is not None:
        return None  # no such route: its 404 or 405 says more
    media_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if media_type == "application/json":
        return None
    return _refuse(
        415,
        "unsupported media type",
        f"send the body as JSON with 'Content-Type: application/json' (got "
        f"{media_type or 'no Content-Type'})",
    )


def _refuse(status: int, error: str, detail: str) -> web.Response:
    return error_response(status, error, [detail])


def guard_middleware(admin_config: Callable[[], AdminConfig]) -> Callable[..., Awaitable]:
    """The middleware of the checks above; `admin_config()` gives the running `admin`
    section (a config/update that changes the token or allowed_hosts applies at once)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        admin = admin_config()
        refusal = (
            _misdirected(request, admin)
            or _cross_origin(request)
            or _unauthorized(request, admin)
            or _not_json(request)
        )
        if refusal is not None:
            return refusal
        return await handler(request)

    return guard
