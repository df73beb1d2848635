"""tracing/export.py and tracing/counts.py: the span of an exchange (ids exactly the
exchange's, attributes, retry events, wall-clock times), what `observe` sends to a real
OTLP/HTTP receiver (helpers/otlp.py), the bounded queue and its counts, and retiring."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from helpers.daemon import free_port
from helpers.http1 import wait_until
from helpers.otlp import OtlpReceiver
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

from haproxyd.balancer.base import create
from haproxyd.balancer.state import Backend, Pool
from haproxyd.config.sections.pool import PoolConfig
from haproxyd.config.sections.tracing import TracingConfig
from haproxyd.proxy.client import ClientProtocol
from haproxyd.proxy.exchange import Exchange
from haproxyd.proxy.runtime import ProxyRuntime
from haproxyd.proxy.upstream import ProxyPool
from haproxyd.tracing.counts import SpanCounts, sum_snapshots
from haproxyd.tracing.export import SpanExport

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = b"a0a1a2a3a4a5a6a7"
PARENT = b"00f067aa0ba902b7"
LOOP_NOW = 1000.0  # the loop clock the tests' exports read


def _exchange(trace=(TRACE, SPAN, None, True), status=200, retry_log=None) -> Exchange:
    """A real Exchange of a client that never connected, as the data plane leaves it."""
    client = ClientProtocol(ProxyRuntime(SimpleNamespace(time=lambda: LOOP_NOW)), tls=False)
    exchange = Exchange(client)
    exchange.client_ip = "192.0.2.9"
    exchange.method = b"GET"
    exchange.url = b"/cart/items?id=7"
    exchange.specials = [(0, b"Host", b"[2001:db8::1]:8080")]
    exchange.pool = ProxyPool("web", PoolConfig(), Pool("web", create("round_robin")))
    exchange.backend = Backend("b2", "127.0.0.1", 9002)
    exchange.status = status
    exchange.attempts = 1 + len(retry_log or [])
    exchange.body_bytes = 0
    exchange.bytes_out = 42
    exchange.termination = "ok"
    exchange.request_id = b"abc-1"
    exchange.start = LOOP_NOW - 0.25
    exchange.ended = LOOP_NOW - 0.05
    exchange.retry_log = retry_log
    exchange.trace = trace
    return exchange


def _export(endpoint: str = "http://127.0.0.1:9/v1/traces", **kwargs) -> SpanExport:
    settings = TracingConfig(enabled=True, endpoint=endpoint, service_name="edge")
    return SpanExport(settings, SpanCounts(), lambda: LOOP_NOW, **kwargs)


@pytest.fixture
def receiver(backend_loop):
    r = OtlpReceiver(backend_loop).start()
    yield r
    r.stop()


def test_span_carries_the_exchanges_ids_and_attributes():
    before = time.time_ns()
    span = _export().span(_exchange())
    after = time.time_ns()
    assert span.context.trace_id == int(TRACE, 16)
    assert span.context.span_id == int(SPAN, 16)
    assert span.context.trace_flags.sampled and span.parent is None
    assert (span.name, span.kind) == ("GET", SpanKind.SERVER)
    # Loop time LOOP_NOW is now: the span ended 50 ms ago and lasted 200 ms.
    assert before - 50_000_000 <= span.end_time <= after - 50_000_000
    assert span.end_time - span.start_time == pytest.approx(200_000_000, abs=1000)
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.path": "/cart/items",
        "network.peer.address": "192.0.2.9",
        "http.request.body.size": 0,
        "http.response.body.size": 42,
        "http.response.status_code": 200,
        "server.address": "2001:db8::1",
        "server.port": 8080,
        "haproxyd.pool": "web",
        "haproxyd.backend": "b2",
        "haproxyd.backend.address": "127.0.0.1:9002",
        "haproxyd.attempts": 1,
        "haproxyd.termination": "ok",
        "haproxyd.request_id": "abc-1",
    }
    assert span.status.status_code == StatusCode.UNSET and list(span.events) == []
    assert span.resource.attributes["service.name"] == "edge"


def test_a_clients_span_is_the_remote_parent():
    span = _export().span(_exchange(trace=(TRACE, SPAN, PARENT, True)))
    assert span.parent is not None and span.parent.is_remote
    assert (span.parent.trace_id, span.parent.span_id) == (int(TRACE, 16), int(PARENT, 16))


def test_retries_are_events_at_their_own_time_and_a_5xx_is_an_error():
    sick = Backend("sick", "127.0.0.1", 9001)
    good = Backend("b2", "127.0.0.1", 9002)
    log = [(LOOP_NOW - 0.2, sick, good, "backend answered 503")]
    span = _export().span(_exchange(status=502, retry_log=log))
    [event] = span.events
    assert event.name == "retry"
    assert dict(event.attributes) == {
        "haproxyd.backend": "sick",
        "haproxyd.retry.next_backend": "b2",
        "haproxyd.retry.reason": "backend answered 503",
    }
    assert span.start_time < event.timestamp < span.end_time
    assert event.timestamp - span.start_time == pytest.approx(50_000_000, abs=1000)
    assert span.status.status_code == StatusCode.ERROR


def test_observe_exports_sampled_exchanges_only(receiver):
    export = _export(receiver.endpoint)
    export.observe(_exchange(trace=(b"1" * 32, SPAN, None, False)))
    export.observe(_exchange(trace=None))  # tracing was off for it
    export.observe(_exchange())
    [span] = receiver.wait_for_spans(1)
    assert (span.trace_id, span.span_id) == (TRACE.decode(), SPAN.decode())
    assert span.service == "edge"
    wait_until(lambda: export_counts(export)["exported"] == 1, what="the exported count")
    export.close()


def export_counts(export: SpanExport) -> dict:
    return export._counts.snapshot()


def test_nothing_starts_before_a_sampled_span():
    export = _export()
    export.observe(_exchange(trace=(TRACE, SPAN, None, False)))
    assert export.close() is None  # no processor, no thread was started


def test_a_full_queue_drops_on_the_loop_and_a_dead_collector_drops_the_rest():
    export = _export(f"http://127.0.0.1:{free_port()}/v1/traces", max_queue=2)
    for _ in range(5):
        export.observe(_exchange())
    # (3 unless the processor's thread took a batch meanwhile, freeing room)
    full = export_counts(export)["dropped"]["queue_full"]
    assert full >= 1
    thread = export.close(grace=0.3)
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive(), "retiring waited on the dead collector"
    assert export_counts(export) == {
        "exported": 0,
        "dropped": {"queue_full": full, "export_failed": 5 - full},
    }
    export.observe(_exchange())  # closed: ignored, not counted
    assert export_counts(export)["dropped"]["queue_full"] == full


def test_a_destination_is_endpoint_service_and_headers_not_the_ratio():
    export = _export()
    same = TracingConfig(
        enabled=True, endpoint="http://127.0.0.1:9/v1/traces", service_name="edge", sample_ratio=0.1
    )
    assert export.sends_to(same)
    assert not export.sends_to(same.model_copy(update={"headers": {"a": "b"}}))
    assert not export.sends_to(same.model_copy(update={"service_name": "other"}))


def test_counts_sum_over_processes():
    counts = SpanCounts()
    counts.add_exported(5)
    counts.add_dropped("queue_full", 2)
    other = {"exported": 1, "dropped": {"export_failed": 4}}
    assert sum_snapshots([counts.snapshot(), other]) == {
        "exported": 6,
        "dropped": {"queue_full": 2, "export_failed": 4},
    }
