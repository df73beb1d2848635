"""A real gRPC server (grpcio) for tests: the standard health service and an echo service.

`GrpcBackend` runs grpcio's threaded server (its own threads, no event loop of the
test's), so the same object serves in-process asyncio tests and tests that drive the
daemon with blocking sockets. It binds an ephemeral port on 127.0.0.1 itself (grpcio's
`add_*_port(":0")` returns the port it bound: no race), cleartext h2c or, with `tls=`,
TLS with ALPN h2.

Services:

* `grpc.health.v1.Health` (grpcio-health-checking's servicer): `Check` and `Watch`.
  The server as a whole (`""`) and `test.Echo` start SERVING; `set_health(service,
  "NOT_SERVING")` flips one. `Check` for a service never set answers grpc-status
  NOT_FOUND, as the protocol says for an unknown service.
* `test.Echo`, a generic handler with raw-bytes (de)serializers, so no generated code:
  - `Unary`: the request bytes back; initial metadata echoes every request key that
    starts with `x-echo-`; trailing metadata `x-echo-trailer: unary` and
    `x-echo-bytes: <request length>`. With request metadata `x-echo-abort: CODE` the
    call fails with that gRPC status code (an int) and the message `aborted on request`.
  - `ServerStream`: `x-echo-count` messages (default 3), the i-th `b"<i>:" + request`.
  - `ClientStream`: the requests joined, one response.
  - `Bidi`: each request echoed as it arrives.
  Every call is recorded in `calls` (method, request metadata, requests seen) before it
  is answered, so a test can assert what a proxy forwarded (STYLE habit 14).

    backend = GrpcBackend("g1").start()
    with grpc.insecure_channel(backend.target) as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        assert unary(b"hi") == b"hi"
    backend.stop()

`config()` gives the daemon's backend entry (`{"id", "address"}`), like the HTTP stub
backends; the `grpc_backend` fixture (tests/conftest.py) starts them and stops them at
the end of the test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ECHO_SERVICE = "test.Echo"
LOOPBACK = "127.0.0.1"
STOP_GRACE = 1.0  # seconds in-flight calls get when the backend stops


@dataclass
class EchoCall:
    """One call to `test.Echo` as the server received it."""

    method: str
    metadata: dict[str, str]
    requests: list[bytes] = field(default_factory=list)


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {item.key: item.value for item in context.invocation_metadata()}


class _Echo:
    """The handlers of `test.Echo`; each records its call first."""

    def __init__(self, calls: list[EchoCall], lock: threading.Lock) -> None:
        self.calls = calls
        self.lock = lock

    def _record(self, method: str, context: grpc.ServicerContext) -> EchoCall:
        call = EchoCall(method, _metadata(context))
        with self.lock:
            self.calls.append(call)
        return call

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        call = self._record("Unary", context)
        call.requests.append(request)
        echoed = tuple((k, v) for k, v in call.metadata.items() if k.startswith("x-echo-"))
        if echoed:
            context.send_initial_metadata(echoed)
        abort = call.metadata.get("x-echo-abort")
        if abort is not None:
            code = next(c for c in grpc.StatusCode if c.value[0] == int(abort))
            context.abort(code, "aborted on request")
        context.set_trailing_metadata(
            (("x-echo-trailer", "unary"), ("x-echo-bytes", str(len(request))))
        )
        return request

    def server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        call = self._record("ServerStream", context)
        call.requests.append(request)
        for i in range(int(call.metadata.get("x-echo-count", "3"))):
            yield f"{i}:".encode() + request

    def client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        call = self._record("ClientStream", context)
        for request in requests:
            call.requests.append(request)
        return b"".join(call.requests)

    def bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        call = self._record("Bidi", context)
        for request in requests:
            call.requests.append(request)
            yield request

    def handler(self) -> grpc.GenericRpcHandler:
        # No (de)serializers: requests and responses are the raw message bytes.
        return grpc.method_handlers_generic_handler(
            ECHO_SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            },
        )


class GrpcBackend:
    """A grpcio server on 127.0.0.1 with the health and echo services (see the module).

    `tls`: (private key PEM, certificate chain PEM) to serve TLS (ALPN h2) instead of
    cleartext h2c. `with_health=False` leaves the health service out (its calls then
    fail UNIMPLEMENTED, like a server that never added it). Not started until
    `start()`; `stop()` is idempotent.
    """

    def __init__(
        self,
        backend_id: str = "grpc1",
        *,
        tls: tuple[bytes, bytes] | None = None,
        with_health: bool = True,
    ) -> None:
        self.id = backend_id
        self.tls = tls
        self.with_health = with_health
        self.port = 0
        self.calls: list[EchoCall] = []
        self._lock = threading.Lock()
        self.health = health.HealthServicer()
        self._server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def target(self) -> str:
        """What `grpc.insecure_channel`/`secure_channel` take."""
        return self.address

    def config(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address}

    def start(self) -> GrpcBackend:
        if self._server is not None:
            return self
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=self.id))
        if self.with_health:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        server.add_generic_rpc_handlers((_Echo(self.calls, self._lock).handler(),))
        if self.tls is None:
            self.port = server.add_insecure_port(f"{LOOPBACK}:0")
        else:
            credentials = grpc.ssl_server_credentials([self.tls])
            self.port = server.add_secure_port(f"{LOOPBACK}:0", credentials)
        if not self.port:
            raise RuntimeError("grpcio could not bind a port on 127.0.0.1")
        self.set_health("", "SERVING")
        self.set_health(ECHO_SERVICE, "SERVING")
        server.start()
        self._server = server
        return self

    def stop(self, grace: float = STOP_GRACE) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(grace + 5)

    def set_health(self, service: str, status: str) -> None:
        """`status`: a `ServingStatus` name, e.g. "SERVING", "NOT_SERVING", "UNKNOWN"."""
        self.health.set(service, health_pb2.HealthCheckResponse.ServingStatus.Value(status))

    def calls_of(self, method: str) -> list[EchoCall]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def __enter__(self) -> GrpcBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
