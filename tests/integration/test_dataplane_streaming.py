"""Bodies stream through in both directions, with back-pressure; WebSocket tunnelling.

Sizes are large enough that a proxy holding bodies whole would show it (a 256 MiB
download against a 200 MB RSS ceiling) but the checks are on behaviour and memory, never
on speed: speed is the benchmark's business.
"""

from __future__ import annotations

import hashlib

import aiohttp
import pytest
from helpers.asserts import wait_stable
from helpers.backends import pattern_chunks, pattern_sha256
from helpers.http1 import build_request

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024


def test_large_upload_streams_through(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    size = 64 * MiB + 7
    with d.conn(timeout=60) as c:
        c.send(build_request("POST", "/upload", {"Content-Length": str(size)}))
        for piece in pattern_chunks(size):
            c.send(piece)
        r = c.read_response(timeout=60)
    assert r.status == 200, r
    assert r.json()["bytes"] == size
    assert r.json()["sha256"] == pattern_sha256(size)


def test_large_chunked_upload_streams_through(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    size = 16 * MiB + 3
    with d.conn(timeout=60) as c:
        c.send(build_request("PUT", "/upload", {"Transfer-Encoding": "chunked"}))
        for piece in pattern_chunks(size):
            c.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        c.send(b"0\r\n\r\n")
        r = c.read_response(timeout=60)
    assert r.status == 200, r
    assert r.json() == {"backend": "b1", "bytes": size, "sha256": pattern_sha256(size)}


def test_large_download_streams_through(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    size = 64 * MiB + 5
    digest = hashlib.sha256()
    with d.conn(timeout=60) as c:
        c.send(build_request("GET", f"/download?size={size}"))
        r = c.read_response(sink=digest.update, timeout=60)
        assert r.status == 200, r
        assert r.framing == "length" and r.header("Content-Length") == str(size), r
        assert r.body_len == size
        assert digest.hexdigest() == pattern_sha256(size)
        assert c.request("GET", "/echo?after").status == 200


def test_download_is_back_pressured_and_memory_stays_flat(backend, daemon):
    """The client stops reading after 1 MiB of a 256 MiB body: the backend must stall
    (the proxy pauses reading it), and the daemon's peak RSS stays under 200 MB."""
    b1 = backend()
    d = daemon([b1])
    size = 256 * MiB
    digest = hashlib.sha256()
    with d.conn(timeout=60, rcvbuf=64 * 1024) as c:
        c.send(build_request("GET", f"/download?size={size}&tag=flat"))
        r = c.read_head()
        assert r.status == 200, r
        c.read_exact(MiB, sink=digest.update)
        stalled_at = wait_stable(lambda: b1.progress.get("flat", 0))
        assert stalled_at < size // 2, (
            f"backend sent {stalled_at} of {size} bytes while the client read nothing: "
            "the proxy does not apply back-pressure"
        )
        rss_while_stalled = d.proc_status("VmRSS")
        c.read_exact(size - MiB, sink=digest.update, timeout=90)
    assert digest.hexdigest() == pattern_sha256(size)
    peak = d.proc_status("VmHWM")
    assert rss_while_stalled < 200 * 1024, f"RSS {rss_while_stalled} KiB while stalled"
    assert peak < 200 * 1024, f"peak RSS {peak} KiB after a 256 MiB download"


def test_upload_is_back_pressured_and_memory_stays_flat(backend, daemon):
    """The backend waits 1 s before reading a 256 MiB upload: a proxy that kept reading
    the client meanwhile would hold most of it; the peak RSS must stay under 200 MB."""
    b1 = backend()
    d = daemon([b1])
    size = 256 * MiB
    with d.conn(timeout=60) as c:
        c.send(build_request("POST", "/upload?pause_ms=1000", {"Content-Length": str(size)}))
        for piece in pattern_chunks(size):
            c.send(piece)
        r = c.read_response(timeout=60)
    assert r.status == 200, r
    assert r.json()["bytes"] == size
    assert r.json()["sha256"] == pattern_sha256(size)
    peak = d.proc_status("VmHWM")
    assert peak < 200 * 1024, f"peak RSS {peak} KiB after a 256 MiB upload"


def test_client_abort_mid_download_leaves_proxy_healthy(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    with d.conn(timeout=20) as c:
        c.send(build_request("GET", f"/download?size={32 * MiB}"))
        r = c.read_head()
        assert r.status == 200, r
        c.read_exact(64 * 1024)
    # the aborted response must not leak into later exchanges on a reused connection
    for i in range(4):
        with d.conn() as c:
            r = c.request("GET", f"/echo?after={i}")
            assert r.status == 200, r
            assert r.json()["target"] == f"/echo?after={i}"


def test_tls_download_streams_through(backend, daemon, tls_files):
    b1 = backend()
    d = daemon([b1], tls=(tls_files.cert, tls_files.key))
    size = 8 * MiB + 1
    digest = hashlib.sha256()
    with d.tls_conn(tls_files.client_context, timeout=30) as c:
        c.send(build_request("GET", f"/download?size={size}"))
        r = c.read_response(sink=digest.update, timeout=30)
    assert r.status == 200, r
    assert digest.hexdigest() == pattern_sha256(size)


async def test_websocket_echo_through_proxy(backend, daemon):
    b1 = backend()
    d = daemon([b1])
    big = b"".join(pattern_chunks(MiB + 17))
    async with aiohttp.ClientSession() as session, session.ws_connect(d.url("/ws")) as ws:
        await ws.send_str("hello through the proxy")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT and msg.data == "hello through the proxy"
        await ws.send_bytes(big)
        msg = await ws.receive(timeout=20)
        assert msg.type == aiohttp.WSMsgType.BINARY
        assert msg.data == big
        for i in range(20):
            await ws.send_str(f"m{i}")
        got = [(await ws.receive(timeout=5)).data for _ in range(20)]
        assert got == [f"m{i}" for i in range(20)]
        await ws.close()
    rec = b1.requests[0]
    assert (rec.header("Upgrade") or "").lower() == "websocket"
    assert rec.header("Sec-WebSocket-Key")
    # plain HTTP still works afterwards
    with d.conn() as c:
        assert c.request("GET", "/echo").status == 200
