"""Trace context: parsing a client's traceparent (tracing/context.py) and the line the
backend gets (request.TraceIds)."""

from __future__ import annotations

import asyncio

import pytest

from haproxyd.proxy.clientside import ClientSide
from haproxyd.proxy.exchange import Exchange
from haproxyd.proxy.headers import CRLF, HOST, SEP, TRACEPARENT
from haproxyd.proxy.request import TraceIds, special_request
from haproxyd.proxy.runtime import ProxyRuntime
from haproxyd.tracing.context import parse_traceparent

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = b"00f067aa0ba902b7"


def _exchange() -> Exchange:
    """An exchange of a client that never connected (ClientSide with its fields unset)."""
    client = ClientSide()
    client.peer_ip = "127.0.0.1"
    return Exchange(client)


def test_valid_version_00_is_read():
    assert parse_traceparent(b"00-" + TRACE + b"-" + PARENT + b"-01") == (TRACE, PARENT, 1)


def test_a_later_version_is_read_as_00_and_may_be_longer():
    assert parse_traceparent(b"01-" + TRACE + b"-" + PARENT + b"-00-more") == (TRACE, PARENT, 0)


@pytest.mark.parametrize(
    "value",
    [
        b"ff-" + TRACE + b"-" + PARENT + b"-01",
        b"00-" + b"0" * 32 + b"-" + PARENT + b"-01",
        b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",
        b"00-" + TRACE + b"-" + PARENT + b"-01-",
        b"00-" + TRACE.upper() + b"-" + PARENT + b"-01",
        b"00-" + TRACE + b"-" + PARENT + b"-0g",
        b"00_" + TRACE + b"-" + PARENT + b"-01",
        b"",
    ],
)
def test_invalid_values_are_refused(value):
    assert parse_traceparent(value) is None


def _ids(ratio: float, draws: list[bytes]) -> TraceIds:
    """TraceIds drawing `draws` (26 bytes each: trace id, span id, sampling) in turn."""
    blocks = iter(draws)
    return TraceIds(ratio, random=lambda n: next(blocks), block=1)


DRAW = bytes(range(1, 17)) + bytes(range(0xA0, 0xA8)) + b"\x80\x00"


def test_a_valid_parent_keeps_trace_and_flags_with_a_new_span():
    exchange = _exchange()
    line = _ids(0.0, [DRAW]).line(exchange, b"00-" + TRACE + b"-" + PARENT + b"-01")
    assert line == b"traceparent: 00-" + TRACE + b"-a0a1a2a3a4a5a6a7-01\r\n"
    assert exchange.trace == (TRACE, b"a0a1a2a3a4a5a6a7", PARENT, True)


@pytest.mark.parametrize(("ratio", "sampled"), [(0.6, True), (0.5, False)])
def test_a_new_trace_is_sampled_at_the_ratio(ratio, sampled):
    # The two sampling bytes read 0x8000, half of 65,536.
    exchange = _exchange()
    line = _ids(ratio, [DRAW]).line(exchange, None)
    trace = bytes(range(1, 17)).hex().encode()
    flags = b"01" if sampled else b"00"
    assert line == b"traceparent: 00-" + trace + b"-a0a1a2a3a4a5a6a7-" + flags + b"\r\n"
    assert exchange.trace == (trace, b"a0a1a2a3a4a5a6a7", None, sampled)


def test_an_invalid_parent_starts_a_trace_and_a_zero_span_is_drawn_again():
    zero_span = bytes(range(1, 17)) + bytes(8) + b"\x00\x00"
    exchange = _exchange()
    line = _ids(1.0, [zero_span, DRAW]).line(exchange, b"")
    assert line.startswith(b"traceparent: 00-0102030405060708090a0b0c0d0e0f10-a0a1")


def _runtime_config(tracing: str):
    from haproxyd.config import load_config_text

    return load_config_text(
        f"tracing: {tracing}\n"
        "pools:\n  web:\n    backends:\n      - {id: b1, address: 127.0.0.1:9}\n"
    )


def test_special_request_replaces_the_clients_line_and_keeps_the_headers_readable():
    loop = asyncio.new_event_loop()
    try:
        runtime = ProxyRuntime(loop)
        runtime.apply(_runtime_config("{enabled: true}"))
        value = b"00-" + TRACE + b"-" + PARENT + b"-01"
        exchange = _exchange()
        exchange.url = b"/"
        # As llhttp's path leaves them (client.py on_header): Host and traceparent
        # forwarded as received, and set aside as specials.
        exchange.parts = [b""]
        exchange.parts += (b"Host", SEP, b"h", CRLF, b"traceparent", SEP, value, CRLF)
        exchange.parts += (b"X-Key", SEP, b"k", CRLF)
        exchange.specials = [(HOST, b"Host", b"h"), (TRACEPARENT, b"traceparent", value)]
        special_request(exchange, runtime, b"GET", b"/", False, b"127.0.0.1", b"http")
        assert exchange.head.lower().count(b"traceparent") == 1
        assert exchange.trace[0] == TRACE and exchange.trace[2] == PARENT
        assert exchange.header(b"x-key") == b"k"
        # Reloadable: the next config's tracing section replaces the decision.
        runtime.apply(_runtime_config("{enabled: false}"))
        assert runtime.tracing is None
    finally:
        loop.close()
