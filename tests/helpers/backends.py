"""Stub upstreams that say who they are (STYLE habit 14) and record what reached them.

They run on their own event loop in a background thread, so a test can talk to the
proxy with plain blocking sockets (or its own asyncio loop) while the backends answer.

* `Backend`: a real aiohttp server. Every response carries `X-Backend: <id>`; every
  request is recorded (method, target, headers, body, upstream peer) *before* it is
  answered, so a test can assert what the proxy forwarded.
* `RawBackend`: a bare asyncio server for what aiohttp will not produce (chunked
  responses with trailers, responses without a length, garbage, custom hop-by-hop
  headers). A handler maps the parsed request to the bytes to send back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

T = TypeVar("T")

CHUNK = 65536
_BLOCK = random.Random(20240601).randbytes(CHUNK)


def pattern_chunks(size: int) -> Any:
    """`size` deterministic, non-repeating bytes in 64 KiB pieces (block i starts with i)."""
    for index, offset in enumerate(range(0, size, CHUNK)):
        block = index.to_bytes(8, "big") + _BLOCK[8:]
        yield block[: min(CHUNK, size - offset)]


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern_chunks(size):
        digest.update(piece)
    return digest.hexdigest()


def bound_socket(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 with a port chosen by the kernel (no race), or
    on `port` (a backend restarted where it was)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class BackendLoop:
    """An asyncio loop in a daemon thread; `run` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="stub-backends", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@dataclass
class Recorded:
    """One request as a backend received it."""

    backend: str
    method: str
    target: str  # path and query, as sent on the request line
    version: str
    headers: list[tuple[str, str]]
    body: bytes | None  # None for streamed uploads (see body_len)
    peer: tuple[str, int] | None
    body_len: int = 0
    trailers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return ", ".join(values) if values else None

    def trailer(self, name: str) -> str | None:
        lname = name.lower()
        values = [v for n, v in self.trailers if n.lower() == lname]
        return ", ".join(values) if values else None


REC = web.RequestKey("rec", Recorded)


class _Recorder:
    id: str
    port: int

    def __init__(self) -> None:
        self.requests: list[Recorded] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def clear(self) -> None:
        self.requests.clear()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"backend {self.id} got {len(self.requests)} requests, expected {n}: "
                    f"{[r.method + ' ' + r.target for r in self.requests]}"
                )
            time.sleep(0.01)
        return list(self.requests)

    def config(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address}


