"""Span export (issue 23): one OTLP server span per sampled proxied request, sent over
OTLP/HTTP by the OpenTelemetry SDK's `BatchSpanProcessor` from its own thread.

`SpanExport.observe` takes each ended exchange whose trace is sampled (`exchange.trace`,
set by request.TraceIds): the runtime's exchange listener is the compiled
`TraceIds.ended`, which calls it for those only (runtime.py). A sampled one
becomes an SDK `ReadableSpan` built directly, not through a Tracer: the ids must be
exactly those the backend received in its `traceparent` (span id = the proxy's, parent
= the client's span id when it sent one), which a Tracer would draw itself, and a
Tracer's live span (locks, limits, a context attach per span) is work a span that is
already over does not need. The loop-to-wall clock offset is read once per span.

Off the request path: the span goes into the processor's queue (a deque append) and its
thread encodes and posts batches. The queue is bounded (`MAX_QUEUE`): with the collector
down or slow, a span that does not fit is dropped on the loop and counted, and a batch
the exporter gives up on (after `EXPORT_TIMEOUT`) is counted as dropped too
(`SpanCounts`). A reload that changes the destination retires this exporter (`close`,
in a thread of its own: a flush within `RETIRE_GRACE`, then what is left is dropped)
while its successor takes the next spans.

Imported only when tracing is enabled: the SDK is the optional extra `[tracing]`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from haproxyd import __version__
from haproxyd.tracing.counts import SpanCounts

if TYPE_CHECKING:
    from haproxyd.config.sections.tracing import TracingConfig
    from haproxyd.proxy.exchange import Exchange

MAX_QUEUE = 2048  # spans waiting for the exporter thread (the SDK's default)
BATCH = 512  # spans per export request (the SDK's default)
SCHEDULE_DELAY_MS = 1000  # a batch leaves at least this often (the SDK's: 5 s)
# Seconds an export may take, retries included, before its batch is dropped (the SDK's
# default is 10): a collector that is down holds the queue this long per batch.
EXPORT_TIMEOUT = 5.0
RETIRE_GRACE = 2.0  # seconds a retired exporter may still flush what it holds
SCOPE = InstrumentationScope("haproxyd", __version__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ERROR = StatusCode.ERROR
_UNSET = Status()


def _destination(settings: TracingConfig) -> tuple[object, ...]:
    """What a new exporter is needed for when it changes (not `sample_ratio`, which
    only request.TraceIds reads)."""
    return (settings.endpoint, settings.service_name, tuple(sorted(settings.headers.items())))


class CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it exported and what it gave up on; refuses
    (counted as dropped) once its retirement's grace is over, so a retiring processor
    never waits on a collector that is down."""

    def __init__(self, inner: SpanExporter, counts: SpanCounts) -> None:
        self.inner = inner
        self.counts = counts
        self.handed = 0  # spans the processor took off its queue (its thread only)
        self.refuse_after: float | None = None  # monotonic time; set by `retire`
        self._shut = threading.Lock()
        self._is_shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        self.handed += count
        refuse_after = self.refuse_after
        if refuse_after is not None and time.monotonic() > refuse_after:
            self.counts.add_dropped("export_failed", count)
            return SpanExportResult.FAILURE
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.counts.add_exported(count)
        else:
            self.counts.add_dropped("export_failed", count)
        return result

    def shutdown(self) -> None:
        # Twice at most (the grace timer and the processor's shutdown): the OTLP
        # exporter logs a warning on a second call.
        with self._shut:
            if self._is_shut:
                return
            self._is_shut = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SpanExport:
    """The spans of one process to one collector (`settings`); created by the
    runtime when tracing is enabled or its destination changes. `observe` runs on the
    event loop; `close` may be called from it once, and returns at once."""

    def __init__(
        self,
        settings: TracingConfig,
        counts: SpanCounts,
        loop_time: Callable[[], float],
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.destination = _destination(settings)
        self._max_queue = max_queue
        self._settings = settings
        self._counts = counts
        self._loop_time = loop_time  # the clock of exchange.start and .ended
        self._resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )
        # Started by the first sampled span: a master whose workers serve every request
        # never starts a thread.
        self._processor: BatchSpanProcessor | None = None
        self._exporter: CountingExporter | None = None
        self._queued = 0  # spans given to the processor (the loop's count)
        self._closed = False

    def sends_to(self, settings: TracingConfig) -> bool:
        """Whether `settings` (a reload's) name this exporter's destination."""
        return self.destination == _destination(settings)

    # -- on the event loop --

    def observe(self, exchange: Exchange) -> None:
        """The exchange listener: a sampled exchange's span goes to the queue."""
        trace = exchange.trace
        if trace is None or not trace[3]:
            return
        exporter = self._exporter
        if exporter is None:
            if self._closed:
                return
            exporter = self._start()
        if self._queued - exporter.handed >= self._max_queue:
            # Full (the collector is down or slow): dropped here rather than by the
            # SDK's queue, which would drop the oldest span without telling.
            self._counts.add_dropped("queue_full", 1)
            return
        self._queued += 1
        assert self._processor is not None
        self._processor.on_end(self.span(exchange))

    def span(self, exchange: Exchange) -> ReadableSpan:
        """The server span of an ended exchange whose `trace` is set."""
        trace_hex, span_hex, parent_hex, _ = exchange.trace  # type: ignore[misc]
        # Loop time (seconds, monotonic) to wall time (ns since the epoch): one offset
        # per span, so a clock step moves only the spans that follow it.
        offset = time.time_ns() - int(self._loop_time() * 1e9)
        ended = offset + int(exchange.ended * 1e9)
        started = offset + int(exchange.start * 1e9) if exchange.start else ended
        trace_id = int(trace_hex, 16)
        context = SpanContext(trace_id, int(span_hex, 16), False, _SAMPLED)
        parent = (
            SpanContext(trace_id, int(parent_hex, 16), True, _SAMPLED)
            if parent_hex is not None
            else None
        )
        method = exchange.method.decode("latin-1")
        attributes = {
            "http.request.method": method,
            "url.path": exchange.url.partition(b"?")[0].decode("latin-1"),
            "network.peer.address": str(exchange.client_ip),
            "http.request.body.size": exchange.body_bytes,
            "http.response.body.size": exchange.bytes_out,
            "haproxyd.attempts": exchange.attempts,
            "haproxyd.termination": exchange.termination,
            "haproxyd.request_id": exchange.request_id.decode("latin-1"),
        }
        status = exchange.status
        if status:
            attributes["http.response.status_code"] = status
        host = exchange.header(b"host")
        if host:
            text = host.decode("latin-1")
            name, colon, port = text.rpartition(":")
            if colon and port.isdigit():  # (an IPv6 literal ends in "]" without a port)
                attributes["server.address"] = name.strip("[]")
                attributes["server.port"] = int(port)
            else:
                attributes["server.address"] = text.strip("[]")
        pool = exchange.pool
        if pool is not None:
            attributes["haproxyd.pool"] = pool.name
        backend = exchange.backend
        if backend is not None:
            attributes["haproxyd.backend"] = backend.id
            attributes["haproxyd.backend.address"] = f"{backend.host}:{backend.port}"
        events: list[Event] = []
        retry_log = exchange.retry_log
        if retry_log:
            for at, failed, chosen, reason in retry_log:
                events.append(
                    Event(
                        "retry",
                        {
                            "haproxyd.backend": failed.id,
                            "haproxyd.retry.next_backend": chosen.id,
                            "haproxyd.retry.reason": reason,
                        },
                        offset + int(at * 1e9),
                    )
                )
        return ReadableSpan(
            name=method,  # the semantic conventions' name when there is no route template
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=events,
            kind=SpanKind.SERVER,
            status=Status(_ERROR, exchange.termination) if status >= 500 else _UNSET,
            start_time=started,
            end_time=ended,
            instrumentation_scope=SCOPE,
        )

    def _start(self) -> CountingExporter:
        settings = self._settings
        inner = OTLPSpanExporter(
            endpoint=settings.endpoint, headers=dict(settings.headers), timeout=EXPORT_TIMEOUT
        )
        self._exporter = exporter = CountingExporter(inner, self._counts)
        self._processor = BatchSpanProcessor(
            exporter,
            max_queue_size=self._max_queue,
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            max_export_batch_size=min(BATCH, self._max_queue),
        )
        return exporter

    def close(self, grace: float = RETIRE_GRACE) -> threading.Thread | None:
        """Stop taking spans; flush the queued ones for up to `grace` seconds in a
        thread of its own (returned; None when nothing was started), then drop the
        rest, counted. Never blocks the caller."""
        self._closed = True
        processor, exporter = self._processor, self._exporter
        self._processor = self._exporter = None
        if processor is None or exporter is None:
            return None
        thread = threading.Thread(
            target=_retire,
            args=(processor, exporter, self._queued, grace),
            name="haproxyd-span-retire",
        )
        thread.daemon = True  # a process that exits does not wait for a collector
        thread.start()
        return thread


def _retire(
    processor: BatchSpanProcessor, exporter: CountingExporter, queued: int, grace: float
) -> None:
    exporter.refuse_after = time.monotonic() + grace
    # An export retrying against a collector that is down would hold the processor's
    # shutdown for up to EXPORT_TIMEOUT: the exporter's own shutdown cuts its retries.
    cut = threading.Timer(grace, exporter.shutdown)
    cut.daemon = True
    cut.start()
    processor.shutdown()  # the processor's thread exports what is queued, then stops
    cut.cancel()
    exporter.shutdown()
    left = queued - exporter.handed  # still queued when the processor stopped
    if left > 0:
        exporter.counts.add_dropped("export_failed", left)
