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

    @staticmethod
    def pair() -> tuple[socket.socket, socket.socket]:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    async def send(self, message: dict[str, Any], fds: list[int] = ()) -> None:  # type: ignore[assignment]
        payload = json.dumps(message, separators=(",", ":")).encode()
        frame = _HEADER.pack(len(payload)) + payload
        loop = asyncio.get_running_loop()
        async with self._send_lock:  # frames (and their descriptors) stay in order
            if fds:
                # The descriptors ride on the first bytes; the rest follows as usual.
                while True:
                    try:
                        sent = socket.send_fds(self.sock, [frame], list(fds))
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.01)
                frame = frame[sent:]
            if frame:
                await loop.sock_sendall(self.sock, frame)

    async def recv(self) -> tuple[dict[str, Any], list[socket.socket]]:
        """The next message and the sockets that came with it."""
        loop = asyncio.get_running_loop()
        while True:
            message = self._parse()
            if message is not None:
                count = int(message.get("nfds", 0))
                sockets = [socket.socket(fileno=self._fds.popleft()) for _ in range(count)]
                return message, sockets
            future: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.sock.fileno(), future.set_result, None)
            try:
                await future
            finally:
                loop.remove_reader(self.sock.fileno())
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 64)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not data:
                raise ChannelClosed("peer closed the channel")
            self._buffer += data
            self._fds.extend(fds)

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
        for fd in self._fds:
            socket.close(fd)
        self._fds.clear()
        self.sock.close()
