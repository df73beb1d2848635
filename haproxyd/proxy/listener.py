"""Proxy listeners: one asyncio server per `listeners:` entry, TLS when configured."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from haproxyd.proxy.client import ClientProtocol

if TYPE_CHECKING:
    from haproxyd.config.schema import ListenerConfig
    from haproxyd.proxy.runtime import ProxyRuntime

BACKLOG = 4096


def tls_context(
    cert: str | Path, key: str | Path, alpn: Sequence[str] = ("http/1.1",)
) -> ssl.SSLContext:
    """A server context; `alpn`: the protocols offered, in order of preference (the
    client protocol switches to HTTP/2 when the handshake chose `h2`)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(list(alpn))
    return context


ListenerKey = tuple[str, int, str | None, bool]


def listener_key(listener: ListenerConfig) -> ListenerKey:
    """What identifies a listener across reloads: its address (the socket is kept) and
    its TLS material, with the files' modification times, so that renewed certificates
    at the same paths are served by the next connection after a reload, and the
    protocols it speaks (ALPN, h2c)."""
    tls = listener.tls
    material = None
    if tls is not None:
        stamps = []
        for path in (tls.cert, tls.key):
            try:
                stamps.append(f"{path}@{os.stat(path).st_mtime_ns}")
            except OSError:
                stamps.append(str(path))
        stamps.append(",".join(tls.alpn))
        material = "|".join(stamps)
    return (listener.address.host, listener.address.port, material, listener.http2)


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class ListenerSockets:
    """The node's listening sockets, owned by the daemon (the master when there are
    workers), one per listener address and worker slot, all with SO_REUSEPORT.

    Data-plane servers never own these: they serve a duplicate descriptor. So a server
    can be closed and another started on the same address (new TLS material, a new
    worker replacing a dead one) while the kernel keeps the accept queue: no connection
    waiting in the backlog is lost.
    """

    def __init__(self) -> None:
        self.slots: dict[tuple[str, int], list[socket.socket]] = {}

    def sync(self, listeners: list[ListenerConfig], slots: int) -> list[socket.socket]:
        """Bind what is new, trim or extend the slots of each address; returns the
        sockets that are no longer wanted (close them once no worker serves them).
        Raises OSError, changing nothing, when an address cannot be bound."""
        wanted = [(item.address.host, item.address.port) for item in listeners]
        created: dict[tuple[str, int], list[socket.socket]] = {}
        try:
            for address in wanted:
                have = self.slots.get(address, [])
                if not have and address[1] != 0:
                    # A plain bind first: SO_REUSEPORT would otherwise let a second
                    # haproxyd share a port that is "busy" (exit on a busy port).
                    try:
                        _bind(*address, reuse_port=False).close()
                    except OSError as exc:  # say which listener: there may be several
                        host = f"[{address[0]}]" if ":" in address[0] else address[0]
                        raise OSError(exc.errno, f"{host}:{address[1]}: {exc.strerror}") from exc
                fresh = []
                for _ in range(max(0, slots - len(have))):
                    # Port 0 takes the port the first slot got, so every slot agrees.
                    port = (
                        have[0].getsockname()[1]
                        if have
                        else (fresh[0].getsockname()[1] if fresh else address[1])
                    )
                    sock = _bind(address[0], port, reuse_port=True)
                    sock.listen(BACKLOG)
                    sock.setblocking(False)
                    fresh.append(sock)
                created[address] = fresh
        except BaseException:
            for socks in created.values():
                for sock in socks:
                    sock.close()
            raise
        removed: list[socket.socket] = []
        slots_now: dict[tuple[str, int], list[socket.socket]] = {}
        for address in wanted:
            socks = self.slots.get(address, []) + created[address]
            removed += socks[slots:]
            slots_now[address] = socks[:slots]
        for address, socks in self.slots.items():
            if address not in slots_now:
                removed += socks
        self.slots = slots_now
        return removed

    def for_slot(self, listeners: list[ListenerConfig], slot: int) -> list[socket.socket]:
        """The socket of each listener (in order) for worker `slot`."""
        return [self.slots[(i.address.host, i.address.port)][slot] for i in listeners]

    def close(self) -> None:
        for socks in self.slots.values():
            for sock in socks:
                sock.close()
        self.slots = {}


async def start_listener(
    runtime: ProxyRuntime, listener: ListenerConfig, sock: socket.socket
) -> asyncio.Server:
    """Serve `listener` on `sock`, which the server then owns (pass a duplicate)."""
    loop = asyncio.get_running_loop()
    tls = listener.tls
    context = tls_context(tls.cert, tls.key, tls.alpn) if tls is not None else None
    is_tls = context is not None
    # HTTP/2: on TLS when the handshake's ALPN chose it (offered where `tls.alpn` lists
    # it), on cleartext by prior knowledge (h2c) unless `http2: false`.
    http2 = "h2" in tls.alpn if tls is not None else listener.http2
    # A partial, not a lambda: uvloop calls the factory for every accepted connection,
    # and a lambda is a Python frame there (about 1k instructions each time).
    factory = functools.partial(ClientProtocol, runtime, tls=is_tls, http2=http2)
    server = await loop.create_server(factory, sock=sock, ssl=context, backlog=BACKLOG)
    runtime.server_setup[server] = (context, factory)
    return server


async def stop_accepting(runtime: ProxyRuntime, server: asyncio.Server) -> None:
    """Close `server` for good (shutdown), serving what already waits in its backlog.

    Closing a listening socket resets the connections the kernel completed but nobody
    accepted yet: their clients saw `connect()` succeed and then lose the connection
    unanswered. So the socket is kept open (a duplicate) past the server's close, its
    accept queue emptied into ordinary client connections, and only then closed; what
    is left is the instant between the last `accept()` and `close()`.
    """
    loop = asyncio.get_running_loop()
    context, factory = runtime.server_setup.pop(server)
    held = [socket.socket(fileno=os.dup(item.fileno())) for item in server.sockets]
    server.close()
    for sock in held:
        sock.setblocking(False)
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # BlockingIOError: the queue is empty
                break
            try:
                await loop.connect_accepted_socket(factory, conn, ssl=context)
            except OSError:
                conn.close()
        sock.close()


async def sync_servers(
    runtime: ProxyRuntime,
    servers: dict[ListenerKey, asyncio.Server],
    listeners: list[ListenerConfig],
    sockets: list[socket.socket],
) -> None:
    """Serve `listeners` (their sockets in `sockets`, same order, owned by this call):
    start what is new, then close servers no longer wanted. A listener whose key did not
    change keeps its server (and the offered socket is closed)."""
    wanted = {
        listener_key(item): (item, sock) for item, sock in zip(listeners, sockets, strict=True)
    }
    opened: dict[ListenerKey, asyncio.Server] = {}
    try:
        for key, (item, sock) in wanted.items():
            if key in servers:
                sock.close()
            else:
                opened[key] = await start_listener(runtime, item, sock)
    except BaseException:
        for server in opened.values():
            server.close()
        for key, (_, sock) in wanted.items():
            if key not in servers and key not in opened:
                sock.close()
        raise
    for key in list(servers):
        if key not in wanted:
            server = servers.pop(key)
            runtime.server_setup.pop(server, None)
            server.close()
    servers.update(opened)
