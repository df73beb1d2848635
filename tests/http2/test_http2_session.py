"""Http2Session over a real loopback socket, driven with raw frames (helpers/h2peer.py).

Pure Python, so these run once (tests/http2 is not one of helpers/forms.py's
IN_PROCESS directories). Timers run on a FakeClock and the test sweeps, as the
runtime's sweeper does: no test sleeps to wait.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import h2.config
import h2.connection
import h2.exceptions
import pytest
from h2.errors import ErrorCodes
from helpers.clock import FakeClock
from helpers.h2peer import EchoHandler, H2Server, RawClient
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

from haproxyd.proxy.h2limits import Http2Limits

_OPEN: list[H2Server | RawClient] = []


@pytest.fixture(autouse=True)
async def _close_peers():
    yield
    while _OPEN:
        peer = _OPEN.pop()
        if isinstance(peer, RawClient):
            peer.close()
        else:
            await peer.close()


async def serve(limits: Http2Limits | None = None, **handler_args):
    clock = FakeClock()
    server = await H2Server(EchoHandler(**handler_args), limits or Http2Limits(), clock).start()
    _OPEN.append(server)
    return server, clock


async def connect(server: H2Server, settings: dict[int, int] | None = None) -> RawClient:
    client = await RawClient().connect(server.port, settings)
    _OPEN.append(client)
    return client


def req(path: bytes, *extra: tuple[bytes, bytes], method: bytes = b"GET"):
    return [(b":method", method), (b":scheme", b"http"), (b":path", path),
            (b":authority", b"a.test"), *extra]


def rst_code(frame) -> int | None:
    return frame.error_code if isinstance(frame, RstStreamFrame) else None


# -- conversion and the ordinary path --


async def test_request_is_converted_to_http11_fields_and_answered():
    server, _ = await serve()
    client = await connect(server)
    fields = req(b"/x?q=1", (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"),
                 (b"te", b"trailers"))
    client.send(client.headers(1, fields))
    head = await client.until(lambda f: isinstance(f, HeadersFrame))
    await client.until(lambda f: isinstance(f, DataFrame) and "END_STREAM" in f.flags)
    body = b"".join(f.data for f in client.frames if isinstance(f, DataFrame))
    request = server.handler.sinks[0].request
    assert (request.method, request.scheme, request.authority, request.path) == (
        b"GET", b"http", b"a.test", b"/x?q=1")
    assert request.headers == [(b"host", b"a.test"), (b"accept", b"*/*"),
                               (b"cookie", b"a=1; b=2")]
    assert request.te_trailers and request.end_stream
    from hpack import Decoder
    got = Decoder().decode(head.data, raw=True)
    assert got[0] == (b":status", b"200")
    # Connection and the field it names are HTTP/1.1's: not sent over h2 (§8.2.2).
    assert [name for name, _ in got] == [b":status", b"content-type"]
    assert body == b"ok:/x?q=1"


@pytest.mark.parametrize(
    "fields, why",
    [
        (req(b"/", (b"connection", b"keep-alive")), "connection-specific"),
        (req(b"/", (b"transfer-encoding", b"chunked")), "connection-specific"),
        (req(b"/", (b"upgrade", b"h2c")), "connection-specific"),
        (req(b"/", (b"te", b"gzip")), "te other than trailers"),
        (req(b"/", (b"X-Upper", b"1")), "upper-case name"),
        (req(b"/", (b"x-bad", b"a\rb")), "CR in a value"),
        (req(b"/", (b"host", b"b.test")), ":authority and Host differ"),
        ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")], "no :path"),
        ([*req(b"/"), (b":status", b"200")], "response pseudo-header"),
        ([(b":method", b"GET"), (b"x", b"1"), (b":scheme", b"http"), (b":path", b"/"),
          (b":authority", b"a")], "pseudo-header after a field"),
        ([*req(b"/"), (b":foo", b"1")], "unknown pseudo-header"),
        ([(b":method", b"GET"), (b":method", b"GET"), (b":scheme", b"http"),
          (b":path", b"/"), (b":authority", b"a")], "pseudo-header twice"),
        ([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"x"),
          (b":authority", b"a")], "relative :path"),
        ([*req(b"/")[:3], (b":authority", b"u@a.test")], "userinfo"),
    ],
)
async def test_malformed_request_resets_that_stream_only(fields, why):
    server, _ = await serve()
    client = await connect(server)
    client.send(client.headers(1, fields) + client.headers(3, req(b"/after")))
    reset = await client.until(lambda f: isinstance(f, RstStreamFrame))
    assert (reset.stream_id, reset.error_code) == (1, ErrorCodes.PROTOCOL_ERROR), why
    # The connection lives on: the next stream is answered.
    done = await client.until(lambda f: isinstance(f, DataFrame) and f.stream_id == 3)
    assert done.data == b"ok:/after"
    assert [s.request.path for s in server.handler.sinks] == [b"/after"]


async def test_request_body_and_trailers_reach_the_sink():
    server, _ = await serve()
    client = await connect(server)
    client.send(client.headers(1, req(b"/echo", method=b"POST"), end_stream=False)
                + client.data(1, b"hello ") + client.data(1, b"world")
                + client.headers(1, [(b"x-checksum", b"1")], end_stream=True))
    body = await client.until(lambda f: isinstance(f, DataFrame) and f.data)
    assert body.data == b"hello world"
    sink = server.handler.sinks[0]
    assert sink.trailers == [(b"x-checksum", b"1")] and not sink.request.end_stream


async def test_trailers_are_sent_after_the_body():
    server, _ = await serve()
    client = await connect(server)
    client.send(client.headers(1, req(b"/trailers")))
    last = await client.until(lambda f: "END_STREAM" in getattr(f, "flags", ()))
    assert isinstance(last, HeadersFrame)
    from hpack import Decoder
    decoder = Decoder()
    blocks = [f for f in client.frames if isinstance(f, HeadersFrame)]
    decoder.decode(blocks[0].data)
    assert decoder.decode(last.data, raw=True) == [(b"x-trailer", b"yes")]


async def test_streams_past_max_concurrent_streams_are_refused():
    server, _ = await serve(Http2Limits(max_concurrent_streams=2))
    client = await connect(server)
    client.send(b"".join(client.headers(n, req(b"/hold")) for n in (1, 3, 5)))
    reset = await client.until(lambda f: isinstance(f, RstStreamFrame))
    assert (reset.stream_id, reset.error_code) == (5, ErrorCodes.REFUSED_STREAM)
    assert len(server.handler.sinks) == 2 and not server.sessions[0].closed


# -- flow control --


@pytest.mark.parametrize("pieces", [b"/big/", b"/one/"])  # 16 KiB pieces, or one send_body
async def test_one_mib_response_through_a_64k_window_arrives_whole_with_back_pressure(pieces):
    size = 1 << 20
    server, _ = await serve(Http2Limits(send_buffer=32768))
    client = await connect(server)
    client.send(client.headers(1, req(pieces + b"%d" % size)))
    got = bytearray()
    while True:
        frame = await client.until(lambda f: isinstance(f, DataFrame))
        got += frame.data
        if frame.data:  # what a client does: give the window back as it reads
            client.send(client.window_update(0, len(frame.data))
                        + client.window_update(1, len(frame.data)))
        if "END_STREAM" in frame.flags:
            break
    assert len(got) == size and got == bytes(range(256)) * (size // 256)
    sink = server.handler.sinks[0]
    assert sink.pauses >= 1 and sink.resumes >= 1


async def test_window_update_then_reset_in_one_read_leaves_the_connection_serving():
    """A WINDOW_UPDATE that makes the session flush, followed in the same read by the
    RST_STREAM of the stream it would flush: h2 has closed that stream before the session
    sees either event, so the flush must drop its data, not fail the connection."""
    server, _ = await serve()
    client = await connect(server)
    client.send(client.headers(1, req(b"/big/%d" % (1 << 20))))
    await client.until(lambda f: isinstance(f, DataFrame))  # the window is being filled
    client.send(client.window_update(0, 1 << 20) + client.window_update(1, 1 << 20)
                + client.rst(1))  # fmt: skip
    client.send(client.headers(3, req(b"/after")))
    after = await client.until(lambda f: isinstance(f, HeadersFrame) and f.stream_id == 3)
    assert after is not None
    assert not server.sessions[0].closed


async def test_request_window_is_given_back_only_as_the_consumer_acks():
    server, _ = await serve(hold_acks=True)
    client = await connect(server)
    client.send(client.headers(1, req(b"/hold", method=b"POST"), end_stream=False))
    client.send(b"".join(client.data(1, b"x" * 16384) for _ in range(3))
                + client.data(1, b"x" * 16383))  # 65535: the whole stream window
    session = server.sessions[0]

    async def received(n: int) -> None:
        deadline = asyncio.get_running_loop().time() + 5
        while server.handler.sinks == [] or len(server.handler.sinks[0].body) < n:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)

    await received(65535)
    assert session.conn.remote_flow_control_window(1) == 0
    assert not any(isinstance(f, WindowUpdateFrame) and f.stream_id == 1 for f in client.frames)
    # More than the window is a flow-control error (h2 enforces it).
    server.handler.sinks[0].writer.ack(65535)
    update = await client.until(lambda f: isinstance(f, WindowUpdateFrame) and f.stream_id == 1)
    assert update.window_increment == 65535


# -- attacks --


async def test_rapid_reset_gets_goaway_enhance_your_calm_after_the_bound():
    bound = 10
    server, _ = await serve(Http2Limits(max_resets=bound))
    client = await connect(server)
    client.send(b"".join(client.headers(n, req(b"/hold")) + client.rst(n)
                         for n in range(1, 2 * 200, 2)))
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    # Fed to h2 only up to the offending RST_STREAM: the stream it resets, at most.
    assert len(server.handler.sinks) <= bound + 1
    assert goaway.last_stream_id == 2 * len(server.handler.sinks) - 1
    assert await client.closed()


async def test_server_side_resets_count_too():
    """MadeYouReset: malformed streams make the server reset; they count the same."""
    bound = 5
    server, _ = await serve(Http2Limits(max_resets=bound))
    client = await connect(server)
    bad = req(b"/", (b"connection", b"x"))
    client.send(b"".join(client.headers(n, bad) for n in range(1, 40, 2)))
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert await client.closed()


async def test_continuation_flood_is_cut_at_the_header_block_bound():
    server, _ = await serve(Http2Limits(max_header_block=32768))
    client = await connect(server)
    start = HeadersFrame(1, data=client.block(req(b"/")), flags=["END_STREAM"]).serialize()
    # 200 frames of 16 KiB (3.2 MB) that never end the block.
    client.send(start + b"".join(client.continuation(1, b"\x00" * 16384) for _ in range(200)))
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert b"header block" in goaway.additional_data
    # h2 was fed at most the bound: its buffered block stayed under it.
    buffered = server.sessions[0].conn.incoming_buffer._headers_buffer
    assert sum(len(f.data) for f in buffered) <= 32768
    assert server.handler.sinks == []


def test_h2_alone_buffers_64_continuation_frames_before_refusing():
    """What h2 4.x does without the guard (why the guard exists): about 1 MiB."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    client = RawClient()
    start = HeadersFrame(1, data=client.block(req(b"/"))).serialize()
    conn.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    conn.receive_data(start + b"".join(client.continuation(1, b"\x00" * 16384) for _ in range(63)))
    assert sum(len(f.data) for f in conn.incoming_buffer._headers_buffer) > 1_000_000
    with pytest.raises(h2.exceptions.ProtocolError):
        conn.receive_data(client.continuation(1, b"\x00" * 16384) * 2)


