"""W3C trace context through the proxy (issue 23): what reaches the backend, byte for
byte, with `tracing.enabled` off and on, and the access log's trace_id and span_id.

A raw backend records each request head as it arrived (`rec.raw`), so the assertions
count `traceparent` lines in the bytes, not in a parser's view of them."""

from __future__ import annotations

import re
import urllib.request

import pytest
from helpers.backends import RawReply
from helpers.h2client import H2Client

pytestmark = pytest.mark.timeout(60)

OK = RawReply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=False)
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
LINE = re.compile(rb"\r\ntraceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\r\n", re.I)


def _traceparents(raw: bytes) -> list[tuple[str, str, str]]:
    """Every traceparent line of a head: (trace id, parent id, flags)."""
    assert raw.count(b"\r\n\r\n") >= 1, raw
    head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    lines = [line for line in head.split(b"\r\n") if line.lower().startswith(b"traceparent:")]
    found = [tuple(m.decode() for m in match.groups()) for match in LINE.finditer(head)]
    assert len(found) == len(lines), f"malformed traceparent line in {head!r}"
    return found  # type: ignore[return-value]


def _send(raw_backend, daemon, requests, *, enabled=True):
    """Each request (a list of (name, value)) once, in one connection; the backend's
    records and the daemon."""
    rb = raw_backend(lambda rec: OK)
    extra = {"tracing": {"enabled": enabled}}
    d = daemon([rb], extra=extra)
    with d.conn() as c:
        for headers in requests:
            assert c.request("GET", "/t", headers).status == 200
    return rb.wait_for_requests(len(requests)), d


def test_off_forwards_the_clients_traceparent_as_any_header(raw_backend, daemon):
    sent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    recs, _ = _send(
        raw_backend, daemon, [[("traceparent", sent), ("tracestate", "a=1")], []], enabled=False
    )
    assert f"\r\ntraceparent: {sent}\r\n".encode() in recs[0].raw
    assert _traceparents(recs[0].raw) == [(CLIENT_TRACE, CLIENT_PARENT, "01")]
    assert recs[0].raw.count(b"\r\ntracestate: a=1\r\n") == 1
    assert _traceparents(recs[1].raw) == [], "tracing off added a traceparent"


def test_on_starts_a_trace_for_a_request_without_one(raw_backend, daemon):
    # The canonical request (the scanner's) and one with a forwarding header (llhttp's
    # special path): each gets exactly one new traceparent, sampled at ratio 1.
    recs, d = _send(raw_backend, daemon, [[], [("X-Forwarded-For", "203.0.113.7")]])
    found = [_traceparents(rec.raw) for rec in recs]
    assert all(len(f) == 1 and f[0][2] == "01" for f in found), found
    assert found[0][0][0] != found[1][0][0], "two requests share a trace id"
    log = d.access_log(2)
    assert [(e["trace_id"], e["span_id"]) for e in log[-2:]] == [f[0][:2] for f in found]


@pytest.mark.parametrize("flags", ["01", "00"])
def test_on_keeps_a_valid_trace_with_the_proxys_span_as_parent(raw_backend, daemon, flags):
    sent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-{flags}"
    recs, d = _send(
        raw_backend, daemon, [[("traceparent", sent), ("tracestate", "rojo=00f067aa0ba902b7")]]
    )
    [(trace, parent, got_flags)] = _traceparents(recs[0].raw)
    assert (trace, got_flags) == (CLIENT_TRACE, flags)
    assert parent not in (CLIENT_PARENT, "0" * 16)
    assert recs[0].raw.count(b"\r\ntracestate: rojo=00f067aa0ba902b7\r\n") == 1
    [entry] = d.access_log(1)
    assert (entry["trace_id"], entry["span_id"]) == (CLIENT_TRACE, parent)


