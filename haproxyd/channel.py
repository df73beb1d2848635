"""The master <-> worker channel: length-prefixed JSON over a Unix socketpair.

Messages are small dicts with an `op`. Listening sockets travel with a message as
SCM_RIGHTS descriptors (`nfds` says how many belong to it); on a stream socket they
arrive with the message's first byte, so by the time a message is complete its
descriptors have been received, in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 << 20
_BUFFER = 4 << 20


class ChannelClosed(Exception):
    """The peer closed the channel (or sent something that is not a message)."""


class Channel:
    """One end of the socketpair, driven by the event loop of its process."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
        self.sock = sock
        self._buffer = bytearray()
        self._fds: collections.deque[int] = collections.deque()
        self._send_lock = asyncio.Lock()
        # (loop, future) of a recv/send waiting on the descriptor, for `close`.
        self._reader: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._writer: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self.closed = False

    @staticmethod
    def pair() -> tuple[socket.socket, socket.socket]:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    async def send(self, message: dict[str, Any], fds: list[int] = ()) -> None:  # type: ignore[assignment]
        payload = json.dumps(message, separators=(",", ":")).encode()
        view = memoryview(_HEADER.pack(len(payload)) + payload)
        async with self._send_lock:  # frames (and their descriptors) stay in order
            if fds:
                # The descriptors ride on the first bytes; the rest follows as usual.
                while True:
                    self._check_open()
                    try:
                        sent = socket.send_fds(self.sock, [view], list(fds))
                        break
                    except (BlockingIOError, InterruptedError):
                        await self._wait_ready(writing=True)
                view = view[sent:]
            while view:
                self._check_open()
                try:
                    view = view[self.sock.send(view) :]
                except (BlockingIOError, InterruptedError):
                    await self._wait_ready(writing=True)
                except OSError as exc:
                    raise ChannelClosed(str(exc)) from exc

    async def recv(self) -> tuple[dict[str, Any], list[socket.socket]]:
        """The next message and the sockets that came with it."""
        while True:
            message = self._parse()
            if message is not None:
                count = int(message.get("nfds", 0))
                sockets = [socket.socket(fileno=self._fds.popleft()) for _ in range(count)]
                return message, sockets
            self._check_open()
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 64)
            except (BlockingIOError, InterruptedError):
                await self._wait_ready(writing=False)
                continue
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not data:
                raise ChannelClosed("peer closed the channel")
            self._buffer += data
            self._fds.extend(fds)

    async def _wait_ready(self, *, writing: bool) -> None:
        """Until the socket is readable (or writable). The registration with the loop is
        this channel's own, so that `close` can take it back before the descriptor goes:
        closing a descriptor the loop still polls aborts uvloop (epoll on a stale fd)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        fd = self.sock.fileno()
        if writing:
            loop.add_writer(fd, _wake, future)
            self._writer = (loop, future)
        else:
            loop.add_reader(fd, _wake, future)
            self._reader = (loop, future)
        try:
            await future
        finally:
            # `close` may have unregistered it (and failed the future) already.
            if writing and self._writer is not None and self._writer[1] is future:
                self._writer = None
                loop.remove_writer(fd)
            elif not writing and self._reader is not None and self._reader[1] is future:
                self._reader = None
                loop.remove_reader(fd)

    def _check_open(self) -> None:
        if self.closed:
            raise ChannelClosed("channel closed")

    def _parse(self) -> dict[str, Any] | None:
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(buffer)
        if length > MAX_MESSAGE:
            raise ChannelClosed(f"message of {length} bytes is too large")
        end = _HEADER.size + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[_HEADER.size : end])
        del buffer[:end]
        try:
            message = json.loads(payload)
        except ValueError as exc:
            raise ChannelClosed(f"malformed message: {exc}") from exc
        if not isinstance(message, dict):
            raise ChannelClosed("malformed message: not an object")
        return message

    def close(self) -> None:
        """Unregister from the loop first, then close (safe while a `recv` or `send` is
        waiting: it gets ChannelClosed)."""
        if self.closed:
            return
        self.closed = True
        fd = self.sock.fileno()
        for waiting, remove in ((self._reader, "remove_reader"), (self._writer, "remove_writer")):
            if waiting is not None:
                loop, future = waiting
                getattr(loop, remove)(fd)
                if not future.done():
                    future.set_exception(ChannelClosed("channel closed"))
        self._reader = self._writer = None
        for received in self._fds:
            socket.close(received)
        self._fds.clear()
        self.sock.close()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