async def test_hpack_bomb_is_refused_within_max_header_list_size():
    # The raw client never ACKs our SETTINGS: the bound holds before the ACK too.
    server, _ = await serve(Http2Limits(max_header_list_size=16384))
    client = await connect(server)
    big = (b"x-big", b"a" * 4000)
    client.send(client.headers(1, req(b"/first", big)))  # enters the dynamic table
    await client.until(lambda f: isinstance(f, DataFrame) and f.stream_id == 1)
    # The value once (Huffman-coded), then 99 one-byte references to it: ~400 kB decoded.
    block = client.block(req(b"/bomb") + [big] * 100)
    assert len(block) < 3000
    client.send(client.headers(3, block))
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert [s.request.path for s in server.handler.sinks] == [b"/first"]


async def test_empty_data_and_priority_floods_get_goaway():
    server, _ = await serve(Http2Limits(max_noop_frames=50))
    client = await connect(server)
    client.send(client.headers(1, req(b"/hold", method=b"POST"), end_stream=False))
    priority = PriorityFrame(1, depends_on=0, stream_weight=16).serialize()
    client.send((client.data(1, b"") + priority) * 500)
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway.additional_data == b"empty frame flood"
    assert await client.closed()


@pytest.mark.parametrize("kind", ["settings", "ping"])
async def test_settings_and_ping_floods_get_goaway(kind):
    bound = 8
    server, _ = await serve(Http2Limits(max_settings=bound, max_pings=bound))
    client = await connect(server)
    if kind == "settings":
        from hyperframe.frame import SettingsFrame

        flood = SettingsFrame(0, settings={4: 65535}).serialize() * 1000
    else:
        flood = b"".join(client.ping(n) for n in range(1000))
    client.send(flood)
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    acks = [f for f in client.frames if "ACK" in getattr(f, "flags", ()) and
            isinstance(f, PingFrame if kind == "ping" else type(f))]
    # Answered at most the bound (the preface's SETTINGS counts among them).
    assert len(acks) <= bound
    assert await client.closed()