class Backend(_Recorder):
    """A real aiohttp server. Routes (any method unless said):

    - `/echo...` and anything unmatched: JSON of what arrived (method, target,
      headers as pairs, body as latin-1, body_len)
    - `/slow?ms=N`: answers after N ms (JSON with the target)
    - `GET /download?size=N[&chunked=1][&tag=T]`: N pattern bytes, streamed; progress
      in `progress[T]`
    - `POST|PUT /upload[?pause_ms=N]`: waits N ms, then reads the body as a stream;
      JSON `{backend, bytes, sha256}`
    - `GET /ws`: WebSocket echo
    - `/status/N`: status N (body = backend id, none for 1xx/204/304; 304 has an ETag)
    - `/healthz`: like `/echo`, but 503 for the probers named in `sick_for`
    """

    def __init__(self, loop: BackendLoop, backend_id: str) -> None:
        super().__init__()
        self.id = backend_id
        self._loop = loop
        self.progress: dict[str, int] = {}
        # `/healthz` answers 503 to probers whose User-Agent contains one of these (a
        # broken path from one node: haproxyd's checks name their node there).
        self.sick_for: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle (called from the test thread) -------------------------------------

    def start(self) -> Backend:
        """Start listening: on a kernel-chosen port the first time, on the same port
        again after `stop()` (a backend that was killed and comes back)."""
        self._loop.run(self._start())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._loop.run(self._runner.cleanup())
            self._runner = None

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._record], client_max_size=1 << 30)
        app.on_response_prepare.append(self._stamp)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_get("/download", self._download)
        app.router.add_route("POST", "/upload", self._upload)
        app.router.add_route("PUT", "/upload", self._upload)
        app.router.add_get("/ws", self._ws, allow_head=False)
        app.router.add_route("*", "/status/{code:\\d+}", self._status)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.2
        )
        await self._runner.setup()
        sock = bound_socket(self.port)
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    # --- handlers (on the backend loop) ---------------------------------------------

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Backend"] = self.id

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        streamed = request.path == "/upload" or request.headers.get("Upgrade")
        body = None if streamed else await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = Recorded(
            backend=self.id,
            method=request.method,
            target=request.raw_path,
            version=f"{request.version.major}.{request.version.minor}",
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            body=body,
            body_len=len(body or b""),
            peer=tuple(peer[:2]) if peer else None,
        )
        request[REC] = rec
        self.requests.append(rec)
        return await handler(request)

    def _describe(self, request: web.Request) -> dict[str, Any]:
        rec = request[REC]
        return {
            "backend": self.id,
            "method": rec.method,
            "target": rec.target,
            "version": rec.version,
            "headers": rec.headers,
            "body": (rec.body or b"").decode("latin-1"),
            "body_len": rec.body_len,
        }

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/healthz" and any(
            who in request.headers.get("User-Agent", "") for who in self.sick_for
        ):
            return web.Response(status=503, text="sick for this prober")
        return web.json_response(self._describe(request))

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(int(request.query.get("ms", "1000")) / 1000)
        return web.json_response(self._describe(request))

    async def _status(self, request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        if code in (204, 304) or code < 200:
            headers = {"ETag": '"v1"'} if code == 304 else {}
            return web.Response(status=code, headers=headers)
        return web.Response(status=code, text=self.id)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        tag = request.query.get("tag", "")
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        if request.query.get("chunked") and request.version >= (1, 1):
            resp.enable_chunked_encoding()
        else:
            resp.content_length = size
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        self.progress[tag] = 0
        for piece in pattern_chunks(size):
            await resp.write(piece)
            self.progress[tag] += len(piece)
        await resp.write_eof()
        return resp

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(int(request.query.get("pause_ms", "0")) / 1000)
        digest = hashlib.sha256()
        total = 0
        async for piece in request.content.iter_chunked(CHUNK):
            digest.update(piece)
            total += len(piece)
        request[REC].body_len = total
        return web.json_response({"backend": self.id, "bytes": total, "sha256": digest.hexdigest()})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws


@dataclass
class RawReply:
    """What a raw backend sends back; `close` ends the connection after it, and
    `close_after` (seconds) closes it that long after an answer kept it open."""

    data: bytes
    close: bool = True
    close_after: float | None = None


RawHandler = Callable[[Recorded], "bytes | RawReply"]


class RawBackend(_Recorder):
    """A bare asyncio HTTP/1.1 server that parses requests itself (including chunked
    bodies with trailers) and answers whatever `handler` returns."""

    def __init__(self, loop: BackendLoop, backend_id: str, handler: RawHandler) -> None:
        super().__init__()
        self.id = backend_id
        self.handler = handler
        self._loop = loop
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted so far
        self.open_connections = 0  # open right now
        self.port = 0

    def start(self) -> RawBackend:
        self._loop.run(self._start())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.run(self._stop())
            self._server = None

    async def _start(self) -> None:
        sock = bound_socket()
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        reply_close_after: float | None = None
        try:
            while True:
                if reply_close_after is not None:
                    try:
                        rec = await asyncio.wait_for(
                            _read_request(reader, self.id, peer), reply_close_after
                        )
                    except TimeoutError:
                        break
                else:
                    rec = await _read_request(reader, self.id, peer)
                if rec is None:
                    break
                self.requests.append(rec)
                reply = self.handler(rec)
                if isinstance(reply, bytes):
                    reply = RawReply(reply)
                writer.write(reply.data)
                await writer.drain()
                if reply.close:
                    break
                reply_close_after = reply.close_after
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(
    reader: asyncio.StreamReader, backend_id: str, peer: Any
) -> Recorded | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head[:-4].split(b"\r\n")
    # Something that is not a request line (bytes the proxy should never have sent)
    # is recorded as a request whose method is the whole line.
    method, target, version = ([*lines[0].decode("latin-1").split(" ", 2), "", ""])[:3]
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    rec = Recorded(
        backend=backend_id,
        method=method,
        target=target,
        version=version.removeprefix("HTTP/"),
        headers=headers,
        body=b"",
        peer=tuple(peer[:2]) if peer else None,
    )
    raw = bytearray(head)
    te = (rec.header("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            raw += data
            body += data[:-2]
        while True:
            line = await reader.readuntil(b"\r\n")
            raw += line
            if line == b"\r\n":
                break
            name, _, value = line[:-2].partition(b":")
            rec.trailers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        rec.body = bytes(body)
    elif rec.header("Content-Length"):
        rec.body = await reader.readexactly(int(rec.header("Content-Length") or 0))
        raw += rec.body
    rec.body_len = len(rec.body or b"")
    rec.raw = bytes(raw)
    return rec


def echo_json(rec: Recorded) -> bytes:
    return json.dumps({"backend": rec.backend, "target": rec.target}).encode()
