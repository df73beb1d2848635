"""A backend in a process of its own, for the tests that kill one with SIGKILL (the
in-process stubs of `backends.py` can only be stopped cleanly).

Run as a script, it serves `/slow?ms=N` after N ms and anything else at once, as JSON
naming itself (and `X-Backend: <id>`, as the stubs do), and prints `listening <port>`
once it accepts.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

BOOT_TIMEOUT = 30.0  # seconds for the child to import aiohttp and listen (busy machine)


class BackendProcess:
    def __init__(self, backend_id: str, *, close: bool = False) -> None:
        """`close`: every response ends its connection (`Connection: close`), so each
        request goes on a new connection, as with an HTTP/1.0 backend."""
        self.id = backend_id
        self.proc = subprocess.Popen(
            [sys.executable, __file__, backend_id, *(["close"] if close else [])],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = _readline(self.proc, BOOT_TIMEOUT)
        if not line.startswith("listening "):
            self.proc.kill()
            raise AssertionError(f"backend process {backend_id} did not start: {line!r}")
        self.port = int(line.split()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address}

    def kill(self) -> None:
        """SIGKILL: the kernel closes every connection; nothing is answered any more."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return f"(nothing after {timeout}s)"
    return proc.stdout.readline()


async def _serve(backend_id: str, close: bool) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(int(request.query.get("ms", "1000")) / 1000)
        return web.json_response(
            {"backend": backend_id, "target": request.path_qs},
            headers={"X-Backend": backend_id, **({"Connection": "close"} if close else {})},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"listening {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], "close" in sys.argv[2:]))
