"""The request target and Host: what is valid, what a route matches (issue 18).

- `origin_form`: a request target as the backend gets it. Origin-form (`/path?query`)
  goes as received; absolute-form (`http://b.example/x`) becomes origin-form and its
  authority replaces Host (RFC 9112 §3.2.2: a recipient must ignore Host then); `*`
  only for OPTIONS; a `#fragment` is refused (it is never sent, RFC 9112 §3.2).
- `host_ok`: a Host value (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal or a
  reg-name, an optional port of at most 65535; empty, a space, a `/`, `@`... are not.
  Remembered when valid (a client sends the same few per connection).
- `route_host` and `route_path`: the host and path that routes match (RFC 3986 §6.2.2):
  the host in lower case without port or trailing dot; the path with percent-encoded
  unreserved characters decoded, other percent-encodings in upper case, dot segments
  removed and runs of `/` merged (as nginx's `merge_slashes`), so `/%61pi/x`,
  `/x/../api/x` and `//api/x` all match a route for `/api`.

The data plane calls these only for requests off its common path (the scanner and the
common llhttp path check the few things they need inline), and routing only when the
config has routes.
"""

from __future__ import annotations

import re

from haproxyd.proxy.headers import BadRequest

_CACHE_LIMIT = 4096

# RFC 3986: IP-literal (IPv6 or IPvFuture, kept simple: hex digits, ":" and "."), or a
# reg-name of unreserved, pct-encoded and sub-delims characters; then ":" port.
_HOST = re.compile(
    rb"(\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::([0-9]*))?"
)
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?#]*)([^#]*)")

# Hosts seen valid so far: the data plane's inline check (`host in valid_hosts`)
# before it calls `host_ok`.
valid_hosts: set[bytes] = set()


def host_ok(host: bytes) -> bool:
    """Whether `host` is a valid Host value (see the module docstring)."""
    if host in valid_hosts:
        return True
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    port = match[2]
    if port and int(port) > 65535:
        return False
    if len(valid_hosts) < _CACHE_LIMIT:
        valid_hosts.add(host)
    return True


def origin_form(method: bytes, url: bytes) -> tuple[bytes, bytes | None]:
    """(the target to send, the authority that replaces Host or None). Raises
    BadRequest for a target the proxy refuses."""
    if url[:1] == b"/":
        if url.find(b"#") >= 0:  # (find: `bytes in bytes` raises and clears a TypeError)
            raise BadRequest(400, "fragment in the request target")
        return url, None
    if url == b"*":
        if method == b"OPTIONS":
            return url, None
        raise BadRequest(400, "asterisk-form target for a method other than OPTIONS")
    match = _ABSOLUTE.fullmatch(url)
    if match is None:
        raise BadRequest(400, "invalid request target")
    if match[1].lower() not in (b"http", b"https"):
        raise BadRequest(400, "request target is not an http(s) URI")
    authority = match[2]
    if b"@" in authority:
        # RFC 9110 §4.2.4: userinfo in an http(s) URI is to be treated as an error.
        raise BadRequest(400, "userinfo in the request target")
    if not host_ok(authority):
        raise BadRequest(400, "invalid authority in the request target")
    path = match[3]
    if path[:1] != b"/":
        path = b"/" + path  # "http://b.example" or "http://b.example?q" (RFC 9112 §3.2.1)
    return path, authority


def route_host(host: bytes) -> bytes:
    """The host a route matches: lower case, no port, no trailing dot."""
    name = host.lower()
    if name.startswith(b"["):
        return name[: name.find(b"]") + 1]
    return name.partition(b":")[0].rstrip(b".")


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(rb"//+")


def _percent(match: re.Match[bytes]) -> bytes:
    byte = int(match[1], 16)
    return bytes((byte,)) if byte in _UNRESERVED else b"%" + match[1].upper()


def route_path(path: bytes) -> bytes:
    """The normalised form of `path` (no query) that routes match and that
    `normalize_path: forward` sends."""
    # (find, not `in`: `bytes in bytes` raises and clears a TypeError on every call.)
    if path.find(b"%") >= 0:
        path = _PERCENT.sub(_percent, path)
    if path.find(b"//") >= 0:
        path = _SLASHES.sub(b"/", path)
    if path.find(b"/.") < 0:
        return path
    # RFC 3986 §5.2.4 on a path that starts with "/" (origin-form always does).
    out: list[bytes] = []
    segments = path.split(b"/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == b"..":
            if out:
                out.pop()
            if last:
                out.append(b"")
        elif segment == b".":
            if last:
                out.append(b"")
        else:
            out.append(segment)
    return b"/" + b"/".join(out)


def split_target(url: bytes) -> tuple[bytes, bytes]:
    """(path, "?query" or b"") of an origin-form target."""
    mark = url.find(b"?")
    if mark < 0:
        return url, b""
    return url[:mark], url[mark:]
