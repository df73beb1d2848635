"""Admin HTTP server (aiohttp) on `admin.address`, apart from the proxy listeners.

Started and stopped by the daemon (`AdminServer(daemon)`, `await start()`, `await
stop()`), on the daemon's event loop: handlers read the live state directly. `start`
also registers the one exchange listener that feeds the request metrics.

With `admin.tls` it serves HTTPS, and with `admin.tls.client_ca` only to clients whose
certificate that CA signed (the handshake fails otherwise, before any HTTP): Envoy's
admin and HAProxy's stats socket leave that to the operator's network; this lets the
admin port face one. Like `admin.address`, TLS settings take effect at restart.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from aiohttp import web

from haproxyd.admin.api import build_app
from haproxyd.admin.state import AdminState
from haproxyd.config.types import is_loopback
from haproxyd.proxy.listener import tls_context

if TYPE_CHECKING:
    from haproxyd.admin.host import AdminHost
    from haproxyd.config.schema import AdminTLSConfig

log = logging.getLogger("haproxyd.admin")


def admin_tls_context(tls: AdminTLSConfig) -> ssl.SSLContext:
    """The listeners' server context (TLS 1.2+), and client certificates when
    `client_ca` is set."""
    context = tls_context(tls.cert, tls.key)
    if tls.client_ca is not None:
        context.load_verify_locations(cafile=tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class AdminServer:
    def __init__(self, host: AdminHost) -> None:
        self.host = host
        self.state: AdminState | None = None
        self.app: web.Application | None = None
        self.addresses: list[tuple[str, int]] = []
        self._runner: web.AppRunner | None = None
        self._scheme = "http"  # as started: admin.tls changes take effect at restart

    @property
    def port(self) -> int:
        """The bound port (useful with `admin.address: 127.0.0.1:0`)."""
        return self.addresses[0][1] if self.addresses else 0

    @property
    def url(self) -> str:
        host, port = self.addresses[0] if self.addresses else ("127.0.0.1", 0)
        scheme = self._scheme
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    async def start(self) -> None:
        host = self.host
        state = AdminState(host, asyncio.get_running_loop())
        self.state = state
        if host.runtime is not None:
            host.runtime.add_exchange_listener(state.stats.observe)
        self.app = build_app(state)
        runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        admin = host.config.admin
        host, port = admin.address.host, admin.address.port
        tls = admin.tls
        context = admin_tls_context(tls) if tls is not None else None
        site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._scheme = "https" if context is not None else "http"
        self.addresses = [(str(a[0]), int(a[1])) for a in runner.addresses]
        state.admin_address = self.url.partition("://")[2]
        log.info("admin API on %s", self.url)
        if not admin.token and not is_loopback(host):
            log.warning(
                "!!! admin API bound to %s WITHOUT A TOKEN: anyone who can reach this "
                "address can drain, remove and reconfigure backends. Set admin.token "
                "(or HAPROXYD_ADMIN_TOKEN), or bind the admin port to 127.0.0.1 !!!",
                admin.address,
            )
        elif admin.read_auth and not admin.token:
            log.warning("admin.read_auth is set but there is no admin token: reads stay open")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
