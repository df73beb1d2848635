"""The data plane does not set TCP_NODELAY itself: the event loop already has.

uvloop (and asyncio's own loop) turn Nagle's algorithm off on every TCP transport they
make, accepted or connected; `ClientProtocol.connection_made` used to ask for the
socket and set it again, which cost a pseudo-socket, a dup'd socket object and a
syscall per connection. This holds the loop the daemon runs (cli.new_event_loop) to it, on
both sides, so that a loop that stopped doing it would be seen here.
"""

from __future__ import annotations

import asyncio
import socket

from haproxyd.cli import new_event_loop

FORMS = ("compiled",)  # what is tested is the event loop, not the data plane's form


class _Recorder(asyncio.Protocol):
    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        self.seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        transport.close()


def test_the_daemons_loop_sets_nodelay_on_accepted_and_connected_sockets() -> None:
    loop = new_event_loop()
    accepted: list[int] = []
    connected: list[int] = []

    async def main() -> None:
        server = await loop.create_server(lambda: _Recorder(accepted), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await loop.create_connection(lambda: _Recorder(connected), "127.0.0.1", port)
        deadline = loop.time() + 10
        while not accepted and loop.time() < deadline:
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert accepted == [1] and connected == [1], (accepted, connected)