async def test_zero_window_stall_resets_the_stream_after_the_stall_timeout():
    limits = Http2Limits(stall_timeout=30.0)
    server, clock = await serve(limits)
    client = await connect(server, {4: 0})  # INITIAL_WINDOW_SIZE 0
    client.send(client.headers(1, req(b"/stall")))
    await client.until(lambda f: isinstance(f, HeadersFrame))
    session = server.sessions[0]
    sink = server.handler.sinks[0]
    clock.advance(29.0)
    server.sweep()
    assert sink.reset_code is None and 1 in session.streams
    clock.advance(2.0)
    server.sweep()
    reset = await client.until(lambda f: isinstance(f, RstStreamFrame))
    assert (reset.stream_id, reset.error_code) == (1, ErrorCodes.CANCEL)
    assert sink.reset_code == ErrorCodes.CANCEL and not any(
        isinstance(f, DataFrame) for f in client.frames)


async def test_client_that_stops_reading_pauses_the_producer_then_times_out():
    server, clock = await serve(Http2Limits(stall_timeout=30.0))
    client = await connect(server, {4: 2**31 - 1})  # windows never stop the response
    client.send(client.window_update(0, 2**31 - 1 - 65535))
    client.send(client.headers(1, req(b"/big/%d" % (64 << 20))))  # and it never reads
    session = server.sessions[0]
    deadline = asyncio.get_running_loop().time() + 10
    while not (server.handler.sinks and server.handler.sinks[0].pauses):
        assert asyncio.get_running_loop().time() < deadline, "the producer was never paused"
        await asyncio.sleep(0.01)
    sink = server.handler.sinks[0]
    assert session.write_paused and sink.resumes == 0
    clock.advance(31.0)
    server.sweep()
    assert sink.reset_code == ErrorCodes.CANCEL and not session.streams


