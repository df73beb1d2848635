"""HTTP/2 towards clients through the whole daemon: h2c by prior knowledge, h2 by ALPN,
one exchange per stream, and what reaches the HTTP/1.1 backend byte for byte.

The frame-level bounds (rapid reset, CONTINUATION flood, HPACK bomb, floods, stalls)
are tested against the session itself in tests/http2; here they are shown to hold
through the daemon's listener too.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.request

import pytest
from h2.errors import ErrorCodes
from helpers.backends import RawReply, pattern_sha256
from helpers.h2client import H2Client
from hpack import Encoder
from hyperframe.frame import HeadersFrame, RstStreamFrame

pytestmark = pytest.mark.timeout(90)

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=30
    )


@needs_curl
def test_curl_prior_knowledge_get_and_post_reach_the_backend_as_http11(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1])
    url = f"http://127.0.0.1:{d.port}"
    out = _curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"{url}/echo?q=1")
    assert out.returncode == 0, out.stderr
    body, version = out.stdout.rsplit("\n", 1)
    assert version == "2"
    assert json.loads(body)["target"] == "/echo?q=1"
    out = _curl("--http2-prior-knowledge", "--data-binary", "h2 body", f"{url}/echo")
    assert json.loads(out.stdout)["body"] == "h2 body"
    first, second = b1.wait_for_requests(2)
    assert first.version == "1.1" and second.version == "1.1"
    assert first.header("Host") == f"127.0.0.1:{d.port}"
    assert first.header("X-Forwarded-Proto") == "http"
    assert second.method == "POST" and second.body == b"h2 body"


def _client_context(tls_files) -> ssl.SSLContext:
    """A context of its own (the session's is shared by HTTP/1.1 tests: no ALPN)."""
    context = ssl.create_default_context()
    tls_files.ca.configure_trust(context)
    return context


@needs_curl
def test_tls_listener_offers_h2_by_alpn_and_http11_when_asked(
    backend, daemon, tls_files, tmp_path
):
    b1 = backend("b1")
    d = daemon([b1], tls=(tls_files.cert, tls_files.key))
    ca = tmp_path / "ca.pem"
    tls_files.ca.cert_pem.write_to_path(str(ca))
    url = f"https://localhost:{d.port}/echo"
    common = ["--cacert", str(ca), "--resolve", f"localhost:{d.port}:127.0.0.1"]
    out = _curl(*common, "--http2", "-o", "/dev/null", "-w", "%{http_version}", url)
    assert out.stdout == "2", out
    out = _curl(*common, "--http1.1", "-o", "/dev/null", "-w", "%{http_version}", url)
    assert out.stdout == "1.1", out
    with H2Client(d.port, tls_context=_client_context(tls_files)) as c:
        r = c.request("/echo?alpn")
    assert r.status == 200
    assert b1.wait_for_requests(3)[-1].header("X-Forwarded-Proto") == "https"


def test_alpn_without_h2_and_http2_false_speak_http11_only(backend, daemon, tls_files):
    b1 = backend("b1")
    d = daemon([b1], tls=(tls_files.cert, tls_files.key), start=False)
    d.config["listeners"][0]["tls"]["alpn"] = ["http/1.1"]
    d.start()
    d2 = daemon([b1], start=False)
    d2.config["listeners"][0]["http2"] = False
    d2.start()
    # TLS with `alpn: [http/1.1]`: the handshake never chooses h2.
    context = _client_context(tls_files)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", d.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
    # Cleartext with `http2: false`: the preface is an HTTP/1.1 request of version 2.0.
    with socket.create_connection(("127.0.0.1", d2.port), timeout=5) as raw:
        raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 505 "), answer
    assert b1.requests == []


def test_streams_are_multiplexed_on_one_connection(backend, daemon):
    b1, b2 = backend("b1"), backend("b2")
    d = daemon([b1, b2])
    with H2Client(d.port) as c:
        ids = [c.send_request(f"/slow?ms=200&n={i}") for i in range(20)]
        responses = [c.wait(i) for i in ids]
    assert [r.status for r in responses] == [200] * 20
    targets = sorted(json.loads(r.body)["target"] for r in responses)
    assert targets == sorted(f"/slow?ms=200&n={i}" for i in range(20))
    # Twenty 200 ms requests in flight at once, over two backends: each backend saw
    # some (the balancer ran per stream), and every response carries its own id.
    assert b1.requests and b2.requests
    assert len({r.header(b"x-request-id") for r in responses}) == 20


def test_large_upload_and_download_pass_whole_through_the_windows(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1], extra={"http2": {"initial_window": "64KiB"}})
    payload = bytes(range(256)) * 4096  # 1 MiB, 16 windows' worth
    with H2Client(d.port) as c:
        upload = c.request("/upload", method="POST", body=payload)
        download = c.request("/download?size=2000000")
        chunked = c.request("/download?size=300000&chunked=1")
    assert upload.status == 200, upload
    assert json.loads(upload.body) == {
        "backend": "b1",
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    assert download.status == 200
    assert hashlib.sha256(download.body).hexdigest() == pattern_sha256(2000000)
    assert download.header(b"content-length") == b"2000000"
    assert hashlib.sha256(chunked.body).hexdigest() == pattern_sha256(300000)
    assert chunked.header(b"transfer-encoding") is None


def test_what_reaches_the_backend_is_the_proxys_http11_head(raw_backend, daemon):
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    rb = raw_backend(lambda rec: RawReply(ok, close=False))
    d = daemon([rb])
    with H2Client(d.port) as c:
        r = c.request(
            "/p?x=1",
            method="POST",
            headers=[
                (b"cookie", b"a=1"),
                (b"x-thing", b"v"),
                (b"cookie", b"b=2"),
                (b"te", b"trailers"),
                (b"content-length", b"3"),
            ],
            body=b"abc",
        )
    assert r.status == 200 and bytes(r.body) == b"ok"
    (rec,) = rb.wait_for_requests(1)
    head, _, body = rec.raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /p?x=1 HTTP/1.1"
    names = [line.split(b":", 1)[0].lower() for line in lines[1:]]
    # No pseudo-header, no te, one Host (from :authority), cookies joined (RFC 9113
    # §8.2.3), the proxy's own forwarding headers, the length the client declared.
    assert not any(n.startswith(b":") for n in names)
    assert b"te" not in names
    assert names.count(b"host") == 1
    assert f"host: 127.0.0.1:{d.port}".encode() in [line.lower() for line in lines]
    assert b"cookie: a=1; b=2" in lines
    assert b"x-thing: v" in lines
    assert names.count(b"content-length") == 1
    assert b"content-length: 3" in [line.lower() for line in lines]
    for name in (b"x-forwarded-for", b"x-forwarded-proto", b"x-request-id", b"via"):
        assert names.count(name) == 1, (name, lines)
    assert body == b"abc"


def test_body_without_length_goes_chunked_with_its_trailers(raw_backend, daemon):
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    rb = raw_backend(lambda rec: RawReply(ok, close=False))
    d = daemon([rb])
    with H2Client(d.port) as c:
        sid = c.send_request("/t", method="POST", end=False)
        c.send_data(sid, b"part1-")
        c.send_data(sid, b"part2")
        c.send_trailers(sid, [(b"x-checksum", b"42"), (b"content-length", b"1")])
        r = c.wait(sid)
    assert r.status == 200
    (rec,) = rb.wait_for_requests(1)
    assert rec.header("Transfer-Encoding") == "chunked"
    assert rec.body == b"part1-part2"
    # A trailer that frames the message is never forwarded (as for HTTP/1.1).
    assert rec.trailers == [("x-checksum", "42")]


def test_backend_trailers_and_chunked_response_become_h2_trailers(raw_backend, daemon):
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n"
        b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\nauthorization: no\r\n\r\n"
    )
    rb = raw_backend(lambda rec: RawReply(reply, close=False))
    d = daemon([rb])
    with H2Client(d.port) as c:
        r = c.request("/trailers")
    assert r.status == 200 and bytes(r.body) == b"hello"
    assert r.header(b"transfer-encoding") is None
    assert r.trailers is not None and (b"grpc-status", b"0") in r.trailers
    # (The trailers the HTTP/1.1 side would not forward either.)
    assert all(name != b"authorization" for name, _ in r.trailers)


