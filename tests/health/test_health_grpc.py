"""`grpc` check against a real grpcio server (helpers/grpc_backend.py), plain and TLS,
and against servers that are not gRPC: an aiohttp HTTP/1.1 server, a closed port, a
peer that never answers. The protobuf encoding is checked against protobuf itself."""

from __future__ import annotations

import ssl

import pytest
import trustme
from grpc_health.v1 import health_pb2
from health_helpers import backend, closed_port, hc, make_pool, pool_config, wait_until

from haproxyd.balancer.state import BackendState
from haproxyd.health.base import create_check
from haproxyd.health.grpc import (
    _Reply,
    decode_response,
    encode_request,
    frame_message,
    grpc_timeout,
    judge,
    unframe_message,
)

ServingStatus = health_pb2.HealthCheckResponse.ServingStatus


async def probe(port: int, **fields):
    check = create_check(hc("grpc", **fields))
    try:
        return await check.probe(backend(port))
    finally:
        await check.close()


# -- the messages, against protobuf's own encoder -----------------------------------------


@pytest.mark.parametrize("service", ["", "test.Echo", "svc-" + "x" * 300, "santé.v1"])
def test_request_encoding_matches_protobuf(service):
    assert (
        encode_request(service)
        == health_pb2.HealthCheckRequest(service=service).SerializeToString()
    )


@pytest.mark.parametrize("status", [*ServingStatus.values(), 1000])
def test_response_decoding_matches_protobuf(status):
    wire = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    assert decode_response(wire) == status


def test_response_decoding_skips_unknown_fields():
    # A newer server's extra fields, of every wire type, around the status.
    extra = (
        b"\x12\x03abc"  # field 2, length-delimited
        + b"\x19"
        + bytes(8)  # field 3, 64-bit
        + b"\x25"
        + bytes(4)  # field 4, 32-bit
        + b"\x28\x96\x01"  # field 5, varint 150
    )
    assert decode_response(extra + b"\x08\x02" + extra) == ServingStatus.Value("NOT_SERVING")
    assert decode_response(extra) == 0  # absent: proto3's default, UNKNOWN


@pytest.mark.parametrize("wire", [b"\x08", b"\x12\x05ab", b"\x08\xff\xff", b"\x0b"])
def test_response_decoding_refuses_broken_messages(wire):
    with pytest.raises(ValueError):
        decode_response(wire)


def test_message_framing():
    assert frame_message(b"\x08\x01") == b"\x00\x00\x00\x00\x02\x08\x01"
    assert unframe_message(frame_message(b"abc") + b"trailing") == b"abc"
    assert grpc_timeout(1.0) == "1000m"
    assert grpc_timeout(0.0001) == "1m"
    assert grpc_timeout(200_000.0) == "200000S"


def test_judge_reads_status_and_trailers():
    serving = bytearray(frame_message(b"\x08\x01"))
    assert judge(_Reply(200, "application/grpc", serving, {"grpc-status": "0"})) == (
        True,
        "SERVING",
    )
    assert judge(_Reply(415, "text/plain")) == (False, "HTTP 415, not a gRPC response")
    assert judge(_Reply(200, "application/grpc", serving)) == (
        False,
        "no grpc-status in the response",
    )
    failed = _Reply(200, "", bytearray(), {"grpc-status": "14", "grpc-message": "caf%C3%A9 down"})
    assert judge(failed) == (False, "grpc-status 14 UNAVAILABLE: café down")
    compressed = bytearray(b"\x01" + bytes(frame_message(b"\x08\x01"))[1:])
    assert judge(_Reply(200, "", compressed, {"grpc-status": "0"})) == (
        False,
        "invalid HealthCheckResponse: the message is compressed (none was offered)",
    )
    assert judge(_Reply(200, "", bytearray(b"\x00\x00"), {"grpc-status": "0"})) == (
        False,
        "invalid HealthCheckResponse: a body of 2 bytes is no gRPC message",
    )


# -- against a real grpcio server ---------------------------------------------------------


async def test_serving_passes(grpc_backend):
    server = grpc_backend()
    result = await probe(server.port)
    assert result.ok, result.reason
    assert result.reason == "SERVING"
    assert result.latency > 0
    named = await probe(server.port, service="test.Echo")
    assert named.ok, named.reason


