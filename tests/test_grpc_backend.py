"""The grpcio test backend (helpers/grpc_backend.py) with a grpcio client, straight to it:
what the gRPC-through-the-proxy tests will assert after a proxy must hold without one."""

from __future__ import annotations

import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.timeout(30)
DEADLINE = 10.0  # seconds per call: a hung call fails the test instead of the timeout


def test_unary_echoes_bytes_metadata_and_sets_trailers(grpc_backend):
    backend = grpc_backend()
    with grpc.insecure_channel(backend.target) as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        reply, call = unary.with_call(
            b"\x00hello", metadata=(("x-echo-who", "test"),), timeout=DEADLINE
        )
    assert reply == b"\x00hello"
    assert ("x-echo-who", "test") in call.initial_metadata()
    assert dict(call.trailing_metadata())["x-echo-bytes"] == "6"
    assert dict(call.trailing_metadata())["x-echo-trailer"] == "unary"
    [seen] = backend.calls_of("Unary")
    assert seen.requests == [b"\x00hello"] and seen.metadata["x-echo-who"] == "test"


def test_unary_fails_with_the_status_asked_for(grpc_backend):
    backend = grpc_backend()
    with grpc.insecure_channel(backend.target) as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        with pytest.raises(grpc.RpcError) as failure:
            unary(b"x", metadata=(("x-echo-abort", "9"),), timeout=DEADLINE)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details() == "aborted on request"


def test_streams_in_every_direction(grpc_backend):
    backend = grpc_backend()
    with grpc.insecure_channel(backend.target) as channel:
        server_stream = channel.unary_stream("/test.Echo/ServerStream")
        got = list(server_stream(b"ab", metadata=(("x-echo-count", "4"),), timeout=DEADLINE))
        assert got == [b"0:ab", b"1:ab", b"2:ab", b"3:ab"]
        client_stream = channel.stream_unary("/test.Echo/ClientStream")
        assert client_stream(iter([b"a", b"b", b"c"]), timeout=DEADLINE) == b"abc"
        bidi = channel.stream_stream("/test.Echo/Bidi")
        assert list(bidi(iter([b"1", b"22", b"333"]), timeout=DEADLINE)) == [b"1", b"22", b"333"]
    assert [c.method for c in backend.calls] == ["ServerStream", "ClientStream", "Bidi"]


def test_health_status_flips_and_unknown_services_are_not_found(grpc_backend):
    backend = grpc_backend()
    with grpc.insecure_channel(backend.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            request = health_pb2.HealthCheckRequest(service=service)
            return stub.Check(request, timeout=DEADLINE).status

        serving = health_pb2.HealthCheckResponse.SERVING
        assert status("") == serving and status("test.Echo") == serving
        backend.set_health("test.Echo", "NOT_SERVING")
        assert status("test.Echo") == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as failure:
            status("no.such.Service")
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_stop_releases_the_port(grpc_backend):
    backend = grpc_backend()
    port = backend.port
    backend.stop()
    backend.stop()  # idempotent
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