def test_proxy_errors_are_answered_on_their_stream_and_the_connection_goes_on(
    backend, daemon, unused_port
):
    b1 = backend("b1")
    dead = {"id": "dead", "address": f"127.0.0.1:{unused_port()}"}
    d = daemon(
        pools={
            "web": {"backends": [b1.config()]},
            "gone": {"backends": [dead], "retries": {"attempts": 0}},
        },
        extra={
            "routes": [
                {"match": {"path_prefix": "/gone"}, "pool": "gone"},
                {"match": {"path_prefix": "/"}, "pool": "web"},
            ]
        },
    )
    with H2Client(d.port) as c:
        bad = c.request("/gone/x")
        good = c.request("/echo?after")
    assert bad.status == 502, bad
    assert bad.header(b"x-request-id")
    assert b"502" in bytes(bad.body)
    assert good.status == 200
    assert b1.wait_for_requests(1)[0].target == "/echo?after"


def test_malformed_stream_is_reset_alone_and_never_reaches_a_backend(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1])
    with H2Client(d.port, validate=False) as c:
        bad = c.send_request("/echo?bad", headers=[(b"connection", b"close")])
        refused = c.send_request("/echo", authority=b"bad/host")
        good = c.send_request("/echo?good")
        assert c.wait(bad).reset == ErrorCodes.PROTOCOL_ERROR
        assert c.wait(refused).status == 400
        assert c.wait(good).status == 200
    assert [r.target for r in b1.wait_for_requests(1)] == ["/echo?good"]


