"""`haproxyd demo`: three local backends and the proxy in front of them, in one command.

Meant for a newcomer's first minute: nothing to configure, nothing external to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

from aiohttp import ClientSession, web

from haproxyd.config import default_config
from haproxyd.daemon import Daemon


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _start_backend(name: str) -> tuple[web.AppRunner, int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(
            text=f"hello from {name} (you asked for {request.path_qs})\n",
            headers={"X-Backend": name},
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def run_demo(*, port: int = 8080, duration: float = 0) -> int:
    runners = []
    backends = []
    for index in (1, 2, 3):
        runner, backend_port = await _start_backend(f"demo-{index}")
        runners.append(runner)
        backends.append({"id": f"demo-{index}", "address": f"127.0.0.1:{backend_port}"})
    if port and not _port_free(port):
        print(f"port {port} is busy; using a free port instead")
        port = 0
    defaults = default_config()
    base = defaults.model_dump(mode="json")
    base["listeners"] = [{"address": f"127.0.0.1:{port}"}]
    admin_port = defaults.admin.address.port
    if not _port_free(admin_port):  # as for the proxy port: the demo must start
        print(f"admin port {admin_port} is busy; using a free port instead")
        base["admin"]["address"] = "127.0.0.1:0"
    base["pools"]["web"]["backends"] = backends
    config = type(defaults).model_validate(base)
    daemon = Daemon(config)
    await daemon.start()
    address = daemon.listen_addresses()[0]
    url = f"http://{address}/"
    print(f"haproxyd demo: proxy on {url}, balancing round robin over:")
    for backend in backends:
        print(f"  {backend['id']}  http://{backend['address']}/")
    async with ClientSession() as session:
        seen = []
        for _ in range(6):
            async with session.get(url) as response:
                seen.append(response.headers.get("X-Backend", "?"))
    print("six requests went to:", ", ".join(seen))
    print(f"try:  curl -i {url}   (Ctrl-C to stop)")
    print(f"status page: {daemon.admin_url()}/")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration or None)
    await daemon.shutdown()
    for runner in runners:
        await runner.cleanup()
    return 0
