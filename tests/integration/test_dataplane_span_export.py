"""Span export (issue 23): the daemon (a subprocess) sends one server span per sampled
request to a real OTLP/HTTP receiver in the test (helpers/otlp.py), whose ids are
those of the traceparent the backend received; retries are span events; a parent's
sampled flag is honoured; a collector that is down costs no request and is counted;
a reload moves the spans to a new collector."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from helpers.backends import RawReply
from helpers.daemon import free_port
from helpers.http1 import wait_until
from helpers.otlp import OtlpReceiver
from helpers.process import metrics_text, wait_status

pytestmark = pytest.mark.timeout(90)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"
SPAN_KIND_SERVER = 2
STATUS_ERROR = 2


@pytest.fixture
def otlp(backend_loop):
    started: list[OtlpReceiver] = []

    def make() -> OtlpReceiver:
        receiver = OtlpReceiver(backend_loop).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


def _tracing(endpoint: str, **more) -> dict:
    return {"tracing": {"enabled": True, "endpoint": endpoint, "service_name": "edge", **more}}


def _sent_traceparent(rec) -> tuple[str, str, str]:
    """(trace id, parent id, flags) of the traceparent a backend received."""
    value = rec.header("traceparent")
    assert value is not None and re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", value)
    _, trace, parent, flags = value.split("-")
    return trace, parent, flags


def _metric(d, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{name}{re.escape(labels)} (\S+)$", re.M)
    match = pattern.search(metrics_text(d))
    return float(match.group(1)) if match else 0.0


def test_a_request_becomes_one_server_span_with_the_backends_ids(backend, daemon, otlp):
    receiver = otlp()
    b = backend("b1")
    d = daemon([b], extra=_tracing(receiver.endpoint))
    before = time.time_ns()
    with d.conn() as c:
        r = c.request("POST", "/echo/x?q=1", body=b"abc", host="shop.test:8443")
        assert r.status == 200
    after = time.time_ns()
    [rec] = b.wait_for_requests(1)
    trace, span_id, flags = _sent_traceparent(rec)
    assert flags == "01"
    span = receiver.wait_for_trace(trace)
    assert (span.span_id, span.parent_span_id) == (span_id, "")
    assert (span.service, span.scope, span.name, span.kind) == ("edge", "haproxyd", "POST", 2)
    # Span times come from the loop clock (libuv's millisecond uv_now, read at the
    # request's start and again when the span is built), so either end may be up to a
    # tick off the wall clock: the bound allows 2 ms before as it allows 10 ms after.
    assert before - 2_000_000 <= span.start_ns <= span.end_ns <= after + 10_000_000
    attrs = span.attributes
    assert attrs["http.request.method"] == "POST"
    assert attrs["url.path"] == "/echo/x"
    assert attrs["http.response.status_code"] == 200
    assert (attrs["server.address"], attrs["server.port"]) == ("shop.test", 8443)
    assert attrs["network.peer.address"] == "127.0.0.1"
    assert (attrs["haproxyd.pool"], attrs["haproxyd.backend"]) == ("web", "b1")
    assert (attrs["haproxyd.attempts"], attrs["haproxyd.termination"]) == (1, "ok")
    assert attrs["http.request.body.size"] == 3
    assert attrs["http.response.body.size"] == int(r.header("Content-Length"))
    assert attrs["haproxyd.request_id"] == rec.header("X-Request-ID")
    assert span.events == [] and span.status_code == 0
    [entry] = d.access_log(1)
    assert (entry["trace_id"], entry["span_id"]) == (trace, span_id)
    wait_until(
        lambda: _metric(d, "haproxyd_tracing_spans_exported_total") == 1,
        what="the exported-spans counter",
    )


def test_a_clients_span_is_the_parent_and_its_unsampled_flag_exports_nothing(backend, daemon, otlp):
    receiver = otlp()
    b = backend("b1")
    d = daemon([b], extra=_tracing(receiver.endpoint))
    unsampled = "1" * 32
    with d.conn() as c:
        for trace, flags in ((unsampled, "00"), (CLIENT_TRACE, "01")):
            headers = [("traceparent", f"00-{trace}-{CLIENT_PARENT}-{flags}")]
            assert c.request("GET", "/echo", headers=headers).status == 200
    recs = b.wait_for_requests(2)
    assert [_sent_traceparent(rec)[::2] for rec in recs] == [
        (unsampled, "00"),
        (CLIENT_TRACE, "01"),
    ]
    span = receiver.wait_for_trace(CLIENT_TRACE)
    assert (span.span_id, span.parent_span_id) == (_sent_traceparent(recs[1])[1], CLIENT_PARENT)
    # Spans leave in batches: the sampled span's batch would carry an earlier one.
    assert [s.trace_id for s in receiver.spans()] == [CLIENT_TRACE]


def test_a_retry_is_a_span_event(raw_backend, backend, daemon, otlp):
    receiver = otlp()
    sick = raw_backend(lambda rec: RawReply(UNAVAILABLE, close=False), backend_id="sick")
    good = backend("good")
    extra = {**_tracing(receiver.endpoint), "pools": {"web": {"retries": {"attempts": 2}}}}
    d = daemon([sick, good], extra=extra)
    for i in range(4):  # round robin: the sick backend gets its turn
        with d.conn() as c:
            assert c.request("GET", f"/echo?{i}").status == 200
    spans = receiver.wait_for_spans(4)
    [retried] = [s for s in spans if s.attributes["haproxyd.attempts"] == 2][:1] or [None]
    assert retried is not None, [s.attributes for s in spans]
    assert retried.attributes["haproxyd.backend"] == "good"
    [(name, at, attrs)] = retried.events
    assert name == "retry"
    assert attrs == {
        "haproxyd.backend": "sick",
        "haproxyd.retry.next_backend": "good",
        "haproxyd.retry.reason": "backend answered 503",
    }
    assert retried.start_ns <= at <= retried.end_ns
    # The trace the good backend got is the span's (the retry kept the ids).
    sent = {_sent_traceparent(rec)[:2] for rec in good.requests}
    assert (retried.trace_id, retried.span_id) in sent


def test_a_collector_that_is_down_costs_no_request_and_is_counted(backend, daemon):
    closed = f"http://127.0.0.1:{free_port()}/v1/traces"
    b = backend("b1")
    d = daemon([b], extra=_tracing(closed))
    with d.conn() as c:
        for i in range(20):
            assert c.request("GET", f"/echo?{i}").status == 200
    dropped = wait_until(
        lambda: (
            _metric(d, "haproxyd_tracing_spans_dropped_total", '{reason="export_failed"}') >= 20
        ),
        timeout=30,
        what="the 20 spans counted as dropped",
    )
    assert dropped
    assert _metric(d, "haproxyd_tracing_spans_exported_total") == 0
    assert d.alive()


def test_a_reload_sends_the_spans_to_the_new_collector(backend, daemon, otlp):
    first, second = otlp(), otlp()
    b = backend("b1")
    d = daemon([b], extra=_tracing(first.endpoint, headers={"x-tenant": "one"}))
    with d.conn() as c:
        assert c.request("GET", "/echo/1").status == 200
    [one] = first.wait_for_spans(1)
    d.config["tracing"]["endpoint"] = second.endpoint
    d.config["tracing"]["headers"] = {"x-tenant": "two"}
    d.write_config()
    os.kill(d.pid, signal.SIGHUP)
    status = wait_status(d, lambda s: s["reloads"]["ok"] >= 1, what="the reload")
    assert status["last_reload"]["result"] == "ok"
    with d.conn() as c:
        assert c.request("GET", "/echo/2").status == 200
    [two] = second.wait_for_spans(1)
    assert two.attributes["url.path"] == "/echo/2" and two.trace_id != one.trace_id
    assert [s.attributes["url.path"] for s in first.spans()] == ["/echo/1"]
    assert second.headers[0].get("x-tenant") == "two"
    assert first.headers[0].get("x-tenant") == "one"


def test_workers_each_export_their_own_spans(backend, daemon, otlp):
    receiver = otlp()
    b = backend("b1")
    d = daemon([b], extra={**_tracing(receiver.endpoint), "workers": 2})
    for i in range(8):
        with d.conn() as c:
            assert c.request("GET", f"/echo?{i}").status == 200
    traces = {_sent_traceparent(rec)[0] for rec in b.wait_for_requests(8)}
    wait_until(lambda: {s.trace_id for s in receiver.spans()} >= traces, what="8 spans")
    wait_until(
        lambda: _metric(d, "haproxyd_tracing_spans_exported_total") >= 8,
        what="the workers' exported counts in the master's metrics",
    )