def test_client_reset_cuts_the_backend_attempt(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1])
    with H2Client(d.port) as c:
        sid = c.send_request("/download?size=50000000&tag=cut")
        while not c.responses[sid].body:
            assert c.read_once()
        c.reset(sid)
        assert c.request("/echo?next").status == 200
    entry = next(e for e in d.access_log(2) if e["path"].startswith("/download"))
    # (The request was complete: `client_closed`, as an HTTP/1.1 client's close after
    # its whole request; `client_aborted` is a body left unfinished.)
    assert entry["termination"] == "client_closed", entry
    assert entry["protocol"] == "HTTP/2"
    assert b1.progress["cut"] < 50000000


def test_response_timeout_answers_504_on_that_stream_only(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1], timeouts={"response": 1})
    with H2Client(d.port) as c:
        slow = c.send_request("/slow?ms=5000")
        fast = c.send_request("/echo?fast")
        assert c.wait(fast).status == 200
        assert c.wait(slow, timeout=10).status == 504


def test_metrics_and_access_log_carry_the_protocol(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1])
    with H2Client(d.port) as c:
        assert c.request("/echo").status == 200
    with d.conn() as c1:
        assert c1.request("GET", "/echo").status == 200
    entries = d.access_log(2)
    assert sorted(e["protocol"] for e in entries) == ["HTTP/1.1", "HTTP/2"]
    text = urllib.request.urlopen(f"http://{d.config['admin']['address']}/metrics").read()
    for protocol in (b"http1", b"http2"):
        assert re.search(
            rb'haproxyd_requests_total\{backend="b1",code="200",pool="web",protocol="'
            + protocol
            + rb'"\} 1\.0',
            text,
        ), text


def test_rapid_reset_through_the_daemon_gets_goaway(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1])
    encoder = Encoder()
    with H2Client(d.port) as c:
        frames = []
        for i in range(150):
            sid = 1 + 2 * i
            block = encoder.encode(
                [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"),
                 (b":path", b"/slow?ms=3000")]
            )  # fmt: skip
            frames.append(HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]))
            frames.append(RstStreamFrame(sid, error_code=ErrorCodes.CANCEL))
        c.sock.sendall(b"".join(f.serialize() for f in frames))
        event = c.wait_goaway()
    assert event.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    # The daemon is fine for the next client.
    with H2Client(d.port) as c:
        assert c.request("/echo").status == 200


def test_shutdown_drains_a_stream_in_flight_with_goaway(backend, daemon):
    b1 = backend("b1")
    d = daemon([b1], timeouts={"shutdown": 10, "drain_grace": 0})
    with H2Client(d.port) as c:
        sid = c.send_request("/slow?ms=1000")
        b1.wait_for_requests(1)
        d.send_signal(signal.SIGTERM)
        response = c.wait(sid)
        assert response.status == 200
        assert c.wait_goaway().error_code == ErrorCodes.NO_ERROR
    assert d.wait_exit(15) == 0
