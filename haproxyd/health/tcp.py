"""`tcp` check: connect; optionally send bytes and expect a regex in what comes back.

HAProxy's plain `check` (a connect) and `tcp-check send` / `tcp-check expect rstring`.
The connection is closed with an RST like HAProxy's checks (no TIME_WAIT on the prober).
Cost: one connect, and for `expect` a read of at most `MAX_READ` bytes.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

from haproxyd.health.base import Check, CheckResult, clip, close_writer, register

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.sections.health import TcpCheck as TcpCheckConfig

MAX_READ = 65536  # bytes read while looking for `expect`


@register
class TcpCheck(Check):
    type = "tcp"

    def __init__(self, config: TcpCheckConfig) -> None:
        super().__init__(config)
        self.port = config.port
        self.send = config.send.encode() if config.send is not None else None
        self.expect = re.compile(config.expect.encode()) if config.expect else None

    def describe(self) -> str:
        return "tcp expect" if self.expect is not None else "tcp connect"

    async def probe(self, backend: Backend | None) -> CheckResult:
        if backend is None:
            return CheckResult(False, "tcp check needs a backend")
        host, port = self.target(backend)
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            return CheckResult(False, f"connect failed: {exc.strerror or exc}", _since(start))
        try:
            if self.send:
                writer.write(self.send)
                await writer.drain()
            if self.expect is None:
                return CheckResult(True, "connected", _since(start))
            seen = b""
            while len(seen) < MAX_READ:
                chunk = await reader.read(MAX_READ - len(seen))
                if not chunk:
                    break
                seen += chunk
                if self.expect.search(seen):
                    return CheckResult(True, "expected reply received", _since(start))
            return CheckResult(
                False,
                f"reply {clip(seen, 80)!r} does not match {self.expect.pattern.decode()!r}",
                _since(start),
            )
        except OSError as exc:
            return CheckResult(False, f"connection error: {exc.strerror or exc}", _since(start))
        finally:
            await close_writer(writer)


def _since(start: float) -> float:
    return time.perf_counter() - start
