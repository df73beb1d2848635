"""A real OTLP/HTTP traces receiver for the tracing tests: an aiohttp server on a
loopback port of its own (POST /v1/traces), decoding each request with
opentelemetry-proto's ExportTraceServiceRequest and keeping the spans it carried."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from helpers.backends import BackendLoop, bound_socket
from helpers.http1 import wait_until

PATH = "/v1/traces"


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind is not None else None


@dataclass
class ReceivedSpan:
    """One span as the collector got it, ids as lower-case hex."""

    service: str
    scope: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" without a parent
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    status_code: int
    status_message: str


class OtlpReceiver:
    """Start with `start()`; `endpoint` is the URL for `tracing.endpoint`."""

    def __init__(self, loop: BackendLoop) -> None:
        self._loop = loop
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0  # export requests received
        self.headers: list[dict[str, str]] = []  # each export request's headers
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def start(self) -> OtlpReceiver:
        self._loop.run(self._start())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._loop.run(self._runner.cleanup())
            self._runner = None

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for_spans(self, count: int, timeout: float = 15.0) -> list[ReceivedSpan]:
        return wait_until(
            lambda: len(self.spans()) >= count and self.spans(),
            timeout=timeout,
            what=f"{count} spans at the OTLP receiver",
        )

    def wait_for_trace(self, trace_id: str, timeout: float = 15.0) -> ReceivedSpan:
        return wait_until(
            lambda: next((s for s in self.spans() if s.trace_id == trace_id), None),
            timeout=timeout,
            what=f"the span of trace {trace_id}",
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post(PATH, self._export)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        sock = bound_socket(self.port)
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _export(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received = []
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            scope=scope_spans.scope.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            events=[
                                (
                                    e.name,
                                    e.time_unix_nano,
                                    {a.key: _value(a.value) for a in e.attributes},
                                )
                                for e in span.events
                            ],
                            status_code=span.status.code,
                            status_message=span.status.message,
                        )
                    )
        with self._lock:
            self._spans.extend(received)
            self.requests += 1
            self.headers.append(dict(request.headers))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )
