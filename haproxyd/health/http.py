"""`http` check: an HTTP request per probe, judged on status code and optional body regex.

Modelled on HAProxy's `option httpchk` / `http-check expect` and Envoy's HTTP health
checker (`expected_statuses` as ranges). One aiohttp `ClientSession` per check config is
shared by every backend of the pool and keeps connections alive between probes, so a
probe costs one request, not one TCP (and TLS) handshake; a dead backend still fails at
once, because the kernel resets the pooled connection and the reconnect is refused.
Cost: O(1) per probe plus the body read, which is bounded by `MAX_BODY`.
"""

from __future__ import annotations

import re
import ssl
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from haproxyd.health.base import Check, CheckResult, clip, register

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend

MAX_BODY = 65536  # bytes of the response body searched by `expect_body`


def parse_status_ranges(spec: Any) -> tuple[tuple[int, int], ...]:
    """`[200, "300-399"]` -> ((200, 200), (300, 399)); a bare int or string is one item."""
    items = spec if isinstance(spec, list | tuple) else [spec]
    ranges = []
    for item in items:
        if isinstance(item, int):
            ranges.append((item, item))
            continue
        text = str(item).strip()
        low, sep, high = text.partition("-")
        if sep:
            ranges.append((int(low), int(high)))
        else:
            ranges.append((int(text), int(text)))
    return tuple(ranges)


def _format_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


DEFAULT_USER_AGENT = "haproxyd-health/1"
URL_CACHE = 100_000  # targets whose parsed URL a check keeps


@register
class HttpCheck(Check):
    type = "http"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.method = (getattr(config, "method", None) or "GET").upper()
        self.path = getattr(config, "path", None) or "/"
        if not self.path.startswith("/"):
            self.path = "/" + self.path
        self.ranges = parse_status_ranges(getattr(config, "expect_status", None) or [200])
        body = getattr(config, "expect_body", None)
        self.body_re = re.compile(body.encode()) if body else None
        self.scheme = "https" if getattr(config, "tls", False) else "http"
        self.headers = dict(getattr(config, "headers", None) or {})
        host = getattr(config, "host", None)
        if host:
            self.headers["Host"] = host
        self.headers.setdefault("User-Agent", DEFAULT_USER_AGENT)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[tuple[str, int], URL] = {}

    def bind(self, node_id: str) -> None:
        # Which node probes, for the backend's logs (a cluster has several probers);
        # a User-Agent set in the config's headers is kept as it is.
        if self.headers.get("User-Agent") == DEFAULT_USER_AGENT:
            self.headers["User-Agent"] = f"{DEFAULT_USER_AGENT} (node {node_id})"

    def describe(self) -> str:
        return f"http {self.method} {self.path}"

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession must be made inside the running loop.
        if self._session is None or self._session.closed:
            ssl_option: ssl.SSLContext | bool = True
            if self.scheme == "https" and not getattr(self.config, "verify_tls", True):
                ssl_option = False
            connector = aiohttp.TCPConnector(limit=0, ssl=ssl_option, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # The scheduler enforces the check's timeout; no second clock here.
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def probe(self, backend: Backend | None) -> CheckResult:
        if backend is None:
            return CheckResult(False, "http check needs a backend")
        host, port = self.target(backend)
        url = self._urls.get((host, port))
        if url is None:
            # Parsed once per target, not once per probe (yarl's parsing is a good
            # share of a probe's CPU at 1,000 backends).
            url_host = f"[{host}]" if ":" in host else host
            url = URL(f"{self.scheme}://{url_host}:{port}{self.path}")
            if len(self._urls) < URL_CACHE:
                self._urls[(host, port)] = url
        start = time.perf_counter()
        try:
            async with self._client().request(
                self.method, url, headers=self.headers, allow_redirects=False
            ) as response:
                status = response.status
                body = b""
                if self.body_re is not None:
                    body = await response.content.read(MAX_BODY)
                # Reading to the end keeps the connection reusable; a large body is
                # not worth it, closing is cheaper.
                if response.content.at_eof() or await _drain(response):
                    response.release()
                else:
                    response.close()
        except aiohttp.ClientSSLError as exc:
            return CheckResult(False, f"TLS error: {clip(str(exc))}", time.perf_counter() - start)
        except (aiohttp.ClientError, OSError) as exc:
            reason = clip(str(exc)) or type(exc).__name__
            return CheckResult(False, f"HTTP request failed: {reason}", time.perf_counter() - start)
        latency = time.perf_counter() - start
        if not any(lo <= status <= hi for lo, hi in self.ranges):
            return CheckResult(
                False, f"HTTP {status}, expected {_format_ranges(self.ranges)}", latency
            )
        if self.body_re is not None and not self.body_re.search(body):
            return CheckResult(
                False,
                f"HTTP {status}: body does not match {self.body_re.pattern.decode()!r}",
                latency,
            )
        return CheckResult(True, f"HTTP {status}", latency)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _drain(response: aiohttp.ClientResponse) -> bool:
    """Read and drop at most MAX_BODY more bytes; True when the body ended."""
    remaining = MAX_BODY
    while remaining > 0:
        chunk = await response.content.read(min(remaining, 16384))
        if not chunk:
            return True
        remaining -= len(chunk)
    return response.content.at_eof()