async def test_idle_connection_gets_goaway_no_error_after_the_idle_timeout():
    server, clock = await serve(Http2Limits(idle_timeout=60.0))
    client = await connect(server)
    client.send(client.headers(1, req(b"/")))
    await client.until(lambda f: isinstance(f, DataFrame))
    clock.advance(59.0)
    server.sweep()
    assert not server.sessions[0].closed
    clock.advance(2.0)
    server.sweep()
    goaway = await client.goaway()
    assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, 1)
    assert await client.closed()


async def test_max_requests_ends_the_connection_gracefully():
    server, _ = await serve(Http2Limits(max_requests=2))
    client = await connect(server)
    client.send(b"".join(client.headers(n, req(b"/n%d" % n)) for n in (1, 3, 5)))
    goaway = await client.goaway()
    assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, 3)
    assert [s.request.path for s in server.handler.sinks] == [b"/n1", b"/n3"]
    assert await client.closed()
    done = [f.stream_id for f in client.frames
            if isinstance(f, DataFrame) and "END_STREAM" in f.flags]
    assert done == [1, 3]


# -- a real client --


def _curl_has_http2() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    return "HTTP2" in subprocess.run([curl, "-V"], capture_output=True, text=True).stdout


@pytest.mark.skipif(not _curl_has_http2(), reason="no curl with HTTP/2 here")
async def test_curl_prior_knowledge_post_is_echoed():
    server, _ = await serve()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-i", "--http2-prior-knowledge", "--data-binary", "hello h2",
        "-H", "Cookie: a=1", f"http://127.0.0.1:{server.port}/echo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    assert out.startswith(b"HTTP/2 200") and out.endswith(b"\r\n\r\nhello h2"), out
    request = server.handler.sinks[0].request
    assert request.method == b"POST" and (b"host", f"127.0.0.1:{server.port}".encode()) in (
        request.headers)