@pytest.mark.parametrize("status", ["NOT_SERVING", "UNKNOWN", "SERVICE_UNKNOWN"])
async def test_other_statuses_fail_with_their_name(grpc_backend, status):
    server = grpc_backend()
    server.set_health("test.Echo", status)
    result = await probe(server.port, service="test.Echo")
    assert not result.ok
    assert result.reason == status
    assert (await probe(server.port)).ok  # the server as a whole still serves


async def test_flipping_the_status_flips_the_verdict(grpc_backend):
    server = grpc_backend()
    check = create_check(hc("grpc", service="test.Echo"))
    try:
        assert (await check.probe(backend(server.port))).ok
        server.set_health("test.Echo", "NOT_SERVING")
        assert not (await check.probe(backend(server.port))).ok
        server.set_health("test.Echo", "SERVING")
        assert (await check.probe(backend(server.port))).ok
    finally:
        await check.close()


async def test_unknown_service_fails_not_found(grpc_backend):
    server = grpc_backend()
    result = await probe(server.port, service="no.such.Service")
    assert not result.ok
    assert result.reason.startswith("grpc-status 5 NOT_FOUND"), result.reason


async def test_server_without_the_health_service_fails_unimplemented(grpc_backend):
    server = grpc_backend(with_health=False)
    result = await probe(server.port)
    assert not result.ok
    assert result.reason.startswith("grpc-status 12 UNIMPLEMENTED"), result.reason


async def test_port_override(grpc_backend):
    server = grpc_backend()
    check = create_check(hc("grpc", port=server.port))
    try:
        result = await check.probe(backend(closed_port()))
    finally:
        await check.close()
    assert result.ok, result.reason
    assert check.describe() == "grpc health (server)"


@pytest.fixture(scope="module")
def grpc_tls():
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    key = leaf.private_key_pem.bytes()
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return ca, key, chain


async def test_tls_h2_by_alpn(grpc_backend, grpc_tls):
    _, key, chain = grpc_tls
    server = grpc_backend(tls=(key, chain))
    result = await probe(server.port, tls=True, verify_tls=False)
    assert result.ok, result.reason
    # The test CA is not in the system's store: verification refuses the certificate.
    result = await probe(server.port, tls=True)
    assert not result.ok
    assert result.reason.startswith("TLS error"), result.reason


async def test_tls_server_without_h2_fails(http_backend, grpc_tls):
    ca, _, _ = grpc_tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    stub = await http_backend(ssl_context=context)  # aiohttp: HTTPS, no ALPN
    result = await probe(stub.port, tls=True, verify_tls=False)
    assert not result.ok
    assert result.reason == "gRPC call failed: TLS: the backend chose ALPN none, not h2"


# -- against what is not a gRPC server ----------------------------------------------------


async def test_http1_server_fails_with_a_clear_reason(http_backend):
    stub = await http_backend()
    result = await probe(stub.port)
    assert not result.ok
    assert result.reason.startswith("gRPC call failed: not HTTP/2"), result.reason


async def test_closed_port_fails():
    result = await probe(closed_port())
    assert not result.ok
    assert result.reason.startswith("gRPC call failed: "), result.reason


async def test_peer_closing_before_any_frame_fails(tcp_server):
    async def hang_up(reader, writer):
        await reader.read(1)

    port = await tcp_server(hang_up)
    result = await probe(port)
    assert not result.ok
    assert result.reason == "gRPC call failed: connection closed before any HTTP/2 frame"


async def test_timeout_cancels_the_probe_and_closes_its_connection(tcp_server, scheduler_factory):
    # A peer that reads the preface and the call and never answers: the scheduler's
    # timeout ends the probe, and the probe's connection is closed, not left open.
    closed: list[bytes] = []

    async def silent(reader, writer):
        data = b""
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except ConnectionResetError:
            pass  # the probe's RST (see base.close_writer)
        closed.append(data)

    port = await tcp_server(silent)
    pool = make_pool("g", [port])
    scheduler = scheduler_factory()
    config = hc("grpc", interval=0.05, timeout=0.1, fall=1, jitter=0.0)
    scheduler.update({"g": pool}, {"g": pool_config([config])})
    await scheduler.start()
    await wait_until(lambda: pool.backends["g-0"].state == BackendState.DOWN, 3, "timeout")
    statuses = scheduler.statuses("g")
    assert [s.last_reason for s in statuses] == ["timeout after 0.1s"]
    await wait_until(lambda: closed, 3, "the probe's connection closed")
    preface = closed[0]
    assert preface.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert b"grpc.health.v1.Health/Check" not in preface  # HPACK-encoded (Huffman)