INVALID = {
    "version ff": f"ff-{CLIENT_TRACE}-{CLIENT_PARENT}-01",
    "zero trace id": f"00-{'0' * 32}-{CLIENT_PARENT}-01",
    "zero parent id": f"00-{CLIENT_TRACE}-{'0' * 16}-01",
    "too long": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01-extra",
    "too short": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-1",
    "upper case": f"00-{CLIENT_TRACE.upper()}-{CLIENT_PARENT}-01",
}


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_on_replaces_an_invalid_traceparent_with_a_new_trace(raw_backend, daemon, value):
    recs, _ = _send(raw_backend, daemon, [[("traceparent", value)]])
    [(trace, _, _)] = _traceparents(recs[0].raw)
    assert trace.lower() != CLIENT_TRACE
    assert value.encode() not in recs[0].raw


def test_on_two_traceparents_start_a_new_trace(raw_backend, daemon):
    sent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    recs, _ = _send(raw_backend, daemon, [[("traceparent", sent), ("traceparent", sent)]])
    [(trace, _, _)] = _traceparents(recs[0].raw)
    assert trace != CLIENT_TRACE


def test_echo_trace_id_answers_with_the_backends_trace_id(raw_backend, daemon, unused_port):
    """`echo_trace_id`: every answer names its trace (the trace id the backend got in its
    traceparent), the proxy's own errors too, over HTTP/1.1 and HTTP/2; off by default."""
    rb = raw_backend(lambda rec: OK)
    dead = {"id": "dead", "address": f"127.0.0.1:{unused_port()}"}
    d = daemon(
        pools={
            "web": {"backends": [rb.config()]},
            "gone": {"backends": [dead], "retries": {"attempts": 0}},
        },
        extra={
            "tracing": {"enabled": True, "echo_trace_id": True},
            "routes": [
                {"match": {"path_prefix": "/gone"}, "pool": "gone"},
                {"match": {"path_prefix": "/"}, "pool": "web"},
            ],
        },
    )
    sent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    with d.conn() as c:
        plain = c.request("GET", "/t")
        kept = c.request("GET", "/t", [("traceparent", sent)])
        failed = c.request("GET", "/gone")
    with H2Client(d.port) as h2:
        over_h2 = h2.request("/t")
        failed_h2 = h2.request("/gone")
    recs = rb.wait_for_requests(3)
    trace_ids = [_traceparents(rec.raw)[0][0] for rec in recs]
    assert plain.header("X-Trace-ID") == trace_ids[0]
    assert kept.header("X-Trace-ID") == CLIENT_TRACE == trace_ids[1]
    assert over_h2.header(b"x-trace-id").decode() == trace_ids[2]
    assert failed.status == 502 and re.fullmatch("[0-9a-f]{32}", failed.header("X-Trace-ID"))
    assert failed_h2.status == 502 and failed_h2.header(b"x-trace-id")
    log = {e["request_id"]: e["trace_id"] for e in d.access_log(5)}
    assert log[failed.header("X-Request-ID")] == failed.header("X-Trace-ID")


def test_echo_trace_id_is_off_by_default(raw_backend, daemon):
    _, d = _send(raw_backend, daemon, [[]])
    with d.conn() as c:
        r = c.request("GET", "/t")
    assert r.status == 200 and r.header("X-Trace-ID") is None


def _openmetrics(d) -> str:
    request = urllib.request.Request(
        f"http://{d.config['admin']['address']}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


EXEMPLAR = re.compile(
    r'^haproxyd_request_duration_seconds_bucket\{[^}]*\} \S+ # \{trace_id="([0-9a-f]{32})"\} '
    r"(\S+)",
    re.M,
)


@pytest.mark.parametrize("enabled", [True, False])
def test_latency_buckets_carry_a_sampled_requests_trace_as_exemplar(raw_backend, daemon, enabled):
    """Grafana's latency panel links a bucket to a trace (issue 23 item 5): each bucket's
    OpenMetrics exemplar is the trace id of a sampled request that fell in it."""
    recs, d = _send(raw_backend, daemon, [[], [], []], enabled=enabled)
    logged = {e["trace_id"]: e["total_time"] for e in d.access_log(3)}
    found = EXEMPLAR.findall(_openmetrics(d))
    if not enabled:
        assert found == []
        return
    assert found, "no exemplar in the OpenMetrics exposition"
    for trace_id, value in found:
        assert trace_id in logged, (trace_id, logged)
        assert float(value) <= 60
    assert {t for t, _ in found} <= {_traceparents(rec.raw)[0][0] for rec in recs}
